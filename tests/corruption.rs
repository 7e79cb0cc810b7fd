//! Damaged containers — truncated, with flipped bytes, with lying sizes, offsets and counts, or
//! opened with the wrong key — give a clear error that names the file and the damaged region
//! or entry, and exit code 1 or 2 from the CLI; never a panic, never wrong content.
//!
//! Every test builds its own containers: three written by `bfcfs create` (plain, zstd with
//! chunked files, zstd + keyfile encryption) and copies of four upstream fixtures.
mod common;
use bfcfs::bfc::{Container, Error, Key, Kind};
use common::cli::run_in;
use common::raw::*;
use common::tree::*;
use std::fs;
use std::path::Path;

/// One container under test, in the test's directory.
struct Sample {
    /// File name inside the directory (what messages must name).
    name: &'static str,
    key: Option<Key>,
    /// Key options for the CLI.
    cli_key: &'static [&'static str],
    /// A regular file of a few chunks whose content the tests damage.
    victim: &'static str,
    /// True for containers written by bfcfs (with the extension).
    ext: bool,
}

const BFCFS_KEY: [u8; 32] = [0x42; 32];

/// Writes the three bfcfs containers and copies four upstream fixtures into `dir`.
fn samples(dir: &Path) -> Vec<Sample> {
    let mut b = Builder::new(&dir.join("tree"));
    let a = b.file("a.txt", 0o644, &text(100, 1));
    set_xattr(&a, "user.note", b"hello");
    b.file("chunked.txt", 0o644, &text(400 << 10, 2));
    b.file("noise.bin", 0o600, &noise(200 << 10, 3));
    b.file("empty", 0o644, b"");
    b.symlink("link", "a.txt");
    b.hardlink("hard", "a.txt");
    b.dir("sub", 0o755);
    b.special(
        "sub/null",
        rustix::fs::FileType::CharacterDevice,
        0o666,
        (1, 3),
    );
    b.file("sub/z.txt", 0o644, &text(5000, 4));
    b.finish();
    fs::write(dir.join("key.bin"), BFCFS_KEY).unwrap();
    run_in(dir, &["create", "-c", "none", "plain.bfc", "tree"]).ok();
    run_in(dir, &["create", "-c", "zstd", "zstd.bfc", "tree"]).ok();
    run_in(
        dir,
        &["create", "-c", "zstd", "-k", "key.bin", "enc.bfc", "tree"],
    )
    .ok();
    for f in [
        "plain.bfc",
        "zstd.bfc",
        "enc-keyfile.bfc",
        "zstd-enc-keyfile.bfc",
        "keyfile.bin",
    ] {
        let to = dir.join(format!("up-{f}"));
        fs::copy(common::fixtures().join(f), &to).unwrap();
        chmod(&to, 0o644);
    }
    let up_key = || Some(Key::from_keyfile(&common::fixtures().join("keyfile.bin")).unwrap());
    vec![
        Sample {
            name: "plain.bfc",
            key: None,
            cli_key: &[],
            victim: "tree/chunked.txt",
            ext: true,
        },
        Sample {
            name: "zstd.bfc",
            key: None,
            cli_key: &[],
            victim: "tree/chunked.txt",
            ext: true,
        },
        Sample {
            name: "enc.bfc",
            key: Some(Key::Raw(BFCFS_KEY)),
            cli_key: &["-K", "key.bin"],
            victim: "tree/chunked.txt",
            ext: true,
        },
        Sample {
            name: "up-plain.bfc",
            key: None,
            cli_key: &[],
            victim: "tree/bin/tool",
            ext: false,
        },
        Sample {
            name: "up-zstd.bfc",
            key: None,
            cli_key: &[],
            victim: "tree/bin/tool",
            ext: false,
        },
        Sample {
            name: "up-enc-keyfile.bfc",
            key: up_key(),
            cli_key: &["-K", "up-keyfile.bin"],
            victim: "tree/bin/tool",
            ext: false,
        },
        Sample {
            name: "up-zstd-enc-keyfile.bfc",
            key: up_key(),
            cli_key: &["-K", "up-keyfile.bin"],
            victim: "tree/bin/tool",
            ext: false,
        },
    ]
}

/// Content of every file and symlink, read through the library.
type Contents = Vec<(Vec<u8>, Vec<u8>)>;

/// Opens `bytes` under `name`, sets the key and reads every file and symlink target in full.
fn read_all(name: &str, bytes: Vec<u8>, key: Option<&Key>) -> Result<Contents, Error> {
    let mut c = Container::from_bytes(name, bytes)?;
    if let Some(k) = key {
        c.set_key(k)?;
    }
    let mut out = Vec::new();
    for i in 0..c.len() {
        // Entries are decoded and checked when reached: damage to one shows here.
        let e = c.entry(i)?;
        match e.kind {
            Kind::File => {
                let mut v = Vec::new();
                c.open_reader(i)?.copy_to(&mut v)?;
                c.verify_entry(i)?;
                out.push((e.path.clone(), v));
            }
            Kind::Symlink => out.push((e.path.clone(), c.symlink_target(i)?.to_vec())),
            _ => {}
        }
    }
    Ok(out)
}

/// The library rejects `bytes`: the error names the file and every one of `needles`, and
/// satisfies `kind`. Returns the error for further checks.
#[track_caller]
fn lib_rejects(
    s: &Sample,
    bytes: &[u8],
    kind: fn(&Error) -> bool,
    needles: &[&str],
    case: &str,
) -> Error {
    let err = match read_all(s.name, bytes.to_vec(), s.key.as_ref()) {
        Ok(_) => panic!("{}: {case}: accepted", s.name),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(kind(&err), "{}: {case}: unexpected error {err:?}", s.name);
    assert!(
        msg.contains(s.name),
        "{}: {case}: message does not name the file: {msg}",
        s.name
    );
    for n in needles {
        assert!(
            msg.contains(n),
            "{}: {case}: message does not mention {n:?}: {msg}",
            s.name
        );
    }
    assert!(matches!(err.exit_code(), 1 | 2));
    err
}

/// The CLI rejects `bytes` (written to `dir/bad-<name>`): `verify --deep` and `extract` both
/// fail cleanly with exit 1 or 2 and a message naming the file and each of `needles`.
#[track_caller]
fn cli_rejects(dir: &Path, s: &Sample, bytes: &[u8], needles: &[&str]) -> i32 {
    let bad = format!("bad-{}", s.name);
    fs::write(dir.join(&bad), bytes).unwrap();
    let mut verify = vec!["verify", "--deep"];
    verify.extend_from_slice(s.cli_key);
    verify.push(&bad);
    let v = run_in(dir, &verify);
    let code = v.failed_cleanly();
    v.stderr_has(&[bad.as_str()]).stderr_has(needles);
    // Extract only the victim: the other entries of a 2,000-entry fixture would be written
    // (and removed) for every case, which is slow and proves nothing more.
    let _ = fs::remove_dir_all(dir.join("x"));
    let mut extract = vec!["extract", "-C", "x"];
    extract.extend_from_slice(s.cli_key);
    extract.extend_from_slice(&[&bad, s.victim]);
    run_in(dir, &extract).failed_cleanly();
    code
}

/// Like `cli_rejects` for damage that only `verify --deep` must see: `extract` may succeed, but
/// then with exactly the content of the undamaged `dir/<name>`.
#[track_caller]
fn cli_verify_rejects(dir: &Path, s: &Sample, bytes: &[u8], needles: &[&str]) {
    let bad = format!("bad-{}", s.name);
    fs::write(dir.join(&bad), bytes).unwrap();
    let mut verify = vec!["verify", "--deep"];
    verify.extend_from_slice(s.cli_key);
    verify.push(&bad);
    run_in(dir, &verify)
        .fails_with(1)
        .stderr_has(&[bad.as_str()])
        .stderr_has(needles);
    let _ = fs::remove_dir_all(dir.join("x"));
    let mut extract = vec!["extract", "-C", "x"];
    extract.extend_from_slice(s.cli_key);
    extract.extend_from_slice(&[&bad, s.victim]);
    let r = run_in(dir, &extract);
    if r.code != Some(0) {
        r.failed_cleanly();
        return;
    }
    let good = fs::read(dir.join(s.name)).unwrap();
    let (_, content) = read_all(s.name, good, s.key.as_ref())
        .unwrap()
        .into_iter()
        .find(|(p, _)| p == s.victim.as_bytes())
        .unwrap();
    let p = dir.join("x").join(s.victim);
    assert!(
        fs::read(&p).unwrap() == content,
        "{}: wrong content",
        p.display()
    );
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x5A;
    b
}

fn is_corruption(e: &Error) -> bool {
    e.is_corruption()
}

#[test]
fn truncation_at_every_region_is_reported_never_a_panic() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let l = Layout::parse(&good);
        let len = good.len();
        // Named regions: header, first object, middle of the objects, index, extension, footer.
        let mut points = vec![
            0,
            7,
            8,
            100,
            4095,
            4096,
            4096 + 20,
            l.index_offset / 2,
            l.index_offset - 1,
            l.index_offset,
            l.index_offset + 6,
            l.entries_end - 3,
            l.entries_end + 6,
            l.footer - 1,
            l.footer,
            l.footer + 30,
            len - 1,
        ];
        // And a sweep of 200 points over the whole file.
        points.extend((0..200).map(|k| k * len / 200));
        for n in points {
            let cut = &good[..n];
            let err = lib_rejects(&s, cut, is_corruption, &[], &format!("cut at {n}"));
            let msg = err.to_string();
            if n < 4096 + 56 {
                assert!(
                    msg.contains("truncated") || msg.contains("not a BFC"),
                    "{}: cut at {n}: {msg}",
                    s.name
                );
            } else {
                assert!(msg.contains("footer"), "{}: cut at {n}: {msg}", s.name);
            }
        }
        // The CLI at the named regions only (each run starts a process).
        for n in [
            0,
            100,
            4096,
            l.index_offset / 2,
            l.index_offset + 6,
            l.footer + 30,
        ] {
            let code = cli_rejects(t.path(), &s, &good[..n], &[]);
            assert_eq!(code, 1, "{}: cut at {n}", s.name);
        }
    }
}

#[test]
fn bytes_after_the_footer_are_rejected() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let mut b = fs::read(t.path().join(s.name)).unwrap();
        b.extend_from_slice(b"trailing garbage");
        lib_rejects(&s, &b, is_corruption, &["footer"], "appended bytes");
        cli_rejects(t.path(), &s, &b, &["footer"]);
    }
}

#[test]
fn flipped_header_bytes_fail_the_magic_or_the_header_checksum() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        for at in [0, 5] {
            let b = flip(&good, at);
            lib_rejects(
                &s,
                &b,
                |e| matches!(e, Error::NotBfc { .. }),
                &["magic"],
                "magic",
            );
            cli_rejects(t.path(), &s, &b, &["not a BFC container"]);
        }
        // Checksum, block size, features, uuid, salt, reserved bytes.
        for at in [8, 11, 12, 16, 18, 30, 45, 100, 2000, 4095] {
            let b = flip(&good, at);
            lib_rejects(
                &s,
                &b,
                |e| matches!(e, Error::BadChecksum { .. }),
                &["checksum mismatch in header"],
                &format!("header byte {at}"),
            );
        }
        cli_rejects(
            t.path(),
            &s,
            &flip(&good, 16),
            &["checksum mismatch in header"],
        );
    }
}

#[test]
fn flipped_index_and_extension_bytes_fail_the_index_checksum() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let l = Layout::parse(&good);
        let mut points: Vec<usize> = (0..40)
            .map(|k| l.index_offset + k * l.index_size / 40)
            .collect();
        points.push(l.index_offset + l.index_size - 1);
        if s.ext {
            // The extension: magic, section headers and bodies.
            points.push(l.entries_end);
            for sec in &l.sections {
                points.extend([sec.len_at - 4, sec.len_at, sec.body, sec.body + sec.len - 1]);
            }
        }
        for at in points {
            let b = flip(&good, at);
            lib_rejects(
                &s,
                &b,
                |e| matches!(e, Error::BadChecksum { .. }),
                &["checksum mismatch in index"],
                &format!("index byte {at}"),
            );
        }
        cli_rejects(
            t.path(),
            &s,
            &flip(&good, l.index_offset + 9),
            &["checksum mismatch in index"],
        );
    }
}

#[test]
fn flipped_footer_bytes_name_the_footer_or_the_index() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let f = good.len() - FOOTER;
        for (range, needle) in [
            (0..8, "footer tag"),
            (8..16, "index"),
            (16..20, "checksum mismatch in index"),
            (20..28, "index"),
            (48..56, "footer end tag"),
        ] {
            for at in range {
                let b = flip(&good, f + at);
                lib_rejects(
                    &s,
                    &b,
                    is_corruption,
                    &[needle],
                    &format!("footer byte {at}"),
                );
            }
            cli_rejects(
                t.path(),
                &s,
                &flip(&good, f + range_start(needle)),
                &[needle],
            );
        }
        // The container checksum (28..32, "written, never checked" by upstream, which writes
        // zero) and the reserved bytes (32..48) carry nothing: a flip there changes no content.
        let want = read_all(s.name, good.clone(), s.key.as_ref()).unwrap();
        for at in 28..48 {
            let got = read_all(s.name, flip(&good, f + at), s.key.as_ref()).unwrap();
            assert!(got == want, "{}: footer byte {at} changed content", s.name);
        }
    }
}

/// First footer byte of the field a needle stands for (for the one CLI run per field).
fn range_start(needle: &str) -> usize {
    match needle {
        "footer tag" => 3,
        "index" => 9,
        "checksum mismatch in index" => 17,
        _ => 50,
    }
}

#[test]
fn flipped_content_byte_names_the_entry_and_spares_the_others() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let l = Layout::parse(&good);
        let victim = l.entry(s.victim);
        let payload = victim.payload_at(&good);
        let stored = u64::from_le_bytes(
            good[victim.obj_offset as usize + 28..victim.obj_offset as usize + 36]
                .try_into()
                .unwrap(),
        ) as usize;
        for at in [payload + stored / 2, payload + stored - 1, payload + 20] {
            let b = flip(&good, at);
            // The library: the victim fails, naming itself; every other entry reads.
            let mut c = Container::from_bytes(s.name, b.clone()).unwrap();
            if let Some(k) = &s.key {
                c.set_key(k)
                    .unwrap_or_else(|e| panic!("{}: key refused: {e}", s.name));
            }
            let vi = c.find(s.victim.as_bytes()).unwrap();
            let err = c.verify_entry(vi).unwrap_err();
            let msg = err.to_string();
            assert!(err.is_corruption(), "{}: {err:?}", s.name);
            assert!(msg.contains(s.name) && msg.contains(s.victim), "{msg}");
            for i in (0..c.len()).filter(|&i| i != vi) {
                c.verify_entry(i)
                    .unwrap_or_else(|e| panic!("{}: collateral damage: {e}", s.name));
            }
        }
        // The CLI: verify --deep names the entry and exits 1; extract writes every other
        // entry, exits 1 and leaves nothing (not even a temporary file) for the damaged one.
        let bad = format!("bad-{}", s.name);
        fs::write(t.path().join(&bad), flip(&good, payload + stored / 2)).unwrap();
        let mut verify = vec!["verify", "--deep"];
        verify.extend_from_slice(s.cli_key);
        verify.push(&bad);
        run_in(t.path(), &verify)
            .fails_with(1)
            .stderr_has(&[bad.as_str(), s.victim, "1 of"]);
        let out = t.path().join(format!("out-{}", s.name));
        let mut extract = vec!["extract", "-C", out.to_str().unwrap()];
        extract.extend_from_slice(s.cli_key);
        extract.push(&bad);
        run_in(t.path(), &extract)
            .fails_with(1)
            .stderr_has(&[s.victim, "1 of"]);
        assert!(
            !out.join(s.victim).exists(),
            "{}: damaged entry was extracted",
            s.name
        );
        let written = snapshot(&out);
        assert!(
            !written.iter().any(|l| l.contains(".bfcfs-extract")),
            "{}: temporary file left behind",
            s.name
        );
        // Everything else is there, with the right content.
        let want = read_all(s.name, good.clone(), s.key.as_ref()).unwrap();
        for (p, content) in want.iter().filter(|(p, _)| p != s.victim.as_bytes()) {
            let p = out.join(String::from_utf8_lossy(p).as_ref());
            let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let got = if md.file_type().is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
            } else {
                fs::read(&p).unwrap()
            };
            assert!(got == *content, "{}: wrong content", p.display());
        }
    }
}

#[test]
fn damaged_object_headers_name_the_entry() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let l = Layout::parse(&good);
        let o = l.entry(s.victim).obj_offset as usize;
        // compression byte, encryption byte, original size, stored size.
        for at in [o + 1, o + 2, o + 20, o + 27, o + 28, o + 35] {
            let b = flip(&good, at);
            lib_rejects(
                &s,
                &b,
                is_corruption,
                &[s.victim],
                &format!("object byte {}", at - o),
            );
        }
        cli_rejects(t.path(), &s, &flip(&good, o + 20), &[s.victim]);
    }
}

/// Edits one index field (the lie), recomputes the index checksum so the parser sees it.
fn lie(good: &[u8], edit: impl FnOnce(&mut Vec<u8>, &Layout)) -> Vec<u8> {
    let mut b = good.to_vec();
    let l = Layout::parse(&b);
    edit(&mut b, &l);
    fix_index_crc(&mut b);
    b
}

#[test]
fn lying_index_counts_sizes_and_offsets_are_caught_with_the_entry_named() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let l = Layout::parse(&good);
        let vi = l
            .entries
            .iter()
            .position(|r| r.path == s.victim.as_bytes())
            .unwrap();
        let v = l.entries[vi].clone();
        let k = format!("index entry {vi}");
        let io = l.index_offset as u64;
        type Edit = Box<dyn Fn(&mut Vec<u8>, &Layout)>;
        let cases: Vec<(&str, Edit, Vec<String>)> = vec![
            (
                "count u32::MAX",
                Box::new(|b, l| put_u32(b, l.index_offset + 4, u32::MAX)),
                vec!["entry count 4294967295".into()],
            ),
            (
                "count + 1",
                Box::new(|b, l| {
                    let n = l.entries.len() as u32;
                    put_u32(b, l.index_offset + 4, n + 1)
                }),
                vec![format!("index entry {}", l.entries.len())],
            ),
            (
                "index version 2",
                Box::new(|b, l| put_u32(b, l.index_offset, 2)),
                vec!["index version 2".into()],
            ),
            (
                "path length huge",
                Box::new(move |b, _| put_u32(b, v.at, 0xFFFF_FF00)),
                vec![format!("path of {k}")],
            ),
            (
                "object offset past the objects",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.obj_offset_at(), io)
                }),
                vec![k.clone(), s.victim.into(), "outside the object area".into()],
            ),
            (
                "object offset u64::MAX",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.obj_offset_at(), u64::MAX - 3)
                }),
                vec![k.clone(), s.victim.into(), "outside".into()],
            ),
            (
                "object offset inside the header",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.obj_offset_at(), 100)
                }),
                vec![k.clone(), "outside".into()],
            ),
            (
                "object size u64::MAX",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.obj_size_at(), u64::MAX)
                }),
                vec![k.clone(), "outside".into()],
            ),
            (
                "object size below an object header",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.obj_size_at(), 39)
                }),
                vec![k.clone(), "outside".into()],
            ),
            (
                "object size shorter than the payload",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.obj_size_at(), 64 + v.path.len() as u64)
                }),
                vec![s.victim.into(), "overruns its object".into()],
            ),
            (
                "object offset of another entry",
                Box::new({
                    let v = l.entries[vi].clone();
                    let other = l
                        .entries
                        .iter()
                        .find(|r| r.mode & 0o170000 == 0o100000 && r.size != v.size && r.size > 0)
                        .unwrap()
                        .clone();
                    move |b, _| {
                        put_u64(b, v.obj_offset_at(), other.obj_offset);
                        put_u64(b, v.obj_size_at(), other.obj_size);
                    }
                }),
                vec![s.victim.into(), "disagrees with its index entry".into()],
            ),
            (
                "original size + 1",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.size_at(), v.size + 1)
                }),
                vec![s.victim.into()],
            ),
            (
                "original size doubled",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u64(b, v.size_at(), v.size * 2)
                }),
                vec![s.victim.into()],
            ),
            (
                "mode without a file type",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u32(b, v.mode_at(), 0o644)
                }),
                vec![k.clone(), "no file type".into()],
            ),
            (
                "unknown compression",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u32(b, v.comp_at(), 9)
                }),
                vec!["compression 9".into(), s.victim.into()],
            ),
            (
                "unknown encryption",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u32(b, v.enc_at(), 5)
                }),
                vec!["encryption 5".into(), s.victim.into()],
            ),
            (
                "content checksum",
                Box::new({
                    let v = l.entries[vi].clone();
                    move |b, _| put_u32(b, v.crc_at(), v.crc ^ 1)
                }),
                vec![s.victim.into()],
            ),
        ];
        for (case, edit, needles) in cases {
            let b = lie(&good, edit);
            let needles: Vec<&str> = needles.iter().map(|n| n.as_str()).collect();
            lib_rejects(&s, &b, |_| true, &needles, case);
            cli_rejects(t.path(), &s, &b, &needles);
        }
        // Paths out of order or duplicated: binary search would miss entries.
        let tail = extension_bytes(&good);
        let mut dup = l.entries.clone();
        dup[2].path = dup[1].path.clone();
        let mut swapped = l.entries.clone();
        swapped.swap(1, 2);
        for (case, recs) in [("duplicate path", dup), ("paths out of order", swapped)] {
            let mut b = good.clone();
            rewrite_index(&mut b, &recs, &tail);
            let needles = ["index entry 2", "not sorted"];
            lib_rejects(&s, &b, is_corruption, &needles, case);
            cli_rejects(t.path(), &s, &b, &needles);
        }
        // Footer lies about where the index is: checked before the checksum is.
        let f = good.len() - FOOTER;
        for (case, at, value) in [
            ("index offset in the header", 20, 100u64),
            ("index offset past the end", 20, good.len() as u64),
            ("index offset u64::MAX", 20, u64::MAX),
            ("index size u64::MAX", 8, u64::MAX),
            ("index size past the footer", 8, l.index_size as u64 + 1),
        ] {
            let mut b = good.clone();
            put_u64(&mut b, f + at, value);
            lib_rejects(&s, &b, is_corruption, &["index range"], case);
            cli_rejects(t.path(), &s, &b, &["index range"]);
        }
        // An index that starts 8 bytes late (checksum recomputed over the new range).
        let mut b = good.clone();
        put_u64(&mut b, f + 20, l.index_offset as u64 + 8);
        put_u64(&mut b, f + 8, l.index_size as u64 - 8);
        fix_index_crc(&mut b);
        lib_rejects(&s, &b, |_| true, &["index"], "index shifted");
        cli_rejects(t.path(), &s, &b, &[]);
    }
}

#[test]
fn lying_extension_fields_are_caught() {
    let t = tempfile::tempdir().unwrap();
    let all = samples(t.path());
    for s in all.iter().filter(|s| s.ext) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let l = Layout::parse(&good);
        let owners = l.section(1);
        let devices = l.section(2);
        let xattrs = l.section(3);
        let hardlinks = l.section(4);
        let chunks = l.section(6 | 1 << 31);
        let n = l.entries.len() as u32;
        let dir_entry = l
            .entries
            .iter()
            .position(|r| r.path == b"tree/sub")
            .unwrap() as u32;
        let file_entry = l
            .entries
            .iter()
            .position(|r| r.path == b"tree/a.txt")
            .unwrap() as u32;
        let victim = l
            .entries
            .iter()
            .position(|r| r.path == s.victim.as_bytes())
            .unwrap();
        // Chunk table of the victim: [entry, chunk_size, count, (stored, crc)*].
        let mut ct = chunks.body + 4;
        loop {
            let e = u32::from_le_bytes(good[ct..ct + 4].try_into().unwrap());
            let cnt = u32::from_le_bytes(good[ct + 8..ct + 12].try_into().unwrap()) as usize;
            if e as usize == victim {
                break;
            }
            ct += 12 + cnt * 8;
        }
        let stored0 = u32::from_le_bytes(good[ct + 12..ct + 16].try_into().unwrap());
        type Edit = Box<dyn Fn(&mut Vec<u8>, &Layout)>;
        let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
            (
                "magic",
                Box::new(|b, l| b[l.entries_end] = b'X'),
                vec!["no BFCX extension"],
            ),
            (
                "version",
                Box::new(|b, l| put_u32(b, l.entries_end + 4, 7)),
                vec!["extension version 7"],
            ),
            (
                "section count",
                Box::new(|b, l| put_u32(b, l.entries_end + 8, 1000)),
                vec!["extension section tag"],
            ),
            (
                "section length",
                Box::new(move |b, _| put_u64(b, owners.len_at, 1 << 40)),
                vec!["claims 1099511627776 bytes"],
            ),
            (
                "owner count",
                Box::new(move |b, _| put_u32(b, owners.body, n - 1)),
                vec!["owner records"],
            ),
            (
                "owner count huge",
                Box::new(move |b, _| put_u32(b, owners.body, u32::MAX)),
                vec!["owner records do not fit"],
            ),
            (
                "device of a directory",
                Box::new(move |b, _| put_u32(b, devices.body + 4, dir_entry)),
                vec!["device numbers for tree/sub"],
            ),
            (
                "xattr entry out of range",
                Box::new(move |b, _| put_u32(b, xattrs.body + 4, n + 5)),
                vec!["out of range"],
            ),
            (
                "xattr name length",
                Box::new(move |b, _| put_u32(b, xattrs.body + 8, 0x7FFF_FFFF)),
                vec!["xattr name"],
            ),
            (
                "hardlink to a directory",
                Box::new(move |b, _| put_u32(b, hardlinks.body + 8, dir_entry)),
                vec!["hardlink", "does not name one regular file"],
            ),
            (
                "hardlink to another file",
                Box::new(move |b, _| put_u32(b, hardlinks.body + 8, victim as u32)),
                vec!["hardlink"],
            ),
            (
                "hardlink record count",
                Box::new(move |b, _| put_u32(b, hardlinks.body, 1 << 30)),
                vec!["hardlink records do not fit"],
            ),
            (
                "unknown critical section",
                Box::new(move |b, _| put_u32(b, chunks.len_at - 4, 0x8000_0063)),
                vec!["extension section 0x80000063"],
            ),
            (
                "chunk table of a non-file",
                Box::new(move |b, _| put_u32(b, ct, dir_entry)),
                vec!["chunk table of tree/sub"],
            ),
            (
                "chunk size 0",
                Box::new(move |b, _| put_u32(b, ct + 4, 0)),
                vec!["chunk size 0"],
            ),
            (
                "chunk size 1 GiB",
                Box::new(move |b, _| put_u32(b, ct + 4, 1 << 30)),
                vec!["chunk size 1073741824"],
            ),
            (
                "chunk count",
                Box::new(move |b, _| {
                    let c = u32::from_le_bytes(b[ct + 8..ct + 12].try_into().unwrap());
                    put_u32(b, ct + 8, c - 1)
                }),
                vec!["extension section chunks"],
            ),
            (
                "chunk stored size past the payload",
                Box::new(move |b, _| put_u32(b, ct + 12, stored0 + 10_000_000)),
                vec!["chunk table of", s.victim],
            ),
            (
                "chunk stored size off by one",
                Box::new(move |b, _| put_u32(b, ct + 12, stored0 - 1)),
                vec![s.victim, "chunk 0"],
            ),
            (
                "chunk checksum",
                Box::new(move |b, _| {
                    let c = u32::from_le_bytes(b[ct + 16..ct + 20].try_into().unwrap());
                    put_u32(b, ct + 16, c ^ 0x100)
                }),
                vec![s.victim, "chunk 0"],
            ),
            ("file entry used", Box::new(move |_, _| {}), vec![]),
        ];
        let _ = file_entry;
        for (case, edit, needles) in cases {
            let b = lie(&good, edit);
            if needles.is_empty() {
                // Control: the unedited container passes, so each failure above is the edit's.
                read_all(s.name, b, s.key.as_ref()).unwrap();
                continue;
            }
            lib_rejects(s, &b, |_| true, &needles, case);
            if case.starts_with("chunk checksum") || case.starts_with("chunk stored size") {
                // Content intact, table wrong: verify --deep (which checks every chunk) fails;
                // extract streams the whole file against its own checksum, so it may succeed,
                // but only with the right bytes.
                cli_verify_rejects(t.path(), s, &b, &needles);
                continue;
            }
            cli_rejects(t.path(), s, &b, &needles);
        }
    }
    // The extension feature bit on a container without an extension.
    for s in all.iter().filter(|s| !s.ext) {
        let mut b = fs::read(t.path().join(s.name)).unwrap();
        b[18] |= 1; // feature bit 16
        fix_header_crc(&mut b);
        lib_rejects(
            s,
            &b,
            is_corruption,
            &["no BFCX extension"],
            "feature bit 16",
        );
        cli_rejects(t.path(), s, &b, &["no BFCX extension"]);
    }
}

#[test]
fn wrong_key_is_reported_as_a_wrong_key_with_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let all = samples(t.path());
    fs::write(t.path().join("wrong.bin"), [0x24u8; 32]).unwrap();
    for s in all.iter().filter(|s| s.key.is_some()) {
        let bytes = fs::read(t.path().join(s.name)).unwrap();
        for wrong in [Key::Raw([0x24; 32]), Key::Password(b"guess".to_vec())] {
            let mut c = Container::from_bytes(s.name, bytes.clone()).unwrap();
            let err = c.set_key(&wrong).unwrap_err();
            assert!(matches!(err, Error::WrongKey { .. }), "{}: {err:?}", s.name);
            assert!(err.to_string().contains(s.name), "{err}");
            assert_eq!(err.exit_code(), 2);
        }
        for wrong in [["-K", "wrong.bin"], ["-p", "guess"]] {
            for cmd in [&["verify", "--deep"][..], &["extract", "-C", "w"][..]] {
                let mut args = cmd.to_vec();
                args.extend_from_slice(&wrong);
                args.push(s.name);
                run_in(t.path(), &args)
                    .fails_with(2)
                    .stderr_has(&[s.name, "wrong key"]);
            }
        }
        assert!(
            snapshot(&t.path().join("w")).is_empty(),
            "wrong key wrote files"
        );
    }
    // The upstream password fixture: a wrong password is a wrong key too.
    fs::copy(
        common::fixtures().join("enc-password.bfc"),
        t.path().join("up-pw.bfc"),
    )
    .unwrap();
    run_in(t.path(), &["verify", "--deep", "-p", "guess", "up-pw.bfc"])
        .fails_with(2)
        .stderr_has(&["up-pw.bfc", "wrong key"]);
}

#[test]
fn damage_to_the_smallest_encrypted_file_is_not_mistaken_for_a_wrong_key() {
    // Upstream containers have no key check: bfcfs tries the tags of the smallest files.
    let t = tempfile::tempdir().unwrap();
    let all = samples(t.path());
    let s = all.iter().find(|s| s.name == "up-enc-keyfile.bfc").unwrap();
    let good = fs::read(t.path().join(s.name)).unwrap();
    let l = Layout::parse(&good);
    let smallest = l
        .entries
        .iter()
        .filter(|r| r.mode & 0o170000 == 0o100000 && r.enc == 1)
        .min_by_key(|r| r.obj_size)
        .unwrap();
    let b = flip(&good, smallest.payload_at(&good) + 13);
    let mut c = Container::from_bytes(s.name, b.clone()).unwrap();
    c.set_key(s.key.as_ref().unwrap()).unwrap();
    let path = smallest.path_str();
    let bad = format!("bad-{}", s.name);
    fs::write(t.path().join(&bad), &b).unwrap();
    let r = run_in(
        t.path(),
        &["verify", "--deep", "-K", "up-keyfile.bin", &bad],
    );
    r.fails_with(1).stderr_has(&[path.as_str(), "1 of"]);
    assert!(!r.stderr.contains("wrong key"), "{}", r.stderr);
}

#[test]
fn random_byte_flips_never_panic_and_never_return_wrong_content() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let want = read_all(s.name, good.clone(), s.key.as_ref()).unwrap();
        let rounds = if s.ext { 150 } else { 60 };
        let mut x = 0x1234_5678_9abc_def0u64 ^ good.len() as u64;
        for _ in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % good.len() as u64) as usize;
            let mut b = good.clone();
            b[at] ^= 1 << (x >> 61);
            match read_all(s.name, b, s.key.as_ref()) {
                // Unchecked bytes (padding, object-header fields the index overrides) may
                // change, but what is read must be exactly what was written.
                Ok(got) => assert!(got == want, "{}: flip at {at} changed content", s.name),
                Err(e) => {
                    assert!(e.to_string().contains(s.name), "{e}");
                    assert!(matches!(e.exit_code(), 1 | 2));
                }
            }
        }
    }
}

/// The record offset table (OFFSETS) lets open skip walking the records, so a lie in it must
/// show when the entry is reached, naming the entry and its offset; a lying subdirectory count
/// (SUBDIRS) changes no content, and `verify` reports it.
#[test]
fn lying_record_offsets_and_subdirectory_counts_are_caught() {
    let t = tempfile::tempdir().unwrap();
    for s in samples(t.path()).iter().filter(|s| s.ext) {
        let good = fs::read(t.path().join(s.name)).unwrap();
        let l = Layout::parse(&good);
        let offsets = l.section(10);
        let victim = l
            .entries
            .iter()
            .position(|r| r.path == s.victim.as_bytes())
            .unwrap();
        for (case, delta) in [("offset + 4", 4i64), ("offset - 1", -1)] {
            let b = lie(&good, |b, _| {
                let at = offsets.body + 4 + 4 * victim;
                let v = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                put_u32(b, at, (i64::from(v) + delta) as u32);
            });
            let k = format!("index entry {victim}");
            let needles = [k.as_str(), "record offset table"];
            let err = lib_rejects(s, &b, is_corruption, &needles, case);
            assert!(err.to_string().contains("offset"), "{err}");
            cli_rejects(t.path(), s, &b, &needles);
        }
        let subdirs = l.section(9);
        assert!(subdirs.len >= 16, "{}: the root has a subdirectory", s.name);
        let b = lie(&good, |b, _| {
            let count = subdirs.body + 4 + 8;
            let v = u32::from_le_bytes(b[count..count + 4].try_into().unwrap());
            put_u32(b, count, v + 1);
        });
        read_all(s.name, b.clone(), s.key.as_ref()).unwrap();
        cli_verify_rejects(t.path(), s, &b, &["subdirectory count record 0"]);
    }
}
