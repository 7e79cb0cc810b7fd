//! Test trees on disk: build one holding every entry kind the archive commands handle, and
//! compare two trees entry by entry (lstat fields, content, symlink targets, xattrs, hardlinks).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Incompressible bytes from a seeded xorshift generator.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible text that still differs from line to line.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut k = seed;
    while out.len() < len {
        out.extend_from_slice(format!("line {k:08} of the test corpus, seed {seed}\n").as_bytes());
        k += 1;
    }
    out.truncate(len);
    out
}

/// Sets atime and mtime of `p` (not following symlinks) to `ns` nanoseconds since the epoch.
pub fn set_mtime(p: &Path, ns: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
}

/// All xattrs of `p` (not following symlinks), sorted by name.
pub fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 64 << 10];
    let n = rustix::fs::llistxattr(p, &mut names)
        .unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 64 << 10];
        let len = rustix::fs::lgetxattr(p, name, &mut v)
            .unwrap_or_else(|e| panic!("getxattr on {}: {e}", p.display()));
        v.truncate(len);
        out.insert(name.to_vec(), v);
    }
    out
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

pub fn mknod(p: &Path, kind: rustix::fs::FileType, mode: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        kind,
        rustix::fs::Mode::from_raw_mode(mode as _),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

/// Builds trees, remembering what it made so that mtimes can be set last (children first).
pub struct Builder {
    pub root: PathBuf,
    made: Vec<(PathBuf, i64)>,
    next_time: i64,
}

impl Builder {
    /// `root` is created as a directory with mode 0755.
    pub fn new(root: &Path) -> Builder {
        fs::create_dir_all(root).unwrap();
        let mut b = Builder {
            root: root.to_path_buf(),
            made: Vec::new(),
            next_time: 1_600_000_000_000_000_000,
        };
        b.stamp(root.to_path_buf());
        b
    }

    fn stamp(&mut self, p: PathBuf) {
        // Distinct nanosecond mtimes that exercise every digit.
        self.next_time += 1_234_567_891;
        self.made.push((p, self.next_time));
    }

    pub fn path(&self, rel: impl AsRef<OsStr>) -> PathBuf {
        self.root.join(rel.as_ref())
    }

    pub fn dir(&mut self, rel: impl AsRef<OsStr>, mode: u32) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        chmod(&p, mode);
        self.stamp(p.clone());
        p
    }

    pub fn file(&mut self, rel: impl AsRef<OsStr>, mode: u32, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        chmod(&p, mode);
        self.stamp(p.clone());
        p
    }

    pub fn symlink(&mut self, rel: impl AsRef<OsStr>, target: &str) -> PathBuf {
        let p = self.path(rel);
        std::os::unix::fs::symlink(target, &p).unwrap();
        self.stamp(p.clone());
        p
    }

    pub fn hardlink(&mut self, rel: impl AsRef<OsStr>, existing: impl AsRef<OsStr>) -> PathBuf {
        let p = self.path(rel);
        fs::hard_link(self.path(existing), &p).unwrap();
        p
    }

    pub fn special(
        &mut self,
        rel: impl AsRef<OsStr>,
        kind: rustix::fs::FileType,
        mode: u32,
        dev: (u32, u32),
    ) -> PathBuf {
        let p = self.path(rel);
        mknod(&p, kind, mode, dev.0, dev.1);
        chmod(&p, mode);
        self.stamp(p.clone());
        p
    }

    /// Overrides the mtime that `finish` gives `p`.
    pub fn mtime(&mut self, p: &Path, ns: i64) {
        for (q, t) in self.made.iter_mut() {
            if q == p {
                *t = ns;
            }
        }
    }

    /// Sets every recorded mtime, children before their parents.
    pub fn finish(self) {
        for (p, t) in self.made.iter().rev() {
            set_mtime(p, *t);
        }
    }
}

/// Builds `<parent>/tree` holding every entry kind: files (empty, 1 byte, exactly one 128 KiB
/// chunk, one byte more, a few MiB, compressible and not), directories (empty, sticky, setgid,
/// 30 levels deep), symlinks (relative, absolute, dangling, to a directory), hardlinks (small,
/// chunked, empty), a fifo, character and block devices, `user.*` and `trusted.*` xattrs,
/// setuid/setgid/sticky modes, odd names, nanosecond and pre-1970 mtimes and owners other
/// than root. Must run as root. Returns the tree's path.
pub fn build_full_tree(parent: &Path) -> PathBuf {
    use rustix::fs::FileType;
    let mut b = Builder::new(&parent.join("tree"));
    let root = b.root.clone();
    b.dir("files", 0o750);
    b.file("files/empty", 0o644, b"");
    let one = b.file("files/one", 0o600, b"x");
    set_xattr(&one, "user.color", b"blue");
    set_xattr(&one, "trusted.secret", b"s3cr3t\0binary\xff");
    b.file("files/exact-128k", 0o644, &noise(128 << 10, 1));
    b.file("files/over-128k", 0o644, &text((128 << 10) + 1, 2));
    let mut big = Vec::new();
    for k in 0..48u64 {
        // Alternating 64 KiB runs of text and noise: some chunks compress, some do not.
        big.extend(if k % 2 == 0 {
            text(64 << 10, k)
        } else {
            noise(64 << 10, k)
        });
    }
    big.extend_from_slice(b"tail");
    b.file("files/big", 0o640, &big);
    b.file("files/text", 0o444, &text(1 << 20, 3));
    b.file("files/noise", 0o644, &noise(512 << 10, 4));
    let su = b.file("files/setuid", 0o755, b"#!/bin/sh\necho setuid\n");
    let sg = b.file("files/setgid", 0o755, b"#!/bin/sh\necho setgid\n");
    let old = b.file("files/old", 0o644, b"from 1969\n");
    b.mtime(&old, -86_400_000_000_123);
    b.dir("dirs", 0o755);
    let empty = b.dir("dirs/empty", 0o700);
    set_xattr(&empty, "user.dir", b"yes");
    set_xattr(&empty, "trusted.dir", b"t");
    b.dir("dirs/sticky", 0o1777);
    let sgd = b.dir("dirs/setgid-dir", 0o2775);
    let mut rel = PathBuf::from("deep");
    b.dir(&rel, 0o755);
    for k in 1..=30 {
        rel.push(format!("d{k:02}"));
        b.dir(&rel, 0o755);
    }
    b.file(rel.join("leaf.txt"), 0o644, b"thirty levels down\n");
    b.dir("links", 0o755);
    b.symlink("links/rel", "../files/one");
    b.symlink("links/abs", "/etc/hostname");
    b.symlink("links/dangling", "no/such/target");
    b.symlink("links/to-dir", "../dirs");
    let lx = b.symlink("links/with-xattr", "rel");
    set_xattr(&lx, "trusted.link", b"1");
    b.dir("hard", 0o755);
    b.file("hard/a", 0o644, b"shared by three names\n");
    b.hardlink("hard/b", "hard/a");
    b.hardlink("files/hard-c", "hard/a");
    b.file("hard/big1", 0o644, &text(300 << 10, 5));
    b.hardlink("hard/big2", "hard/big1");
    b.file("hard/empty1", 0o600, b"");
    b.hardlink("hard/empty2", "hard/empty1");
    b.dir("special", 0o755);
    b.special("special/fifo", FileType::Fifo, 0o640, (0, 0));
    let null = b.special("special/null", FileType::CharacterDevice, 0o666, (1, 3));
    set_xattr(&null, "trusted.dev", b"char");
    b.special("special/loop", FileType::BlockDevice, 0o660, (7, 200));
    b.special(
        "special/big-dev",
        FileType::CharacterDevice,
        0o600,
        (4095, 1_048_575),
    );
    b.dir("names", 0o755);
    let long_ascii = "n".repeat(255);
    let long_cjk = "文".repeat(85);
    for name in [
        "ünïcødé 文件 🙂",
        "with space",
        "new\nline",
        "-dash",
        "tab\tback\\slash\"quote'",
        long_ascii.as_str(),
        long_cjk.as_str(),
    ] {
        assert!(name.len() <= 255);
        b.file(Path::new("names").join(name), 0o644, name.as_bytes());
    }
    // Owners: a spread of uids/gids, none of them root, set before the special mode bits
    // (chown clears setuid).
    let mut all = Vec::new();
    walk(&root, Path::new(""), &mut all);
    for (k, rel) in all.iter().enumerate() {
        let p = root.join(rel);
        let (u, g) = match k % 4 {
            0 => (1000, 1000),
            1 => (4242, 777),
            2 => (65534, 65534),
            _ => (4_000_000_000, 3_000_000_001),
        };
        lchown(&p, u, g);
    }
    lchown(&root, 1000, 100);
    chmod(&su, 0o4755);
    chmod(&sg, 0o2755);
    chmod(&sgd, 0o2775);
    b.finish();
    root
}

/// Relative paths of everything below `dir`, depth first, children in byte order.
pub fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let md = fs::symlink_metadata(root.join(&r)).unwrap();
        out.push(r.clone());
        if md.is_dir() {
            walk(root, &r, out);
        }
    }
}

/// Every path below `root` (root excluded) → `describe(its path, its lstat)`.
pub fn describe_tree(
    root: &Path,
    describe: impl Fn(&Path, &fs::Metadata) -> String,
) -> BTreeMap<String, String> {
    let mut rels = Vec::new();
    walk(root, Path::new(""), &mut rels);
    rels.into_iter()
        .map(|r| {
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            (r.display().to_string(), describe(&p, &m))
        })
        .collect()
}

/// The paths where two tree descriptions (path → description) differ, one line each, naming the
/// sides `a_name` and `b_name`; empty when they are the same.
pub fn differences(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    a_name: &str,
    b_name: &str,
) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {a_name} {v}, {b_name} {:?}", b.get(k)))
        .chain(
            b.keys()
                .filter(|k| !a.contains_key(*k))
                .map(|k| format!("{k}: only {b_name}")),
        )
        .collect()
}

fn show_xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let v: Vec<String> = x
        .iter()
        .map(|(n, v)| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(n),
                v.escape_ascii().to_string()
            )
        })
        .collect();
    format!("{{{}}}", v.join(", "))
}

fn sha(p: &Path) -> String {
    super::sha256_hex(&fs::read(p).unwrap())
}

fn kind(md: &fs::Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else {
        "socket"
    }
}

/// Compares tree `b` against tree `a` (both roots included): the same relative paths, and for
/// each the same type, full mode, uid/gid, size, mtime to the nanosecond, rdev, nlink, content,
/// symlink target and xattrs; names that share an inode in `a` share one in `b` and no others.
/// Panics with every difference listed.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (mut pa, mut pb) = (vec![PathBuf::new()], vec![PathBuf::new()]);
    walk(a, Path::new(""), &mut pa);
    walk(b, Path::new(""), &mut pb);
    let sa: BTreeSet<_> = pa.iter().cloned().collect();
    let sb: BTreeSet<_> = pb.iter().cloned().collect();
    let mut diffs = Vec::new();
    for missing in sa.difference(&sb) {
        diffs.push(format!(
            "{}: missing after the round trip",
            missing.display()
        ));
    }
    for extra in sb.difference(&sa) {
        diffs.push(format!("{}: appeared from nowhere", extra.display()));
    }
    let mut ino_ab = HashMap::new();
    let mut ino_ba = HashMap::new();
    for rel in sa.intersection(&sb) {
        let (fa, fb) = (a.join(rel), b.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&fa).unwrap(),
            fs::symlink_metadata(&fb).unwrap(),
        );
        let name = rel.display();
        let mut check = |what: &str, x: String, y: String| {
            if x != y {
                diffs.push(format!("{name}: {what} {x} became {y}"));
            }
        };
        check("type", kind(&ma).into(), kind(&mb).into());
        check(
            "mode",
            format!("{:o}", ma.mode()),
            format!("{:o}", mb.mode()),
        );
        check("uid", ma.uid().to_string(), mb.uid().to_string());
        check("gid", ma.gid().to_string(), mb.gid().to_string());
        check(
            "mtime",
            format!("{}.{:09}", ma.mtime(), ma.mtime_nsec()),
            format!("{}.{:09}", mb.mtime(), mb.mtime_nsec()),
        );
        let (xa, xb) = (xattrs(&fa), xattrs(&fb));
        if xa != xb {
            check("xattrs", show_xattrs(&xa), show_xattrs(&xb));
        }
        let t = ma.file_type();
        if !t.is_dir() {
            check("size", ma.len().to_string(), mb.len().to_string());
        }
        if t.is_char_device() || t.is_block_device() {
            check("rdev", ma.rdev().to_string(), mb.rdev().to_string());
        }
        if t.is_symlink() {
            check(
                "target",
                format!("{:?}", fs::read_link(&fa).unwrap()),
                format!("{:?}", fs::read_link(&fb).unwrap_or_default()),
            );
        }
        if t.is_file() && mb.is_file() {
            check("nlink", ma.nlink().to_string(), mb.nlink().to_string());
            check("content sha256", sha(&fa), sha(&fb));
            let x = ino_ab.entry(ma.ino()).or_insert(mb.ino());
            if *x != mb.ino() {
                diffs.push(format!("{name}: hardlink group split"));
            }
            let y = ino_ba.entry(mb.ino()).or_insert(ma.ino());
            if *y != ma.ino() {
                diffs.push(format!("{name}: joined an unrelated hardlink group"));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n{}",
        b.display(),
        a.display(),
        diffs.join("\n")
    );
}

/// Every path (and its type, size and content hash) below `dir`, for "nothing changed here".
pub fn snapshot(dir: &Path) -> Vec<String> {
    let mut all: Vec<PathBuf> = Vec::new();
    if !dir.exists() {
        return Vec::new();
    }
    walk(dir, Path::new(""), &mut all);
    all.iter()
        .map(|rel| {
            let p = dir.join(rel);
            let md = fs::symlink_metadata(&p).unwrap();
            let extra = if md.is_file() {
                format!("{} {} nlink={}", md.len(), sha(&p), md.nlink())
            } else if md.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else {
                String::new()
            };
            format!(
                "{} {} {:o} {}",
                String::from_utf8_lossy(rel.as_os_str().as_bytes()),
                kind(&md),
                md.mode(),
                extra
            )
        })
        .collect()
}
