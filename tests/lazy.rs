//! Lazy pulls and mounts against real servers on 127.0.0.1: Debian's docker-registry holding an
//! image published with BFC layers (pushed here by plain HTTP as `push --format bfc` lays it
//! out: an index with the ordinary manifest first and the BFC one second), and a small range
//! server for `mount https://…/file.bfc`. Mounts are real FUSE mounts through the CLI.
mod common;
mod pull_support;

use bfcfs::bfc::{Compression, Container, WriterOptions};
use bfcfs::image::{self, PullOptions, Quiet};
use bfcfs::store::Store;
use common::bin;
use pull_support::harness::Registry;
use pull_support::layout::{noise, sha, Comp, Image, Layer, Member as M};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BFC_LAYER: &str = "application/vnd.bfcfs.layer.v1.bfc";

fn text(len: usize, seed: u64) -> Vec<u8> {
    common::tree::text(len, seed)
}

/// Base layer: small files, a big incompressible file, a big compressible one, links.
fn base_layer() -> Layer {
    let mut m = vec![
        M::Dir("etc"),
        M::FileMode("etc/passwd", b"root:x:0:0\n".to_vec(), 0o640, 0, 42),
        M::FileMode("bin/tool", text(300_000, 1), 0o4755, 0, 0),
        M::Symlink("bin/sh", "/bin/tool"),
        M::Hardlink("bin/tool2", "bin/tool"),
        M::Fifo("run/fifo"),
        M::Xattr("bin/cap", "security.capability", b"\x01\x00\x00\x02"),
        M::File("data/noise", noise(3 << 20, 7)),
        M::File("data/text", text(2 << 20, 9)),
        M::File("etc/gone", b"removed by the top layer".to_vec()),
    ];
    for (k, name) in (0..40).map(|k| (k, format!("usr/share/doc/f{k:02}"))) {
        m.push(M::File(
            Box::leak(name.into_boxed_str()),
            text(1000 + k * 300, k as u64),
        ));
    }
    Layer::new(&m, Comp::Gzip)
}

/// Top layer: a whiteout, a changed file, a new one.
fn top_layer() -> Layer {
    Layer::new(
        &[
            M::File("etc/.wh.gone", Vec::new()),
            M::File("etc/passwd", b"root:x:0:0\nuser:x:1:1\n".to_vec()),
            M::File("app/main", noise(700_000, 3)),
        ],
        Comp::Gzip,
    )
}

/// An image on `reg`: the ordinary manifest under `NAME:plain`, and under `NAME:TAG` an index
/// of the ordinary manifest and the BFC one (its layers: the BFC files of a full pull with
/// zstd chunks, with the index annotations). Returns the store of that full pull.
struct Published {
    full: tempfile::TempDir,
    image: String,
    plain: String,
    diff_ids: Vec<String>,
}

impl Published {
    fn store(&self) -> PathBuf {
        self.full.path().join("store")
    }
}

fn publish(reg: &Registry, name: &str, annotate: bool) -> Published {
    let img = Image::new(vec![base_layer(), top_layer()], "amd64", false);
    reg.push(name, "plain", &img);
    let full = tempfile::tempdir().unwrap();
    let store = Store::open(&full.path().join("store")).unwrap();
    let plain = format!("{}/{name}:plain", reg.host());
    let opts = PullOptions {
        writer: WriterOptions {
            compression: Compression::Zstd,
            ..Default::default()
        },
        ..Default::default()
    };
    image::pull(&store, &plain.parse().unwrap(), &opts, &Quiet).expect("full pull");
    let diff_ids: Vec<String> = img.layers.iter().map(Layer::diff_id).collect();
    let mut layers = Vec::new();
    for d in &diff_ids {
        let path = store.layer_path(d).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (at, _) = Container::open(&path).unwrap().index_range();
        reg.push_blob(name, &bytes);
        let mut desc = json!({"mediaType": BFC_LAYER, "digest": sha(&bytes), "size": bytes.len(),
            "annotations": {"io.bfcfs.bfc.diff-id": d}});
        if annotate {
            let a = &mut desc["annotations"];
            a["io.bfcfs.bfc.index.offset"] = json!(at.to_string());
            a["io.bfcfs.bfc.index.length"] = json!((bytes.len() as u64 - at).to_string());
            a["io.bfcfs.bfc.index.sha256"] = json!(sha(&bytes[at as usize..]));
        }
        layers.push(desc);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&img.config), "size": img.config.len()},
        "layers": layers,
    }))
    .unwrap();
    put_manifest(
        reg,
        name,
        &sha(&manifest),
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": img.media_type(), "digest": sha(&img.manifest), "size": img.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest),
             "size": manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64", "os.features": ["bfcfs.bfc.v1"]},
             "annotations": {"io.bfcfs.format": "bfc"}},
        ],
    }))
    .unwrap();
    put_manifest(
        reg,
        name,
        "v1",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    Published {
        full,
        image: format!("{}/{name}:v1", reg.host()),
        plain,
        diff_ids,
    }
}

fn put_manifest(reg: &Registry, name: &str, reference: &str, mt: &str, body: &[u8]) {
    let url = format!("http://{}/v2/{name}/manifests/{reference}", reg.host());
    let resp = ureq::put(&url)
        .header("Content-Type", mt)
        .send(body)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "PUT {url}");
}

fn bfcfs(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env("BFCFS_RETRIES", "1")
        .env("BFCFS_RETRY_BACKOFF_MS", "50")
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "bfcfs failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mount that is undone on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(root: &Path, image: &str, dir: &Path, opts: &str) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        ok(bfcfs(
            root,
            &["mount", "--ro", "-o", opts, image, dir.to_str().unwrap()],
        ));
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new(bin())
            .args(["umount", "-l"])
            .arg(&self.0)
            .status();
    }
}

/// Everything `ls -lR`, `readlink` and `cat` see of a tree, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else if m.is_file() {
                format!("file {}", sha(&std::fs::read(&p).unwrap()))
            } else {
                "special".into()
            };
            // Directories that the layers only imply get the mount's time: not compared.
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} uid={} gid={} size={} mtime={mtime} nlink={}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    m.nlink()
                ),
            );
        }
    }
    out
}

fn has_docker_registry() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v docker-registry"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping: docker-registry is not installed");
    }
    found
}

#[test]
fn lazy_pull_mounts_the_tree_of_a_full_pull_and_completes_into_the_same_layer_files() {
    if !has_docker_registry() {
        return;
    }
    let reg = Registry::start(pull_support::harness::Auth::None);
    let p = publish(&reg, "lazy/app", true);
    let work = tempfile::tempdir().unwrap();
    let lazy_root = work.path().join("lazy-store");
    let out = ok(bfcfs(&lazy_root, &["pull", "--lazy", &p.image]));
    assert!(out.contains("v1"), "{out}");
    // Nothing of the content is here yet: only the lazy layers' heads.
    let store = Store::open(&lazy_root).unwrap();
    for d in &p.diff_ids {
        assert!(!store.layer_path(d).unwrap().exists());
        let (have, size) = bfcfs::lazy::layer_progress(&store, d).expect("a lazy layer");
        assert!(
            have < size / 4,
            "{have} of {size} bytes local after the pull"
        );
    }
    let listed = ok(bfcfs(&lazy_root, &["images"]));
    assert!(
        listed.contains("lazy:") && listed.contains("% local"),
        "{listed}"
    );

    {
        let lazy = Mounted::new(
            &lazy_root,
            &p.image,
            &work.path().join("m-lazy"),
            "bg_rate=0",
        );
        let full = Mounted::new(&p.store(), &p.plain, &work.path().join("m-full"), "ro");
        let a = snapshot(&lazy.0);
        assert!(a.len() > 50 && a.contains_key("data/noise") && !a.contains_key("etc/gone"));
        assert_eq!(a, snapshot(&full.0));
    }
    // A second mount reads what the first fetched from the store; the background fetch then
    // completes every layer, checks it and moves it where a full pull puts its layer files.
    let _m = Mounted::new(
        &lazy_root,
        &p.image,
        &work.path().join("m-bg"),
        "bg_rate=64M",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for d in &p.diff_ids {
        let path = store.layer_path(d).unwrap();
        while !path.exists() {
            assert!(Instant::now() < deadline, "layer {d} did not complete");
            std::thread::sleep(Duration::from_millis(100));
        }
        let full = std::fs::read(Store::open(&p.store()).unwrap().layer_path(d).unwrap());
        assert!(std::fs::read(&path).unwrap() == full.unwrap(), "layer {d}");
        assert!(bfcfs::lazy::layer_progress(&store, d).is_none());
    }
    assert!(!ok(bfcfs(&lazy_root, &["images"])).contains("lazy:"));
}

#[test]
fn an_image_pushed_with_format_bfc_pulls_lazily_and_mounts_its_tree() {
    if !has_docker_registry() {
        return;
    }
    let reg = Registry::start(pull_support::harness::Auth::None);
    let img = Image::new(vec![base_layer(), top_layer()], "amd64", false);
    reg.push("src/app", "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    let src = format!("{}/src/app:v1", reg.host());
    ok(bfcfs(&a, &["pull", "-c", "zstd", &src]));
    let dest = format!("{}/bfc/app:v1", reg.host());
    ok(bfcfs(&a, &["push", "--format", "bfc", &src, &dest]));
    let b = work.path().join("b");
    ok(bfcfs(&b, &["pull", "--lazy", "--lazy-mode=require", &dest]));
    let store = Store::open(&b).unwrap();
    for l in &img.layers {
        assert!(bfcfs::lazy::layer_progress(&store, &l.diff_id()).is_some());
    }
    let lazy = Mounted::new(&b, &dest, &work.path().join("m"), "bg_rate=0");
    let full = Mounted::new(&a, &src, &work.path().join("f"), "ro");
    assert_eq!(snapshot(&lazy.0), snapshot(&full.0));
}

#[test]
fn lazy_pull_without_index_annotations_finds_the_index_with_a_suffix_request() {
    if !has_docker_registry() {
        return;
    }
    let reg = Registry::start(pull_support::harness::Auth::None);
    let p = publish(&reg, "lazy/plain-desc", false);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("s");
    ok(bfcfs(
        &root,
        &["pull", "--lazy", "--lazy-mode=require", &p.image],
    ));
    let lazy = Mounted::new(&root, &p.image, &work.path().join("m"), "bg_rate=0");
    let full = Mounted::new(&p.store(), &p.plain, &work.path().join("f"), "ro");
    assert_eq!(snapshot(&lazy.0), snapshot(&full.0));
}

#[test]
fn lazy_mode_require_refuses_an_image_without_bfc_layers_and_prefer_falls_back() {
    if !has_docker_registry() {
        return;
    }
    let reg = Registry::start(pull_support::harness::Auth::None);
    let img = Image::new(vec![top_layer()], "amd64", false);
    reg.push("lazy/oci", "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("s");
    let image = format!("{}/lazy/oci:v1", reg.host());
    let out = bfcfs(&root, &["pull", "--lazy", "--lazy-mode=require", &image]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let layer = sha(&img.blobs[0]);
    assert!(
        err.contains(&layer) && err.contains("not a BFC layer"),
        "{err}"
    );
    let out = bfcfs(&root, &["pull", "--lazy", &image]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        err.contains(&layer) && err.contains("pulled in full"),
        "{err}"
    );
    let store = Store::open(&root).unwrap();
    assert!(store.layer_path(&img.layers[0].diff_id()).unwrap().exists());
}

/// Reads `len` bytes at `off` of `path`.
fn read_at(path: &Path, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(off))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

#[test]
fn reads_fail_with_eio_while_the_registry_is_down_and_work_once_it_is_back() {
    if !has_docker_registry() {
        return;
    }
    let mut reg = Registry::start(pull_support::harness::Auth::None);
    let p = publish(&reg, "lazy/flaky", true);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("s");
    ok(bfcfs(&root, &["pull", "--lazy", &p.image]));
    let m = Mounted::new(
        &root,
        &p.image,
        &work.path().join("m"),
        "bg_rate=0,read_timeout=4",
    );
    let want = noise(3 << 20, 7);
    let noise_file = m.0.join("data/noise");
    assert!(read_at(&noise_file, 0, 4096).unwrap() == want[..4096]);

    reg.stop();
    let t = Instant::now();
    let err = read_at(&noise_file, 2 << 20, 4096).expect_err("the registry is down");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The mount is still up: what was fetched reads, the rest fails again.
    assert!(read_at(&noise_file, 0, 4096).unwrap() == want[..4096]);

    reg.resume();
    let got = read_at(&noise_file, 2 << 20, 4096).expect("the registry is back");
    assert!(got == want[2 << 20..(2 << 20) + 4096]);
    assert!(std::fs::read(&noise_file).unwrap() == want);
}

/// `tests/lazy_support/range_server.py` serving `dir`, logging requests to `log`.
struct RangeServer {
    child: Child,
    port: u16,
}

impl RangeServer {
    fn start(dir: &Path, log: &Path) -> RangeServer {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lazy_support/range_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir)
            .arg(log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        RangeServer { child, port }
    }
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn requested_bytes(log: &Path) -> (usize, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let bytes = lines
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    (lines.len(), bytes)
}

#[test]
fn a_bfc_file_on_an_http_server_with_ranges_mounts_lazily_and_fetches_nothing_twice() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/big"), noise(4 << 20, 11)).unwrap();
    std::fs::write(tree.join("a/b/text"), text(1 << 20, 5)).unwrap();
    for k in 0..30 {
        std::fs::write(
            tree.join(format!("a/b/f{k}")),
            text(500 + k * 100, k as u64),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("b/text", tree.join("a/link")).unwrap();
    let srv = work.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let file = srv.join("tree.bfc");
    let st = Command::new(bin())
        .args(["create", "-c", "zstd"])
        .arg(&file)
        .arg(&tree)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let size = std::fs::metadata(&file).unwrap().len();
    let log = work.path().join("requests.log");
    let server = RangeServer::start(&srv, &log);
    let url = format!("http://127.0.0.1:{}/tree.bfc", server.port);
    let root = work.path().join("store");
    // `create` keeps the absolute path; the directories above the tree are implicit (their
    // times are the mount's).
    let inside = tree.strip_prefix("/").unwrap();
    let local = Mounted::new(&root, file.to_str().unwrap(), &work.path().join("l"), "ro");
    {
        let m = Mounted::new(&root, &url, &work.path().join("m"), "bg_rate=0");
        let (n, bytes) = requested_bytes(&log);
        assert!(
            n <= 3 && bytes < size / 4,
            "{n} requests, {bytes} bytes to mount"
        );
        let small = std::fs::read(m.0.join(inside).join("a/b/f3"));
        assert!(small.is_ok());
        let (_, bytes) = requested_bytes(&log);
        assert!(
            bytes < size / 2,
            "{bytes} of {size} bytes for one small file"
        );
        assert_eq!(snapshot(&m.0.join(inside)), snapshot(&local.0.join(inside)));
    }
    // Every byte was read once: a new mount of the URL asks only for the tail (to see that
    // the file did not change) and serves the whole tree from the store.
    let before = requested_bytes(&log);
    let m = Mounted::new(&root, &url, &work.path().join("m2"), "bg_rate=0");
    assert_eq!(snapshot(&m.0.join(inside)), snapshot(&local.0.join(inside)));
    // (The command that mounts and the server it starts each check the tail once.)
    let text = std::fs::read_to_string(&log).unwrap();
    let new: Vec<&str> = text.lines().skip(before.0).collect();
    assert!(
        !new.is_empty() && new.len() <= 2 && new.iter().all(|l| l.contains("bytes=-")),
        "{text}"
    );
}
