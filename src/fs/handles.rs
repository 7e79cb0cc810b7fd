//! Open files: the kernel's `fh` → the upper file's descriptor (and its FUSE passthrough
//! backing id), plus what the kernel's passthrough rules need to know per inode.
//!
//! Handle 0 is never given out: it means "a lower file opened read-only", served from the
//! layer's bytes through the page cache.
//!
//! Passthrough rules (fs/fuse/iomode.c): every passthrough open of an inode must name the same
//! backing file, and an inode cannot be open in cached mode and in passthrough mode at once (the
//! open fails). So one backing id per inode is shared by its passthrough opens, and an inode with
//! a cached open (a lower read-only open, or an upper open that could not pass through) gets no
//! passthrough until those are closed.
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fuser::BackingId;

#[derive(Debug)]
struct Open {
    ino: u64,
    file: Arc<File>,
    /// Held while the handle is open: the kernel drops the backing file when the last goes.
    backing: Option<Arc<BackingId>>,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<u64, Open>,
    backing: HashMap<u64, Weak<BackingId>>,
    /// Cached-mode opens per inode.
    cached: HashMap<u64, usize>,
    /// Open handles per inode (to answer for a file whose last name is gone).
    by_ino: HashMap<u64, Vec<u64>>,
}

#[derive(Debug)]
pub struct Handles {
    next: AtomicU64,
    table: Mutex<Table>,
}

/// The first handle of this server: the time in microseconds, shifted left by 12 bits. A
/// server that takes a connection over (docs/restart.md) must not give out a handle the kernel
/// still holds from an earlier one; a later start leaves 4096 handles per microsecond between
/// them (and 0, "a lower file", is never reached).
fn first_handle() -> u64 {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (us << 12).max(1)
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            next: AtomicU64::new(first_handle()),
            table: Mutex::default(),
        }
    }
}

impl Handles {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new handle for `file` of inode `ino`, passing through to `backing` when given.
    pub fn insert(&self, ino: u64, file: File, backing: Option<Arc<BackingId>>) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        let mut t = self.table();
        if backing.is_none() {
            *t.cached.entry(ino).or_default() += 1;
        }
        t.by_ino.entry(ino).or_default().push(fh);
        t.open.insert(
            fh,
            Open {
                ino,
                file: Arc::new(file),
                backing,
            },
        );
        fh
    }

    /// Records `file` as handle `fh` (of `ino`), which an earlier server gave out: the kernel
    /// still uses it after a restart. A handle recorded meanwhile by another thread wins.
    pub fn adopt(&self, ino: u64, fh: u64, file: File) -> Arc<File> {
        let mut t = self.table();
        if let Some(o) = t.open.get(&fh) {
            return o.file.clone();
        }
        let file = Arc::new(file);
        *t.cached.entry(ino).or_default() += 1;
        t.by_ino.entry(ino).or_default().push(fh);
        t.open.insert(
            fh,
            Open {
                ino,
                file: file.clone(),
                backing: None,
            },
        );
        file
    }

    /// A lower file opened read-only (handle 0) in cached mode.
    pub fn cached_open(&self, ino: u64) {
        *self.table().cached.entry(ino).or_default() += 1;
    }

    pub fn get(&self, fh: u64) -> Option<Arc<File>> {
        if fh == 0 {
            return None;
        }
        self.table().open.get(&fh).map(|o| o.file.clone())
    }

    /// Some open upper descriptor of inode `ino`.
    pub fn any_of(&self, ino: u64) -> Option<Arc<File>> {
        let t = self.table();
        let fh = t.by_ino.get(&ino)?.first()?;
        t.open.get(fh).map(|o| o.file.clone())
    }

    /// Closes handle `fh` of inode `ino`.
    pub fn remove(&self, ino: u64, fh: u64) {
        let mut t = self.table();
        if let Some(v) = t.by_ino.get_mut(&ino) {
            v.retain(|h| *h != fh);
            if v.is_empty() {
                t.by_ino.remove(&ino);
            }
        }
        let cached = match t.open.remove(&fh) {
            Some(o) => o.backing.is_none().then_some(o.ino),
            None if fh == 0 => Some(ino),
            None => None,
        };
        if let Some(ino) = cached {
            if let Some(n) = t.cached.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    t.cached.remove(&ino);
                }
            }
        }
    }

    /// The backing id for a passthrough open of `ino`: the one its other opens use, or a new one
    /// from `make`. None when the inode has cached opens (or `make` fails: plain handle then).
    /// `make` opens a file and registers it with the kernel: the table is not held meanwhile, so
    /// a slow open never stalls other opens; of two racing makers the first to finish wins.
    pub fn backing(
        &self,
        ino: u64,
        make: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        {
            let t = self.table();
            if t.cached.contains_key(&ino) {
                return None;
            }
            if let Some(b) = t.backing.get(&ino).and_then(Weak::upgrade) {
                return Some(b);
            }
        }
        let made = match make() {
            Ok(b) => Arc::new(b),
            Err(e) => {
                log::debug!("no passthrough for inode {ino}: {e}");
                return None;
            }
        };
        let mut t = self.table();
        if t.cached.contains_key(&ino) {
            return None;
        }
        if let Some(b) = t.backing.get(&ino).and_then(Weak::upgrade) {
            return Some(b);
        }
        t.backing.insert(ino, Arc::downgrade(&made));
        Some(made)
    }
}
