//! What the Writer writes, the reader reads back: a container built from `Arbitrary` operations
//! (paths sanitized to what the Writer accepts) must open, and every entry must come back with
//! the kind, metadata and content a simple model predicts. The Writer may refuse an operation
//! with an error (a bad symlink target, say); it must never write something the reader refuses.
#![no_main]
use arbitrary::Arbitrary;
use bfcfs::bfc::{Child, Compression, Container, Key, Kind, Meta, Whiteout, Writer, WriterOptions};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::io::Cursor;

const KEY: [u8; 32] = [7; 32];
/// Total content bytes per input, so one run stays fast.
const MAX_CONTENT: usize = 4 << 20;

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0 none, 1 zstd, 2 auto.
    compression: u8,
    level: u8,
    /// Chunk size is 256 << (shift % 10): 256 B .. 128 KiB, so small inputs span many chunks.
    chunk_shift: u8,
    min_size: u16,
    encrypt: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Dir(Name, M),
    File(Name, M, Content),
    Symlink(Name, M, Vec<u8>),
    Special(Name, M, u8, u32, u32),
    Whiteout(Name, M, Vec<u8>, bool),
    /// Hardlink to the n-th file added so far.
    Hardlink(Name, u8),
    RemoveTree(Name),
    Blob(String, Vec<u8>),
}

/// Path components: a few fixed names (so paths collide and replace each other) or raw bytes.
#[derive(Arbitrary, Debug)]
struct Name(Vec<Comp>);

#[derive(Arbitrary, Debug)]
enum Comp {
    Fixed(u8),
    Raw(Vec<u8>),
}

const FIXED: &[&[u8]] = &[
    b"a",
    b"b",
    b"a-b",
    b"a.b",
    "ü".as_bytes(),
    b".wh.a",
    b"A",
    b" ",
];

impl Name {
    fn path(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for c in self.0.iter().take(6) {
            let comp: Vec<u8> = match c {
                Comp::Fixed(k) => FIXED[*k as usize % FIXED.len()].to_vec(),
                Comp::Raw(b) => b
                    .iter()
                    .copied()
                    .filter(|b| *b != b'/' && *b != 0)
                    .take(40)
                    .collect(),
            };
            if comp.is_empty() || comp == b"." || comp == b".." {
                continue;
            }
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(&comp);
        }
        (!out.is_empty()).then_some(out)
    }
}

#[derive(Arbitrary, Debug)]
struct M {
    mode: u16,
    mtime_ns: i64,
    uid: Option<u32>,
    gid: Option<u32>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl M {
    fn meta(&self) -> Meta {
        Meta {
            mode: u32::from(self.mode),
            mtime_ns: self.mtime_ns,
            uid: self.uid,
            gid: self.gid,
            xattrs: self.xattrs.iter().take(4).cloned().collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Content {
    Bytes(Vec<u8>),
    /// `pattern` repeated `count` times: large, compressible files from small inputs.
    Repeat(Vec<u8>, u16),
}

impl Content {
    fn bytes(&self, budget: &mut usize) -> Vec<u8> {
        let mut v = match self {
            Content::Bytes(b) => b.clone(),
            Content::Repeat(p, n) => {
                let len = (p.len().max(1) * usize::from(*n)).min(*budget);
                let p = if p.is_empty() { &[0u8][..] } else { p };
                p.iter().copied().cycle().take(len).collect()
            }
        };
        v.truncate(*budget);
        *budget -= v.len();
        v
    }
}

/// What the reader must return for one path.
#[derive(Clone, Debug)]
struct Expect {
    kind: Kind,
    meta: Meta,
    content: Vec<u8>,
    rdev: u64,
    whiteout: Whiteout,
}

fuzz_target!(|input: Input| run(input));

fn run(input: Input) {
    let opts = WriterOptions {
        compression: match input.compression % 3 {
            0 => Compression::None,
            1 => Compression::Zstd,
            _ => Compression::Auto,
        },
        level: 1 + i32::from(input.level % 5),
        min_size: u64::from(input.min_size),
        chunk_size: 256 << (input.chunk_shift % 10),
        key: input.encrypt.then(|| Key::Raw(KEY)),
        ..WriterOptions::default()
    };
    let mut w = Writer::new(Cursor::new(Vec::new()), opts, "fuzz.bfc".as_ref()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Expect> = BTreeMap::new();
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut budget = MAX_CONTENT;
    for op in &input.ops {
        let expect = |kind, m: &M| Expect {
            kind,
            meta: m.meta(),
            content: Vec::new(),
            rdev: 0,
            whiteout: Whiteout::None,
        };
        match op {
            Op::Dir(n, m) => {
                let Some(p) = n.path() else { continue };
                if w.add_dir(&p, &m.meta()).is_ok() {
                    model.insert(p, expect(Kind::Dir, m));
                }
            }
            Op::File(n, m, c) => {
                let Some(p) = n.path() else { continue };
                let data = c.bytes(&mut budget);
                if let Ok(got) = w.add_file(&p, &m.meta(), &mut data.as_slice()) {
                    assert_eq!(got, data.len() as u64);
                    files.push(p.clone());
                    model.insert(
                        p,
                        Expect {
                            content: data,
                            ..expect(Kind::File, m)
                        },
                    );
                }
            }
            Op::Symlink(n, m, t) => {
                let Some(p) = n.path() else { continue };
                if w.add_symlink(&p, &m.meta(), t).is_ok() {
                    model.insert(
                        p,
                        Expect {
                            content: t.clone(),
                            ..expect(Kind::Symlink, m)
                        },
                    );
                }
            }
            Op::Special(n, m, k, major, minor) => {
                let Some(p) = n.path() else { continue };
                let kind =
                    [Kind::CharDev, Kind::BlockDev, Kind::Fifo, Kind::Socket][*k as usize % 4];
                if w.add_special(&p, kind, &m.meta(), (*major, *minor)).is_ok() {
                    let rdev = match kind {
                        Kind::CharDev | Kind::BlockDev => libc::makedev(*major, *minor),
                        _ => 0,
                    };
                    model.insert(
                        p,
                        Expect {
                            rdev,
                            ..expect(kind, m)
                        },
                    );
                }
            }
            Op::Whiteout(n, m, name, opaque) => {
                let mut p = n.path().unwrap_or_default();
                if !p.is_empty() {
                    p.push(b'/');
                }
                let w_kind = if *opaque {
                    p.extend_from_slice(b".wh..wh..opq");
                    Whiteout::Opaque
                } else {
                    p.extend_from_slice(b".wh.");
                    p.extend(
                        name.iter()
                            .copied()
                            .filter(|b| *b != b'/' && *b != 0)
                            .take(20),
                    );
                    Whiteout::Whiteout
                };
                if w.add_whiteout(&p, &m.meta()).is_ok() {
                    model.insert(
                        p,
                        Expect {
                            whiteout: w_kind,
                            ..expect(Kind::File, m)
                        },
                    );
                }
            }
            Op::Hardlink(n, k) => {
                let Some(p) = n.path() else { continue };
                if files.is_empty() {
                    continue;
                }
                let target = files[*k as usize % files.len()].clone();
                let before = model.get(&target).cloned();
                if w.add_hardlink(&p, &target).is_ok() {
                    let e = before.expect("the writer linked to a path the model does not hold");
                    assert_eq!(e.kind, Kind::File);
                    model.insert(p, e);
                }
            }
            Op::RemoveTree(n) => {
                let Some(p) = n.path() else { continue };
                w.remove_tree(&p);
                let mut below = p.clone();
                below.push(b'/');
                model.retain(|k, _| *k != p && !k.starts_with(&below));
            }
            Op::Blob(name, data) => {
                w.add_image_blob(name, data).unwrap();
                blobs.retain(|(n, _)| n != name);
                blobs.push((name.clone(), data.clone()));
            }
        }
    }
    let bytes = w.finish().unwrap().into_inner();
    let mut c = match Container::from_bytes("fuzz.bfc", bytes) {
        Ok(c) => c,
        Err(e) => panic!("the reader refuses what the writer wrote: {e}"),
    };
    if input.encrypt {
        c.set_key(&Key::Raw(KEY)).unwrap();
    }
    check(&c, &model, &blobs);
}

fn check(c: &Container, model: &BTreeMap<Vec<u8>, Expect>, blobs: &[(String, Vec<u8>)]) {
    assert_eq!(c.len(), model.len());
    let owners = model
        .values()
        .any(|e| e.meta.uid.is_some() || e.meta.gid.is_some());
    for (p, want) in model {
        let i = c.find(p).unwrap_or_else(|| panic!("{p:?} is missing"));
        let e = c.entry(i).unwrap();
        assert_eq!(e.kind, want.kind, "{p:?}");
        assert_eq!(e.perm(), want.meta.mode & 0o7777, "{p:?}");
        assert_eq!(e.mtime_ns, want.meta.mtime_ns, "{p:?}");
        if owners {
            let m = &want.meta;
            let o = (m.uid.is_some() || m.gid.is_some())
                .then(|| (m.uid.unwrap_or(0), m.gid.unwrap_or(0)));
            assert_eq!(
                (e.uid, e.gid),
                (Some(o.map_or(0, |o| o.0)), Some(o.map_or(0, |o| o.1))),
                "{p:?}"
            );
        } else {
            assert_eq!((e.uid, e.gid), (None, None), "{p:?}");
        }
        assert_eq!(e.xattrs, want.meta.xattrs, "{p:?}");
        assert_eq!(e.rdev, want.rdev, "{p:?}");
        assert_eq!(e.whiteout, want.whiteout, "{p:?}");
        assert!(e.nlink >= 1);
        match want.kind {
            Kind::File => {
                assert_eq!(e.size, want.content.len() as u64, "{p:?}");
                let mut got = Vec::new();
                c.open_reader(i).unwrap().copy_to(&mut got).unwrap();
                assert!(got == want.content, "{p:?}: content differs");
                c.verify_entry(i).unwrap();
                let len = want.content.len();
                let mut buf = vec![0u8; 1000];
                for off in [
                    0,
                    len / 3,
                    len.saturating_sub(1),
                    len.saturating_sub(700),
                    len,
                ] {
                    let n = c.read_at(i, off as u64, &mut buf).unwrap();
                    let end = (off + buf.len()).min(len);
                    assert_eq!(
                        &buf[..n],
                        &want.content[off.min(len)..end],
                        "{p:?} at {off}"
                    );
                }
            }
            Kind::Symlink => assert_eq!(c.symlink_target(i).unwrap(), want.content, "{p:?}"),
            _ => c.verify_entry(i).unwrap(),
        }
        // Every entry is listed by its parent.
        let parent = match p.iter().rposition(|b| *b == b'/') {
            Some(k) => &p[..k],
            None => &[][..],
        };
        assert!(c.is_dir(parent) || model.get(parent).is_some(), "{p:?}");
        assert!(
            c.children(parent).unwrap().contains(&Child::Entry(i)),
            "{p:?} not listed"
        );
    }
    for (name, data) in blobs {
        assert_eq!(c.image_blob(name), Some(data.as_slice()), "blob {name}");
    }
}
