//! One bounds-checked little-endian reader for every byte parsed from a container. It knows the
//! absolute offset of what it reads, so a short read becomes "truncated at offset N reading X".
use super::error::{Error, Result};
use std::path::Path;

pub struct Cursor<'a> {
    file: &'a Path,
    data: &'a [u8],
    /// Absolute file offset of `data[0]`.
    base: u64,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(file: &'a Path, data: &'a [u8], base: u64) -> Self {
        Cursor {
            file,
            data,
            base,
            pos: 0,
        }
    }

    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                file: self.file.to_path_buf(),
                offset: self.offset(),
                what: format!("reading {what} ({n} bytes, {} left)", self.remaining()),
            });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// An error at the current offset, for values that parse but make no sense.
    pub fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::Corrupt {
            file: self.file.to_path_buf(),
            offset: self.offset(),
            what: what.into(),
        }
    }
}
