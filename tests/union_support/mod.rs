//! Fixtures of the union and lifecycle tests: a store with an image pulled from an OCI layout,
//! mounts undone by a Drop guard, and a tiny rootfs made of host binaries for runc.
#![allow(dead_code)]
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::pull_support::layout::{write_layout, Comp, Image, Layer, Member as M};

/// Unmounts (lazily) on drop.
pub struct Mnt(pub PathBuf);

impl Drop for Mnt {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let c = CString::new(self.0.as_os_str().as_bytes()).unwrap();
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = bfcfs(args);
    assert_eq!(code, 0, "bfcfs {args:?} failed: {err}");
    out
}

pub fn umount(m: &Mnt) {
    ok(&["umount", m.0.to_str().unwrap()]);
    assert!(!is_mounted(&m.0));
}

/// A two-layer image pulled into a fresh store from an OCI layout.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub store: String,
    /// Layer BFC files, base first.
    pub layer_files: Vec<PathBuf>,
}

impl Fixture {
    pub fn new(layers: Vec<Layer>) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let diff_ids: Vec<String> = layers.iter().map(Layer::diff_id).collect();
        let img = Image::new(layers, "amd64", false);
        let lay = write_layout(&root.join("layout"), "v1", &[img]);
        let store = root.join("store").display().to_string();
        ok(&[
            "--root",
            &store,
            "pull",
            &format!("oci:{}:v1", lay.display()),
        ]);
        let layer_files = diff_ids
            .iter()
            .map(|d| root.join("store/layers").join(format!("{}.bfc", &d[7..])))
            .collect();
        Fixture {
            _tmp: tmp,
            root,
            store,
            layer_files,
        }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn image(&self) -> String {
        format!("oci:{}:v1", self.root.join("layout").display())
    }

    /// A writable mount on `mnt` with the upper dir `ROOT/upper` (no container).
    pub fn mount_upper(&self, mnt: &Path) -> Mnt {
        let upper = self.root.join("upper").display().to_string();
        self.mount(&["--upper", &upper], mnt).0
    }

    pub fn mount(&self, extra: &[&str], mnt: &Path) -> (Mnt, String) {
        let mut args = vec!["--root", &self.store, "mount"];
        args.extend_from_slice(extra);
        let image = self.image();
        args.push(&image);
        args.push(mnt.to_str().unwrap());
        let out = ok(&args);
        assert!(is_mounted(mnt), "mount returned before the mount existed");
        (Mnt(mnt.to_path_buf()), out)
    }
}

/// `ldd`'s absolute paths for `bins` (the loader and every library).
pub fn libraries(bins: &[&str]) -> Vec<String> {
    let out = Command::new("ldd").args(bins).output().unwrap();
    let mut libs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.ends_with(':') {
                return None; // the "FILE:" header of each binary
            }
            let p = match l.split_once("=> ") {
                Some((_, rest)) => rest,
                None => l,
            };
            let p = p.split(' ').next()?;
            p.starts_with('/').then(|| p.to_string())
        })
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A tiny two-layer rootfs from host binaries (no static busybox here): the base has sh, cat
/// and their libraries plus /etc/base; the top adds ls and its libraries plus /etc/top.
pub fn host_binary_layers() -> (Layer, Layer) {
    let exe = |host: &str, at: &str| {
        M::FileMode(leak(at.to_string()), fs::read(host).unwrap(), 0o755, 0, 0)
    };
    let mut base = vec![
        M::Dir("etc"),
        M::Dir("w"),
        M::FileMode("etc/base", b"from base\n".to_vec(), 0o644, 0, 0),
        M::FileMode(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            0o644,
            0,
            0,
        ),
        M::Symlink("bin", "usr/bin"),
        exe("/bin/sh", "usr/bin/sh"),
        exe("/bin/cat", "usr/bin/cat"),
    ];
    let base_libs = libraries(&["/bin/sh", "/bin/cat"]);
    base.extend(base_libs.iter().map(|l| exe(l, &l[1..])));
    let mut top = vec![
        M::FileMode("etc/top", b"from top\n".to_vec(), 0o644, 0, 0),
        exe("/bin/ls", "usr/bin/ls"),
    ];
    top.extend(
        libraries(&["/bin/ls"])
            .iter()
            .filter(|l| !base_libs.contains(l))
            .map(|l| exe(l, &l[1..])),
    );
    (Layer::new(&base, Comp::Gzip), Layer::new(&top, Comp::Gzip))
}

/// A child process killed (and reaped) on drop.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
