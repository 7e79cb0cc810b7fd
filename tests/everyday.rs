//! Everyday commands (issue 13): `import` a directory, `run` it with real runc, `tag`, and the
//! refusals of `rm`, `rm-container` and `container prune`. Real kernel mounts and real runc
//! (needs root, /dev/fuse and runc); every mount is undone by a Drop guard.
mod common;
mod pull_support;
mod union_support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::tree::{describe_tree, set_xattr, xattrs};
use common::*;
use union_support::{is_mounted, libraries, Mnt};

/// A store and a directory to import, made of host binaries (sh, cat, ls and their libraries).
struct Fx(StoreDir);

impl std::ops::Deref for Fx {
    type Target = StoreDir;
    fn deref(&self) -> &StoreDir {
        &self.0
    }
}

impl Fx {
    fn new() -> Fx {
        Fx(StoreDir::new())
    }

    /// A rootfs directory: host sh, cat and ls with their libraries, /etc/passwd, and a few
    /// files of every kind `import` keeps.
    fn rootfs(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        let put = |rel: &str, bytes: &[u8], mode: u32| {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, bytes).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        for b in ["sh", "cat", "ls"] {
            put(
                &format!("usr/bin/{b}"),
                &fs::read(format!("/bin/{b}")).unwrap(),
                0o755,
            );
        }
        for l in libraries(&["/bin/sh", "/bin/cat", "/bin/ls"]) {
            put(&l[1..], &fs::read(&l).unwrap(), 0o755);
        }
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
        put("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644);
        put("etc/hello", b"hello from the image\n", 0o640);
        put("srv/deep/er/file", b"deep\n", 0o600);
        fs::hard_link(dir.join("etc/hello"), dir.join("srv/hello-link")).unwrap();
        std::os::unix::fs::symlink("../etc/hello", dir.join("srv/hello-sym")).unwrap();
        fs::create_dir(dir.join("empty")).unwrap();
        // Kinds and values plain `tar` headers get wrong: a fifo, a device, a 1960 mtime.
        let run = |cmd: &str, args: &[&str]| {
            let st = std::process::Command::new(cmd).args(args).status().unwrap();
            assert!(st.success(), "{cmd} {args:?}");
        };
        run("mkfifo", &[s(&dir.join("srv/fifo"))]);
        run("mknod", &[s(&dir.join("srv/null2")), "c", "1", "3"]);
        put("srv/old", b"from 1960\n", 0o644);
        fs::File::options()
            .write(true)
            .open(dir.join("srv/old"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH - std::time::Duration::from_secs(315_619_200))
            .unwrap();
        dir
    }

    fn containers(&self) -> Vec<String> {
        container_names(Path::new(&self.store))
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// path → kind, mode, size, content or link target (what import must keep).
fn tree(root: &Path) -> BTreeMap<String, String> {
    describe_tree(root, |p, m| {
        if m.is_dir() {
            format!("dir {:o}", m.mode() & 0o7777)
        } else if m.file_type().is_symlink() {
            format!("symlink {}", fs::read_link(p).unwrap().display())
        } else if m.file_type().is_fifo() {
            format!("fifo {:o}", m.mode() & 0o7777)
        } else if m.file_type().is_char_device() {
            format!("chr {:o} {:#x}", m.mode() & 0o7777, m.rdev())
        } else if m.mtime() < 0 {
            format!(
                "file {:o} {} mtime {}",
                m.mode() & 0o7777,
                m.len(),
                m.mtime()
            )
        } else {
            format!(
                "file {:o} {} {} nlink {}",
                m.mode() & 0o7777,
                m.len(),
                sha256_hex(&fs::read(p).unwrap()),
                m.nlink()
            )
        }
    })
}

#[test]
fn an_imported_directory_mounts_as_the_same_tree() {
    let fx = Fx::new();
    let src = fx.rootfs("src");
    let out = fx.ok(&["import", s(&src), "local/tree:v1"]);
    assert!(out.starts_with("docker.io/local/tree:v1 sha256:"), "{out}");
    let mnt = fx.root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    fx.ok(&["mount", "--ro", "local/tree:v1", s(&mnt)]);
    let m = Mnt(mnt.clone());
    assert_eq!(tree(&mnt), tree(&src));
    fx.ok(&["umount", s(&m.0)]);
    assert!(!is_mounted(&mnt));

    // The same tree again is the same layer; --change lands in the config.
    let out = fx.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/cat\", \"/etc/hello\"]",
        "--change",
        "ENV GREETING=hi",
        "--change",
        "WORKDIR /srv",
        s(&src),
        "local/tree:v2",
    ]);
    assert!(out.contains("local/tree:v2"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&fx.ok(&["inspect", "--json", "local/tree:v2"])).unwrap();
    let v1: serde_json::Value =
        serde_json::from_str(&fx.ok(&["inspect", "--json", "local/tree:v1"])).unwrap();
    assert_eq!(v["layers"][0]["diff_id"], v1["layers"][0]["diff_id"]);
    let cfg = &v["config"]["config"];
    assert_eq!(cfg["Cmd"], serde_json::json!(["/bin/cat", "/etc/hello"]));
    assert_eq!(cfg["Env"], serde_json::json!(["GREETING=hi"]));
    assert_eq!(cfg["WorkingDir"], "/srv");
    assert_eq!(
        v["config"]["rootfs"]["diff_ids"][0],
        v["layers"][0]["diff_id"]
    );

    let err = fx.fails(&["import", "--change", "RUN make", s(&src), "x:1"]);
    assert!(err.contains("unsupported instruction"), "{err}");
    let err = fx.fails(&["import", s(&src.join("etc/hello")), "x:1"]);
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn run_passes_stdout_and_the_exit_status_through_and_rm_leaves_no_container() {
    let fx = Fx::new();
    let src = fx.rootfs("src");
    fx.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/cat\", \"/etc/hello\"]",
        s(&src),
        "app:v1",
    ]);
    let (code, out, err) = fx.run(&["run", "--rm", "app:v1"]);
    assert_eq!((code, out.as_str()), (0, "hello from the image\n"), "{err}");
    let (code, out, err) = fx.run(&["run", "--rm", "app:v1", "sh", "-c", "echo out; exit 7"]);
    assert_eq!((code, out.as_str()), (7, "out\n"), "{err}");
    // -e, -w, --entrypoint and arguments after --
    let (code, out, err) = fx.run(&[
        "run",
        "--rm",
        "-e",
        "X=from-e",
        "-w",
        "/srv/deep",
        "--entrypoint",
        "/bin/sh",
        "app:v1",
        "--",
        "-c",
        "echo $X; pwd; ls",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "from-e\n/srv/deep\ner\n"),
        "{err}"
    );
    // --volume binds a host directory, read-only with :ro
    let host = fx.root.join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("f"), b"from the host\n").unwrap();
    let vol = format!("{}:/mnt/h:ro", host.display());
    let (code, out, err) = fx.run(&[
        "run",
        "--rm",
        "--volume",
        &vol,
        "app:v1",
        "sh",
        "-c",
        "cat /mnt/h/f; echo x > /mnt/h/g",
    ]);
    assert_eq!(out, "from the host\n", "{err}");
    assert_ne!(code, 0, "a write to a read-only bind succeeded");
    assert!(!host.join("g").exists());
    // -u: the process runs as that user
    let (code, out, err) = fx.run(&[
        "run",
        "--rm",
        "-u",
        "1000:1000",
        "app:v1",
        "sh",
        "-c",
        "while read -r k v; do [ \"$k\" = Uid: ] && echo $v; done < /proc/self/status; exit 0",
    ]);
    assert_eq!((code, out.as_str()), (0, "1000 1000 1000 1000\n"), "{err}");
    assert!(fx.containers().is_empty(), "{:?}", fx.containers());
    assert!(!fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&fx.store));
}

#[test]
fn run_of_an_image_without_a_command_fails_and_leaves_nothing() {
    let fx = Fx::new();
    let src = fx.rootfs("src");
    fx.ok(&["import", s(&src), "bare:v1"]);
    let err = fx.fails(&["run", "bare:v1"]);
    assert!(err.contains("neither Entrypoint nor Cmd"), "{err}");
    let err = fx.fails(&["run", "--rm", "--runtime", "/no/such/runc", "bare:v1", "sh"]);
    assert!(err.contains("/no/such/runc"), "{err}");
    assert!(fx.containers().is_empty(), "{:?}", fx.containers());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&fx.store), "{mounts}");
}

#[test]
fn run_without_rm_keeps_the_container_and_what_the_command_wrote() {
    let fx = Fx::new();
    let src = fx.rootfs("src");
    fx.ok(&["import", s(&src), "app:v1"]);
    let (code, _, err) = fx.run(&[
        "run",
        "--name",
        "keep",
        "app:v1",
        "sh",
        "-c",
        "echo data > /etc/new",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fx.containers(), ["keep"]);
    let upper = Path::new(&fx.store).join("containers/keep/upper");
    assert_eq!(fs::read(upper.join("etc/new")).unwrap(), b"data\n");
    // Running in it again sees what it holds.
    let (code, out, err) = fx.run(&["run", "--name", "keep", "app:v1", "cat", "/etc/new"]);
    assert_eq!((code, out.as_str()), (0, "data\n"), "{err}");
    // A fresh container without --rm stays too, and its name is said.
    let (code, _, err) = fx.run(&["run", "app:v1", "sh", "-c", ":"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("rm-container c-"), "{err}");
    assert_eq!(fx.containers().len(), 2);
}

/// Ctrl-C in a pull: "interrupted", exit 130, and none of its temp files are left in the store.
#[test]
fn an_interrupted_pull_says_so_and_leaves_no_temp_files() {
    let fx = Fx::new();
    let src = fx.root.join("big");
    fs::create_dir(&src).unwrap();
    for i in 0..2u64 {
        fs::write(src.join(format!("f{i}")), common::tree::noise(64 << 20, i)).unwrap();
    }
    fx.ok(&["import", s(&src), "big:1"]);
    let lay = fx.root.join("lay");
    fx.ok(&["save", "-q", "--format", "oci-dir", "-o", s(&lay), "big:1"]);
    fs::remove_dir_all(&src).unwrap();

    let store2 = fx.root.join("store2");
    let mut child = std::process::Command::new(bin())
        .args(["--root", s(&store2), "pull", "-q"])
        .arg(format!("oci:{}", lay.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Temp files in the store: tmp/*, and anything in layers/ that is not a finished layer.
    let temps = |store: &Path| -> Vec<String> {
        let mut v = Vec::new();
        for d in ["tmp", "layers"] {
            for e in fs::read_dir(store.join(d)).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if d == "tmp" || !(n.ends_with(".bfc") || n.ends_with(".tar-split")) {
                    v.push(format!("{d}/{n}"));
                }
            }
        }
        v
    };
    let t0 = std::time::Instant::now();
    while temps(&store2).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it wrote a temp file"
        );
        assert!(t0.elapsed().as_secs() < 60, "no temp file after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY (test): a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(temps(&store2), Vec::<String>::new());
}

#[test]
fn rm_refuses_an_image_that_a_container_uses_unless_forced() {
    let fx = Fx::new();
    let src = fx.rootfs("src");
    fx.ok(&["import", s(&src), "app:v1"]);
    fx.ok(&["tag", "app:v1", "app:v2"]);
    fx.ok(&["run", "--name", "user1", "app:v1", "sh", "-c", ":"]);
    // One name goes, the image keeps the other: nothing is stranded.
    fx.ok(&["rm", "app:v1"]);
    let err = fx.fails(&["rm", "app:v2"]);
    assert!(
        err.contains("user1") && err.contains("app:v2") && err.contains("-f"),
        "{err}"
    );
    assert!(fx.ok(&["images"]).contains("v2"));
    fx.ok(&["rm", "-f", "app:v2"]);
    assert!(!fx.ok(&["images"]).contains("v2"));
    let err = fx.fails(&["tag", "app:v2", "app:v3"]);
    assert!(err.contains("no image"), "{err}");
}

#[test]
fn a_digest_prefix_matching_several_images_is_refused_and_lists_them() {
    let fx = Fx::new();
    fx.ok(&["images"]);
    let (a, b) = (
        format!("sha256:beef1{}", "0".repeat(59)),
        format!("sha256:beef2{}", "0".repeat(59)),
    );
    let refs = serde_json::json!({"version": 1, "images": [
        {"name": "docker.io/library/one", "tag": "1", "digest": a, "pulled": 0},
        {"name": "docker.io/library/two", "tag": "1", "digest": b, "pulled": 0},
    ]});
    let path = Path::new(&fx.store).join("refs.json");
    fs::write(&path, serde_json::to_vec(&refs).unwrap()).unwrap();
    let err = fx.fails(&["rm", "beef"]);
    assert!(
        err.contains("matches several images") && err.contains("one:1") && err.contains("two:1"),
        "{err}"
    );
    // Nothing was removed.
    let after: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(after["images"].as_array().unwrap().len(), 2);
}

#[test]
fn container_prune_and_rm_container_leave_mounted_containers_unless_forced() {
    let fx = Fx::new();
    let src = fx.rootfs("src");
    fx.ok(&["import", s(&src), "app:v1"]);
    fx.ok(&["run", "--name", "idle1", "app:v1", "sh", "-c", ":"]);
    fx.ok(&["run", "--name", "idle2", "app:v1", "sh", "-c", ":"]);
    let mnt = fx.root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    fx.ok(&["mount", "--container", "busy", "app:v1", s(&mnt)]);
    let _m = Mnt(mnt.clone());

    let err = fx.fails(&["rm-container", "busy", "idle1"]);
    assert!(
        err.contains("is mounted on") && err.contains("busy"),
        "{err}"
    );
    assert_eq!(
        fx.containers(),
        ["busy", "idle2"],
        "idle1 is removed, busy is not"
    );

    let out = fx.ok(&["container", "prune"]);
    assert_eq!(out, "idle2\n");
    assert_eq!(fx.containers(), ["busy"]);
    assert!(is_mounted(&mnt));

    fx.ok(&["rm-container", "-f", "busy"]);
    assert!(!is_mounted(&mnt));
    assert!(fx.containers().is_empty());
}

#[test]
fn completion_scripts_load_and_man_pages_render() {
    let script = format!(
        "source <('{}' completion bash) && complete -p bfcfs",
        bin().display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("-F _bfcfs bfcfs"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish"] {
        let (code, out, err) = bfcfs(&["completion", shell]);
        assert!(
            code == 0 && out.contains("import") && out.contains("rm-container"),
            "{shell}: {err}"
        );
    }
    let fx = Fx::new();
    let dir = fx.root.join("man");
    fx.ok(&["generate-man", s(&dir)]);
    for (page, wants) in [
        ("bfcfs.1", "Mount container images"),
        ("bfcfs-run.1", "Remove the container when the command exits"),
        ("bfcfs-container-prune.1", "not mounted"),
    ] {
        let out = std::process::Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(dir.join(page))
            .env("MANWIDTH", "200")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(wants),
            "man -l {page}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Changes made through a container's mount: a new file with an xattr, a removed lower file, a
/// lower directory replaced by a new one (opaque), a hardlink and a changed mode.
fn change_through_a_mount(fx: &Fx, container: &str, image: &str) {
    let mnt = fx.root.join(format!("mnt-{container}"));
    fs::create_dir_all(&mnt).unwrap();
    fx.ok(&["mount", "--container", container, image, s(&mnt)]);
    let m = Mnt(mnt.clone());
    fs::write(mnt.join("etc/new"), b"added by the container\n").unwrap();
    set_xattr(&mnt.join("etc/new"), "user.note", b"kept");
    fs::remove_file(mnt.join("etc/hello")).unwrap();
    fs::remove_dir_all(mnt.join("srv/deep")).unwrap();
    fs::create_dir(mnt.join("srv/deep")).unwrap();
    fs::write(mnt.join("srv/deep/only"), b"only this\n").unwrap();
    fs::hard_link(mnt.join("etc/new"), mnt.join("srv/new-link")).unwrap();
    fs::set_permissions(mnt.join("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    fx.ok(&["umount", s(&m.0)]);
}

#[test]
fn commit_makes_the_containers_changes_a_layer_that_mounts_and_runs() {
    let fx = Fx::new();
    let src = fx.rootfs("src");
    fx.ok(&["import", "--change", "ENV A=1", s(&src), "app:v1"]);
    change_through_a_mount(&fx, "work", "app:v1");

    // A mounted container cannot be committed: its upper dir is changing.
    let busy = fx.root.join("busy");
    fs::create_dir(&busy).unwrap();
    fx.ok(&["mount", "--container", "work", "app:v1", s(&busy)]);
    let m = Mnt(busy.clone());
    let err = fx.fails(&["commit", "work", "app:v2"]);
    assert!(err.contains("is mounted on"), "{err}");
    fx.ok(&["umount", s(&m.0)]);

    let out = fx.ok(&[
        "commit",
        "-m",
        "the change",
        "--change",
        "CMD [\"/bin/cat\", \"/etc/new\"]",
        "work",
        "app:v2",
    ]);
    assert!(out.starts_with("docker.io/library/app:v2 sha256:"), "{out}");

    // The new image shows what the container shows, and the lower file stays deleted.
    let (a, b) = (fx.root.join("a"), fx.root.join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    fx.ok(&["mount", "--ro", "--container", "work", "app:v1", s(&a)]);
    let ma = Mnt(a.clone());
    fx.ok(&["mount", "--ro", "app:v2", s(&b)]);
    let mb = Mnt(b.clone());
    assert_eq!(tree(&b), tree(&a));
    assert!(!b.join("etc/hello").exists());
    assert!(
        !b.join("srv/deep/er").exists(),
        "the opaque dir shows lower entries"
    );
    assert_eq!(fs::read(b.join("srv/deep/only")).unwrap(), b"only this\n");
    assert_eq!(
        fs::read(b.join("etc/new")).unwrap(),
        b"added by the container\n"
    );
    assert_eq!(
        fs::metadata(b.join("etc/new")).unwrap().ino(),
        fs::metadata(b.join("srv/new-link")).unwrap().ino()
    );
    let x = xattrs(&b.join("etc/new"));
    assert_eq!(
        x.get(&b"user.note"[..]).map(Vec::as_slice),
        Some(&b"kept"[..])
    );
    assert!(
        xattrs(&b.join("srv/deep"))
            .keys()
            .all(|k| !k.starts_with(b"trusted.overlay.")),
        "overlayfs xattrs leaked into the layer"
    );
    // No whiteout or opaque marker shows.
    let etc: Vec<_> = fs::read_dir(b.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(etc.iter().all(|n| !n.starts_with(".wh.")), "{etc:?}");
    fx.ok(&["umount", s(&ma.0)]);
    fx.ok(&["umount", s(&mb.0)]);

    // The config: one more diff_id, the history entry with the message, the change, the
    // image's own settings kept.
    let v: serde_json::Value =
        serde_json::from_str(&fx.ok(&["inspect", "--json", "app:v2"])).unwrap();
    let v1: serde_json::Value =
        serde_json::from_str(&fx.ok(&["inspect", "--json", "app:v1"])).unwrap();
    let ids = v["config"]["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], v1["config"]["rootfs"]["diff_ids"][0]);
    assert_eq!(v["layers"][1]["diff_id"], ids[1]);
    let history = v["config"]["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["comment"], "the change");
    assert!(history.last().unwrap()["created_by"]
        .as_str()
        .unwrap()
        .contains("bfcfs commit work"));
    assert_eq!(v["config"]["config"]["Env"], serde_json::json!(["A=1"]));

    // It runs, and its command reads the committed file.
    let (code, out, err) = fx.run(&["run", "--rm", "app:v2"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "added by the container\n"),
        "{err}"
    );

    // A commit of the committed image's container stacks a third layer.
    let (code, _, err) = fx.run(&[
        "run",
        "--name",
        "third",
        "app:v2",
        "sh",
        "-c",
        "echo 3 > /three",
    ]);
    assert_eq!(code, 0, "{err}");
    fx.ok(&["commit", "third", "app:v3"]);
    let (code, out, err) = fx.run(&["run", "--rm", "app:v3", "cat", "/three", "/etc/new"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "3\nadded by the container\n"),
        "{err}"
    );

    let err = fx.fails(&["commit", "nosuch", "app:v4"]);
    assert!(err.contains("no container"), "{err}");
    let err = fx.fails(&["commit", "--change", "RUN x", "third", "app:v4"]);
    assert!(err.contains("unsupported instruction"), "{err}");
}

#[test]
fn a_pushed_committed_image_unpacks_with_umoci_to_the_tree_it_mounts_as() {
    let reg = pull_support::harness::Registry::start(pull_support::harness::Auth::None);
    let fx = Fx::new();
    let src = fx.rootfs("src");
    fx.ok(&["import", s(&src), "app:v1"]);
    change_through_a_mount(&fx, "work", "app:v1");
    fx.ok(&["commit", "-m", "changes", "work", "app:v2"]);
    let dest = format!("{}/team/app:v2", reg.host());
    fx.ok(&["push", "-q", "app:v2", &dest]);

    let rootfs = unpack_with_umoci(&dest, &fx.root);

    let mnt = fx.root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    fx.ok(&["mount", "--ro", "app:v2", s(&mnt)]);
    let m = Mnt(mnt.clone());
    let mut mounted = tree(&mnt);
    fx.ok(&["umount", s(&m.0)]);
    let unpacked = tree(&rootfs);
    // The one known difference: srv/hello-link's lower hardlink partner etc/hello is whited out
    // above it. A union (bfcfs, like kernel overlayfs) reports the lower file's link count (2);
    // an extraction counts the names that remain (1).
    let link = mounted.get_mut("srv/hello-link").unwrap();
    assert!(link.ends_with("nlink 2"), "{link}");
    *link = link.replace("nlink 2", "nlink 1");
    assert!(!unpacked.contains_key("etc/hello"), "the whiteout was lost");
    assert!(unpacked.contains_key("srv/deep/only") && !unpacked.contains_key("srv/deep/er"));
    assert_eq!(mounted, unpacked);
}
