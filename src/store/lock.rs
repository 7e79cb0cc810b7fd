//! `flock(2)` guards. A guard is released when it is dropped (the descriptor closes), and the
//! kernel releases it if the process dies, so a `kill -9` never leaves a stale lock behind.
use super::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
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
        Self::take(path, libc::LOCK_SH)
    }

    /// Blocks until an exclusive lock on `path` is held.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        Self::take(path, libc::LOCK_EX)
    }

    fn take(path: &Path, op: libc::c_int) -> Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        loop {
            // SAFETY: flock only reads the descriptor, which `file` keeps open.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source: err,
                });
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
