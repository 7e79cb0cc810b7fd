//! Errors of the BFC layer. Every variant names the container file and, where it applies, the entry
//! path and the byte offset, so a user can tell what is wrong and where.
use std::path::PathBuf;

/// Result of every fallible BFC operation.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while reading or writing a BFC container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a BFC container: {what}")]
    NotBfc { file: PathBuf, what: String },
    #[error("{file}: truncated at offset {offset}: {what}")]
    Truncated {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{file}: corrupt at offset {offset}: {what}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{file}: checksum mismatch in {what} at offset {offset} (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        file: PathBuf,
        what: String,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// Bytes of a partial file that could not be fetched (or not in time).
    #[error("{file}: fetching at offset {offset}: {what}")]
    Fetch {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{file}: wrong key: {what}")]
    WrongKey { file: PathBuf, what: String },
    #[error("{file}: entry {path} is encrypted: a password or keyfile is needed")]
    KeyRequired { file: PathBuf, path: String },
    #[error("{file}: unsupported: {what}")]
    Unsupported { file: PathBuf, what: String },
    /// An entry written by a newer writer with a compression or encryption this version lacks.
    #[error("{}: unsupported {what} {id} in entry {path}", .file.display())]
    UnsupportedCodec {
        file: PathBuf,
        what: &'static str,
        id: u8,
        path: String,
    },
    #[error("invalid entry path {path:?}: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("{what}")]
    Usage { what: String },
}

impl Error {
    /// Process exit code for this error: 2 for problems with what the user asked (keys, paths,
    /// usage), 1 for damaged or unreadable input.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::WrongKey { .. }
            | Error::KeyRequired { .. }
            | Error::InvalidPath { .. }
            | Error::Usage { .. } => 2,
            _ => 1,
        }
    }

    /// True when the bytes of the container are damaged (as opposed to I/O or key problems).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::NotBfc { .. }
                | Error::Truncated { .. }
                | Error::Corrupt { .. }
                | Error::BadChecksum { .. }
        )
    }

    pub(crate) fn io(file: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}

/// Shows a path from the container for messages (lossy: paths are bytes).
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}
