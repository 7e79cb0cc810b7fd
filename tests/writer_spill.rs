//! The writer keeps a bounded amount of index records in memory and spills the rest to sorted
//! runs in temp files. These tests convert layers with a bound of a few records, so nearly every
//! lookup and the final merge go through runs, and check that the container is byte for byte the
//! one written without spilling (the index, the extension, the objects), that what the layer
//! says holds (last member wins, replaced directories lose their subtree, hardlinks to spilled
//! targets, xattrs, devices), and that no temp run is left, after success or failure.
mod common;
use bfcfs::bfc::layout::HEADER_SIZE;
use bfcfs::bfc::{Container, Kind, Whiteout, Writer, WriterOptions};
use bfcfs::convert::{self, sanitize::Limits};
use common::{read_entry, read_path};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// A tar layer built member by member.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_uid(1000);
        h.set_gid(100);
        h
    }

    fn dir(&mut self, p: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, 0);
        h.set_mode(0o755);
        self.0.append_data(&mut h, p, &[][..]).unwrap();
        self
    }

    fn file(&mut self, p: &str, data: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, data.len() as u64);
        self.0.append_data(&mut h, p, data).unwrap();
        self
    }

    fn file_xattr(&mut self, p: &str, data: &[u8], name: &str, value: &[u8]) -> &mut Self {
        let key = format!("SCHILY.xattr.{name}");
        self.0
            .append_pax_extensions([(key.as_str(), value)])
            .unwrap();
        self.file(p, data)
    }

    fn link(&mut self, kind: tar::EntryType, p: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, 0);
        self.0.append_link(&mut h, p, target).unwrap();
        self
    }

    fn device(&mut self, kind: tar::EntryType, p: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(kind, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, p, &[][..]).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A layer that exercises every record operation across many runs.
fn busy_layer() -> Vec<u8> {
    use tar::EntryType as T;
    let mut l = Layer::new();
    l.dir("a").dir("a/b").dir("c");
    for i in 0..150 {
        l.file(&format!("a/f{i:03}"), format!("file {i}\n").as_bytes());
    }
    l.file("a/dup", b"first")
        // A tree that a file replaces later, with neighbours that sort between "x" and "x/".
        .dir("x")
        .dir("x/y")
        .file("x/y/z", b"gone")
        .file("x/k", b"gone too")
        .file("x-sibling", b"stays")
        .file("x.a", b"stays too")
        .file_xattr(
            "a/b/cap",
            b"binary",
            "security.capability",
            b"\x01\x00\x00\x02",
        )
        .file_xattr("c/label", b"labelled", "user.label", b"hello")
        .device(T::Char, "c/null", 1, 3)
        .device(T::Block, "c/sda", 8, 0)
        .device(T::Fifo, "c/fifo", 0, 0)
        .link(T::Symlink, "c/sym", "../a/f001")
        // Nested removals: p/q goes first, then p.
        .dir("p")
        .dir("p/q")
        .file("p/q/r", b"r")
        .file("p/s", b"s")
        .dir("p/t");
    for i in 0..60 {
        l.file(&format!("c/g{i:03}"), format!("g {i}").as_bytes());
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    l.file("c/big", &big)
        // Hardlinks to targets spilled long ago, a link to a link, a link whose target is
        // replaced afterwards (the old object keeps the link's name only).
        .link(T::Link, "c/h1", "a/f120")
        .link(T::Link, "c/h2", "c/h1")
        .link(T::Link, "c/h3", "a/f100")
        .file("a/f100", b"new content")
        .link(T::Link, "c/hbig", "c/big")
        .file("a/dup", b"second")
        .file("x", b"now a file")
        .file("p/q", b"q is a file")
        .link(T::Symlink, "p", "a")
        .dir("c/d")
        .file("c/d/e", b"e")
        // Whiteouts (markers for lower layers).
        .file("c/.wh.lower", b"")
        .file("c/d/.wh..wh..opq", b"")
        // A file turned into a directory, then filled.
        .dir("x")
        .file("x/new", b"new below x");
    for i in 0..40 {
        l.file(&format!("a/f{i:03}"), format!("again {i}\n").as_bytes());
    }
    l.finish()
}

struct Converted {
    out: PathBuf,
    runs: usize,
    result: Result<(), String>,
}

/// Converts `blob` into `dir/layer.bfc`, spilling past `spill_bytes` into `spill`.
fn convert_in(dir: &Path, blob: &[u8], spill_bytes: usize, spill: &Path) -> Converted {
    let out = dir.join("layer.bfc");
    let f = std::fs::File::create(&out).unwrap();
    let opts = WriterOptions {
        spill_bytes,
        spill_dir: Some(spill.to_path_buf()),
        ..Default::default()
    };
    let mut w = Writer::new(BufWriter::new(f), opts, &out).unwrap();
    let r = convert::convert_layer(
        blob,
        &mut w,
        b"",
        "sha256:test",
        Limits::for_blob(blob.len() as u64),
    );
    let runs = w.spilled_runs();
    let result = match r {
        Ok(_) => w.finish().map(drop).map_err(|e| e.to_string()),
        Err(e) => Err(bfcfs::error_chain::chain(&e)),
    };
    Converted { out, runs, result }
}

/// Open files of this process inside `dir` (unnamed temp files show as `dir/#N (deleted)`).
fn open_files_in(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(dir))
        .count()
}

fn assert_nothing_left(spill: &Path) {
    let names: Vec<_> = std::fs::read_dir(spill).unwrap().flatten().collect();
    assert!(names.is_empty(), "left in the spill dir: {names:?}");
    assert_eq!(open_files_in(spill), 0, "temp runs still open");
}

/// Every entry with its metadata and content, one line each.
fn listing(c: &Container) -> Vec<String> {
    (0..c.len())
        .map(|i| {
            let e = c.entry(i).unwrap();
            let body = match e.kind {
                Kind::File => format!("{:08x}", bfcfs::bfc::codec::bfc_crc(&read_entry(c, i))),
                Kind::Symlink => String::from_utf8_lossy(c.symlink_target(i).unwrap()).into(),
                _ => String::new(),
            };
            format!(
                "{} {:?} {:o} {} {:?}:{:?} rdev={} group={:?} {:?} xattrs={:?} {body}",
                String::from_utf8_lossy(&e.path),
                e.kind,
                e.mode,
                e.mtime_ns,
                e.uid,
                e.gid,
                e.rdev,
                e.link_group
                    .map(|g| String::from_utf8_lossy(c.path(g as usize)).into_owned()),
                e.whiteout,
                e.xattrs,
            )
        })
        .collect()
}

#[test]
fn spilled_conversion_writes_the_same_container() {
    let blob = busy_layer();
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir(&plain_dir).unwrap();
    let plain = convert_in(&plain_dir, &blob, usize::MAX, spill.path());
    plain.result.unwrap();
    assert_eq!(plain.runs, 0);
    let reference = std::fs::read(&plain.out).unwrap();
    let reference_list = listing(&Container::open(&plain.out).unwrap());
    // From a run per record to a few runs.
    for bound in [1, 700, 4000, 20_000] {
        let d = dir.path().join(format!("bound-{bound}"));
        std::fs::create_dir(&d).unwrap();
        let got = convert_in(&d, &blob, bound, spill.path());
        got.result.unwrap();
        // Bound 1 spills every record: past 64 runs they are merged into one.
        assert!(
            got.runs > 1 && got.runs <= 64,
            "bound {bound}: {} runs",
            got.runs
        );
        let bytes = std::fs::read(&got.out).unwrap();
        // The header differs (a random uuid); every byte after it is the same.
        assert_eq!(bytes.len(), reference.len(), "bound {bound}");
        assert!(
            bytes[HEADER_SIZE..] == reference[HEADER_SIZE..],
            "bound {bound}: the container differs from the one written in memory"
        );
        let c = Container::open(&got.out).unwrap();
        c.check_index().unwrap();
        assert_eq!(listing(&c), reference_list, "bound {bound}");
        assert_nothing_left(spill.path());
    }
    upstream_reads(
        &dir.path().join("bound-1").join("layer.bfc"),
        &reference_list,
    );
}

/// Upstream `bfc` lists and verifies a spilled container (skipped, saying so, without it).
fn upstream_reads(file: &Path, listing: &[String]) {
    let bfc = Path::new("/opt/upstream-bfc/bin/bfc");
    if !bfc.exists() {
        eprintln!("skipping the upstream check: {} is missing", bfc.display());
        return;
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bfc)
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "bfc {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["verify", "--deep"]);
    let names = run(&["list"]);
    assert_eq!(names.lines().count(), listing.len(), "{names}");
}

#[test]
fn spilled_conversion_keeps_what_the_layer_says() {
    let blob = busy_layer();
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    let got = convert_in(dir.path(), &blob, 1000, spill.path());
    got.result.unwrap();
    assert!(got.runs > 10, "{} runs", got.runs);
    let c = Container::open(&got.out).unwrap();
    // Last member wins, across runs.
    assert_eq!(read_path(&c, "a/dup"), b"second");
    assert_eq!(read_path(&c, "a/f005"), b"again 5\n");
    assert_eq!(read_path(&c, "a/f120"), b"file 120\n");
    // x: directory, replaced by a file (its tree goes), then a directory again.
    assert_eq!(c.kind(c.find(b"x").unwrap()), Kind::Dir);
    for gone in ["x/y", "x/y/z", "x/k", "p/q/r", "p/s", "p/t"] {
        assert!(
            c.find(gone.as_bytes()).is_none(),
            "{gone} survived its removal"
        );
    }
    assert_eq!(read_path(&c, "x/new"), b"new below x");
    assert_eq!(read_path(&c, "x-sibling"), b"stays");
    assert_eq!(read_path(&c, "x.a"), b"stays too");
    assert_eq!(c.kind(c.find(b"p").unwrap()), Kind::Symlink);
    assert!(c.find(b"p/q").is_none(), "p/q is below the symlink p");
    // Hardlinks: to a spilled target, a link to a link, a replaced target.
    let g = |p: &str| c.link_group(c.find(p.as_bytes()).unwrap());
    let group = g("a/f120").expect("a/f120 is linked");
    assert_eq!(g("c/h1"), Some(group));
    assert_eq!(g("c/h2"), Some(group));
    assert_eq!(read_path(&c, "c/h2"), b"file 120\n");
    assert_eq!(g("a/f100"), None, "a/f100 was replaced by a new file");
    assert_eq!(g("c/h3"), None, "the old a/f100's only name left is c/h3");
    assert_eq!(read_path(&c, "c/h3"), b"file 100\n");
    assert_eq!(g("c/big"), g("c/hbig"));
    assert!(g("c/big").is_some());
    assert_eq!(read_path(&c, "c/hbig").len(), 300_000);
    // Xattrs, devices, whiteouts.
    let e = c.entry(c.find(b"a/b/cap").unwrap()).unwrap();
    assert_eq!(
        e.xattrs,
        vec![(
            b"security.capability".to_vec(),
            b"\x01\x00\x00\x02".to_vec()
        )]
    );
    let e = c.entry(c.find(b"c/sda").unwrap()).unwrap();
    assert_eq!(
        (e.kind, libc::major(e.rdev as _), libc::minor(e.rdev as _)),
        (Kind::BlockDev, 8, 0)
    );
    let e = c.entry(c.find(b"c/null").unwrap()).unwrap();
    assert_eq!(
        (e.kind, libc::major(e.rdev as _), libc::minor(e.rdev as _)),
        (Kind::CharDev, 1, 3)
    );
    assert_eq!(
        c.whiteout(c.find(b"c/.wh.lower").unwrap()),
        Whiteout::Whiteout
    );
    assert_eq!(
        c.whiteout(c.find(b"c/d/.wh..wh..opq").unwrap()),
        Whiteout::Opaque
    );
    assert_eq!(e.uid, Some(1000));
    assert_nothing_left(spill.path());
}

/// A member below a file that was spilled long before is refused as without spilling, and the
/// runs written until then go with the writer.
#[test]
fn failed_conversion_leaves_no_runs() {
    let mut l = Layer::new();
    l.dir("a");
    for i in 0..200 {
        l.file(&format!("a/f{i:03}"), b"x");
    }
    l.file("a/f000/below", b"under a file");
    let blob = l.finish();
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    let plain = convert_in(dir.path(), &blob, usize::MAX, spill.path());
    let want = plain.result.unwrap_err();
    assert!(want.contains("\"a/f000\" is a file"), "{want}");
    let got = convert_in(dir.path(), &blob, 2000, spill.path());
    assert!(got.runs > 3, "{} runs", got.runs);
    assert_eq!(got.result.unwrap_err(), want);
    assert_nothing_left(spill.path());
}

/// While a writer holds runs they are open files in the spill directory (so the checks above
/// can see runs that were left).
#[test]
fn runs_are_unnamed_files_in_the_spill_dir_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.bfc");
    let opts = WriterOptions {
        spill_bytes: 1,
        spill_dir: Some(spill.path().to_path_buf()),
        ..Default::default()
    };
    let f = std::fs::File::create(&out).unwrap();
    let mut w = Writer::new(BufWriter::new(f), opts, &out).unwrap();
    let meta = bfcfs::bfc::Meta {
        mode: 0o644,
        ..Default::default()
    };
    for i in 0..5 {
        w.add_file(format!("f{i}").as_bytes(), &meta, &mut &b"data"[..])
            .unwrap();
    }
    assert_eq!(w.spilled_runs(), 4);
    assert_eq!(open_files_in(spill.path()), 4);
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
    drop(w);
    assert_nothing_left(spill.path());
}

/// Enough entries that the extension's per-entry sections (owners, offsets) pass the spool's
/// megabyte and go through temp files too: still the same container.
#[test]
fn large_spilled_index_streams_its_extension_through_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    let write = |name: &str, spill_bytes: usize| {
        let out = dir.path().join(name);
        let opts = WriterOptions {
            spill_bytes,
            spill_dir: Some(spill.path().to_path_buf()),
            ..Default::default()
        };
        let f = std::fs::File::create(&out).unwrap();
        let mut w = Writer::new(BufWriter::new(f), opts, &out).unwrap();
        for i in 0..150_000u32 {
            // Added out of order, so every run spans the whole range.
            let n = (u64::from(i) * 7919 % 150_000) as u32;
            let meta = bfcfs::bfc::Meta {
                mode: 0o755,
                mtime_ns: i64::from(n),
                uid: Some(n % 7),
                gid: Some(n % 5),
                xattrs: if n % 1000 == 0 {
                    vec![(b"user.n".to_vec(), n.to_le_bytes().to_vec())]
                } else {
                    Vec::new()
                },
            };
            w.add_dir(format!("d{:03}/e{n:06}", n % 300).as_bytes(), &meta)
                .unwrap();
        }
        let runs = w.spilled_runs();
        w.finish().unwrap();
        (std::fs::read(&out).unwrap(), runs)
    };
    let (plain, runs) = write("plain.bfc", usize::MAX);
    assert_eq!(runs, 0);
    let (spilled, runs) = write("spilled.bfc", 4 << 20);
    assert!(runs >= 3, "{runs} runs");
    assert!(spilled[HEADER_SIZE..] == plain[HEADER_SIZE..]);
    let c = Container::open(&dir.path().join("spilled.bfc")).unwrap();
    c.check_index().unwrap();
    assert_eq!(c.len(), 150_000);
    assert_nothing_left(spill.path());
}
