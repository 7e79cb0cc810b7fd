//! `flock(2)` guards. A guard is released when it is dropped (the descriptor closes), and the
//! kernel releases it if the process dies, so a `kill -9` never leaves a stale lock behind.
use super::{Error, Result};
use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// A held lock on a file under `locks/`.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Blocks until a shared lock on `path` is held.
    pub fn shared(path: &Path) -> Result<Lock> {
        Self::take(path, FlockOperation::LockShared)
    }

    /// Blocks until an exclusive lock on `path` is held.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        Self::take(path, FlockOperation::LockExclusive)
    }

    fn take(path: &Path, op: FlockOperation) -> Result<Lock> {
        let io_err = |source: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_err(e.into())),
            }
        }
        Ok(Lock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
