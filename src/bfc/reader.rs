//! `Container::open` checks everything about the file's structure once — header, footer, index,
//! extension, every path and every object range — and then the rest of the code trusts it.
//! Content checksums are checked when content is read (see `content.rs`).
use super::cache::ChunkCache;
use super::codec::{self, ContentKey, Key};
use super::cursor::Cursor;
use super::error::{show, Error, Result};
use super::ext::{ChunkTable, Ext, Whiteout};
use super::layout::*;
use super::map::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU8;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & S_IFMT {
            S_IFREG => Kind::File,
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink,
            S_IFCHR => Kind::CharDev,
            S_IFBLK => Kind::BlockDev,
            S_IFIFO => Kind::Fifo,
            S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }

    pub fn ifmt(self) -> u32 {
        match self {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
            Kind::CharDev => S_IFCHR,
            Kind::BlockDev => S_IFBLK,
            Kind::Fifo => S_IFIFO,
            Kind::Socket => S_IFSOCK,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::CharDev => "chardev",
            Kind::BlockDev => "blockdev",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One index entry, validated, with what the extension says about it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Full st_mode, including the S_IFMT bits.
    pub mode: u32,
    pub mtime_ns: i64,
    /// Original (decoded) size in bytes; the target length for symlinks.
    pub size: u64,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Linux dev_t of device nodes.
    pub rdev: u64,
    /// Names of this file (>1 for hardlinks).
    pub nlink: u32,
    /// Entries with the same group are one file (they share an inode when mounted).
    pub link_group: Option<u32>,
    pub whiteout: Whiteout,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub obj_offset: u64,
    pub obj_size: u64,
    pub comp: u8,
    pub enc: u8,
    pub crc: u32,
    pub(crate) chunks: Option<Box<Chunks>>,
}

/// A chunk table with its precomputed stored offsets.
#[derive(Debug, Clone)]
pub(crate) struct Chunks {
    pub table: ChunkTable,
    pub offsets: Vec<u64>,
}

impl Entry {
    /// Permission bits (with setuid/setgid/sticky), without the type.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    pub fn is_chunked(&self) -> bool {
        self.chunks.is_some()
    }
}

/// A direct child of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    /// An index entry.
    Entry(usize),
    /// A directory that the index does not list but that has entries below it.
    Implicit(Vec<u8>),
}

/// An open, validated BFC container.
pub struct Container {
    pub(crate) file: PathBuf,
    pub(crate) bytes: Bytes,
    pub(crate) block_size: u32,
    pub(crate) features: u64,
    pub(crate) salt: [u8; 16],
    pub(crate) index_offset: u64,
    pub(crate) index_size: u64,
    pub(crate) entries: Vec<Entry>,
    pub(crate) blobs: Vec<(String, Vec<u8>)>,
    pub(crate) keycheck: Option<[u8; 28]>,
    pub(crate) key: Option<ContentKey>,
    pub(crate) cache: ChunkCache,
    /// Per entry: 0 = whole-content check not done, 1 = passed, 2 = failed.
    pub(crate) checked: Vec<AtomicU8>,
}

/// Default byte bound of the decoded-chunk cache.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Container {
    /// Opens and validates a container file.
    pub fn open(path: &Path) -> Result<Container> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let bytes = Bytes::map(path, &f)?;
        Container::parse(path.to_path_buf(), bytes)
    }

    /// Validates a container held in memory (tests and fuzzing).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Container> {
        Container::parse(PathBuf::from(name), Bytes::Owned(bytes))
    }

    fn parse(file: PathBuf, bytes: Bytes) -> Result<Container> {
        let data = bytes.as_slice();
        let len = data.len() as u64;
        if data.len() < HEADER_SIZE + FOOTER_SIZE {
            if data.len() >= 8 && &data[..8] != MAGIC {
                return Err(Error::NotBfc {
                    file: file.clone(),
                    what: "wrong magic at offset 0".into(),
                });
            }
            return Err(Error::Truncated {
                file: file.clone(),
                offset: len,
                what: format!(
                    "file is {len} bytes, smaller than header + footer ({} bytes)",
                    HEADER_SIZE + FOOTER_SIZE
                ),
            });
        }
        let header = Header::decode(&mut Cursor::new(&file, data, 0))?;
        let (block_size, features) = (header.block_size, header.features);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&header.salt[..16]);

        let foot_off = len - FOOTER_SIZE as u64;
        let Footer {
            index_size,
            index_crc,
            index_offset,
        } = Footer::decode(&mut Cursor::new(
            &file,
            &data[foot_off as usize..],
            foot_off,
        ))?;
        let index_end = index_offset.checked_add(index_size);
        if index_offset < HEADER_SIZE as u64 || index_end.is_none_or(|e| e > foot_off) {
            return Err(Error::Corrupt {
                file: file.clone(),
                offset: foot_off + 8,
                what: format!(
                    "index range {index_offset}+{index_size} is outside the file (objects end before {foot_off})"
                ),
            });
        }
        // One read-ahead for the whole index instead of a page fault per 4 KiB (cold mounts).
        bytes.will_need(index_offset, index_size as usize);
        let index = &data[index_offset as usize..(index_offset + index_size) as usize];
        let computed = codec::bfc_crc(index);
        if computed != index_crc {
            return Err(Error::BadChecksum {
                file: file.clone(),
                what: "index".into(),
                offset: index_offset,
                stored: index_crc,
                computed,
            });
        }

        // Index entries.
        let mut c = Cursor::new(&file, index, index_offset);
        let IndexHeader { version, count } = IndexHeader::decode(&mut c)?;
        if version != INDEX_VERSION {
            return Err(Error::Unsupported {
                file: file.clone(),
                what: format!("index version {version}"),
            });
        }
        if (count as usize).saturating_mul(INDEX_ENTRY_FIXED + 1) > c.remaining() {
            return Err(c.corrupt(format!(
                "entry count {count} does not fit in an index of {index_size} bytes"
            )));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(count as usize);
        for k in 0..count {
            let at = c.offset();
            // The entry number is added only on error, so a valid index parses without
            // formatting anything.
            let IndexRecord {
                path,
                obj_offset,
                obj_size,
                mode,
                mtime_ns: mtime,
                comp,
                enc,
                orig_size: size,
                crc,
            } = IndexRecord::decode(&mut c).map_err(|e| in_entry(e, k))?;
            if let Err(why) = check_path(&path) {
                return Err(Error::Corrupt {
                    file: file.clone(),
                    offset: at,
                    what: format!("index entry {k}: path {:?} {why}", show(&path)),
                });
            }
            if let Some(prev) = entries.last() {
                if prev.path >= path {
                    return Err(Error::Corrupt {
                        file: file.clone(),
                        offset: at,
                        what: format!(
                            "index entry {k} ({}) is not sorted after {} (duplicate or out of order)",
                            show(&path),
                            show(&prev.path)
                        ),
                    });
                }
            }
            let bad = |w: String| Error::Corrupt {
                file: file.clone(),
                offset: at,
                what: format!("index entry {k} ({}): {w}", show(&path)),
            };
            let kind = Kind::from_mode(mode)
                .ok_or_else(|| bad(format!("mode {mode:#o} has no file type")))?;
            let obj_end = obj_offset.checked_add(obj_size);
            if obj_offset < HEADER_SIZE as u64
                || obj_end.is_none_or(|e| e > index_offset)
                || (obj_size < OBJ_HEADER_SIZE as u64)
            {
                return Err(bad(format!(
                    "object {obj_offset}+{obj_size} is outside the object area {HEADER_SIZE}..{index_offset}"
                )));
            }
            // Compression and encryption ids this version does not know are kept (forward
            // compatibility: the container lists; reading such an entry fails, see
            // `Container::payload`). Ids above 254 are kept as 255: the object header holds a byte.
            if kind == Kind::Symlink && size > 65535 {
                return Err(bad(format!("symlink target of {size} bytes")));
            }
            entries.push(Entry {
                path,
                kind,
                mode,
                mtime_ns: mtime as i64,
                size,
                uid: None,
                gid: None,
                rdev: 0,
                nlink: 1,
                link_group: None,
                whiteout: Whiteout::None,
                xattrs: Vec::new(),
                obj_offset,
                obj_size,
                comp: u8::try_from(comp).unwrap_or(u8::MAX),
                enc: u8::try_from(enc).unwrap_or(u8::MAX),
                crc,
                chunks: None,
            });
        }

        // Extension.
        let mut blobs = Vec::new();
        let mut keycheck = None;
        if features & FEATURE_BFCFS_EXT != 0 {
            let ext = Ext::decode(&mut c, count)?;
            apply_ext(&file, &mut entries, ext.clone(), index_offset)?;
            blobs = ext.blobs;
            keycheck = ext.keycheck;
        }
        let checked = (0..entries.len()).map(|_| AtomicU8::new(0)).collect();
        Ok(Container {
            file,
            bytes,
            block_size,
            features,
            salt,
            index_offset,
            index_size,
            entries,
            blobs,
            keycheck,
            key: None,
            cache: ChunkCache::new(DEFAULT_CACHE_BYTES),
            checked,
        })
    }

    /// The container's file name, for messages.
    pub fn file_name(&self) -> &Path {
        &self.file
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn entry(&self, i: usize) -> &Entry {
        &self.entries[i]
    }
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    pub fn features(&self) -> u64 {
        self.features
    }
    pub fn file_size(&self) -> u64 {
        self.bytes.as_slice().len() as u64
    }
    pub fn index_range(&self) -> (u64, u64) {
        (self.index_offset, self.index_size)
    }
    pub fn has_extension(&self) -> bool {
        self.features & FEATURE_BFCFS_EXT != 0
    }
    /// Sets the byte bound of the decoded-chunk cache.
    pub fn set_cache_bytes(&mut self, bytes: usize) {
        self.cache = ChunkCache::new(bytes);
    }

    /// True once `set_key` accepted a key.
    pub fn key_is_set(&self) -> bool {
        self.key.is_some()
    }

    /// True when any entry is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.entries.iter().any(|e| e.enc == ENC_CHACHA20_POLY1305)
    }

    /// A named blob from the extension (e.g. an image's manifest).
    pub fn image_blob(&self, name: &str) -> Option<&[u8]> {
        self.blobs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }
    pub fn image_blob_names(&self) -> impl Iterator<Item = &str> {
        self.blobs.iter().map(|(n, _)| n.as_str())
    }

    /// Index of the entry at `path`, by binary search.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.path.as_slice().cmp(path))
            .ok()
    }

    /// True when `dir` is the root, a directory entry, or an implicit directory (a prefix of
    /// other entries' paths).
    pub fn is_dir(&self, dir: &[u8]) -> bool {
        if dir.is_empty() {
            return true;
        }
        match self.find(dir) {
            Some(i) => self.entries[i].kind == Kind::Dir,
            None => {
                let (lo, hi) = self.prefix_range(dir);
                lo < hi
            }
        }
    }

    /// Range of entries whose path starts with `dir/` (all entries for the root).
    fn prefix_range(&self, dir: &[u8]) -> (usize, usize) {
        if dir.is_empty() {
            return (0, self.entries.len());
        }
        let mut lo_key = dir.to_vec();
        lo_key.push(b'/');
        let mut hi_key = dir.to_vec();
        hi_key.push(b'/' + 1);
        let lo = self
            .entries
            .partition_point(|e| e.path.as_slice() < lo_key.as_slice());
        let hi = self
            .entries
            .partition_point(|e| e.path.as_slice() < hi_key.as_slice());
        (lo, hi)
    }

    /// Direct children of directory `dir` ("" is the root) in byte order of their names, with
    /// directories that only appear as parents of deeper paths synthesized.
    pub fn children(&self, dir: &[u8]) -> Vec<Child> {
        let (mut i, hi) = self.prefix_range(dir);
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        let mut out = Vec::new();
        while i < hi {
            let rest = &self.entries[i].path[skip..];
            match rest.iter().position(|b| *b == b'/') {
                None => {
                    out.push(Child::Entry(i));
                    i += 1;
                }
                Some(slash) => {
                    let name = &rest[..slash];
                    let full = &self.entries[i].path[..skip + slash];
                    // This is the first entry below `full`: skip the whole run of `full/...`
                    // (contiguous in byte order). An implicit duplicate of a listed directory
                    // is removed by the dedup below.
                    out.push(Child::Implicit(name.to_vec()));
                    let (_, sub_hi) = self.prefix_range(full);
                    i = sub_hi.max(i + 1);
                }
            }
        }
        // "a-b" sorts between "a" and "a/x", so an implicit "a" can follow "a-b": sort by name
        // (stable, so a listed entry stays before its implicit twin) and drop the twins.
        out.sort_by(|a, b| self.child_name(a, skip).cmp(self.child_name(b, skip)));
        out.dedup_by(|a, b| self.child_name(a, skip) == self.child_name(b, skip));
        out
    }

    fn child_name<'a>(&'a self, c: &'a Child, skip: usize) -> &'a [u8] {
        match c {
            Child::Entry(i) => &self.entries[*i].path[skip..],
            Child::Implicit(n) => n,
        }
    }

    /// Uses `key` for encrypted content after checking that it is the right one.
    pub fn set_key(&mut self, key: &Key) -> Result<()> {
        let ck = key
            .derive(&self.salt)
            .map_err(|what| Error::Usage { what })?;
        if let Some(kc) = self.keycheck {
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&kc[..12]);
            let s = codec::AeadStream::new(&ck, &nonce, super::ext::KEYCHECK_AD);
            if !s.verify(&kc[12..]) {
                return Err(Error::WrongKey {
                    file: self.file.clone(),
                    what: "the key check stored in the container does not match".into(),
                });
            }
            self.key = Some(ck);
            return Ok(());
        }
        // Upstream containers hold no key check: try the tags of the smallest encrypted files.
        // A wrong key fails them all; damage to one file fails only that one.
        let mut candidates: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                self.entries[i].enc == ENC_CHACHA20_POLY1305 && self.entries[i].kind == Kind::File
            })
            .collect();
        candidates.sort_by_key(|&i| self.entries[i].obj_size);
        candidates.truncate(3);
        if candidates.is_empty() {
            self.key = Some(ck);
            return Ok(());
        }
        let mut first_err = None;
        for &i in &candidates {
            match self.check_tag_with(i, &ck) {
                Ok(true) => {
                    self.key = Some(ck);
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Err(Error::WrongKey {
            file: self.file.clone(),
            what: format!(
                "it does not authenticate {} (checked {} encrypted entries)",
                show(&self.entries[candidates[0]].path),
                candidates.len()
            ),
        })
    }

    pub(crate) fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

/// Names the index entry in a truncation or corruption error raised while parsing it.
fn in_entry(e: Error, k: u32) -> Error {
    // "reading path (N bytes, M left)" -> "reading path of index entry k (N bytes, M left)"
    let name = |what: String| match what.find(" (") {
        Some(i) => format!("{} of index entry {k}{}", &what[..i], &what[i..]),
        None => format!("{what} of index entry {k}"),
    };
    match e {
        Error::Truncated { file, offset, what } => Error::Truncated {
            file,
            offset,
            what: name(what),
        },
        Error::Corrupt { file, offset, what } => Error::Corrupt {
            file,
            offset,
            what: name(what),
        },
        other => other,
    }
}

/// A safe relative path: not empty, no NUL, no leading or trailing '/', no empty, `.` or `..`
/// components, at most 65535 bytes (the object header's name length is 16 bits).
pub fn check_path(path: &[u8]) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.len() > u16::MAX as usize {
        return Err("is longer than 65535 bytes");
    }
    if path.contains(&0) {
        return Err("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Err("is absolute");
    }
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" => return Err("has an empty component"),
            b"." | b".." => return Err("has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// Folds the extension into the entries, checking that it agrees with the index.
fn apply_ext(file: &Path, entries: &mut [Entry], ext: Ext, index_offset: u64) -> Result<()> {
    let bad = |what: String| Error::Corrupt {
        file: file.to_path_buf(),
        offset: index_offset,
        what: format!("extension: {what}"),
    };
    for (i, (u, g)) in ext.owners.iter().enumerate() {
        entries[i].uid = Some(*u);
        entries[i].gid = Some(*g);
    }
    for (e, major, minor) in ext.devices {
        let en = &mut entries[e as usize];
        if !matches!(en.kind, Kind::CharDev | Kind::BlockDev) {
            return Err(bad(format!(
                "device numbers for {}, which is not a device",
                show(&en.path)
            )));
        }
        en.rdev = libc::makedev(major, minor);
    }
    for (e, n, v) in ext.xattrs {
        entries[e as usize].xattrs.push((n, v));
    }
    for (e, t) in ext.hardlinks {
        let (eo, to) = (&entries[e as usize], &entries[t as usize]);
        if eo.kind != Kind::File
            || to.kind != Kind::File
            || eo.obj_offset != to.obj_offset
            || eo.size != to.size
        {
            return Err(bad(format!(
                "hardlink {} -> {} does not name one regular file object",
                show(&eo.path),
                show(&to.path)
            )));
        }
        entries[e as usize].link_group = Some(t);
        entries[t as usize].link_group = Some(t);
    }
    // nlink for every link group.
    let mut counts = std::collections::HashMap::<u32, u32>::new();
    for en in entries.iter() {
        if let Some(g) = en.link_group {
            *counts.entry(g).or_default() += 1;
        }
    }
    for en in entries.iter_mut() {
        if let Some(g) = en.link_group {
            en.nlink = counts.get(&g).copied().unwrap_or(1);
        }
    }
    for (e, w) in ext.whiteouts {
        let en = &mut entries[e as usize];
        if en.kind != Kind::File {
            return Err(bad(format!(
                "whiteout marker {} is not a regular file",
                show(&en.path)
            )));
        }
        en.whiteout = w;
    }
    for (e, table) in ext.chunks {
        let en = &mut entries[e as usize];
        let cs = u64::from(table.chunk_size);
        let need = en.size.div_ceil(cs);
        if en.kind != Kind::File || need != table.stored.len() as u64 {
            return Err(bad(format!(
                "chunk table of {} has {} chunks of {cs} bytes for {} bytes",
                show(&en.path),
                table.stored.len(),
                en.size
            )));
        }
        // Raw chunks are read by position: their stored sizes must be their lengths.
        if en.comp == COMP_NONE {
            if let Some(k) = (0..table.stored.len())
                .find(|&k| u64::from(table.stored[k]) != (en.size - k as u64 * cs).min(cs))
            {
                return Err(bad(format!(
                    "chunk table of {}: raw chunk {k} claims {} stored bytes",
                    show(&en.path),
                    table.stored[k]
                )));
            }
        }
        let offsets = table.offsets();
        en.chunks = Some(Box::new(Chunks { table, offsets }));
    }
    Ok(())
}
