//! The writable union under load, through real kernel mounts (needs root and /dev/fuse): what a
//! mount has seen does not stay in the server, and a long copy-up stalls nobody else.
mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bfcfs::bfc::writer::{Compression, Meta, Writer, WriterOptions};
use common::*;

/// Unmounts on drop, even when a test fails.
struct Mnt(PathBuf);

impl Drop for Mnt {
    fn drop(&mut self) {
        let c = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn meta() -> Meta {
    Meta {
        mode: 0o755,
        mtime_ns: 0,
        uid: Some(0),
        gid: Some(0),
        xattrs: Vec::new(),
    }
}

/// A container with directory `d`, a few small files in `other/`, and `big/file` of `big` bytes.
fn image(path: &Path, big: usize) {
    let opts = WriterOptions {
        compression: Compression::None,
        ..WriterOptions::default()
    };
    let out = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut w = Writer::new(out, opts, path).unwrap();
    w.add_dir(b"d", &meta()).unwrap();
    w.add_dir(b"other", &meta()).unwrap();
    for i in 0..10 {
        let name = format!("other/f{i}");
        w.add_file(name.as_bytes(), &meta(), &mut &b"small"[..])
            .unwrap();
    }
    w.add_dir(b"big", &meta()).unwrap();
    let data = tree::noise(big, 3);
    w.add_file(b"big/file", &meta(), &mut &data[..]).unwrap();
    w.finish().unwrap();
}

/// `bfcfs mount --upper UPPER FILE MNT`; returns the guard and the upper dir.
fn mount_writable(tmp: &Path, file: &Path) -> (Mnt, PathBuf) {
    let mnt = tmp.join("mnt");
    let upper = tmp.join("upper");
    fs::create_dir_all(&mnt).unwrap();
    let (code, _, err) = bfcfs(&[
        "mount",
        "--upper",
        upper.to_str().unwrap(),
        file.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "mount failed: {err}");
    (Mnt(mnt), upper)
}

/// The pid of the process serving `mnt` (the background server runs the mount command line).
fn server_pid(mnt: &Path) -> u32 {
    if let Some((server, _)) = common::served_by(mnt) {
        return server as u32;
    }
    let want = mnt.as_os_str().as_bytes();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.contains(&&b"mount"[..]) && args.contains(&want) {
            return pid;
        }
    }
    panic!("no server for {}", mnt.display());
}

fn rss_anon_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

fn churn(dir: &Path, from: usize, n: usize) {
    for i in from..from + n {
        let p = dir.join(format!("f{i}"));
        fs::write(&p, b"x").unwrap();
        fs::remove_file(&p).unwrap();
    }
}

#[test]
fn create_unlink_churn_leaves_the_server_where_it_started() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("img.bfc");
    image(&file, 4096);
    let (m, _) = mount_writable(tmp.path(), &file);
    let dir = m.0.join("d");
    let pid = server_pid(&m.0);
    // Warm up allocator pools and the kernel's caches, then measure.
    churn(&dir, 0, 10_000);
    let before = rss_anon_kib(pid);
    churn(&dir, 10_000, 100_000);
    let after = rss_anon_kib(pid);
    assert!(
        after < before + 5 * 1024,
        "100,000 create+unlink grew the server from {before} KiB to {after} KiB"
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_long_copy_up_does_not_stall_unrelated_changes_or_lookups() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("img.bfc");
    image(&file, 512 << 20);
    let (m, upper) = mount_writable(tmp.path(), &file);
    let work = upper.with_extension("work");
    let big = m.0.join("big/file");
    fs::metadata(&big).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let copier = {
        let done = done.clone();
        std::thread::spawn(move || {
            // Opening for write copies the whole file up.
            let f = fs::OpenOptions::new().write(true).open(&big);
            done.store(true, Ordering::SeqCst);
            f.map(drop)
        })
    };
    // Wait until the copy is under way (its temporary file is in the work dir).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_dir(&work).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "the copy-up never started");
        assert!(!done.load(Ordering::SeqCst), "the copy-up ended unseen");
        std::thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    fs::create_dir(m.0.join("other/new")).unwrap();
    fs::write(m.0.join("d/created"), b"y").unwrap();
    assert_eq!(fs::read(m.0.join("other/f7")).unwrap(), b"small");
    let took = t0.elapsed();
    let still_copying = !done.load(Ordering::SeqCst);
    copier.join().unwrap().unwrap();
    assert!(
        still_copying,
        "the changes waited for the copy-up ({took:?}): they must not"
    );
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(
        fs::metadata(upper.join("big/file")).unwrap().len(),
        512 << 20
    );
}
