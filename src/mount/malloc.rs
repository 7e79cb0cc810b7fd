//! glibc malloc settings for the process that serves a mount.
//!
//! A server allocates and frees chunk-sized buffers all the time: decoded chunks and small
//! files enter and leave the chunk cache. By default glibc raises its mmap threshold to the
//! size of the largest mmapped block freed so far, so after the first one these buffers come
//! from the per-thread heaps (one arena per thread that allocates, up to 8 per core), where what
//! they free mostly stays resident. Measured on the Debian `-c zstd` image with the default
//! 16 MiB chunk cache, RssAnon after a `tar` of a fresh mount: 38-40 MiB as glibc starts,
//! 22-23 MiB with the settings below and the cache reusing the buffer of the chunk that leaves
//! (`bfc::cache::ChunkCache::buffer`), at the same CPU time (BENCHMARKS.md, issue 15).
//!
//! - `M_MMAP_THRESHOLD` fixed at 32 KiB: blocks of that size and more (chunks, decoded files of
//!   32 KiB and more) are mapped on their own and unmapped when freed (fixing it also turns off
//!   the dynamic raise). Smaller blocks are reused well enough from the heaps.
//! - `M_ARENA_MAX` 2: the threads (FUSE readers, workers, decode-ahead) share two heaps, so
//!   blocks freed by one thread are reused by the next instead of idling in its own heap.

/// Applies the settings above. Call it once, before the serving threads start.
pub fn tune_for_serving() {
    #[cfg(target_env = "gnu")]
    for (param, value, name) in [
        (libc::M_MMAP_THRESHOLD, 32 << 10, "M_MMAP_THRESHOLD"),
        (libc::M_ARENA_MAX, 2, "M_ARENA_MAX"),
    ] {
        // SAFETY: mallopt(3) takes two integers and changes only the allocator's parameters;
        // glibc serialises it against allocations in other threads.
        if unsafe { libc::mallopt(param, value) } != 1 {
            ::log::debug!("mallopt({name}, {value}) refused");
        }
    }
}
