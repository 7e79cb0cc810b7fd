//! The upper directory is in the kernel overlayfs format: the kernel's overlayfs over a lower
//! tree and our upper shows what bfcfs means (whiteouts hide, opaque dirs hide, copies win).
use bfcfs::upper::{Meta, UpperDir};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// Symlinks and special files cannot carry user.* xattrs (the kernel refuses them).
fn plain_meta(perm: u32) -> Meta {
    Meta {
        xattrs: vec![],
        ..meta(perm)
    }
}

fn meta(perm: u32) -> Meta {
    Meta {
        perm,
        uid: 1234,
        gid: 5678,
        atime_ns: 1_600_000_000_000_000_001,
        mtime_ns: 1_600_000_000_123_456_789,
        xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
    }
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn kernel_overlayfs_reads_our_upper_dir() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, work, kwork, mnt) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("work"),
        t.path().join("kwork"),
        t.path().join("mnt"),
    );
    for d in [&lower, &mnt, &kwork] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(lower.join("dir/sub")).unwrap();
    std::fs::write(lower.join("dir/a"), b"lower a").unwrap();
    std::fs::write(lower.join("dir/gone"), b"x").unwrap();
    std::fs::write(lower.join("dir/sub/hidden"), b"x").unwrap();
    std::fs::write(lower.join("keep"), b"keep").unwrap();

    let u = UpperDir::open(&upper, &work).unwrap();
    u.make_dir(b"dir", &meta(0o755), false, false).unwrap();
    u.make_file(b"dir/a", &meta(0o640), Some(&mut &b"upper a"[..]), false)
        .unwrap();
    u.whiteout(b"dir/gone").unwrap();
    u.make_dir(b"dir/sub", &meta(0o700), true, false).unwrap();
    u.make_file(b"dir/sub/new", &meta(0o600), Some(&mut &b"new"[..]), false)
        .unwrap();
    u.make_symlink(b"dir/link", b"a", &plain_meta(0o777), false)
        .unwrap();
    u.make_special(
        b"dir/fifo",
        rustix::fs::FileType::Fifo,
        0,
        &plain_meta(0o644),
        false,
    )
    .unwrap();
    // Replacing a whiteout with a new file works (create after unlink).
    u.whiteout(b"keep").unwrap();
    u.make_file(b"keep", &meta(0o644), Some(&mut &b"again"[..]), true)
        .unwrap();

    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            kwork.display()
        ))
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount -t overlay failed");
    let _g = Unmount(mnt.clone());
    assert_eq!(std::fs::read(mnt.join("dir/a")).unwrap(), b"upper a");
    assert!(!mnt.join("dir/gone").exists(), "whiteout must hide");
    let names: Vec<_> = std::fs::read_dir(mnt.join("dir/sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("new")],
        "opaque dir hides lower entries"
    );
    assert_eq!(std::fs::read(mnt.join("keep")).unwrap(), b"again");
    assert_eq!(
        std::fs::read_link(mnt.join("dir/link")).unwrap().to_str(),
        Some("a")
    );
    let md = std::fs::metadata(mnt.join("dir/a")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(md.mtime_nsec(), 123_456_789);
    let md = std::fs::symlink_metadata(mnt.join("dir/fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()));
}

#[test]
fn upper_paths_never_follow_symlinks_out() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let u = UpperDir::open(&t.path().join("upper"), &t.path().join("work")).unwrap();
    u.make_symlink(
        b"esc",
        outside.to_str().unwrap().as_bytes(),
        &plain_meta(0o777),
        false,
    )
    .unwrap();
    u.make_symlink(b"up", b"..", &plain_meta(0o777), false)
        .unwrap();
    assert!(u.make_file(b"esc/x", &meta(0o644), None, false).is_err());
    assert!(u.make_file(b"up/x", &meta(0o644), None, false).is_err());
    assert!(u.whiteout(b"esc/y").is_err());
    assert!(u.stat(b"esc/x").unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!t.path().join("x").exists());
}
