//! Union mounts with a writable upper dir, through real kernel mounts (needs root, /dev/fuse,
//! overlayfs and runc). Every mount is undone by a Drop guard, even when a test fails; every
//! mount command returns only once its mount answers (readiness pipe), so nothing sleeps.
mod common;
mod pull_support;
mod union_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pull_support::layout::{sha, Comp, Image, Layer, Member as M};
use union_support::*;

fn base_layer() -> Layer {
    Layer::new(
        &[
            M::Dir("etc"),
            M::File("etc/a", b"alpha\n".to_vec()),
            M::Xattr("xa", "user.k", b"v"),
            M::Dir("d"),
            M::File("d/x", b"x from base\n".to_vec()),
            M::File("d/y", b"y from base\n".to_vec()),
            M::Dir("d/sub"),
            M::File("d/sub/z", b"z\n".to_vec()),
            M::File("big", pull_support::layout::noise(200_000, 7)),
            M::File("keep", b"keep base\n".to_vec()),
            M::File("mm", vec![b'.'; 8192]),
            M::File("h1", b"linked\n".to_vec()),
            M::Hardlink("h2", "h1"),
            M::Symlink("s", "keep"),
            M::Fifo("pipe"),
            M::Dir("gone"),
            M::File("gone/g", b"g\n".to_vec()),
        ],
        Comp::Gzip,
    )
}

fn top_layer() -> Layer {
    Layer::new(
        &[
            M::Dir("d"),
            M::File("d/w", b"w from top\n".to_vec()),
            M::File("keep", b"keep top\n".to_vec()),
            M::Dir("e"),
            M::File("e/q", b"q\n".to_vec()),
            M::File("only2", b"only in top\n".to_vec()),
        ],
        Comp::Zstd,
    )
}

/// What a tree looks like through a mount: path → type, mode, owner, size, content hash or
/// link target, xattrs (times and inode numbers differ between file systems by design).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        let p = root.join(rel);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink->{}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            format!("file {} {}", m.len(), sha(&fs::read(&p).unwrap()))
        } else if ft.is_fifo() {
            "fifo".into()
        } else if ft.is_char_device() {
            format!("chr {:x}", m.rdev())
        } else {
            "other".into()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.permissions().mode() & 0o7777
        };
        let xattrs = xattrs(&p);
        out.insert(
            rel.display().to_string(),
            format!("{what} {mode:o} {}:{} {xattrs:?}", m.uid(), m.gid()),
        );
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn xattrs(p: &Path) -> Vec<(String, String)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 4096];
        let k = std::ffi::OsStr::from_bytes(name);
        if let Ok(len) = rustix::fs::lgetxattr(p, k, &mut v) {
            out.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(&v[..len]).into_owned(),
            ));
        }
    }
    out.sort();
    out
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        script
    );
}

/// Every write operation a rootfs needs, on lower files, whited-out paths and new paths.
fn write_everything(m: &Path) {
    // O_APPEND on a lower file (copy-up with content); O_TRUNC on another.
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("keep"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.join("only2"))
        .unwrap()
        .write_all(b"rewritten\n")
        .unwrap();
    // truncate (setattr size) of a lower file
    fs::OpenOptions::new()
        .write(true)
        .open(m.join("big"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    // create, mkdir, fallocate, fsync
    assert!(!m.join("n").exists() && !m.join("dd").exists());
    fs::create_dir(m.join("n")).unwrap();
    // Names looked up while missing (the kernel keeps the negative entries) and then made below
    // by each kind of create, rename and link: the snapshots must show every one.
    for name in ["fa", "x2", "h3", "sl", "fifo", "null", "tmp"] {
        assert!(!m.join("n").join(name).exists(), "n/{name}");
    }
    let f = fs::File::create(m.join("n/fa")).unwrap();
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 8192).unwrap();
    (&f).write_all(b"head").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // mmap'ed write of a lower file
    {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.join("mm"))
            .unwrap();
        // SAFETY: the file is private to this test and stays open while mapped.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap();
        map[100..105].copy_from_slice(b"MMAP!");
        map.flush().unwrap();
    }
    // unlink a lower file, then create it again over its whiteout
    fs::remove_file(m.join("d/y")).unwrap();
    assert!(!m.join("d/y").exists());
    fs::write(m.join("d/y"), b"y again\n").unwrap();
    // rmdir of a merged dir (after emptying it), then mkdir there again: opaque
    fs::remove_file(m.join("e/q")).unwrap();
    fs::remove_dir(m.join("e")).unwrap();
    fs::create_dir(m.join("e")).unwrap();
    fs::write(m.join("e/fresh"), b"fresh\n").unwrap();
    // rmdir of a lower-only dir, and a lower file left whited out
    fs::remove_file(m.join("gone/g")).unwrap();
    fs::remove_dir(m.join("gone")).unwrap();
    fs::remove_file(m.join("pipe")).unwrap();
    // rename: lower file across dirs and layers; over an existing lower target; a merged dir
    fs::rename(m.join("d/x"), m.join("n/x2")).unwrap();
    fs::rename(m.join("etc/a"), m.join("d/w")).unwrap();
    fs::write(m.join("etc/a"), b"new a\n").unwrap();
    fs::rename(m.join("d"), m.join("dd")).unwrap();
    fs::create_dir(m.join("d")).unwrap();
    // link a hardlinked lower file; symlink; mknod
    fs::hard_link(m.join("h1"), m.join("n/h3")).unwrap();
    std::os::unix::fs::symlink("../keep", m.join("n/sl")).unwrap();
    sh(
        m,
        "mkfifo n/fifo; mknod n/null c 1 3; chmod 0600 etc/a; chown 1234:5678 xa; \
         touch -d '2001-02-03 04:05:06' keep; setfattr -n user.new -v 1 etc/a; \
         setfattr -x user.k xa; setfattr -n user.dir -v yes dd; chmod 0750 dd/sub",
    );
    // rename over an existing name; a file from the top layer
    fs::write(m.join("n/tmp"), b"tmp\n").unwrap();
    fs::rename(m.join("n/tmp"), m.join("only2")).unwrap();
}

#[test]
fn writes_through_the_mount_match_the_kernel_overlayfs_on_the_same_upper_dir() {
    let fx = Fixture::new(vec![base_layer(), top_layer()]);
    let mnt = fx.dir("mnt");
    let upper = fx.root.join("upper");
    let upper_arg = upper.display().to_string();
    let (m, _) = fx.mount(&["--upper", &upper_arg], &mnt);

    let before = snapshot(&mnt);
    assert!(before.contains_key("d/w") && before.contains_key("d/x"));
    let ino = |p: &str| fs::symlink_metadata(mnt.join(p)).unwrap().ino();
    let (keep_ino, d_ino, sub_ino, h1_ino) = (ino("keep"), ino("d"), ino("d/sub"), ino("h1"));
    assert_eq!(ino("h2"), h1_ino, "lower hard links share st_ino");

    write_everything(&mnt);

    // Inode numbers survive copy-up and rename (the subtree too); links stay links.
    assert_eq!(ino("keep"), keep_ino);
    assert_eq!(ino("dd"), d_ino);
    assert_eq!(ino("dd/sub"), sub_ino);
    assert_eq!(ino("n/h3"), h1_ino);
    assert_eq!(ino("h2"), h1_ino);
    assert_eq!(fs::symlink_metadata(mnt.join("h1")).unwrap().nlink(), 3);
    assert_eq!(fs::read(mnt.join("keep")).unwrap(), b"keep top\nappended\n");
    assert_eq!(&fs::read(mnt.join("mm")).unwrap()[100..105], b"MMAP!");
    assert_eq!(
        fs::read(mnt.join("e")).map_err(|e| e.raw_os_error()),
        Err(Some(libc::EISDIR))
    );
    assert_eq!(
        fs::read_dir(mnt.join("e")).unwrap().count(),
        1,
        "opaque after rmdir + mkdir"
    );
    assert_eq!(fs::read_dir(mnt.join("d")).unwrap().count(), 0);
    assert_eq!(
        fs::metadata(mnt.join("keep")).unwrap().mtime(),
        981_173_106,
        "utimens"
    );
    let seen = snapshot(&mnt);
    umount(&m);

    // The kernel's overlayfs over plainly extracted layers and the same upper dir.
    let lowers: Vec<PathBuf> = fx
        .layer_files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let d = fx.dir(&format!("lower{i}"));
            ok(&["extract", f.to_str().unwrap(), "-C", d.to_str().unwrap()]);
            d
        })
        .collect();
    let kmnt = fx.dir("kmnt");
    let kwork = fx.dir("kwork");
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        lowers[1].display(),
        lowers[0].display(),
        upper.display(),
        kwork.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&kmnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount -t overlay failed");
    let k = Mnt(kmnt.clone());
    let kernel = snapshot(&kmnt);
    drop(k);
    let diff = common::tree::differences(&seen, &kernel, "bfcfs", "kernel");
    assert!(diff.is_empty(), "trees differ:\n{}", diff.join("\n"));

    // And bfcfs shows the same again after a remount (upper contents survive).
    let (m2, _) = fx.mount(&["--upper", &upper_arg], &mnt);
    assert_eq!(snapshot(&mnt), seen);
    umount(&m2);
}

#[test]
fn containers_keep_their_upper_dir_until_rm_container() {
    let fx = Fixture::new(vec![base_layer(), top_layer()]);
    let mnt = fx.dir("mnt");
    let (m, out) = fx.mount(&[], &mnt);
    let name = out.trim().to_string();
    assert!(
        name.starts_with("c-"),
        "a fresh container's name is printed: {out:?}"
    );
    fs::write(mnt.join("etc/new"), b"kept\n").unwrap();
    let (code, _, err) = bfcfs(&["--root", &fx.store, "rm-container", &name]);
    assert_ne!(code, 0);
    assert!(err.contains("is mounted on"), "{err}");
    umount(&m);

    let (m, out) = fx.mount(&["--container", &name], &mnt);
    assert!(out.is_empty(), "an existing container prints nothing");
    assert_eq!(fs::read(mnt.join("etc/new")).unwrap(), b"kept\n");
    umount(&m);

    // --ro: a read-only union, no container made
    let (m, out) = fx.mount(&["--ro"], &mnt);
    assert!(out.is_empty());
    assert_eq!(
        fs::write(mnt.join("x"), b"").map_err(|e| e.raw_os_error()),
        Err(Some(libc::EROFS))
    );
    umount(&m);

    let list = ok(&["--root", &fx.store, "containers", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["name"], name.as_str());
    // rm refuses an image a container uses unless -f; prune keeps the layers it uses
    ok(&["--root", &fx.store, "rm", "-f", &fx.image()]);
    assert!(
        fx.layer_files.iter().all(|f| f.exists()),
        "container keeps its layers"
    );
    ok(&["--root", &fx.store, "rm-container", &name]);
    assert!(!fx.root.join("store/containers").join(&name).exists());
    ok(&["--root", &fx.store, "prune"]);
    assert!(fx.layer_files.iter().all(|f| !f.exists()));
}

#[test]
fn runc_runs_on_a_bundle_and_its_write_lands_in_the_upper_dir() {
    use pull_support::harness::{Auth, Registry};
    let reg = Registry::start(Auth::None);
    let (base, top) = host_binary_layers();
    reg.push("tiny", "1", &Image::new(vec![base, top], "amd64", false));
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store").display().to_string();
    let image = format!("{}/tiny:1", reg.host());
    ok(&[
        "--root",
        &store,
        "pull",
        "--insecure-registry",
        &reg.host(),
        &image,
    ]);

    let bundle = tmp.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    let out = ok(&[
        "--root",
        &store,
        "bundle",
        "--container",
        "ctr",
        &image,
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(out.trim(), "ctr");
    let m = Mnt(rootfs.clone());
    assert!(is_mounted(&rootfs));
    // The image's own command is /bin/sh; run a script instead (what `runc run` users do).
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["process"]["args"], serde_json::json!(["/bin/sh"]));
    assert_eq!(cfg["process"]["cwd"], "/w");
    cfg["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "cat /etc/base /etc/top && echo written-by-runc > /out && ls /out"
    ]);
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let id = format!("bfcfs-test-{}", std::process::id());
    let run = Command::new("runc")
        .args(["run", "-b", bundle.to_str().unwrap(), &id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    assert!(
        run.status.success(),
        "runc run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "from base\nfrom top\n/out\n"
    );
    let upper = tmp.path().join("store/containers/ctr/upper");
    assert_eq!(fs::read(upper.join("out")).unwrap(), b"written-by-runc\n");
    umount(&m);

    // Remounted, the container still has it.
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    ok(&[
        "--root",
        &store,
        "mount",
        "--container",
        "ctr",
        &image,
        mnt.to_str().unwrap(),
    ]);
    let m = Mnt(mnt.clone());
    assert_eq!(fs::read(mnt.join("out")).unwrap(), b"written-by-runc\n");
    assert_eq!(fs::read(mnt.join("etc/base")).unwrap(), b"from base\n");
    umount(&m);
}

/// What an unprivileged write, truncate or open(O_TRUNC) does to setuid/setgid bits through the
/// mount, and a chown by root: what the kernel's overlayfs does (the same table, measured there).
/// The server writes the upper dir as root, whose CAP_FSETID keeps the bits in the upper file
/// system; and with FUSE_ATOMIC_O_TRUNC the kernel leaves an O_TRUNC open's to the server.
#[test]
fn unprivileged_writes_drop_setuid_and_setgid_as_overlayfs_does() {
    let fx = Fixture::new(vec![base_layer()]);
    fs::set_permissions(&fx.root, fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = fx.dir("mnt");
    let upper = fx.root.join("upper").display().to_string();
    let (m, _) = fx.mount(&["-o", "suid,allow_other", "--upper", &upper], &mnt);
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    // (what, command on file f, mode before → after) for every mode in [4777, 2777, 2767, 6777]
    let table: [(&str, String, [u32; 4]); 5] = [
        (
            "write",
            format!("{nobody} sh -c 'echo y >> f'"),
            [0o777, 0o777, 0o767, 0o777],
        ),
        (
            "truncate",
            format!("{nobody} truncate -s 1 f"),
            [0o777, 0o777, 0o767, 0o777],
        ),
        (
            "O_TRUNC",
            format!("{nobody} sh -c ': > f'"),
            [0o777, 0o777, 0o767, 0o777],
        ),
        (
            "root truncate",
            "truncate -s 1 f".into(),
            [0o4777, 0o2777, 0o2767, 0o6777],
        ),
        (
            "root chown",
            "chown 1 f".into(),
            [0o777, 0o777, 0o2767, 0o777],
        ),
    ];
    let dir = mnt.join("n");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let mut wrong = Vec::new();
    for (what, cmd, after) in &table {
        for (mode, want) in [0o4777, 0o2777, 0o2767, 0o6777].into_iter().zip(after) {
            let f = dir.join("f");
            let _ = fs::remove_file(&f);
            fs::write(&f, b"x\n").unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            sh(&dir, cmd);
            let got = fs::metadata(&f).unwrap().mode() & 0o7777;
            if got != *want {
                wrong.push(format!("{what} of {mode:o}: {got:o}, want {want:o}"));
            }
        }
    }
    umount(&m);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
