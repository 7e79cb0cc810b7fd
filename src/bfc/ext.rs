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
use super::error::Result;

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

/// Everything the extension holds, by entry index (index order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ext {
    /// (uid, gid) of every entry, or empty when ownership was not recorded.
    pub owners: Vec<(u32, u32)>,
    /// (entry, major, minor) of device nodes.
    pub devices: Vec<(u32, u32, u32)>,
    pub xattrs: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// (entry, first entry of its link group); both index records point at one object.
    pub hardlinks: Vec<(u32, u32)>,
    pub whiteouts: Vec<(u32, Whiteout)>,
    pub chunks: Vec<(u32, ChunkTable)>,
    /// Named opaque blobs (e.g. an image's OCI manifest and config).
    pub blobs: Vec<(String, Vec<u8>)>,
    /// `nonce ‖ tag` of an empty message with associated data `KEYCHECK_AD`: proves a key right
    /// or wrong without touching content.
    pub keycheck: Option<[u8; 28]>,
}

pub const KEYCHECK_AD: &[u8] = b"bfcfs keycheck v1";

impl Ext {
    pub fn is_empty(&self) -> bool {
        *self == Ext::default()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();
        if !self.owners.is_empty() {
            let mut b = Vec::with_capacity(4 + self.owners.len() * 8);
            put32(&mut b, self.owners.len() as u32);
            for (u, g) in &self.owners {
                put32(&mut b, *u);
                put32(&mut b, *g);
            }
            sections.push((TAG_OWNERS, b));
        }
        if !self.devices.is_empty() {
            let mut b = Vec::new();
            put32(&mut b, self.devices.len() as u32);
            for (e, ma, mi) in &self.devices {
                put32(&mut b, *e);
                put32(&mut b, *ma);
                put32(&mut b, *mi);
            }
            sections.push((TAG_DEVICES, b));
        }
        if !self.xattrs.is_empty() {
            let mut b = Vec::new();
            put32(&mut b, self.xattrs.len() as u32);
            for (e, n, v) in &self.xattrs {
                put32(&mut b, *e);
                put32(&mut b, n.len() as u32);
                put32(&mut b, v.len() as u32);
                b.extend_from_slice(n);
                b.extend_from_slice(v);
            }
            sections.push((TAG_XATTRS, b));
        }
        if !self.hardlinks.is_empty() {
            let mut b = Vec::new();
            put32(&mut b, self.hardlinks.len() as u32);
            for (e, t) in &self.hardlinks {
                put32(&mut b, *e);
                put32(&mut b, *t);
            }
            sections.push((TAG_HARDLINKS, b));
        }
        if !self.whiteouts.is_empty() {
            let mut b = Vec::new();
            put32(&mut b, self.whiteouts.len() as u32);
            for (e, w) in &self.whiteouts {
                put32(&mut b, *e);
                b.push(match w {
                    Whiteout::None => 0,
                    Whiteout::Whiteout => 1,
                    Whiteout::Opaque => 2,
                });
            }
            sections.push((TAG_WHITEOUTS, b));
        }
        if !self.chunks.is_empty() {
            let mut b = Vec::new();
            put32(&mut b, self.chunks.len() as u32);
            for (e, t) in &self.chunks {
                put32(&mut b, *e);
                put32(&mut b, t.chunk_size);
                put32(&mut b, t.stored.len() as u32);
                for (s, c) in t.stored.iter().zip(&t.crcs) {
                    put32(&mut b, *s);
                    put32(&mut b, *c);
                }
            }
            sections.push((TAG_CHUNKS, b));
        }
        if !self.blobs.is_empty() {
            let mut b = Vec::new();
            put32(&mut b, self.blobs.len() as u32);
            for (n, d) in &self.blobs {
                put32(&mut b, n.len() as u32);
                b.extend_from_slice(n.as_bytes());
                b.extend_from_slice(&(d.len() as u64).to_le_bytes());
                b.extend_from_slice(d);
            }
            sections.push((TAG_BLOBS, b));
        }
        if let Some(k) = &self.keycheck {
            sections.push((TAG_KEYCHECK, k.to_vec()));
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        put32(&mut out, VERSION);
        put32(&mut out, sections.len() as u32);
        for (tag, body) in sections {
            put32(&mut out, tag);
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(&body);
        }
        out
    }

    /// Parses the extension. `entries` is the index entry count: every entry number is checked
    /// against it, and counts are checked against the bytes present before anything is allocated.
    pub fn decode(c: &mut Cursor<'_>, entries: u32) -> Result<Ext> {
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
        let mut ext = Ext::default();
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
            // Errors inside a section say which section they are in.
            let mut section = || -> Result<()> {
                match tag {
                    TAG_OWNERS => {
                        let k = count(&mut s, 8, "owner records")?;
                        if k != entries {
                            return Err(
                                s.corrupt(format!("{k} owner records for {entries} entries"))
                            );
                        }
                        for _ in 0..k {
                            ext.owners.push((s.u32("uid")?, s.u32("gid")?));
                        }
                    }
                    TAG_DEVICES => {
                        let k = count(&mut s, 12, "device records")?;
                        for _ in 0..k {
                            let e = entry(&mut s, entries)?;
                            ext.devices.push((e, s.u32("major")?, s.u32("minor")?));
                        }
                    }
                    TAG_XATTRS => {
                        let k = count(&mut s, 12, "xattr records")?;
                        for _ in 0..k {
                            let e = entry(&mut s, entries)?;
                            let nl = s.u32("xattr name length")? as usize;
                            let vl = s.u32("xattr value length")? as usize;
                            let name = s.bytes(nl, "xattr name")?.to_vec();
                            let value = s.bytes(vl, "xattr value")?.to_vec();
                            if name.is_empty() || name.contains(&0) {
                                return Err(s.corrupt("xattr name is empty or holds NUL"));
                            }
                            ext.xattrs.push((e, name, value));
                        }
                    }
                    TAG_HARDLINKS => {
                        let k = count(&mut s, 8, "hardlink records")?;
                        for _ in 0..k {
                            let e = entry(&mut s, entries)?;
                            let t = entry(&mut s, entries)?;
                            ext.hardlinks.push((e, t));
                        }
                    }
                    TAG_WHITEOUTS => {
                        let k = count(&mut s, 5, "whiteout records")?;
                        for _ in 0..k {
                            let e = entry(&mut s, entries)?;
                            let w = match s.u8("whiteout kind")? {
                                1 => Whiteout::Whiteout,
                                2 => Whiteout::Opaque,
                                other => return Err(s.corrupt(format!("whiteout kind {other}"))),
                            };
                            ext.whiteouts.push((e, w));
                        }
                    }
                    TAG_CHUNKS => {
                        let k = count(&mut s, 12, "chunk tables")?;
                        for _ in 0..k {
                            let e = entry(&mut s, entries)?;
                            let chunk_size = s.u32("chunk size")?;
                            if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
                                return Err(s.corrupt(format!("chunk size {chunk_size}")));
                            }
                            let m = count(&mut s, 8, "chunks")? as usize;
                            let mut stored = Vec::with_capacity(m);
                            let mut crcs = Vec::with_capacity(m);
                            for _ in 0..m {
                                stored.push(s.u32("chunk stored size")?);
                                crcs.push(s.u32("chunk checksum")?);
                            }
                            ext.chunks.push((
                                e,
                                ChunkTable {
                                    chunk_size,
                                    stored,
                                    crcs,
                                },
                            ));
                        }
                    }
                    TAG_BLOBS => {
                        let k = count(&mut s, 12, "blobs")?;
                        for _ in 0..k {
                            let nl = s.u32("blob name length")? as usize;
                            let name = s.bytes(nl, "blob name")?;
                            let name = String::from_utf8(name.to_vec())
                                .map_err(|_| s.corrupt("blob name is not UTF-8"))?;
                            let dl = s.u64("blob length")?;
                            let dl = usize::try_from(dl).map_err(|_| s.corrupt("blob length"))?;
                            ext.blobs.push((name, s.bytes(dl, "blob")?.to_vec()));
                        }
                    }
                    TAG_KEYCHECK => {
                        ext.keycheck = Some(s.array::<28>("key check")?);
                    }
                    t if t & CRITICAL != 0 => {
                        return Err(super::error::Error::Unsupported {
                            file: c_file(c).to_path_buf(),
                            what: format!("extension section {t:#x} (made by a newer bfcfs?)"),
                        })
                    }
                    _ => {}
                }
                Ok(())
            };
            section().map_err(|e| in_section(e, tag))?;
        }
        Ok(ext)
    }
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
