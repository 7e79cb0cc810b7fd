//! Forward compatibility: a container whose entries use a compression or encryption id this
//! version does not know still opens; `list` and `info` work; reading such an entry fails with
//! "unsupported compression N in entry PATH" (or encryption), and the other entries still read.
mod common;

use bfcfs::bfc::{Container, Meta, Writer, WriterOptions};
use common::cli::run_in;
use common::raw::*;
use std::io::{BufWriter, Read};
use std::path::Path;

/// A container with `plain` and `future` (both regular files), with `future`'s compression
/// (`field` = "comp") or encryption (`field` = "enc") id patched to `id`.
fn patched(dir: &Path, name: &str, field: &str, id: u32) -> std::path::PathBuf {
    let out = dir.join(name);
    let f = std::fs::File::create(&out).unwrap();
    let mut w = Writer::new(BufWriter::new(f), WriterOptions::default(), &out).unwrap();
    let meta = Meta {
        mode: 0o644,
        ..Default::default()
    };
    w.add_file(b"future", &meta, &mut &b"from a newer writer\n"[..])
        .unwrap();
    w.add_file(b"plain", &meta, &mut &b"readable\n"[..])
        .unwrap();
    w.finish().unwrap();
    let mut b = std::fs::read(&out).unwrap();
    let l = Layout::parse(&b);
    let rec = l.entry("future").clone();
    let at = if field == "comp" {
        rec.comp_at()
    } else {
        rec.enc_at()
    };
    put_u32(&mut b, at, id);
    fix_index_crc(&mut b);
    std::fs::write(&out, &b).unwrap();
    out
}

fn read(c: &Container, p: &str) -> Result<Vec<u8>, String> {
    let i = c.find(p.as_bytes()).ok_or_else(|| format!("{p} missing"))?;
    let mut v = Vec::new();
    c.open_reader(i)
        .and_then(|mut r| {
            r.read_to_end(&mut v).map_err(|e| bfcfs::bfc::Error::Io {
                file: p.into(),
                source: e,
            })
        })
        .map_err(|e| e.to_string())?;
    Ok(v)
}

#[test]
fn unknown_ids_open_list_and_fail_only_on_read() {
    let t = tempfile::tempdir().unwrap();
    for (field, id, word) in [
        ("comp", 7u32, "compression"),
        ("enc", 9, "encryption"),
        ("comp", 200, "compression"),
    ] {
        let name = format!("{field}{id}.bfc");
        let path = patched(t.path(), &name, field, id);
        let want = format!("unsupported {word} {id} in entry future");

        // Library: opens, lists, reads the other entry, refuses the patched one.
        let c = Container::open(&path).unwrap_or_else(|e| panic!("{name} does not open: {e}"));
        assert!(c.find(b"future").is_some() && c.find(b"plain").is_some());
        assert_eq!(read(&c, "plain").unwrap(), b"readable\n");
        let err = read(&c, "future").unwrap_err();
        assert!(err.contains(&want) && err.contains(&name), "{name}: {err}");
        let i = c.find(b"future").unwrap();
        let mut buf = [0u8; 4];
        let err = c.read_at(i, 0, &mut buf).unwrap_err().to_string();
        assert!(err.contains(&want), "{name}: read_at: {err}");

        // CLI: list and info work; extracting the entry fails cleanly, naming id and path.
        let l = run_in(t.path(), &["list", name.as_str()]).ok();
        assert!(
            l.stdout.contains("future") && l.stdout.contains("plain"),
            "{}",
            l.stdout
        );
        run_in(t.path(), &["info", name.as_str()]).ok();
        let x = run_in(t.path(), &["extract", "-C", "x", name.as_str(), "future"]);
        x.fails_with(1).stderr_has(&[&want]);
        let v = run_in(t.path(), &["verify", "--deep", name.as_str()]);
        v.fails_with(1).stderr_has(&[&want]);
        let _ = std::fs::remove_dir_all(t.path().join("x"));
    }
}
