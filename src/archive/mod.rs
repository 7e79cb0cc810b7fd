//! Local trees ⇄ BFC files: `create` walks a directory into a `bfc::Writer`; `extract` writes a
//! container's entries under a directory and never outside it.
pub mod create;
pub mod extract;

use crate::bfc;
use std::path::PathBuf;

/// Errors of archiving and extracting local trees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bfc(#[from] bfc::Error),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("{failed} of {total} entries could not be extracted (see the messages above)")]
    Partial { failed: usize, total: usize },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Bfc(e) => e.exit_code(),
            Error::Refused { .. } => 2,
            _ => 1,
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Called with the number of content bytes just processed (for progress bars).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);
