//! Bytes written once and read back once, in order: kept in memory, or — when given a directory
//! — moved to an unnamed temp file (O_TMPFILE: nothing to clean up after a failure or a kill)
//! whenever a megabyte has gathered. The writer builds the extension's sections in these while it
//! streams the index, so a large layer's per-entry sections (owners, offsets) do not stay in
//! memory.
use super::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Bytes gathered in memory before they go to the file.
const SPOOL_BUF: usize = 1 << 20;

pub(super) struct Spool {
    buf: Vec<u8>,
    file: Option<File>,
    on_disk: u64,
    /// Where the temp file goes; `None`: everything stays in memory.
    dir: Option<PathBuf>,
}

impl Spool {
    pub fn new(dir: Option<PathBuf>) -> Spool {
        Spool {
            buf: Vec::new(),
            file: None,
            on_disk: 0,
            dir,
        }
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::Io {
            file: self.dir.as_ref().map_or_else(PathBuf::new, |d| {
                d.join("(extension spool, unnamed temp file)")
            }),
            source: e,
        }
    }

    pub fn extend(&mut self, b: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= SPOOL_BUF && self.dir.is_some() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.file.is_none() {
            let Some(dir) = &self.dir else {
                return Ok(());
            };
            let f = tempfile::tempfile_in(dir).map_err(|e| self.io(e))?;
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.write_all(&self.buf) {
                return Err(self.io(e));
            }
        }
        self.on_disk += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.on_disk + self.buf.len() as u64
    }

    /// Hands every byte to `sink`, in order, a megabyte at a time at most.
    pub fn drain_to(&mut self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if let Some(mut f) = self.file.take() {
            f.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
            let mut chunk = vec![0u8; SPOOL_BUF];
            let mut left = self.on_disk;
            while left > 0 {
                let n = (left.min(SPOOL_BUF as u64)) as usize;
                f.read_exact(&mut chunk[..n]).map_err(|e| self.io(e))?;
                sink(&chunk[..n])?;
                left -= n as u64;
            }
        }
        sink(&self.buf)?;
        self.buf = Vec::new();
        self.on_disk = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(s: &mut Spool) -> Vec<u8> {
        let mut out = Vec::new();
        s.drain_to(&mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn gives_back_what_it_was_given_from_memory_or_disk() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 253) as u8).collect();
        for spill in [None, Some(dir.path().to_path_buf())] {
            let mut s = Spool::new(spill.clone());
            for piece in data.chunks(1000) {
                s.extend(piece).unwrap();
            }
            assert_eq!(s.len(), data.len() as u64);
            assert_eq!(s.file.is_some(), spill.is_some());
            assert!(drained(&mut s) == data);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
