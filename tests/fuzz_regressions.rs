//! What the fuzz targets in `fuzz/` found, kept so it stays fixed.
use bfcfs::bfc::{Container, Kind, Meta, Writer, WriterOptions};
use std::io::Cursor;

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
    assert_eq!(c.entry(0).xattrs, ok.xattrs);
}
