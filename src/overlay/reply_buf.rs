//! Reply buffers for the reads that are neither borrowed from a mapping nor one cached chunk:
//! above all a READ that spans two chunks of a compressed file. The kernel's readahead windows
//! grow from the start of a file (32, 64, then 128 KiB), so from the second window on most READs
//! of a large file straddle its 128 KiB chunks. A fresh buffer of that size is mapped on its
//! own and faulted in page by page (the server's mmap threshold is 32 KiB, see
//! `mount/malloc.rs`): 32 page faults per READ on a cold `tar`. These buffers go back to a
//! small pool when the reply is sent and are reused.
use std::sync::Mutex;

/// Buffers kept for reuse (one per thread that replies at once is enough).
const KEPT: usize = 8;
/// Larger buffers are not kept.
const KEPT_BYTES: usize = 1 << 20;

/// Buffers waiting to be reused.
#[derive(Debug)]
pub struct Pool(Mutex<Vec<Vec<u8>>>);

static POOL: Pool = Pool(Mutex::new(Vec::new()));

/// A zero-filled buffer from a pool, returned to it on drop.
#[derive(Debug)]
pub struct ReplyBuf(Vec<u8>, &'static Pool);

impl ReplyBuf {
    /// `len` zero bytes, in a buffer of the process's pool.
    pub fn zeroed(len: usize) -> ReplyBuf {
        POOL.zeroed(len)
    }

    /// Keeps the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

impl Pool {
    fn zeroed(&'static self, len: usize) -> ReplyBuf {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        v.clear();
        v.resize(len, 0);
        ReplyBuf(v, self)
    }
}

impl std::ops::Deref for ReplyBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for ReplyBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for ReplyBuf {
    fn drop(&mut self) {
        if self.0.capacity() <= KEPT_BYTES {
            let mut pool = self.1 .0.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < KEPT {
                pool.push(std::mem::take(&mut self.0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_zeroed_and_its_memory_is_reused() {
        let pool: &'static Pool = Box::leak(Box::new(Pool(Mutex::new(Vec::new()))));
        let mut a = pool.zeroed(100_000);
        a.iter_mut().for_each(|b| *b = 7);
        let ptr = a.as_ptr();
        drop(a);
        let b = pool.zeroed(50_000);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.len() == 50_000 && b.iter().all(|&x| x == 0));
        // At most KEPT buffers are kept, and none over KEPT_BYTES.
        let many: Vec<ReplyBuf> = (0..KEPT + 3).map(|_| pool.zeroed(10)).collect();
        drop(many);
        drop(b);
        assert_eq!(pool.0.lock().unwrap().len(), KEPT);
        let big = ReplyBuf(vec![0; KEPT_BYTES + 1], pool);
        let big_ptr = big.as_ptr();
        pool.0.lock().unwrap().clear();
        drop(big);
        assert!(pool.0.lock().unwrap().is_empty(), "{big_ptr:?} kept");
    }
}
