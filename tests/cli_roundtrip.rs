//! `bfcfs create` → `list` / `extract` / `verify` → compare, through the real binary, over a tree
//! holding every entry kind, in every compression and encryption mode; plus 10,000 files, a
//! file over 4 GiB, selective extraction and the JSON views.
mod common;
use common::cli::run_in;
use common::tree::*;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

const PASSWORD: &str = "correct horse battery staple";

/// Secrets for the encrypted modes, written into the test's directory.
fn write_secrets(dir: &Path) {
    fs::write(dir.join("password.txt"), format!("{PASSWORD}\n")).unwrap();
    fs::write(dir.join("key.bin"), noise(32, 99)).unwrap();
}

/// Builds the full tree under `<tmp>/src`, runs `create FLAGS out.bfc tree` from there,
/// `verify --deep`, `extract -C dst` and compares the trees. Returns the temp dir and the
/// `list --json` output. `key` holds the read-side key options (paths relative to the temp dir).
fn round_trip(create: &[&str], key: &[&str]) -> (tempfile::TempDir, Vec<serde_json::Value>) {
    let t = tempfile::tempdir().unwrap();
    write_secrets(t.path());
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let tree = build_full_tree(&src);
    let mut args = vec!["create"];
    args.extend_from_slice(create);
    args.extend_from_slice(&["../out.bfc", "tree"]);
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("@KEY", "../key.bin")
                .replace("@PWFILE", "../password.txt")
        })
        .collect();
    run_in(&src, &args).ok();
    let key: Vec<String> = key
        .iter()
        .map(|a| {
            a.replace("@KEY", "key.bin")
                .replace("@PWFILE", "password.txt")
        })
        .collect();
    let with_key = |cmd: &[&str], tail: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend(key.iter().cloned());
        v.extend(tail.iter().map(|s| s.to_string()));
        v
    };
    let v = run_in(t.path(), &with_key(&["verify", "--deep"], &["out.bfc"])).ok();
    assert!(v.stdout.contains("OK"), "{}", v.stdout);
    run_in(t.path(), &with_key(&["extract", "-C", "dst"], &["out.bfc"])).ok();
    assert_same_tree(&tree, &t.path().join("dst/tree"));
    let list = run_in(t.path(), &["list", "--json", "out.bfc"]).ok().json();
    let list = list.as_array().expect("list --json is an array").clone();
    assert_list_matches_tree(&list, &tree);
    (t, list)
}

/// Every entry of `list --json` describes the source entry of the same path exactly.
fn assert_list_matches_tree(list: &[serde_json::Value], tree: &Path) {
    let mut rels = vec![PathBuf::new()];
    walk(tree, Path::new(""), &mut rels);
    let want: HashSet<String> = rels
        .iter()
        .map(|r| {
            let p = Path::new("tree").join(r);
            p.to_str().unwrap().trim_end_matches('/').to_string()
        })
        .collect();
    let got: HashSet<String> = list
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "list --json paths");
    for e in list {
        let path = e["path"].as_str().unwrap();
        let p = tree.parent().unwrap().join(path);
        let md = fs::symlink_metadata(&p).unwrap();
        let ctx = format!("list --json entry {path:?}: {e}");
        assert_eq!(
            e["mode"].as_u64().unwrap(),
            u64::from(md.mode() & 0o7777),
            "{ctx}"
        );
        assert_eq!(e["uid"].as_u64().unwrap(), u64::from(md.uid()), "{ctx}");
        assert_eq!(e["gid"].as_u64().unwrap(), u64::from(md.gid()), "{ctx}");
        assert_eq!(
            e["mtime_ns"].as_i64().unwrap(),
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            "{ctx}"
        );
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let ty = e["type"].as_str().unwrap();
        match ty {
            "file" => {
                assert!(ft.is_file(), "{ctx}");
                assert_eq!(e["size"].as_u64().unwrap(), md.len(), "{ctx}");
                if md.nlink() > 1 {
                    assert_eq!(e["nlink"].as_u64().unwrap(), md.nlink(), "{ctx}");
                }
            }
            "dir" => assert!(ft.is_dir(), "{ctx}"),
            "symlink" => {
                assert!(ft.is_symlink(), "{ctx}");
                let t = fs::read_link(&p).unwrap();
                assert_eq!(e["target"].as_str().unwrap(), t.to_str().unwrap(), "{ctx}");
            }
            "fifo" => assert!(ft.is_fifo(), "{ctx}"),
            "chardev" | "blockdev" => {
                assert!(ft.is_char_device() == (ty == "chardev"), "{ctx}");
                let rdev = md.rdev();
                assert_eq!(
                    e["rdev"],
                    serde_json::json!([libc::major(rdev), libc::minor(rdev)]),
                    "{ctx}"
                );
            }
            other => panic!("unexpected type {other}: {ctx}"),
        }
        let names: Vec<String> = xattrs(&p)
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let listed: Vec<String> = e
            .get("xattrs")
            .and_then(|x| x.as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(listed, names, "{ctx}");
    }
}

fn entry<'a>(list: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} not listed"))
}

fn files(list: &[serde_json::Value]) -> impl Iterator<Item = &serde_json::Value> {
    list.iter().filter(|e| e["type"] == "file")
}

#[test]
fn every_entry_kind_round_trips_uncompressed() {
    let (_t, list) = round_trip(&["-c", "none"], &[]);
    for e in files(&list) {
        assert_eq!(e["compression"], "none", "{e}");
        assert_eq!(e["encrypted"], false, "{e}");
    }
}

#[test]
fn every_entry_kind_round_trips_with_zstd() {
    let (_t, list) = round_trip(&["-c", "zstd"], &[]);
    for p in ["tree/files/text", "tree/files/over-128k", "tree/files/big"] {
        assert_eq!(entry(&list, p)["compression"], "zstd", "{p}");
    }
    // Files of one chunk under 64 bytes or not shrinking are stored raw, as upstream does.
    for p in ["tree/files/one", "tree/files/exact-128k"] {
        assert_eq!(entry(&list, p)["compression"], "none", "{p}");
    }
}

#[test]
fn every_entry_kind_round_trips_with_auto_compression() {
    let (_t, list) = round_trip(&["-c", "auto"], &[]);
    assert_eq!(entry(&list, "tree/files/text")["compression"], "zstd");
    // Below the 4096-byte threshold of auto, and incompressible noise, stay raw.
    for p in ["tree/hard/a", "tree/files/noise"] {
        assert_eq!(entry(&list, p)["compression"], "none", "{p}");
    }
}

#[test]
fn every_entry_kind_round_trips_with_zstd_level_19() {
    let (t, list) = round_trip(&["-c", "zstd", "-l", "19"], &[]);
    assert_eq!(entry(&list, "tree/files/text")["compression"], "zstd");
    // The 1 MiB text file compresses well at level 19.
    let info = run_in(t.path(), &["info", "--json", "out.bfc", "tree/files/text"])
        .ok()
        .json();
    assert!(info["object_size"].as_u64().unwrap() < 200 << 10, "{info}");
}

fn assert_all_files_encrypted(list: &[serde_json::Value]) {
    for e in files(list) {
        assert_eq!(e["encrypted"], true, "{e}");
    }
}

#[test]
fn every_entry_kind_round_trips_encrypted_with_a_password() {
    let (t, list) = round_trip(&["-e", PASSWORD], &["-p", PASSWORD]);
    assert_all_files_encrypted(&list);
    // The other password option reads it too.
    run_in(
        t.path(),
        &[
            "extract",
            "-C",
            "dst2",
            "--password-file",
            "password.txt",
            "out.bfc",
        ],
    )
    .ok();
    assert_same_tree(&t.path().join("src/tree"), &t.path().join("dst2/tree"));
}

#[test]
fn every_entry_kind_round_trips_encrypted_with_a_password_file() {
    let (_t, list) = round_trip(
        &["--password-file", "@PWFILE"],
        &["--password-file", "@PWFILE"],
    );
    assert_all_files_encrypted(&list);
}

#[test]
fn every_entry_kind_round_trips_encrypted_with_a_keyfile() {
    let (_t, list) = round_trip(&["-k", "@KEY"], &["-K", "@KEY"]);
    assert_all_files_encrypted(&list);
}

#[test]
fn every_entry_kind_round_trips_compressed_and_encrypted_with_a_keyfile() {
    let (_t, list) = round_trip(&["-c", "zstd", "-k", "@KEY"], &["-K", "@KEY"]);
    assert_all_files_encrypted(&list);
    assert_eq!(entry(&list, "tree/files/text")["compression"], "zstd");
}

#[test]
fn list_json_and_info_json_agree() {
    let t = tempfile::tempdir().unwrap();
    let tree = build_full_tree(t.path());
    run_in(t.path(), &["create", "-c", "zstd", "out.bfc", "tree"]).ok();
    let list = run_in(t.path(), &["list", "--json", "out.bfc"]).ok().json();
    let list = list.as_array().unwrap();
    let info = run_in(t.path(), &["info", "--json", "out.bfc"]).ok().json();
    assert_eq!(
        info["entries"].as_u64().unwrap(),
        list.len() as u64,
        "{info}"
    );
    assert_eq!(
        info["size"].as_u64().unwrap(),
        fs::metadata(t.path().join("out.bfc")).unwrap().len()
    );
    let mut kinds = BTreeMap::<String, u64>::new();
    for e in list {
        *kinds.entry(e["type"].as_str().unwrap().into()).or_default() += 1;
    }
    let info_kinds: BTreeMap<String, u64> = info["kinds"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(info_kinds, kinds);
    // Content bytes count each hardlinked file once.
    let mut seen = HashSet::new();
    let mut content = 0;
    let mut rels = Vec::new();
    walk(&tree, Path::new(""), &mut rels);
    for r in rels {
        let md = fs::symlink_metadata(tree.join(r)).unwrap();
        if md.is_file() && seen.insert(md.ino()) {
            content += md.len();
        }
    }
    assert_eq!(info["content_bytes"].as_u64().unwrap(), content, "{info}");
    assert_eq!(info["encrypted"], false);
    assert_eq!(info["bfcfs_extension"], true);
    // The per-entry view says what the listing says, plus where the object is.
    for path in [
        "tree/files/big",
        "tree/links/rel",
        "tree/special/loop",
        "tree/hard/b",
    ] {
        let one = run_in(t.path(), &["info", "--json", "out.bfc", path])
            .ok()
            .json();
        let listed = entry(list, path);
        for k in [
            "path",
            "type",
            "mode",
            "size",
            "mtime_ns",
            "uid",
            "gid",
            "compression",
        ] {
            assert_eq!(one[k], listed[k], "{path}: {k}");
        }
        assert!(one["object_offset"].as_u64().unwrap() >= 4096, "{one}");
        assert!(one["object_size"].as_u64().unwrap() >= 40, "{one}");
    }
    let big = run_in(t.path(), &["info", "--json", "out.bfc", "tree/files/big"])
        .ok()
        .json();
    assert_eq!(big["chunked"], true, "{big}");
    let r = run_in(t.path(), &["info", "--json", "out.bfc", "tree/nope"]);
    r.fails_with(2).stderr_has(&["tree/nope"]);
}

#[test]
fn ten_thousand_files_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let mut b = Builder::new(&t.path().join("many"));
    for d in 0..100 {
        b.dir(format!("d{d:03}"), 0o755);
        for f in 0..101 {
            let body = format!("file {f} in dir {d}\n").repeat(f % 7);
            b.file(format!("d{d:03}/f{f:03}"), 0o644, body.as_bytes());
        }
    }
    b.finish();
    run_in(t.path(), &["create", "-c", "zstd", "many.bfc", "many"]).ok();
    let list = run_in(t.path(), &["list", "many.bfc"]).ok();
    assert_eq!(list.stdout.lines().count(), 1 + 100 + 100 * 101);
    run_in(t.path(), &["verify", "--deep", "many.bfc"]).ok();
    run_in(t.path(), &["extract", "-C", "out", "many.bfc"]).ok();
    assert_same_tree(&t.path().join("many"), &t.path().join("out/many"));
}

#[test]
fn extract_of_selected_paths_writes_only_those() {
    let t = tempfile::tempdir().unwrap();
    let tree = build_full_tree(t.path());
    run_in(t.path(), &["create", "out.bfc", "tree"]).ok();
    run_in(
        t.path(),
        &[
            "extract",
            "-C",
            "sel",
            "out.bfc",
            "tree/files/one",
            "tree/deep/",
            "tree/links/rel",
        ],
    )
    .ok();
    let sel = t.path().join("sel/tree");
    let mut got = Vec::new();
    walk(&sel, Path::new(""), &mut got);
    let got: HashSet<String> = got
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let mut want: HashSet<String> = ["files", "files/one", "links", "links/rel"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut deep = vec![PathBuf::from("deep")];
    walk(&tree, Path::new("deep"), &mut deep);
    want.extend(deep.iter().map(|p| p.to_str().unwrap().to_string()));
    assert_eq!(got, want);
    assert_same_tree(&tree.join("deep"), &sel.join("deep"));
    assert_eq!(fs::read(sel.join("files/one")).unwrap(), b"x");
    assert_eq!(
        fs::read(sel.join("files/one")).unwrap(),
        fs::read(tree.join("files/one")).unwrap()
    );
    // A path that is not in the container is a usage error, and nothing is written.
    let r = run_in(
        t.path(),
        &["extract", "-C", "none", "out.bfc", "tree/absent"],
    );
    r.fails_with(2).stderr_has(&["tree/absent"]);
    assert!(snapshot(&t.path().join("none")).is_empty());
}

#[test]
fn verify_deep_of_an_encrypted_container_needs_its_key() {
    let t = tempfile::tempdir().unwrap();
    write_secrets(t.path());
    let mut b = Builder::new(&t.path().join("tree"));
    b.file("a", 0o644, &text(300 << 10, 1));
    b.file("b", 0o644, b"small");
    b.finish();
    run_in(
        t.path(),
        &["create", "-c", "zstd", "-k", "key.bin", "k.bfc", "tree"],
    )
    .ok();
    run_in(t.path(), &["create", "-e", PASSWORD, "p.bfc", "tree"]).ok();
    for (file, right) in [("k.bfc", ["-K", "key.bin"]), ("p.bfc", ["-p", PASSWORD])] {
        // Structure needs no key; content does.
        run_in(t.path(), &["verify", file]).ok();
        run_in(t.path(), &["verify", "--deep", file])
            .fails_with(2)
            .stderr_has(&[file, "encrypted"]);
        run_in(t.path(), &["verify", "--deep", right[0], right[1], file]).ok();
        fs::write(t.path().join("wrong.bin"), [7u8; 32]).unwrap();
        for wrong in [["-K", "wrong.bin"], ["-p", "not the password"]] {
            run_in(t.path(), &["verify", "--deep", wrong[0], wrong[1], file])
                .fails_with(2)
                .stderr_has(&[file, "wrong key"]);
            run_in(t.path(), &["extract", "-C", "x", wrong[0], wrong[1], file])
                .fails_with(2)
                .stderr_has(&["wrong key"]);
        }
        run_in(t.path(), &["extract", "-C", "x", file])
            .fails_with(2)
            .stderr_has(&["encrypted"]);
        assert!(snapshot(&t.path().join("x")).is_empty());
    }
}

/// Peak RSS in KiB of a finished child, from wait4(2); also its exit status.
fn wait_rusage(child: std::process::Child) -> (i32, i64) {
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both out-pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status),
        "bfcfs create died: status {status:#x}"
    );
    (libc::WEXITSTATUS(status), ru.ru_maxrss)
}

const HUGE: u64 = 4608 << 20; // 4.5 GiB

/// (offset, length) of real data in the sparse 4.5 GiB input: at the start, past 1 GiB at an odd
/// offset, across the 4 GiB boundary, and up to the last byte.
fn huge_regions() -> [(u64, usize); 4] {
    [
        (0, 1 << 20),
        ((1 << 30) + 12_345, 1 << 20),
        ((4 << 30) - (700 << 10), 2 << 20),
        (HUGE - (1 << 20) - 3, (1 << 20) + 3),
    ]
}

fn make_huge_sparse(path: &Path) {
    let f = fs::File::create(path).unwrap();
    f.set_len(HUGE).unwrap();
    for (k, (off, len)) in huge_regions().into_iter().enumerate() {
        f.write_all_at(&noise(len, k as u64 + 10), off).unwrap();
    }
    // Make sure the input really is sparse, so the test stays small on disk.
    assert!(fs::metadata(path).unwrap().blocks() * 512 < 64 << 20);
}

#[test]
fn file_over_4_gib_round_trips_through_zstd_with_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    make_huge_sparse(&t.path().join("huge.bin"));
    let child = std::process::Command::new(common::bin())
        .current_dir(t.path())
        .args(["create", "-c", "zstd", "huge.bfc", "huge.bin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (code, maxrss_kib) = wait_rusage(child);
    assert_eq!(code, 0, "bfcfs create -c zstd of a 4.5 GiB file failed");
    // Bounded memory: far below the 4.5 GiB input.
    assert!(
        maxrss_kib < 200 << 10,
        "bfcfs create used {maxrss_kib} KiB of RAM for a 4.5 GiB file"
    );
    let bfc = t.path().join("huge.bfc");
    let clen = fs::metadata(&bfc).unwrap().len();
    assert!(clen < 32 << 20, "container of mostly zeros is {clen} bytes");

    // Content at the data regions, at their edges and in the holes, read with the library.
    let c = bfcfs::bfc::Container::open(&bfc).unwrap();
    let i = c.find(b"huge.bin").expect("huge.bin in the container");
    assert_eq!(c.entry(i).unwrap().size, HUGE);
    assert!(c.entry(i).unwrap().is_chunked());
    for (k, (off, len)) in huge_regions().into_iter().enumerate() {
        let want = noise(len, k as u64 + 10);
        let mut got = vec![0u8; len];
        assert_eq!(c.read_at(i, off, &mut got).unwrap(), len);
        assert!(got == want, "region {k} at {off} differs");
        if off > 0 {
            // 100 bytes of hole, then the start of the data.
            let mut edge = vec![1u8; 200];
            assert_eq!(c.read_at(i, off - 100, &mut edge).unwrap(), 200);
            assert!(
                edge[..100].iter().all(|b| *b == 0),
                "hole before region {k}"
            );
            assert_eq!(&edge[100..], &want[..100], "edge of region {k}");
        }
    }
    let mut hole = vec![1u8; 1 << 20];
    assert_eq!(c.read_at(i, 3 << 30, &mut hole).unwrap(), 1 << 20);
    assert!(hole.iter().all(|b| *b == 0), "hole at 3 GiB");
    let mut past = [0u8; 10];
    assert_eq!(c.read_at(i, HUGE, &mut past).unwrap(), 0);
    let mut last = [0u8; 10];
    assert_eq!(c.read_at(i, HUGE - 4, &mut last).unwrap(), 4);

    run_in(t.path(), &["verify", "--deep", "huge.bfc"]).ok();
    let list = run_in(t.path(), &["list", "--json", "huge.bfc"])
        .ok()
        .json();
    assert_eq!(list[0]["size"].as_u64(), Some(HUGE));
}

/// Extract turns whole blocks of zeros into holes, so the 4.5 GiB file comes out sparse.
#[test]
fn file_over_4_gib_extracts_with_identical_content() {
    let t = tempfile::tempdir().unwrap();
    make_huge_sparse(&t.path().join("huge.bin"));
    run_in(t.path(), &["create", "-c", "zstd", "huge.bfc", "huge.bin"]).ok();
    let started = std::time::Instant::now();
    run_in(t.path(), &["extract", "-C", "out", "huge.bfc"]).ok();
    eprintln!("extract of 4.5 GiB took {:?}", started.elapsed());
    let out = fs::File::open(t.path().join("out/huge.bin")).unwrap();
    assert_eq!(out.metadata().unwrap().len(), HUGE);
    let on_disk = std::os::unix::fs::MetadataExt::blocks(&out.metadata().unwrap()) * 512;
    assert!(
        on_disk < 64 << 20,
        "extracted file should stay sparse: {on_disk} bytes on disk"
    );
    for (k, (off, len)) in huge_regions().into_iter().enumerate() {
        let mut got = vec![0u8; len + 200];
        let start = off.saturating_sub(100);
        let n = out.read_at(&mut got, start).unwrap();
        let lead = (off - start) as usize;
        assert!(
            got[..lead].iter().all(|b| *b == 0),
            "hole before region {k}"
        );
        assert!(
            got[lead..lead + len] == noise(len, k as u64 + 10)[..],
            "region {k}"
        );
        assert!(
            got[lead + len..n].iter().all(|b| *b == 0),
            "hole after region {k}"
        );
    }
}

/// A command whose reader goes away (`bfcfs info --json x.bfc | head -c1` and the like) ends as
/// `ls` does — killed by SIGPIPE, silently — and never panics on EPIPE.
#[test]
fn output_commands_end_quietly_when_the_reader_is_gone() {
    use std::os::unix::process::ExitStatusExt;
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("d")).unwrap();
    fs::write(t.path().join("d/f"), b"x").unwrap();
    run_in(t.path(), &["create", "x.bfc", "d"]).ok();
    for args in [
        &["info", "--json", "x.bfc"][..],
        &["list", "-l", "x.bfc"],
        &["completion", "bash"],
    ] {
        // A pipe whose read end is closed before the command starts: its first write fails.
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let out = std::process::Command::new(common::bin())
            .current_dir(t.path())
            .args(args)
            .stdout(w)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.code() == Some(0),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}
