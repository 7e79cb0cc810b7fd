//! The bfcfs extension: what BFC v1 cannot say, carried where the upstream reader ignores it —
//! a tagged section after the index entries, inside the index size (so the index checksum covers
//! it), announced by header feature bit 16. docs/FORMAT.md is the specification.
//!
//! ```text
//! "BFCX" u32 version=1 u32 section_count
//! section_count × { tag u32, len u64, body[len] }
//! ```
//! A tag with bit 31 set must be understood by a reader; other unknown tags are skipped.
use super::cursor::Cursor;
use super::error::{Error, Result};
use super::spool::Spool;
use std::path::PathBuf;

pub const MAGIC: &[u8; 4] = b"BFCX";
pub const VERSION: u32 = 1;
pub const CRITICAL: u32 = 1 << 31;

pub const TAG_OWNERS: u32 = 1;
pub const TAG_DEVICES: u32 = 2;
pub const TAG_XATTRS: u32 = 3;
pub const TAG_HARDLINKS: u32 = 4;
pub const TAG_WHITEOUTS: u32 = 5;
/// Chunk tables change how content is read, so an old reader must refuse rather than misread.
pub const TAG_CHUNKS: u32 = 6 | CRITICAL;
pub const TAG_BLOBS: u32 = 7;
pub const TAG_KEYCHECK: u32 = 8;
/// Subdirectory counts (see `subdirs.rs`): optional, a reader without it counts by listing.
pub const TAG_SUBDIRS: u32 = 9;
/// Where each index record starts (relative to the index): lets a reader open without walking
/// the records. Optional: a reader without it walks them.
pub const TAG_OFFSETS: u32 = 10;

/// The extension locator, the index's last 16 bytes when present: `ext_offset u64` (where
/// "BFCX" starts, relative to the index start) then this magic. It lets a reader find the
/// extension (and OFFSETS) without walking the records first.
pub const LOCATOR_MAGIC: &[u8; 8] = b"BFCXLOC1";
pub const LOCATOR_SIZE: usize = 16;

/// Largest chunk a chunk table may declare (bounds the memory a corrupt table can ask for).
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;

/// OCI whiteout marker kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Whiteout {
    #[default]
    None,
    /// `.wh.NAME`: hides NAME in lower layers.
    Whiteout,
    /// `.wh..wh..opq`: hides every lower entry of its directory.
    Opaque,
}

/// Independent chunks of one entry's content: chunk k holds original bytes
/// `[k*chunk_size, min((k+1)*chunk_size, size))`, stored as `stored[k]` bytes (one zstd frame, or
/// raw bytes for uncompressed content) with checksum `crcs[k]` of its original bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTable {
    pub chunk_size: u32,
    pub stored: Vec<u32>,
    pub crcs: Vec<u32>,
}

impl ChunkTable {
    /// Offsets of each chunk's stored bytes from the start of the (decrypted) payload.
    pub fn offsets(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.stored.len() + 1);
        let mut acc = 0u64;
        out.push(0);
        for s in &self.stored {
            acc += u64::from(*s);
            out.push(acc);
        }
        out
    }
}

/// The extension as the writer builds it, entry by entry in index order: each section's records
/// are encoded as they come into a [`Spool`] (a temp file past a megabyte when the writer spills),
/// so no section the size of the index stays in memory.
pub(super) struct Ext {
    /// (uid, gid) of every entry; dropped when no entry recorded ownership.
    pub owners: Section,
    /// (entry, major, minor) of device nodes.
    pub devices: Section,
    /// (entry, name_len, value_len, name, value).
    pub xattrs: Section,
    /// (entry, first entry of its link group); both index records point at one object.
    pub hardlinks: Section,
    /// (entry, kind).
    pub whiteouts: Section,
    /// (entry, chunk_size, count, count × (stored, crc)).
    pub chunks: Section,
    /// Named opaque blobs (e.g. an image's OCI manifest and config).
    pub blobs: Vec<(String, Vec<u8>)>,
    /// `nonce ‖ tag` of an empty message with associated data `KEYCHECK_AD`: proves a key right
    /// or wrong without touching content.
    pub keycheck: Option<[u8; 28]>,
    /// Subdirectory counts of every directory with subdirectories (`subdirs.rs`); `Some` even
    /// when empty, which says "no directory has subdirectories".
    pub subdirs: Option<Vec<super::subdirs::Record>>,
    /// Start of every index record, relative to the index start; `None` past 4 GiB.
    pub offsets: Option<Section>,
}

/// One section's records as they are added: their count and their bytes.
pub(super) struct Section {
    count: u32,
    body: Spool,
}

impl Section {
    fn new(dir: &Option<PathBuf>) -> Section {
        Section {
            count: 0,
            body: Spool::new(dir.clone()),
        }
    }

    /// Adds one record made of `parts`.
    fn add(&mut self, parts: &[&[u8]]) -> Result<()> {
        self.count = self.count.checked_add(1).ok_or_else(|| Error::Usage {
            what: "over 2^32 records in one extension section".into(),
        })?;
        for p in parts {
            self.body.extend(p)?;
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

pub const KEYCHECK_AD: &[u8] = b"bfcfs keycheck v1";

impl Ext {
    /// An empty extension; sections go to temp files in `spill` (when given) past a megabyte.
    pub fn new(spill: Option<PathBuf>) -> Ext {
        Ext {
            owners: Section::new(&spill),
            devices: Section::new(&spill),
            xattrs: Section::new(&spill),
            hardlinks: Section::new(&spill),
            whiteouts: Section::new(&spill),
            chunks: Section::new(&spill),
            blobs: Vec::new(),
            keycheck: None,
            subdirs: None,
            offsets: Some(Section::new(&spill)),
        }
    }

    /// Leaves the owners section out (no entry recorded ownership).
    pub fn drop_owners(&mut self) {
        self.owners = Section::new(&None);
    }

    pub fn owner(&mut self, uid: u32, gid: u32) -> Result<()> {
        self.owners.add(&[&uid.to_le_bytes(), &gid.to_le_bytes()])
    }

    pub fn device(&mut self, entry: u32, major: u32, minor: u32) -> Result<()> {
        self.devices.add(&[
            &entry.to_le_bytes(),
            &major.to_le_bytes(),
            &minor.to_le_bytes(),
        ])
    }

    pub fn xattr(&mut self, entry: u32, name: &[u8], value: &[u8]) -> Result<()> {
        // The writer refuses names and values over 4 GiB.
        self.xattrs.add(&[
            &entry.to_le_bytes(),
            &(name.len() as u32).to_le_bytes(),
            &(value.len() as u32).to_le_bytes(),
            name,
            value,
        ])
    }

    pub fn hardlink(&mut self, entry: u32, first: u32) -> Result<()> {
        self.hardlinks
            .add(&[&entry.to_le_bytes(), &first.to_le_bytes()])
    }

    pub fn whiteout(&mut self, entry: u32, w: Whiteout) -> Result<()> {
        let kind = match w {
            Whiteout::None => 0u8,
            Whiteout::Whiteout => 1,
            Whiteout::Opaque => 2,
        };
        self.whiteouts.add(&[&entry.to_le_bytes(), &[kind]])
    }

    pub fn chunk_table(&mut self, entry: u32, t: &ChunkTable) -> Result<()> {
        let mut b = Vec::with_capacity(12 + 8 * t.stored.len());
        put32(&mut b, entry);
        put32(&mut b, t.chunk_size);
        put32(&mut b, t.stored.len() as u32);
        for (s, c) in t.stored.iter().zip(&t.crcs) {
            put32(&mut b, *s);
            put32(&mut b, *c);
        }
        self.chunks.add(&[&b])
    }

    /// Where the next index record starts; `None` (past 4 GiB) drops the section.
    pub fn offset(&mut self, at: Option<u32>) -> Result<()> {
        match (self.offsets.as_mut(), at) {
            (Some(s), Some(at)) => s.add(&[&at.to_le_bytes()]),
            _ => {
                self.offsets = None;
                Ok(())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
            && self.devices.is_empty()
            && self.xattrs.is_empty()
            && self.hardlinks.is_empty()
            && self.whiteouts.is_empty()
            && self.chunks.is_empty()
            && self.blobs.is_empty()
            && self.keycheck.is_none()
            && self.subdirs.is_none()
            && self.offsets.is_none()
    }

    /// Writes the extension to `sink`: the spooled sections stream through, a megabyte at most
    /// at a time.
    pub fn encode_to(&mut self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut small: Vec<(u32, Vec<u8>)> = Vec::new();
        if !self.blobs.is_empty() {
            let mut b = Vec::new();
            put32(&mut b, self.blobs.len() as u32);
            for (n, d) in &self.blobs {
                put32(&mut b, n.len() as u32);
                b.extend_from_slice(n.as_bytes());
                b.extend_from_slice(&(d.len() as u64).to_le_bytes());
                b.extend_from_slice(d);
            }
            small.push((TAG_BLOBS, b));
        }
        if let Some(k) = &self.keycheck {
            small.push((TAG_KEYCHECK, k.to_vec()));
        }
        if let Some(recs) = &self.subdirs {
            let mut b = Vec::with_capacity(4 + recs.len() * super::subdirs::RECORD_SIZE);
            put32(&mut b, recs.len() as u32);
            for (first, depth, n) in recs {
                put32(&mut b, *first);
                put32(&mut b, *depth);
                put32(&mut b, *n);
            }
            small.push((TAG_SUBDIRS, b));
        }
        let spooled = [
            (TAG_OWNERS, Some(&mut self.owners)),
            (TAG_DEVICES, Some(&mut self.devices)),
            (TAG_XATTRS, Some(&mut self.xattrs)),
            (TAG_HARDLINKS, Some(&mut self.hardlinks)),
            (TAG_WHITEOUTS, Some(&mut self.whiteouts)),
            (TAG_CHUNKS, Some(&mut self.chunks)),
        ];
        let mut spooled: Vec<(u32, &mut Section)> = spooled
            .into_iter()
            .filter_map(|(t, s)| s.filter(|s| !s.is_empty()).map(|s| (t, s)))
            .collect();
        let offsets = self.offsets.as_mut();
        let n = spooled.len() + small.len() + usize::from(offsets.is_some());
        let mut head = Vec::with_capacity(12);
        head.extend_from_slice(MAGIC);
        put32(&mut head, VERSION);
        put32(&mut head, n as u32);
        sink(&head)?;
        let section_head = |tag: u32, len: u64| {
            let mut h = Vec::with_capacity(12);
            put32(&mut h, tag);
            h.extend_from_slice(&len.to_le_bytes());
            h
        };
        // The order of the sections: the per-entry ones, then blobs, keycheck and subdirs,
        // then offsets.
        for (tag, s) in spooled.iter_mut() {
            sink(&section_head(*tag, 4 + s.body.len()))?;
            sink(&s.count.to_le_bytes())?;
            s.body.drain_to(sink)?;
        }
        for (tag, body) in &small {
            sink(&section_head(*tag, body.len() as u64))?;
            sink(body)?;
        }
        if let Some(s) = offsets {
            sink(&section_head(TAG_OFFSETS, 4 + s.body.len()))?;
            sink(&s.count.to_le_bytes())?;
            s.body.drain_to(sink)?;
        }
        Ok(())
    }
}

/// Where a chunk table's records are: `count × (stored_len u32, crc u32)` at absolute offset `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub at: u64,
    pub chunk_size: u32,
    pub count: u32,
}

/// The extension as `Container::open` keeps it: no heap object per index entry. Ownership is
/// read from its fixed-size records in place; the other sections (one record per special
/// entry, usually few) become compact arrays sorted by entry number, searched by bisection.
/// Variable-length records (xattrs, chunk tables) are kept as offsets and decoded on use.
#[derive(Debug, Default)]
pub struct ExtIndex {
    /// Absolute offset of the OWNERS records (one `(uid, gid)` per entry), when present.
    pub owners_at: Option<u64>,
    /// (entry, major, minor), sorted by entry.
    pub devices: Vec<(u32, u32, u32)>,
    /// (entry, absolute offset of `name_len u32, value_len u32, name, value`), sorted by entry
    /// (stable: an entry's xattrs keep their order).
    pub xattrs: Vec<(u32, u64)>,
    /// (entry, first entry of its group), sorted by entry.
    pub hardlinks: Vec<(u32, u32)>,
    /// (first entry of a group, names in the group), sorted by first.
    pub groups: Vec<(u32, u32)>,
    /// (entry, kind), sorted by entry.
    pub whiteouts: Vec<(u32, Whiteout)>,
    /// (entry, table), sorted by entry.
    pub chunks: Vec<(u32, ChunkRef)>,
    pub blobs: Vec<(String, Vec<u8>)>,
    pub keycheck: Option<[u8; 28]>,
    /// (absolute offset, record count) of the SUBDIRS records, read in place by bisection.
    pub subdirs: Option<(u64, u32)>,
    /// (absolute offset, count) of the OFFSETS records, read in place.
    pub offsets: Option<(u64, u32)>,
}

/// The value stored for `entry` in an array sorted by entry.
pub fn lookup<T: Copy>(v: &[(u32, T)], entry: u32) -> Option<T> {
    v.binary_search_by_key(&entry, |(e, _)| *e)
        .ok()
        .map(|k| v[k].1)
}

impl ExtIndex {
    /// Parses the extension at the cursor and checks its structure: every count against the
    /// bytes present (before anything is allocated), every entry number against `entries`,
    /// every xattr name, whiteout kind and chunk size. What a record must mean for its entry
    /// (a device is a device node, a chunk table covers the file's size) is checked when that
    /// entry is decoded.
    pub fn parse(c: &mut Cursor<'_>, entries: u32) -> Result<ExtIndex> {
        if c.rest().get(..4) != Some(&MAGIC[..]) {
            return Err(
                c.corrupt("feature bit 16 is set but no BFCX extension follows the index entries")
            );
        }
        c.bytes(4, "extension magic")?;
        let version = c.u32("extension version")?;
        if version != VERSION {
            return Err(c.corrupt(format!(
                "extension version {version} (this bfcfs reads {VERSION})"
            )));
        }
        let n = c.u32("extension section count")?;
        let mut ext = ExtIndex::default();
        for _ in 0..n {
            let tag = c.u32("extension section tag")?;
            let len = c.u64("extension section length")?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= c.remaining())
                .ok_or_else(|| {
                    c.corrupt(format!("extension section {tag:#x} claims {len} bytes"))
                })?;
            let start = c.offset();
            let body = c.bytes(len, "extension section")?;
            let mut s = Cursor::new(c_file(c), body, start);
            ext.section(&mut s, tag, entries)
                .map_err(|e| in_section(e, tag))?;
        }
        ext.devices.sort_by_key(|r| r.0);
        ext.xattrs.sort_by_key(|r| r.0);
        ext.hardlinks.sort_by_key(|r| r.0);
        ext.whiteouts.sort_by_key(|r| r.0);
        ext.chunks.sort_by_key(|r| r.0);
        let mut firsts: Vec<u32> = ext.hardlinks.iter().map(|r| r.1).collect();
        firsts.sort_unstable();
        for f in firsts {
            match ext.groups.last_mut() {
                Some((g, n)) if *g == f => *n += 1,
                _ => ext.groups.push((f, 2)),
            }
        }
        Ok(ext)
    }

    fn section(&mut self, s: &mut Cursor<'_>, tag: u32, entries: u32) -> Result<()> {
        match tag {
            TAG_OWNERS => {
                let k = count(s, 8, "owner records")?;
                if k != entries {
                    return Err(s.corrupt(format!("{k} owner records for {entries} entries")));
                }
                self.owners_at = Some(s.offset());
            }
            TAG_DEVICES => {
                let k = count(s, 12, "device records")?;
                for _ in 0..k {
                    let e = entry(s, entries)?;
                    self.devices.push((e, s.u32("major")?, s.u32("minor")?));
                }
            }
            TAG_XATTRS => {
                let k = count(s, 12, "xattr records")?;
                for _ in 0..k {
                    let e = entry(s, entries)?;
                    let at = s.offset();
                    let nl = s.u32("xattr name length")? as usize;
                    let vl = s.u32("xattr value length")? as usize;
                    let name = s.bytes(nl, "xattr name")?;
                    s.bytes(vl, "xattr value")?;
                    if name.is_empty() || name.contains(&0) {
                        return Err(s.corrupt("xattr name is empty or holds NUL"));
                    }
                    self.xattrs.push((e, at));
                }
            }
            TAG_HARDLINKS => {
                let k = count(s, 8, "hardlink records")?;
                for _ in 0..k {
                    let e = entry(s, entries)?;
                    let t = entry(s, entries)?;
                    self.hardlinks.push((e, t));
                }
            }
            TAG_WHITEOUTS => {
                let k = count(s, 5, "whiteout records")?;
                for _ in 0..k {
                    let e = entry(s, entries)?;
                    let w = match s.u8("whiteout kind")? {
                        1 => Whiteout::Whiteout,
                        2 => Whiteout::Opaque,
                        other => return Err(s.corrupt(format!("whiteout kind {other}"))),
                    };
                    self.whiteouts.push((e, w));
                }
            }
            TAG_CHUNKS => {
                let k = count(s, 12, "chunk tables")?;
                for _ in 0..k {
                    let e = entry(s, entries)?;
                    let chunk_size = s.u32("chunk size")?;
                    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
                        return Err(s.corrupt(format!("chunk size {chunk_size}")));
                    }
                    let m = count(s, 8, "chunks")?;
                    let at = s.offset();
                    s.bytes(m as usize * 8, "chunk records")?;
                    self.chunks.push((
                        e,
                        ChunkRef {
                            at,
                            chunk_size,
                            count: m,
                        },
                    ));
                }
            }
            TAG_BLOBS => {
                let k = count(s, 12, "blobs")?;
                for _ in 0..k {
                    let nl = s.u32("blob name length")? as usize;
                    let name = s.bytes(nl, "blob name")?;
                    let name = String::from_utf8(name.to_vec())
                        .map_err(|_| s.corrupt("blob name is not UTF-8"))?;
                    let dl = s.u64("blob length")?;
                    let dl = usize::try_from(dl).map_err(|_| s.corrupt("blob length"))?;
                    self.blobs.push((name, s.bytes(dl, "blob")?.to_vec()));
                }
            }
            TAG_KEYCHECK => {
                self.keycheck = Some(s.array::<28>("key check")?);
            }
            TAG_SUBDIRS => {
                let k = count(s, super::subdirs::RECORD_SIZE, "subdirectory records")?;
                // Records are read where they lie; their order and values are checked by
                // `verify` (a wrong count is a wrong link count, never a wrong read).
                self.subdirs = Some((s.offset(), k));
            }
            TAG_OFFSETS => {
                let k = count(s, 4, "record offsets")?;
                if k != entries {
                    return Err(s.corrupt(format!("{k} record offsets for {entries} entries")));
                }
                // Each offset is checked when its entry is first used (`Container::check_name`).
                self.offsets = Some((s.offset(), k));
            }
            t if t & CRITICAL != 0 => {
                return Err(super::error::Error::Unsupported {
                    file: s.file().to_path_buf(),
                    what: format!("extension section {t:#x} (made by a newer bfcfs?)"),
                })
            }
            _ => {}
        }
        Ok(())
    }

    /// The xattr record at absolute offset `at` of `data` (checked at open).
    pub fn xattr_at(data: &[u8], file: &std::path::Path, at: u64) -> Result<(Vec<u8>, Vec<u8>)> {
        let rest = usize::try_from(at).ok().and_then(|a| data.get(a..));
        let mut s = Cursor::new(file, rest.unwrap_or(&[]), at);
        let nl = s.u32("xattr name length")? as usize;
        let vl = s.u32("xattr value length")? as usize;
        let name = s.bytes(nl, "xattr name")?.to_vec();
        let value = s.bytes(vl, "xattr value")?.to_vec();
        Ok((name, value))
    }
}

/// Where the extension starts (relative to the index), from the locator at the index's end.
pub fn locate(index: &[u8]) -> Option<usize> {
    let tail = index.len().checked_sub(LOCATOR_SIZE)?;
    let loc = index.get(tail..)?;
    if &loc[8..] != LOCATOR_MAGIC {
        return None;
    }
    let at = usize::try_from(u64::from_le_bytes(*loc.first_chunk::<8>()?)).ok()?;
    (index.get(at..tail)?.get(..4) == Some(&MAGIC[..])).then_some(at)
}

/// Prefixes a parse error with the name of the extension section it happened in.
fn in_section(e: super::error::Error, tag: u32) -> super::error::Error {
    use super::error::Error;
    let name = match tag {
        TAG_OWNERS => "owners",
        TAG_DEVICES => "devices",
        TAG_XATTRS => "xattrs",
        TAG_HARDLINKS => "hardlinks",
        TAG_WHITEOUTS => "whiteouts",
        TAG_CHUNKS => "chunks",
        TAG_BLOBS => "blobs",
        TAG_KEYCHECK => "key check",
        TAG_SUBDIRS => "subdirectory counts",
        TAG_OFFSETS => "record offsets",
        _ => "unknown",
    };
    match e {
        Error::Corrupt { file, offset, what } => Error::Corrupt {
            file,
            offset,
            what: format!("extension section {name}: {what}"),
        },
        Error::Truncated { file, offset, what } => Error::Truncated {
            file,
            offset,
            what: format!("extension section {name}: {what}"),
        },
        other => other,
    }
}

fn c_file<'a>(c: &Cursor<'a>) -> &'a std::path::Path {
    c.file()
}

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// Reads a record count and checks that `min_record` bytes per record are present.
fn count(s: &mut Cursor<'_>, min_record: usize, what: &str) -> Result<u32> {
    let k = s.u32(what)?;
    if (k as usize).saturating_mul(min_record) > s.remaining() {
        return Err(s.corrupt(format!("{k} {what} do not fit in {} bytes", s.remaining())));
    }
    Ok(k)
}

fn entry(s: &mut Cursor<'_>, entries: u32) -> Result<u32> {
    let e = s.u32("entry number")?;
    if e >= entries {
        return Err(s.corrupt(format!("entry number {e} out of range ({entries} entries)")));
    }
    Ok(e)
}
