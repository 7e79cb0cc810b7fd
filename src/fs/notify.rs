//! Telling the kernel about changes it did not make itself. A request changes what the kernel
//! knows about its own inodes and the kernel updates those; but a copy-up done on the way (the
//! parents of a file being written, the other names of a hardlinked file, a directory's whole
//! subtree before a rename) changes the attributes of inodes the request did not name — a merged
//! directory's link count, a ctime. With long TTLs those would stay stale, so each such node's
//! cached attributes are dropped (FUSE_NOTIFY_INVAL_INODE with a negative offset: attributes
//! only, the page cache stays). On any mount, a large directory listed without attributes has
//! its cached listing dropped (see `fs::plus`).
//!
//! Notifications go out from a thread of their own: one sent while the kernel waits for the reply
//! to a request that holds the same inode's lock would deadlock the two.
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use fuser::{INodeNo, Notifier};

/// What the kernel is told to drop.
#[derive(Debug, Clone, Copy)]
enum Inval {
    /// An inode's cached attributes.
    Attrs(u64),
    /// A directory's cached listing (its page cache) and attributes.
    Listing(u64),
}

/// Queues invalidations; a thread started with the session (`Slot::start`, in the serving
/// process: threads do not survive the fork into the background) sends them.
pub struct Invalidator {
    tx: Mutex<Sender<Inval>>,
    rx: Arc<Mutex<Option<Receiver<Inval>>>>,
}

/// The sending end's start: given to the mount code, which starts it with the session's notifier.
pub struct Slot(Arc<Mutex<Option<Receiver<Inval>>>>);

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invalidator")
    }
}

impl Slot {
    /// Starts sending, through `n`, what was queued and what will be.
    pub fn start(self, n: Notifier) -> std::io::Result<()> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx {
            std::thread::Builder::new()
                .name("bfcfs-notify".into())
                .spawn(move || send_all(rx, n))?;
        }
        Ok(())
    }
}

impl Invalidator {
    pub fn new() -> Invalidator {
        let (tx, rx) = mpsc::channel();
        Invalidator {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }

    pub fn slot(&self) -> Slot {
        Slot(self.rx.clone())
    }

    /// Drops the kernel's cached attributes of inode `ino` (soon, from the sender thread).
    pub fn attrs_changed(&self, ino: u64) {
        self.send(Inval::Attrs(ino));
    }

    /// Drops the kernel's cached listing of directory `ino`, so that the next walk of it asks
    /// again (see `fs::plus`).
    pub fn drop_listing(&self, ino: u64) {
        self.send(Inval::Listing(ino));
    }

    fn send(&self, d: Inval) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tx.send(d);
    }
}

impl Default for Invalidator {
    fn default() -> Self {
        Invalidator::new()
    }
}

fn send_all(rx: Receiver<Inval>, n: Notifier) {
    for d in rx {
        // A negative offset: attributes only; 0 (length 0: to the end): the page cache too.
        let (ino, offset) = match d {
            Inval::Attrs(ino) => (ino, -1),
            Inval::Listing(ino) => (ino, 0),
        };
        // ENOENT: the kernel does not hold the inode (any more); nothing to drop.
        if let Err(e) = n.inval_inode(INodeNo(ino), offset, 0) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                log::debug!("invalidating inode {ino}: {e}");
            }
        }
    }
}
