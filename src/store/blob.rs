//! Ingesting blobs: hash and count while writing into `tmp/`, check the digest and size, fsync,
//! rename into `blobs/sha256/`, fsync the directory. A writer dropped without `commit` (or a
//! mismatch) deletes its temp file; a killed process leaves it in `tmp/` for `prune`.
use super::{io_err, sha256_hex, Error, Result, Store};
use crate::atomic_file::AtomicFile;
use crate::digest::sha256_finish;
use sha2::{Digest as _, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

/// A blob being written.
pub struct BlobWriter {
    file: std::io::BufWriter<AtomicFile>,
    hasher: Sha256,
    len: u64,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Starts a blob in `tmp/`.
    pub fn new(store: &Store) -> Result<BlobWriter> {
        let tmp = store.tmp_dir();
        let file = AtomicFile::in_dir(&tmp, "blob").map_err(io_err(&tmp))?;
        Ok(BlobWriter {
            file: std::io::BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            len: 0,
            blobs: store.blobs_dir(),
        })
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_io(bytes).map_err(|source| Error::Io {
            path: self.file.get_ref().path().to_path_buf(),
            source,
        })
    }

    fn write_io(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything written.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let f = self.file.get_mut().file();
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Checks digest (and size, if known) and publishes the blob; returns its path.
    pub fn commit(self, digest: &str, size: Option<u64>) -> Result<PathBuf> {
        let hex_want = sha256_hex(digest)?.to_string();
        let found = sha256_finish(self.hasher);
        if let Some(size) = size {
            if size != self.len {
                return Err(Error::SizeMismatch {
                    digest: digest.to_string(),
                    expected: size,
                    found: self.len,
                });
            }
        }
        if found[7..] != hex_want {
            return Err(Error::DigestMismatch {
                expected: format!("sha256:{hex_want}"),
                found,
                size: self.len,
            });
        }
        let tmp = self.file.into_inner().map_err(|e| {
            let (source, w) = e.into_parts();
            Error::Io {
                path: w.get_ref().path().to_path_buf(),
                source,
            }
        })?;
        let dest = self.blobs.join(&hex_want);
        tmp.commit(&dest).map_err(io_err(&dest))?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_digest;

    #[test]
    fn commit_checks_digest_and_leaves_nothing_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = BlobWriter::new(&store).unwrap();
        w.write(b"hello").unwrap();
        let err = w.commit(&sha256_digest(b"other"), None).unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(store.blobs_dir()).unwrap().count(), 0);

        let mut w = BlobWriter::new(&store).unwrap();
        w.write(b"junk").unwrap();
        w.restart().unwrap();
        w.write(b"hel").unwrap();
        w.write(b"lo").unwrap();
        let p = w.commit(&sha256_digest(b"hello"), Some(5)).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"hello");
        assert_eq!(
            store.read_blob(&sha256_digest(b"hello"), 10).unwrap(),
            b"hello"
        );
    }
}
