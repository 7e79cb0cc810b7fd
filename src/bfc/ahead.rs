//! Decoding ahead of sequential readers: when a reader takes the chunks of a compressed file in
//! order, the next few are decoded on worker threads (two, one per core on the machines bfcfs
//! targets; several files read at once keep both busy) and land in the chunk cache before the
//! reader asks. Each job asks the kernel for the chunk's whole stored range at once. Jobs are
//! best effort: a full queue drops them, and a failed decode caches nothing (the reader then
//! decodes the chunk itself and reports the damage).
use super::cache::{ChunkCache, ChunkKey};
use super::codec::{self, ContentKey, NONCE_SIZE};
use super::layout::COMP_ZSTD;
use super::map::Bytes;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

/// Chunks decoded ahead of a sequential reader.
pub const AHEAD: u64 = 4;
/// Files decoded ahead of a reader that takes the files in index order (see
/// `Container::read_ahead_files`): at most this many, holding at most `FILES_BYTES` decoded
/// bytes of first chunks, among the next `FILES_GAP` entries; and a file counts as read in
/// order when the file read before it lies at most `FILES_GAP` entries before it.
pub const FILES: usize = 8;
pub const FILES_BYTES: u64 = 1 << 20;
pub const FILES_GAP: usize = 16;
const WORKERS: usize = 2;
const QUEUE: usize = 64;

/// One chunk to decode into `cache` under `key` (claimed there).
pub struct Job {
    pub bytes: Arc<Bytes>,
    pub cache: Arc<ChunkCache>,
    pub key: ChunkKey,
    /// Absolute offset and length of the chunk's stored bytes.
    pub at: u64,
    pub stored_len: usize,
    /// Decoded length and checksum.
    pub len: usize,
    pub crc: u32,
    pub comp: u8,
    /// Key, nonce and offset in the ciphertext of encrypted content.
    pub cipher: Option<(ContentKey, [u8; NONCE_SIZE], u64)>,
}

impl Job {
    fn run(self) {
        if !self.cache.start(self.key) {
            return;
        }
        let out = self.decode();
        self.cache.complete(self.key, out);
    }

    fn decode(&self) -> Option<Arc<[u8]>> {
        let start = usize::try_from(self.at).ok()?;
        self.bytes.will_need(self.at, self.stored_len);
        let stored = self
            .bytes
            .as_slice()
            .get(start..start.checked_add(self.stored_len)?)?;
        let mut plain_copy;
        let stored: &[u8] = match &self.cipher {
            Some((key, nonce, off)) => {
                plain_copy = stored.to_vec();
                codec::decrypt_range(key, nonce, *off, &mut plain_copy);
                &plain_copy
            }
            None => stored,
        };
        let out = decode_into(stored, self.comp, self.cache.buffer(self.len)).ok()?;
        (codec::bfc_crc(&out) == self.crc).then_some(out)
    }
}

/// Decodes one chunk's stored bytes (a zstd frame, or raw bytes) to exactly `len` bytes in a
/// new buffer.
pub fn decode_chunk(stored: &[u8], comp: u8, len: usize) -> Result<Arc<[u8]>, String> {
    decode_into(stored, comp, std::iter::repeat_n(0u8, len).collect())
}

/// Decodes one chunk's stored bytes to exactly `out.len()` bytes, straight into `out` (the
/// buffer the cache keeps: from `ChunkCache::buffer`, which reuses the buffer of a chunk that
/// left), with this thread's zstd context (made once per thread, not once per chunk: fewer
/// large allocations that the allocator would keep around per thread). Every byte of `out` is
/// written or the decode fails.
pub fn decode_into(stored: &[u8], comp: u8, mut out: Arc<[u8]>) -> Result<Arc<[u8]>, String> {
    thread_local! {
        static ZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let len = out.len();
    let buf = Arc::get_mut(&mut out).ok_or("chunk buffer is shared")?;
    if comp == COMP_ZSTD {
        let n = ZSTD.with(|z| {
            let mut z = z.borrow_mut();
            if z.is_none() {
                *z = zstd::bulk::Decompressor::new().ok();
            }
            match z.as_mut() {
                Some(d) => d.decompress_to_buffer(stored, buf),
                None => zstd::bulk::decompress_to_buffer(stored, buf),
            }
        });
        let n = n.map_err(|e| e.to_string())?;
        if n != len {
            return Err(format!("decodes to {n} bytes, expected {len}"));
        }
    } else if stored.len() != len {
        return Err("has the wrong size".into());
    } else {
        buf.copy_from_slice(stored);
    }
    Ok(out)
}

/// Queues `job` for a worker. When the queue is full (or no worker could be started) the job
/// is dropped and its claim released.
pub fn submit(job: Job) {
    static POOL: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for n in 0..WORKERS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("bfc-ahead-{n}"))
                .spawn(move || work(&rx));
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(tx)
    });
    let dropped = match pool {
        Some(tx) => match tx.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
        },
        None => job,
    };
    dropped.cache.complete(dropped.key, None);
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job.run();
    }
}
