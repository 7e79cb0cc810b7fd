//! Joins the pipeline for one image; the CLI and the tests call it. It is the only module that
//! knows both `oci` and `store`.
//!
//! ```text
//! pull.rs         pull: resolve → store manifest + config → worker pool over the layers → record the name
//! fetch.rs        resolve a source (registry or on disk) and stream a blob into the store, verified
//! layer.rs        one layer: stored blob → BFC file, checked against its diff_id
//! lazy_pull.rs   `pull --lazy`: manifest, config and each BFC layer's index; content on read
//! single_file.rs  `pull -o FILE`: the whole image in one BFC file
//! query.rs        `images` / `inspect`: list, find what an IMAGE argument names, describe
//! names.rs        the names a pull records (ref names, RepoTags) and what a short name finds
//! import.rs       `import` (a directory → a one-layer image) and `tag`
//! commit.rs       `commit` (a container's upper dir → a new top layer on its image)
//! layer_tar.rs    a directory tree (plain, or an overlayfs upper dir) → a layer tar → BFC file
//! gc.rs           `rm` / `prune`: untag, then free what no image or container references
//! open.rs         an image's layer files opened for a mount, top layer first
//! push.rs         push: an image to a registry or a layout, as OCI tar layers or BFC layers
//! layer_blob.rs   a layer as a blob to send: its tar again (tar-split or canonical), or its BFC file
//! layout.rs       OCI layouts, oci-archive and docker-archive files: push targets, save, load
//! workers.rs      the worker pool over an image's layers (pull and push)
//! ```
mod commit;
mod fetch;
mod gc;
mod import;
mod layer;
mod layer_blob;
mod layer_tar;
mod layout;
mod lazy_pull;
mod names;
mod open;
mod pull;
mod push;
mod query;
mod single_file;
mod workers;

pub use commit::{commit, CommitOptions};
pub use gc::{prune, remove, Removed};
pub use import::{apply_changes, import, rfc3339_utc, tag, Change, Imported};
pub use layer_blob::{canonical_tar, TarCompression};
pub use layout::{load, save, SaveFormat};
pub use lazy_pull::{pull_lazy, LazyMode, BFC_FEATURE};
pub use open::{file_layers, open_layers, Opened};
pub use pull::{pull, Progress, PullOptions, Pulled, Quiet};
pub use push::{push, Destination, PushFormat, PushOptions, Pushed};
pub use query::{inspect, inspect_file, list, names, resolve_names, ImageInfo, LayerInfo};
pub use single_file::SINGLE_FILE_INDEX;

use crate::oci::{self, Source};
use crate::{bfc, convert, store};
use std::path::{Path, PathBuf};

/// Errors of pulling and of the image queries: each layer's error, composed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Oci(#[from] oci::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Convert(#[from] convert::Error),
    #[error(transparent)]
    Bfc(#[from] bfc::Error),
    #[error(transparent)]
    Lazy(#[from] crate::lazy::Error),
    #[error("no image {query:?} in the store at {}; `bfcfs images` lists what is there", .root.display())]
    NotFound { query: String, root: PathBuf },
    #[error("{query:?} matches several images ({names}); name one with its tag or full digest")]
    Ambiguous { query: String, names: String },
    #[error("{}: {why}", .path.display())]
    BadImage { path: PathBuf, why: String },
    #[error("{image} is for {has}, not {wanted} (--platform); pull without --platform to take it anyway")]
    WrongPlatform {
        image: String,
        has: String,
        wanted: String,
    },
    #[error("image name {reference:?}: {why}")]
    BadReference { reference: String, why: String },
    #[error("building the image config or manifest: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Name and tag under which a source is recorded.
pub(crate) fn record_name(source: &Source) -> (String, Option<String>) {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match source {
        Source::Registry(r) => (r.name(), r.tag().map(str::to_string)),
        Source::OciDir { path, tag } => (format!("oci:{}", abs(path).display()), tag.clone()),
        Source::OciArchive { path, tag } => {
            (format!("oci-archive:{}", abs(path).display()), tag.clone())
        }
        Source::DockerArchive { path } => (format!("docker-archive:{}", abs(path).display()), None),
    }
}
