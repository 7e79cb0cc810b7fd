//! The only place that memory-maps a file, and the only SIGBUS handler.
//!
//! Containers are opened read-only and the rest of the code sees them as a plain `&[u8]`. bfcfs
//! never changes a published container (new ones are renamed into place), but another process
//! may: `truncate -s 0 image.bfc`, or a copy written over it in place, while a mount serves it.
//! Touching a mapped page that now lies past the end of the file raises SIGBUS, which would end
//! the mount's server (and every process reading through it gets "Transport endpoint is not
//! connected"). So that a shrunk file costs only the reads of what is gone:
//!
//! - Every mapping is registered in a fixed table of slots (address range, a duplicate of the
//!   file descriptor, the length still known to be there). A process-wide SIGBUS handler,
//!   installed on the first mapping, looks the faulting address up in that table. For an address
//!   inside one of our mappings it records how long the file is now (`fstat`), maps anonymous
//!   zero pages over the rest of the mapping (`MAP_FIXED`), and returns: the faulting load is
//!   retried and reads zeros. Any other SIGBUS goes to the handler that was there before (Rust's
//!   stack-overflow handler, or the default action: the process dies as it would have).
//! - Readers never trust bytes from a damaged range: after touching the mapping they call
//!   [`Bytes::intact`] (or [`Bytes::present`], which first touches every page of a range the
//!   kernel is about to copy from), and a range past the recorded length is an error that names
//!   the file and its new length; the FUSE adapter turns it into EIO. The handler runs in the
//!   thread that touched the page, before that load completes, and records the length before it
//!   maps the zero pages, so a check made after the bytes were read sees the damage.
//!
//! The cost on the read path is one atomic load per read, plus one load per page for content
//! handed to the kernel without a copy. What stays unprotected: a truncation that lands between
//! [`Bytes::present`] and the kernel's copy of that reply makes the kernel's copy fail (EFAULT,
//! no signal), and that one request goes unanswered; bytes between the new end of the file and
//! the end of its last page read as zeros without a fault, so they are caught only by the
//! content checksums or once a fault elsewhere recorded the new length; and a file rewritten in
//! place with new bytes of the same length is not noticed here at all (the checksums catch what
//! they cover). Replacing an image file by rename is always safe: the mapping keeps the old
//! inode. See docs/ROBUSTNESS.md ("Changing an image file while it is mounted").
use super::error::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Bytes of a container: a read-only mapping, or an owned buffer (tests, fuzzing, empty files).
pub enum Bytes {
    Mapped(Mapped),
    Owned(Vec<u8>),
}

/// A read-only mapping of a whole file, registered with the SIGBUS handler while it lives.
pub struct Mapped {
    map: memmap2::Mmap,
    /// The handler's record of this mapping; `None` when every slot was taken (the mapping then
    /// has no protection, as before).
    slot: Option<&'static guard::Slot>,
    /// Kept open for the handler's `fstat` (the slot holds its descriptor).
    _file: File,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Before the mapping goes (fields drop after this): no access to it can be in flight, as
        // every borrow of its bytes has ended.
        if let Some(s) = self.slot {
            s.release();
        }
    }
}

impl Bytes {
    /// Maps `file` read-only; falls back to reading it into memory when mapping fails.
    pub fn map(path: &Path, file: &File) -> Result<Bytes> {
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: the mapping is read-only and private to this process. If another process
        // shrinks the file, loads from the pages past its end raise SIGBUS, which the handler
        // of this module turns into zero pages plus a recorded length that readers check
        // (`intact`); if it rewrites bytes in place, reads see the new bytes, which every parser
        // treats as untrusted (bounds-checked, checksummed), so the worst outcome is an error or
        // wrong data, never a read outside the mapping.
        let mapped = unsafe { memmap2::MmapOptions::new().map(file) };
        match (mapped, file.try_clone()) {
            (Ok(map), Ok(dup)) => {
                let slot = guard::register(map.as_ptr() as usize, map.len(), dup.as_raw_fd());
                if slot.is_none() {
                    log::warn!(
                        "{}: mapped without SIGBUS protection (too many open containers)",
                        path.display()
                    );
                }
                Ok(Bytes::Mapped(Mapped {
                    map,
                    slot,
                    _file: dup,
                }))
            }
            _ => {
                let mut buf = Vec::new();
                use std::io::Read;
                let mut f = file;
                f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
                Ok(Bytes::Owned(buf))
            }
        }
    }

    /// Asks the kernel to read `len` bytes at `offset` in one go before they are touched, instead
    /// of one page fault at a time (a cold chunk read is then one I/O). Advisory: errors ignored.
    pub fn will_need(&self, offset: u64, len: usize) {
        if let Bytes::Mapped(m) = self {
            if let Ok(off) = usize::try_from(offset) {
                if off.checked_add(len).is_some_and(|end| end <= m.map.len()) {
                    let _ = m.map.advise_range(memmap2::Advice::WillNeed, off, len);
                }
            }
        }
    }

    /// True when every page of `[offset, offset + len)` is in the page cache (mincore(2)), so
    /// reading it will not wait for the disk; always for owned bytes. False for a range past
    /// the mapping, longer than `RESIDENT_MAX`, or when the call fails.
    pub fn resident(&self, offset: u64, len: usize) -> bool {
        const RESIDENT_MAX: usize = 1 << 20;
        let Bytes::Mapped(m) = self else { return true };
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        if len == 0 || len > RESIDENT_MAX || start.checked_add(len).is_none_or(|e| e > m.map.len())
        {
            return len == 0;
        }
        let page = guard::page_size();
        let first = start / page * page;
        let span = start + len - first;
        let mut vec = [0u8; RESIDENT_MAX / 4096 + 2];
        let pages = span.div_ceil(page);
        if pages > vec.len() {
            return false;
        }
        // SAFETY: `first..first + span` lies inside the mapping (checked above; the mapping
        // starts on a page boundary, so `first` does too), and `vec` has room for one byte per
        // page of it. mincore only reads the page tables and writes `vec`.
        let r = unsafe {
            libc::mincore(
                m.map.as_ptr().add(first) as *mut libc::c_void,
                span,
                vec.as_mut_ptr(),
            )
        };
        r == 0 && vec[..pages].iter().all(|b| b & 1 == 1)
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => &m.map,
            Bytes::Owned(v) => v,
        }
    }

    /// Checks that `[offset, offset + len)` was still in the file when it was read: `Err(n)`
    /// when the file is known to have shrunk to `n` bytes below the end of the range (the
    /// bytes read there were zeros put in by the SIGBUS handler, not the file's). Call it after
    /// reading the range.
    pub fn intact(&self, offset: u64, len: usize) -> std::result::Result<(), u64> {
        let Bytes::Mapped(Mapped { slot: Some(s), .. }) = self else {
            return Ok(());
        };
        let known = s.known_len();
        match offset.checked_add(len as u64) {
            Some(end) if end <= known => Ok(()),
            _ => Err(known),
        }
    }

    /// [`Bytes::intact`] for a range the kernel will copy from without this process touching
    /// it (a zero-copy reply): touches one byte of every page first, so that a page now past the
    /// end of the file faults here, where the handler sees it, instead of failing the kernel's
    /// copy.
    pub fn present(&self, offset: u64, len: usize) -> std::result::Result<(), u64> {
        if let Bytes::Mapped(m) = self {
            let (Ok(start), true) = (usize::try_from(offset), len > 0) else {
                return self.intact(offset, len);
            };
            let end = start.saturating_add(len).min(m.map.len());
            let page = guard::page_size();
            let mut at = start;
            while at < end {
                // SAFETY: `at < end <= map.len()`, so the pointer is inside the mapping; a
                // volatile load so that the touch is not optimised away.
                unsafe { std::ptr::read_volatile(m.map.as_ptr().add(at)) };
                at = (at / page + 1) * page;
            }
        }
        self.intact(offset, len)
    }
}

/// The table of live mappings and the SIGBUS handler that consults it. Everything the handler
/// touches is a static of atomics: it takes no lock and allocates nothing.
mod guard {
    use std::cell::UnsafeCell;
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
    use std::sync::Once;

    /// Mappings protected at once (a mount server maps one file per layer; more than this many
    /// open containers in one process are mapped without protection).
    const SLOTS: usize = 4096;

    const FREE: u8 = 0;
    const CLAIMED: u8 = 1;
    const LIVE: u8 = 2;

    pub struct Slot {
        state: AtomicU8,
        start: AtomicUsize,
        end: AtomicUsize,
        fd: AtomicI32,
        /// Bytes of the file known to be there: the mapped length until a fault says less.
        known: AtomicU64,
    }

    impl Slot {
        const fn new() -> Slot {
            Slot {
                state: AtomicU8::new(FREE),
                start: AtomicUsize::new(0),
                end: AtomicUsize::new(0),
                fd: AtomicI32::new(-1),
                known: AtomicU64::new(0),
            }
        }

        pub fn known_len(&self) -> u64 {
            self.known.load(Ordering::Acquire)
        }

        pub fn release(&self) {
            self.state.store(FREE, Ordering::Release);
        }
    }

    static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    static INSTALL: Once = Once::new();
    static INSTALLED: AtomicU8 = AtomicU8::new(0);

    /// The action SIGBUS had before ours: written once inside `INSTALL` before our handler is
    /// installed, only read afterwards (by the handler).
    struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);
    // SAFETY: written once before any reader can exist (see `install`), then read-only.
    unsafe impl Sync for Previous {}
    static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));

    pub fn page_size() -> usize {
        PAGE.load(Ordering::Relaxed)
    }

    /// Records a mapping of `len` bytes at `start` backed by descriptor `fd`; `None` when the
    /// handler could not be installed or every slot is taken.
    pub fn register(start: usize, len: usize, fd: i32) -> Option<&'static Slot> {
        INSTALL.call_once(install);
        if INSTALLED.load(Ordering::Acquire) == 0 {
            return None;
        }
        let slot = TABLE.iter().find(|s| {
            s.state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })?;
        slot.start.store(start, Ordering::Relaxed);
        slot.end.store(start.saturating_add(len), Ordering::Relaxed);
        slot.fd.store(fd, Ordering::Relaxed);
        slot.known.store(len as u64, Ordering::Relaxed);
        slot.state.store(LIVE, Ordering::Release);
        Some(slot)
    }

    fn install() {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(p) = usize::try_from(page) {
            if p.is_power_of_two() {
                PAGE.store(p, Ordering::Relaxed);
            }
        }
        // SAFETY: `sa` is plain data, initialised by zeroing and sigemptyset; `on_sigbus` has
        // the SA_SIGINFO signature. PREVIOUS is written here, inside the Once, before the
        // handler that reads it can run, and never again. SA_ONSTACK keeps the chained
        // stack-overflow handler on its alternate stack.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            let prev = (*PREVIOUS.0.get()).as_mut_ptr();
            if libc::sigaction(libc::SIGBUS, &sa, prev) == 0 {
                INSTALLED.store(1, Ordering::Release);
            } else {
                log::warn!(
                    "installing the SIGBUS handler failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }

    /// The SIGBUS handler. Async-signal-safe: atomics, `fstat`, `mmap`, `sigaction` only.
    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
        let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        // si_code > 0: raised by the kernel for a fault (not sent by kill or sigqueue).
        if code > 0 && repair(addr) {
            return;
        }
        chain(sig, info, ctx);
    }

    /// When `addr` lies in a live mapping: records the file's new length and maps zero pages
    /// from `addr`'s page to the end of the mapping. False when the address is not ours or the
    /// zero pages could not be mapped.
    fn repair(addr: usize) -> bool {
        let Some(s) = TABLE.iter().find(|s| {
            s.state.load(Ordering::Acquire) == LIVE
                && (s.start.load(Ordering::Relaxed)..s.end.load(Ordering::Relaxed)).contains(&addr)
        }) else {
            return false;
        };
        // SAFETY: errno is thread-local; the handler restores it for the code it interrupted.
        let saved_errno = unsafe { *libc::__errno_location() };
        let (start, end) = (
            s.start.load(Ordering::Relaxed),
            s.end.load(Ordering::Relaxed),
        );
        let page = page_size();
        let from = addr & !(page - 1);
        let mut now = (from - start) as u64;
        // SAFETY: `st` is plain data filled by fstat; fstat is async-signal-safe.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(s.fd.load(Ordering::Relaxed), &mut st) == 0 {
                now = now.min(u64::try_from(st.st_size).unwrap_or(0));
            }
        }
        // Record first: a reader that sees the zero pages must also see the new length.
        s.known.fetch_min(now, Ordering::SeqCst);
        let len = end.div_ceil(page) * page - from;
        // SAFETY: [from, from + len) lies inside our own mapping (page-aligned; the mapping
        // covers whole pages), which stays mapped while the slot is live; replacing its pages
        // with private zero pages changes no other memory. mmap is a plain system call here.
        let p = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved_errno };
        p != libc::MAP_FAILED
    }

    /// Hands a SIGBUS that is not ours to the previous action: its handler, or (default or
    /// ignored) the default action, which the faulting load then meets again and dies of.
    fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: PREVIOUS was written before this handler was installed (see `install`).
        let prev = unsafe { (*PREVIOUS.0.get()).assume_init_ref() };
        let h = prev.sa_sigaction;
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            // SAFETY: restoring the default action; sigaction is async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: a handler installed with SA_SIGINFO has this signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(h) };
            f(sig, info, ctx);
        } else {
            // SAFETY: a handler installed without SA_SIGINFO has this signature.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
            f(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn resident_says_whether_the_pages_are_in_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let page = guard::page_size();
        std::fs::write(&path, vec![3u8; 64 * page]).unwrap();
        let file = File::open(&path).unwrap();
        // Out of the page cache (the file's pages are clean: POSIX_FADV_DONTNEED drops them).
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let b = Bytes::map(&path, &file).unwrap();
        if b.resident(0, 64 * page) {
            // tmpfs keeps its pages whatever the advice.
            eprintln!("skipped: the temp dir's pages cannot be dropped (tmpfs?)");
            return;
        }
        // Pages read (without readahead) are resident; the rest and ranges past the end are not.
        let reader = File::open(&path).unwrap();
        rustix::fs::fadvise(&reader, 0, None, rustix::fs::Advice::Random).unwrap();
        let mut buf = vec![0u8; 4 * page];
        std::os::unix::fs::FileExt::read_exact_at(&reader, &mut buf, 0).unwrap();
        assert!(b.resident(10, 4 * page - 10));
        let (all, tail) = (64 * page, 60 * page as u64);
        assert!(!b.resident(0, all) && !b.resident(tail, 8 * page));
        assert!(b.resident(5, 0) && Bytes::Owned(vec![1]).resident(0, 1));
    }

    #[test]
    fn a_truncated_mapping_reads_zeros_and_reports_the_new_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let page = guard::page_size();
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 8 * page]).unwrap();
        drop(f);
        let file = File::open(&path).unwrap();
        let bytes = Bytes::map(&path, &file).unwrap();
        assert!(matches!(bytes, Bytes::Mapped(_)));
        assert_eq!(bytes.as_slice()[5 * page], 7);
        assert_eq!(bytes.present(0, 8 * page), Ok(()));

        let cut = 3 * page + 100;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        // Without the handler this load kills the test process.
        let b = bytes.as_slice()[5 * page];
        assert_eq!(b, 0);
        assert_eq!(bytes.intact(5 * page as u64, 1), Err(cut as u64));
        assert_eq!(bytes.intact(0, 3 * page), Ok(()));
        assert_eq!(bytes.as_slice()[page], 7);
        // A page past the end that nothing touched yet: `present` faults on it itself.
        assert_eq!(bytes.present(4 * page as u64, 10), Err(cut as u64));
    }

    #[test]
    fn present_finds_a_gone_range_before_anything_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let page = guard::page_size();
        std::fs::write(&path, vec![1u8; 4 * page]).unwrap();
        let file = File::open(&path).unwrap();
        let bytes = Bytes::map(&path, &file).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(bytes.intact(0, page), Ok(()), "nothing has faulted yet");
        assert_eq!(bytes.present(2 * page as u64, page), Err(0));
        assert_eq!(bytes.intact(0, 1), Err(0));
    }
}
