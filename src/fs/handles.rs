//! Open files: the kernel's `fh` → the upper file's descriptor (and whether it passes through),
//! plus what the kernel's passthrough rules need to know per inode.
//!
//! Handle 0 means "a lower file opened read-only", served from the layer's bytes through the
//! page cache, on a mount without passthrough; with passthrough such opens get a handle of their
//! own (`cached_open`), so that a RELEASE the kernel sends again after a server restart
//! (docs/restart.md) cannot be counted twice.
//!
//! Passthrough rules (fs/fuse/iomode.c): every passthrough open of an inode must name the same
//! backing file, and an inode cannot be open in cached mode and in passthrough mode at once (the
//! open fails). So one backing id per inode is shared by its passthrough opens, and an inode with
//! a cached open (a lower read-only open, or an upper open that could not pass through) gets no
//! passthrough until those are closed. Backing ids are registered and closed here, through a
//! /dev/fuse descriptor of our own (`set_device`), and closed when the inode's last passthrough
//! handle is released.
//!
//! The kernel keeps its open files, and their backing files, across a server restart. So a
//! supervised server keeps a journal of them (`journal`, docs/restart.md): a server that takes
//! the connection over reads it and answers new opens of an inode that is still open with the
//! same backing id, and knows the handles of the earlier server (reopened on first use).
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use journal::{Entry, Journal};

mod journal;

#[derive(Debug)]
struct Open {
    ino: u64,
    /// None: a handle an earlier server gave out, not used since the takeover.
    file: Option<Arc<File>>,
    /// Passes through to the inode's backing id (else: cached mode).
    passthrough: bool,
    /// A lower file opened read-only: nothing to open for it.
    lower: bool,
}

/// The backing id of an inode and how many open handles pass through to it.
#[derive(Debug)]
struct Backing {
    id: u32,
    users: usize,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<u64, Open>,
    backing: HashMap<u64, Backing>,
    /// Cached-mode opens per inode (handles of `open` that do not pass through, and handle 0s).
    cached: HashMap<u64, usize>,
    /// Open handles per inode (to answer for a file whose last name is gone).
    by_ino: HashMap<u64, Vec<u64>>,
    journal: Option<Journal>,
}

#[derive(Debug)]
pub struct Handles {
    next: AtomicU64,
    table: Mutex<Table>,
    /// /dev/fuse of the session: backing files are registered and closed through it.
    device: OnceLock<OwnedFd>,
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
            device: OnceLock::new(),
        }
    }
}

impl Table {
    /// Records handle `fh` of `ino` (`file` None: not opened here yet); `id`: it passes through
    /// to that backing id (the inode's, or a new one for it).
    fn add(&mut self, ino: u64, fh: u64, file: Option<Arc<File>>, id: Option<u32>) -> Entry {
        self.add_open(ino, fh, file, id, false)
    }

    /// `add`; `lower`: a lower file opened read-only.
    fn add_open(
        &mut self,
        ino: u64,
        fh: u64,
        file: Option<Arc<File>>,
        id: Option<u32>,
        lower: bool,
    ) -> Entry {
        match id {
            Some(id) => {
                self.backing
                    .entry(ino)
                    .or_insert(Backing { id, users: 0 })
                    .users += 1
            }
            None => *self.cached.entry(ino).or_default() += 1,
        }
        if fh != 0 {
            self.by_ino.entry(ino).or_default().push(fh);
            let passthrough = id.is_some();
            self.open.insert(
                fh,
                Open {
                    ino,
                    file,
                    passthrough,
                    lower,
                },
            );
        }
        match id {
            Some(id) => Entry::Passthrough { fh, ino, id },
            None if lower => Entry::Lower { fh, ino },
            None => Entry::Cached { fh, ino },
        }
    }

    /// Drops handle `fh` of `ino`. Returns whether it was known, and the backing id to close
    /// when it was the inode's last passthrough handle.
    fn release(&mut self, ino: u64, fh: u64) -> (bool, Option<u32>) {
        let (ino, passthrough) = match self.open.remove(&fh) {
            Some(o) => {
                if let Some(v) = self.by_ino.get_mut(&o.ino) {
                    v.retain(|h| *h != fh);
                    if v.is_empty() {
                        self.by_ino.remove(&o.ino);
                    }
                }
                (o.ino, o.passthrough)
            }
            None if fh == 0 => (ino, false),
            None => return (false, None),
        };
        if passthrough {
            let Some(b) = self.backing.get_mut(&ino) else {
                return (true, None);
            };
            b.users -= 1;
            if b.users > 0 {
                return (true, None);
            }
            return (true, self.backing.remove(&ino).map(|b| b.id));
        }
        match self.cached.get_mut(&ino) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.cached.remove(&ino);
            }
            None => return (fh != 0, None),
        }
        (true, None)
    }

    fn log(&mut self, e: Entry) {
        if let Some(j) = &mut self.journal {
            j.append(e);
        }
    }

    /// Every open the kernel holds, as journal entries.
    fn live(&self) -> Vec<Entry> {
        let mut out = Vec::with_capacity(self.open.len());
        let mut lower = self.cached.clone();
        for (&fh, o) in &self.open {
            match self.backing.get(&o.ino) {
                Some(b) if o.passthrough => out.push(Entry::Passthrough {
                    fh,
                    ino: o.ino,
                    id: b.id,
                }),
                _ => {
                    out.push(match o.lower {
                        true => Entry::Lower { fh, ino: o.ino },
                        false => Entry::Cached { fh, ino: o.ino },
                    });
                    if let Some(n) = lower.get_mut(&o.ino) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
        for (ino, n) in lower {
            out.extend((0..n).map(|_| Entry::Cached { fh: 0, ino }));
        }
        out
    }

    /// Rewrites the journal when it has grown to several times what it describes.
    fn compact(&mut self) {
        let live = self.open.len() + self.cached.len();
        if self.journal.as_ref().is_some_and(|j| j.wants_rewrite(live)) {
            let entries = self.live();
            if let Some(j) = &mut self.journal {
                j.rewrite(&entries);
            }
        }
    }
}

impl Handles {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's /dev/fuse (a descriptor of our own): without it nothing passes through.
    pub fn set_device(&self, dev: OwnedFd) {
        let _ = self.device.set(dev);
    }

    /// Keeps the journal at `path` from now on. `takeover`: the connection was served before
    /// and the journal describes what the kernel still holds open: load it first.
    pub fn keep_journal(&self, path: &Path, takeover: bool) -> std::io::Result<()> {
        let mut t = self.table();
        if takeover {
            for e in Journal::read(path)? {
                match e {
                    Entry::Passthrough { fh, ino, id } => {
                        if t.backing.get(&ino).is_some_and(|b| b.id != id) {
                            log::warn!("{}: inode {ino} has two backing ids", path.display());
                        }
                        t.add(ino, fh, None, Some(id));
                    }
                    Entry::Cached { fh, ino } => {
                        t.add(ino, fh, None, None);
                    }
                    Entry::Lower { fh, ino } => {
                        t.add_open(ino, fh, None, None, true);
                    }
                    Entry::Released { fh, ino } => {
                        t.release(ino, fh);
                    }
                }
            }
            log::info!(
                "{}: {} handles open, {} inodes passing through",
                path.display(),
                t.open.len(),
                t.backing.len()
            );
        }
        let live = t.live();
        t.journal = Some(Journal::create(path, &live)?);
        Ok(())
    }

    /// A new cached-mode handle for `file` of inode `ino`.
    pub fn insert(&self, ino: u64, file: File) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        let mut t = self.table();
        let e = t.add(ino, fh, Some(Arc::new(file)), None);
        t.log(e);
        t.compact();
        fh
    }

    /// A new passthrough handle for `file` of inode `ino`, and its backing id: the one the
    /// inode's other passthrough opens use (an earlier server's too), else one registered for
    /// `backing_file()`. The file comes back when the inode must not pass through (a cached open
    /// of it is open), or no id could be had. Registering is done without the table held, so a
    /// slow open never stalls other opens; of two racing opens the first to finish wins.
    pub fn insert_passthrough(
        &self,
        ino: u64,
        file: File,
        backing_file: impl FnOnce() -> std::io::Result<File>,
    ) -> Result<(u64, u32), File> {
        let Some(dev) = self.device.get() else {
            return Err(file);
        };
        let known = {
            let t = self.table();
            if t.cached.contains_key(&ino) {
                return Err(file);
            }
            t.backing.get(&ino).map(|b| b.id)
        };
        let made = match known {
            Some(_) => None,
            None => match backing_file().and_then(|f| fuser::BackingId::create_raw(dev, &f)) {
                Ok(id) => Some(id),
                Err(e) => {
                    log::debug!("no passthrough for inode {ino}: {e}");
                    return Err(file);
                }
            },
        };
        let mut t = self.table();
        let r = if t.cached.contains_key(&ino) {
            Err(file)
        } else {
            let id = match (t.backing.get(&ino), made) {
                (Some(b), _) => b.id,
                (None, Some(id)) => id,
                // Its last handle was released meanwhile, so the kernel has no passthrough open
                // of it: a cached open is accepted (this one open does not pass through).
                (None, None) => return Err(file),
            };
            let fh = self.next.fetch_add(1, Ordering::Relaxed);
            let e = t.add(ino, fh, Some(Arc::new(file)), Some(id));
            t.log(e);
            t.compact();
            Ok((fh, id))
        };
        drop(t);
        // Ours lost the race (or the inode turned cached): nobody knows it.
        if let Some(id) = made {
            if r.as_ref().map_or(true, |&(_, used)| used != id) {
                self.close_backing(id);
            }
        }
        r
    }

    /// Closes backing id `id` (the kernel drops the backing file once no open file uses it).
    fn close_backing(&self, id: u32) {
        let Some(dev) = self.device.get() else {
            return;
        };
        // FUSE_DEV_IOC_BACKING_CLOSE = _IOW(229, 2, uint32_t).
        const BACKING_CLOSE: libc::c_ulong = (1 << 30) | (4 << 16) | (229 << 8) | 2;
        // SAFETY: ioctl(2) on our own open /dev/fuse descriptor with a pointer to a u32 that
        // lives across the call, as FUSE_DEV_IOC_BACKING_CLOSE takes.
        let rc = unsafe { libc::ioctl(dev.as_fd().as_raw_fd(), BACKING_CLOSE, &id as *const u32) };
        if rc != 0 {
            log::warn!(
                "closing backing id {id}: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Records `file` as handle `fh` (of `ino`), which an earlier server gave out: the kernel
    /// still uses it after a restart. A handle the journal names keeps its mode; one it does not
    /// (no journal) counts as cached. A handle recorded meanwhile by another thread wins.
    pub fn adopt(&self, ino: u64, fh: u64, file: File) -> Arc<File> {
        let mut t = self.table();
        if let Some(o) = t.open.get_mut(&fh) {
            return o.file.get_or_insert_with(|| Arc::new(file)).clone();
        }
        let file = Arc::new(file);
        let e = t.add(ino, fh, Some(file.clone()), None);
        t.log(e);
        file
    }

    /// A new handle for a lower file of inode `ino` opened read-only (cached mode).
    pub fn cached_open(&self, ino: u64) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        let mut t = self.table();
        let e = t.add_open(ino, fh, None, None, true);
        t.log(e);
        t.compact();
        fh
    }

    /// Whether `fh` is a lower file opened read-only (0, or given out by `cached_open`).
    pub fn is_lower(&self, fh: u64) -> bool {
        fh == 0 || self.table().open.get(&fh).is_some_and(|o| o.lower)
    }

    pub fn get(&self, fh: u64) -> Option<Arc<File>> {
        if fh == 0 {
            return None;
        }
        self.table().open.get(&fh).and_then(|o| o.file.clone())
    }

    /// Some open upper descriptor of inode `ino`.
    pub fn any_of(&self, ino: u64) -> Option<Arc<File>> {
        let t = self.table();
        t.by_ino
            .get(&ino)?
            .iter()
            .find_map(|fh| t.open.get(fh).and_then(|o| o.file.clone()))
    }

    /// Closes handle `fh` of inode `ino`; the inode's backing id with its last passthrough
    /// handle (after the journal says so: a restart must never adopt a closed id).
    pub fn remove(&self, ino: u64, fh: u64) {
        let close = {
            let mut t = self.table();
            let (known, close) = t.release(ino, fh);
            if known {
                t.log(Entry::Released { fh, ino });
                t.compact();
            }
            close
        };
        if let Some(id) = close {
            self.close_backing(id);
        }
    }
}
