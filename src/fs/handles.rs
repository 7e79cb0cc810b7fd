//! Open file handles of upper files: the kernel's `fh` → the upper file's descriptor. Handle 0 is
//! never given out: it means "a lower file opened read-only", served from the layer's bytes.
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Handles {
    next: AtomicU64,
    open: RwLock<HashMap<u64, Arc<File>>>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            next: AtomicU64::new(1),
            open: RwLock::default(),
        }
    }
}

impl Handles {
    pub fn insert(&self, f: File) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(f));
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<File>> {
        if fh == 0 {
            return None;
        }
        self.open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
    }

    pub fn remove(&self, fh: u64) {
        self.open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
    }
}
