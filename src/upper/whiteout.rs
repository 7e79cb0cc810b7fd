//! Kernel overlayfs encodings in the upper dir: a whiteout is a character device 0:0; an opaque
//! directory carries `trusted.overlay.opaque=y`.
use super::{errno, os, UpperDir};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use std::io;

pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// True for an upper entry that hides the same name in the lower layers.
pub fn is_whiteout(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

impl UpperDir {
    /// Replaces whatever the upper dir has at `rel` with a whiteout.
    pub fn whiteout(&self, rel: &[u8]) -> io::Result<()> {
        if let Some(st) = self.stat(rel)? {
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                self.remove_tree(rel)?;
            }
        }
        let tmp = self.tmp_name();
        rfs::mknodat(
            &self.work,
            os(&tmp),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .map_err(errno)?;
        self.publish(&tmp, rel, true)
    }

    /// True when upper directory `rel` is marked opaque.
    pub fn is_opaque(&self, rel: &[u8]) -> io::Result<bool> {
        let fd = match self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(false),
            Err(e) => return Err(errno(e)),
        };
        let mut buf = [0u8; 4];
        match rfs::fgetxattr(&fd, OPAQUE_XATTR, &mut buf) {
            Ok(n) => Ok(&buf[..n] == b"y"),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::RANGE) => Ok(false),
            Err(e) => Err(errno(e)),
        }
    }

    /// Marks upper directory `rel` opaque.
    pub fn set_opaque(&self, rel: &[u8]) -> io::Result<()> {
        let fd = self
            .open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(errno)?;
        rfs::fsetxattr(&fd, OPAQUE_XATTR, b"y", rfs::XattrFlags::empty()).map_err(errno)
    }
}
