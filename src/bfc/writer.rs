//! Writes a container in one forward pass. Content streams through in chunks, so memory stays
//! bounded whatever the file size; only the (small) object header of a large file is patched
//! once its sizes and checksum are known. The index and the extension are written by `finish`.
use super::codec::{self, AeadStream, ContentKey, Key, NONCE_SIZE, TAG_SIZE};
use super::error::{show, Error, Result};
use super::ext::{self, ChunkTable, Ext, Whiteout};
use super::layout::*;
use super::reader::{check_path, Kind};
use super::records::{Extra, Rec, Records};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How content is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored raw.
    None,
    /// zstd for every file of at least `min_size` bytes (at least 64, as upstream): a file of
    /// one chunk only when it shrinks (as upstream), a larger file always, chunk by chunk.
    Zstd,
    /// zstd only for files of at least `min_size` bytes whose first chunk shrinks by 10% or
    /// more: already-compressed data (images, archives) is stored raw and reads faster.
    Auto,
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub compression: Compression,
    /// zstd level (1..=22).
    pub level: i32,
    /// Files smaller than this are stored raw.
    pub min_size: u64,
    /// Written into the header (upstream never uses it).
    pub block_size: u32,
    pub key: Option<Key>,
    /// Input bytes per independent chunk of large files.
    pub chunk_size: u32,
    /// Bytes of index records kept in memory; past them the records go to sorted runs in temp
    /// files, merged by `finish` (so memory does not grow with the number of entries).
    pub spill_bytes: usize,
    /// Where those runs go (unnamed temp files): by default the output's directory.
    pub spill_dir: Option<PathBuf>,
}

pub const DEFAULT_CHUNK_SIZE: u32 = 128 << 10;

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            compression: Compression::None,
            level: 3,
            min_size: MIN_COMPRESS_SIZE,
            block_size: 4096,
            key: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            spill_bytes: super::records::DEFAULT_SPILL_BYTES,
            spill_dir: None,
        }
    }
}

/// Metadata of an entry being added.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (type bits are ignored).
    pub mode: u32,
    pub mtime_ns: i64,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Streaming, append-only BFC writer. The last add of a path wins (its earlier object stays in
/// the file, unreferenced, which the format allows).
pub struct Writer<W: Write + Seek> {
    out: W,
    pos: u64,
    opts: WriterOptions,
    header: Header,
    key: Option<ContentKey>,
    recs: Records,
    blobs: Vec<(String, Vec<u8>)>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    used_zstd: bool,
    /// The read buffer of `add_file` (a chunk and one byte), kept between files.
    first_chunk: Vec<u8>,
    /// Where messages say the output goes.
    name: PathBuf,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a container: writes the header. `name` is used in error messages.
    pub fn new(mut out: W, opts: WriterOptions, name: &Path) -> Result<Self> {
        let mut salt = [0u8; 32];
        let key = match &opts.key {
            Some(k) => {
                if matches!(k, Key::Password(_)) {
                    salt[..16].copy_from_slice(&codec::random::<16>());
                }
                let mut s16 = [0u8; 16];
                s16.copy_from_slice(&salt[..16]);
                Some(k.derive(&s16).map_err(|what| Error::Usage { what })?)
            }
            None => None,
        };
        if opts.chunk_size == 0 || opts.chunk_size > ext::MAX_CHUNK_SIZE {
            return Err(Error::Usage {
                what: format!("chunk size {} out of range", opts.chunk_size),
            });
        }
        let mut features = 0;
        if opts.compression != Compression::None {
            features |= FEATURE_ZSTD;
        }
        if key.is_some() {
            features |= FEATURE_AEAD;
        }
        let header = Header {
            block_size: opts.block_size,
            features,
            uuid: codec::random::<16>(),
            salt,
        };
        out.write_all(&header.encode())
            .map_err(|e| Error::io(name, e))?;
        let zstd = if opts.compression == Compression::None {
            None
        } else {
            Some(
                zstd::bulk::Compressor::new(opts.level).map_err(|e| Error::Usage {
                    what: format!("zstd level {}: {e}", opts.level),
                })?,
            )
        };
        let spill_dir = match (&opts.spill_dir, name.parent()) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) if !p.as_os_str().is_empty() => p.to_path_buf(),
            (None, _) => PathBuf::from("."),
        };
        let recs = Records::new(opts.spill_bytes, spill_dir);
        Ok(Writer {
            out,
            pos: HEADER_SIZE as u64,
            opts,
            header,
            key,
            recs,
            blobs: Vec::new(),
            zstd,
            used_zstd: false,
            first_chunk: Vec::new(),
            name: name.to_path_buf(),
        })
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(&self.name, e)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io(&self.name, e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn checked(path: &[u8]) -> Result<()> {
        check_path(path).map_err(|why| Error::InvalidPath {
            path: show(path),
            why,
        })
    }

    /// Refuses extended attributes the reader would refuse: an empty name or one holding NUL
    /// (not a valid xattr name on Linux either), or a name or value over 4 GiB.
    fn checked_meta(path: &[u8], meta: &Meta) -> Result<()> {
        for (name, value) in &meta.xattrs {
            if name.is_empty() || name.contains(&0) {
                return Err(Error::Usage {
                    what: format!(
                        "extended attribute name {:?} of {} is empty or holds NUL",
                        show(name),
                        show(path)
                    ),
                });
            }
            if u32::try_from(name.len()).is_err() || u32::try_from(value.len()).is_err() {
                return Err(Error::Usage {
                    what: format!("extended attribute of {} is over 4 GiB", show(path)),
                });
            }
        }
        Ok(())
    }

    /// Writes an object header + name + padding; returns the object's start.
    fn begin_object(&mut self, h: &ObjHeader, path: &[u8]) -> Result<u64> {
        let start = self.pos;
        self.write(&h.encode())?;
        self.write(path)?;
        let pad = pad16(OBJ_HEADER_SIZE + path.len());
        self.write(&[0u8; ALIGN][..pad])?;
        Ok(start)
    }

    fn insert(&mut self, path: &[u8], rec: Rec) -> Result<()> {
        self.recs.insert(path, rec)
    }

    fn rec(idx: IndexRecord, kind: Kind, meta: &Meta) -> Rec {
        let mut rec = Rec {
            obj_offset: idx.obj_offset,
            obj_size: idx.obj_size,
            size: idx.orig_size,
            mtime_ns: idx.mtime_ns,
            mode: idx.mode,
            crc: idx.crc,
            uid: meta.uid.unwrap_or(0),
            gid: meta.gid.unwrap_or(0),
            // The writer only makes the ids it knows.
            comp: idx.comp as u8,
            enc: idx.enc as u8,
            kind,
            whiteout: Whiteout::None,
            has_owner: meta.uid.is_some() || meta.gid.is_some(),
            extra: None,
        };
        if !meta.xattrs.is_empty() {
            rec.extra().xattrs = meta.xattrs.clone();
        }
        rec
    }

    /// Removes `path` and everything below it from the index (a later layer entry replacing a
    /// directory, for instance).
    pub fn remove_tree(&mut self, path: &[u8]) {
        self.recs.remove_tree(path);
    }

    /// True when `path` is in the index.
    pub fn contains(&mut self, path: &[u8]) -> Result<bool> {
        Ok(self.recs.kind_of(path)?.is_some())
    }

    /// Kind of the indexed entry at `path`.
    pub fn kind_of(&mut self, path: &[u8]) -> Result<Option<Kind>> {
        self.recs.kind_of(path)
    }

    /// True when `path` is an indexed directory (cheaper than `kind_of` for a new path once
    /// records have been spilled).
    pub fn is_dir(&mut self, path: &[u8]) -> Result<bool> {
        self.recs.is_dir(path)
    }

    /// Number of sorted runs the records were spilled to so far (0 below `spill_bytes`).
    pub fn spilled_runs(&self) -> usize {
        self.recs.runs()
    }

    pub fn add_dir(&mut self, path: &[u8], meta: &Meta) -> Result<()> {
        Self::checked(path)?;
        Self::checked_meta(path, meta)?;
        let rec = self.empty_object(path, TYPE_DIR, Kind::Dir, meta)?;
        self.insert(path, rec)
    }

    /// Writes an object without payload (directory, device, fifo) and returns its record.
    fn empty_object(&mut self, path: &[u8], obj_type: u8, kind: Kind, meta: &Meta) -> Result<Rec> {
        let mode = (meta.mode & 0o7777) | kind.ifmt();
        let h = ObjHeader::start(obj_type, COMP_NONE, ENC_NONE, path, mode, meta.mtime_ns);
        let start = self.begin_object(&h, path)?;
        let idx = self.index_record(path, start, mode, meta, COMP_NONE, ENC_NONE, 0, 0);
        Ok(Self::rec(idx, kind, meta))
    }

    #[allow(clippy::too_many_arguments)]
    fn index_record(
        &self,
        path: &[u8],
        start: u64,
        mode: u32,
        meta: &Meta,
        comp: u8,
        enc: u8,
        size: u64,
        crc: u32,
    ) -> IndexRecord {
        IndexRecord {
            path: path.to_vec(),
            obj_offset: start,
            obj_size: self.pos - start,
            mode,
            mtime_ns: meta.mtime_ns as u64,
            comp: u32::from(comp),
            enc: u32::from(enc),
            orig_size: size,
            crc,
        }
    }

    pub fn add_symlink(&mut self, path: &[u8], meta: &Meta, target: &[u8]) -> Result<()> {
        Self::checked(path)?;
        Self::checked_meta(path, meta)?;
        if target.is_empty() || target.len() > 65535 || target.contains(&0) {
            return Err(Error::InvalidPath {
                path: show(path),
                why: "symlink target is empty, holds NUL or is over 65535 bytes",
            });
        }
        let mode = (meta.mode & 0o7777) | S_IFLNK;
        let crc = codec::bfc_crc(target);
        let h = ObjHeader {
            orig_size: target.len() as u64,
            stored_size: target.len() as u64,
            crc,
            ..ObjHeader::start(TYPE_SYMLINK, COMP_NONE, ENC_NONE, path, mode, meta.mtime_ns)
        };
        let start = self.begin_object(&h, path)?;
        self.write(target)?;
        self.write(&[0u8; ALIGN][..pad16(target.len())])?;
        let idx = self.index_record(
            path,
            start,
            mode,
            meta,
            COMP_NONE,
            ENC_NONE,
            target.len() as u64,
            crc,
        );
        self.insert(path, Self::rec(idx, Kind::Symlink, meta))
    }

    /// Character or block device, fifo or socket. `rdev` is the (major, minor) of devices.
    pub fn add_special(
        &mut self,
        path: &[u8],
        kind: Kind,
        meta: &Meta,
        rdev: (u32, u32),
    ) -> Result<()> {
        Self::checked(path)?;
        Self::checked_meta(path, meta)?;
        if matches!(kind, Kind::File | Kind::Dir | Kind::Symlink) {
            return Err(Error::Usage {
                what: format!("add_special called for a {}", kind.name()),
            });
        }
        let mut rec = self.empty_object(path, TYPE_SPECIAL, kind, meta)?;
        if matches!(kind, Kind::CharDev | Kind::BlockDev) {
            rec.extra().device = Some(rdev);
        }
        self.insert(path, rec)
    }

    /// An OCI whiteout marker: `path` ends in `.wh.NAME` or is `.wh..wh..opq`. Stored as an
    /// empty regular file (which upstream extracts as such) and marked in the extension.
    pub fn add_whiteout(&mut self, path: &[u8], meta: &Meta) -> Result<()> {
        let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
        let w = if name == b".wh..wh..opq" {
            Whiteout::Opaque
        } else if name.starts_with(b".wh.") && name.len() > 4 {
            Whiteout::Whiteout
        } else {
            return Err(Error::InvalidPath {
                path: show(path),
                why: "a whiteout's name starts with .wh.",
            });
        };
        self.add_file(path, meta, &mut std::io::empty())?;
        if let Some(r) = self.recs.last_added(path) {
            r.whiteout = w;
        }
        Ok(())
    }

    /// Another name for the regular file already added at `target`.
    pub fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<()> {
        Self::checked(path)?;
        let Some(t) = self.recs.get(target)? else {
            return Err(Error::InvalidPath {
                path: show(path),
                why: "hardlink target is not (yet) in the container",
            });
        };
        if t.kind != Kind::File || t.whiteout != Whiteout::None {
            return Err(Error::InvalidPath {
                path: show(path),
                why: "hardlink target is not a regular file",
            });
        }
        self.recs.link(t.obj_offset);
        self.insert(path, t)
    }

    /// A named blob carried in the extension (an image's manifest or config).
    pub fn add_image_blob(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.blobs.retain(|(n, _)| n != name);
        self.blobs.push((name.to_string(), bytes.to_vec()));
        Ok(())
    }

    /// Adds a regular file, streaming `content` to its end. Returns the bytes read.
    pub fn add_file(&mut self, path: &[u8], meta: &Meta, content: &mut dyn Read) -> Result<u64> {
        self.add_file_sized(path, meta, content, None)
    }

    /// `add_file` for content whose size is known in advance (a local file), so the `-t`
    /// threshold applies to large files too.
    pub fn add_file_sized(
        &mut self,
        path: &[u8],
        meta: &Meta,
        content: &mut dyn Read,
        size: Option<u64>,
    ) -> Result<u64> {
        Self::checked(path)?;
        Self::checked_meta(path, meta)?;
        let cs = self.opts.chunk_size as usize;
        // Read one byte more than a chunk to learn whether the file is a single chunk, into a
        // buffer kept from file to file (zeroing a fresh one cost more than all the rest of a
        // small file's conversion).
        let mut buf = std::mem::take(&mut self.first_chunk);
        buf.resize(cs + 1, 0);
        let n = read_full(content, &mut buf).map_err(|e| self.io_in(path, e))?;
        let mode = (meta.mode & 0o7777) | S_IFREG;
        if n <= cs {
            let data = buf[..n].to_vec();
            self.first_chunk = buf;
            return self.add_small(path, meta, mode, data);
        }
        let mut carry = Some(buf[cs]);
        buf.truncate(cs);
        // zstd: every chunk is a frame, whatever the first chunk does. An incompressible chunk
        // costs a few bytes (zstd stores it as raw blocks), while a file whose start does not
        // compress (noise, then a sparse or text body) still shrinks. auto: decide from the
        // first chunk.
        let first_frame = match (
            self.opts.compression,
            self.wants_zstd(size.unwrap_or(u64::MAX)),
        ) {
            (_, false) | (Compression::None, _) => None,
            (Compression::Zstd, true) => Some(self.compress(&buf)?),
            (Compression::Auto, true) => self.compress_if_smaller(&buf)?,
        };
        let comp = if first_frame.is_some() {
            COMP_ZSTD
        } else {
            COMP_NONE
        };
        let enc = if self.key.is_some() {
            ENC_CHACHA20_POLY1305
        } else {
            ENC_NONE
        };
        let placeholder = ObjHeader::start(TYPE_FILE, comp, enc, path, mode, meta.mtime_ns);
        let start = self.begin_object(&placeholder, path)?;
        let payload_start = self.pos;
        let mut aead = match &self.key {
            Some(k) => {
                let nonce = codec::random::<NONCE_SIZE>();
                let s = AeadStream::new(k, &nonce, path);
                self.write(&nonce)?;
                Some(s)
            }
            None => None,
        };
        let mut table = ChunkTable {
            chunk_size: cs as u32,
            stored: Vec::new(),
            crcs: Vec::new(),
        };
        let mut crc = 0u32;
        let mut size = 0u64;
        let mut frame = first_frame;
        let mut chunk = buf;
        loop {
            let ccrc = codec::bfc_crc(&chunk);
            crc = codec::bfc_crc_append(crc, &chunk);
            size += chunk.len() as u64;
            let mut stored = match (comp, frame.take()) {
                (COMP_ZSTD, Some(f)) => f,
                (COMP_ZSTD, None) => self.compress(&chunk)?,
                _ => std::mem::take(&mut chunk),
            };
            if let Some(a) = aead.as_mut() {
                a.encrypt(&mut stored);
            }
            table.stored.push(stored.len() as u32);
            table.crcs.push(ccrc);
            self.write(&stored)?;
            // Next chunk: the byte read ahead (first round only), then the input.
            let mut next = Vec::with_capacity(cs);
            next.extend(carry.take());
            let filled = next.len();
            next.resize(cs, 0);
            let got = read_full(content, &mut next[filled..]).map_err(|e| self.io_in(path, e))?;
            next.truncate(filled + got);
            if next.is_empty() {
                break;
            }
            chunk = next;
        }
        if let Some(a) = aead.take() {
            let tag = a.tag();
            self.write(&tag)?;
        }
        let stored_size = self.pos - payload_start;
        let h = ObjHeader {
            orig_size: size,
            stored_size,
            crc,
            ..placeholder
        };
        let end = self.pos;
        self.out
            .seek(SeekFrom::Start(start))
            .map_err(|e| self.io(e))?;
        self.out.write_all(&h.encode()).map_err(|e| self.io(e))?;
        self.out
            .seek(SeekFrom::Start(end))
            .map_err(|e| self.io(e))?;
        if comp == COMP_ZSTD {
            self.used_zstd = true;
        }
        let idx = self.index_record(path, start, mode, meta, comp, enc, size, crc);
        let mut rec = Self::rec(idx, Kind::File, meta);
        rec.extra().chunks = Some(table);
        self.insert(path, rec)?;
        Ok(size)
    }

    fn io_in(&self, path: &[u8], e: std::io::Error) -> Error {
        Error::Io {
            file: PathBuf::from(show(path)),
            source: e,
        }
    }

    fn wants_zstd(&self, size: u64) -> bool {
        match self.opts.compression {
            Compression::None => false,
            Compression::Zstd | Compression::Auto => {
                size >= self.opts.min_size.max(MIN_COMPRESS_SIZE)
            }
        }
    }

    fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let z = self.zstd.as_mut().ok_or_else(|| Error::Usage {
            what: "compression is off".into(),
        })?;
        z.compress(data).map_err(|e| Error::Io {
            file: self.name.clone(),
            source: e,
        })
    }

    /// The zstd frame of `data` if it is worth keeping (smaller; 10% smaller in auto mode).
    fn compress_if_smaller(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>> {
        let f = self.compress(data)?;
        let limit = match self.opts.compression {
            Compression::Auto => data.len() / 10 * 9,
            _ => data.len(),
        };
        Ok((f.len() < limit).then_some(f))
    }

    /// A file of at most one chunk: everything is known before the header is written.
    fn add_small(&mut self, path: &[u8], meta: &Meta, mode: u32, data: Vec<u8>) -> Result<u64> {
        let size = data.len() as u64;
        let crc = codec::bfc_crc(&data);
        let mut comp = COMP_NONE;
        let mut payload = data;
        if self.wants_zstd(size) {
            if let Some(f) = self.compress_if_smaller(&payload)? {
                payload = f;
                comp = COMP_ZSTD;
                self.used_zstd = true;
            }
        }
        let mut enc = ENC_NONE;
        if let Some(k) = &self.key {
            enc = ENC_CHACHA20_POLY1305;
            let nonce = codec::random::<NONCE_SIZE>();
            let mut s = AeadStream::new(k, &nonce, path);
            s.encrypt(&mut payload);
            let mut full = Vec::with_capacity(NONCE_SIZE + payload.len() + TAG_SIZE);
            full.extend_from_slice(&nonce);
            full.extend_from_slice(&payload);
            full.extend_from_slice(&s.tag());
            payload = full;
        }
        let h = ObjHeader {
            orig_size: size,
            stored_size: payload.len() as u64,
            crc,
            ..ObjHeader::start(TYPE_FILE, comp, enc, path, mode, meta.mtime_ns)
        };
        let start = self.begin_object(&h, path)?;
        self.write(&payload)?;
        let idx = self.index_record(path, start, mode, meta, comp, enc, size, crc);
        self.insert(path, Self::rec(idx, Kind::File, meta))?;
        Ok(size)
    }

    /// Writes the index, the extension and the footer; returns the output. The index records
    /// stream to the output in path order (nothing the size of the index is built in memory);
    /// the extension is built alongside. The entry count is known only at the end (spilled
    /// records are merged as they are written), so the index header is written last, and its
    /// checksum joined to the rest's.
    pub fn finish(mut self) -> Result<W> {
        let recs = std::mem::replace(&mut self.recs, Records::new(0, PathBuf::new()));
        // A layer large enough to spill its records spools its extension to disk too.
        let mut ext = Ext::new(recs.spill_dir());
        let mut sorted = recs.into_sorted()?;
        let mut any_owner = false;
        let index_offset = self.pos;
        let placeholder = [0u8; INDEX_HEADER_SIZE];
        self.write(&placeholder)?;
        let mut index = IndexWriter {
            buf: Vec::with_capacity(INDEX_BUF),
            crc: 0,
            len: INDEX_HEADER_SIZE as u64,
        };
        // Hardlink groups: regular files whose object was a link target; the first name in
        // path order is the group's.
        let mut first_of: HashMap<u64, u32> = HashMap::new();
        let mut rec = IndexRecord {
            path: Vec::new(),
            obj_offset: 0,
            obj_size: 0,
            mode: 0,
            mtime_ns: 0,
            comp: 0,
            enc: 0,
            orig_size: 0,
            crc: 0,
        };
        let mut subdirs = super::subdirs::Counter::default();
        let mut count = 0u32;
        while let Some((path, r)) = sorted.next()? {
            let i = count;
            count = count.checked_add(1).ok_or_else(|| Error::Usage {
                what: "too many entries".into(),
            })?;
            subdirs.add(i, &path, r.kind == Kind::Dir);
            // Record starts for OFFSETS (an index over 4 GiB goes without: a reader walks it).
            ext.offset(u32::try_from(index.len + index.buf.len() as u64).ok())?;
            rec.path.clear();
            rec.path.extend_from_slice(&path);
            rec.obj_offset = r.obj_offset;
            rec.obj_size = r.obj_size;
            rec.mode = r.mode;
            rec.mtime_ns = r.mtime_ns;
            rec.comp = u32::from(r.comp);
            rec.enc = u32::from(r.enc);
            rec.orig_size = r.size;
            rec.crc = r.crc;
            rec.encode_into(&mut index.buf);
            if index.buf.len() >= INDEX_BUF {
                self.flush_index(&mut index)?;
            }
            any_owner |= r.has_owner;
            ext.owner(r.uid, r.gid)?;
            if sorted.is_linked(&r) {
                match first_of.get(&r.obj_offset) {
                    Some(&f) => ext.hardlink(i, f)?,
                    None => {
                        first_of.insert(r.obj_offset, i);
                    }
                }
            }
            if r.whiteout != Whiteout::None {
                ext.whiteout(i, r.whiteout)?;
            }
            if let Some(x) = r.extra {
                let Extra {
                    xattrs,
                    device,
                    chunks,
                } = *x;
                if let Some((ma, mi)) = device {
                    ext.device(i, ma, mi)?;
                }
                for (n, v) in &xattrs {
                    ext.xattr(i, n, v)?;
                }
                if let Some(t) = &chunks {
                    ext.chunk_table(i, t)?;
                }
            }
        }
        drop(sorted);
        if !any_owner {
            ext.drop_owners();
        }
        drop(first_of);
        ext.subdirs = Some(subdirs.finish());
        ext.blobs = std::mem::take(&mut self.blobs);
        if let Some(k) = &self.key {
            let nonce = codec::random::<NONCE_SIZE>();
            let tag = AeadStream::new(k, &nonce, ext::KEYCHECK_AD).tag();
            let mut kc = [0u8; 28];
            kc[..12].copy_from_slice(&nonce);
            kc[12..].copy_from_slice(&tag);
            ext.keycheck = Some(kc);
        }
        if !ext.is_empty() {
            let at = index.len + index.buf.len() as u64;
            ext.encode_to(&mut |b| {
                index.buf.extend_from_slice(b);
                if index.buf.len() >= INDEX_BUF {
                    self.flush_index(&mut index)?;
                }
                Ok(())
            })?;
            index.buf.extend_from_slice(&at.to_le_bytes());
            index.buf.extend_from_slice(ext::LOCATOR_MAGIC);
            self.header.features |= FEATURE_BFCFS_EXT;
        }
        drop(ext);
        self.flush_index(&mut index)?;
        let mut header = Vec::with_capacity(INDEX_HEADER_SIZE);
        IndexHeader {
            version: INDEX_VERSION,
            count,
        }
        .encode_into(&mut header);
        let end = self.pos;
        self.out
            .seek(SeekFrom::Start(index_offset))
            .map_err(|e| self.io(e))?;
        self.out.write_all(&header).map_err(|e| self.io(e))?;
        self.out
            .seek(SeekFrom::Start(end))
            .map_err(|e| self.io(e))?;
        let footer = Footer {
            index_size: index.len,
            index_crc: codec::bfc_crc_join(
                codec::bfc_crc(&header),
                index.crc,
                index.len - INDEX_HEADER_SIZE as u64,
            ),
            index_offset,
        };
        self.write(&footer.encode())?;
        let header = self.header.encode();
        self.out.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        self.out.write_all(&header).map_err(|e| self.io(e))?;
        self.out
            .seek(SeekFrom::Start(self.pos))
            .map_err(|e| self.io(e))?;
        self.out.flush().map_err(|e| self.io(e))?;
        Ok(self.out)
    }

    /// Writes the buffered index bytes, adding them to the checksum and size.
    fn flush_index(&mut self, index: &mut IndexWriter) -> Result<()> {
        index.crc = crc32c::crc32c_append(index.crc, &index.buf);
        index.len += index.buf.len() as u64;
        let buf = std::mem::take(&mut index.buf);
        self.write(&buf)?;
        index.buf = buf;
        index.buf.clear();
        Ok(())
    }
}

/// Bytes of index buffered before they are written.
const INDEX_BUF: usize = 1 << 20;

/// The index as `finish` streams it: pending bytes, the CRC-32C of what was written after the
/// header, and the index size so far (header included).
struct IndexWriter {
    buf: Vec<u8>,
    crc: u32,
    len: u64,
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
