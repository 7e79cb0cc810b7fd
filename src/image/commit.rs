//! `commit`: a container's upper dir becomes a new top layer on the container's image. The upper
//! dir is read as an OCI changeset (layer_tar.rs: overlayfs whiteouts and opaque dirs become
//! `.wh.` entries, overlayfs's private xattrs stay behind), stored and converted like a pulled
//! layer; the new config is the image's with the layer's diff_id and a history entry appended and
//! the `--change` instructions applied; the new manifest lists the image's layers and the new one.
//! The name is recorded last, so a failed commit records nothing.
//!
//! The caller holds the container (nothing writes to the upper dir meanwhile).
use super::import::{apply_changes, local_name, now_secs, rfc3339_utc, store_image, Change};
use super::layer_tar::{store_tree_layer, NewLayer, Walk};
use super::{Error, Imported, Result};
use crate::oci;
use crate::store::Store;
use oci_spec::image::{HistoryBuilder, ImageConfiguration, ImageManifest, MediaType};
use std::path::Path;

/// What to say about the commit in the image's history and config.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The history entry's comment (`-m`).
    pub message: Option<String>,
    /// The image's author (`--author`).
    pub author: Option<String>,
    pub changes: Vec<Change>,
    /// The container's name, for the history's `created_by`.
    pub container: String,
}

/// Commits the upper dir `upper` made on image `base` (a manifest digest in the store) as
/// image `reference`.
pub fn commit(
    store: &Store,
    upper: &Path,
    base: &str,
    reference: &str,
    opts: &CommitOptions,
) -> Result<Imported> {
    let (name, tag) = local_name(reference)?;
    if !base.starts_with("sha256:") {
        return Err(Error::BadImage {
            path: upper.to_path_buf(),
            why: format!(
                "the container was made from the file {base}, not from an image in the store; \
                 only containers of stored images can be committed"
            ),
        });
    }
    let _shared = store.lock_shared()?;
    let (manifest, mut config) = read_image(store, base)?;
    if manifest.layers().len() != config.rootfs().diff_ids().len() {
        return Err(Error::BadImage {
            path: store.blob_path(base)?,
            why: format!(
                "the manifest lists {} layers but the config {} diff_ids",
                manifest.layers().len(),
                config.rootfs().diff_ids().len()
            ),
        });
    }

    let NewLayer {
        descriptor,
        diff_id,
    } = store_tree_layer(store, upper, Walk::Upper)?;

    let now = rfc3339_utc(now_secs());
    let mut run_config = config.config().clone().unwrap_or_default();
    apply_changes(&mut run_config, &opts.changes);
    config.set_config(Some(run_config));
    let mut rootfs = config.rootfs().clone();
    let mut diff_ids = rootfs.diff_ids().clone();
    diff_ids.push(diff_id.clone());
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    let shown: Vec<String> = opts.changes.iter().map(Change::to_string).collect();
    let mut created_by = format!("bfcfs commit {}", opts.container);
    if !shown.is_empty() {
        created_by.push_str(&format!(" (changes: {})", shown.join(", ")));
    }
    let mut history = HistoryBuilder::default()
        .created(now.clone())
        .created_by(created_by)
        .build()?;
    history.set_comment(opts.message.clone());
    history.set_author(opts.author.clone());
    let mut histories = config.history().clone().unwrap_or_default();
    histories.push(history);
    config.set_history(Some(histories));
    config.set_created(Some(now));
    if opts.author.is_some() {
        config.set_author(opts.author.clone());
    }

    // The base layers keep their bytes and digests; Docker media types are named by their OCI
    // equivalents, since the new manifest is an OCI one.
    let mut layers: Vec<_> = manifest
        .layers()
        .iter()
        .cloned()
        .map(|mut d| {
            if let Some(t) = oci_media_type(d.media_type()) {
                d.set_media_type(t);
            }
            d
        })
        .collect();
    layers.push(descriptor);
    store_image(store, &config, layers, &name, &tag, diff_id)
}

/// The manifest and config of the image whose manifest digest is `digest`.
fn read_image(store: &Store, digest: &str) -> Result<(ImageManifest, ImageConfiguration)> {
    let bad = |path: std::path::PathBuf, why: String| Error::BadImage { path, why };
    let bytes = store.read_blob(digest, oci::MAX_DOCUMENT)?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            store.blob_path(digest).unwrap_or_default(),
            format!("bad manifest: {e}"),
        )
    })?;
    let config_digest = manifest.config().digest().to_string();
    let bytes = store.read_blob(&config_digest, oci::MAX_DOCUMENT)?;
    let config: ImageConfiguration = serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            store.blob_path(&config_digest).unwrap_or_default(),
            format!("bad config: {e}"),
        )
    })?;
    Ok((manifest, config))
}

/// The OCI name of a Docker layer media type, if `t` is one (the Docker manifest spec has only
/// the gzip one; foreign layers keep their type).
fn oci_media_type(t: &MediaType) -> Option<MediaType> {
    match t.to_string().as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(MediaType::ImageLayerGzip),
        _ => None,
    }
}
