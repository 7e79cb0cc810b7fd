//! Writes the small containers that seed the `open_bytes` fuzz target (fuzz/seeds/open_bytes):
//! one per writer mode — raw, zstd, chunked (raw and zstd), auto, encrypted with a keyfile —
//! and one with every extension record (owners, xattrs, hardlinks, devices, fifo, socket,
//! whiteouts, blobs). Each stays well under 64 KiB so the fuzzer mutates it quickly.
//!
//! `cargo run --example fuzz_seeds -- fuzz/seeds/open_bytes`
use bfcfs::bfc::{Compression, Key, Kind, Meta, Writer, WriterOptions};
use std::io::Cursor;
use std::path::Path;

/// The upstream fixtures' keyfile.bin (the open_bytes target tries this key).
const KEY: [u8; 32] = [
    0xbd, 0x6e, 0x9d, 0x9a, 0xe5, 0xdb, 0xb3, 0x2b, 0xde, 0xc5, 0x79, 0x92, 0x73, 0xb0, 0x18, 0xa9,
    0xe8, 0xfd, 0x06, 0x8e, 0x06, 0xa7, 0x25, 0x62, 0xa2, 0x4b, 0x89, 0xf3, 0xca, 0x96, 0x33, 0x2c,
];

fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog 0123456789\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn meta(mode: u32, owner: bool) -> Meta {
    Meta {
        mode,
        mtime_ns: 1_700_000_000_000_000_000,
        uid: owner.then_some(1000),
        gid: owner.then_some(100),
        xattrs: Vec::new(),
    }
}

/// A small tree: a directory, files around the chunk size, an empty file, a symlink, and an
/// implicit directory (a path whose parent is not listed).
fn tree(w: &mut Writer<Cursor<Vec<u8>>>, big: usize) -> bfcfs::bfc::Result<()> {
    w.add_dir(b"t", &meta(0o755, false))?;
    w.add_file(b"t/empty", &meta(0o644, false), &mut &[][..])?;
    w.add_file(b"t/hello", &meta(0o644, false), &mut &b"hello world\n"[..])?;
    w.add_file(b"t/big", &meta(0o600, false), &mut text(big).as_slice())?;
    w.add_symlink(b"t/link", &meta(0o777, false), b"hello")?;
    w.add_file(
        b"t/sub/deep/f",
        &meta(0o644, false),
        &mut text(300).as_slice(),
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, opts: WriterOptions, big: usize) -> anyhow::Result<()> {
    let mut w = Writer::new(Cursor::new(Vec::new()), opts, name.as_ref())?;
    tree(&mut w, big)?;
    save(dir, name, w)
}

fn save(dir: &Path, name: &str, w: Writer<Cursor<Vec<u8>>>) -> anyhow::Result<()> {
    let bytes = w.finish()?.into_inner();
    std::fs::write(dir.join(name), &bytes)?;
    println!("{name}: {} bytes", bytes.len());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds/open_bytes".into());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let base = WriterOptions::default;
    let zstd = || WriterOptions {
        compression: Compression::Zstd,
        ..base()
    };
    let small_chunks = |o: WriterOptions| WriterOptions {
        chunk_size: 4096,
        ..o
    };
    let keyed = |o: WriterOptions| WriterOptions {
        key: Some(Key::Raw(KEY)),
        ..o
    };
    // Upstream layout (no extension): raw and zstd files below one chunk.
    write(dir, "plain.bfc", base(), 3000)?;
    write(dir, "zstd.bfc", zstd(), 3000)?;
    // Chunk tables: the default 128 KiB chunks (compressible, so small), and 4 KiB chunks.
    write(dir, "zstd-chunked-128k.bfc", zstd(), 300 << 10)?;
    write(dir, "zstd-chunked-4k.bfc", small_chunks(zstd()), 20_000)?;
    write(dir, "raw-chunked-4k.bfc", small_chunks(base()), 20_000)?;
    write(
        dir,
        "auto.bfc",
        WriterOptions {
            compression: Compression::Auto,
            min_size: 100,
            ..small_chunks(base())
        },
        20_000,
    )?;
    write(dir, "enc-keyfile.bfc", keyed(base()), 3000)?;
    write(
        dir,
        "enc-zstd-chunked-4k.bfc",
        keyed(small_chunks(zstd())),
        20_000,
    )?;

    // Every extension record.
    let mut w = Writer::new(Cursor::new(Vec::new()), zstd(), "ext.bfc".as_ref())?;
    w.add_dir(b"e", &meta(0o755, true))?;
    let mut m = meta(0o644, true);
    m.xattrs = vec![
        (b"user.note".to_vec(), b"hello".to_vec()),
        (
            b"security.capability".to_vec(),
            vec![1, 0, 0, 2, 0, 32, 0, 0],
        ),
    ];
    w.add_file(b"e/file", &m, &mut text(500).as_slice())?;
    w.add_hardlink(b"e/file-link", b"e/file")?;
    w.add_special(b"e/null", Kind::CharDev, &meta(0o666, true), (1, 3))?;
    w.add_special(b"e/sda", Kind::BlockDev, &meta(0o660, true), (8, 0))?;
    w.add_special(b"e/fifo", Kind::Fifo, &meta(0o600, true), (0, 0))?;
    w.add_special(b"e/sock", Kind::Socket, &meta(0o600, true), (0, 0))?;
    w.add_whiteout(b"e/.wh.gone", &meta(0o644, true))?;
    w.add_whiteout(b"e/opq/.wh..wh..opq", &meta(0o644, true))?;
    w.add_image_blob("manifest.json", b"{\"schemaVersion\":2}")?;
    save(dir, "ext.bfc", w)?;
    Ok(())
}
