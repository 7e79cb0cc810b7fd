//! Step 2 of the pipeline: the local, content-addressed store.
//!
//! ```text
//! ROOT/
//!   blobs/sha256/<hex>        manifests, configs, and layer blobs while they are converted
//!   layers/<diff_id hex>.bfc  one BFC file per layer, shared between images
//!   layers/<diff_id hex>.tar-split  what rebuilds the layer's tar byte for byte (convert/split.rs)
//!   blob-info.json            layer blobs known elsewhere: diff_id, descriptor, repositories
//!   refs.json                 name:tag → manifest digest (store/refs.rs)
//!   containers/<name>/        per-container state (another module); its state file names an image
//!   locks/                    flock files (store/lock.rs)
//!   tmp/                      ingest; anything here is garbage once no pull runs
//! ```
//! Every file is written as a temp file, fsynced, renamed into place, and the directory fsynced:
//! a killed pull leaves only temp files, which no command mistakes for complete and which `prune`
//! removes. Temp names carry the pid of their writer (`atomic_file::temp_prefix`): whoever takes
//! the store lock removes the temp files of processes that are gone. Pulls hold `locks/store.lock` shared and each layer's lock exclusively while they
//! fetch and convert it; `rm` and `prune` hold `locks/store.lock` exclusively.
pub mod blob;
pub mod blob_info;
pub mod gc;
pub mod lock;
pub mod refs;

pub use blob::BlobWriter;
pub use lock::Lock;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob digest mismatch: expected {expected}, got {found} ({size} bytes); the download was discarded")]
    DigestMismatch {
        expected: String,
        found: String,
        size: u64,
    },
    #[error("blob {digest}: expected {expected} bytes, got {found}; the download was discarded")]
    SizeMismatch {
        digest: String,
        expected: u64,
        found: u64,
    },
    #[error("{}: {why}", .path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("no store root: pass --root DIR or set BFCFS_ROOT (HOME and XDG_DATA_HOME are unset)")]
    NoRoot,
    #[error("{what:?} is not a sha256 digest")]
    BadDigest { what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The store at one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The 64 lowercase hex digits of a `sha256:<hex>` digest, checked (safe as a file name).
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex)
    } else {
        Err(Error::BadDigest {
            what: digest.to_string(),
        })
    }
}

impl Store {
    /// Where the store lives: `--root`, else `$BFCFS_ROOT`, else `/var/lib/bfcfs` for root and
    /// `$XDG_DATA_HOME/bfcfs` (default `~/.local/share/bfcfs`) for other users.
    pub fn default_root(cli: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = cli {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("BFCFS_ROOT").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        if rustix::process::geteuid().is_root() {
            return Ok(PathBuf::from("/var/lib/bfcfs"));
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p).join("bfcfs"));
        }
        match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(h) => Ok(PathBuf::from(h).join(".local/share/bfcfs")),
            None => Err(Error::NoRoot),
        }
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["blobs/sha256", "layers", "locks", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Path of blob `digest` (`sha256:<hex>` or `<hex>`).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(sha256_hex(digest)?))
    }

    /// Path of the BFC file of layer `diff_id`.
    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self
            .layers_dir()
            .join(format!("{}.bfc", sha256_hex(diff_id)?)))
    }

    /// Path of the tar-split side file of layer `diff_id` (kept and collected with its layer).
    pub fn layer_split_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self
            .layers_dir()
            .join(format!("{}.tar-split", sha256_hex(diff_id)?)))
    }

    /// Reads a stored blob, at most `cap` bytes, and checks its digest.
    pub fn read_blob(&self, digest: &str, cap: u64) -> Result<Vec<u8>> {
        use io::Read as _;
        let path = self.blob_path(digest)?;
        let f = fs::File::open(&path).map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        f.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > cap {
            return Err(Error::Corrupt {
                path,
                why: format!("larger than {cap} bytes"),
            });
        }
        let found = crate::digest::sha256_digest(&bytes);
        if found != format!("sha256:{}", sha256_hex(digest)?) {
            return Err(Error::Corrupt {
                path,
                why: format!("content has digest {found}"),
            });
        }
        Ok(bytes)
    }

    /// Stores `bytes` as blob `digest` (checked), unless it is already there.
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(path);
        }
        let mut w = BlobWriter::new(self)?;
        w.write(bytes)?;
        w.commit(digest, Some(bytes.len() as u64))
    }

    /// Shared lock held by every pull (blocks `rm`/`prune` while a pull runs). Taking it removes
    /// the temp files of processes that are gone ([`Store::sweep_temp_files`]).
    pub fn lock_shared(&self) -> Result<Lock> {
        let lock = Lock::shared(&self.root.join("locks/store.lock"))?;
        self.sweep_temp_files(&lock, false);
        Ok(lock)
    }

    /// Exclusive lock held by `rm` and `prune`. Taking it removes the temp files of processes that
    /// are gone ([`Store::sweep_temp_files`]).
    pub fn lock_exclusive(&self) -> Result<Lock> {
        let lock = Lock::exclusive(&self.root.join("locks/store.lock"))?;
        self.sweep_temp_files(&lock, false);
        Ok(lock)
    }

    /// Exclusive lock on one layer while it is fetched and converted.
    pub fn lock_layer(&self, diff_id: &str) -> Result<Lock> {
        Lock::exclusive(
            &self
                .root
                .join(format!("locks/layer-{}.lock", sha256_hex(diff_id)?)),
        )
    }
}

/// Writes `value` as pretty JSON to the store file `path`: temp file, fsync, rename, fsync the
/// directory.
pub(crate) fn save_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut tmp = crate::atomic_file::AtomicFile::beside(path).map_err(io_err(path))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    io::Write::write_all(&mut tmp, &bytes).map_err(io_err(tmp.path()))?;
    tmp.commit(path).map_err(io_err(path))
}

/// fsyncs a directory so that a removal inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::atomic_file::sync_dir(dir).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_become_paths() {
        let hex = "ab".repeat(32);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")).unwrap(), hex);
        for bad in [
            "sha256:../../etc",
            "sha256:",
            "sha512:00",
            &"AB".repeat(32),
            &"a".repeat(63),
        ] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn root_precedence() {
        assert_eq!(
            Store::default_root(Some(Path::new("/x"))).unwrap(),
            PathBuf::from("/x")
        );
    }
}
