//! Decoded chunks of compressed or encrypted content, kept in an LRU bounded in bytes so a hot
//! working set is decoded once and memory stays within `cache_size`.
use lru::LruCache;
use std::sync::{Arc, Mutex};

/// (entry index, chunk number)
pub type ChunkKey = (u32, u32);

pub struct ChunkCache {
    inner: Mutex<Inner>,
    cap: usize,
}

struct Inner {
    lru: LruCache<ChunkKey, Arc<[u8]>>,
    bytes: usize,
}

impl ChunkCache {
    pub fn new(cap_bytes: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            cap: cap_bytes,
        }
    }

    pub fn get(&self, key: ChunkKey) -> Option<Arc<[u8]>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.lru.get(&key).cloned()
    }

    pub fn insert(&self, key: ChunkKey, data: Arc<[u8]>) {
        if data.len() > self.cap {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.bytes += data.len();
        if let Some(old) = g.lru.put(key, data) {
            g.bytes -= old.len();
        }
        while g.bytes > self.cap {
            match g.lru.pop_lru() {
                Some((_, v)) => g.bytes -= v.len(),
                None => break,
            }
        }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}
