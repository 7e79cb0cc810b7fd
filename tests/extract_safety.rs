//! Hostile containers cannot make `bfcfs extract` write outside its `-C` directory: paths with
//! `..`, absolute or empty components are refused when the container opens; symlinks in the
//! archive or already in the destination are never followed; hardlinks can only join entries
//! of the container. Each test builds its hostile container itself (with the Writer, patching
//! bytes where the Writer refuses) and checks a canary directory outside `-C` afterwards.
mod common;
use bfcfs::bfc::{Container, Error, Kind, Meta, Writer, WriterOptions};
use common::cli::run_in;
use common::raw::*;
use common::tree::snapshot;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A temp dir holding `canary/` (which nothing may touch), `dest/` (the -C dir) and containers.
struct Scene {
    t: tempfile::TempDir,
    canary_before: Vec<String>,
}

impl Scene {
    fn new() -> Scene {
        let t = tempfile::tempdir().unwrap();
        let canary = t.path().join("canary");
        fs::create_dir_all(canary.join("sub")).unwrap();
        fs::write(canary.join("target"), b"canary").unwrap();
        fs::write(canary.join("sub/file"), b"canary too").unwrap();
        let canary_before = snapshot(&canary);
        Scene { t, canary_before }
    }
    fn dir(&self) -> &Path {
        self.t.path()
    }
    fn canary(&self) -> PathBuf {
        self.dir().join("canary")
    }
    fn dest(&self) -> PathBuf {
        self.dir().join("dest")
    }
    /// Nothing changed in the canary and nothing appeared beside `dest` except `allowed`.
    #[track_caller]
    fn assert_nothing_outside(&self, allowed: &[&str]) {
        assert_eq!(
            snapshot(&self.canary()),
            self.canary_before,
            "the canary changed"
        );
        let mut top: Vec<String> = fs::read_dir(self.dir())
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "canary" && n != "dest" && !n.ends_with(".bfc"))
            .collect();
        top.retain(|n| !allowed.contains(&n.as_str()));
        assert!(top.is_empty(), "written outside -C: {top:?}");
    }
    /// Runs `bfcfs extract -C dest [extra...] FILE` from the scene's directory.
    fn extract(&self, file: &str, extra: &[&str]) -> common::cli::Run {
        let mut args = vec!["extract", "-C", "dest"];
        args.extend_from_slice(extra);
        args.push(file);
        run_in(self.dir(), &args)
    }
}

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        mtime_ns: 1_700_000_000_000_000_000,
        ..Default::default()
    }
}

/// Writes a container at `path` with `build` adding the entries.
fn write(path: &Path, build: impl FnOnce(&mut Writer<fs::File>)) {
    let f = fs::File::create(path).unwrap();
    let mut w = Writer::new(f, WriterOptions::default(), path).unwrap();
    build(&mut w);
    w.finish().unwrap();
}

#[test]
fn writer_refuses_unsafe_entry_paths() {
    let mut w = Writer::new(
        std::io::Cursor::new(Vec::new()),
        WriterOptions::default(),
        "mem.bfc".as_ref(),
    )
    .unwrap();
    for bad in [
        &b"../evil"[..],
        b"a/../../evil",
        b"/etc/passwd",
        b"a//b",
        b"./a",
        b"a/./b",
        b"a/",
        b"",
        b"..",
        b"a\0b",
    ] {
        let err = w.add_file(bad, &meta(0o644), &mut &b"x"[..]).unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}: {err:?}");
        let err = w.add_symlink(bad, &meta(0o777), b"t").unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}: {err:?}");
    }
}

#[test]
fn unsafe_entry_paths_are_rejected_when_the_container_opens() {
    let s = Scene::new();
    let plain = s.dir().join("plain.bfc");
    write(&plain, |w| {
        w.add_file(b"placeholder", &meta(0o644), &mut &b"pwned"[..])
            .unwrap();
        // A second entry, sorted after every hostile path (and so that an empty path fits).
        w.add_file(b"zz", &meta(0o644), &mut &b"harmless"[..])
            .unwrap();
    });
    let good = fs::read(&plain).unwrap();
    let canary_abs = format!("{}/pwned", s.canary().display());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"../evil".to_vec(), "'..' component"),
        (b"a/../../evil".to_vec(), "'..' component"),
        (b"..".to_vec(), "'..' component"),
        (b"./evil".to_vec(), "'.' or '..' component"),
        (b"a/./evil".to_vec(), "'.' or '..' component"),
        (canary_abs.into_bytes(), "is absolute"),
        (b"/evil".to_vec(), "is absolute"),
        (b"a//evil".to_vec(), "empty component"),
        (b"evil/".to_vec(), "empty component"),
        (b"".to_vec(), "is empty"),
        (b"ev\0il".to_vec(), "NUL"),
    ];
    for (k, (path, why)) in cases.into_iter().enumerate() {
        let mut b = good.clone();
        let l = Layout::parse(&b);
        let mut recs = l.entries.clone();
        recs[0].path = path.clone();
        rewrite_index(&mut b, &recs, &extension_bytes(&good));
        let name = format!("hostile-{k}.bfc");
        let file = s.dir().join(&name);
        fs::write(&file, &b).unwrap();
        let show = String::from_utf8_lossy(&path).into_owned();
        // Open checks the index's structure; each entry's path when it is decoded.
        let err = decode_all(&file)
            .err()
            .unwrap_or_else(|| panic!("{show:?} accepted"));
        let msg = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{show:?}: {err:?}");
        assert!(
            msg.contains(&name) && msg.contains("index entry 0") && msg.contains(why),
            "{msg}"
        );
        for extra in [&[][..], &["-f"][..]] {
            s.extract(&name, extra)
                .fails_with(1)
                .stderr_has(&[&name, "index entry 0", why]);
        }
        run_in(s.dir(), &["list", &name]).fails_with(1);
        assert!(
            snapshot(&s.dest()).is_empty(),
            "{show:?}: something was extracted"
        );
        s.assert_nothing_outside(&[]);
        assert!(!s.dir().join("evil").exists() && !Path::new("/evil").exists());
    }
}

#[test]
fn symlinked_parent_in_the_archive_is_never_followed() {
    let s = Scene::new();
    let outside = s.canary().display().to_string();
    // (symlink path, its target, the entry written "through" it)
    let attacks: [(&str, &str, &str); 4] = [
        ("evil", &outside, "evil/file"),
        ("up", "..", "up/escaped"),
        ("a/b", "../..", "a/b/escaped"),
        ("deep", "../canary/sub", "deep/file"),
    ];
    for (k, (link, target, through)) in attacks.into_iter().enumerate() {
        let name = format!("symlink-{k}.bfc");
        write(&s.dir().join(&name), |w| {
            if link.contains('/') {
                w.add_dir(b"a", &meta(0o755)).unwrap();
            }
            w.add_symlink(link.as_bytes(), &meta(0o777), target.as_bytes())
                .unwrap();
            w.add_file(through.as_bytes(), &meta(0o644), &mut &b"pwned"[..])
                .unwrap();
        });
        for extra in [&[][..], &["-f"][..]] {
            let _ = fs::remove_dir_all(s.dest());
            s.extract(&name, extra)
                .fails_with(2)
                .stderr_has(&[link, "refusing"]);
            // The symlink itself is harmless and restored; nothing went through it.
            let l = s.dest().join(link);
            assert!(fs::symlink_metadata(&l).unwrap().file_type().is_symlink());
            assert_eq!(fs::read_link(&l).unwrap(), Path::new(target));
            s.assert_nothing_outside(&[]);
            assert!(!s.dir().join("escaped").exists());
            assert!(!s.canary().join("file").exists());
        }
    }
}

#[test]
fn symlink_to_the_parent_directory_is_only_a_symlink() {
    let s = Scene::new();
    write(&s.dir().join("up.bfc"), |w| {
        w.add_symlink(b"up", &meta(0o777), b"..").unwrap();
        w.add_symlink(b"abs", &meta(0o777), b"/").unwrap();
    });
    s.extract("up.bfc", &[]).ok();
    assert_eq!(fs::read_link(s.dest().join("up")).unwrap(), Path::new(".."));
    assert_eq!(fs::read_link(s.dest().join("abs")).unwrap(), Path::new("/"));
    s.assert_nothing_outside(&[]);
}

#[test]
fn a_file_used_as_a_parent_is_refused() {
    let s = Scene::new();
    write(&s.dir().join("f.bfc"), |w| {
        w.add_file(b"a", &meta(0o644), &mut &b"file"[..]).unwrap();
        w.add_file(b"a/b", &meta(0o644), &mut &b"below a file"[..])
            .unwrap();
    });
    s.extract("f.bfc", &[])
        .fails_with(2)
        .stderr_has(&["not a directory"]);
    assert_eq!(fs::read(s.dest().join("a")).unwrap(), b"file");
    s.assert_nothing_outside(&[]);
}

#[test]
fn hardlinks_can_only_join_entries_of_the_container() {
    let s = Scene::new();
    // The Writer takes hardlink targets only among regular files already in the container.
    let mut w = Writer::new(
        std::io::Cursor::new(Vec::new()),
        WriterOptions::default(),
        "mem.bfc".as_ref(),
    )
    .unwrap();
    w.add_dir(b"d", &meta(0o755)).unwrap();
    w.add_symlink(
        b"s",
        &meta(0o777),
        s.canary().join("target").to_str().unwrap().as_bytes(),
    )
    .unwrap();
    let outside = s.canary().join("target");
    for target in [
        outside.to_str().unwrap().as_bytes(),
        b"../x",
        b"d",
        b"s",
        b"missing",
    ] {
        let err = w.add_hardlink(b"h", target).unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{err:?}");
    }
    // In the file, a hardlink is a pair of entry numbers whose index records share one
    // object; a record naming a symlink or a directory (the only ways to "point" anywhere)
    // is refused at open.
    let file = s.dir().join("h.bfc");
    write(&file, |w| {
        w.add_dir(b"d", &meta(0o755)).unwrap();
        w.add_file(b"f", &meta(0o644), &mut &b"data"[..]).unwrap();
        w.add_hardlink(b"g", b"f").unwrap();
        w.add_symlink(b"s", &meta(0o777), outside.to_str().unwrap().as_bytes())
            .unwrap();
    });
    let good = fs::read(&file).unwrap();
    let l = Layout::parse(&good);
    let hl = l.section(4);
    let num = |p: &[u8]| l.entries.iter().position(|r| r.path == p).unwrap() as u32;
    for (k, target) in [num(b"s"), num(b"d"), 999].into_iter().enumerate() {
        let mut b = good.clone();
        put_u32(&mut b, hl.body + 8, target);
        fix_index_crc(&mut b);
        let name = format!("bad-link-{k}.bfc");
        fs::write(s.dir().join(&name), &b).unwrap();
        let err = decode_all(&s.dir().join(&name)).expect_err("accepted");
        assert!(err.is_corruption(), "{err:?}");
        assert!(err.to_string().contains("extension"), "{err}");
        s.extract(&name, &["-f"]).fails_with(1);
        assert!(snapshot(&s.dest()).is_empty());
    }
    // The valid pair extracts as two names of one new inode inside -C.
    s.extract("h.bfc", &[]).ok();
    let (f, g) = (
        fs::metadata(s.dest().join("f")).unwrap(),
        fs::metadata(s.dest().join("g")).unwrap(),
    );
    assert_eq!((f.ino(), f.nlink()), (g.ino(), 2));
    assert_eq!(fs::metadata(&outside).unwrap().nlink(), 1);
    s.assert_nothing_outside(&[]);
    let c = Container::open(&file).unwrap();
    assert_eq!(c.entry(c.find(b"g").unwrap()).unwrap().kind, Kind::File);
}

#[test]
fn existing_symlink_where_the_archive_writes_a_file() {
    let s = Scene::new();
    write(&s.dir().join("c.bfc"), |w| {
        w.add_dir(b"tree", &meta(0o755)).unwrap();
        w.add_file(b"tree/file", &meta(0o644), &mut &b"from the archive"[..])
            .unwrap();
        w.add_hardlink(b"tree/link", b"tree/file").unwrap();
    });
    let plant = || {
        let _ = fs::remove_dir_all(s.dest());
        fs::create_dir_all(s.dest().join("tree")).unwrap();
        std::os::unix::fs::symlink(s.canary().join("target"), s.dest().join("tree/file")).unwrap();
    };
    // Without -f: the entry fails ("already exists"), the symlink stays, the others extract.
    plant();
    s.extract("c.bfc", &[])
        .fails_with(1)
        .stderr_has(&["tree/file", "already exists"]);
    let l = s.dest().join("tree/file");
    assert!(fs::symlink_metadata(&l).unwrap().file_type().is_symlink());
    assert_eq!(
        fs::read(s.dest().join("tree/link")).unwrap(),
        b"from the archive"
    );
    s.assert_nothing_outside(&[]);
    // With -f: the symlink is replaced by the file; its target is untouched.
    plant();
    s.extract("c.bfc", &["-f"]).ok();
    let md = fs::symlink_metadata(&l).unwrap();
    assert!(md.is_file());
    assert_eq!(fs::read(&l).unwrap(), b"from the archive");
    assert_eq!(
        md.ino(),
        fs::metadata(s.dest().join("tree/link")).unwrap().ino()
    );
    s.assert_nothing_outside(&[]);
}

#[test]
fn existing_symlink_where_the_archive_has_a_directory() {
    let s = Scene::new();
    write(&s.dir().join("c.bfc"), |w| {
        w.add_dir(b"tree", &meta(0o700)).unwrap();
        w.add_file(b"tree/file", &meta(0o644), &mut &b"pwned"[..])
            .unwrap();
        w.add_dir(b"tree/sub", &meta(0o700)).unwrap();
    });
    let plant = || {
        let _ = fs::remove_dir_all(s.dest());
        fs::create_dir_all(s.dest()).unwrap();
        std::os::unix::fs::symlink(s.canary(), s.dest().join("tree")).unwrap();
    };
    // Without -f: refused, nothing written through the symlink (and the canary keeps its mode).
    plant();
    let code = s.extract("c.bfc", &[]).failed_cleanly();
    assert!(code == 1 || code == 2);
    assert!(fs::symlink_metadata(s.dest().join("tree"))
        .unwrap()
        .file_type()
        .is_symlink());
    s.assert_nothing_outside(&[]);
    // With -f: the symlink is replaced by a real directory.
    plant();
    s.extract("c.bfc", &["-f"]).ok();
    let md = fs::symlink_metadata(s.dest().join("tree")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o700);
    assert_eq!(fs::read(s.dest().join("tree/file")).unwrap(), b"pwned");
    s.assert_nothing_outside(&[]);
}

#[test]
fn existing_symlinked_parent_in_the_destination_is_refused() {
    // The archive has no entry for the parent: the destination's symlink is in the way of a
    // deeper entry and must not be followed, with or without -f.
    let s = Scene::new();
    write(&s.dir().join("c.bfc"), |w| {
        w.add_file(b"tree/deeper/file", &meta(0o644), &mut &b"pwned"[..])
            .unwrap();
    });
    for extra in [&[][..], &["-f"][..]] {
        let _ = fs::remove_dir_all(s.dest());
        fs::create_dir_all(s.dest().join("tree")).unwrap();
        std::os::unix::fs::symlink(s.canary().join("sub"), s.dest().join("tree/deeper")).unwrap();
        s.extract("c.bfc", extra)
            .fails_with(2)
            .stderr_has(&["tree/deeper", "refusing"]);
        s.assert_nothing_outside(&[]);
    }
}

/// Opens `file` and decodes every entry (open itself checks only the index's structure).
fn decode_all(file: &std::path::Path) -> Result<(), Error> {
    let c = Container::open(file)?;
    for i in 0..c.len() {
        c.entry(i)?;
    }
    Ok(())
}
