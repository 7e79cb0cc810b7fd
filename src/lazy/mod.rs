//! Lazy layers: BFC files that are only partly in the store, the rest fetched with HTTP range
//! requests as it is read (see `bfc/partial.rs` for the reading side) and in the background.
//!
//! ```text
//! source.rs   where the bytes come from: a registry blob (range GETs through oci's client,
//!             its auth and redirects) or any HTTP(S) URL; retries with backoff, logged
//! store.rs    the store's side: ROOT/lazy/<key>/{layer.bfc, present, origin.json}, creating
//!             one from a layer's head and index, opening it, how much is local, and
//!             publishing a complete, verified layer as layers/<diff_id>.bfc
//! url.rs      `mount https://HOST/PATH/file.bfc`: the tail and header first, then lazy
//! ```
mod source;
mod store;
mod url;

pub use source::{RegistrySource, Retry, UrlSource};
pub use store::{
    check_new_layer, create_layer, layer_progress, open_layer, registry_head, Head, Origin,
    ANNOTATION_DIFF_ID,
};
pub use url::{is_url, open_url};

use crate::{bfc, oci};
use std::path::PathBuf;
use std::time::Duration;

/// Errors of lazy layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Oci(#[from] oci::Error),
    #[error(transparent)]
    Bfc(#[from] bfc::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {why}")]
    Bad { what: String, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How lazy layers behave once mounted.
#[derive(Debug, Clone)]
pub struct LazyOptions {
    /// A read that waits longer than this for missing bytes fails with EIO.
    pub deadline: Duration,
    /// Background fetch of the rest, bytes/s (0: off).
    pub bg_rate: u64,
    /// Registry options (plain-HTTP hosts, retries, deadlines of one request).
    pub registry: oci::registry::Options,
}

/// Default background rate: 4 MiB/s.
pub const DEFAULT_BG_RATE: u64 = 4 << 20;

impl Default for LazyOptions {
    fn default() -> Self {
        LazyOptions {
            deadline: Duration::from_secs(30),
            bg_rate: DEFAULT_BG_RATE,
            registry: oci::registry::Options::default(),
        }
    }
}

impl LazyOptions {
    fn partial(&self) -> bfc::PartialOptions {
        bfc::PartialOptions {
            deadline: self.deadline,
            ..Default::default()
        }
    }
}
