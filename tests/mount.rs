//! Real kernel mounts through `bfcfs mount` (needs root and /dev/fuse). Every test waits for the
//! mount command to return (it returns once the mount answers) and unmounts in a Drop guard, so no
//! mount outlives a test, even a failing one. Mountpoints are unique temp dirs: tests run in parallel.
mod common;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bfcfs::bfc::{Container, Kind};
use common::*;

/// A mounted bfcfs; dropping it detaches the mount (lazily, so it works even if a test left a
/// file open or killed the server) and removes the mountpoint.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(self.path()) {
            let c = CString::new(self.path().as_os_str().as_bytes()).unwrap();
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn is_mounted(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

fn mount_args(file: &Path, args: &[&str]) -> (Mounted, Output) {
    let dir = tempfile::Builder::new()
        .prefix("bfcfs-mnt")
        .tempdir()
        .unwrap();
    let out = run(Command::new(bin())
        .arg("mount")
        .args(args)
        .arg(file)
        .arg(dir.path()));
    (Mounted { dir }, out)
}

/// `bfcfs create ARGS IMAGE .` in `tree`, asserting success.
fn create(tree: &Path, image: &Path, args: &[&str]) {
    let out = run(Command::new(bin())
        .current_dir(tree)
        .arg("create")
        .args(args)
        .arg(image)
        .arg("."));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts and asserts success.
fn mount(file: &Path, args: &[&str]) -> Mounted {
    let (m, out) = mount_args(file, args);
    assert!(
        out.status.success(),
        "bfcfs mount {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        is_mounted(m.path()),
        "mount command returned before the mount existed"
    );
    m
}

fn key_args(c: &serde_json::Value, pwfile: &Path) -> Vec<String> {
    if let Some(p) = c.get("password").and_then(|v| v.as_str()) {
        fs::write(pwfile, format!("{p}\n")).unwrap();
        return vec!["--password-file".into(), pwfile.display().to_string()];
    }
    if let Some(k) = c.get("keyfile").and_then(|v| v.as_str()) {
        return vec!["-K".into(), fixtures().join(k).display().to_string()];
    }
    Vec::new()
}

/// Walks a mounted tree: relative path → metadata.
fn walk(root: &Path) -> BTreeMap<String, fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if md.is_dir() {
                stack.push(e.path());
            }
            out.insert(rel, md);
        }
    }
    out
}

fn check_against_manifest(root: &Path, tree: &[serde_json::Value], file: &str) {
    let seen = walk(root);
    let want: Vec<&str> = tree.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        want,
        "{file}: paths"
    );
    for e in tree {
        let path = e["path"].as_str().unwrap();
        let md = &seen[path];
        let full = root.join(path);
        assert_eq!(
            u64::from(md.mode() & 0o7777),
            e["mode"].as_u64().unwrap(),
            "{file}: {path} mode"
        );
        match e["type"].as_str().unwrap() {
            "dir" => assert!(md.is_dir(), "{file}: {path}"),
            "symlink" => {
                assert!(md.file_type().is_symlink(), "{file}: {path}");
                let t = fs::read_link(&full).unwrap();
                assert_eq!(
                    t.to_str().unwrap(),
                    e["target"].as_str().unwrap(),
                    "{file}: {path}"
                );
            }
            "file" => {
                assert!(md.is_file(), "{file}: {path}");
                assert_eq!(md.len(), e["size"].as_u64().unwrap(), "{file}: {path} size");
                let data = fs::read(&full).unwrap();
                assert_eq!(
                    sha256_hex(&data),
                    e["sha256"].as_str().unwrap(),
                    "{file}: {path}"
                );
            }
            t => panic!("unknown type {t}"),
        }
    }
    // Directories: st_nlink = 2 + subdirectories.
    for (path, md) in &seen {
        if md.is_dir() {
            let subdirs = seen
                .iter()
                .filter(|(p, m)| m.is_dir() && Path::new(p).parent() == Some(Path::new(path)))
                .count() as u64;
            assert_eq!(md.nlink(), 2 + subdirs, "{file}: {path} nlink");
        }
    }
}

#[test]
fn every_upstream_container_mounts_and_matches_its_manifest() {
    let manifest = manifest();
    let tmp = tempfile::tempdir().unwrap();
    for c in manifest["containers"].as_array().unwrap() {
        let file = c["file"].as_str().unwrap();
        let keys = key_args(c, &tmp.path().join("pw"));
        let args: Vec<&str> = keys.iter().map(String::as_str).collect();
        let m = mount(&fixtures().join(file), &args);
        let tree = manifest["trees"][c["tree"].as_str().unwrap()]
            .as_array()
            .unwrap();
        check_against_manifest(m.path(), tree, file);
    }
}

#[test]
fn uid_and_gid_options_own_entries_that_record_no_owner() {
    let m = mount(
        &fixtures().join("plain.bfc"),
        &["-o", "uid=4242", "-o", "gid=4343"],
    );
    for p in ["tree", "tree/bin/tool", "tree/docs/link-rel"] {
        let md = fs::symlink_metadata(m.path().join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (4242, 4343), "{p}");
    }
}

#[test]
fn subdir_mounts_one_directory_as_the_root() {
    let m = mount(&fixtures().join("plain.bfc"), &["--subdir", "tree/docs"]);
    let names: Vec<String> = fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"readme.txt".to_string()), "{names:?}");
    assert_eq!(
        fs::read_link(m.path().join("link-rel")).unwrap(),
        Path::new("readme.txt")
    );
    let (_m, out) = mount_args(&fixtures().join("plain.bfc"), &["--subdir", "tree/nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tree/nope"));
}

/// Reference content of every regular file, read through the library.
fn library_contents(file: &Path) -> Vec<(String, Vec<u8>)> {
    let c = Container::open(file).unwrap();
    (0..c.len())
        .filter(|&i| c.entry(i).unwrap().kind == Kind::File && c.entry(i).unwrap().size > 0)
        .map(|i| {
            let mut data = Vec::new();
            c.open_reader(i).unwrap().copy_to(&mut data).unwrap();
            (
                String::from_utf8(c.entry(i).unwrap().path.clone()).unwrap(),
                data,
            )
        })
        .collect()
}

#[test]
fn eight_threads_reading_random_ranges_get_the_source_bytes() {
    for name in ["plain.bfc", "zstd.bfc"] {
        let file = fixtures().join(name);
        let mut files = library_contents(&file);
        files.sort_by_key(|(_, d)| std::cmp::Reverse(d.len()));
        files.truncate(6);
        let m = mount(&file, &["-o", "cache_size=1M"]);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (files, root) = (&files, m.path());
                s.spawn(move || {
                    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                    let mut next = move || {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed
                    };
                    for _ in 0..300 {
                        let (path, data) = &files[next() as usize % files.len()];
                        let f = fs::File::open(root.join(path)).unwrap();
                        let off = next() % data.len() as u64;
                        let len = 1 + next() as usize % 200_000;
                        let mut buf = vec![0u8; len];
                        let n = f.read_at(&mut buf, off).unwrap();
                        let end = (off as usize + len).min(data.len());
                        assert_eq!(n, end - off as usize, "{name}: {path} short read at {off}");
                        assert!(
                            buf[..n] == data[off as usize..end],
                            "{name}: {path} bytes at {off}+{len}"
                        );
                    }
                });
            }
        });
    }
}

/// Offset in the container file of the first payload byte of stored file `path`.
fn stored_payload_offset(file: &Path, path: &str) -> u64 {
    let c = Container::open(file).unwrap();
    let e = c.entry(c.find(path.as_bytes()).unwrap()).unwrap();
    e.obj_offset + e.obj_size - e.size
}

#[test]
fn damaged_content_gives_eio_and_neighbours_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("damaged.bfc");
    fs::copy(fixtures().join("plain.bfc"), &copy).unwrap();
    let off = stored_payload_offset(&copy, "tree/bin/tool") + 1000;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(off)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], off).unwrap();
    drop(f);

    let m = mount(&copy, &[]);
    let err = fs::read(m.path().join("tree/bin/tool")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The mount stays up and the neighbours are intact.
    let manifest = manifest();
    for e in manifest["trees"]["tree"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        if e["type"] == "file" && path != "tree/bin/tool" {
            let data = fs::read(m.path().join(path)).unwrap();
            assert_eq!(sha256_hex(&data), e["sha256"].as_str().unwrap(), "{path}");
        }
    }
    // Asking again still fails: damaged bytes are never returned.
    assert!(fs::read(m.path().join("tree/bin/tool")).is_err());
}

/// A `tar`-like walk of a zstd mount: files read one after the other in listing order are
/// decoded ahead of the reader and answered from the chunk cache; every byte matches, and a
/// file damaged in the middle of the walk is EIO (decoding it ahead failed) while the files
/// after it still read.
#[test]
fn a_walk_of_a_zstd_mount_reads_every_file_and_a_damaged_one_is_eio() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let mut want = BTreeMap::new();
    for d in 0..4 {
        for f in 0..50u32 {
            let rel = format!("d{d}/f{f:03}");
            let len = 1000 + (f as usize * 997 + d * 131) % 60_000;
            let data: Vec<u8> = (0..len).map(|i| ((i / 3) as u32 ^ f) as u8).collect();
            fs::create_dir_all(tree.join(format!("d{d}"))).unwrap();
            fs::write(tree.join(&rel), &data).unwrap();
            want.insert(rel, data);
        }
    }
    let image = tmp.path().join("walk.bfc");
    create(&tree, &image, &["-c", "zstd"]);
    let damaged = "d2/f017";
    let c = Container::open(&image).unwrap();
    let e = c.entry(c.find(damaged.as_bytes()).unwrap()).unwrap();
    let off = e.obj_offset + e.obj_size - 8;
    drop(c);
    let f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&image)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], off).unwrap();
    drop(f);

    let m = mount(&image, &[]);
    for pass in 0..2 {
        for (rel, data) in &want {
            let got = fs::read(m.path().join(rel));
            if rel == damaged {
                let err = got.unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EIO), "pass {pass}: {err}");
            } else {
                assert!(got.unwrap() == *data, "pass {pass}: {rel} differs");
            }
        }
    }
}

#[test]
fn a_wrong_or_missing_key_is_a_clear_error_and_nothing_is_mounted() {
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    fs::write(&pw, "not the password\n").unwrap();
    let file = fixtures().join("enc-password.bfc");
    let (m, out) = mount_args(&file, &["--password-file", pw.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("wrong key"), "{err}");
    assert!(!is_mounted(m.path()));

    let bad_key = tmp.path().join("key");
    fs::write(&bad_key, [7u8; 32]).unwrap();
    let (m, out) = mount_args(
        &fixtures().join("enc-keyfile.bfc"),
        &["-K", bad_key.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong key"));
    assert!(!is_mounted(m.path()));

    // No key and no terminal (stdin of a test is not a TTY).
    let (m, out) = mount_args(&file, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("encrypted"), "{err}");
    assert!(!is_mounted(m.path()));
}

#[test]
fn every_kind_of_write_is_erofs() {
    let m = mount(&fixtures().join("plain.bfc"), &[]);
    let root = m.path().join("tree");
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(fs::write(root.join("new"), b"x"), "create");
    erofs(
        fs::OpenOptions::new()
            .write(true)
            .open(root.join("bin/tool"))
            .map(drop),
        "open for write",
    );
    erofs(fs::create_dir(root.join("newdir")), "mkdir");
    erofs(fs::remove_file(root.join("bin/tool")), "unlink");
    erofs(fs::remove_dir(root.join("emptydir")), "rmdir");
    erofs(
        fs::rename(root.join("bin/tool"), root.join("bin/tool2")),
        "rename",
    );
    erofs(
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o600)),
        "chmod",
    );
    erofs(std::os::unix::fs::symlink("x", root.join("ln")), "symlink");
    erofs(
        fs::hard_link(root.join("bin/tool"), root.join("hl")),
        "link",
    );
    let p = CString::new(root.join("bin/tool").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe { libc::setxattr(p.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EROFS)
    );
}

#[test]
fn statfs_reports_the_container_size_and_entries() {
    let file = fixtures().join("plain.bfc");
    let m = mount(&file, &[]);
    let p = CString::new(m.path().as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct through a valid pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_files, 2048);
    assert_eq!(
        st.f_blocks * st.f_frsize,
        fs::metadata(&file).unwrap().len().div_ceil(4096) * 4096
    );
    assert_ne!(st.f_flag & libc::ST_RDONLY, 0);
    assert_ne!(st.f_flag & libc::ST_NOSUID, 0);
    assert_ne!(st.f_flag & libc::ST_NODEV, 0);
}

/// The pid of the server serving `mnt` (its command line names the mountpoint).
fn server_pid(mnt: &Path) -> i32 {
    if let Some((server, _)) = served_by(mnt) {
        return server;
    }
    let want = mnt.as_os_str().as_bytes();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.contains(&&b"mount"[..]) && args.contains(&want) && args[0].ends_with(b"bfcfs") {
            return pid;
        }
    }
    panic!("no server process for {}", mnt.display());
}

#[test]
fn sigterm_unmounts_cleanly() {
    let m = mount(&fixtures().join("plain.bfc"), &[]);
    let pid = server_pid(m.path());
    // SAFETY: sending a signal to a process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_exit(pid);
    assert!(!is_mounted(m.path()));
}

#[test]
fn umount_clears_a_mount_whose_server_was_killed() {
    let m = mount(&fixtures().join("plain.bfc"), &[]);
    let pid = server_pid(m.path());
    // A supervised mount survives its server: kill the supervisor first (then the kernel ends
    // the connection with the server, the last holder of /dev/fuse).
    if let Some((_, supervisor)) = served_by(m.path()) {
        // SAFETY: killing the supervisor this test started.
        unsafe { libc::kill(supervisor, libc::SIGKILL) };
        wait_exit(supervisor);
    }
    // SAFETY: killing the server this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_exit(pid);
    let e = fs::metadata(m.path().join("tree")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    let out = run(Command::new(bin()).arg("umount").arg(m.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(m.path()));
    // Not a mount point any more: a clear error.
    let out = run(Command::new(bin()).arg("umount").arg(m.path()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a FUSE mount point"));
}

/// Installs the helper as /sbin/mount.fuse.bfcfs for the test's life (removed after, if still ours).
struct HelperLink(PathBuf);

impl HelperLink {
    fn install() -> HelperLink {
        let link = PathBuf::from("/sbin/mount.fuse.bfcfs");
        let target = PathBuf::from(env!("CARGO_BIN_EXE_mount-bfcfs"));
        let tmp = PathBuf::from(format!("/sbin/.mount.fuse.bfcfs.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        fs::rename(&tmp, &link).unwrap();
        HelperLink(target)
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let link = Path::new("/sbin/mount.fuse.bfcfs");
        if fs::read_link(link).ok().as_deref() == Some(self.0.as_path()) {
            let _ = fs::remove_file(link);
        }
    }
}

#[test]
fn mount_t_fuse_bfcfs_goes_through_the_helper() {
    let _helper = HelperLink::install();
    let dir = tempfile::Builder::new()
        .prefix("bfcfs-mnt")
        .tempdir()
        .unwrap();
    let m = Mounted { dir };
    let out = run(Command::new("mount")
        .args(["-t", "fuse.bfcfs", "-o", "allow_other,subdir=tree"])
        .arg(fixtures().join("plain.bfc"))
        .arg(m.path()));
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == m.path().to_str())
        .unwrap();
    assert!(
        line.contains("fuse.bfcfs") && line.contains("allow_other"),
        "{line}"
    );
    let data = fs::read(m.path().join("bin/tool")).unwrap();
    assert_eq!(data.len(), 70000);
    let out = run(Command::new("umount").arg(m.path()));
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(m.path()));
}

#[test]
fn bad_options_fail_before_mounting() {
    let (m, out) = mount_args(&fixtures().join("plain.bfc"), &["-o", "rw"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    assert!(!is_mounted(m.path()));
    let e = fs::read_dir(m.path()).map(|d| d.count());
    assert!(matches!(e, Ok(0)) || e.as_ref().is_err_and(|e| e.kind() == ErrorKind::NotFound));
}

fn meta(
    mode: u32,
    owner: Option<(u32, u32)>,
    xattrs: &[(&str, &[u8])],
) -> bfcfs::bfc::writer::Meta {
    bfcfs::bfc::writer::Meta {
        mode,
        mtime_ns: 1_700_000_000_123_456_789,
        uid: owner.map(|o| o.0),
        gid: owner.map(|o| o.1),
        xattrs: xattrs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect(),
    }
}

/// A container with what upstream BFC cannot say: owners, xattrs, hardlinks, devices, fifos, a
/// whiteout, implicit parents, and a large zstd file in chunks.
fn write_rich_container(path: &Path, compression: bfcfs::bfc::writer::Compression) -> Vec<u8> {
    use bfcfs::bfc::writer::{Writer, WriterOptions};
    let opts = WriterOptions {
        compression,
        ..WriterOptions::default()
    };
    let mut w = Writer::new(fs::File::create(path).unwrap(), opts, path).unwrap();
    let owned = Some((1234, 5678));
    w.add_dir(b"etc", &meta(0o755, Some((0, 0)), &[("user.dir", b"d")]))
        .unwrap();
    w.add_file(
        b"etc/passwd",
        &meta(
            0o644,
            owned,
            &[("user.a", b"1"), ("trusted.b", b"\x00\xff")],
        ),
        &mut &b"root:x:0:0\n"[..],
    )
    .unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 0x3f)
        .collect();
    w.add_file(
        b"usr/lib/big.bin",
        &meta(0o644, None, &[]),
        &mut big.as_slice(),
    )
    .unwrap();
    w.add_file(
        b"usr/bin/tool",
        &meta(0o4755, owned, &[]),
        &mut &b"#!/bin/sh\n"[..],
    )
    .unwrap();
    w.add_hardlink(b"usr/bin/tool-link", b"usr/bin/tool")
        .unwrap();
    w.add_hardlink(b"etc/tool-link", b"usr/bin/tool").unwrap();
    w.add_dir(b"dev", &meta(0o755, None, &[])).unwrap();
    w.add_special(
        b"dev/null",
        Kind::CharDev,
        &meta(0o666, Some((0, 0)), &[]),
        (1, 3),
    )
    .unwrap();
    w.add_special(
        b"dev/sda1",
        Kind::BlockDev,
        &meta(0o660, Some((0, 6)), &[]),
        (8, 1),
    )
    .unwrap();
    w.add_special(b"dev/fifo", Kind::Fifo, &meta(0o600, None, &[]), (0, 0))
        .unwrap();
    w.add_symlink(b"dev/stdin", &meta(0o777, None, &[]), b"/proc/self/fd/0")
        .unwrap();
    w.add_whiteout(b"etc/.wh.gone", &meta(0o644, None, &[]))
        .unwrap();
    w.finish().unwrap();
    big
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn xattr_names(path: &Path) -> Vec<String> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid C string and a buffer of the given length.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0);
    let mut v: Vec<String> = buf[..r as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn owners_xattrs_hardlinks_devices_and_fifos_show_through_the_kernel() {
    use bfcfs::bfc::writer::Compression;
    for compression in [Compression::None, Compression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("rich.bfc");
        let big = write_rich_container(&file, compression);
        let m = mount(&file, &["-o", "uid=4242,gid=4343"]);
        let r = m.path();
        // Ownership recorded: -o uid=,gid= change nothing.
        assert_eq!(fs::metadata(r.join("etc")).unwrap().uid(), 0);

        let tool = fs::symlink_metadata(r.join("usr/bin/tool")).unwrap();
        assert_eq!(
            (tool.uid(), tool.gid(), tool.mode() & 0o7777),
            (1234, 5678, 0o4755)
        );
        assert_eq!(tool.nlink(), 3);
        for other in ["usr/bin/tool-link", "etc/tool-link"] {
            let md = fs::symlink_metadata(r.join(other)).unwrap();
            assert_eq!(md.ino(), tool.ino(), "{other} shares the inode");
            assert_eq!(md.nlink(), 3);
        }
        assert_eq!(fs::read(r.join("etc/tool-link")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(tool.mtime(), 1_700_000_000);
        assert_eq!(tool.mtime_nsec(), 123_456_789);

        assert!(fs::read(r.join("usr/lib/big.bin")).unwrap() == big);

        use std::os::unix::fs::FileTypeExt;
        let null = fs::symlink_metadata(r.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
        let sda = fs::symlink_metadata(r.join("dev/sda1")).unwrap();
        assert!(sda.file_type().is_block_device());
        assert_eq!(
            (libc::major(sda.rdev()), libc::minor(sda.rdev()), sda.gid()),
            (8, 1, 6)
        );
        assert!(fs::symlink_metadata(r.join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            fs::read_link(r.join("dev/stdin")).unwrap(),
            Path::new("/proc/self/fd/0")
        );

        assert_eq!(
            xattr(&r.join("etc/passwd"), "user.a").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            xattr(&r.join("etc/passwd"), "trusted.b").as_deref(),
            Some(&b"\x00\xff"[..])
        );
        assert_eq!(xattr(&r.join("etc/passwd"), "user.none"), None);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENODATA)
        );
        assert_eq!(xattr_names(&r.join("etc/passwd")), ["trusted.b", "user.a"]);
        assert_eq!(
            xattr(&r.join("etc"), "user.dir").as_deref(),
            Some(&b"d"[..])
        );

        // Implicit parents are directories; the whiteout marker never shows.
        let usr = fs::metadata(r.join("usr")).unwrap();
        assert!(usr.is_dir());
        assert_eq!(usr.nlink(), 4, "usr: 2 + bin + lib");
        let mut etc: Vec<String> = fs::read_dir(r.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        etc.sort();
        assert_eq!(etc, ["passwd", "tool-link"]);
        let root: Vec<String> = fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(root.len(), 3, "{root:?}");
    }
}

/// The bench-mount.sh sequence (umount, mount again at the same path, the old server exits) that
/// lost the new mount while fuser unmounted by path at session end. Timing-dependent: it passed
/// with that code too on this machine, so it guards the behaviour rather than reproducing the bug.
#[test]
fn a_server_ending_after_umount_leaves_the_next_mount_at_that_path_alone() {
    for _ in 0..3 {
        let first = mount(&fixtures().join("plain.bfc"), &[]);
        let pid = server_pid(first.path());
        let out = run(Command::new("umount").arg(first.path()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Mount again at once at the same path, then let the first server finish exiting.
        let out = run(Command::new(bin())
            .arg("mount")
            .arg(fixtures().join("zstd.bfc"))
            .arg(first.path()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_exit(pid);
        assert!(
            is_mounted(first.path()),
            "the old server unmounted the new mount"
        );
        assert_eq!(
            fs::read(first.path().join("tree/bin/tool")).unwrap().len(),
            70000
        );
    }
}

/// What a large directory must show, however it is walked: its first READDIRPLUS reply may be
/// cut short (`fs::plus`: after 8 files, directories not counted), the rest comes by READDIR or
/// READDIRPLUS, and every entry is still listed exactly once with the right kind and attributes.
#[test]
fn a_large_directory_lists_every_entry_once_however_it_is_walked() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let big = tree.join("big");
    fs::create_dir_all(&big).unwrap();
    // 900 entries; every 7th a directory, so the cut falls between files and directories.
    let mut want = BTreeMap::new();
    for i in 0..900u32 {
        let name = format!("n{i:04}");
        if i % 7 == 3 {
            fs::create_dir(big.join(&name)).unwrap();
            fs::write(big.join(&name).join("inner"), b"x").unwrap();
            want.insert(name, None);
        } else {
            let len = (i as usize * 37) % 500;
            fs::write(big.join(&name), vec![b'a'; len]).unwrap();
            fs::set_permissions(
                big.join(&name),
                fs::Permissions::from_mode(0o600 + (i % 2) * 0o44),
            )
            .unwrap();
            want.insert(name, Some((len as u64, 0o600 + (i % 2) * 0o44)));
        }
    }
    let image = tmp.path().join("big.bfc");
    create(&tree, &image, &[]);
    let check = |how: &str, got: Vec<(String, fs::Metadata)>| {
        let names: Vec<&String> = got.iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{how}: an entry listed twice");
        assert_eq!(
            sorted,
            want.keys().collect::<Vec<_>>(),
            "{how}: names differ"
        );
        for (name, md) in &got {
            match want[name] {
                None => assert!(md.is_dir(), "{how}: {name} is not a directory"),
                Some((len, mode)) => {
                    assert!(md.is_file(), "{how}: {name} is not a file");
                    assert_eq!(md.len(), len, "{how}: size of {name}");
                    assert_eq!(md.mode() & 0o7777, mode, "{how}: mode of {name}");
                }
            }
        }
    };
    let upper = tmp.path().join("upper");
    let upper_arg = upper.display().to_string();
    for args in [vec![], vec!["--upper", upper_arg.as_str()]] {
        // List every name first, then stat them (GNU tar, cp -r): entries past the short reply
        // are looked up one by one.
        let m = mount(&image, &args);
        let dir = m.path().join("big");
        let names: Vec<(String, bool)> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.file_type().unwrap().is_dir())
            })
            .collect();
        for (name, is_dir) in &names {
            assert_eq!(
                *is_dir,
                want.get(name) == Some(&None),
                "{args:?}: kind of {name}"
            );
        }
        let got = names
            .into_iter()
            .map(|(n, _)| {
                let md = fs::symlink_metadata(dir.join(&n)).unwrap();
                (n, md)
            })
            .collect();
        check(&format!("{args:?} list then stat"), got);
        // Again: the kernel dropped the listing it read without attributes and reads it anew.
        let got = fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                (
                    e.unwrap().file_name().to_string_lossy().into_owned(),
                    dir.clone(),
                )
            })
            .map(|(n, d)| {
                let md = fs::symlink_metadata(d.join(&n)).unwrap();
                (n, md)
            })
            .collect();
        check(&format!("{args:?} cached listing"), got);
        drop(m);
        // Stat while reading (ls -l, du): later replies come with attributes.
        let m = mount(&image, &args);
        let dir = m.path().join("big");
        let got = fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap(),
                )
            })
            .collect();
        check(&format!("{args:?} stat while reading"), got);
    }
}
