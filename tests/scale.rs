//! Containers at scale: a 1,000,000-entry container opens without decoding its entries (time
//! and resident memory do not grow with a heap object per entry) and lists and finds correctly.
//! The container is generated in the test.
use std::fs;
use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use bfcfs::bfc::writer::{Compression, Meta, Writer, WriterOptions};
use bfcfs::bfc::{Child, Container, Kind};

const DIRS: usize = 1000;
const FILES: usize = 999;

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        mtime_ns: 1_700_000_000_000_000_000,
        uid: Some(1000),
        gid: Some(100),
        xattrs: Vec::new(),
    }
}

/// `DIRS` directories `dNNN` of `FILES` files `dNNN/fNNN` each: DIRS × (FILES + 1) entries.
/// File `dA/fB` holds the bytes of its own path.
fn generate(path: &Path) {
    let opts = WriterOptions {
        compression: Compression::None,
        ..WriterOptions::default()
    };
    let out = BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let mut w = Writer::new(out, opts, path).unwrap();
    for d in 0..DIRS {
        let dir = format!("d{d:03}");
        w.add_dir(dir.as_bytes(), &meta(0o755)).unwrap();
        for f in 0..FILES {
            let p = format!("{dir}/f{f:03}");
            w.add_file(p.as_bytes(), &meta(0o644), &mut p.as_bytes())
                .unwrap();
        }
    }
    w.finish().unwrap();
}

/// RssAnon of this process in KiB (heap and other private memory, not the mapped file).
fn rss_anon_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const PROBE: &str = "BFCFS_SCALE_PROBE";

/// Helper of the test below, run by it in a fresh process: opens the container named by
/// `$BFCFS_SCALE_PROBE`, lists the root and prints how much RssAnon grew. Does nothing alone.
#[test]
fn open_probe() {
    let Some(file) = std::env::var_os(PROBE) else {
        return;
    };
    let before = rss_anon_kib();
    let c = Container::open(Path::new(&file)).unwrap();
    assert!(!c.children(b"").unwrap().is_empty());
    println!(
        "rss_anon_grown_kib={}",
        rss_anon_kib().saturating_sub(before)
    );
}

#[test]
fn a_million_entries_open_without_decoding_and_list_correctly() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("million.bfc");
    let started = Instant::now();
    generate(&file);
    eprintln!(
        "generated {} entries in {:?}",
        DIRS * (FILES + 1),
        started.elapsed()
    );

    // Resident memory of an open container, measured in a fresh process (this one reuses the
    // writer's freed heap): a 4-byte offset and a check byte per entry (5 MB), no heap object
    // per entry.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["open_probe", "--exact", "--nocapture", "--test-threads=1"])
        .env(PROBE, &file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let grown: u64 = stdout
        .lines()
        .find_map(|l| l.split("rss_anon_grown_kib=").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("probe failed: {stdout}"));
    eprintln!("open + list the root in a fresh process: RssAnon +{grown} KiB");
    assert!(grown < 16 << 10, "open grew RssAnon by {grown} KiB");

    let started = Instant::now();
    let c = Container::open(&file).unwrap();
    eprintln!("open: {:?}", started.elapsed());
    assert_eq!(c.len(), DIRS * (FILES + 1));

    // The root lists every directory, in order.
    let started = Instant::now();
    let root = c.children(b"").unwrap();
    assert_eq!(root.len(), DIRS);
    for (d, child) in root.iter().enumerate() {
        let Child::Entry(i) = child else {
            panic!("d{d:03} is implicit")
        };
        let e = c.entry(*i).unwrap();
        assert_eq!(e.path, format!("d{d:03}").into_bytes());
        assert_eq!(e.kind, Kind::Dir);
    }
    eprintln!("list the root: {:?}", started.elapsed());

    // One directory lists its files; each decodes with its metadata and reads its content.
    let kids = c.children(b"d517").unwrap();
    assert_eq!(kids.len(), FILES);
    for (f, child) in kids.iter().enumerate() {
        let Child::Entry(i) = *child else {
            panic!("implicit child")
        };
        let e = c.entry(i).unwrap();
        let want = format!("d517/f{f:03}");
        assert_eq!(e.path, want.as_bytes());
        assert_eq!(
            (e.kind, e.perm(), e.uid, e.gid),
            (Kind::File, 0o644, Some(1000), Some(100))
        );
        let mut buf = vec![0u8; 64];
        let n = c.read_at(i, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], want.as_bytes());
    }

    // Lookups by binary search find every sampled path and nothing else.
    for k in (0..DIRS * FILES).step_by(7919) {
        let p = format!("d{:03}/f{:03}", k / FILES, k % FILES);
        let i = c.find(p.as_bytes()).unwrap();
        assert_eq!(c.path(i), p.as_bytes());
    }
    assert_eq!(c.find(b"d999/f999"), None);
    assert_eq!(c.find(b"d1000"), None);
    assert!(c.is_dir(b"d000") && !c.is_dir(b"d000/f000"));

    // Every entry decodes and checks (what `verify` does), in order.
    let started = Instant::now();
    let mut files = 0;
    for e in c.entries() {
        if e.unwrap().kind == Kind::File {
            files += 1;
        }
    }
    assert_eq!(files, DIRS * FILES);
    eprintln!("decode every entry: {:?}", started.elapsed());

    // Searches from a known earlier entry find what a search of the whole index finds.
    for k in (0..DIRS * FILES).step_by(104_729) {
        let key = format!("d{:03}/f{:03}x", k / FILES, k % FILES);
        let want = c.lower_bound(key.as_bytes());
        for from in [
            1,
            want / 2,
            want.saturating_sub(1000),
            want.saturating_sub(1),
            want,
        ] {
            assert_eq!(
                c.lower_bound_from(from.max(1), key.as_bytes()),
                want,
                "{key} from {from}"
            );
        }
        let dir = format!("d{:03}", k / FILES);
        let d = c.find(dir.as_bytes()).unwrap();
        assert_eq!(
            c.subdir_count_from(dir.as_bytes(), d + 1),
            c.subdir_count(dir.as_bytes())
        );
    }

    deferred_index_check_reports_damage_with_the_entry(&file);
}

/// A container opened for serving (`open_deferred`) lists before its index checksum is known;
/// damage no per-entry check sees (a changed mtime) is then reported, with the index's offset
/// and the entry reached, by every entry decoded and every listing.
fn deferred_index_check_reports_damage_with_the_entry(good: &Path) {
    let mut bytes = fs::read(good).unwrap();
    let victim = b"d700/f123";
    let at = bytes
        .windows(victim.len())
        .rposition(|w| w == victim)
        .unwrap();
    // Index record: path, then obj_offset (8), obj_size (8), mode (4), mtime (8).
    bytes[at + victim.len() + 20 + 2] ^= 0x40;
    let bad = good.with_file_name("damaged.bfc");
    fs::write(&bad, &bytes).unwrap();

    // `open` (verify, extract, list) checks the whole index first, as always.
    let err = Container::open(&bad)
        .err()
        .expect("open took a damaged index");
    assert!(err.to_string().contains("index"), "{err}");

    // Opened for serving: nothing started the check, so the first entry decoded runs it.
    let c = Container::open_deferred(&bad).unwrap();
    let err = c.entry(5).unwrap_err().to_string();
    assert!(
        err.contains("index (reaching entry 5, record at offset"),
        "{err}"
    );
    assert!(c.children(b"d001").is_err());

    // Started in the background (as a mount does): entries are served on their own checks
    // until it ends, then refused.
    let c = Container::open_deferred(&bad).unwrap();
    c.start_index_check();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let err = loop {
        match c.entry(7) {
            Err(e) => break e.to_string(),
            Ok(_) if Instant::now() < deadline => std::thread::yield_now(),
            Ok(_) => panic!("the background index check never failed"),
        }
    };
    assert!(
        err.contains("reaching entry 7") && err.contains(&bad.display().to_string()),
        "{err}"
    );

    // The undamaged file: the check passes and everything reads.
    let c = Container::open_deferred(good).unwrap();
    c.start_index_check();
    assert_eq!(c.children(b"").unwrap().len(), DIRS);
    assert!(c.entry(5).is_ok());
}
