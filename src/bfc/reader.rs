//! `Container::open` checks the file's structure in one pass that allocates nothing per entry —
//! header, footer, the index checksum, that every index record fits and has a file type, and the
//! extension's sections — so opening costs the same whatever the number of entries beyond that
//! pass. Each entry's own fields (safe path, sort order, object range, extension records) are
//! checked when it is decoded (`Container::entry`), and content checksums when content is read
//! (see `content.rs`). `verify` decodes and checks every entry.
use super::cache::ChunkCache;
use super::codec::{self, ContentKey, Key};
use super::cursor::Cursor;
use super::error::{show, Error, Result};
use super::ext::{self, ChunkRef, ChunkTable, ExtIndex, Whiteout};
use super::layout::*;
use super::map::Bytes;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

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

/// One index entry, decoded and checked on demand by [`Container::entry`], with what the
/// extension says about it.
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
    /// Compression and encryption ids as stored (255 stands for any id over 254). Unknown ids
    /// fail reading the content, not decoding the entry.
    pub comp: u8,
    pub enc: u8,
    pub crc: u32,
    /// Index position.
    pub(crate) idx: usize,
    pub(crate) chunks: Option<ChunkRef>,
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

/// Decoded chunk tables kept at once (each is a few KiB per GiB of content).
const CHUNK_TABLES: usize = 64;
/// Compressed files whose read position is remembered at once.
const READERS: usize = 256;
/// Slots for decoded entries of the files read lately (entry `i` goes in slot `i % USED_ENTRIES`).
const USED_ENTRIES: usize = 512;

/// An open BFC container. Opening checks the header, the footer, the index checksum and that
/// every index record fits (one pass, no allocation per entry); each entry is decoded and
/// checked when it is used (`entry`), and `verify` checks them all.
pub struct Container {
    pub(crate) file: PathBuf,
    pub(crate) bytes: Arc<Bytes>,
    pub(crate) block_size: u32,
    pub(crate) features: u64,
    pub(crate) salt: [u8; 16],
    pub(crate) index_offset: u64,
    pub(crate) index_size: u64,
    /// Where each index record starts (indexes over 4 GiB are refused).
    offsets: Offsets,
    ext: ExtIndex,
    any_encrypted: bool,
    chunk_tables: Mutex<LruCache<u32, Arc<Chunks>>>,
    pub(crate) key: Option<ContentKey>,
    pub(crate) cache: Arc<ChunkCache>,
    /// Last chunk read of recently read compressed files (entry -> chunk), to spot
    /// sequential readers.
    pub(crate) last_chunk: Mutex<LruCache<u32, u32>>,
    /// The file whose content was last read from its start, to spot readers that take the
    /// files in index order (`usize::MAX`: none yet).
    pub(crate) last_file: std::sync::atomic::AtomicUsize,
    /// Entries of the files read lately (see `used_entry`).
    entries: Mutex<Box<[Option<Arc<Entry>>]>>,
    /// Per entry: 0 = whole-content check not done, 1 = passed, 2 = failed. Pages are made
    /// when an entry in them is first checked.
    pub(crate) checked: Paged,
    /// Per entry: set once `check_name` passed for it (names never change while the index
    /// checksum holds, so each is checked once, by a listing or by the first decode).
    names: PagedFlags,
    /// Set when the file is only partly local (`partial.rs`): reads fetch what they miss.
    pub(crate) partial: Option<super::partial::Partial>,
    /// The index checksum: checked at open, or later (`open_deferred`).
    index_check: Arc<IndexCheck>,
    index_crc: u32,
}

/// The checksum of the whole index, for a container opened with `Container::open_deferred`:
/// computed on a thread once the mount serves (`start_index_check`), or by the first entry
/// decoded when nothing started it. Until it is known, entries are served on their own checks
/// (safe sorted path, record and object inside their areas, extension records that fit), as
/// every entry is; once it failed, every entry decoded and every listing fails with the
/// checksum error, naming the entry reached.
#[derive(Debug, Default)]
struct IndexCheck {
    state: AtomicU8,
    computed: std::sync::atomic::AtomicU32,
}

const INDEX_UNCHECKED: u8 = 0;
const INDEX_RUNNING: u8 = 1;
const INDEX_GOOD: u8 = 2;
const INDEX_BAD: u8 = 3;

impl IndexCheck {
    /// Takes the unchecked index for this caller to check (false: checked or being checked).
    fn claim(&self) -> bool {
        self.state
            .compare_exchange(
                INDEX_UNCHECKED,
                INDEX_RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    fn checked() -> Arc<IndexCheck> {
        Arc::new(IndexCheck {
            state: AtomicU8::new(INDEX_GOOD),
            computed: Default::default(),
        })
    }

    /// Computes the checksum of `index` and records the outcome; true when it matches.
    fn run(&self, file: &Path, index: &[u8], index_offset: u64, stored: u32) -> bool {
        let computed = codec::bfc_crc(index);
        self.computed.store(computed, Ordering::Relaxed);
        let good = computed == stored;
        self.state
            .store(if good { INDEX_GOOD } else { INDEX_BAD }, Ordering::Release);
        if !good {
            log::error!(
                "{}: index at offset {index_offset} fails its checksum (stored {stored:#010x},                  computed {computed:#010x}): every entry decoded from now on fails",
                file.display()
            );
        }
        good
    }
}

/// Where index records start, relative to the index start.
enum Offsets {
    /// Found by walking the records at open (files without an OFFSETS table).
    Walked(Vec<u32>),
    /// The extension's OFFSETS table, read in place: `count` u32s at absolute offset `at`; the
    /// records end (and the extension starts) at `records_end`.
    Table {
        at: usize,
        count: usize,
        records_end: u32,
    },
}

impl Offsets {
    fn len(&self) -> usize {
        match self {
            Offsets::Walked(v) => v.len(),
            Offsets::Table { count, .. } => *count,
        }
    }
}

/// Opens an index through its extension locator: checks the checksum of the whole index (on two
/// threads when it is large; later when `defer_checksum`, see `IndexCheck`), the index header,
/// and the extension found at `ext_at`. None when
/// the extension has no OFFSETS table or anything but the checksum fails: the caller then walks
/// the records, which names what is wrong the way it always has.
fn open_located(
    file: &Path,
    index: &[u8],
    index_offset: u64,
    index_crc: u32,
    ext_at: usize,
    defer_checksum: bool,
) -> Result<Option<(Offsets, ExtIndex)>> {
    let computed = if defer_checksum {
        index_crc
    } else {
        codec::bfc_crc_parallel(index)
    };
    if computed != index_crc {
        return Err(Error::BadChecksum {
            file: file.to_path_buf(),
            what: "index".into(),
            offset: index_offset,
            stored: index_crc,
            computed,
        });
    }
    let mut c = Cursor::new(file, &index[..ext_at], index_offset);
    let Ok(IndexHeader { version, count }) = IndexHeader::decode(&mut c) else {
        return Ok(None);
    };
    if version != INDEX_VERSION
        || (count as usize).saturating_mul(INDEX_ENTRY_FIXED + 1) > c.remaining()
    {
        return Ok(None);
    }
    let end = index.len() - ext::LOCATOR_SIZE;
    let mut c = Cursor::new(file, &index[ext_at..end], index_offset + ext_at as u64);
    let Ok(ext) = ExtIndex::parse(&mut c, count) else {
        return Ok(None);
    };
    let Some((at, n)) = ext.offsets else {
        return Ok(None);
    };
    let (Ok(at), Ok(records_end)) = (usize::try_from(at), u32::try_from(ext_at)) else {
        return Ok(None);
    };
    let offsets = Offsets::Table {
        at,
        count: n as usize,
        records_end,
    };
    Ok(Some((offsets, ext)))
}

/// Opens an index by walking its records (one pass, the checksum just behind the walk).
/// Returns where each record starts, whether any is encrypted, and where the records end.
fn open_walked(
    file: &Path,
    index: &[u8],
    index_offset: u64,
    index_crc: u32,
) -> Result<(Vec<u32>, bool, usize)> {
    let bad_crc = |computed: u32| Error::BadChecksum {
        file: file.to_path_buf(),
        what: "index".into(),
        offset: index_offset,
        stored: index_crc,
        computed,
    };
    // The checksum runs just behind the record walk, over bytes still in cache. A damaged
    // index fails its checksum before anything else is reported.
    let mut crc = RunningCrc::default();
    let found = match scan_records(file, index, index_offset, &mut crc) {
        Ok(found) => found,
        Err(e) => {
            let computed = codec::bfc_crc(index);
            return Err(if computed != index_crc {
                bad_crc(computed)
            } else {
                e
            });
        }
    };
    let computed = crc.finish(index);
    if computed != index_crc {
        return Err(bad_crc(computed));
    }
    Ok(found)
}

/// Per-entry atomic values in pages of `PAGE` made on first write: a table for every entry
/// that costs memory only where entries are used.
pub(crate) struct Paged {
    pages: Box<[std::sync::OnceLock<Box<[AtomicU8]>>]>,
}

impl Paged {
    const PAGE: usize = 4096;

    pub(crate) fn new(entries: usize) -> Paged {
        Paged {
            pages: (0..entries.div_ceil(Self::PAGE))
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        }
    }

    pub(crate) fn load(&self, i: usize) -> u8 {
        self.pages
            .get(i / Self::PAGE)
            .and_then(|p| p.get())
            .map_or(0, |p| {
                p[i % Self::PAGE].load(std::sync::atomic::Ordering::Acquire)
            })
    }

    pub(crate) fn store(&self, i: usize, v: u8) {
        if let Some(p) = self.pages.get(i / Self::PAGE) {
            let page = p.get_or_init(|| (0..Self::PAGE).map(|_| AtomicU8::new(0)).collect());
            page[i % Self::PAGE].store(v, std::sync::atomic::Ordering::Release);
        }
    }
}

/// One flag per entry, in pages of `PAGE` entries made on first set (a bit per entry where
/// entries are used, nothing elsewhere).
pub(crate) struct PagedFlags {
    pages: Box<[std::sync::OnceLock<Box<[AtomicU64]>>]>,
}

impl PagedFlags {
    const PAGE: usize = 4096;

    pub(crate) fn new(entries: usize) -> PagedFlags {
        PagedFlags {
            pages: (0..entries.div_ceil(Self::PAGE))
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        }
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        let page = self.pages.get(i / Self::PAGE).and_then(|p| p.get());
        page.is_some_and(|p| {
            let k = i % Self::PAGE;
            p[k / 64].load(Ordering::Acquire) & (1 << (k % 64)) != 0
        })
    }

    pub(crate) fn set(&self, i: usize) {
        if let Some(p) = self.pages.get(i / Self::PAGE) {
            let page = p.get_or_init(|| (0..Self::PAGE / 64).map(|_| AtomicU64::new(0)).collect());
            let k = i % Self::PAGE;
            page[k / 64].fetch_or(1 << (k % 64), Ordering::AcqRel);
        }
    }
}

/// Default byte bound of the decoded-chunk cache.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Container {
    /// Opens and validates a container file.
    pub fn open(path: &Path) -> Result<Container> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let bytes = Bytes::map(path, &f)?;
        Container::parse(path.to_path_buf(), bytes, false)
    }

    /// Opens a container file for serving a mount: like `open`, but the checksum of the whole
    /// index (71 MB for a million entries) is not computed before this returns; see
    /// `start_index_check`. Files without an OFFSETS table (upstream files) are walked and
    /// checked at open as always.
    pub fn open_deferred(path: &Path) -> Result<Container> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let bytes = Bytes::map(path, &f)?;
        Container::parse(path.to_path_buf(), bytes, true)
    }

    /// Validates a container held in memory (tests and fuzzing).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Container> {
        Container::parse(PathBuf::from(name), Bytes::Owned(bytes), false)
    }

    /// Computes the index checksum of a container from `open_deferred` on a thread of its own
    /// (call it in the process that serves: threads do not survive the daemon's fork). A no-op
    /// when the checksum is known or being computed. The thread runs at the lowest priority
    /// (nice 19): on a busy machine the mount's first requests (its start, the first `ls`) go
    /// first, and the check (about 10 ms of CPU per million entries) takes what is left.
    pub fn start_index_check(&self) {
        let check = self.index_check.clone();
        if !check.claim() {
            return;
        }
        let (bytes, file) = (self.bytes.clone(), self.file.clone());
        let (at, size, stored) = (self.index_offset, self.index_size, self.index_crc);
        let run = move || {
            let start = at as usize;
            let index = bytes
                .as_slice()
                .get(start..start + size as usize)
                .unwrap_or(&[]);
            check.run(&file, index, at, stored);
        };
        let background = run.clone();
        let spawned = std::thread::Builder::new()
            .name("bfc-index-check".into())
            .spawn(move || {
                // This thread only: on Linux the nice value is a thread's (setpriority(2),
                // "who" 0). Failing leaves it at the server's priority.
                let _ = rustix::process::setpriority_process(None, 19);
                background()
            });
        if spawned.is_err() {
            run();
        }
    }

    fn parse(file: PathBuf, bytes: Bytes, defer: bool) -> Result<Container> {
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
        let bad_crc = |computed: u32| Error::BadChecksum {
            file: file.clone(),
            what: "index".into(),
            offset: index_offset,
            stored: index_crc,
            computed,
        };
        if u32::try_from(index_size).is_err() {
            let computed = codec::bfc_crc(index);
            if computed != index_crc {
                return Err(bad_crc(computed));
            }
            return Err(Error::Unsupported {
                file: file.clone(),
                what: format!("an index of {index_size} bytes (at most 4 GiB)"),
            });
        }
        let located = (features & FEATURE_BFCFS_EXT != 0)
            .then(|| ext::locate(index))
            .flatten();
        let opened = match located {
            Some(at) => open_located(&file, index, index_offset, index_crc, at, defer)?,
            None => None,
        };
        let index_check = match (&opened, defer) {
            (Some(_), true) => Arc::default(),
            _ => IndexCheck::checked(),
        };
        let (offsets, ext, any_encrypted) = match opened {
            // bfcfs files: the checksum, then the extension found through its locator; the
            // records are reached through OFFSETS and checked when first used.
            Some((offsets, ext)) => (offsets, ext, features & FEATURE_AEAD != 0),
            None => {
                let (offsets, any_encrypted, pos) =
                    open_walked(&file, index, index_offset, index_crc)?;
                // The extension ends where its locator starts, if it has one.
                let end = match ext::locate(index) {
                    Some(at) if at == pos => index.len() - ext::LOCATOR_SIZE,
                    _ => index.len(),
                };
                let mut c = Cursor::new(&file, &index[pos..end], index_offset + pos as u64);
                let ext = if features & FEATURE_BFCFS_EXT != 0 {
                    ExtIndex::parse(&mut c, offsets.len() as u32)?
                } else {
                    ExtIndex::default()
                };
                (Offsets::Walked(offsets), ext, any_encrypted)
            }
        };
        let count = offsets.len();
        Ok(Container {
            file,
            bytes: Arc::new(bytes),
            block_size,
            features,
            salt,
            index_offset,
            index_size,
            offsets,
            ext,
            any_encrypted,
            chunk_tables: Mutex::new(LruCache::new(
                NonZeroUsize::new(CHUNK_TABLES).unwrap_or(NonZeroUsize::MIN),
            )),
            key: None,
            cache: Arc::new(ChunkCache::new(DEFAULT_CACHE_BYTES)),
            last_chunk: Mutex::new(LruCache::new(
                NonZeroUsize::new(READERS).unwrap_or(NonZeroUsize::MIN),
            )),
            last_file: std::sync::atomic::AtomicUsize::new(usize::MAX),
            entries: Mutex::new(vec![None; USED_ENTRIES].into_boxed_slice()),
            checked: Paged::new(count),
            names: PagedFlags::new(count),
            partial: None,
            index_check,
            index_crc,
        })
    }

    /// The container's file name, for messages.
    pub fn file_name(&self) -> &Path {
        &self.file
    }
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    pub fn is_empty(&self) -> bool {
        self.offsets.len() == 0
    }

    /// Where index record `i` starts, relative to the index.
    fn record_start(&self, i: usize) -> u32 {
        match &self.offsets {
            Offsets::Walked(v) => v[i],
            Offsets::Table { at, .. } => {
                let d = self.data();
                let p = at + i * 4;
                d.get(p..p + 4)
                    .map_or(u32::MAX, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
        }
    }

    /// Index record `i` read in place. A record that does not fit (only an OFFSETS table can
    /// point there; `check_name` reports it) reads as an empty record.
    pub(crate) fn record(&self, i: usize) -> RecordRef<'_> {
        self.record_if_fits(i).unwrap_or(RecordRef::EMPTY)
    }

    fn record_if_fits(&self, i: usize) -> Option<RecordRef<'_>> {
        self.record_from(self.record_start(i))
    }

    /// The record that starts at `start` (relative to the index), if it fits.
    fn record_from(&self, start: u32) -> Option<RecordRef<'_>> {
        let start = self.index_offset as usize + start as usize;
        let end = match self.offsets {
            Offsets::Walked(_) => self.index_offset + self.index_size,
            Offsets::Table { records_end, .. } => self.index_offset + records_end as u64,
        } as usize;
        self.data().get(start..end).and_then(RecordRef::at)
    }

    /// Path bytes of entry `i` as stored (checked by `entry`), for searches.
    pub fn path(&self, i: usize) -> &[u8] {
        self.record(i).path()
    }

    /// Kind of entry `i` (its file type was checked at open).
    pub fn kind(&self, i: usize) -> Kind {
        Kind::from_mode(self.record(i).mode()).unwrap_or(Kind::File)
    }

    /// Recorded size of entry `i`.
    pub fn size(&self, i: usize) -> u64 {
        self.record(i).orig_size()
    }

    /// Whiteout mark of entry `i` (from the extension).
    pub fn whiteout(&self, i: usize) -> Whiteout {
        ext::lookup(&self.ext.whiteouts, i as u32).unwrap_or_default()
    }

    /// Link group of entry `i`: the first entry of its hardlink group, if it has other names.
    pub fn link_group(&self, i: usize) -> Option<u32> {
        let i = i as u32;
        ext::lookup(&self.ext.hardlinks, i).or_else(|| ext::lookup(&self.ext.groups, i).map(|_| i))
    }

    /// Every entry of link group `group` (its first entry included).
    pub fn link_names(&self, group: u32) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .ext
            .hardlinks
            .iter()
            .filter(|(_, t)| *t == group)
            .map(|(e, _)| *e as usize)
            .collect();
        if !out.is_empty() {
            out.push(group as usize);
            out.sort_unstable();
        }
        out
    }

    /// True when any entry has extended attributes.
    pub fn has_xattrs(&self) -> bool {
        !self.ext.xattrs.is_empty()
    }

    /// Entry `i`, decoded and checked: a safe path sorted after the previous one, an object
    /// inside the object area, and extension records that fit the entry. Errors name the entry
    /// and the offset of its record. When the file shrank below its index while open, the
    /// error says so, whatever the zeros read in its place decoded to.
    pub fn entry(&self, i: usize) -> Result<Entry> {
        let e = self.decode_entry(i, true);
        self.check_intact()?;
        self.index_checksum(Some(i))?;
        e
    }

    /// `entry(i)` without its path (left empty), checked the same: for metadata on paths that
    /// run for every entry of a listing, where copying the path would be the main cost.
    pub fn entry_meta(&self, i: usize) -> Result<Entry> {
        let e = self.decode_entry(i, false);
        self.check_intact()?;
        self.index_checksum(Some(i))?;
        e
    }

    /// Fails when the file shrank below the end of its index while open (see `map.rs`): what
    /// searches of the index found since then is not to be trusted (a name not found may be
    /// one that is gone).
    pub fn check_index(&self) -> Result<()> {
        self.check_intact()?;
        self.index_checksum(None)
    }

    fn check_intact(&self) -> Result<()> {
        self.bytes
            .intact(self.index_offset, self.index_size as usize)
            .map_err(|now| self.gone(self.index_offset, now, "the index".into()))
    }

    /// Fails once the deferred index checksum (see `IndexCheck`) is known to be wrong, naming
    /// `entry` when one is being reached. Computes it here when nothing has started it.
    fn index_checksum(&self, entry: Option<usize>) -> Result<()> {
        let check = &self.index_check;
        let mut state = check.state.load(Ordering::Acquire);
        if state == INDEX_UNCHECKED && check.claim() {
            let at = self.index_offset as usize;
            let index = self
                .data()
                .get(at..at + self.index_size as usize)
                .unwrap_or(&[]);
            check.run(&self.file, index, self.index_offset, self.index_crc);
            state = check.state.load(Ordering::Acquire);
        }
        if state != INDEX_BAD {
            return Ok(());
        }
        let what = match entry {
            Some(i) => format!(
                "index (reaching entry {i}, record at offset {})",
                self.index_offset + u64::from(self.record_start(i))
            ),
            None => "index".into(),
        };
        Err(Error::BadChecksum {
            file: self.file.clone(),
            what,
            offset: self.index_offset,
            stored: self.index_crc,
            computed: check.computed.load(Ordering::Relaxed),
        })
    }

    /// Entry `i` for reading its content: kept in a small direct-mapped cache (no hashing: this
    /// is on every read), so that the files being read decode their entry once, and keep reading what is still there if the file shrinks
    /// below its index (see `map.rs`).
    pub(crate) fn used_entry(&self, i: usize) -> Result<Arc<Entry>> {
        let lock = || self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let slot = i % USED_ENTRIES;
        if let Some(e) = lock()[slot].as_ref().filter(|e| e.idx == i) {
            return Ok(e.clone());
        }
        let e = Arc::new(self.entry(i)?);
        lock()[slot] = Some(e.clone());
        Ok(e)
    }

    /// Size of file `i`'s content (the cached entry's, see `used_entry`).
    pub fn content_size(&self, i: usize) -> Result<u64> {
        Ok(self.used_entry(i)?.size)
    }

    /// The error for bytes at `offset` that are gone: the file is now `now` bytes long.
    pub(crate) fn gone(&self, offset: u64, now: u64, what: String) -> Error {
        Error::Truncated {
            file: self.file.clone(),
            offset,
            what: format!(
                "{what} is gone: the file shrank to {now} bytes while open (changed in place)"
            ),
        }
    }

    fn decode_entry(&self, i: usize, with_path: bool) -> Result<Entry> {
        let r = self.record(i);
        let at = self.index_offset + u64::from(self.record_start(i));
        let path = r.path();
        self.check_name(i)?;
        let bad = |w: String| Error::Corrupt {
            file: self.file.clone(),
            offset: at,
            what: format!("index entry {i} ({}): {w}", show(path)),
        };
        let mode = r.mode();
        let kind =
            Kind::from_mode(mode).ok_or_else(|| bad(format!("mode {mode:#o} has no file type")))?;
        let (obj_offset, obj_size, size) = (r.obj_offset(), r.obj_size(), r.orig_size());
        let obj_end = obj_offset.checked_add(obj_size);
        if obj_offset < HEADER_SIZE as u64
            || obj_end.is_none_or(|e| e > self.index_offset)
            || (obj_size < OBJ_HEADER_SIZE as u64)
        {
            return Err(bad(format!(
                "object {obj_offset}+{obj_size} is outside the object area {HEADER_SIZE}..{}",
                self.index_offset
            )));
        }
        if kind == Kind::Symlink && size > 65535 {
            return Err(bad(format!("symlink target of {size} bytes")));
        }
        let mut e = Entry {
            path: if with_path { path.to_vec() } else { Vec::new() },
            kind,
            mode,
            mtime_ns: r.mtime_ns() as i64,
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
            comp: u8::try_from(r.comp()).unwrap_or(u8::MAX),
            enc: u8::try_from(r.enc()).unwrap_or(u8::MAX),
            crc: r.crc(),
            idx: i,
            chunks: None,
        };
        if self.features & FEATURE_BFCFS_EXT != 0 {
            self.apply_ext(&mut e)?;
        }
        Ok(e)
    }

    /// Every entry in index order, each decoded and checked as by `entry`.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry>> + '_ {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Adds what the extension says about `e`, checking that it agrees with the index.
    fn apply_ext(&self, e: &mut Entry) -> Result<()> {
        let bad = |what: String| Error::Corrupt {
            file: self.file.clone(),
            offset: self.index_offset,
            what: format!("extension: {what}"),
        };
        let i = e.idx as u32;
        let x = &self.ext;
        if let Some(at) = x.owners_at {
            let o = (at + u64::from(i) * 8) as usize;
            let d = self.data();
            let word = |p: usize| u32::from_le_bytes([d[p], d[p + 1], d[p + 2], d[p + 3]]);
            e.uid = Some(word(o));
            e.gid = Some(word(o + 4));
        }
        if let Ok(k) = x.devices.binary_search_by_key(&i, |r| r.0) {
            let (_, major, minor) = x.devices[k];
            if !matches!(e.kind, Kind::CharDev | Kind::BlockDev) {
                return Err(bad(format!(
                    "device numbers for {}, which is not a device",
                    show(self.path(e.idx))
                )));
            }
            e.rdev = libc::makedev(major, minor);
        }
        let lo = x.xattrs.partition_point(|r| r.0 < i);
        for (_, at) in x.xattrs[lo..].iter().take_while(|r| r.0 == i) {
            e.xattrs
                .push(ExtIndex::xattr_at(self.data(), &self.file, *at)?);
        }
        if let Some(t) = ext::lookup(&x.hardlinks, i) {
            let to = self.record(t as usize);
            if e.kind != Kind::File
                || Kind::from_mode(to.mode()) != Some(Kind::File)
                || e.obj_offset != to.obj_offset()
                || e.size != to.orig_size()
            {
                return Err(bad(format!(
                    "hardlink {} -> {} does not name one regular file object",
                    show(self.path(e.idx)),
                    show(to.path())
                )));
            }
        }
        if let Some(g) = self.link_group(e.idx) {
            if e.kind != Kind::File {
                return Err(bad(format!(
                    "hardlink {} -> {} does not name one regular file object",
                    show(self.path(g as usize)),
                    show(self.path(e.idx))
                )));
            }
            e.link_group = Some(g);
            e.nlink = ext::lookup(&x.groups, g).unwrap_or(1);
        }
        if let Some(w) = ext::lookup(&x.whiteouts, i) {
            if e.kind != Kind::File {
                return Err(bad(format!(
                    "whiteout marker {} is not a regular file",
                    show(self.path(e.idx))
                )));
            }
            e.whiteout = w;
        }
        if let Some(ch) = ext::lookup(&x.chunks, i) {
            let cs = u64::from(ch.chunk_size);
            if e.kind != Kind::File || e.size.div_ceil(cs) != u64::from(ch.count) {
                return Err(bad(format!(
                    "chunk table of {} has {} chunks of {cs} bytes for {} bytes",
                    show(self.path(e.idx)),
                    ch.count,
                    e.size
                )));
            }
            e.chunks = Some(ch);
        }
        Ok(())
    }

    /// The chunk table of `e`, decoded and checked once while it stays in a small cache.
    pub(crate) fn chunk_table(&self, e: &Entry) -> Result<Option<Arc<Chunks>>> {
        let Some(ch) = e.chunks else {
            return Ok(None);
        };
        let key = e.idx as u32;
        if let Some(t) = self.lock_tables().get(&key) {
            return Ok(Some(t.clone()));
        }
        let rest = usize::try_from(ch.at)
            .ok()
            .and_then(|a| self.data().get(a..))
            .unwrap_or(&[]);
        let mut c = Cursor::new(&self.file, rest, ch.at);
        let m = ch.count as usize;
        let mut stored = Vec::with_capacity(m.min(c.remaining() / 8));
        let mut crcs = Vec::with_capacity(m.min(c.remaining() / 8));
        for _ in 0..m {
            stored.push(c.u32("chunk stored size")?);
            crcs.push(c.u32("chunk checksum")?);
        }
        let table = ChunkTable {
            chunk_size: ch.chunk_size,
            stored,
            crcs,
        };
        // Raw chunks are read by position: their stored sizes must be their lengths.
        if e.comp == COMP_NONE {
            let cs = u64::from(ch.chunk_size);
            if let Some(k) = (0..table.stored.len())
                .find(|&k| u64::from(table.stored[k]) != (e.size - k as u64 * cs).min(cs))
            {
                return Err(Error::Corrupt {
                    file: self.file.clone(),
                    offset: self.index_offset,
                    what: format!(
                        "extension: chunk table of {}: raw chunk {k} claims {} stored bytes",
                        show(&e.path),
                        table.stored[k]
                    ),
                });
            }
        }
        let offsets = table.offsets();
        let t = Arc::new(Chunks { table, offsets });
        self.lock_tables().put(key, t.clone());
        Ok(Some(t))
    }

    fn lock_tables(&self) -> std::sync::MutexGuard<'_, LruCache<u32, Arc<Chunks>>> {
        self.chunk_tables.lock().unwrap_or_else(|p| p.into_inner())
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
        self.cache = Arc::new(ChunkCache::new(bytes));
    }

    /// True once `set_key` accepted a key.
    pub fn key_is_set(&self) -> bool {
        self.key.is_some()
    }

    /// True when any entry is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.any_encrypted
    }

    /// A named blob from the extension (e.g. an image's manifest).
    pub fn image_blob(&self, name: &str) -> Option<&[u8]> {
        self.ext
            .blobs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }
    pub fn image_blob_names(&self) -> impl Iterator<Item = &str> {
        self.ext.blobs.iter().map(|(n, _)| n.as_str())
    }

    /// First entry whose path is not below `key` in byte order.
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        self.bisect(0, self.len(), key)
    }

    /// First entry in `lo..hi` whose path is not below `key` (`hi` if none), by bisection.
    fn bisect(&self, mut lo: usize, mut hi: usize, key: &[u8]) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.path(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// `lower_bound(key)` for a `key` known to sort after every path before entry `from`:
    /// probes `from`, `from + 1`, `from + 3`, ... until a path is not below `key`, then
    /// bisects the last step. Reads about 2·log2(d) records near `from` when the answer is `d`
    /// entries on, where `lower_bound` reads log2(len) records spread over the whole index:
    /// the end of a directory's run, or the first entry below a directory found just before.
    pub fn lower_bound_from(&self, from: usize, key: &[u8]) -> usize {
        if from == 0 {
            return self.lower_bound(key);
        }
        let n = self.len();
        let mut lo = from.min(n);
        let mut step = 1;
        let hi = loop {
            let probe = lo.saturating_add(step - 1);
            if probe >= n {
                break n;
            }
            if self.path(probe) >= key {
                break probe;
            }
            lo = probe + 1;
            step = step.saturating_mul(2);
        };
        self.bisect(lo, hi, key)
    }

    /// `find` for a `path` known to sort after every path before entry `from` (see
    /// `lower_bound_from`).
    pub fn find_from(&self, from: usize, path: &[u8]) -> Option<usize> {
        let i = self.lower_bound_from(from, path);
        (i < self.len() && self.path(i) == path).then_some(i)
    }

    /// Index of the entry at `path`, by binary search over the records in place.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        let i = self.lower_bound(path);
        (i < self.len() && self.path(i) == path).then_some(i)
    }

    /// True when `dir` is the root, a directory entry, or an implicit directory (a prefix of
    /// other entries' paths).
    pub fn is_dir(&self, dir: &[u8]) -> bool {
        if dir.is_empty() {
            return true;
        }
        match self.find(dir) {
            Some(i) => self.kind(i) == Kind::Dir,
            None => {
                let (lo, hi) = self.prefix_range(dir);
                lo < hi
            }
        }
    }

    /// Range of entries whose path starts with `dir/` (all entries for the root).
    fn prefix_range(&self, dir: &[u8]) -> (usize, usize) {
        if dir.is_empty() {
            return (0, self.len());
        }
        let mut key = dir.to_vec();
        key.push(b'/');
        let lo = self.lower_bound(&key);
        if let Some(last) = key.last_mut() {
            *last = b'/' + 1;
        }
        (lo, self.lower_bound(&key))
    }

    /// Direct children of directory `dir` ("" is the root) in byte order of their names, with
    /// directories that only appear as parents of deeper paths synthesized. The path of every
    /// entry a name comes from is checked (as `check_name` checks it) on the way; entries listed
    /// one after the other are checked as a walk of the records: each record once.
    pub fn children(&self, dir: &[u8]) -> Result<Vec<Child>> {
        let (mut i, hi) = self.prefix_range(dir);
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        // Every path listed is `dir/` and a rest: with `dir` safe, a safe rest makes a safe
        // path (then only a failure is checked again whole, for its message).
        let dir_safe = dir.is_empty() || check_path(dir).is_ok();
        let mut out = Vec::new();
        // The record of entry `i` when the one before it was just checked: (index, start,
        // record), its place in the index and its order after that one already checked.
        let mut next: Option<(usize, u32, RecordRef<'_>)> = None;
        let mut last: Option<&[u8]> = None;
        let mut ordered = true;
        while i < hi {
            let (start, rec) = match next.take() {
                Some((k, start, rec)) if k == i => {
                    self.index_checksum(Some(i))?;
                    (start, rec)
                }
                _ => {
                    self.check_name(i)?;
                    (self.record_start(i), self.record(i))
                }
            };
            let path = rec.path();
            let rest = path.get(skip..).unwrap_or_default();
            if !(dir_safe && path.len() <= u16::MAX as usize && check_path(rest).is_ok()) {
                self.check_path_of(i, path)?;
            }
            if i + 1 < self.len() {
                let end = start.saturating_add(rec.len() as u32);
                let (start, r) = self.check_record_at(i + 1, Some(end))?;
                if path >= r.path() {
                    return Err(self.unsorted(i + 1, r.path(), path));
                }
                next = Some((i + 1, start, r));
            }
            self.names.set(i);
            let name = match rest.iter().position(|b| *b == b'/') {
                None => {
                    out.push(Child::Entry(i));
                    i += 1;
                    rest
                }
                Some(slash) => {
                    let name = &rest[..slash];
                    let full = &path[..skip + slash];
                    // This is the first entry below `full`: skip the whole run of `full/...`
                    // (contiguous in byte order). The directory listed just before is not
                    // listed twice; an implicit duplicate further on is removed by the dedup
                    // below.
                    let twin = last == Some(name);
                    if !twin {
                        out.push(Child::Implicit(name.to_vec()));
                    }
                    // Every path before `i` sorts before `full` + one past '/'.
                    let mut end = full.to_vec();
                    end.push(b'/' + 1);
                    i = self.lower_bound_from(i, &end).max(i + 1);
                    if twin {
                        continue;
                    }
                    name
                }
            };
            ordered &= last.is_none_or(|l| l < name);
            last = Some(name);
        }
        // "a-b" sorts between "a" and "a/x", so an implicit "a" can follow "a-b": sort by name
        // (stable, so a listed entry stays before its implicit twin) and drop the twins. Names
        // that came in increasing order (almost every directory) need neither.
        if !ordered {
            out.sort_by(|a, b| self.child_name(a, skip).cmp(self.child_name(b, skip)));
            out.dedup_by(|a, b| self.child_name(a, skip) == self.child_name(b, skip));
        }
        Ok(out)
    }

    /// How many subdirectories directory `dir` ("" is the root) has, from the extension's
    /// SUBDIRS table (a few binary searches): None when the container has no table (upstream
    /// files), and then only a listing can tell.
    pub fn subdir_count(&self, dir: &[u8]) -> Option<u32> {
        self.subdir_count_from(dir, 0)
    }

    /// `subdir_count` for a directory whose own entry (or any entry that sorts before
    /// `dir/`) is `from - 1`: the first entry below it is searched from there.
    pub fn subdir_count_from(&self, dir: &[u8], from: usize) -> Option<u32> {
        let (at, n) = self.ext.subdirs?;
        let table = usize::try_from(at)
            .ok()
            .and_then(|a| self.data().get(a..))?;
        let (first, depth) = if dir.is_empty() {
            (0, 0)
        } else {
            let mut key = dir.to_vec();
            key.push(b'/');
            let lo = self.lower_bound_from(from, &key);
            if lo >= self.len() || !self.path(lo).starts_with(&key) {
                return Some(0);
            }
            let depth = dir.iter().filter(|&&b| b == b'/').count() + 1;
            (lo as u32, depth as u32)
        };
        Some(super::subdirs::find(table, n as usize, first, depth).unwrap_or(0))
    }

    /// How many direct subdirectories of `dir` (listed or implicit) have a name starting with
    /// `prefix` (non-empty). Costs a binary search when there are none.
    pub fn subdirs_named(&self, dir: &[u8], prefix: &[u8]) -> usize {
        self.subdirs_named_from(dir, prefix, 0)
    }

    /// `subdirs_named` searching from entry `from` (as in `subdir_count_from`).
    pub fn subdirs_named_from(&self, dir: &[u8], prefix: &[u8], from: usize) -> usize {
        let mut key = dir.to_vec();
        if !dir.is_empty() {
            key.push(b'/');
        }
        let skip = key.len();
        key.extend_from_slice(prefix);
        let mut i = self.lower_bound_from(from, &key);
        if let Some(last) = key.last_mut() {
            *last = last.saturating_add(1);
        }
        let hi = self.lower_bound_from(i, &key);
        let mut n = 0;
        while i < hi {
            let path = self.path(i);
            match path[skip.min(path.len())..].iter().position(|b| *b == b'/') {
                None => {
                    n += usize::from(self.kind(i) == Kind::Dir);
                    i += 1;
                }
                Some(slash) => {
                    // An implicit directory, or the contents of one listed just before.
                    let full = &path[..skip + slash];
                    if self.find(full).is_none() {
                        n += 1;
                    }
                    i = self.prefix_range(full).1.max(i + 1);
                }
            }
        }
        n
    }

    /// Checks the extension's SUBDIRS table against the index (what `verify` adds): the
    /// counts every directory would be given, computed again from the paths.
    pub fn check_subdirs(&self) -> Result<()> {
        let Some((at, n)) = self.ext.subdirs else {
            return Ok(());
        };
        let mut counter = super::subdirs::Counter::default();
        for i in 0..self.len() {
            counter.add(i as u32, self.path(i), self.kind(i) == Kind::Dir);
        }
        let want = counter.finish();
        let table = usize::try_from(at)
            .ok()
            .and_then(|a| self.data().get(a..))
            .unwrap_or(&[]);
        let k = (0..want.len().max(n as usize)).find(|&k| {
            want.get(k).copied() != super::subdirs::record_at(table, k).filter(|_| k < n as usize)
        });
        match k {
            None => Ok(()),
            Some(k) => Err(Error::Corrupt {
                file: self.file.clone(),
                offset: at + (k * super::subdirs::RECORD_SIZE) as u64,
                what: format!(
                    "extension: subdirectory count record {k} of {n} is {:?}, the index says {:?} \
                     (first entry below, depth, subdirectories)",
                    super::subdirs::record_at(table, k).filter(|_| k < n as usize),
                    want.get(k)
                ),
            }),
        }
    }

    /// Checks what makes entry `i`'s path safe to list and find: a safe path, sorted between
    /// its neighbours, the records around it in place. A pair out of order is reported as the
    /// later entry's error. Done once per entry (`names`); the index checksum every time.
    fn check_name(&self, i: usize) -> Result<()> {
        self.index_checksum(Some(i))?;
        if self.names.get(i) {
            return Ok(());
        }
        // Records i, i - 1 and i + 1 (in that order), each read once more than its place needs.
        let ends = |j: usize| match j {
            0 => Some(8),
            _ => self.end_of(j - 1),
        };
        let (start, rec) = self.check_record_at(i, ends(i))?;
        let before = match i {
            0 => None,
            _ => Some(self.check_record_at(i - 1, ends(i - 1))?.1),
        };
        let after = match i + 1 < self.len() {
            true => {
                let end = start.saturating_add(rec.len() as u32);
                Some(self.check_record_at(i + 1, Some(end))?.1)
            }
            false => None,
        };
        let path = rec.path();
        self.check_path_of(i, path)?;
        if let Some(b) = before.filter(|b| b.path() >= path) {
            return Err(self.unsorted(i, path, b.path()));
        }
        if let Some(a) = after.filter(|a| path >= a.path()) {
            return Err(self.unsorted(i + 1, a.path(), path));
        }
        self.names.set(i);
        Ok(())
    }

    /// The error of entry `i`, whose path is not safe.
    fn check_path_of(&self, i: usize, path: &[u8]) -> Result<()> {
        check_path(path).map_err(|reason| Error::Corrupt {
            file: self.file.clone(),
            offset: self.index_offset + u64::from(self.record_start(i)),
            what: format!("index entry {i}: path {:?} {reason}", show(path)),
        })
    }

    /// The error of entry `k` (path `path`), not sorted after the entry before it (`before`).
    fn unsorted(&self, k: usize, path: &[u8], before: &[u8]) -> Error {
        Error::Corrupt {
            file: self.file.clone(),
            offset: self.index_offset + u64::from(self.record_start(k)),
            what: format!(
                "index entry {k} ({}) is not sorted after {} (duplicate or out of order)",
                show(path),
                show(before)
            ),
        }
    }

    /// Where record `j` ends, relative to the index (None when it does not fit).
    fn end_of(&self, j: usize) -> Option<u32> {
        let r = self.record_if_fits(j)?;
        Some(self.record_start(j).saturating_add(r.len() as u32))
    }

    /// With an OFFSETS table: checks that it says what a walk of the records says for entry
    /// `k` — entry 0 right after the index header (`want` 8), each next one where the one
    /// before ends (`want`; None when that one does not fit), the last one ending where the
    /// extension starts — and that the record fits. Returns the record's start and the record.
    fn check_record_at(&self, k: usize, want: Option<u32>) -> Result<(u32, RecordRef<'_>)> {
        let start = self.record_start(k);
        let Offsets::Table { records_end, .. } = self.offsets else {
            return Ok((start, self.record(k)));
        };
        let at = self.index_offset + u64::from(start);
        if want.is_some_and(|w| w != start) || start >= records_end {
            return Err(Error::Corrupt {
                file: self.file.clone(),
                offset: at,
                what: format!(
                    "index entry {k}: the record offset table says it starts at index offset \
                     {start}, the records before it end at {}",
                    want.unwrap_or(0)
                ),
            });
        }
        let Some(rec) = self.record_from(start) else {
            // Read it again through the cursor for the precise error.
            let rest = &self.data()[at as usize..(self.index_offset + records_end as u64) as usize];
            let mut c = Cursor::new(&self.file, rest, at);
            let k32 = k as u32;
            let plen = c.u32("path length").map_err(|e| in_entry(e, k32))? as usize;
            c.bytes(plen, "path").map_err(|e| in_entry(e, k32))?;
            c.bytes(INDEX_ENTRY_FIXED - 4, "index entry fields")
                .map_err(|e| in_entry(e, k32))?;
            return Err(c.corrupt(format!("index entry {k} does not fit")));
        };
        let end = start.saturating_add(rec.len() as u32);
        if k + 1 == self.len() && end != records_end {
            return Err(Error::Corrupt {
                file: self.file.clone(),
                offset: at,
                what: format!(
                    "index entry {k}, the last, ends at index offset {:?}, not where the \
                     extension starts ({records_end})",
                    Some(end)
                ),
            });
        }
        Ok((start, rec))
    }

    fn child_name<'a>(&'a self, c: &'a Child, skip: usize) -> &'a [u8] {
        match c {
            Child::Entry(i) => &self.path(*i)[skip..],
            Child::Implicit(n) => n,
        }
    }

    /// Uses `key` for encrypted content after checking that it is the right one.
    pub fn set_key(&mut self, key: &Key) -> Result<()> {
        let ck = key
            .derive(&self.salt)
            .map_err(|what| Error::Usage { what })?;
        if let Some(kc) = self.ext.keycheck {
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
        let mut candidates: Vec<(u64, usize)> = (0..self.len())
            .filter(|&i| {
                let r = self.record(i);
                r.enc() == u32::from(ENC_CHACHA20_POLY1305)
                    && Kind::from_mode(r.mode()) == Some(Kind::File)
            })
            .map(|i| (self.record(i).obj_size(), i))
            .collect();
        candidates.sort_unstable();
        candidates.truncate(3);
        if candidates.is_empty() {
            self.key = Some(ck);
            return Ok(());
        }
        let mut first_err = None;
        for &(_, i) in &candidates {
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
                show(self.path(candidates[0].1)),
                candidates.len()
            ),
        })
    }

    pub(crate) fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

/// The checksum of the index, computed in blocks just ahead of the record walk: the checksum
/// streams each block into cache, where the walk (a chain of dependent loads) then finds it.
#[derive(Default)]
struct RunningCrc {
    upto: usize,
    crc: u32,
}

impl RunningCrc {
    const BLOCK: usize = 128 << 10;

    /// Checksums the next block once the walk at `pos` comes near the end of the last one.
    fn advance(&mut self, index: &[u8], pos: usize) {
        if pos + Self::BLOCK / 2 >= self.upto && self.upto < index.len() {
            let end = (self.upto + Self::BLOCK).min(index.len());
            self.crc = codec::bfc_crc_append(self.crc, &index[self.upto..end]);
            self.upto = end;
        }
    }

    fn finish(self, index: &[u8]) -> u32 {
        codec::bfc_crc_append(self.crc, &index[self.upto..])
    }
}

/// Walks the index records: checks that each fits and has a file type. Returns where each
/// starts (relative to the index), whether any is encrypted, and where the records end.
fn scan_records(
    file: &Path,
    index: &[u8],
    index_offset: u64,
    crc: &mut RunningCrc,
) -> Result<(Vec<u32>, bool, usize)> {
    let index_size = index.len();
    let mut c = Cursor::new(file, index, index_offset);
    let IndexHeader { version, count } = IndexHeader::decode(&mut c)?;
    if version != INDEX_VERSION {
        return Err(Error::Unsupported {
            file: file.to_path_buf(),
            what: format!("index version {version}"),
        });
    }
    if (count as usize).saturating_mul(INDEX_ENTRY_FIXED + 1) > c.remaining() {
        return Err(c.corrupt(format!(
            "entry count {count} does not fit in an index of {index_size} bytes"
        )));
    }
    let mut offsets: Vec<u32> = Vec::with_capacity(count as usize);
    let mut any_encrypted = false;
    let mut pos = c.offset() - index_offset;
    for k in 0..count {
        crc.advance(index, pos as usize);
        let Some(r) = RecordRef::at(&index[pos as usize..]) else {
            // Cold path: read the record again through the cursor for the precise error.
            let mut c = Cursor::new(file, &index[pos as usize..], index_offset + pos);
            let plen = c.u32("path length").map_err(|e| in_entry(e, k))? as usize;
            c.bytes(plen, "path").map_err(|e| in_entry(e, k))?;
            c.bytes(INDEX_ENTRY_FIXED - 4, "index entry fields")
                .map_err(|e| in_entry(e, k))?;
            return Err(c.corrupt(format!("index entry {k} does not fit")));
        };
        let mode = r.mode();
        if !matches!(
            mode & S_IFMT,
            S_IFREG | S_IFDIR | S_IFLNK | S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK
        ) {
            return Err(Error::Corrupt {
                file: file.to_path_buf(),
                offset: index_offset + pos,
                what: format!(
                    "index entry {k} ({}): mode {mode:#o} has no file type",
                    show(r.path())
                ),
            });
        }
        any_encrypted |= r.enc() == u32::from(ENC_CHACHA20_POLY1305);
        // The caller refuses indexes over 4 GiB.
        offsets.push(pos as u32);
        pos += r.len() as u64;
    }
    Ok((offsets, any_encrypted, pos as usize))
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
    // One pass (this runs for every name listed); the reasons keep their order of precedence.
    let bad_component = |c: &[u8]| match c {
        b"" => Some("has an empty component"),
        b"." | b".." => Some("has a '.' or '..' component"),
        _ => None,
    };
    let (mut nul, mut component, mut start) = (false, None, 0);
    for (k, &b) in path.iter().enumerate() {
        if b > b'/' {
            continue;
        }
        match b {
            0 => nul = true,
            b'/' => {
                component = component.or_else(|| bad_component(&path[start..k]));
                start = k + 1;
            }
            _ => {}
        }
    }
    component = component.or_else(|| bad_component(&path[start..]));
    if nul {
        return Err("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Err("is absolute");
    }
    component.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::{check_path, Child, Container};
    use crate::bfc::writer::{Meta, Writer, WriterOptions};

    /// A listing names each child once, in byte order of names: a listed directory and the
    /// entries below it, a name that sorts between a directory and its entries ("a-b" between
    /// "a" and "a/x"), directories only implied by deeper paths.
    #[test]
    fn children_are_listed_once_in_name_order() {
        let meta = Meta {
            mode: 0o755,
            ..Meta::default()
        };
        let mut w = Writer::new(
            std::io::Cursor::new(Vec::new()),
            WriterOptions::default(),
            std::path::Path::new("t"),
        )
        .unwrap();
        for d in ["a", "b", "d/e"] {
            w.add_dir(d.as_bytes(), &meta).unwrap();
        }
        for f in ["a-b", "a/x", "a/y/z", "b/y", "c/deep/f", "d/e/f", "d/g"] {
            w.add_file(f.as_bytes(), &meta, &mut &b"x"[..]).unwrap();
        }
        let c = Container::from_bytes("t", w.finish().unwrap().into_inner()).unwrap();
        let names = |dir: &str| -> Vec<String> {
            let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
            c.children(dir.as_bytes())
                .unwrap()
                .into_iter()
                .map(|ch| match ch {
                    Child::Entry(i) => String::from_utf8_lossy(&c.path(i)[skip..]).into_owned(),
                    Child::Implicit(n) => format!("({})", String::from_utf8_lossy(&n)),
                })
                .collect()
        };
        assert_eq!(names(""), ["a", "a-b", "b", "(c)", "(d)"]);
        assert_eq!(names("a"), ["x", "(y)"]);
        assert_eq!(names("d"), ["e", "g"]);
        assert_eq!(names("c"), ["(deep)"]);
        assert!(names("a/x").is_empty());
    }

    #[test]
    fn unsafe_paths_are_refused_with_the_first_reason_that_applies() {
        let long = vec![b'a'; 65536];
        for (path, want) in [
            (&b""[..], Err("is empty")),
            (&long[..], Err("is longer than 65535 bytes")),
            (b"/a/\0/..", Err("contains a NUL byte")),
            (b"a/..\0", Err("contains a NUL byte")),
            (b"/a/../b", Err("is absolute")),
            (b"/", Err("is absolute")),
            (b"a//b/..", Err("has an empty component")),
            (b"a/../b//", Err("has a '.' or '..' component")),
            (b"a/", Err("has an empty component")),
            (b".", Err("has a '.' or '..' component")),
            (b"a/.b/..c/.../b.", Ok(())),
            (b"d0001/f0002", Ok(())),
            (b"-/+ ,", Ok(())),
        ] {
            assert_eq!(
                check_path(path),
                want,
                "{:?}",
                String::from_utf8_lossy(path)
            );
        }
    }
}
