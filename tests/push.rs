//! `bfcfs push`, `save` and `load` (issue 11) against real tools: Debian's docker-registry on
//! 127.0.0.1 (one per test), skopeo, umoci, and a real FUSE mount for the tree comparison.
mod common;
mod pull_support;
mod union_support;

use bfcfs::bfc::Container;
use common::tree::{build_full_tree, describe_tree, differences};
use common::{sha256_hex, tool_ok, unpack_with_umoci, StoreDir};
use flate2::read::GzDecoder;
use pull_support::harness::{Auth, Proxy, ProxyMode, Registry, PASS, USER};
use pull_support::layout::{
    noise, rich_members, sha, sparse_bomb, Comp, Image, Layer, Member as M,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use union_support::{is_mounted, Mnt};

/// The config digest of an image in the store.
fn config_digest(fx: &StoreDir, image: &str) -> String {
    let v: Value = serde_json::from_str(&fx.ok(&["inspect", "--json", image])).unwrap();
    let digest = v["digest"].as_str().unwrap();
    let m = fs::read(Path::new(&fx.store).join("blobs/sha256").join(&digest[7..])).unwrap();
    let m: Value = serde_json::from_slice(&m).unwrap();
    m["config"]["digest"].as_str().unwrap().to_string()
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    tool_ok(Command::new("skopeo").args(args)).stdout
}

/// `skopeo inspect ARGS REFERENCE`, over plain HTTP for `docker://`.
fn inspect(args: &[&str], reference: &str) -> Vec<u8> {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    if reference.starts_with("docker://") {
        all.push("--tls-verify=false");
    }
    all.push(reference);
    skopeo(&all)
}

/// The manifest skopeo reads at `reference`, as stored.
fn raw_manifest(reference: &str) -> Value {
    serde_json::from_slice(&inspect(&["--raw"], reference)).unwrap()
}

/// The digest of the config skopeo reads at `reference`, as stored.
fn raw_config_digest(reference: &str) -> String {
    sha(&inspect(&["--config", "--raw"], reference))
}

fn http_get(url: &str, accept: &str) -> Vec<u8> {
    let mut resp = ureq::get(url).header("Accept", accept).call().unwrap();
    resp.body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap()
}

fn manifest(host: &str, repo: &str, reference: &str) -> Value {
    let b = http_get(
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    );
    serde_json::from_slice(&b).unwrap()
}

fn blob(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    http_get(
        &format!("http://{host}/v2/{repo}/blobs/{digest}"),
        "application/octet-stream",
    )
}

/// The tar of gzip layer `layer` (a manifest's descriptor) of `repo`.
fn layer_tar(host: &str, repo: &str, layer: &Value) -> Vec<u8> {
    let gz = blob(host, repo, layer["digest"].as_str().unwrap());
    let mut v = Vec::new();
    GzDecoder::new(&gz[..]).read_to_end(&mut v).unwrap();
    v
}

/// Layers with what a byte-exact rebuild must get right: PAX xattrs, GNU long names and link
/// targets, hardlinks, devices, a fifo, a sparse member, end-of-archive padding to a 10 KiB
/// record as GNU tar writes, and a whiteout.
fn tricky_layers() -> Vec<Layer> {
    let mut members = rich_members();
    members.push(M::File("big", noise(300_000, 9)));
    let mut base = Layer::new(&members, Comp::Gzip);
    // GNU tar pads the archive to a 10 KiB record.
    let pad = (10240 - base.tar.len() % 10240) % 10240;
    base.tar.extend(std::iter::repeat_n(0u8, pad));
    let mut top = Layer::new(
        &[
            M::File("etc/motd", b"hello\n".to_vec()),
            M::File("etc/.wh.passwd", Vec::new()),
        ],
        Comp::Gzip,
    );
    // A sparse member (its stored bytes are not its content) before the end blocks.
    let end = top.tar.len() - 1024;
    let sparse = sparse_bomb(1, 64 << 10);
    top.tar.truncate(end);
    top.tar.extend_from_slice(&sparse);
    vec![base, top]
}

/// Every path below `root` (root excluded) → type, permissions, owner, size, content hash or
/// link target, rdev, link count and (for non-directories) mtime in seconds.
fn tree(root: &Path) -> BTreeMap<String, String> {
    describe_tree(root, |p, m| {
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink {} {}",
                fs::read_link(p).unwrap().display(),
                m.mtime()
            )
        } else if ft.is_file() {
            format!(
                "file {} {} nlink {} {}",
                m.len(),
                sha256_hex(&fs::read(p).unwrap()),
                m.nlink(),
                m.mtime()
            )
        } else {
            format!("special {:o} rdev {}", m.mode() & 0o170000, m.rdev())
        };
        format!(
            "{what} mode {:o} owner {}:{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A registry holding `src/app:v1` made of [`tricky_layers`], and a store that pulled it:
/// (registry, image, store, `HOST/src/app:v1`).
fn pulled_tricky_image() -> (Registry, Image, StoreDir, String) {
    let reg = Registry::start(Auth::None);
    let img = Image::new(tricky_layers(), "amd64", false);
    reg.push("src/app", "v1", &img);
    let fx = StoreDir::new();
    let name = format!("{}/src/app:v1", reg.host());
    fx.ok(&["pull", "-q", &name]);
    (reg, img, fx, name)
}

#[test]
fn a_pushed_image_inspects_and_unpacks_with_skopeo_and_umoci_to_the_mounted_tree() {
    let reg = Registry::start(Auth::None);
    let fx = StoreDir::new();
    let src = build_full_tree(&fx.path("src"));
    // `import` cannot take device nodes and fifos yet (tar-rs refuses them), and writes a
    // header Go's archive/tar (umoci) rejects for a pre-1970 mtime; push reproduces the
    // imported tar byte for byte, so leave both out.
    fs::remove_dir_all(src.join("special")).unwrap();
    fs::remove_file(src.join("files/old")).unwrap();
    fx.ok(&["import", s(&src), "local/tree:v1"]);
    let dest = format!("{}/team/tree:v1", reg.host());
    let out = fx.ok(&["push", "-q", "local/tree:v1", &dest]);
    assert!(out.is_empty(), "{out}");
    let out = fx.ok(&["push", "local/tree:v1", &dest]);
    assert!(
        out.contains("(0 uploaded, 1 already there, 0 mounted)"),
        "{out}"
    );

    // skopeo sees an OCI image with the store's config, byte for byte.
    let raw = raw_manifest(&format!("docker://{dest}"));
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(raw["config"]["digest"], config_digest(&fx, "local/tree:v1"));
    assert_eq!(
        raw_config_digest(&format!("docker://{dest}")),
        config_digest(&fx, "local/tree:v1")
    );

    // umoci unpacks the same tree the image mounts as.
    let rootfs = unpack_with_umoci(&dest, &fx.root);
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    fx.ok(&["mount", "--ro", "local/tree:v1", s(&mnt)]);
    let m = Mnt(mnt.clone());
    let mounted = tree(&mnt);
    let unpacked = tree(&rootfs);
    fx.ok(&["umount", s(&m.0)]);
    assert!(!is_mounted(&mnt));
    assert!(mounted.len() > 40, "{}", mounted.len());
    let diff = differences(&mounted, &unpacked, "mounted", "unpacked");
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

#[test]
fn pull_then_push_keeps_the_config_digest_and_later_pushes_skip_or_mount_blobs() {
    let (a, img, fx, name) = pulled_tricky_image();
    let b = Registry::start(Auth::None);
    let orig_config = sha(&img.config);
    assert_eq!(config_digest(&fx, &name), orig_config);

    // To another registry, through a proxy that records the requests; small chunks so that
    // the big layer goes up in PATCHes.
    let proxy = Proxy::start(
        b.port,
        ProxyMode::Throttle {
            bytes: 1 << 20,
            tick: Duration::ZERO,
        },
    );
    let dest = format!("{}/team/app:v1", proxy.host());
    let out = tool_ok(
        Command::new(common::bin())
            .args(["--root", &fx.store, "push", &name, &dest])
            .env("BFCFS_PUSH_CHUNK_SIZE", "65536"),
    );
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.contains("(2 uploaded, 0 already there, 0 mounted)"),
        "{out}"
    );
    let reqs = proxy.requests.lock().unwrap().clone();
    assert!(reqs.iter().any(|r| r.starts_with("PATCH ")), "{reqs:?}");
    let last_put = reqs.iter().rposition(|r| r.starts_with("PUT ")).unwrap();
    assert!(
        reqs[last_put].contains("/manifests/v1"),
        "manifest PUT last: {reqs:?}"
    );
    // The same config, and every layer blob decompresses to its diff_id.
    let m = manifest(&b.host(), "team/app", "v1");
    assert_eq!(m["config"]["digest"], orig_config);
    for (l, layer) in m["layers"].as_array().unwrap().iter().zip(&img.layers) {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let tar = layer_tar(&b.host(), "team/app", l);
        assert_eq!(sha(&tar), layer.diff_id());
    }

    // Again: HEAD finds every blob, nothing is uploaded.
    proxy.requests.lock().unwrap().clear();
    let out = fx.ok(&["push", &name, &dest]);
    assert!(
        out.contains("(0 uploaded, 2 already there, 0 mounted)"),
        "{out}"
    );
    let reqs = proxy.requests.lock().unwrap().clone();
    assert!(reqs.iter().any(|r| r.starts_with("HEAD ")), "{reqs:?}");
    assert!(!reqs.iter().any(|r| r.starts_with("PATCH ")), "{reqs:?}");

    // Another repository of the same registry: mounted, not uploaded.
    let out = fx.ok(&["push", &name, &format!("{}/other/app:v2", proxy.host())]);
    assert!(
        out.contains("(0 uploaded, 0 already there, 2 mounted)"),
        "{out}"
    );
    let reqs = proxy.requests.lock().unwrap().clone();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("POST ") && r.contains("mount=")),
        "{reqs:?}"
    );
    // Back to the registry it came from, in another repository: the original blobs are
    // mounted from where they were pulled.
    let out = fx.ok(&["push", &name, &format!("{}/copy/app:v1", a.host())]);
    assert!(
        out.contains("(0 uploaded, 0 already there, 2 mounted)"),
        "{out}"
    );
    let orig: Value = serde_json::from_slice(&img.manifest).unwrap();
    let copy = manifest(&a.host(), "copy/app", "v1");
    for (x, y) in copy["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(orig["layers"].as_array().unwrap())
    {
        assert_eq!(x["digest"], y["digest"]);
    }
}

#[test]
fn a_layer_without_its_side_file_is_regenerated_and_push_says_the_config_changes() {
    let (_a, img, fx, name) = pulled_tricky_image();
    for e in fs::read_dir(Path::new(&fx.store).join("layers")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "tar-split") {
            fs::remove_file(p).unwrap();
        }
    }
    let b = Registry::start(Auth::None);
    let dest = format!("{}/regen:v1", b.host());
    let (code, _out, err) = fx.run(&["push", &name, &dest]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("config digest is now"), "{err}");
    let m = manifest(&b.host(), "regen", "v1");
    assert_ne!(m["config"]["digest"], sha(&img.config));
    let config: Value = serde_json::from_slice(&blob(
        &b.host(),
        "regen",
        m["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    for (l, d) in m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        let tar = layer_tar(&b.host(), "regen", l);
        assert_eq!(sha(&tar), d.as_str().unwrap());
    }
    // GNU tar reads the regenerated layers (the canonical tar of each layer file).
    let names: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            let tar = layer_tar(&b.host(), "regen", l);
            let t = fx.path("layer.tar");
            fs::write(&t, tar).unwrap();
            let out = tool_ok(Command::new("tar").arg("-tf").arg(&t));
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for want in [
        "etc/passwd",
        "bin/tool2",
        "dev/null",
        "etc/.wh.passwd",
        "etc/motd",
        "s00",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

#[test]
fn a_layer_tar_holding_a_path_twice_cannot_be_reproduced_and_push_says_which_member() {
    let a = Registry::start(Auth::None);
    let l = Layer::new(
        &[
            M::File("dup", b"first".to_vec()),
            M::File("dup", b"second".to_vec()),
        ],
        Comp::Gzip,
    );
    a.push("dup", "v1", &Image::new(vec![l], "amd64", false));
    let fx = StoreDir::new();
    let name = format!("{}/dup:v1", a.host());
    fx.ok(&["pull", "-q", &name]);
    // To another registry, so the layer is made again (not mounted).
    let b = Registry::start(Auth::None);
    let err = fx.fails_with(1, &["push", &name, &format!("{}/dup2:v1", b.host())]);
    assert!(
        err.contains("\"dup\"") && err.contains("does not hold the tar's content"),
        "{err}"
    );
}

#[test]
fn push_with_basic_and_bearer_auth() {
    let fx = StoreDir::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hello"), b"hi\n").unwrap();
    fx.ok(&["import", s(&src), "local/app:v1"]);

    let basic = Registry::start(Auth::Htpasswd);
    let dest = format!("{}/app:v1", basic.host());
    let err = fx.fails_with(1, &["push", "local/app:v1", &dest]);
    assert!(err.contains("user name and password"), "{err}");
    let err = fx.fails_with(
        1,
        &[
            "push",
            "--creds",
            &format!("{USER}:wrong"),
            "local/app:v1",
            &dest,
        ],
    );
    assert!(err.contains("authentication failed"), "{err}");
    fx.ok(&[
        "push",
        "--creds",
        &format!("{USER}:{PASS}"),
        "local/app:v1",
        &dest,
    ]);
    let authfile = fx.path("auth.json");
    let auth = base64_encode(format!("{USER}:{PASS}").as_bytes());
    fs::write(
        &authfile,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, basic.host()),
    )
    .unwrap();
    let out = fx.ok(&["push", "--authfile", s(&authfile), "local/app:v1", &dest]);
    assert!(out.contains("1 already there"), "{out}");

    let bearer = Registry::start(Auth::Token);
    let token = bearer.token.as_ref().unwrap();
    let creds = format!("{USER}:{PASS}");
    fx.ok(&[
        "push",
        "--creds",
        &creds,
        "local/app:v1",
        &format!("{}/a/app:v1", bearer.host()),
    ]);
    assert!(token.with_creds.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // A mount needs a token for two repositories (the registry's challenge names both scopes).
    let out = fx.ok(&[
        "push",
        "--creds",
        &creds,
        "local/app:v1",
        &format!("{}/b/app:v1", bearer.host()),
    ]);
    assert!(out.contains("1 mounted"), "{out}");
    // Anonymous pushes get a pull-only token, which the registry refuses.
    let err = fx.fails_with(
        1,
        &[
            "push",
            "local/app:v1",
            &format!("{}/c/app:v1", bearer.host()),
        ],
    );
    assert!(err.contains("authentication failed"), "{err}");
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn push_format_bfc_puts_an_index_at_the_tag_that_ordinary_tools_read_as_the_ordinary_image() {
    let (_a, img, fx, name) = pulled_tricky_image();
    let b = Registry::start(Auth::None);
    let dest = format!("{}/app:v1", b.host());
    fx.ok(&["push", "--format", "bfc", &name, &dest]);

    let index = manifest(&b.host(), "app", "v1");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries[0]["platform"].get("os.features").is_none());
    assert_eq!(entries[1]["platform"]["os.features"][0], "bfcfs.bfc.v1");
    assert_eq!(entries[1]["annotations"]["io.bfcfs.format"], "bfc");
    assert_eq!(entries[0]["platform"]["architecture"], "amd64");
    let ordinary = manifest(&b.host(), "app", entries[0]["digest"].as_str().unwrap());
    let bfcm = manifest(&b.host(), "app", entries[1]["digest"].as_str().unwrap());
    assert_eq!(ordinary["config"]["digest"], sha(&img.config));
    assert_eq!(bfcm["config"]["digest"], sha(&img.config));

    // skopeo takes the ordinary image from the index.
    let lay = fx.path("lay");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:v1", lay.display()),
    ]);
    let top: Value = serde_json::from_slice(&fs::read(lay.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["digest"], entries[0]["digest"]);
    let inspected: Value =
        serde_json::from_slice(&inspect(&[], &format!("docker://{dest}"))).unwrap();
    assert_eq!(
        inspected["Layers"].as_array().unwrap().len(),
        img.layers.len()
    );
    let ordinary_layers: Vec<&Value> = ordinary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let seen: Vec<&Value> = inspected["Layers"].as_array().unwrap().iter().collect();
    assert_eq!(seen, ordinary_layers);

    // Each BFC layer: the annotated range is the index to the end, with the annotated sha256,
    // fetched with one range GET; the whole blob is a BFC file with the layer's entries.
    let config: Value = serde_json::from_slice(&img.config).unwrap();
    for (i, l) in bfcm["layers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(l["mediaType"], "application/vnd.bfcfs.layer.v1.bfc");
        let ann = &l["annotations"];
        assert_eq!(ann["io.bfcfs.bfc.diff-id"], config["rootfs"]["diff_ids"][i]);
        let off: u64 = ann["io.bfcfs.bfc.index.offset"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let len: u64 = ann["io.bfcfs.bfc.index.length"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let digest = l["digest"].as_str().unwrap();
        let mut resp = ureq::get(&format!("http://{}/v2/app/blobs/{digest}", b.host()))
            .header("Range", format!("bytes={off}-{}", off + len - 1))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 206);
        let range = resp.body_mut().read_to_vec().unwrap();
        assert_eq!(range.len() as u64, len);
        assert_eq!(sha(&range), ann["io.bfcfs.bfc.index.sha256"]);
        let whole = blob(&b.host(), "app", digest);
        assert_eq!(whole.len() as u64, off + len);
        assert_eq!(sha(&whole), digest);
        let c = Container::from_bytes("layer", whole).unwrap();
        let stored = Container::open(
            &Path::new(&fx.store)
                .join("layers")
                .join(format!("{}.bfc", &img.layers[i].diff_id()[7..])),
        )
        .unwrap();
        let paths = |c: &Container| (0..c.len()).map(|k| c.path(k).to_vec()).collect::<Vec<_>>();
        assert_eq!(paths(&c), paths(&stored));
    }

    // A second `--format bfc` push keeps the ordinary manifest and uploads nothing.
    let out = fx.ok(&["push", "--format", "bfc", &name, &dest]);
    assert!(out.contains("0 uploaded"), "{out}");
    let again = manifest(&b.host(), "app", "v1");
    assert_eq!(again["manifests"][0]["digest"], entries[0]["digest"]);
}

#[test]
fn save_and_load_round_trip_through_docker_and_oci_archives() {
    let (a, img, fx, name) = pulled_tricky_image();
    let config = sha(&img.config);

    let docker = fx.path("d.tar");
    fx.ok(&["save", "-q", "-o", s(&docker), &name]);
    assert_eq!(
        raw_config_digest(&format!("docker-archive:{}", docker.display())),
        config
    );
    let oci = fx.path("o.tar");
    fx.ok(&[
        "save",
        "-q",
        "--format",
        "oci-archive",
        "-o",
        s(&oci),
        &name,
    ]);
    assert_eq!(
        raw_config_digest(&format!("oci-archive:{}:v1", oci.display())),
        config
    );
    let dir = fx.path("layout");
    fx.ok(&["save", "-q", "--format", "oci-dir", "-o", s(&dir), &name]);
    assert_eq!(
        raw_config_digest(&format!("oci:{}:v1", dir.display())),
        config
    );

    for input in [&docker, &oci, &dir] {
        let other = StoreDir::new();
        let out = other.ok(&["load", "-i", s(input)]);
        assert!(
            out.contains(&format!("Loaded image: {name}")),
            "{input:?}: {out}"
        );
        assert_eq!(config_digest(&other, &name), config, "{input:?}");
        // What was loaded pushes back with the same config again.
        other.ok(&["push", &name, &format!("{}/reloaded:v1", a.host())]);
        assert_eq!(
            manifest(&a.host(), "reloaded", "v1")["config"]["digest"],
            config
        );
    }

    // Several images in one docker archive load as several images.
    let small = fx.path("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("f"), b"small\n").unwrap();
    fx.ok(&["import", s(&small), "local/small:v1"]);
    let two = fx.path("two.tar");
    fx.ok(&["save", "-q", "-o", s(&two), &name, "local/small:v1"]);
    let other = StoreDir::new();
    let out = other.ok(&["load", "-i", s(&two)]);
    assert!(
        out.contains(&format!("Loaded image: {name}"))
            && out.contains("Loaded image: docker.io/local/small:v1"),
        "{out}"
    );
    assert_eq!(config_digest(&other, &name), config);
    assert_eq!(
        config_digest(&other, "local/small:v1"),
        config_digest(&fx, "local/small:v1")
    );

    // Push destinations on disk.
    fx.ok(&[
        "push",
        &name,
        &format!("docker-archive:{}:x/y:z", fx.path("p.tar").display()),
    ]);
    let m = raw_manifest(&format!("docker-archive:{}", fx.path("p.tar").display()));
    assert_eq!(m["config"]["digest"], config);
    fx.ok(&[
        "push",
        "--compression-format",
        "zstd",
        &name,
        &format!("oci:{}:t", fx.path("pd").display()),
    ]);
    let m = raw_manifest(&format!("oci:{}:t", fx.path("pd").display()));
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}
