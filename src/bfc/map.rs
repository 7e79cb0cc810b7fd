//! The only place that memory-maps a file. Containers are opened read-only and are immutable once
//! published (the writer only ever renames complete files into place), so the rest of the code can
//! see them as a plain `&[u8]`.
use super::error::{Error, Result};
use std::fs::File;
use std::path::Path;

/// Bytes of a container: a read-only mapping, or an owned buffer (tests, fuzzing, empty files).
pub enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Maps `file` read-only; falls back to reading it into memory when mapping fails.
    pub fn map(path: &Path, file: &File) -> Result<Bytes> {
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: the mapping is read-only and private to this process. A container must not be
        // modified while it is open: bfcfs never writes to a published container (new ones are
        // renamed into place), and a third party truncating the file is outside the contract
        // (as for every mmap-based reader, e.g. ripgrep's). All parsing is bounds-checked, so
        // changed bytes can at worst produce wrong data or an error, never undefined reads
        // beyond the mapping's length.
        match unsafe { memmap2::MmapOptions::new().map(file) } {
            Ok(m) => Ok(Bytes::Mapped(m)),
            Err(_) => {
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
                if off.checked_add(len).is_some_and(|end| end <= m.len()) {
                    let _ = m.advise_range(memmap2::Advice::WillNeed, off, len);
                }
            }
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}
