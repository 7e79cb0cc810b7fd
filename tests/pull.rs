//! `bfcfs pull` against a real registry (Debian's docker-registry on 127.0.0.1), seeded with
//! skopeo or plain HTTP pushes from OCI layouts these tests build. Each test starts its own
//! registry, so they run in parallel.
mod common;
mod pull_support;

use bfcfs::bfc::{Container, Kind, Whiteout};
use bfcfs::image::{self, PullOptions, Pulled, Quiet};
use bfcfs::oci::Source;
use bfcfs::store::{refs::Refs, Store};
use common::read_path;
use pull_support::harness::{Auth, Proxy, ProxyMode, Registry, PASS, USER};
use pull_support::layout::{noise, rich_members, write_layout, Comp, Image, Layer, Member as M};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn pull_with(store: &Store, src: &str, f: impl FnOnce(&mut PullOptions)) -> image::Result<Pulled> {
    let mut opts = PullOptions::default();
    opts.registry.backoff = Duration::from_millis(20);
    f(&mut opts);
    let source: Source = src.parse().expect("source parses");
    image::pull(store, &source, &opts, &Quiet)
}

fn pull(store: &Store, src: &str) -> image::Result<Pulled> {
    pull_with(store, src, |_| {})
}

fn new_store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("store")).unwrap();
    (d, s)
}

fn layer_file(store: &Store, l: &Layer) -> Container {
    Container::open(&store.layer_path(&l.diff_id()).unwrap()).expect("layer BFC opens")
}

fn rich_layer(comp: Comp) -> Layer {
    Layer::new(&rich_members(), comp)
}

fn check_rich(c: &Container) {
    let e = c.entry(c.find(b"etc/passwd").unwrap()).unwrap();
    assert_eq!((e.mode & 0o7777, e.uid, e.gid), (0o640, Some(0), Some(42)));
    assert_eq!(e.mtime_ns, 1_700_000_000 * 1_000_000_000);
    assert_eq!(read_path(c, "etc/passwd"), b"root:x:0:0\n");
    assert_eq!(
        c.entry(c.find(b"bin/tool").unwrap()).unwrap().mode & 0o7777,
        0o4755
    );
    assert_eq!(
        c.symlink_target(c.find(b"bin/sh").unwrap()).unwrap(),
        b"/bin/tool"
    );
    let t2 = c.entry(c.find(b"bin/tool2").unwrap()).unwrap();
    assert_eq!(t2.nlink, 2);
    assert_eq!(read_path(c, "bin/tool2"), b"#!/bin/sh\n");
    assert_eq!(
        c.entry(c.find(b"run/fifo").unwrap()).unwrap().kind,
        Kind::Fifo
    );
    let dev = c.entry(c.find(b"dev/null").unwrap()).unwrap();
    assert_eq!(dev.kind, Kind::CharDev);
    assert_eq!(dev.rdev, libc::makedev(1, 3));
    let cap = c.entry(c.find(b"bin/cap").unwrap()).unwrap();
    assert_eq!(
        cap.xattrs,
        vec![(
            b"security.capability".to_vec(),
            b"\x01\x00\x00\x02".to_vec()
        )]
    );
    let long = format!("deep/{}/{}", "d".repeat(120), "f".repeat(150));
    assert_eq!(read_path(c, &long), b"long");
}

#[test]
fn single_arch_gzip_image_pulls_into_layer_files_and_repull_fetches_no_blobs() {
    let reg = Registry::start(Auth::None);
    let dir = tempfile::tempdir().unwrap();
    let base = rich_layer(Comp::Gzip);
    let top = Layer::new(&[M::File("etc/motd", b"hello\n".to_vec())], Comp::Gzip);
    let img = Image::new(vec![base.clone(), top.clone()], "amd64", false);
    let lay = write_layout(&dir.path().join("lay"), "v1", &[img]);
    reg.seed(&lay, "v1", "test/app", &[]);

    let proxy = Proxy::start(
        reg.port,
        ProxyMode::Throttle {
            bytes: 1 << 20,
            tick: Duration::ZERO,
        },
    );
    let (_d, store) = new_store();
    let src = format!("{}/test/app:v1", proxy.host());
    let p = pull_with(&store, &src, |o| {
        o.platform = "linux/amd64".parse().unwrap()
    })
    .unwrap();
    assert_eq!((p.layers_fetched, p.layers_total), (2, 2));
    check_rich(&layer_file(&store, &base));
    assert_eq!(read_path(&layer_file(&store, &top), "etc/motd"), b"hello\n");
    // Layer blobs are gone once converted; the manifest and config stay.
    assert_eq!(std::fs::read_dir(store.blobs_dir()).unwrap().count(), 2);
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    let refs = Refs::load(&store).unwrap();
    assert_eq!(refs.entries().len(), 1);
    assert_eq!(
        refs.entries()[0].display(),
        format!("{}/test/app:v1", proxy.host())
    );
    drop(refs);

    proxy.requests.lock().unwrap().clear();
    let t = Instant::now();
    let p = pull(&store, &src).unwrap();
    let took = t.elapsed();
    assert_eq!(p.layers_fetched, 0);
    let reqs = proxy.requests.lock().unwrap().clone();
    assert!(
        reqs.iter().all(|r| !r.contains("/blobs/")),
        "blob requests on re-pull: {reqs:?}"
    );
    assert!(took < Duration::from_secs(1), "re-pull took {took:?}");
}

#[test]
fn zstd_and_uncompressed_layers_are_converted() {
    let reg = Registry::start(Auth::None);
    let a = Layer::new(&[M::File("a.txt", b"zstd layer".to_vec())], Comp::Zstd);
    let b = Layer::new(&[M::File("b.txt", b"plain layer".to_vec())], Comp::None);
    let c = rich_layer(Comp::Zstd);
    let img = Image::new(vec![a.clone(), b.clone(), c.clone()], "amd64", false);
    reg.push("mixed", "1", &img);
    let (_d, store) = new_store();
    pull_with(&store, &format!("{}/mixed:1", reg.host()), |o| {
        o.writer.compression = bfcfs::bfc::Compression::Zstd
    })
    .unwrap();
    assert_eq!(read_path(&layer_file(&store, &a), "a.txt"), b"zstd layer");
    assert_eq!(read_path(&layer_file(&store, &b), "b.txt"), b"plain layer");
    check_rich(&layer_file(&store, &c));
}

#[test]
fn docker_schema2_media_types_pull() {
    let reg = Registry::start(Auth::None);
    let dir = tempfile::tempdir().unwrap();
    let l = Layer::new(&[M::File("docker.txt", b"v2s2".to_vec())], Comp::Gzip);
    let lay = write_layout(
        &dir.path().join("lay"),
        "d",
        &[Image::new(vec![l.clone()], "amd64", false)],
    );
    reg.seed(&lay, "d", "dock/img", &["--format", "v2s2"]);
    let (_d, store) = new_store();
    let p = pull(&store, &format!("{}/dock/img:d", reg.host())).unwrap();
    let m = store.read_blob(&p.manifest_digest, 1 << 20).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(read_path(&layer_file(&store, &l), "docker.txt"), b"v2s2");
}

#[test]
fn multi_arch_index_picks_the_platform_and_lists_the_others() {
    let reg = Registry::start(Auth::None);
    let dir = tempfile::tempdir().unwrap();
    let amd = Layer::new(&[M::File("arch", b"amd64".to_vec())], Comp::Gzip);
    let arm = Layer::new(&[M::File("arch", b"arm64".to_vec())], Comp::Gzip);
    let lay = write_layout(
        &dir.path().join("lay"),
        "multi",
        &[
            Image::new(vec![amd.clone()], "amd64", false),
            Image::new(vec![arm.clone()], "arm64", false),
        ],
    );
    reg.seed(&lay, "multi", "multi/img", &["--all"]);
    let (_d, store) = new_store();
    let src = format!("{}/multi/img:multi", reg.host());
    pull_with(&store, &src, |o| {
        o.platform = "linux/arm64".parse().unwrap()
    })
    .unwrap();
    assert_eq!(read_path(&layer_file(&store, &arm), "arch"), b"arm64");
    assert!(!store.layer_path(&amd.diff_id()).unwrap().exists());
    let err = pull_with(&store, &src, |o| {
        o.platform = "linux/s390x".parse().unwrap()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn whiteouts_and_opaque_dirs_become_markers() {
    let reg = Registry::start(Auth::None);
    let low = Layer::new(
        &[
            M::File("gone", b"x".to_vec()),
            M::File("dir/old", b"y".to_vec()),
        ],
        Comp::Gzip,
    );
    let up = Layer::new(
        &[
            M::File(".wh.gone", vec![]),
            M::Dir("dir"),
            M::File("dir/.wh..wh..opq", vec![]),
            M::File("dir/new", b"z".to_vec()),
        ],
        Comp::Gzip,
    );
    reg.push(
        "wh",
        "1",
        &Image::new(vec![low, up.clone()], "amd64", false),
    );
    let (_d, store) = new_store();
    pull(&store, &format!("{}/wh:1", reg.host())).unwrap();
    let c = layer_file(&store, &up);
    assert_eq!(
        c.entry(c.find(b".wh.gone").unwrap()).unwrap().whiteout,
        Whiteout::Whiteout
    );
    assert_eq!(
        c.entry(c.find(b"dir/.wh..wh..opq").unwrap())
            .unwrap()
            .whiteout,
        Whiteout::Opaque
    );
    assert_eq!(
        c.entry(c.find(b"dir/new").unwrap()).unwrap().whiteout,
        Whiteout::None
    );
}

#[test]
fn basic_auth_needs_credentials() {
    let reg = Registry::start(Auth::Htpasswd);
    let dir = tempfile::tempdir().unwrap();
    let l = Layer::new(&[M::File("secret", b"basic".to_vec())], Comp::Gzip);
    let lay = write_layout(
        &dir.path().join("lay"),
        "t",
        &[Image::new(vec![l.clone()], "amd64", false)],
    );
    reg.seed(&lay, "t", "private/img", &[]);
    let (_d, store) = new_store();
    let src = format!("{}/private/img:t", reg.host());
    std::env::set_var("DOCKER_CONFIG", dir.path()); // no config.json there
    let err = pull(&store, &src).unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
    let err = pull_with(&store, &src, |o| {
        o.registry.creds = bfcfs::oci::auth::Credentials::parse(&format!("{USER}:wrong"))
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("rejected"), "{err}");
    pull_with(&store, &src, |o| {
        o.registry.creds = bfcfs::oci::auth::Credentials::parse(&format!("{USER}:{PASS}"))
    })
    .unwrap();
    assert_eq!(read_path(&layer_file(&store, &l), "secret"), b"basic");
}

#[test]
fn bearer_token_flow_anonymous_and_with_credentials_reuses_tokens() {
    let reg = Registry::start(Auth::Token);
    let dir = tempfile::tempdir().unwrap();
    let layers: Vec<Layer> = (0..3)
        .map(|i| Layer::new(&[M::File("n", vec![b'0' + i as u8])], Comp::Gzip))
        .collect();
    let lay = write_layout(
        &dir.path().join("lay"),
        "t",
        &[Image::new(layers.clone(), "amd64", false)],
    );
    reg.seed(&lay, "t", "tok/img", &[]);
    let token = reg.token.as_ref().unwrap();
    let before = token.requests.load(std::sync::atomic::Ordering::SeqCst);
    let (_d, store) = new_store();
    let src = format!("{}/tok/img:t", reg.host());
    pull(&store, &src).unwrap();
    let used = token.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    // One token for the manifest, config and all three layers: it is reused until it expires.
    assert_eq!(used, 1, "token requests");
    assert_eq!(read_path(&layer_file(&store, &layers[2]), "n"), b"2");

    let (_d2, store2) = new_store();
    let with = token.with_creds.load(std::sync::atomic::Ordering::SeqCst);
    pull_with(&store2, &src, |o| {
        o.registry.creds = bfcfs::oci::auth::Credentials::parse(&format!("{USER}:{PASS}"))
    })
    .unwrap();
    assert!(token.with_creds.load(std::sync::atomic::Ordering::SeqCst) > with);
}

#[test]
fn wrong_digest_is_rejected_and_nothing_is_kept() {
    let reg = Registry::start(Auth::None);
    let l = Layer::new(&[M::File("f", noise(4096, 1))], Comp::Gzip);
    let img = Image::new(vec![l.clone()], "amd64", false);
    let digest = pull_support::layout::sha(&img.blobs[0]);
    reg.push("bad", "1", &img);
    let file = reg.blob_file(&digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let (_d, store) = new_store();
    let err = pull(&store, &format!("{}/bad:1", reg.host()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("digest mismatch") && err.contains(&digest),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    assert!(!store.blob_path(&digest).unwrap().exists());
    assert!(!store.layer_path(&l.diff_id()).unwrap().exists());
    assert!(Refs::load(&store).unwrap().entries().is_empty());
}

#[test]
fn dropped_connection_mid_blob_is_resumed_with_range() {
    let reg = Registry::start(Auth::None);
    let l = Layer::new(&[M::File("big", noise(1 << 20, 7))], Comp::Gzip);
    reg.push("drop", "1", &Image::new(vec![l.clone()], "amd64", false));
    let proxy = Proxy::start(reg.port, ProxyMode::CutOnce { after: 300_000 });
    let (_d, store) = new_store();
    pull(&store, &format!("{}/drop:1", proxy.host())).unwrap();
    assert_eq!(proxy.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let reqs = proxy.requests.lock().unwrap().clone();
    assert!(
        reqs.iter()
            .any(|r| r.contains("/blobs/") && r.to_ascii_lowercase().contains("range: bytes=")),
        "{reqs:?}"
    );
    assert_eq!(read_path(&layer_file(&store, &l), "big"), noise(1 << 20, 7));
}

#[test]
fn two_concurrent_pulls_of_one_image_both_succeed() {
    let reg = Registry::start(Auth::None);
    let layers: Vec<Layer> = (0..3)
        .map(|i| Layer::new(&[M::File("f", noise(200_000, i))], Comp::Gzip))
        .collect();
    reg.push("conc", "1", &Image::new(layers.clone(), "amd64", false));
    let (_d, store) = new_store();
    let src = format!("{}/conc:1", reg.host());
    std::thread::scope(|s| {
        let a = s.spawn(|| pull(&store, &src));
        let b = s.spawn(|| pull(&store, &src));
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    for l in &layers {
        layer_file(&store, l);
    }
    assert_eq!(Refs::load(&store).unwrap().entries().len(), 1);
}

fn bfcfs(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bfcfs"));
    c.arg("--root").arg(root);
    c
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kill_9_mid_pull_then_repull_leaves_a_consistent_store() {
    let reg = Registry::start(Auth::None);
    let l1 = Layer::new(&[M::File("one", noise(1 << 20, 3))], Comp::Gzip);
    let l2 = Layer::new(&[M::File("two", noise(1 << 20, 4))], Comp::Gzip);
    reg.push(
        "kill",
        "1",
        &Image::new(vec![l1.clone(), l2.clone()], "amd64", false),
    );
    let slow = Proxy::start(
        reg.port,
        ProxyMode::Throttle {
            bytes: 8192,
            tick: Duration::from_millis(5),
        },
    );
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("store");
    let mut child = bfcfs(&root)
        .args(["pull", "-q", &format!("{}/kill:1", slow.host())])
        .spawn()
        .unwrap();
    // Wait until a blob is partly downloaded, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let partial = std::fs::read_dir(root.join("tmp"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 16384).unwrap_or(false))
            })
            .unwrap_or(false);
        if partial {
            break;
        }
        assert!(Instant::now() < deadline, "pull never started writing");
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let store = Store::open(&root).unwrap();
    assert!(
        Refs::load(&store).unwrap().entries().is_empty(),
        "a killed pull recorded a ref"
    );
    assert!(
        !store.layer_path(&l1.diff_id()).unwrap().exists()
            || Container::open(&store.layer_path(&l1.diff_id()).unwrap()).is_ok()
    );

    let src = format!("{}/kill:1", reg.host());
    run_ok(bfcfs(&root).args(["pull", "-q", &src]));
    run_ok(bfcfs(&root).arg("prune"));
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    assert_eq!(
        read_path(&layer_file(&store, &l1), "one"),
        noise(1 << 20, 3)
    );
    assert_eq!(
        read_path(&layer_file(&store, &l2), "two"),
        noise(1 << 20, 4)
    );
    let images = run_ok(bfcfs(&root).args(["images", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&images).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn cli_images_inspect_rm_and_prune_keep_shared_and_container_layers() {
    let reg = Registry::start(Auth::None);
    let shared = Layer::new(&[M::File("shared", b"s".to_vec())], Comp::Gzip);
    let only_a = Layer::new(&[M::File("a", b"a".to_vec())], Comp::Gzip);
    let only_b = Layer::new(&[M::File("b", b"b".to_vec())], Comp::Gzip);
    let only_c = Layer::new(&[M::File("c", b"c".to_vec())], Comp::Gzip);
    reg.push(
        "img/a",
        "1",
        &Image::new(vec![shared.clone(), only_a.clone()], "amd64", false),
    );
    reg.push(
        "img/b",
        "1",
        &Image::new(vec![shared.clone(), only_b.clone()], "amd64", false),
    );
    reg.push(
        "img/c",
        "1",
        &Image::new(vec![only_c.clone()], "amd64", false),
    );
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("store");
    for n in ["a", "b", "c"] {
        run_ok(bfcfs(&root).args(["pull", "-q", &format!("{}/img/{n}:1", reg.host())]));
    }
    let store = Store::open(&root).unwrap();
    let text = run_ok(bfcfs(&root).arg("images"));
    assert!(text.starts_with("REPOSITORY"), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(bfcfs(&root).args(["images", "--json"]))).unwrap();
    assert_eq!(v[0]["repository"], format!("{}/img/a", reg.host()));
    assert_eq!(v[0]["tag"], "1");
    assert_eq!(v[0]["created"], "2024-05-06T07:08:09Z");

    let a = format!("{}/img/a:1", reg.host());
    let insp: serde_json::Value =
        serde_json::from_str(&run_ok(bfcfs(&root).args(["inspect", "--json", &a]))).unwrap();
    assert_eq!(insp["config"]["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(insp["layers"].as_array().unwrap().len(), 2);
    let text = run_ok(bfcfs(&root).args(["inspect", &a]));
    assert!(
        text.contains("WorkingDir:  /w") && text.contains("test=yes"),
        "{text}"
    );

    // A container that uses img/c keeps its layers through rm and prune.
    let c_digest = v[2]["digest"].as_str().unwrap().to_string();
    std::fs::create_dir_all(root.join("containers/box")).unwrap();
    std::fs::write(
        root.join("containers/box/state.json"),
        format!(r#"{{"image":"{c_digest}"}}"#),
    )
    .unwrap();

    // (-f: rm refuses an image a container uses; the container keeps its layers anyway)
    let out = run_ok(bfcfs(&root).args(["rm", "-f", &a, &format!("{}/img/c:1", reg.host())]));
    assert!(out.contains("Untagged"), "{out}");
    assert!(!store.layer_path(&only_a.diff_id()).unwrap().exists());
    assert!(
        store.layer_path(&shared.diff_id()).unwrap().exists(),
        "shared layer removed"
    );
    assert!(
        store.layer_path(&only_c.diff_id()).unwrap().exists(),
        "container's layer removed"
    );
    std::fs::remove_dir_all(root.join("containers/box")).unwrap();
    let out = run_ok(bfcfs(&root).arg("prune"));
    assert!(out.starts_with("Freed "), "{out}");
    assert!(!store.layer_path(&only_c.diff_id()).unwrap().exists());
    assert!(store.layer_path(&only_b.diff_id()).unwrap().exists());

    let err = bfcfs(&root).args(["inspect", "nope:1"]).output().unwrap();
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("no image"),
        "{:?}",
        err
    );
}

#[test]
fn single_file_image_is_written_and_inspected() {
    let reg = Registry::start(Auth::None);
    let l1 = rich_layer(Comp::Gzip);
    let l2 = Layer::new(
        &[
            M::File("etc/passwd", b"changed".to_vec()),
            M::File(".wh.gone", vec![]),
        ],
        Comp::Zstd,
    );
    reg.push(
        "single",
        "1",
        &Image::new(vec![l1.clone(), l2.clone()], "amd64", false),
    );
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("store");
    let out = d.path().join("image.bfc");
    run_ok(bfcfs(&root).args([
        "pull",
        "-q",
        "-o",
        out.to_str().unwrap(),
        &format!("{}/single:1", reg.host()),
    ]));
    let c = Container::open(&out).unwrap();
    let p1 = format!("layers/{}/etc/passwd", &l1.diff_id()[7..]);
    let p2 = format!("layers/{}/etc/passwd", &l2.diff_id()[7..]);
    assert_eq!(read_path(&c, &p1), b"root:x:0:0\n");
    assert_eq!(read_path(&c, &p2), b"changed");
    let wh = format!("layers/{}/.wh.gone", &l2.diff_id()[7..]);
    assert_eq!(
        c.entry(c.find(wh.as_bytes()).unwrap()).unwrap().whiteout,
        Whiteout::Whiteout
    );
    let v: serde_json::Value = serde_json::from_str(&run_ok(bfcfs(&root).args([
        "inspect",
        "--json",
        out.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(v["layers"][1]["diff_id"], l2.diff_id());
    assert_eq!(v["config"]["config"]["WorkingDir"], "/w");
    // The upstream tool sees a plain, valid container.
    let upstream = std::env::var_os("BFCFS_UPSTREAM_BFC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/opt/upstream-bfc/bin/bfc".into());
    if upstream.exists() {
        let o = Command::new(&upstream)
            .args(["verify", "--deep"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "upstream verify: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // Nothing was recorded in the store.
    assert_eq!(run_ok(bfcfs(&root).args(["images", "--json"])).trim(), "[]");
}

#[test]
fn local_transports_oci_dir_oci_archive_and_docker_archive() {
    let d = tempfile::tempdir().unwrap();
    let l = Layer::new(&[M::File("local", b"from disk".to_vec())], Comp::Gzip);
    let lay = write_layout(
        &d.path().join("lay"),
        "v",
        &[Image::new(vec![l.clone()], "amd64", false)],
    );
    let (_s, store) = new_store();
    pull(&store, &format!("oci:{}:v", lay.display())).unwrap();
    assert_eq!(read_path(&layer_file(&store, &l), "local"), b"from disk");
    let err = pull(&store, &format!("oci:{}:nope", lay.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no image tagged \"nope\""), "{err}");

    // oci-archive: the same layout, tarred.
    let ar = d.path().join("lay.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&ar).unwrap());
    b.append_dir_all(".", &lay).unwrap();
    b.finish().unwrap();
    let (_s2, store2) = new_store();
    pull(&store2, &format!("oci-archive:{}:v", ar.display())).unwrap();
    assert_eq!(read_path(&layer_file(&store2, &l), "local"), b"from disk");

    // docker-archive: manifest.json + config + uncompressed layer tar, as `docker save` writes.
    let img = Image::new(
        vec![Layer::new(
            &[M::File("docker", b"saved".to_vec())],
            Comp::None,
        )],
        "amd64",
        false,
    );
    let da = d.path().join("saved.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&da).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("abc/layer.tar", &img.blobs[0]);
    add("cfg.json", &img.config);
    add(
        "manifest.json",
        br#"[{"Config":"cfg.json","RepoTags":["x:1"],"Layers":["abc/layer.tar"]}]"#,
    );
    b.finish().unwrap();
    let (_s3, store3) = new_store();
    pull(&store3, &format!("docker-archive:{}", da.display())).unwrap();
    assert_eq!(
        read_path(&layer_file(&store3, &img.layers[0]), "docker"),
        b"saved"
    );
}

#[test]
fn diff_id_mismatch_with_the_config_is_an_error() {
    let reg = Registry::start(Auth::None);
    let l = Layer::new(&[M::File("x", b"x".to_vec())], Comp::Gzip);
    let mut img = Image::new(vec![l], "amd64", false);
    // Rewrite the config with a wrong diff_id, and the manifest to point at it.
    let mut cfg: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    cfg["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    img.config = serde_json::to_vec(&cfg).unwrap();
    let mut man: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    man["config"]["digest"] = pull_support::layout::sha(&img.config).into();
    man["config"]["size"] = img.config.len().into();
    img.manifest = serde_json::to_vec(&man).unwrap();
    reg.push("diff", "1", &img);
    let (_d, store) = new_store();
    let err = pull(&store, &format!("{}/diff:1", reg.host()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("diff_id mismatch"), "{err}");
    assert_eq!(std::fs::read_dir(store.layers_dir()).unwrap().count(), 0);
}
