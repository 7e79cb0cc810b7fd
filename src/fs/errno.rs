//! The one map from errors to errno. Corrupt or unreadable content is EIO for that request only,
//! logged with the entry, file and offset; the mount stays up.
use fuser::Errno;

use crate::bfc;
use crate::overlay::Error;

pub fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound | Error::NoSubdir { .. } => Errno::ENOENT,
        Error::NotDir => Errno::ENOTDIR,
        Error::IsDir => Errno::EISDIR,
        Error::NotSymlink => Errno::EINVAL,
        Error::NoXattr => Errno::NO_XATTR,
        Error::ReadOnly => Errno::EROFS,
        Error::NotEmpty => Errno::ENOTEMPTY,
        Error::Exists => Errno::EEXIST,
        Error::Invalid => Errno::EINVAL,
        Error::NotPermitted => Errno::EPERM,
        Error::NameTooLong => Errno::ENAMETOOLONG,
        Error::Upper { source, .. } => {
            let n = source.raw_os_error();
            // Expected outcomes (ENOENT, EEXIST, ENOSPC…) are the caller's business; others are logged.
            if n.is_none() {
                log::error!("{e}: {source}");
            } else {
                log::debug!("{e}: {source}");
            }
            n.map_or(Errno::EIO, Errno::from_i32)
        }
        Error::BadInode(ino) => {
            log::warn!("request for unknown inode {ino}");
            Errno::ESTALE
        }
        Error::Layer { source, .. } => {
            // `{:#}`-style chain: "reading PATH in FILE: <bfc error with offset>".
            log::error!("{e}: {source}");
            match source.as_ref() {
                bfc::Error::Io { source, .. } => {
                    source.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
                }
                _ => Errno::EIO,
            }
        }
    }
}
