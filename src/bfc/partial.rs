//! A BFC file that is only partly on local disk: a sparse file of the whole file's size, a
//! record of which byte ranges are in it, and a [`RangeSource`] that hands out the rest (a
//! registry blob or an HTTP URL; the transport lives outside this module).
//!
//! The reader asks for the stored bytes it is about to touch ([`Container::need`]); missing
//! ones are fetched in *pieces* that can each be checked on their own before they are written:
//! an object header (against its index entry), one chunk of a chunked file (decoded, CRC from
//! the chunk table), a whole object (header, then the whole content's CRC), or filler between
//! objects (checked only by the whole file's digest once complete). Adjacent missing pieces are
//! merged into requests of at least [`PartialOptions::min_request`] bytes, several requests run
//! at once on worker threads, and a reader waits at most [`PartialOptions::deadline`]: then its
//! read fails (EIO) while the request goes on, so a later read finds the bytes or retries.
//!
//! The record (`present` file) is an append-only log of 24-byte records
//! `start u64, end u64, crc32c of those 16 bytes u32, 0 u32`, written after the data is fsynced,
//! so a crash can lose a record (the range is fetched again) but never claim bytes that are not
//! on disk. Several processes may share one partial file: each appends, and each reads the
//! others' records before it fetches.
use super::codec::{self, bfc_crc};
use super::cursor::Cursor;
use super::error::{show, Error, Result};
use super::layout::*;
use super::reader::{Container, Entry, Kind};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Where the missing bytes of a partial file come from.
pub trait RangeSource: Send + Sync {
    /// What the bytes are, for messages (e.g. "layer sha256:… of 127.0.0.1:5000/app").
    fn name(&self) -> String;
    /// Exactly `len` bytes at `offset` of the remote file. Retries and backoff are the
    /// source's business; an error is final for this request.
    fn get(&self, offset: u64, len: u64) -> std::result::Result<Vec<u8>, String>;
    /// Called once, when every byte of `file` is local: check the whole file (e.g. against a
    /// blob digest) and publish it where a complete file belongs.
    fn complete(&self, _file: &Path) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// How a partial file fetches.
#[derive(Debug, Clone)]
pub struct PartialOptions {
    /// Longest a read waits for missing bytes before it fails.
    pub deadline: Duration,
    /// Smallest request: adjacent missing pieces after the ones needed are added up to this.
    pub min_request: u64,
    /// Largest request (bigger needs are split, and the parts fetched at once).
    pub max_request: u64,
    /// Requests in flight at once.
    pub parallel: usize,
}

impl Default for PartialOptions {
    fn default() -> Self {
        PartialOptions {
            deadline: Duration::from_secs(30),
            min_request: 512 << 10,
            max_request: 4 << 20,
            parallel: 6,
        }
    }
}

/// Sorted, merged byte ranges `[start, end)`.
#[derive(Debug, Default, Clone)]
pub struct Ranges {
    map: BTreeMap<u64, u64>,
    total: u64,
}

impl Ranges {
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                self.map.remove(&ps);
                self.total -= pe - ps;
                s = ps;
                e = e.max(pe);
            }
        }
        while let Some((&ns, &ne)) = self.map.range(s..).next() {
            if ns > e {
                break;
            }
            self.map.remove(&ns);
            self.total -= ne - ns;
            e = e.max(ne);
        }
        self.map.insert(s, e);
        self.total += e - s;
    }

    /// True when all of `[start, end)` is in the set.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        start >= end
            || self
                .map
                .range(..=start)
                .next_back()
                .is_some_and(|(_, &pe)| pe >= end)
    }

    /// The first range missing from the set inside `[from, to)`.
    pub fn gap(&self, from: u64, to: u64) -> Option<(u64, u64)> {
        let mut at = from;
        if let Some((_, &pe)) = self.map.range(..=at).next_back() {
            at = at.max(pe);
        }
        if at >= to {
            return None;
        }
        let end = self.map.range(at..).next().map_or(to, |(&s, _)| s.min(to));
        Some((at, end))
    }

    /// Bytes in the set.
    pub fn total(&self) -> u64 {
        self.total
    }
}

const RECORD: usize = 24;

fn encode_record(start: u64, end: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&start.to_le_bytes());
    r[8..16].copy_from_slice(&end.to_le_bytes());
    let crc = bfc_crc(&r[..16]);
    r[16..20].copy_from_slice(&crc.to_le_bytes());
    r
}

fn decode_record(r: &[u8]) -> Option<(u64, u64)> {
    let word = |a: usize| u64::from_le_bytes(r[a..a + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(r[16..20].try_into().unwrap_or([0; 4]));
    (r.len() == RECORD && crc == bfc_crc(&r[..16])).then(|| (word(0), word(8)))
}

/// Creates the record of a new partial file of `size` bytes saying `ranges` are present
/// (the caller wrote and synced them), replacing any old one.
pub fn create_record(path: &Path, ranges: &[(u64, u64)]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    for &(s, e) in ranges {
        f.write_all(&encode_record(s, e))?;
    }
    f.sync_all()
}

/// Reads every valid record of the log at `path` from `from` on, into `into`; returns the
/// offset after the last whole record.
fn read_records(f: &mut File, from: u64, into: &mut Ranges) -> std::io::Result<u64> {
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let whole = buf.len() / RECORD * RECORD;
    for r in buf[..whole].chunks_exact(RECORD) {
        if let Some((s, e)) = decode_record(r) {
            into.insert(s, e);
        }
    }
    Ok(from + whole as u64)
}

/// What a piece is checked with before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Bytes no reader uses (file header and index are fetched first; gaps between objects):
    /// only the whole file's digest covers them.
    None,
    /// A whole object of entry `i`: header, then content.
    Object(u32),
    /// The header and name of chunked file `i`.
    Header(u32),
    /// Chunk `k` of chunked file `i`.
    Chunk(u32, u32),
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    start: u64,
    end: u64,
    check: Check,
}

/// One request: its outcome once done.
#[derive(Default)]
struct Ticket {
    outcome: Mutex<Option<std::result::Result<(), String>>>,
}

impl Ticket {
    fn outcome(&self) -> Option<std::result::Result<(), String>> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

struct State {
    present: Ranges,
    /// Requests queued or running: (start, end, ticket).
    inflight: Vec<(u64, u64, Arc<Ticket>)>,
    queue: VecDeque<(u64, u64, Arc<Ticket>)>,
    workers: usize,
    /// Bytes of the record log read so far.
    log_pos: u64,
}

/// The partial-file state of an open [`Container`].
pub struct Partial {
    file: PathBuf,
    size: u64,
    data: File,
    log_path: PathBuf,
    log: Mutex<File>,
    source: Arc<dyn RangeSource>,
    opts: PartialOptions,
    state: Mutex<State>,
    changed: Condvar,
    /// Objects by offset: (start, end, entry), built on first use.
    objects: OnceLock<Vec<(u64, u64, u32)>>,
    /// The container this belongs to, for the worker threads (set by `Container::share`).
    me: OnceLock<Weak<Container>>,
    completing: AtomicBool,
    background: AtomicBool,
}

impl Partial {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes present and the file's size.
    pub fn progress(&self) -> (u64, u64) {
        (self.lock().present.total(), self.size)
    }

    pub fn source_name(&self) -> String {
        self.source.name()
    }

    /// Picks up records that other processes appended.
    fn refresh(&self) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let from = self.lock().log_pos;
        let mut found = Ranges::default();
        if let Ok(pos) = read_records(&mut log, from, &mut found) {
            let mut st = self.lock();
            for (&s, &e) in &found.map {
                st.present.insert(s, e);
            }
            st.log_pos = st.log_pos.max(pos);
        }
    }

    fn fetch_error(&self, offset: u64, what: String) -> Error {
        Error::Fetch {
            file: self.file.clone(),
            offset,
            what,
        }
    }
}

/// Reads the record at `record` of partial file `file`.
pub fn present_bytes(record: &Path) -> std::io::Result<u64> {
    let mut f = File::open(record)?;
    let mut r = Ranges::default();
    read_records(&mut f, 0, &mut r)?;
    Ok(r.total())
}

impl Container {
    /// Opens the partial file `path` (sparse, of the remote file's size; its header and index
    /// range present) whose record is `record`; missing bytes come from `source`. Call
    /// [`Container::share`] to let reads fetch on worker threads (and wait with a deadline);
    /// before that, fetches run on the reading thread.
    pub fn open_partial(
        path: &Path,
        record: &Path,
        source: Arc<dyn RangeSource>,
        opts: PartialOptions,
    ) -> Result<Container> {
        let data = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut log = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(record)
            .map_err(|e| Error::io(record, e))?;
        // A torn last record (a crash while appending) would misalign the records after it.
        if let Ok(m) = log.metadata() {
            if m.len() % RECORD as u64 != 0 {
                let _ = log.set_len(m.len() / RECORD as u64 * RECORD as u64);
            }
        }
        let mut present = Ranges::default();
        let log_pos = read_records(&mut log, 0, &mut present).map_err(|e| Error::io(record, e))?;
        let size = data.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut c = Container::open(path)?;
        if !c.is_mapped() {
            return Err(Error::Unsupported {
                file: path.to_path_buf(),
                what: "a partial file that cannot be memory-mapped".into(),
            });
        }
        c.partial = Some(Partial {
            file: path.to_path_buf(),
            size,
            data,
            log_path: record.to_path_buf(),
            log: Mutex::new(log),
            source,
            opts,
            state: Mutex::new(State {
                present,
                inflight: Vec::new(),
                queue: VecDeque::new(),
                workers: 0,
                log_pos,
            }),
            changed: Condvar::new(),
            objects: OnceLock::new(),
            me: OnceLock::new(),
            completing: AtomicBool::new(false),
            background: AtomicBool::new(false),
        });
        Ok(c)
    }

    /// Wraps the container for sharing; a partial one learns where it lives, so that its
    /// fetches run on worker threads.
    pub fn share(self) -> Arc<Container> {
        let a = Arc::new(self);
        if let Some(p) = &a.partial {
            let _ = p.me.set(Arc::downgrade(&a));
        }
        a
    }

    fn is_mapped(&self) -> bool {
        matches!(*self.bytes, super::map::Bytes::Mapped(_))
    }

    /// The partial-file state, when this container is not all local.
    pub fn partial(&self) -> Option<&Partial> {
        self.partial.as_ref()
    }

    /// Makes bytes `[offset, offset + len)` local (a no-op for complete files).
    #[inline]
    pub(crate) fn need(&self, offset: u64, len: u64) -> Result<()> {
        match &self.partial {
            None => Ok(()),
            Some(p) => self.fill(p, &[(offset, offset.saturating_add(len))], true),
        }
    }

    /// Starts fetching `[offset, offset + len)` without waiting (reads ahead).
    pub(crate) fn prefetch(&self, offset: u64, len: u64) {
        if let Some(p) = &self.partial {
            let _ = self.fill(p, &[(offset, offset.saturating_add(len))], false);
        }
    }

    /// True when `[offset, offset + len)` is local.
    pub(crate) fn is_local(&self, offset: u64, len: u64) -> bool {
        self.partial.as_ref().is_none_or(|p| {
            p.lock()
                .present
                .contains(offset, offset.saturating_add(len))
        })
    }

    /// Fetches the rest of a partial file in the background, at most `rate` bytes/s, and
    /// completes it (see [`RangeSource::complete`]). Nothing for complete files or rate 0.
    pub fn start_background(self: &Arc<Self>, rate: u64) {
        let Some(p) = &self.partial else { return };
        if rate == 0 || p.background.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("bfc-background".into())
            .spawn(move || background(&weak, rate));
    }

    /// The object pieces of the data area, by offset.
    fn objects<'a>(&self, p: &'a Partial) -> &'a [(u64, u64, u32)] {
        p.objects.get_or_init(|| {
            let mut v: Vec<(u64, u64, u32)> = (0..self.len())
                .filter_map(|i| {
                    let r = self.record(i);
                    let (s, n) = (r.obj_offset(), r.obj_size());
                    let e = s.checked_add(n)?;
                    (n > 0 && s >= HEADER_SIZE as u64 && e <= self.index_offset)
                        .then_some((s, e, i as u32))
                })
                .collect();
            v.sort_unstable();
            v.dedup_by_key(|o| o.0);
            v
        })
    }

    /// The piece holding byte `off` (`off` < file size).
    fn piece_at(&self, p: &Partial, off: u64) -> Piece {
        let data_end = self.index_offset;
        if off < HEADER_SIZE as u64 {
            return Piece {
                start: 0,
                end: (HEADER_SIZE as u64).min(p.size),
                check: Check::None,
            };
        }
        if off >= data_end {
            return Piece {
                start: data_end,
                end: p.size,
                check: Check::None,
            };
        }
        let objs = self.objects(p);
        let k = objs.partition_point(|o| o.0 <= off);
        if k > 0 {
            let (s, e, i) = objs[k - 1];
            if off < e {
                return self.object_piece(s, e, i, off);
            }
        }
        let start = if k > 0 {
            objs[k - 1].1.max(HEADER_SIZE as u64)
        } else {
            HEADER_SIZE as u64
        };
        let end = objs.get(k).map_or(data_end, |o| o.0.min(data_end));
        Piece {
            start,
            end,
            check: Check::None,
        }
    }

    /// The piece of object `[s, e)` of entry `i` that holds `off`: the whole object, or for a
    /// chunked file (unencrypted, not a hardlink) its header or one chunk.
    fn object_piece(&self, s: u64, e: u64, i: u32, off: u64) -> Piece {
        let whole = Piece {
            start: s,
            end: e,
            check: Check::Object(i),
        };
        let Ok(en) = self.entry(i as usize) else {
            return whole;
        };
        if !en.is_chunked() || en.enc != ENC_NONE || en.link_group.is_some() {
            return whole;
        }
        let Ok(Some(ch)) = self.chunk_table(&en) else {
            return whole;
        };
        let body = s + payload_offset(en.path.len()) as u64;
        let n = ch.table.stored.len();
        let Some(&last) = ch.offsets.last() else {
            return whole;
        };
        if n == 0 || body + last > e {
            return whole;
        }
        if off < body {
            return Piece {
                start: s,
                end: body,
                check: Check::Header(i),
            };
        }
        let k = ch
            .offsets
            .partition_point(|&o| body + o <= off)
            .saturating_sub(1)
            .min(n - 1);
        let end = if k + 1 == n {
            e
        } else {
            body + ch.offsets[k + 1]
        };
        Piece {
            start: body + ch.offsets[k],
            end,
            check: Check::Chunk(i, k as u32),
        }
    }

    /// Makes every range of `want` local: queues requests for what is missing and (with
    /// `wait`) waits for them, at most the deadline.
    fn fill(&self, p: &Partial, want: &[(u64, u64)], wait: bool) -> Result<()> {
        let want: Vec<(u64, u64)> = want
            .iter()
            .map(|&(a, b)| (a, b.min(p.size)))
            .filter(|(a, b)| a < b)
            .collect();
        if want.is_empty() {
            return Ok(());
        }
        {
            let st = p.lock();
            if want.iter().all(|&(a, b)| st.present.contains(a, b)) {
                return Ok(());
            }
        }
        p.refresh();
        let deadline = Instant::now() + p.opts.deadline;
        // A request that succeeded may have left pieces of a later need missing (another
        // process's record, a split): plan again, a bounded number of times.
        for _ in 0..4 {
            let tickets = self.plan(p, &want);
            if tickets.is_empty() {
                return Ok(());
            }
            if !wait {
                return Ok(());
            }
            let worker = p.me.get().and_then(Weak::upgrade);
            match worker {
                Some(me) => self.spawn_workers(p, &me),
                // Not shared yet (opening, key check): fetch on this thread.
                None => self.work(p),
            }
            let mut st = p.lock();
            loop {
                if tickets.iter().all(|t| t.outcome().is_some()) {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    let (a, b) = want[0];
                    log::error!(
                        "{}: bytes {a}..{b} of {}: no data within the read deadline of {} s",
                        p.file.display(),
                        p.source.name(),
                        p.opts.deadline.as_secs()
                    );
                    return Err(p.fetch_error(
                        a,
                        format!(
                            "{} sent no data for bytes {a}..{b} within {} s",
                            p.source.name(),
                            p.opts.deadline.as_secs()
                        ),
                    ));
                }
                st = p
                    .changed
                    .wait_timeout(st, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            if want.iter().all(|&(a, b)| st.present.contains(a, b)) {
                return Ok(());
            }
            drop(st);
            if let Some(Err(why)) = tickets
                .iter()
                .find_map(|t| t.outcome().filter(|o| o.is_err()))
            {
                return Err(p.fetch_error(want[0].0, why));
            }
        }
        Err(p.fetch_error(
            want[0].0,
            "bytes still missing after their requests completed".into(),
        ))
    }

    /// Tickets of the requests that bring what `want` misses (queuing new requests for what
    /// nobody fetches yet, merged with the missing pieces after them up to the minimum size).
    fn plan(&self, p: &Partial, want: &[(u64, u64)]) -> Vec<Arc<Ticket>> {
        // The pieces of each range, then more after it up to the minimum request size:
        // computed without the lock (it decodes index entries).
        let mut groups: Vec<Vec<Piece>> = Vec::new();
        for &(a, b) in want {
            let mut v = Vec::new();
            let mut off = a;
            let mut extra = 0u64;
            while off < p.size && (off < b || extra < p.opts.min_request) {
                let piece = self.piece_at(p, off);
                if piece.end <= off {
                    break;
                }
                if off >= b {
                    extra += piece.end - piece.start;
                }
                v.push(piece);
                off = piece.end;
            }
            groups.push(v);
        }
        let mut st = p.lock();
        let mut tickets: Vec<Arc<Ticket>> = Vec::new();
        for (g, &(_, b)) in groups.iter().zip(want) {
            let mut run: Option<(u64, u64)> = None;
            let mut runs = Vec::new();
            for piece in g {
                let needed = piece.start < b;
                if st.present.contains(piece.start, piece.end) {
                    if !needed {
                        break;
                    }
                    runs.extend(run.take());
                    continue;
                }
                if let Some((_, _, t)) = st
                    .inflight
                    .iter()
                    .find(|(s, e, _)| *s <= piece.start && piece.start < *e)
                {
                    if !needed {
                        break;
                    }
                    if !tickets.iter().any(|x| Arc::ptr_eq(x, t)) {
                        tickets.push(t.clone());
                    }
                    runs.extend(run.take());
                    continue;
                }
                if !needed && run.is_none() {
                    break;
                }
                run = match run {
                    Some((s, e)) if e == piece.start && piece.end - s <= p.opts.max_request => {
                        Some((s, piece.end))
                    }
                    Some(r) if !needed => {
                        runs.push(r);
                        None
                    }
                    Some(r) => {
                        runs.push(r);
                        Some((piece.start, piece.end))
                    }
                    None => Some((piece.start, piece.end)),
                };
                if run.is_none() {
                    break;
                }
            }
            runs.extend(run);
            for (s, e) in runs {
                let t = Arc::new(Ticket::default());
                st.inflight.push((s, e, t.clone()));
                st.queue.push_back((s, e, t.clone()));
                tickets.push(t);
            }
        }
        tickets
    }

    fn spawn_workers(&self, p: &Partial, me: &Arc<Container>) {
        let mut st = p.lock();
        while st.workers < p.opts.parallel && st.workers < st.queue.len() {
            let me = me.clone();
            let spawned = std::thread::Builder::new()
                .name("bfc-fetch".into())
                .spawn(move || {
                    if let Some(p) = &me.partial {
                        me.work(p);
                    }
                });
            match spawned {
                Ok(_) => st.workers += 1,
                Err(e) => {
                    log::warn!("cannot start a fetch thread: {e}");
                    break;
                }
            }
        }
        if st.workers == 0 {
            drop(st);
            // No thread could be started: fetch on this thread.
            self.work(p);
        }
    }

    /// Runs queued requests until the queue is empty.
    fn work(&self, p: &Partial) {
        loop {
            let job = {
                let mut st = p.lock();
                match st.queue.pop_front() {
                    Some(j) => j,
                    None => {
                        st.workers = st.workers.saturating_sub(1);
                        return;
                    }
                }
            };
            let (s, e, ticket) = job;
            let (good, outcome) = self.fetch_request(p, s, e);
            {
                let mut st = p.lock();
                for &(a, b) in &good {
                    st.present.insert(a, b);
                }
                *ticket.outcome.lock().unwrap_or_else(|x| x.into_inner()) = Some(outcome);
                st.inflight.retain(|(_, _, t)| !Arc::ptr_eq(t, &ticket));
            }
            p.changed.notify_all();
            if !good.is_empty() {
                self.persist(p, &good);
            }
        }
    }

    /// Fetches `[s, e)`, checks each piece and writes the good ones. Returns the ranges
    /// written and the outcome.
    fn fetch_request(
        &self,
        p: &Partial,
        s: u64,
        e: u64,
    ) -> (Vec<(u64, u64)>, std::result::Result<(), String>) {
        let t = Instant::now();
        let bytes = match p.source.get(s, e - s) {
            Ok(b) if b.len() as u64 == e - s => b,
            Ok(b) => {
                let why = format!(
                    "{}: bytes {s}..{e}: got {} bytes, asked for {}",
                    p.source.name(),
                    b.len(),
                    e - s
                );
                log::error!("{why}");
                return (Vec::new(), Err(why));
            }
            Err(why) => {
                log::error!("{}: fetching bytes {s}..{e}: {why}", p.source.name());
                return (Vec::new(), Err(why));
            }
        };
        log::debug!(
            "{}: fetched bytes {s}..{e} in {:?}",
            p.source.name(),
            t.elapsed()
        );
        let mut good: Vec<(u64, u64)> = Vec::new();
        let mut first_bad = None;
        let mut off = s;
        while off < e {
            let piece = self.piece_at(p, off);
            let end = piece.end.min(e);
            if piece.start != off || end <= off {
                // Not aligned to pieces (the map changed?): take nothing from here on.
                first_bad.get_or_insert(format!("bytes {off}..{e} do not start a piece"));
                break;
            }
            let slice = &bytes[(off - s) as usize..(end - s) as usize];
            let checked = if end < piece.end {
                Err(format!("piece {}..{} cut at {end}", piece.start, piece.end))
            } else {
                self.check_piece(piece, slice).map_err(|e| e.to_string())
            };
            match checked {
                Ok(()) => match p.data.write_all_at(slice, off) {
                    Ok(()) => match good.last_mut() {
                        Some(last) if last.1 == off => last.1 = end,
                        _ => good.push((off, end)),
                    },
                    Err(err) => {
                        first_bad.get_or_insert(format!(
                            "writing bytes {off}..{end} to {}: {err}",
                            p.file.display()
                        ));
                    }
                },
                Err(why) => {
                    log::error!(
                        "{}: bytes {off}..{end} fail their check: {why}",
                        p.source.name()
                    );
                    first_bad.get_or_insert(format!(
                        "{}: bytes {off}..{end} fail their check: {why}",
                        p.source.name()
                    ));
                }
            }
            off = end;
        }
        (good, first_bad.map_or(Ok(()), Err))
    }

    /// Makes the written ranges durable, then records them; completes the file when it is all
    /// there.
    fn persist(&self, p: &Partial, good: &[(u64, u64)]) {
        if let Err(e) = p.data.sync_data() {
            log::error!("syncing {}: {e}", p.file.display());
            return;
        }
        let mut buf = Vec::with_capacity(good.len() * RECORD);
        for &(a, b) in good {
            buf.extend_from_slice(&encode_record(a, b));
        }
        {
            let mut log = p.log.lock().unwrap_or_else(|x| x.into_inner());
            if let Err(e) = log.write_all(&buf).and_then(|_| log.sync_data()) {
                log::error!("recording fetched ranges in {}: {e}", p.log_path.display());
            }
        }
        let complete = p.lock().present.total() >= p.size;
        if complete && !p.completing.swap(true, Ordering::SeqCst) {
            match p.source.complete(&p.file) {
                Ok(()) => log::info!("{}: complete and verified", p.source.name()),
                Err(why) => log::error!("{}: completing: {why}", p.source.name()),
            }
        }
    }

    /// Checks one fetched piece.
    fn check_piece(&self, piece: Piece, bytes: &[u8]) -> Result<()> {
        match piece.check {
            Check::None => Ok(()),
            Check::Header(i) => {
                let e = self.entry(i as usize)?;
                self.check_header(&e, piece.start, bytes, true).map(|_| ())
            }
            Check::Object(i) => {
                let e = self.entry(i as usize)?;
                self.check_object_bytes(&e, piece.start, bytes)
            }
            Check::Chunk(i, k) => {
                let e = self.entry(i as usize)?;
                let ch = self.chunk_table(&e)?.ok_or_else(|| Error::Corrupt {
                    file: self.file.clone(),
                    offset: piece.start,
                    what: format!("{} lost its chunk table", show(&e.path)),
                })?;
                let k = k as usize;
                let cs = u64::from(ch.table.chunk_size);
                let len = (e.size - k as u64 * cs).min(cs) as usize;
                let stored = (ch.offsets[k + 1] - ch.offsets[k]) as usize;
                let body = bytes.get(..stored).ok_or_else(|| Error::Truncated {
                    file: self.file.clone(),
                    offset: piece.start,
                    what: format!("chunk {k} of {}", show(&e.path)),
                })?;
                let out = super::ahead::decode_chunk(body, e.comp, len).map_err(|why| {
                    Error::Corrupt {
                        file: self.file.clone(),
                        offset: piece.start,
                        what: format!("chunk {k} of {}: {why}", show(&e.path)),
                    }
                })?;
                let computed = bfc_crc(&out);
                if computed != ch.table.crcs[k] {
                    return Err(Error::BadChecksum {
                        file: self.file.clone(),
                        what: format!("fetched chunk {k} of {}", show(&e.path)),
                        offset: piece.start,
                        stored: ch.table.crcs[k],
                        computed,
                    });
                }
                Ok(())
            }
        }
    }

    /// Checks the object header at the start of `bytes` against entry `e` (`exact`: `bytes`
    /// is the header and name and nothing else, and the name is the entry's path). Returns
    /// the header and where the payload starts in `bytes`.
    fn check_header(
        &self,
        e: &Entry,
        at: u64,
        bytes: &[u8],
        exact: bool,
    ) -> Result<(ObjHeader, usize)> {
        let mut c = Cursor::new(&self.file, bytes, at);
        let h = ObjHeader::decode(&mut c)?;
        let bad = |what: String| Error::Corrupt {
            file: self.file.clone(),
            offset: at,
            what: format!("fetched object of {}: {what}", show(&e.path)),
        };
        if h.comp != e.comp || h.enc != e.enc || h.orig_size != e.size {
            return Err(bad(
                "header disagrees with the index (compression, encryption or size)".into(),
            ));
        }
        if e.kind == Kind::File && h.crc != e.crc {
            return Err(bad("header checksum field disagrees with the index".into()));
        }
        let name = c.bytes(h.name_len as usize, "object name")?;
        let start = payload_offset(h.name_len as usize);
        if exact && (name != e.path.as_slice() || start != bytes.len()) {
            return Err(bad("name is not the entry's path".into()));
        }
        Ok((h, start))
    }

    /// Checks a whole fetched object: header, then the content's checksum (encrypted content:
    /// its authentication tag when the key is known; the reader checks it before use anyway).
    fn check_object_bytes(&self, e: &Entry, at: u64, bytes: &[u8]) -> Result<()> {
        let (h, start) = self.check_header(e, at, bytes, false)?;
        let end = (start as u64)
            .checked_add(h.stored_size)
            .filter(|&x| x <= bytes.len() as u64);
        let Some(end) = end else {
            return Err(Error::Corrupt {
                file: self.file.clone(),
                offset: at,
                what: format!("fetched object of {}: payload overruns it", show(&e.path)),
            });
        };
        let data = &bytes[start..end as usize];
        if !matches!(e.kind, Kind::File | Kind::Symlink) || e.enc != ENC_NONE {
            return Ok(());
        }
        let mut crc = 0u32;
        let mut n = 0u64;
        if e.comp == COMP_ZSTD {
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|err| Error::io(&self.file, err))?;
            let mut buf = vec![0u8; 128 << 10];
            loop {
                let k = d.read(&mut buf).map_err(|err| Error::Corrupt {
                    file: self.file.clone(),
                    offset: at,
                    what: format!("fetched content of {}: {err}", show(&e.path)),
                })?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                if n > e.size {
                    break;
                }
                crc = codec::bfc_crc_append(crc, &buf[..k]);
            }
        } else {
            let body = data.get(..e.size as usize).unwrap_or(data);
            n = body.len() as u64;
            crc = bfc_crc(body);
        }
        if n != e.size || crc != e.crc {
            return Err(Error::BadChecksum {
                file: self.file.clone(),
                what: format!("fetched content of {} ({n} bytes)", show(&e.path)),
                offset: at,
                stored: e.crc,
                computed: crc,
            });
        }
        Ok(())
    }
}

/// The background fetcher of one partial container: the next missing range, at most `rate`
/// bytes/s, until the file is complete or the container is dropped.
fn background(weak: &Weak<Container>, rate: u64) {
    let mut pause = Duration::from_secs(1);
    loop {
        let Some(c) = weak.upgrade() else { return };
        let Some(p) = &c.partial else { return };
        p.refresh();
        let gap = p.lock().present.gap(0, p.size);
        let Some((s, e)) = gap else {
            if !p.completing.swap(true, Ordering::SeqCst) {
                match p.source.complete(&p.file) {
                    Ok(()) => log::info!("{}: complete and verified", p.source.name()),
                    Err(why) => log::error!("{}: completing: {why}", p.source.name()),
                }
            }
            return;
        };
        let step = (rate / 2).clamp(64 << 10, p.opts.max_request);
        let e = e.min(s + step);
        let t = Instant::now();
        let r = c.fill(p, &[(s, e)], true);
        drop(c);
        match r {
            Ok(()) => {
                pause = Duration::from_secs(1);
                let due = Duration::from_secs_f64((e - s) as f64 / rate as f64);
                if let Some(rest) = due.checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            Err(err) => {
                log::warn!("background fetch: {err}; trying again in {pause:?}");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_find_gaps() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25);
        assert_eq!(r.total(), 25);
        assert!(r.contains(10, 25) && !r.contains(10, 26) && r.contains(5, 5));
        assert_eq!(r.gap(0, 100), Some((0, 10)));
        assert_eq!(r.gap(12, 100), Some((25, 30)));
        r.insert(0, 100);
        assert_eq!(r.total(), 100);
        assert_eq!(r.gap(0, 100), None);
    }

    #[test]
    fn records_round_trip_and_torn_ones_are_skipped() {
        let dir = std::env::temp_dir().join(format!("bfc-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("present");
        create_record(&path, &[(0, 4096), (9000, 9100)]).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let mut bad = encode_record(5000, 6000);
        bad[3] ^= 1;
        f.write_all(&bad).unwrap();
        f.write_all(&encode_record(4096, 5000)[..10]).unwrap();
        assert_eq!(present_bytes(&path).unwrap(), 4096 + 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
