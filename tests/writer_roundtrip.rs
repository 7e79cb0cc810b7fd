//! What the Writer writes, the reader reads back exactly, in every compression/encryption mode.
mod common;
use bfcfs::bfc::{Compression, Container, Key, Kind, Meta, Whiteout, Writer, WriterOptions};
use std::io::Cursor;

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        mtime_ns: 1_700_000_000_123_456_789,
        uid: Some(1000),
        gid: Some(100),
        xattrs: vec![(b"user.note".to_vec(), b"hello".to_vec())],
    }
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    // Half compressible, half noise.
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                (i % 61) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
        })
        .collect()
}

fn build(opts: WriterOptions) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut w = Writer::new(Cursor::new(Vec::new()), opts, "mem.bfc".as_ref()).unwrap();
    let files = vec![
        ("d/empty".to_string(), vec![]),
        ("d/small".to_string(), b"hello world\n".to_vec()),
        ("d/one-chunk".to_string(), content(100_000, 1)),
        ("d/exact-chunk".to_string(), content(128 << 10, 2)),
        ("d/big".to_string(), content(1_000_003, 3)),
        ("ünï/файл 文件".to_string(), content(5000, 4)),
    ];
    w.add_dir(b"d", &meta(0o755)).unwrap();
    for (p, c) in &files {
        w.add_file(p.as_bytes(), &meta(0o640), &mut c.as_slice())
            .unwrap();
    }
    w.add_symlink(b"d/link", &meta(0o777), b"../d/small")
        .unwrap();
    w.add_hardlink(b"d/big-link", b"d/big").unwrap();
    w.add_special(b"d/null", Kind::CharDev, &meta(0o666), (1, 3))
        .unwrap();
    w.add_special(b"d/fifo", Kind::Fifo, &meta(0o600), (0, 0))
        .unwrap();
    w.add_whiteout(b"d/.wh.gone", &meta(0o644)).unwrap();
    w.add_whiteout(b"d/sub/.wh..wh..opq", &meta(0o644)).unwrap();
    w.add_image_blob("manifest.json", b"{}").unwrap();
    let out = w.finish().unwrap().into_inner();
    (out, files)
}

fn check(bytes: Vec<u8>, files: &[(String, Vec<u8>)], key: Option<Key>) {
    let mut c = Container::from_bytes("mem.bfc", bytes).unwrap();
    if let Some(k) = &key {
        c.set_key(k).unwrap();
    }
    for (p, want) in files {
        let i = c.find(p.as_bytes()).unwrap();
        let e = c.entry(i).unwrap();
        assert_eq!(e.kind, Kind::File);
        assert_eq!(e.size, want.len() as u64, "{p}");
        assert_eq!(e.perm(), 0o640);
        assert_eq!(e.mtime_ns, 1_700_000_000_123_456_789);
        assert_eq!((e.uid, e.gid), (Some(1000), Some(100)));
        assert_eq!(e.xattrs, vec![(b"user.note".to_vec(), b"hello".to_vec())]);
        let mut got = Vec::new();
        c.open_reader(i).unwrap().copy_to(&mut got).unwrap();
        assert!(got == *want, "{p}: content differs");
        c.verify_entry(i).unwrap();
        // Reads at awkward offsets, including across chunk boundaries.
        for off in [
            0usize,
            1,
            4095,
            131_071,
            131_072,
            500_000,
            want.len().saturating_sub(3),
        ] {
            if off >= want.len() {
                continue;
            }
            let mut buf = vec![0u8; 200_000];
            let n = c.read_at(i, off as u64, &mut buf).unwrap();
            assert_eq!(n, (want.len() - off).min(200_000));
            assert!(buf[..n] == want[off..off + n], "{p} at {off}");
        }
    }
    let l = c.find(b"d/link").unwrap();
    assert_eq!(c.symlink_target(l).unwrap(), b"../d/small");
    let (b, bl) = (c.find(b"d/big").unwrap(), c.find(b"d/big-link").unwrap());
    assert_eq!(c.entry(b).unwrap().nlink, 2);
    assert_eq!(
        c.entry(b).unwrap().link_group,
        c.entry(bl).unwrap().link_group
    );
    assert!(c.entry(b).unwrap().link_group.is_some());
    let n = c.find(b"d/null").unwrap();
    assert_eq!(c.entry(n).unwrap().kind, Kind::CharDev);
    assert_eq!(c.entry(n).unwrap().rdev, libc::makedev(1, 3));
    assert_eq!(
        c.entry(c.find(b"d/fifo").unwrap()).unwrap().kind,
        Kind::Fifo
    );
    assert_eq!(
        c.entry(c.find(b"d/.wh.gone").unwrap()).unwrap().whiteout,
        Whiteout::Whiteout
    );
    assert_eq!(
        c.entry(c.find(b"d/sub/.wh..wh..opq").unwrap())
            .unwrap()
            .whiteout,
        Whiteout::Opaque
    );
    assert_eq!(c.image_blob("manifest.json"), Some(&b"{}"[..]));
}

#[test]
fn every_mode_round_trips() {
    let modes = [
        (Compression::None, None),
        (Compression::Zstd, None),
        (Compression::Auto, None),
        (Compression::None, Some(Key::Raw([5; 32]))),
        (Compression::Zstd, Some(Key::Raw([6; 32]))),
        (Compression::Zstd, Some(Key::Password(b"pw".to_vec()))),
    ];
    for (comp, key) in modes {
        let opts = WriterOptions {
            compression: comp,
            key: key.clone(),
            ..Default::default()
        };
        let (bytes, files) = build(opts);
        check(bytes, &files, key);
    }
}

#[test]
fn wrong_key_is_reported_as_wrong_key() {
    let opts = WriterOptions {
        compression: Compression::Zstd,
        key: Some(Key::Password(b"right".to_vec())),
        ..Default::default()
    };
    let (bytes, _) = build(opts);
    let mut c = Container::from_bytes("mem.bfc", bytes).unwrap();
    let err = c.set_key(&Key::Password(b"wrong".to_vec())).unwrap_err();
    assert!(matches!(err, bfcfs::bfc::Error::WrongKey { .. }), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn later_add_of_a_path_wins() {
    let mut w = Writer::new(
        Cursor::new(Vec::new()),
        WriterOptions::default(),
        "m".as_ref(),
    )
    .unwrap();
    w.add_file(b"a", &meta(0o644), &mut &b"old"[..]).unwrap();
    w.add_file(b"a", &meta(0o600), &mut &b"new!"[..]).unwrap();
    w.add_dir(b"x", &meta(0o755)).unwrap();
    w.add_file(b"x/y", &meta(0o644), &mut &b"y"[..]).unwrap();
    w.remove_tree(b"x");
    w.add_file(b"x", &meta(0o644), &mut &b"now a file"[..])
        .unwrap();
    let c = Container::from_bytes("m", w.finish().unwrap().into_inner()).unwrap();
    assert_eq!(c.len(), 2);
    let mut got = Vec::new();
    c.open_reader(c.find(b"a").unwrap())
        .unwrap()
        .copy_to(&mut got)
        .unwrap();
    assert_eq!(got, b"new!");
    assert_eq!(c.entry(c.find(b"x").unwrap()).unwrap().kind, Kind::File);
}
