//! What the fuzz targets in `fuzz/` found (and inputs for bugs found by hand in the same
//! parsers), kept so it stays fixed. Inputs go in `tests/fuzz-regressions/<target>/`; each is
//! replayed through what that target does (`fuzz/harness.rs`; containers as `open_bytes` does:
//! walk, reads at odd offsets, symlink targets, verification) and must not panic.
use bfcfs::bfc::{Child, Container, Kind, Meta, Writer, WriterOptions};
use std::io::Cursor;
use std::path::Path;

#[path = "../fuzz/harness.rs"]
mod harness;

/// fuzz `roundtrip`: the Writer stored an empty xattr name, which the reader (rightly) refuses,
/// so a container the Writer finished could not be opened.
#[test]
fn writer_refuses_xattr_names_the_reader_refuses() {
    let mut w = Writer::new(
        Cursor::new(Vec::new()),
        WriterOptions::default(),
        "x.bfc".as_ref(),
    )
    .unwrap();
    for name in [&b""[..], b"user.a\0b"] {
        let m = Meta {
            mode: 0o644,
            xattrs: vec![(name.to_vec(), b"v".to_vec())],
            ..Meta::default()
        };
        assert!(w.add_file(b"f", &m, &mut &b"data"[..]).is_err());
        assert!(w.add_dir(b"d", &m).is_err());
        assert!(w.add_symlink(b"l", &m, b"f").is_err());
        assert!(w.add_special(b"p", Kind::Fifo, &m, (0, 0)).is_err());
        assert!(w.add_whiteout(b".wh.x", &m).is_err());
    }
    let ok = Meta {
        mode: 0o644,
        xattrs: vec![(b"user.a".to_vec(), Vec::new())],
        ..Meta::default()
    };
    w.add_file(b"f", &ok, &mut &b"data"[..]).unwrap();
    let c = Container::from_bytes("x.bfc", w.finish().unwrap().into_inner()).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c.entry(0).unwrap().xattrs, ok.xattrs);
}

#[test]
fn every_regression_input_is_handled_without_panic() {
    // tests/fuzz-regressions/<target>/<input>: each input goes through what that fuzz target
    // does (fuzz/harness.rs, or `exercise` below for open_bytes).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut seen = 0;
    let mut targets = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|t| t.unwrap().path())
        .collect::<Vec<_>>();
    targets.sort();
    for t in targets {
        let target = t.file_name().unwrap().to_string_lossy().into_owned();
        let run: fn(&[u8]) = match target.as_str() {
            "open_bytes" => |b| exercise(b.to_vec()),
            "convert_layer" => harness::convert_layer,
            "oci_documents" => harness::oci_documents,
            "auth" => harness::auth,
            "reference" => harness::reference,
            other => panic!("{}: no fuzz target {other:?}", t.display()),
        };
        for f in std::fs::read_dir(&t).unwrap() {
            let path = f.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                panic!("{} panics", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "{} holds no inputs", dir.display());
}

/// Everything the `open_bytes` fuzz target does with a container that opens; errors are fine.
fn exercise(bytes: Vec<u8>) {
    let Ok(c) = Container::from_bytes("fuzz.bfc", bytes) else {
        return;
    };
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let Ok(children) = c.children(&dir) else {
            continue;
        };
        for child in children {
            match child {
                Child::Entry(i) if c.entry(i).is_ok_and(|e| e.kind == Kind::Dir) => {
                    stack.push(c.path(i).to_vec())
                }
                Child::Entry(_) => {}
                Child::Implicit(name) => {
                    let mut p = dir.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&name);
                    stack.push(p);
                }
            }
        }
    }
    for i in 0..c.len() {
        let size = c.size(i);
        let mut buf = vec![0u8; 5000];
        for off in [0, 1, size / 2, size.saturating_sub(1), size, u64::MAX] {
            let _ = c.read_at(i, off, &mut buf);
        }
        let _ = c.symlink_target(i);
        let _ = c.check_object(i);
        let _ = c.verify_entry(i);
        if let Ok(mut r) = c.open_reader(i) {
            let _ = r.copy_to(&mut std::io::sink());
        }
    }
}
