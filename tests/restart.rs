//! Restart survival (issue 12): a supervised mount outlives its server. SIGKILL of the server
//! (three times, 2 s apart) and `bfcfs restart` leave readers, held-open files, a 100 MB `dd`
//! and a running runc container without a single failed request. Real kernel mounts (needs root,
//! /dev/fuse and Linux 6.9+ for FUSE_NOTIFY_RESEND) and real runc.
mod common;
mod pull_support;
mod union_support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tree::noise;
use common::*;
use pull_support::layout::{Comp, Layer, Member as M};
use union_support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The server pid of the mount at `mnt` (it is supervised).
fn server(mnt: &Path) -> i32 {
    served_by(mnt)
        .unwrap_or_else(|| panic!("{} is not a supervised mount", mnt.display()))
        .0
}

/// Waits until a server other than `old` serves `mnt` (the supervisor records it once it
/// answers) and returns it.
fn next_server(mnt: &Path, old: i32) -> i32 {
    let t = Instant::now();
    loop {
        let now = server(mnt);
        if now != old && now != 0 {
            return now;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no new server for {}",
            mnt.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL of the server of `mnt`; returns the server that took over.
fn kill_server(mnt: &Path) -> i32 {
    let old = server(mnt);
    // SAFETY: killing a server process this test started.
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    next_server(mnt, old)
}

/// `bfcfs restart`; returns the new server (which the command prints).
fn restart(mnt: &Path) -> i32 {
    let old = server(mnt);
    let out = ok(&["restart", s(mnt)]);
    let new: i32 = out.trim().parse().unwrap();
    assert_ne!(new, old);
    assert_eq!(server(mnt), new);
    new
}

/// A `.bfc` tree: `d/fN` small files and `big` of `big_len` bytes.
fn bfc_tree(dir: &Path, big_len: usize) -> (PathBuf, Vec<u8>) {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    for i in 0..50 {
        fs::write(tree.join(format!("d/f{i}")), format!("file {i}\n")).unwrap();
    }
    let big = noise(big_len, 12);
    fs::write(tree.join("big"), &big).unwrap();
    let file = dir.join("t.bfc");
    let st = Command::new(bin())
        .current_dir(dir)
        .args(["create", "t.bfc", "tree"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "bfcfs create");
    (file, big)
}

fn mount_ro(file: &Path, mnt: &Path) -> Mnt {
    ok(&["mount", s(file), s(mnt)]);
    assert!(is_mounted(mnt));
    Mnt(mnt.to_path_buf())
}

/// Reads through `root` (a mounted `tree`) in a loop until `stop`: three files held open since
/// before the first kill (reread from the start each round), fresh opens, and a listing.
/// Returns the errors seen and the longest time one round took.
fn reader(
    root: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Duration)> {
    let mut held: Vec<(usize, fs::File)> = [3, 17, 42]
        .into_iter()
        .map(|i| (i, fs::File::open(root.join(format!("d/f{i}"))).unwrap()))
        .collect();
    std::thread::spawn(move || {
        let mut errors = Vec::new();
        let mut worst = Duration::ZERO;
        let mut round = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            for (i, f) in held.iter_mut() {
                let mut text = String::new();
                let r = f
                    .seek(SeekFrom::Start(0))
                    .and_then(|_| f.read_to_string(&mut text));
                if r.is_err() || text != format!("file {i}\n") {
                    errors.push(format!("held f{i}: {r:?} {text:?}"));
                }
            }
            let i = round % 50;
            match fs::read_to_string(root.join(format!("d/f{i}"))) {
                Ok(t) if t == format!("file {i}\n") => {}
                other => errors.push(format!("open f{i}: {other:?}")),
            }
            match fs::read_dir(root.join("d")).map(|d| d.count()) {
                Ok(50) => {}
                other => errors.push(format!("listing: {other:?}")),
            }
            worst = worst.max(t.elapsed());
            round += 1;
        }
        (errors, worst)
    })
}

#[test]
fn a_read_only_mount_keeps_its_readers_and_open_files_across_three_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = bfc_tree(tmp.path(), 1 << 20);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _m = mount_ro(&file, &mnt);
    let mut pids = BTreeSet::from([server(&mnt)]);
    let stop = Arc::new(AtomicBool::new(false));
    let r = reader(mnt.join("tree"), stop.clone());
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        pids.insert(kill_server(&mnt));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (errors, worst) = r.join().unwrap();
    assert!(errors.is_empty(), "failed reads: {errors:?}");
    assert!(worst < Duration::from_secs(2), "a round took {worst:?}");
    assert_eq!(
        pids.len(),
        4,
        "three servers took over from the first: {pids:?}"
    );
    let row = &ok(&["mounts", "--json"]);
    let v: serde_json::Value = serde_json::from_str(row).unwrap();
    let me = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mountpoint"] == s(&mnt))
        .unwrap();
    assert_eq!(me["restarts"], 3);
    assert_eq!(me["source"], s(&file));
    let sup = me["supervisor_pid"].as_i64().unwrap() as i32;
    umount(&_m);
    wait_exit(sup);
}

#[test]
fn a_server_killed_during_a_100mb_dd_read_loses_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, big) = bfc_tree(tmp.path(), 100 << 20);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = mount_ro(&file, &mnt);
    let out = tmp.path().join("out");
    // iflag=direct: every 256 KiB block is a request of its own (none served from readahead
    // done before the kill), so the kill lands in the middle of the read.
    let mut dd = Killed(
        Command::new("dd")
            .arg(format!("if={}", mnt.join("tree/big").display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=256K", "iflag=direct"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while fs::metadata(&out).map_or(0, |m| m.len()) < 4 << 20 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "dd makes no progress"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let done_at_kill = fs::metadata(&out).unwrap().len();
    let first = server(&mnt);
    let second = kill_server(&mnt);
    assert_ne!(first, second);
    let st = dd.0.wait().unwrap();
    let mut err = String::new();
    dd.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(st.success(), "dd: {err}");
    assert!(
        (done_at_kill as usize) < big.len(),
        "dd had finished before the kill"
    );
    let got = fs::read(&out).unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the bytes read differ from the file");
    umount(&m);
}

/// A rootfs of host binaries: sh, cat, ls, sleep and their libraries, /etc/base, /w.
fn loop_layers() -> Vec<Layer> {
    let exe = |host: &str, at: &str| {
        M::FileMode(leak(at.to_string()), fs::read(host).unwrap(), 0o755, 0, 0)
    };
    let bins = ["/bin/sh", "/bin/cat", "/bin/ls", "/bin/sleep"];
    let mut base = vec![
        M::Dir("etc"),
        M::Dir("w"),
        M::FileMode("etc/base", b"from base\n".to_vec(), 0o644, 0, 0),
        // Empty in the layer: the first append copies it up, the rest append to the upper file.
        M::FileMode("w/log", Vec::new(), 0o666, 0, 0),
        M::Symlink("bin", "usr/bin"),
    ];
    for b in bins {
        base.push(exe(b, leak(format!("usr{b}"))));
    }
    base.extend(libraries(&bins).iter().map(|l| exe(l, &l[1..])));
    vec![Layer::new(&base, Comp::Gzip)]
}

/// The container's loop: read lower files, list a directory, append to an upper file, 10 times
/// a second; any failure is written to stderr (the test's log file).
const LOOP: &str = "i=0; while :; do \
    cat /etc/base >/dev/null || echo \"cat failed at $i\" >&2; \
    ls /usr/bin >/dev/null || echo \"ls failed at $i\" >&2; \
    echo $i >>/w/log || echo \"append failed at $i\" >&2; \
    i=$((i+1)); sleep 0.1; done";

/// Runs the loop in a runc container on a supervised writable mount, calls `disturb` three
/// times 2 s apart (each returns the server that then serves), and checks that the container
/// runs on, logged no error, appended without a gap over 2 s, and that each disturbance gave a
/// new server.
fn container_loop_survives(tag: &str, disturb: fn(&Path) -> i32) {
    if Command::new("runc").arg("--version").output().is_err() {
        eprintln!("SKIPPED: runc is not installed");
        return;
    }
    let fx = Fixture::new(loop_layers());
    let bundle = fx.root.join("bundle");
    let rootfs = bundle.join("rootfs");
    let image = fx.image();
    let name = format!("{tag}{}", std::process::id());
    ok(&[
        "--root",
        &fx.store,
        "bundle",
        "--container",
        &name,
        &image,
        s(&bundle),
    ]);
    let m = Mnt(rootfs.clone());
    let id = format!("bfcfs-{name}");
    let errlog = fx.root.join("container.err");
    let runc = runc::run_detached(
        &bundle,
        &id,
        serde_json::json!(["/bin/sh", "-c", LOOP]),
        &errlog,
    );

    // Watch the appended file in the upper dir from outside: when did its line count grow?
    let upper_log = fx
        .root
        .join("store/containers")
        .join(&name)
        .join("upper/w/log");
    let stop = Arc::new(AtomicBool::new(false));
    let gaps = Arc::new(Mutex::new(Duration::ZERO));
    let watch = {
        let (stop, gaps, upper_log) = (stop.clone(), gaps.clone(), upper_log.clone());
        std::thread::spawn(move || {
            let (mut last_len, mut last_t) = (0u64, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                let len = fs::metadata(&upper_log).map_or(0, |m| m.len());
                if len != last_len {
                    let mut g = gaps.lock().unwrap();
                    if last_len != 0 {
                        *g = (*g).max(last_t.elapsed());
                    }
                    (last_len, last_t) = (len, Instant::now());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let t = Instant::now();
    while fs::metadata(&upper_log).map_or(0, |m| m.len()) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the loop never appended: {}",
            fs::read_to_string(&errlog).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut pids = BTreeSet::from([server(&rootfs)]);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        pids.insert(disturb(&rootfs));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    watch.join().unwrap();

    let state = Command::new("runc").args(["state", &id]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "running", "the container is still running");
    let errors = fs::read_to_string(&errlog).unwrap();
    assert!(
        errors.is_empty(),
        "the container's loop logged errors:\n{errors}"
    );
    let lines: Vec<u64> = fs::read_to_string(&upper_log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    // 10 a second when the machine is idle; the stall bound below is what matters.
    assert!(lines.len() >= 20, "only {} appends in 7 s", lines.len());
    assert!(
        lines.iter().enumerate().all(|(i, &n)| n == i as u64),
        "appends lost or doubled: {lines:?}"
    );
    let gap = *gaps.lock().unwrap();
    assert!(gap <= Duration::from_secs(2), "the loop stalled {gap:?}");
    assert_eq!(pids.len(), 4, "three new servers: {pids:?}");
    eprintln!("longest stall of the appends: {gap:?}");

    let (srv, sup) = served_by(&rootfs).unwrap();
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["--root", &fx.store, "containers", "--json"])).unwrap();
    let me = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str())
        .unwrap();
    assert_eq!(
        (me["server_pid"].as_i64(), me["supervisor_pid"].as_i64()),
        (Some(srv.into()), Some(sup.into())),
        "containers --json names who serves the container"
    );
    drop(runc);
    umount(&m);
    wait_exit(sup);
    ok(&["--root", &fx.store, "rm-container", &name]);
}

#[test]
fn a_runc_container_runs_on_through_three_server_kills() {
    container_loop_survives("kill", kill_server);
}

#[test]
fn a_runc_container_runs_on_through_three_graceful_restarts() {
    container_loop_survives("restart", restart);
}

#[test]
fn killing_the_supervisor_leaves_a_mount_that_umount_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = bfc_tree(tmp.path(), 4096);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = mount_ro(&file, &mnt);
    let (srv, sup) = served_by(&mnt).unwrap();
    // SAFETY: killing processes this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_exit(sup);
    // The server still holds the connection: the mount answers until it ends too.
    assert_eq!(
        fs::read_to_string(mnt.join("tree/d/f1")).unwrap(),
        "file 1\n"
    );
    // SAFETY: as above.
    unsafe { libc::kill(srv, libc::SIGKILL) };
    wait_exit(srv);
    let e = fs::metadata(mnt.join("tree/d/f2")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    assert!(
        served_by(&mnt).is_none(),
        "a dead supervisor's record is not listed"
    );
    umount(&m);
}

/// One writable mount's held writer across a disturbance of its server: `w/held` (a lower file)
/// is opened for appending (copied up, served with FUSE passthrough) and kept open while the
/// server is disturbed; then new opens of the same file, for reading and for writing, must work
/// and see what the held descriptor wrote, and the held descriptor must keep working. And a
/// lower file held open read-only (cached mode in the kernel) opens for writing afterwards.
fn held_upper_file_reopens_after(disturb: fn(&Path) -> i32) {
    use std::io::Write;
    let fx = Fixture::new(vec![Layer::new(
        &[
            M::Dir("w"),
            M::FileMode("w/held", b"lower\n".to_vec(), 0o666, 0, 0),
            M::FileMode("w/ro", b"read only\n".to_vec(), 0o666, 0, 0),
        ],
        Comp::Gzip,
    )]);
    let mnt = fx.dir("mnt");
    let m = fx.mount_upper(&mnt);
    let path = mnt.join("w/held");
    let mut held = fs::OpenOptions::new().append(true).open(&path).unwrap();
    held.write_all(b"before\n").unwrap();
    let mut ro = fs::File::open(mnt.join("w/ro")).unwrap();
    let first = server(&mnt);
    let second = disturb(&mnt);
    assert_ne!(first, second);

    held.write_all(b"held after\n").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("w/ro"))
        .expect("a new open for writing of a lower file held open read-only")
        .write_all(b"appended\n")
        .unwrap();
    let mut text = String::new();
    ro.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("read only\n"), "{text:?}");
    drop(ro);
    assert_eq!(
        fs::read_to_string(mnt.join("w/ro")).unwrap(),
        "read only\nappended\n"
    );
    assert_eq!(
        fs::read(&path).map_err(|e| e.to_string()),
        Ok(b"lower\nbefore\nheld after\n".to_vec()),
        "a new open for reading sees the held writer's bytes"
    );
    let mut again = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("a new open for writing of a file held open across the restart");
    again.write_all(b"new writer\n").unwrap();
    held.write_all(b"held again\n").unwrap();
    let mut rw = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("a new read-write open");
    let mut text = String::new();
    rw.read_to_string(&mut text).unwrap();
    assert_eq!(text, "lower\nbefore\nheld after\nnew writer\nheld again\n");
    drop((held, again, rw));

    // Every handle is closed: a new open (which may get a new backing file) works too, and
    // after a second disturbance with nothing held, too.
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"closed all\n")
        .unwrap();
    disturb(&mnt);
    let held = fs::OpenOptions::new().append(true).open(&path).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "lower\nbefore\nheld after\nnew writer\nheld again\nclosed all\n"
    );
    drop(held);
    let (_, sup) = served_by(&mnt).unwrap();
    umount(&m);
    wait_exit(sup);
    assert_eq!(
        fs::read_to_string(fx.root.join("upper/w/held")).unwrap(),
        "lower\nbefore\nheld after\nnew writer\nheld again\nclosed all\n"
    );
}

#[test]
fn a_file_held_open_for_writing_across_a_server_kill_opens_again() {
    held_upper_file_reopens_after(kill_server);
}

#[test]
fn a_file_held_open_for_writing_across_a_graceful_restart_opens_again() {
    held_upper_file_reopens_after(restart);
}

/// A WRITE that a killed server carried out but did not answer is sent again to the next one
/// (FUSE_NOTIFY_RESEND), so the server must write exactly where the kernel says: the kernel
/// has already put an O_APPEND write at its end of file, and a server that appended again
/// (pwrite on an O_APPEND descriptor ignores the offset) would write a resent append twice. A
/// shared mapping of a file opened O_RDWR|O_APPEND shows it deterministically: its page is
/// written back at offset 0 with the handle of that open, and must land there. (The file is
/// kept in the kernel's cached mode by a read-only open of it, so its writes reach the server
/// instead of going through FUSE passthrough.)
#[test]
fn a_write_lands_at_the_kernels_offset_even_through_an_o_append_handle() {
    use std::io::Write;
    let fx = Fixture::new(vec![Layer::new(
        &[
            M::Dir("w"),
            M::FileMode("w/m", b"abcdefgh\n".to_vec(), 0o666, 0, 0),
        ],
        Comp::Gzip,
    )]);
    let mnt = fx.dir("mnt");
    let m = fx.mount_upper(&mnt);
    let path = mnt.join("w/m");
    let cached = fs::File::open(&path).unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .unwrap();
    // SAFETY: a shared mapping of 9 bytes of a file this test holds open; unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            9,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(b"XYZ".as_ptr(), p.cast::<u8>(), 3);
        assert_eq!(libc::msync(p, 9, libc::MS_SYNC), 0);
        libc::munmap(p, 9);
    }
    f.sync_all().unwrap();
    f.write_all(b"tail\n").unwrap();
    drop((f, cached));
    assert_eq!(
        fs::read_to_string(fx.root.join("upper/w/m")).unwrap(),
        "XYZdefgh\ntail\n"
    );
    umount(&m);
}
