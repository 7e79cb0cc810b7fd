//! A container's rootfs cannot be pulled from under it (issue 10): busy mounts are not unmounted
//! unless asked (`--lazy`), a container is served by one server at a time and not removed while
//! one serves it, a mount point that is already a mount is refused, and a failed mount or bundle
//! leaves nothing behind. Real kernel mounts and real runc (needs root, /dev/fuse and runc).
mod common;
mod pull_support;
mod union_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use pull_support::layout::{Comp, Layer, Member as M};
use union_support::*;

fn small_layer() -> Layer {
    Layer::new(
        &[
            M::Dir("etc"),
            M::File("etc/a", b"alpha\n".to_vec()),
            M::Dir("w"),
        ],
        Comp::Gzip,
    )
}

/// The names under the store's `containers/`.
fn containers(fx: &Fixture) -> Vec<String> {
    container_names(&fx.root.join("store"))
}

fn container_dir(fx: &Fixture, name: &str) -> PathBuf {
    fx.root.join("store/containers").join(name)
}

/// Runs bfcfs against the fixture's store; expects a clean failure and returns its stderr.
fn fails(fx: &Fixture, args: &[&str]) -> String {
    let mut all = vec!["--root", &fx.store];
    all.extend_from_slice(args);
    let (code, out, err) = bfcfs(&all);
    assert!(
        code == 1 || code == 2,
        "bfcfs {args:?} should fail cleanly, got {code}\nstdout: {out}\nstderr: {err}"
    );
    err
}

/// The only process holding the container's directory: its server.
fn server_of(fx: &Fixture, name: &str) -> i32 {
    let pids = holders(&container_dir(fx, name));
    assert_eq!(pids.len(), 1, "one server holds container {name}: {pids:?}");
    pids[0]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn umount_of_a_busy_mount_is_refused_and_lazy_detaches() {
    let fx = Fixture::new(vec![small_layer()]);
    let mnt = fx.dir("mnt");
    let (_m, _) = fx.mount(&["--container", "busy"], &mnt);
    let sleeper = Killed(
        Command::new("sleep")
            .arg("600")
            .current_dir(&mnt)
            .spawn()
            .unwrap(),
    );
    let err = fails(&fx, &["umount", s(&mnt)]);
    assert!(err.contains(s(&mnt)) && err.contains("busy"), "{err}");
    assert!(is_mounted(&mnt), "a refused umount leaves the mount");
    let server = server_of(&fx, "busy");

    ok(&["umount", "--lazy", s(&mnt)]);
    assert!(!is_mounted(&mnt));
    // Detached here, but the sleeper's cwd keeps the file system, and its server, alive.
    let err = fails(&fx, &["rm-container", "busy"]);
    assert!(err.contains("\"busy\" is in use"), "{err}");
    assert!(container_dir(&fx, "busy").join("upper").is_dir());

    drop(sleeper);
    wait_exit(server);
    ok(&["--root", &fx.store, "rm-container", "busy"]);
    assert!(containers(&fx).is_empty());
}

#[test]
fn a_running_runc_container_keeps_its_rootfs_and_its_container() {
    let (base, top) = host_binary_layers();
    let fx = Fixture::new(vec![base, top]);
    let bundle = fx.root.join("bundle");
    let rootfs = bundle.join("rootfs");
    let image = fx.image();
    let out = ok(&[
        "--root",
        &fx.store,
        "bundle",
        "--container",
        "run",
        &image,
        s(&bundle),
    ]);
    assert_eq!(out.trim(), "run");
    let _m = Mnt(rootfs.clone());
    // The container's process blocks opening a fifo until it is killed.
    let st = Command::new("mkfifo")
        .arg(rootfs.join("w/fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    let id = format!("bfcfs-life-{}", std::process::id());
    let log = fx.root.join("runc.err");
    let runc = runc::run_detached(
        &bundle,
        &id,
        serde_json::json!(["/bin/cat", "/w/fifo"]),
        &log,
    );

    // Nothing in this namespace uses the mount, but the container's root is the same file
    // system: umount is refused and names where it is still mounted.
    let err = fails(&fx, &["umount", s(&rootfs)]);
    assert!(
        err.contains(s(&rootfs)) && err.contains("mount namespace of process"),
        "{err}"
    );
    assert!(is_mounted(&rootfs));
    let err = fails(&fx, &["rm-container", "run"]);
    assert!(err.contains("is mounted on"), "{err}");

    ok(&["umount", "--lazy", s(&rootfs)]);
    assert!(!is_mounted(&rootfs));
    let server = server_of(&fx, "run");
    let err = fails(&fx, &["rm-container", "run"]);
    assert!(
        err.contains("\"run\" is in use") && err.contains("mount namespace of process"),
        "{err}"
    );
    assert!(container_dir(&fx, "run").join("upper/w").is_dir());

    drop(runc);
    wait_exit(server);
    ok(&["--root", &fx.store, "rm-container", "run"]);
    assert!(containers(&fx).is_empty());
}

#[test]
fn two_mounts_of_one_container_started_together_exactly_one_wins() {
    let fx = Fixture::new(vec![small_layer()]);
    let image = fx.image();
    // Round 0 races to create the container, round 1 to mount the existing one.
    for round in 0..2 {
        let dirs = [fx.dir(&format!("a{round}")), fx.dir(&format!("b{round}"))];
        let start = |mnt: &Path| {
            Command::new(bin())
                .args(["--root", &fx.store, "mount", "--container", "x", &image])
                .arg(mnt)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let children = [start(&dirs[0]), start(&dirs[1])];
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let guards: Vec<Mnt> = dirs.iter().map(|d| Mnt(d.clone())).collect();
        let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
        let errs: Vec<String> = outs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {errs:?}");
        let (w, l) = (won[0], 1 - won[0]);
        assert!(is_mounted(&dirs[w]) && !is_mounted(&dirs[l]));
        assert!(
            errs[l].contains("container \"x\" is")
                && (errs[l].contains("in use") || errs[l].contains("mounted on")),
            "round {round}: {}",
            errs[l]
        );
        assert_eq!(containers(&fx), ["x"]);
        umount(&guards[w]);
    }
}

#[test]
fn mount_and_bundle_refuse_a_mount_point_that_is_already_a_mount() {
    let fx = Fixture::new(vec![small_layer()]);
    let image = fx.image();
    let t = fx.dir("tmpfs");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&t)
        .status()
        .unwrap();
    assert!(st.success());
    let tm = Mnt(t.clone());
    let err = fails(&fx, &["mount", "--container", "y", &image, s(&t)]);
    assert!(err.contains("already a mount point"), "{err}");
    assert!(
        containers(&fx).is_empty(),
        "a refused mount makes no container"
    );
    drop(tm);

    let bundle = fx.root.join("bundle");
    let rootfs = bundle.join("rootfs");
    ok(&[
        "--root",
        &fx.store,
        "bundle",
        "--container",
        "first",
        &image,
        s(&bundle),
    ]);
    let _m = Mnt(rootfs.clone());
    fs::write(rootfs.join("etc/mark"), b"first\n").unwrap();
    let config = fs::read(bundle.join("config.json")).unwrap();

    let err = fails(&fx, &["bundle", &image, s(&bundle)]);
    assert!(err.contains("already a mount point"), "{err}");
    let err = fails(&fx, &["mount", &image, s(&rootfs)]);
    assert!(err.contains("already a mount point"), "{err}");
    // The first bundle is intact: same container, same config, same mount.
    assert_eq!(containers(&fx), ["first"]);
    assert_eq!(fs::read(bundle.join("config.json")).unwrap(), config);
    assert_eq!(fs::read(rootfs.join("etc/mark")).unwrap(), b"first\n");
    server_of(&fx, "first");
    ok(&["umount", s(&rootfs)]);
}

#[test]
fn failed_mounts_and_bundles_leave_no_container_and_no_directory() {
    let fx = Fixture::new(vec![small_layer()]);
    let image = fx.image();
    let mnt = fx.dir("mnt");

    // Refused before anything is made: a bad option, an image that is not there.
    let b1 = fx.root.join("b1");
    fails(&fx, &["bundle", "-o", "bogus", &image, s(&b1)]);
    assert!(
        !b1.exists(),
        "bundle with a bad option left {}",
        b1.display()
    );
    let b2 = fx.root.join("b2");
    fails(
        &fx,
        &["bundle", "--container", "c", "no/such:image", s(&b2)],
    );
    assert!(
        !b2.exists(),
        "bundle of a missing image left {}",
        b2.display()
    );
    fails(
        &fx,
        &["mount", "--container", "c", "no/such:image", s(&mnt)],
    );
    assert!(containers(&fx).is_empty());

    // Fails after the upper and work dirs were made (they are on different file systems).
    let upper = fx.root.join("u");
    let work = PathBuf::from(format!("/dev/shm/bfcfs-life-{}", std::process::id()));
    let err = fails(
        &fx,
        &[
            "mount",
            "--upper",
            s(&upper),
            "--work",
            s(&work),
            &image,
            s(&mnt),
        ],
    );
    assert!(err.contains("different filesystems"), "{err}");
    assert!(!upper.exists() && !work.exists(), "{err}");

    // Fails after the mount answered (config.json cannot be written): the mount is undone and
    // the container made for it removed.
    let b3 = fx.dir("b3");
    fs::create_dir(b3.join("config.json")).unwrap();
    let rootfs = b3.join("rootfs");
    let _m = Mnt(rootfs.clone());
    let err = fails(&fx, &["bundle", &image, s(&b3)]);
    assert!(err.contains("config.json"), "{err}");
    assert!(!is_mounted(&rootfs));
    assert!(!rootfs.exists() && b3.join("config.json").is_dir());
    assert!(containers(&fx).is_empty(), "{:?}", containers(&fx));
    assert!(!is_mounted(&mnt));
}

/// A process that clones the mount namespace and moves its root (what runc does for any
/// container, whatever it mounts) shows this mount at another path until it drops the old root:
/// umount waits that moment out, and still refuses a copy that stays.
#[test]
fn umount_waits_out_a_namespace_copy_that_goes_away() {
    let fx = Fixture::new(vec![small_layer()]);
    let mnt = fx.dir("mnt");
    let newroot = fx.dir("newroot");
    // In a private copy of this namespace: pivot_root into an empty directory, then hold the
    // copy (the old root, with this mount under it) for `hold` seconds. bash's `read -t`
    // needs no file in the new root.
    let copy = |hold: &str| {
        let script = format!(
            "mount --bind {r} {r} && cd {r} && mkdir -p old && pivot_root . old && echo ready && read -t {hold} x; true",
            r = s(&newroot)
        );
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "bash", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready", "the namespace copy is set up");
        child
    };

    let (m, _) = fx.mount(&["--ro"], &mnt);
    let mut short = copy("0.3");
    ok(&["umount", s(&mnt)]);
    assert!(!is_mounted(&mnt));
    short.wait().unwrap();
    drop(m);

    let (_m, _) = fx.mount(&["--ro"], &mnt);
    let mut long = copy("30");
    let err = fails(&fx, &["umount", s(&mnt)]);
    assert!(err.contains("mount namespace of process"), "{err}");
    assert!(is_mounted(&mnt));
    drop(long.stdin.take());
    long.wait().unwrap();
    ok(&["umount", s(&mnt)]);
}
