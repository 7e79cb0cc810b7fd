//! File content: a plain slice of the mapping, zstd frames, or ChaCha20-Poly1305, always checked.
//! No byte is handed out before its check passed: a chunk's checksum (chunk tables), the whole
//! file's checksum (upstream files, checked once per open container), and the AEAD tag of the
//! whole payload (checked once before any plaintext is released).
use super::ahead;
use super::codec::{self, ContentKey, NONCE_SIZE, TAG_SIZE};
use super::error::{show, Error, Result};
use super::layout::*;
use super::reader::{Chunks, Container, Entry, Kind};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Granule in which content without a chunk table is cached after a whole-file decode.
const VIRTUAL_CHUNK: u64 = 128 << 10;

const GOOD: u8 = 1;
const BAD: u8 = 2;

/// Where an entry's stored bytes are, from its object header.
pub(crate) struct Payload<'a> {
    /// Path stored in the object: the AEAD associated data.
    pub name: &'a [u8],
    /// Stored payload bytes (for encrypted entries: nonce ‖ ciphertext ‖ tag).
    pub data: &'a [u8],
    /// Absolute offset of `data`.
    pub offset: u64,
    pub stored_size: u64,
}

impl<'a> Payload<'a> {
    fn nonce(&self) -> [u8; NONCE_SIZE] {
        let mut n = [0u8; NONCE_SIZE];
        n.copy_from_slice(&self.data[..NONCE_SIZE]);
        n
    }
    fn ciphertext(&self) -> &'a [u8] {
        &self.data[NONCE_SIZE..self.data.len() - TAG_SIZE]
    }
    fn tag(&self) -> &'a [u8] {
        &self.data[self.data.len() - TAG_SIZE..]
    }
}

impl Container {
    fn corrupt(&self, offset: u64, what: String) -> Error {
        Error::Corrupt {
            file: self.file.clone(),
            offset,
            what,
        }
    }

    /// Parses and checks entry `e`'s object header and locates its payload.
    pub(crate) fn payload(&self, e: &Entry) -> Result<Payload<'_>> {
        self.locate_payload(e).map_err(|err| {
            match self.bytes.intact(e.obj_offset, e.obj_size as usize) {
                Err(now) => self.gone(e.obj_offset, now, format!("object of {}", show(&e.path))),
                Ok(()) => err,
            }
        })
    }

    fn locate_payload(&self, e: &Entry) -> Result<Payload<'_>> {
        // Ids from a newer writer: the entry lists, its content cannot be read.
        for (what, id, known) in [
            ("compression", e.comp, e.comp <= COMP_ZSTD),
            ("encryption", e.enc, e.enc <= ENC_CHACHA20_POLY1305),
        ] {
            if !known {
                return Err(Error::UnsupportedCodec {
                    file: self.file.clone(),
                    what,
                    id,
                    path: show(&e.path),
                });
            }
        }
        // A partial file fetches the header (a chunked file's) or the whole object first.
        self.need(e.obj_offset, (OBJ_HEADER_SIZE + e.path.len()) as u64)?;
        let data = self.data();
        // Validated at open: the object lies inside the object area.
        let obj = &data[e.obj_offset as usize..(e.obj_offset + e.obj_size) as usize];
        let mut c = super::cursor::Cursor::new(&self.file, obj, e.obj_offset);
        let h = ObjHeader::decode(&mut c)?;
        let p = show(&e.path);
        if u32::from(h.comp) != u32::from(e.comp) || h.enc != e.enc || h.orig_size != e.size {
            return Err(self.corrupt(
                e.obj_offset,
                format!("object header of {p} disagrees with its index entry (compression, encryption or size)"),
            ));
        }
        let name = c.bytes(h.name_len as usize, "object name")?;
        let start = payload_offset(h.name_len as usize) as u64;
        let end = start
            .checked_add(h.stored_size)
            .filter(|end| *end <= e.obj_size);
        let Some(end) = end else {
            return Err(self.corrupt(
                e.obj_offset,
                format!(
                    "payload of {p} ({} bytes) overruns its object ({} bytes)",
                    h.stored_size, e.obj_size
                ),
            ));
        };
        let plain = e.comp == COMP_NONE && e.enc == ENC_NONE;
        if plain && h.stored_size != e.size && e.kind == Kind::File {
            return Err(self.corrupt(
                e.obj_offset,
                format!(
                    "{p} is stored raw but its stored size {} is not its size {}",
                    h.stored_size, e.size
                ),
            ));
        }
        if e.enc != ENC_NONE && h.stored_size < (NONCE_SIZE + TAG_SIZE) as u64 {
            return Err(self.corrupt(
                e.obj_offset,
                format!("encrypted payload of {p} is too short"),
            ));
        }
        Ok(Payload {
            name,
            data: &obj[start as usize..end as usize],
            offset: e.obj_offset + start,
            stored_size: h.stored_size,
        })
    }

    fn key_for(&self, e: &Entry) -> Result<&ContentKey> {
        self.key.as_ref().ok_or_else(|| Error::KeyRequired {
            file: self.file.clone(),
            path: show(&e.path),
        })
    }

    /// The target of symlink `i`, checked against its checksum.
    pub fn symlink_target(&self, i: usize) -> Result<&[u8]> {
        let e = self.used_entry(i)?;
        if e.kind != Kind::Symlink {
            return Err(self.corrupt(e.obj_offset, format!("{} is not a symlink", show(&e.path))));
        }
        let p = self.payload(&e)?;
        let t = p.data.get(..e.size as usize).ok_or_else(|| {
            self.corrupt(
                p.offset,
                format!("symlink target of {} is cut short", show(&e.path)),
            )
        })?;
        let computed = codec::bfc_crc(t);
        self.still_there(&e, p.offset, t.len())?;
        if computed != e.crc {
            return Err(self.bad_checksum(&e, p.offset, computed));
        }
        Ok(t)
    }

    /// Checks, after `len` stored bytes of `e` at absolute `offset` were read from the mapping,
    /// that they were still in the file (see `map.rs`): otherwise an error saying they are gone.
    fn still_there(&self, e: &Entry, offset: u64, len: usize) -> Result<()> {
        self.bytes.intact(offset, len).map_err(|now| {
            self.gone(
                offset,
                now,
                format!(
                    "content of {} ({len} bytes at offset {offset})",
                    show(&e.path)
                ),
            )
        })
    }

    /// `err`, or the error saying the content is gone when the stored bytes of `e` are no
    /// longer all in the file (zeros read in their place fail checks with a misleading error).
    fn gone_or(&self, e: &Entry, p: &Payload<'_>, err: Error) -> Error {
        match self.still_there(e, p.offset, p.data.len()) {
            Err(gone) => gone,
            Ok(()) => err,
        }
    }

    fn bad_checksum(&self, e: &Entry, offset: u64, computed: u32) -> Error {
        Error::BadChecksum {
            file: self.file.clone(),
            what: format!("content of {}", show(&e.path)),
            offset,
            stored: e.crc,
            computed,
        }
    }

    /// Checks the AEAD tag of entry `i` with `key` (used to test a key). Ok(false): tag fails.
    pub(crate) fn check_tag_with(&self, i: usize, key: &ContentKey) -> Result<bool> {
        let p = self.payload(&self.entry(i)?)?;
        let mut s = codec::AeadStream::new(key, &p.nonce(), p.name);
        s.authenticate(p.ciphertext());
        Ok(s.verify(p.tag()))
    }

    /// Runs `check` once for entry `i` and remembers the outcome for this open container.
    fn once(&self, i: usize, check: impl FnOnce() -> Result<()>) -> Result<()> {
        match self.checked.load(i) {
            GOOD => return Ok(()),
            BAD => {
                // Re-run to produce the detailed error again (cheap compared with a failure).
            }
            _ => {}
        }
        match check() {
            Ok(()) => {
                self.checked.store(i, GOOD);
                Ok(())
            }
            Err(e) => {
                if e.is_corruption() || matches!(e, Error::WrongKey { .. }) {
                    self.checked.store(i, BAD);
                }
                Err(e)
            }
        }
    }

    fn ensure_tag(&self, e: &Entry, p: &Payload<'_>) -> Result<()> {
        let key = self.key_for(e)?;
        self.once(e.idx, || {
            let mut s = codec::AeadStream::new(key, &p.nonce(), p.name);
            s.authenticate(p.ciphertext());
            if s.verify(p.tag()) {
                Ok(())
            } else {
                Err(Error::BadChecksum {
                    file: self.file.clone(),
                    what: format!(
                        "authentication tag of {} (damaged content: the key itself was checked)",
                        show(&e.path)
                    ),
                    offset: p.offset + p.stored_size - TAG_SIZE as u64,
                    stored: 0,
                    computed: 0,
                })
            }
        })
    }

    /// Reads up to `buf.len()` bytes of file `i` at `offset`. Returns 0 at or past the end.
    pub fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let e = self.used_entry(i)?;
        if e.kind != Kind::File {
            return Err(self.corrupt(
                e.obj_offset,
                format!("{} is not a regular file", show(&e.path)),
            ));
        }
        if offset >= e.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (e.size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..want];
        let p = self.payload(&e)?;
        let chunks = self.chunk_table(&e)?;
        if e.comp == COMP_NONE && e.enc == ENC_NONE {
            let src = self.checked_stored(&e, chunks.as_deref(), &p, offset, want)?;
            buf.copy_from_slice(src);
            self.still_there(&e, p.offset + offset, want)?;
            return Ok(want);
        }
        self.decoded_at(&e, chunks, &p, offset, buf)
            .map_err(|err| self.gone_or(&e, &p, err))
    }

    /// `read_at` of compressed or encrypted content: `buf` is already cut to what is wanted.
    fn decoded_at(
        &self,
        e: &Entry,
        chunks: Option<Arc<Chunks>>,
        p: &Payload<'_>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let want = buf.len();
        if offset == 0 {
            self.read_ahead_files(e);
        }
        if e.enc != ENC_NONE {
            self.ensure_tag(e, p)?;
        }
        let gran = match &chunks {
            Some(ch) => u64::from(ch.table.chunk_size),
            None => VIRTUAL_CHUNK,
        };
        let first = offset / gran;
        let last = (offset + want as u64 - 1) / gran;
        if let (Some(ch), true) = (&chunks, self.partial.is_some() && e.enc == ENC_NONE) {
            // All the chunks of this read in one go (one request, or several at once).
            let (lo, hi) = (ch.offsets[first as usize], ch.offsets[last as usize + 1]);
            self.need(p.offset + lo, hi.saturating_sub(lo))?;
        }
        let mut done = 0usize;
        for k in first..=last {
            let chunk = self.chunk(e, chunks.as_deref(), p, k)?;
            let chunk_start = k * gran;
            let from = (offset + done as u64 - chunk_start) as usize;
            let n = (chunk.len().saturating_sub(from)).min(want - done);
            if n == 0 {
                return Err(self.corrupt(
                    p.offset,
                    format!("{} decodes short of its size", show(&e.path)),
                ));
            }
            buf[done..done + n].copy_from_slice(&chunk[from..from + n]);
            done += n;
        }
        if let Some(ch) = &chunks {
            self.read_ahead(e, ch, p, last);
        }
        Ok(done)
    }

    /// Decoded chunk `k` of `e` (granule `k` without a chunk table), from the cache or decoded
    /// now and cached.
    fn chunk(
        &self,
        e: &Entry,
        chunks: Option<&Chunks>,
        p: &Payload<'_>,
        k: u64,
    ) -> Result<Arc<[u8]>> {
        let key = (e.idx as u32, k as u32);
        let Some(ch) = chunks else {
            if !is_one_frame(e) {
                if let Some(c) = self.cache.get(key) {
                    return Ok(c);
                }
                return self.decode_upto(e, k);
            }
            // A file decoded ahead (see `read_ahead_files`) is waited for, not decoded twice.
            if let Some(c) = self.cache.get_or_wait(key) {
                return Ok(c);
            }
            let c = self.decode_whole(e, p)?;
            self.cache.insert(key, c.clone());
            return Ok(c);
        };
        // A chunk being decoded ahead is waited for rather than decoded twice.
        if let Some(c) = self.cache.get_or_wait(key) {
            return Ok(c);
        }
        let c = self.decode_chunk(e, ch, p, k as usize)?;
        self.cache.insert(key, c.clone());
        Ok(c)
    }

    /// Up to `len` bytes of compressed or encrypted file `i` at `offset` when they lie within
    /// one chunk of its chunk table: the decoded chunk itself, shared with the chunk cache, so
    /// the read needs no buffer of its own (the kernel's reads of 128 KiB at most, aligned to
    /// 128 KiB, each fall in one chunk of the default size). `None` when the read spans chunks,
    /// the content is stored plain (`stored_slice`) or has no chunk table: use `read_at`.
    pub fn read_in_chunk(&self, i: usize, offset: u64, len: usize) -> Result<Option<ChunkSlice>> {
        let e = self.used_entry(i)?;
        if e.kind != Kind::File
            || offset >= e.size
            || len == 0
            || (e.comp == COMP_NONE && e.enc == ENC_NONE)
        {
            return Ok(None);
        }
        let ch = self.chunk_table(&e)?;
        let want = (e.size - offset).min(len as u64);
        let cs = match &ch {
            Some(ch) => u64::from(ch.table.chunk_size),
            None if is_one_frame(&e) => VIRTUAL_CHUNK,
            None => return Ok(None),
        };
        let k = offset / cs;
        if (offset + want - 1) / cs != k {
            return Ok(None);
        }
        let p = self.payload(&e)?;
        if offset == 0 {
            self.read_ahead_files(&e);
        }
        let got = (|| {
            if e.enc != ENC_NONE {
                self.ensure_tag(&e, &p)?;
            }
            // (A file without a chunk table is fetched whole by `decode_whole`.)
            if let (Some(ch), true) = (&ch, self.partial.is_some() && e.enc == ENC_NONE) {
                let (lo, hi) = (ch.offsets[k as usize], ch.offsets[k as usize + 1]);
                self.need(p.offset + lo, hi.saturating_sub(lo))?;
            }
            let chunk = self.chunk(&e, ch.as_deref(), &p, k)?;
            let from = (offset - k * cs) as usize;
            let to = from + want as usize;
            if chunk.len() < to {
                return Err(self.corrupt(
                    p.offset,
                    format!("{} decodes short of its size", show(&e.path)),
                ));
            }
            if let Some(ch) = &ch {
                self.read_ahead(&e, ch, &p, k);
            }
            Ok(ChunkSlice {
                chunk,
                range: from..to,
            })
        })();
        got.map(Some).map_err(|err| self.gone_or(&e, &p, err))
    }

    /// `read_in_chunk` when it costs no more than copies: every chunk the read touches is
    /// decoded in the cache already (decoded ahead, or read before), so the FUSE adapter can
    /// answer on the thread that took the request instead of handing it to a worker (a wakeup
    /// that crosses CPUs costs tens of microseconds on a VM). The parts, in order, one per
    /// chunk (two when a READ of the kernel's readahead straddles a chunk boundary). Starts the
    /// same decoding ahead as `read_in_chunk`. `None` for anything else (a chunk not cached,
    /// stored plain, encrypted, no chunk table beyond one frame): use `read_in_chunk` or
    /// `read_at`.
    pub fn read_cached(&self, i: usize, offset: u64, len: usize) -> Option<Vec<ChunkSlice>> {
        let e = self.used_entry(i).ok()?;
        if e.kind != Kind::File
            || offset >= e.size
            || len == 0
            || e.comp != COMP_ZSTD
            || e.enc != ENC_NONE
        {
            return None;
        }
        let ch = self.chunk_table(&e).ok()?;
        let cs = match &ch {
            Some(ch) => u64::from(ch.table.chunk_size),
            None if is_one_frame(&e) => VIRTUAL_CHUNK,
            None => return None,
        };
        let end = offset + (e.size - offset).min(len as u64);
        let (first, last) = (offset / cs, (end - 1) / cs);
        if last - first >= 4 {
            return None;
        }
        let mut parts = Vec::with_capacity((last - first + 1) as usize);
        for k in first..=last {
            let chunk = self.cache.get((i as u32, k as u32))?;
            let from = (offset.max(k * cs) - k * cs) as usize;
            let to = (end.min((k + 1) * cs) - k * cs) as usize;
            if chunk.len() < to {
                return None;
            }
            parts.push(ChunkSlice {
                chunk,
                range: from..to,
            });
        }
        if offset == 0 {
            self.read_ahead_files(&e);
        }
        if let (Some(ch), Ok(p)) = (&ch, self.payload(&e)) {
            self.read_ahead(&e, ch, &p, last);
        }
        Some(parts)
    }

    /// After a read that ended in chunk `k` of `e`: when the file is being read in order, has
    /// the next chunks decoded on the worker threads (see `ahead.rs`).
    fn read_ahead(&self, e: &Entry, ch: &Chunks, p: &Payload<'_>, k: u64) {
        let i = e.idx as u32;
        let prev = self
            .last_chunk
            .lock()
            .unwrap_or_else(|g| g.into_inner())
            .put(i, k as u32);
        let in_order = k == 0 || prev.is_some_and(|p| p == k as u32 || p + 1 == k as u32);
        let n = ch.table.stored.len() as u64;
        if !in_order || k + 1 >= n {
            return;
        }
        let (body_start, body_len) = if e.enc != ENC_NONE {
            (
                NONCE_SIZE as u64,
                p.stored_size - (NONCE_SIZE + TAG_SIZE) as u64,
            )
        } else {
            (0, p.stored_size)
        };
        let cs = u64::from(ch.table.chunk_size);
        let ahead_end = (k + 1 + ahead::AHEAD).min(n);
        if self.partial.is_some() && e.enc == ENC_NONE {
            // A partial file: have the next chunks fetched (without waiting); only those
            // already local are decoded ahead.
            let (lo, hi) = (ch.offsets[k as usize + 1], ch.offsets[ahead_end as usize]);
            self.prefetch(p.offset + lo, hi.saturating_sub(lo));
        }
        for j in k + 1..ahead_end {
            let (lo, hi) = (ch.offsets[j as usize], ch.offsets[j as usize + 1]);
            if hi > body_len
                || !self.is_local(p.offset + body_start + lo, hi - lo)
                || !self.cache.claim((i, j as u32))
            {
                continue;
            }
            let cipher = match (&self.key, e.enc != ENC_NONE) {
                (Some(key), true) => Some((key.clone(), p.nonce(), lo)),
                _ => None,
            };
            ahead::submit(ahead::Job {
                bytes: self.bytes.clone(),
                cache: self.cache.clone(),
                key: (i, j as u32),
                at: p.offset + body_start + lo,
                stored_len: (hi - lo) as usize,
                len: (e.size - j * cs).min(cs) as usize,
                crc: ch.table.crcs[j as usize],
                comp: e.comp,
                cipher,
            });
        }
    }

    /// At the first read of file `e`: when the files before it in the index were read one after
    /// the other (`tar`, `cp -r` and `find | xargs cat` walk a directory in the order its entries
    /// are listed, which is index order, and `create` writes the objects in that order too), has
    /// the next compressed files decoded on the worker threads (their first chunk, or the whole
    /// file when it is one frame) while the reader copies this one: most files of an image are
    /// smaller than a chunk, so decoding ahead within a file alone leaves every small file's
    /// decode on the reader's path. Best effort, like `read_ahead`: files that are cached, in
    /// flight, encrypted, stored plain or not local are skipped, and what fails to decode is
    /// decoded again by its reader, which reports the damage.
    fn read_ahead_files(&self, e: &Entry) {
        let prev = self
            .last_file
            .swap(e.idx, std::sync::atomic::Ordering::Relaxed);
        let in_order = prev < e.idx && e.idx - prev <= ahead::FILES_GAP;
        if !in_order || self.partial.is_some() {
            return;
        }
        let (mut files, mut bytes) = (0, 0u64);
        let end = self.len().min(e.idx + 1 + ahead::FILES_GAP);
        for j in e.idx + 1..end {
            if files >= ahead::FILES || bytes >= ahead::FILES_BYTES {
                break;
            }
            let Ok(n) = self.used_entry(j) else { break };
            if n.kind != Kind::File || n.comp != COMP_ZSTD || n.enc != ENC_NONE || n.size == 0 {
                continue;
            }
            let chunks = match self.chunk_table(&n) {
                Ok(Some(ch)) => Some(ch),
                Ok(None) if is_one_frame(&n) => None,
                _ => continue,
            };
            files += 1;
            bytes += n.size.min(VIRTUAL_CHUNK);
            let key = (j as u32, 0);
            // Claimed first: the files already cached or in flight (most of the window, when
            // it slides on by one file) cost no look at their object.
            if !self.cache.claim(key) {
                continue;
            }
            let Ok(p) = self.payload(&n) else {
                self.cache.complete(key, None);
                continue;
            };
            let (lo, hi, len, crc) = match &chunks {
                Some(ch) => {
                    let cs = u64::from(ch.table.chunk_size);
                    let (lo, hi) = (ch.offsets[0], ch.offsets[1]);
                    (lo, hi, n.size.min(cs), ch.table.crcs[0])
                }
                None => (0, p.stored_size, n.size, n.crc),
            };
            if hi > p.stored_size {
                self.cache.complete(key, None);
                continue;
            }
            ahead::submit(ahead::Job {
                bytes: self.bytes.clone(),
                cache: self.cache.clone(),
                key,
                at: p.offset + lo,
                stored_len: (hi - lo) as usize,
                len: len as usize,
                crc,
                comp: n.comp,
                cipher: None,
            });
        }
    }

    /// Decodes chunk `k` of a chunked entry into a buffer for the chunk cache (see
    /// `ChunkCache::buffer`) and checks its checksum.
    fn decode_chunk(&self, e: &Entry, ch: &Chunks, p: &Payload<'_>, k: usize) -> Result<Arc<[u8]>> {
        let cs = u64::from(ch.table.chunk_size);
        let len = (e.size - k as u64 * cs).min(cs) as usize;
        self.decode_chunk_into(e, ch, p, k, self.cache.buffer(len))
    }

    /// Decodes chunk `k` of a chunked entry into `out` (of the chunk's length) and checks its
    /// checksum.
    fn decode_chunk_into(
        &self,
        e: &Entry,
        ch: &Chunks,
        p: &Payload<'_>,
        k: usize,
        out: Arc<[u8]>,
    ) -> Result<Arc<[u8]>> {
        let (lo, hi) = (ch.offsets[k], ch.offsets[k + 1]);
        let body_len = if e.enc != ENC_NONE {
            p.stored_size - (NONCE_SIZE + TAG_SIZE) as u64
        } else {
            p.stored_size
        };
        if hi > body_len {
            return Err(self.corrupt(
                p.offset,
                format!(
                    "chunk table of {} points past its payload ({hi} > {body_len})",
                    show(&e.path)
                ),
            ));
        }
        let body_start = if e.enc != ENC_NONE {
            NONCE_SIZE as u64
        } else {
            0
        };
        self.need(p.offset + body_start + lo, hi - lo)?;
        self.bytes
            .will_need(p.offset + body_start + lo, (hi - lo) as usize);
        let stored: std::borrow::Cow<'_, [u8]> = if e.enc != ENC_NONE {
            let key = self.key_for(e)?;
            let mut v = p.ciphertext()[lo as usize..hi as usize].to_vec();
            codec::decrypt_range(key, &p.nonce(), lo, &mut v);
            v.into()
        } else {
            (&p.data[lo as usize..hi as usize]).into()
        };
        let out = ahead::decode_into(&stored, e.comp, out).map_err(|err| {
            let codec = if e.comp == COMP_ZSTD { "zstd" } else { "raw" };
            self.corrupt(
                p.offset + lo,
                format!("{codec} chunk {k} of {}: {err}", show(&e.path)),
            )
        })?;
        let computed = codec::bfc_crc(&out);
        if computed != ch.table.crcs[k] {
            return Err(Error::BadChecksum {
                file: self.file.clone(),
                what: format!("chunk {k} of {}", show(&e.path)),
                offset: p.offset + lo,
                stored: ch.table.crcs[k],
                computed,
            });
        }
        Ok(out)
    }

    /// A file of at most one chunk (`is_one_frame`) decoded in one call into a buffer for the
    /// cache, and checked against the file's checksum: no streaming decoder, no second pass.
    fn decode_whole(&self, e: &Entry, p: &Payload<'_>) -> Result<Arc<[u8]>> {
        self.need(e.obj_offset, e.obj_size)?;
        self.bytes.will_need(p.offset, p.data.len());
        let len = e.size as usize;
        let out = ahead::decode_into(p.data, e.comp, self.cache.buffer(len)).map_err(|err| {
            self.corrupt(
                p.offset,
                format!("zstd content of {}: {err}", show(&e.path)),
            )
        })?;
        let computed = codec::bfc_crc(&out);
        if computed != e.crc {
            return Err(self.bad_checksum(e, p.offset, computed));
        }
        Ok(out)
    }

    /// For content without a chunk table: checks the whole file once, then decodes from the
    /// start up to granule `k`, caching every granule on the way.
    fn decode_upto(&self, e: &Entry, k: u64) -> Result<Arc<[u8]>> {
        let i = e.idx;
        self.once(i, || {
            self.reader_of(e)?.copy_to(&mut io::sink()).map(|_| ())
        })?;
        let mut r = self.reader_of(e)?;
        let mut n = 0u64;
        loop {
            let mut v = Vec::with_capacity(VIRTUAL_CHUNK as usize);
            (&mut r)
                .take(VIRTUAL_CHUNK)
                .read_to_end(&mut v)
                .map_err(|err| self.unwrap_io(err))?;
            if v.is_empty() {
                return Err(self.corrupt(
                    e.obj_offset,
                    format!("{} decodes short of its size", show(&e.path)),
                ));
            }
            let c: Arc<[u8]> = v.into();
            self.cache.insert((i as u32, n as u32), c.clone());
            if n == k {
                return Ok(c);
            }
            n += 1;
        }
    }

    fn unwrap_io(&self, err: io::Error) -> Error {
        unwrap_io(&self.file, err)
    }

    /// Streams the whole content of file `i`, checking size and checksum at the end (and the
    /// AEAD tag before the first byte).
    pub fn open_reader(&self, i: usize) -> Result<EntryReader<'_>> {
        self.reader_of(&self.entry(i)?)
    }

    fn reader_of(&self, e: &Entry) -> Result<EntryReader<'_>> {
        if e.kind != Kind::File {
            return Err(self.corrupt(
                e.obj_offset,
                format!("{} is not a regular file", show(&e.path)),
            ));
        }
        self.need(e.obj_offset, e.obj_size)?;
        let p = self.payload(e)?;
        // The whole stored range in one request rather than a page fault at a time (cold reads).
        self.bytes.will_need(p.offset, p.data.len());
        let source: Box<dyn io::BufRead + Send + '_> = if e.enc != ENC_NONE {
            self.ensure_tag(e, &p)?;
            let key = self.key_for(e)?.clone();
            Box::new(io::BufReader::with_capacity(
                64 << 10,
                Decrypt::new(key, p.nonce(), p.ciphertext()),
            ))
        } else {
            Box::new(p.data)
        };
        let inner: Box<dyn Read + Send + '_> = if e.comp == COMP_ZSTD {
            let d = zstd::stream::read::Decoder::with_buffer(source)
                .map_err(|err| Error::io(&self.file, err))?;
            Box::new(d)
        } else {
            Box::new(source)
        };
        Ok(EntryReader {
            inner,
            file: self.file.clone(),
            path: e.path.clone(),
            offset: p.offset,
            size: e.size,
            crc_expected: e.crc,
            crc: 0,
            done: 0,
        })
    }

    /// Checks entry `i`'s object header against its index entry without decoding content.
    /// Decodes and checks entry `i` itself too.
    pub fn check_object(&self, i: usize) -> Result<()> {
        let e = self.entry(i)?;
        self.payload(&e)?;
        self.chunk_table(&e).map(|_| ())
    }

    /// Decodes all of entry `i` and checks every checksum (and the tag when encrypted).
    /// Directories have nothing to check; symlink targets are checked.
    pub fn verify_entry(&self, i: usize) -> Result<()> {
        let e = self.entry(i)?;
        match e.kind {
            Kind::File => {}
            Kind::Symlink => return self.symlink_target(i).map(|_| ()),
            _ => return Ok(()),
        }
        if let Some(ch) = self.chunk_table(&e)? {
            let p = self.payload(&e)?;
            if e.enc != ENC_NONE {
                self.ensure_tag(&e, &p)?;
            }
            let n = ch.table.stored.len();
            let cs = u64::from(ch.table.chunk_size);
            let mut crc = 0u32;
            for k in 0..n {
                let len = (e.size - k as u64 * cs).min(cs) as usize;
                let c = if e.comp == COMP_NONE && e.enc == ENC_NONE {
                    let mut buf = vec![0u8; len];
                    self.read_at(i, k as u64 * cs, &mut buf)?;
                    Arc::from(buf)
                } else {
                    // Not through the cache: checking every chunk must not empty it.
                    let buf = std::iter::repeat_n(0u8, len).collect();
                    self.decode_chunk_into(&e, &ch, &p, k, buf)?
                };
                crc = codec::bfc_crc_append(crc, &c);
            }
            if crc != e.crc {
                return Err(self.bad_checksum(&e, p.offset, crc));
            }
            return Ok(());
        }
        self.reader_of(&e)?.copy_to(&mut io::sink()).map(|_| ())
    }
}

/// A zstd file without a chunk table that fits in one granule (bfcfs writes every file of at
/// most one chunk so; upstream writes every file so): decoded whole in one call, which also
/// checks the whole file's checksum. Encrypted content keeps the streaming path (its tag is
/// checked first).
fn is_one_frame(e: &Entry) -> bool {
    e.comp == COMP_ZSTD && e.enc == ENC_NONE && e.size <= VIRTUAL_CHUNK
}

/// Part of a decoded chunk, shared with the chunk cache (see `Container::read_in_chunk`).
#[derive(Clone, Debug)]
pub struct ChunkSlice {
    chunk: Arc<[u8]>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for ChunkSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.chunk[self.range.clone()]
    }
}

/// Recovers a BFC error carried through `io::Error` by the reader pipeline.
pub fn unwrap_io(file: &std::path::Path, err: io::Error) -> Error {
    if err.get_ref().is_some_and(|e| e.is::<Error>()) {
        if let Some(Ok(e)) = err.into_inner().map(|b| b.downcast::<Error>()) {
            return *e;
        }
        return Error::Usage {
            what: "internal error while decoding".into(),
        };
    }
    Error::io(file, err)
}

/// Decrypts a tag-checked ciphertext sequentially.
struct Decrypt<'a> {
    cipher: chacha20::ChaCha20,
    data: &'a [u8],
    _key: ContentKey,
}

impl<'a> Decrypt<'a> {
    fn new(key: ContentKey, nonce: [u8; NONCE_SIZE], data: &'a [u8]) -> Decrypt<'a> {
        use chacha20::cipher::{KeyIvInit, StreamCipherSeek};
        let mut cipher = chacha20::ChaCha20::new((&key.0).into(), (&nonce).into());
        cipher.seek(64u64);
        Decrypt {
            cipher,
            data,
            _key: key,
        }
    }
}

impl Read for Decrypt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use chacha20::cipher::StreamCipher;
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.cipher.apply_keystream(&mut buf[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The whole content of one file, decoded; fails instead of returning bytes past the recorded
/// size, and checks the checksum at the end.
pub struct EntryReader<'a> {
    inner: Box<dyn Read + Send + 'a>,
    file: std::path::PathBuf,
    path: Vec<u8>,
    offset: u64,
    size: u64,
    crc_expected: u32,
    crc: u32,
    done: u64,
}

impl EntryReader<'_> {
    fn fail(&self, e: Error) -> io::Error {
        io::Error::other(e)
    }

    /// Copies everything to `out`; errors keep their BFC meaning.
    pub fn copy_to(&mut self, out: &mut dyn Write) -> Result<u64> {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = self.read(&mut buf).map_err(|e| unwrap_io(&self.file, e))?;
            if n == 0 {
                return Ok(self.done);
            }
            out.write_all(&buf[..n]).map_err(|e| Error::Io {
                file: std::path::PathBuf::from("<output>"),
                source: e,
            })?;
        }
    }
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(err) => {
                return Err(self.fail(Error::Corrupt {
                    file: self.file.clone(),
                    offset: self.offset,
                    what: format!("content of {} does not decode: {err}", show(&self.path)),
                }))
            }
        };
        if n == 0 {
            if self.done != self.size {
                return Err(self.fail(Error::Corrupt {
                    file: self.file.clone(),
                    offset: self.offset,
                    what: format!(
                        "content of {} decodes to {} bytes, expected {}",
                        show(&self.path),
                        self.done,
                        self.size
                    ),
                }));
            }
            if self.crc != self.crc_expected {
                return Err(self.fail(Error::BadChecksum {
                    file: self.file.clone(),
                    what: format!("content of {}", show(&self.path)),
                    offset: self.offset,
                    stored: self.crc_expected,
                    computed: self.crc,
                }));
            }
            return Ok(0);
        }
        if self.done + n as u64 > self.size {
            return Err(self.fail(Error::Corrupt {
                file: self.file.clone(),
                offset: self.offset,
                what: format!(
                    "content of {} decodes to more than its size {}",
                    show(&self.path),
                    self.size
                ),
            }));
        }
        self.crc = codec::bfc_crc_append(self.crc, &buf[..n]);
        self.done += n as u64;
        Ok(n)
    }
}

impl Container {
    /// The bytes of stored (uncompressed, unencrypted) file `i` in `[offset, offset + len)`, as a
    /// slice of the mapping, after the same checks as `read_at` (each chunk touched, or the whole
    /// file once). `None` when the content is compressed or encrypted: use `read_at` then.
    /// Lets the FUSE adapter hand mapped bytes to the kernel without a copy.
    pub fn stored_slice(&self, i: usize, offset: u64, len: usize) -> Result<Option<&[u8]>> {
        let e = self.used_entry(i)?;
        if e.kind != Kind::File || e.comp != COMP_NONE || e.enc != ENC_NONE {
            return Ok(None);
        }
        if offset >= e.size || len == 0 {
            return Ok(Some(&[]));
        }
        let want = (e.size - offset).min(len as u64) as usize;
        let p = self.payload(&e)?;
        let chunks = self.chunk_table(&e)?;
        let slice = self
            .checked_stored(&e, chunks.as_deref(), &p, offset, want)
            .map_err(|err| self.gone_or(&e, &p, err))?;
        // The kernel copies these bytes out of the mapping: touch them here first, where a
        // page that is gone faults into map.rs's handler rather than failing that copy.
        self.bytes.present(p.offset + offset, want).map_err(|now| {
            let what = format!(
                "content of {} ({want} bytes at offset {offset})",
                show(&e.path)
            );
            self.gone(p.offset + offset, now, what)
        })?;
        Ok(Some(slice))
    }

    /// `stored_slice` when it will not wait for the disk: the whole object of stored file `i`
    /// (header and content, which the first read checks whole) is in the page cache. Lets the
    /// FUSE adapter answer on the thread that took the request instead of handing it to a
    /// worker. `None` for anything else (not resident, over 1 MiB, compressed, a partial
    /// file): use `stored_slice`.
    pub fn stored_resident(&self, i: usize, offset: u64, len: usize) -> Option<&[u8]> {
        let e = self.used_entry(i).ok()?;
        if e.kind != Kind::File
            || e.comp != COMP_NONE
            || e.enc != ENC_NONE
            || self.partial.is_some()
            || !self
                .bytes
                .resident(e.obj_offset, usize::try_from(e.obj_size).ok()?)
        {
            return None;
        }
        self.stored_slice(i, offset, len).ok().flatten()
    }

    /// `want` bytes at `offset` of stored file `i`, after their checks: the checksum of every
    /// chunk they touch, or (no chunk table) the whole file's checksum once per open container.
    fn checked_stored<'a>(
        &self,
        e: &Entry,
        chunks: Option<&Chunks>,
        p: &Payload<'a>,
        offset: u64,
        want: usize,
    ) -> Result<&'a [u8]> {
        match chunks {
            Some(ch) => {
                let cs = u64::from(ch.table.chunk_size);
                self.need(p.offset + offset, want as u64)?;
                for k in offset / cs..=(offset + want as u64 - 1) / cs {
                    let lo = k * cs;
                    let hi = (lo + cs).min(e.size);
                    let computed = codec::bfc_crc(&p.data[lo as usize..hi as usize]);
                    if computed != ch.table.crcs[k as usize] {
                        return Err(Error::BadChecksum {
                            file: self.file.clone(),
                            what: format!("chunk {k} of {}", show(&e.path)),
                            offset: p.offset + lo,
                            stored: ch.table.crcs[k as usize],
                            computed,
                        });
                    }
                }
            }
            None => self.once(e.idx, || {
                self.need(e.obj_offset, e.obj_size)?;
                self.bytes.will_need(p.offset, p.data.len());
                let computed = codec::bfc_crc(p.data);
                if computed == e.crc {
                    Ok(())
                } else {
                    Err(self.bad_checksum(e, p.offset, computed))
                }
            })?,
        }
        Ok(&p.data[offset as usize..offset as usize + want])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfc::reader::DEFAULT_CACHE_BYTES;
    use crate::bfc::writer::{Compression, Meta, Writer, WriterOptions};
    use std::time::{Duration, Instant};

    /// A zstd container holding `big`: 40 chunks of compressible, position-dependent bytes.
    fn container() -> (Container, Vec<u8>) {
        let data: Vec<u8> = (0..40 * 128 * 1024u32)
            .map(|i| (i / 7 % 251) as u8 ^ (i >> 17) as u8)
            .collect();
        let opts = WriterOptions {
            compression: Compression::Zstd,
            ..WriterOptions::default()
        };
        let name = std::path::Path::new("ahead.bfc");
        let mut w = Writer::new(std::io::Cursor::new(Vec::new()), opts, name).unwrap();
        let meta = Meta {
            mode: 0o644,
            ..Meta::default()
        };
        w.add_file(b"big", &meta, &mut &data[..]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        (Container::from_bytes("ahead.bfc", bytes).unwrap(), data)
    }

    fn cached_within(c: &Container, key: (u32, u32), limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if c.cache.get(key).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn sequential_reads_have_the_next_chunks_decoded_ahead() {
        let (c, data) = container();
        let i = c.find(b"big").unwrap();
        let mut buf = vec![0u8; 128 << 10];
        assert_eq!(c.read_at(i, 0, &mut buf).unwrap(), buf.len());
        assert_eq!(buf, data[..buf.len()]);
        for k in 1..=ahead::AHEAD as u32 {
            assert!(
                cached_within(&c, (i as u32, k), Duration::from_secs(10)),
                "chunk {k}"
            );
        }
        // A read across a chunk boundary, both chunks cached: answered from the cache in two
        // parts; one that touches a chunk not decoded is not.
        let parts = c.read_cached(i, 96 << 10, 128 << 10).unwrap();
        assert_eq!(parts.len(), 2);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined, data[96 << 10..224 << 10]);
        assert!(c.read_cached(i, (30 << 17) - 10, 100).is_none());
        // Reading on in order returns the same bytes as the file.
        for k in 1..40u64 {
            let off = k * (128 << 10);
            let n = c.read_at(i, off, &mut buf).unwrap();
            assert_eq!(buf[..n], data[off as usize..off as usize + n], "chunk {k}");
        }
        assert!(c.cache.bytes() <= DEFAULT_CACHE_BYTES);
    }

    /// A zstd container of 40 small files `f00`..`f39` (one frame each, distinct content) and
    /// one chunked file `big`, in that index order.
    fn small_files() -> (Vec<u8>, Vec<Vec<u8>>) {
        let opts = WriterOptions {
            compression: Compression::Zstd,
            ..WriterOptions::default()
        };
        let name = std::path::Path::new("files.bfc");
        let mut w = Writer::new(std::io::Cursor::new(Vec::new()), opts, name).unwrap();
        let meta = Meta {
            mode: 0o644,
            ..Meta::default()
        };
        let mut contents = Vec::new();
        for f in 0..40u32 {
            let data: Vec<u8> = (0..20_000 + f * 100).map(|i| (i / 5 + f) as u8).collect();
            w.add_file(format!("f{f:02}").as_bytes(), &meta, &mut &data[..])
                .unwrap();
            contents.push(data);
        }
        let big: Vec<u8> = (0..3 * 128 * 1024u32).map(|i| (i / 3) as u8).collect();
        w.add_file(b"g-big", &meta, &mut &big[..]).unwrap();
        contents.push(big);
        (w.finish().unwrap().into_inner(), contents)
    }

    fn read_whole(c: &Container, i: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; c.content_size(i)? as usize];
        let mut done = 0;
        while done < out.len() {
            done += c.read_at(i, done as u64, &mut out[done..])?;
        }
        Ok(out)
    }

    #[test]
    fn files_read_in_index_order_have_the_next_files_decoded_ahead() {
        let (bytes, contents) = small_files();
        let c = Container::from_bytes("files.bfc", bytes).unwrap();
        let f = |n: usize| c.find(format!("f{n:02}").as_bytes()).unwrap();
        // The first file read has no predecessor: nothing is decoded ahead.
        assert_eq!(read_whole(&c, f(0)).unwrap(), contents[0]);
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.cache.get((f(1) as u32, 0)).is_none());
        // The second, read right after it in index order, starts decoding the next ones.
        assert_eq!(read_whole(&c, f(1)).unwrap(), contents[1]);
        for n in 2..2 + ahead::FILES {
            assert!(
                cached_within(&c, (f(n) as u32, 0), Duration::from_secs(10)),
                "f{n:02}"
            );
        }
        // Answered from the cache, without decoding: the same bytes as the file.
        let hit = c.read_cached(f(2), 100, 5000).unwrap();
        assert_eq!(hit.len(), 1);
        assert_eq!(&hit[0][..], &contents[2][100..5100]);
        assert!(c.read_cached(f(30), 0, 4096).is_none());
        // Reading on in order returns every file's bytes, the chunked one's first chunk
        // decoded ahead too.
        for (n, want) in contents.iter().enumerate().take(40).skip(2) {
            assert_eq!(&read_whole(&c, f(n)).unwrap(), want, "f{n:02}");
        }
        let big = c.find(b"g-big").unwrap();
        assert!(cached_within(&c, (big as u32, 0), Duration::from_secs(10)));
        assert_eq!(read_whole(&c, big).unwrap(), contents[40]);
    }

    #[test]
    fn files_read_out_of_order_decode_no_other_file() {
        let (bytes, contents) = small_files();
        let c = Container::from_bytes("files.bfc", bytes).unwrap();
        let f = |n: usize| c.find(format!("f{n:02}").as_bytes()).unwrap();
        // Backwards, and forwards past `FILES_GAP` entries.
        for n in [30, 10, 5, 6 + ahead::FILES_GAP] {
            assert_eq!(read_whole(&c, f(n)).unwrap(), contents[n]);
        }
        std::thread::sleep(Duration::from_millis(50));
        for n in [6, 11, 7 + ahead::FILES_GAP, 31] {
            assert!(c.cache.get((f(n) as u32, 0)).is_none(), "f{n:02}");
        }
    }

    #[test]
    fn a_damaged_file_decoded_ahead_is_reported_by_its_reader_with_path_and_offset() {
        let (mut bytes, contents) = small_files();
        let (payload, at, f3) = {
            let c = Container::from_bytes("files.bfc", bytes.clone()).unwrap();
            let i = c.find(b"f03").unwrap();
            let p = c.payload(&c.entry(i).unwrap()).unwrap();
            (p.offset, p.offset + p.stored_size / 2, i)
        };
        bytes[at as usize] ^= 0x5a;
        let c = Container::from_bytes("files.bfc", bytes).unwrap();
        for (n, want) in contents.iter().enumerate().take(3) {
            assert_eq!(&read_whole(&c, n).unwrap(), want);
        }
        // f03 was queued for decoding ahead and failed there: nothing of it is cached, and
        // its own read fails naming it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(c.read_cached(f3, 0, 4096).is_none());
        let err = read_whole(&c, f3).unwrap_err();
        let msg = err.to_string();
        assert!(err.is_corruption(), "{msg}");
        assert!(msg.contains("f03") && msg.contains("files.bfc"), "{msg}");
        match err {
            Error::BadChecksum { offset, .. } | Error::Corrupt { offset, .. } => {
                assert_eq!(offset, payload, "damage at {at}")
            }
            other => panic!("{other}"),
        }
        // The files after it still read.
        assert_eq!(read_whole(&c, f3 + 1).unwrap(), contents[4]);
    }

    #[test]
    fn random_reads_decode_nothing_ahead() {
        let (c, data) = container();
        let i = c.find(b"big").unwrap();
        let mut buf = vec![0u8; 4096];
        let off = 20 * (128 << 10) + 5;
        let n = c.read_at(i, off, &mut buf).unwrap();
        assert_eq!(buf[..n], data[off as usize..off as usize + n]);
        let off = 7 * (128 << 10) + 9;
        c.read_at(i, off, &mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.cache.get((i as u32, 8)).is_none() && c.cache.get((i as u32, 21)).is_none());
    }
}
