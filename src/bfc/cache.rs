//! Decoded chunks of compressed or encrypted content, kept in an LRU bounded in bytes so a hot
//! working set is decoded once and memory stays within `cache_size`. A chunk being decoded ahead
//! of a sequential reader (see `ahead.rs`) is marked in flight: a reader that needs it waits for
//! it instead of decoding it a second time, once a worker has started on it; one still queued
//! the reader decodes itself (the worker then skips it), so a reader never waits behind the
//! queue.
use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// (entry index, chunk number)
pub type ChunkKey = (u32, u32);

pub struct ChunkCache {
    inner: Mutex<Inner>,
    ready: Condvar,
    cap: usize,
}

struct Inner {
    lru: LruCache<ChunkKey, Arc<[u8]>>,
    bytes: usize,
    /// Chunks claimed for decoding ahead: true once a worker started on it.
    inflight: HashMap<ChunkKey, bool>,
}

impl ChunkCache {
    pub fn new(cap_bytes: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                inflight: HashMap::new(),
            }),
            ready: Condvar::new(),
            cap: cap_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: ChunkKey) -> Option<Arc<[u8]>> {
        self.lock().lru.get(&key).cloned()
    }

    /// The chunk if cached; while a worker decodes it, waits for that first. `None`: the
    /// caller decodes it, including a chunk still queued for a worker (its claim passes to the
    /// caller, and the worker skips it: see `start`).
    pub fn get_or_wait(&self, key: ChunkKey) -> Option<Arc<[u8]>> {
        let mut g = self.lock();
        loop {
            if let Some(v) = g.lru.get(&key) {
                return Some(v.clone());
            }
            match g.inflight.get(&key) {
                None => return None,
                Some(false) => {
                    g.inflight.remove(&key);
                    return None;
                }
                Some(true) => {}
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A worker about to decode claimed chunk `key`: false when a reader took it over in the
    /// meantime (the worker then drops the job without `complete`).
    pub fn start(&self, key: ChunkKey) -> bool {
        match self.lock().inflight.get_mut(&key) {
            Some(started @ false) => {
                *started = true;
                true
            }
            _ => false,
        }
    }

    /// Claims `key` for decoding ahead: false when it is cached or already being decoded. A
    /// claim must end with `complete`.
    pub fn claim(&self, key: ChunkKey) -> bool {
        let mut g = self.lock();
        if g.lru.contains(&key) || g.inflight.contains_key(&key) {
            return false;
        }
        g.inflight.insert(key, false);
        true
    }

    /// Ends a claim: caches the decoded chunk (nothing when decoding failed: the reader then
    /// decodes it itself and reports the error) and wakes the readers waiting for it.
    pub fn complete(&self, key: ChunkKey, data: Option<Arc<[u8]>>) {
        {
            let mut g = self.lock();
            g.inflight.remove(&key);
            if let Some(d) = data {
                Self::put(&mut g, self.cap, key, d);
            }
        }
        self.ready.notify_all();
    }

    /// A buffer for a chunk of `len` bytes about to be decoded. Room is made first (the least
    /// recently used chunks leave), and the buffer of a chunk that leaves is reused when it has
    /// the same length and no reader holds it: a cache at its cap decodes without allocating,
    /// so the allocator is not left with freed chunk-sized blocks (see `mount/malloc.rs`).
    /// The buffer's old bytes are overwritten by the decoder, which checks the decoded length.
    pub fn buffer(&self, len: usize) -> Arc<[u8]> {
        let mut reuse = None;
        {
            let mut g = self.lock();
            while g.bytes + len > self.cap {
                let Some((_, v)) = g.lru.pop_lru() else { break };
                g.bytes -= v.len();
                if reuse.is_none() && v.len() == len && Arc::strong_count(&v) == 1 {
                    reuse = Some(v);
                }
            }
        }
        reuse.unwrap_or_else(|| std::iter::repeat_n(0u8, len).collect())
    }

    pub fn insert(&self, key: ChunkKey, data: Arc<[u8]>) {
        Self::put(&mut self.lock(), self.cap, key, data);
    }

    fn put(g: &mut Inner, cap: usize, key: ChunkKey, data: Arc<[u8]>) {
        if data.len() > cap {
            return;
        }
        g.bytes += data.len();
        if let Some(old) = g.lru.put(key, data) {
            g.bytes -= old.len();
        }
        while g.bytes > cap {
            match g.lru.pop_lru() {
                Some((_, v)) => g.bytes -= v.len(),
                None => break,
            }
        }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_cap_and_hands_over_claimed_chunks() {
        let c = Arc::new(ChunkCache::new(300));
        for k in 0..10 {
            c.insert((0, k), Arc::from(vec![k as u8; 100]));
            assert!(c.bytes() <= 300);
        }
        assert!(c.get((0, 0)).is_none() && c.get((0, 9)).is_some());
        // A claimed chunk: a reader waits for it, a second claim is refused.
        assert!(c.claim((1, 0)));
        assert!(!c.claim((1, 0)));
        assert!(!c.claim((0, 9)));
        assert!(c.start((1, 0)));
        let reader = {
            let c = c.clone();
            std::thread::spawn(move || c.get_or_wait((1, 0)))
        };
        c.complete((1, 0), Some(Arc::from(vec![7u8; 50])));
        assert_eq!(reader.join().unwrap().as_deref(), Some(&[7u8; 50][..]));
        // A claimed chunk no worker started yet is the reader's to decode; the worker skips it.
        assert!(c.claim((2, 0)));
        assert!(c.get_or_wait((2, 0)).is_none());
        assert!(!c.start((2, 0)));
        assert!(c.claim((2, 0)) && c.start((2, 0)) && !c.start((2, 0)));
        c.complete((2, 0), Some(Arc::from(vec![1u8; 10])));
        // A failed claim leaves nothing and releases waiters.
        assert!(c.claim((1, 1)));
        c.complete((1, 1), None);
        assert!(c.get_or_wait((1, 1)).is_none());
        assert!(c.bytes() <= 300);
    }

    #[test]
    fn a_full_cache_hands_out_the_buffer_of_the_chunk_that_leaves() {
        let c = ChunkCache::new(300);
        for k in 0..3 {
            c.insert((0, k), Arc::from(vec![k as u8; 100]));
        }
        let oldest = c.get((0, 0)).unwrap();
        let oldest_ptr = Arc::as_ptr(&oldest) as *const u8;
        drop(oldest);
        // (0, 0) is the least recently used again once (0, 1) and (0, 2) are read.
        c.get((0, 1));
        c.get((0, 2));
        let b = c.buffer(100);
        assert_eq!(Arc::as_ptr(&b) as *const u8, oldest_ptr);
        assert!(c.get((0, 0)).is_none() && c.bytes() == 200);
        // A chunk a reader still holds is not reused, and a fresh buffer is zeroed.
        let held = c.get((0, 1)).unwrap();
        let fresh = c.buffer(100);
        assert_ne!(
            Arc::as_ptr(&fresh) as *const u8,
            Arc::as_ptr(&held) as *const u8
        );
        assert!(fresh.iter().all(|&b| b == 0) && c.bytes() <= 200);
    }
}
