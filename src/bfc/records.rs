//! The writer's index records, in memory that does not grow with the entry count.
//!
//! Records sit in a sorted map until it holds `limit` bytes; then the map is written out as a
//! sorted *run* to an unnamed temp file (O_TMPFILE: no name to clean up after a failure, a kill
//! or Ctrl-C; the space goes when the writer is dropped) and memory starts empty again. `finish`
//! merges the runs and the map in path order. A layer below the limit never touches disk.
//!
//! What the map did by itself, the merge does by rank (a run's number; the map ranks above every
//! run):
//! - the last add of a path wins: the record of the highest rank;
//! - `remove_tree` removes the path and its subtree from the map at once, and, when runs exist,
//!   leaves a tombstone `path → number of runs`: it hides the path and its subtree in every run
//!   older than it (records added later are in a newer run or the map, so they stay);
//! - hardlinks: a group is every surviving regular file whose object was the target of a link
//!   (`linked`), so a target that is already in a run needs no update.
//!
//! Past 64 runs the runs are merged into one (tombstones applied, then dropped), so the final
//! merge never reads more than 64 files at once.
//!
//! Lookups while adding (the converter asks for the kind of each parent and of the path it
//! replaces, and for hardlink targets) look in the map, then in the runs newest first: a run keeps
//! every 128th path in memory and reads one block of records from its file; a run also keeps the
//! hashes of its directories, so "is this a directory?" of a fresh path reads nothing. Answers
//! read from runs are cached (a bounded cache, kept right on every add and removal).
//!
//! Memory: `limit` bytes of records, plus per spilled entry about 1 byte (every 128th path) and
//! 8 bytes per spilled directory, plus the tombstones (one per directory replaced by a
//! non-directory) and one object offset per hardlink target.
use super::cursor::Cursor;
use super::error::{Error, Result};
use super::ext::{ChunkTable, Whiteout};
use super::reader::Kind;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Bytes of records held in memory before they are written to a run, by default: about 190,000
/// entries. A layer of fewer never touches disk.
pub const DEFAULT_SPILL_BYTES: usize = 32 << 20;

/// A record with its path, as runs and merges hand them out.
type Item = (Box<[u8]>, Rec);

/// What one record costs in memory besides its path and its `Extra`: the record, the map's key
/// and node share (half-full nodes after sorted inserts) and the path's allocation.
const ENTRY_COST: usize = 176;

/// Every this many records of a run, the path and offset stay in memory for lookups.
const SPARSE_EVERY: usize = 128;

/// Runs kept before they are merged into one: the final merge reads this many files at once,
/// each through a 64 KiB buffer.
const MAX_RUNS: usize = 64;

/// Answers read from runs that are kept (cleared when full).
const CACHE_MAX: usize = 16 << 10;

/// An index record without its path plus what the extension says about it: 64 bytes, with what
/// few entries have (xattrs, device numbers, chunk tables) boxed aside.
#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub obj_offset: u64,
    pub obj_size: u64,
    pub size: u64,
    pub mtime_ns: u64,
    pub mode: u32,
    pub crc: u32,
    pub uid: u32,
    pub gid: u32,
    pub comp: u8,
    pub enc: u8,
    pub kind: Kind,
    pub whiteout: Whiteout,
    pub has_owner: bool,
    pub extra: Option<Box<Extra>>,
}

/// What only some entries have.
#[derive(Debug, Clone, Default)]
pub(super) struct Extra {
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub device: Option<(u32, u32)>,
    pub chunks: Option<ChunkTable>,
}

impl Rec {
    pub fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Bytes this record holds in memory, path included.
    fn cost(&self, path: &[u8]) -> usize {
        let extra = self.extra.as_ref().map_or(0, |x| {
            64 + x
                .xattrs
                .iter()
                .map(|(n, v)| 48 + n.len() + v.len())
                .sum::<usize>()
                + x.chunks.as_ref().map_or(0, |t| 8 * t.stored.len())
        });
        ENTRY_COST + path.len() + extra
    }
}

/// A sorted run of records in a temp file.
struct Run {
    file: File,
    /// For messages: the directory and the run's number.
    name: PathBuf,
    len: u64,
    first: Box<[u8]>,
    last: Box<[u8]>,
    /// (path, offset) of every `SPARSE_EVERY`th record.
    sparse: Vec<(Box<[u8]>, u64)>,
    /// Sorted hashes of the paths of its directories.
    dirs: Vec<u64>,
}

/// The records of a writer: a bounded sorted map plus sorted runs on disk.
pub(super) struct Records {
    mem: BTreeMap<Box<[u8]>, Rec>,
    mem_bytes: usize,
    limit: usize,
    /// Where runs are written.
    dir: PathBuf,
    runs: Vec<Run>,
    /// Path → number of runs when its tree was removed: hides it and its subtree in older runs.
    tombs: BTreeMap<Box<[u8]>, u32>,
    /// Object offsets of hardlink targets: every regular file with one is in a link group.
    linked: HashSet<u64>,
    /// Kinds read from runs (`None`: absent), right as long as every add and removal updates it.
    cache: HashMap<Box<[u8]>, Option<Kind>>,
    scratch: Vec<u8>,
}

fn path_hash(path: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// True when `path` is `top` or below it.
fn covers(top: &[u8], path: &[u8]) -> bool {
    path.starts_with(top) && (path.len() == top.len() || path[top.len()] == b'/')
}

impl Records {
    /// Records kept in memory up to `limit` bytes; runs go to `dir`.
    pub fn new(limit: usize, dir: PathBuf) -> Records {
        Records {
            mem: BTreeMap::new(),
            mem_bytes: 0,
            limit,
            dir,
            runs: Vec::new(),
            tombs: BTreeMap::new(),
            linked: HashSet::new(),
            cache: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// The directory of the runs, once there are runs.
    pub fn spill_dir(&self) -> Option<PathBuf> {
        (!self.runs.is_empty()).then(|| self.dir.clone())
    }

    /// Number of runs written so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Adds (or replaces) the record of `path`. It stays in memory until the next add at least.
    pub fn insert(&mut self, path: &[u8], rec: Rec) -> Result<()> {
        if self.mem_bytes >= self.limit && !self.mem.is_empty() {
            self.spill()?;
        }
        if !self.cache.is_empty() {
            self.cache.remove(path);
        }
        self.mem_bytes += rec.cost(path);
        if let Some(old) = self.mem.insert(path.into(), rec) {
            self.mem_bytes -= old.cost(path);
        }
        Ok(())
    }

    /// The record just added at `path` (`insert` leaves it in memory).
    pub fn last_added(&mut self, path: &[u8]) -> Option<&mut Rec> {
        self.mem.get_mut(path)
    }

    /// Marks the object of a hardlink target: the files sharing it form a link group.
    pub fn link(&mut self, obj_offset: u64) {
        self.linked.insert(obj_offset);
    }

    /// Removes `path` and everything below it.
    pub fn remove_tree(&mut self, path: &[u8]) {
        if let Some(old) = self.mem.remove(path) {
            self.mem_bytes -= old.cost(path);
        }
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        let doomed: Vec<Box<[u8]>> = self
            .mem
            .range::<[u8], _>((Bound::Included(&lo[..]), Bound::Excluded(&hi[..])))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some(old) = self.mem.remove(&k) {
                self.mem_bytes -= old.cost(&k);
            }
        }
        if !self.runs.is_empty() {
            let n = self.runs.len() as u32;
            let t = self.tombs.entry(path.into()).or_insert(n);
            *t = (*t).max(n);
            self.cache.clear();
        }
    }

    /// The rank of the newest tombstone covering `path` (0: none).
    fn tomb_over(&self, path: &[u8]) -> u32 {
        if self.tombs.is_empty() {
            return 0;
        }
        let mut best = self.tombs.get(path).copied().unwrap_or(0);
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' {
                if let Some(&r) = self.tombs.get(&path[..i]) {
                    best = best.max(r);
                }
            }
        }
        best
    }

    /// The record of `path`, if it has one.
    pub fn get(&mut self, path: &[u8]) -> Result<Option<Rec>> {
        if let Some(r) = self.mem.get(path) {
            return Ok(Some(r.clone()));
        }
        for i in (0..self.runs.len()).rev() {
            if let Some(rec) = self.find_in_run(i, path)? {
                // Hidden by a later removal: so are the older runs' records of it.
                return Ok((self.tomb_over(path) <= i as u32).then_some(rec));
            }
        }
        Ok(None)
    }

    /// Kind of the entry at `path`, if there is one.
    pub fn kind_of(&mut self, path: &[u8]) -> Result<Option<Kind>> {
        if let Some(r) = self.mem.get(path) {
            return Ok(Some(r.kind));
        }
        if self.runs.is_empty() {
            return Ok(None);
        }
        if let Some(k) = self.cache.get(path) {
            return Ok(*k);
        }
        let k = self.get(path)?.map(|r| r.kind);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(path.into(), k);
        Ok(k)
    }

    /// True when `path` is a directory. A path no run holds as a directory reads nothing.
    pub fn is_dir(&mut self, path: &[u8]) -> Result<bool> {
        if let Some(r) = self.mem.get(path) {
            return Ok(r.kind == Kind::Dir);
        }
        let h = path_hash(path);
        if !self.runs.iter().any(|r| r.dirs.binary_search(&h).is_ok()) {
            return Ok(false);
        }
        Ok(self.kind_of(path)? == Some(Kind::Dir))
    }

    /// Writes the records in memory as a new run; past `MAX_RUNS` runs, merges them into one.
    fn spill(&mut self) -> Result<()> {
        let mut mem = std::mem::take(&mut self.mem).into_iter();
        self.mem_bytes = 0;
        let run = self.write_run(&mut || Ok(mem.next()))?;
        self.runs.push(run);
        if self.runs.len() >= MAX_RUNS {
            // Removed trees are left out here, so their tombstones have done their work.
            let runs = std::mem::take(&mut self.runs);
            let tombs = std::mem::take(&mut self.tombs);
            let mut merged = merge(runs, BTreeMap::new(), tombs, HashSet::new())?;
            let run = self.write_run(&mut || merged.next())?;
            self.runs.push(run);
        }
        Ok(())
    }

    /// Writes the records `next` gives (in path order, each path once) as a run.
    fn write_run(&mut self, next: &mut dyn FnMut() -> Result<Option<Item>>) -> Result<Run> {
        let n = self.runs.len();
        let name = self.dir.join(format!("(index run {n}, unnamed temp file)"));
        let io = |e| Error::Io {
            file: name.clone(),
            source: e,
        };
        let file = tempfile::tempfile_in(&self.dir).map_err(io)?;
        let mut out = BufWriter::with_capacity(256 << 10, &file);
        let mut pos = 0u64;
        let mut sparse = Vec::new();
        let mut dirs = Vec::new();
        let mut first: Option<Box<[u8]>> = None;
        let mut last: Box<[u8]> = Box::default();
        let mut i = 0usize;
        while let Some((path, rec)) = next()? {
            if i % SPARSE_EVERY == 0 {
                sparse.push((path.clone(), pos));
            }
            i += 1;
            if rec.kind == Kind::Dir {
                dirs.push(path_hash(&path));
            }
            self.scratch.clear();
            encode(&path, &rec, &mut self.scratch);
            out.write_all(&self.scratch).map_err(io)?;
            pos += self.scratch.len() as u64;
            if first.is_none() {
                first = Some(path.clone());
            }
            last = path;
        }
        out.flush().map_err(io)?;
        drop(out);
        dirs.sort_unstable();
        dirs.dedup();
        Ok(Run {
            file,
            name,
            len: pos,
            first: first.unwrap_or_default(),
            last,
            sparse,
            dirs,
        })
    }

    /// The record of `path` in run `i`, read from its block.
    fn find_in_run(&mut self, i: usize, path: &[u8]) -> Result<Option<Rec>> {
        let run = &self.runs[i];
        if path < &run.first[..] || path > &run.last[..] {
            return Ok(None);
        }
        let k = run.sparse.partition_point(|(p, _)| &p[..] <= path);
        if k == 0 {
            return Ok(None);
        }
        let start = run.sparse[k - 1].1;
        let end = run.sparse.get(k).map_or(run.len, |s| s.1);
        let n = usize::try_from(end - start).map_err(|_| run.corrupt(start, "block too large"))?;
        self.scratch.resize(n, 0);
        run.file
            .read_exact_at(&mut self.scratch, start)
            .map_err(|e| Error::Io {
                file: run.name.clone(),
                source: e,
            })?;
        // Compare paths in place; decode only the record asked for.
        let mut c = Cursor::new(&run.name, &self.scratch, start);
        while c.remaining() > 0 {
            let at = c.offset();
            let len = c.u32("run record length")? as usize;
            let body = c.bytes(len, "run record")?;
            let mut b = Cursor::new(&run.name, body, at + 4);
            let n = b.u32("path length")? as usize;
            match b.bytes(n, "path")?.cmp(path) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    let whole = &self.scratch[(at - start) as usize..][..4 + len];
                    let mut d = Cursor::new(&run.name, whole, at);
                    return Ok(Some(decode(&mut d)?.1));
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// Every surviving record in path order (consumes the records).
    pub fn into_sorted(self) -> Result<Sorted> {
        merge(self.runs, self.mem, self.tombs, self.linked)
    }
}

/// The merge of `runs` (oldest first) and `mem` (the newest), with the tombstones that apply.
fn merge(
    runs: Vec<Run>,
    mem: BTreeMap<Box<[u8]>, Rec>,
    tombs: BTreeMap<Box<[u8]>, u32>,
    linked: HashSet<u64>,
) -> Result<Sorted> {
    let mut sources = Vec::with_capacity(runs.len() + 1);
    for run in runs {
        sources.push(Source::Run(RunReader {
            input: BufReader::with_capacity(
                64 << 10,
                At {
                    file: run.file,
                    pos: 0,
                },
            ),
            name: run.name,
            pos: 0,
            len: run.len,
            buf: Vec::new(),
        }));
    }
    // Last even when empty: the newest source, which no tombstone hides.
    sources.push(Source::Mem(mem.into_iter()));
    let mut heads = BinaryHeap::with_capacity(sources.len());
    if sources.len() > 1 {
        for (rank, s) in sources.iter_mut().enumerate() {
            if let Some((path, rec)) = s.next()? {
                heads.push(Head {
                    path,
                    rank: rank as u32,
                    rec,
                });
            }
        }
    }
    Ok(Sorted {
        sources,
        heads,
        tombs: tombs.into_iter().peekable(),
        open_tombs: Vec::new(),
        linked,
    })
}

impl Run {
    fn corrupt(&self, offset: u64, what: &str) -> Error {
        Error::Corrupt {
            file: self.name.clone(),
            offset,
            what: what.to_string(),
        }
    }
}

/// One record as a run stores it:
/// `len u32 (of what follows), path_len u32, path, obj_offset u64, obj_size u64, size u64,
/// mtime_ns u64, mode u32, crc u32, uid u32, gid u32, comp u8, enc u8, whiteout u8, flags u8
/// (1 owner, 2 device, 4 chunks), [major u32, minor u32], xattr_count u32 × (name_len u32,
/// value_len u32, name, value), [chunk_size u32, count u32, count × (stored u32, crc u32)]`.
fn encode(path: &[u8], r: &Rec, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(path.len() as u32).to_le_bytes());
    out.extend_from_slice(path);
    for v in [r.obj_offset, r.obj_size, r.size, r.mtime_ns] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [r.mode, r.crc, r.uid, r.gid] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let x = r.extra.as_deref();
    let device = x.and_then(|x| x.device);
    let chunks = x.and_then(|x| x.chunks.as_ref());
    let flags =
        u8::from(r.has_owner) | u8::from(device.is_some()) << 1 | u8::from(chunks.is_some()) << 2;
    out.extend_from_slice(&[
        r.comp,
        r.enc,
        match r.whiteout {
            Whiteout::None => 0,
            Whiteout::Whiteout => 1,
            Whiteout::Opaque => 2,
        },
        flags,
    ]);
    if let Some((ma, mi)) = device {
        out.extend_from_slice(&ma.to_le_bytes());
        out.extend_from_slice(&mi.to_le_bytes());
    }
    let xattrs = x.map_or(&[][..], |x| &x.xattrs[..]);
    out.extend_from_slice(&(xattrs.len() as u32).to_le_bytes());
    for (n, v) in xattrs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(n);
        out.extend_from_slice(v);
    }
    if let Some(t) = chunks {
        out.extend_from_slice(&t.chunk_size.to_le_bytes());
        out.extend_from_slice(&(t.stored.len() as u32).to_le_bytes());
        for (s, c) in t.stored.iter().zip(&t.crcs) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Reads one record written by `encode`.
fn decode(c: &mut Cursor<'_>) -> Result<(Box<[u8]>, Rec)> {
    let len = c.u32("run record length")? as usize;
    let at = c.offset();
    let body = c.bytes(len, "run record")?;
    let mut c = Cursor::new(c.file(), body, at);
    let n = c.u32("path length")? as usize;
    let path: Box<[u8]> = c.bytes(n, "path")?.into();
    let obj_offset = c.u64("object offset")?;
    let obj_size = c.u64("object size")?;
    let size = c.u64("size")?;
    let mtime_ns = c.u64("mtime")?;
    let mode = c.u32("mode")?;
    let crc = c.u32("crc")?;
    let uid = c.u32("uid")?;
    let gid = c.u32("gid")?;
    let [comp, enc, w, flags] = c.array::<4>("flags")?;
    let kind = Kind::from_mode(mode).ok_or_else(|| c.corrupt(format!("mode {mode:o}")))?;
    let whiteout = match w {
        0 => Whiteout::None,
        1 => Whiteout::Whiteout,
        2 => Whiteout::Opaque,
        _ => return Err(c.corrupt(format!("whiteout kind {w}"))),
    };
    let mut extra = Extra::default();
    if flags & 2 != 0 {
        extra.device = Some((c.u32("major")?, c.u32("minor")?));
    }
    let nx = c.u32("xattr count")?;
    for _ in 0..nx {
        let nl = c.u32("xattr name length")? as usize;
        let vl = c.u32("xattr value length")? as usize;
        let name = c.bytes(nl, "xattr name")?.to_vec();
        let value = c.bytes(vl, "xattr value")?.to_vec();
        extra.xattrs.push((name, value));
    }
    if flags & 4 != 0 {
        let chunk_size = c.u32("chunk size")?;
        let count = c.u32("chunk count")? as usize;
        if count > c.remaining() / 8 {
            return Err(c.corrupt(format!("{count} chunks")));
        }
        let mut t = ChunkTable {
            chunk_size,
            stored: Vec::with_capacity(count),
            crcs: Vec::with_capacity(count),
        };
        for _ in 0..count {
            t.stored.push(c.u32("chunk size")?);
            t.crcs.push(c.u32("chunk crc")?);
        }
        extra.chunks = Some(t);
    }
    let has_extra = extra.device.is_some() || !extra.xattrs.is_empty() || extra.chunks.is_some();
    Ok((
        path,
        Rec {
            obj_offset,
            obj_size,
            size,
            mtime_ns,
            mode,
            crc,
            uid,
            gid,
            comp,
            enc,
            kind,
            whiteout,
            has_owner: flags & 1 != 0,
            extra: has_extra.then(|| Box::new(extra)),
        },
    ))
}

/// Reads a file from an offset of its own (runs are read by several readers at once).
struct At {
    file: File,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A run read from start to end.
struct RunReader {
    input: BufReader<At>,
    name: PathBuf,
    pos: u64,
    len: u64,
    buf: Vec<u8>,
}

impl RunReader {
    fn next(&mut self) -> Result<Option<Item>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let io = |e| Error::Io {
            file: self.name.clone(),
            source: e,
        };
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(io)?;
        let n = u32::from_le_bytes(len) as usize;
        if n as u64 > self.len - self.pos {
            return Err(Error::Corrupt {
                file: self.name.clone(),
                offset: self.pos,
                what: format!("run record of {n} bytes"),
            });
        }
        self.buf.clear();
        self.buf.extend_from_slice(&len);
        self.buf.resize(4 + n, 0);
        self.input.read_exact(&mut self.buf[4..]).map_err(io)?;
        let mut c = Cursor::new(&self.name, &self.buf, self.pos);
        let out = decode(&mut c)?;
        self.pos += 4 + n as u64;
        Ok(Some(out))
    }
}

/// The next record of one source in the merge: smallest path first, then newest rank.
struct Head {
    path: Box<[u8]>,
    rank: u32,
    rec: Rec,
}

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.path == o.path && self.rank == o.rank
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    /// Reversed on the path (BinaryHeap pops the largest): the smallest path comes first, and
    /// of equal paths the newest.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.path.cmp(&self.path).then(self.rank.cmp(&o.rank))
    }
}

/// Where the merge reads records: a run, or the map (the newest).
enum Source {
    Run(RunReader),
    Mem(std::collections::btree_map::IntoIter<Box<[u8]>, Rec>),
}

impl Source {
    fn next(&mut self) -> Result<Option<Item>> {
        match self {
            Source::Run(r) => r.next(),
            Source::Mem(m) => Ok(m.next()),
        }
    }
}

/// The surviving records in path order: runs and memory merged, last add winning, removed
/// trees left out.
pub(super) struct Sorted {
    /// The runs oldest first (a source's rank is its place), then the map.
    sources: Vec<Source>,
    heads: BinaryHeap<Head>,
    tombs: std::iter::Peekable<std::collections::btree_map::IntoIter<Box<[u8]>, u32>>,
    /// Tombstones whose range in path order (the path, then what sorts between it and its
    /// subtree, then the subtree) is not passed yet: nested, innermost last.
    open_tombs: Vec<(Box<[u8]>, u32)>,
    linked: HashSet<u64>,
}

/// True when `path` sorts within the range of tombstone `top`: `top` itself or a path that
/// starts with `top` and a byte up to '/'.
fn in_range(top: &[u8], path: &[u8]) -> bool {
    path.starts_with(top) && (path.len() == top.len() || path[top.len()] <= b'/')
}

impl Sorted {
    /// True when the regular file `rec` is in a link group.
    pub fn is_linked(&self, rec: &Rec) -> bool {
        rec.kind == Kind::File && self.linked.contains(&rec.obj_offset)
    }

    /// The next surviving record.
    pub fn next(&mut self) -> Result<Option<Item>> {
        if let [only] = &mut self.sources[..] {
            // Nothing spilled: the map alone, in which nothing removed is left.
            return only.next();
        }
        let newest = (self.sources.len() - 1) as u32;
        loop {
            let Some(top) = self.heads.pop() else {
                return Ok(None);
            };
            self.refill(top.rank)?;
            // Older records of the same path lose.
            while self.heads.peek().is_some_and(|h| h.path == top.path) {
                if let Some(h) = self.heads.pop() {
                    self.refill(h.rank)?;
                }
            }
            if top.rank == newest || self.tomb_rank(&top.path) <= top.rank {
                return Ok(Some((top.path, top.rec)));
            }
        }
    }

    /// Pushes the next record of source `rank` after its head was taken.
    fn refill(&mut self, rank: u32) -> Result<()> {
        if let Some((path, rec)) = self.sources[rank as usize].next()? {
            self.heads.push(Head { path, rank, rec });
        }
        Ok(())
    }

    /// The newest tombstone covering `path` (0: none); paths must come in order.
    fn tomb_rank(&mut self, path: &[u8]) -> u32 {
        while let Some((t, _)) = self.tombs.peek() {
            if &t[..] > path {
                break;
            }
            if let Some(t) = self.tombs.next() {
                while self
                    .open_tombs
                    .last()
                    .is_some_and(|(o, _)| !in_range(o, &t.0))
                {
                    self.open_tombs.pop();
                }
                self.open_tombs.push(t);
            }
        }
        while self
            .open_tombs
            .last()
            .is_some_and(|(o, _)| !in_range(o, path))
        {
            self.open_tombs.pop();
        }
        self.open_tombs
            .iter()
            .filter(|(t, _)| covers(t, path))
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0)
    }
}
