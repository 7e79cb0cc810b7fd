//! Opening an image for a mount: its layer BFC files, top layer first, with the whiteout rules
//! that apply, from the store or from one `.bfc` file.
use super::query::{inspect, inspect_file};
use super::single_file::layer_dir;
use super::{Error, Result};
use crate::bfc;
use crate::lazy::{self, LazyOptions};
use crate::overlay::{Layer, WhiteoutSpec};
use crate::store::Store;
use oci_spec::image::ImageConfiguration;
use std::path::Path;
use std::sync::Arc;

/// An image's layers opened for mounting (top layer first) and what describes it.
#[derive(Debug)]
pub struct Opened {
    pub layers: Vec<Layer>,
    pub spec: WhiteoutSpec,
    /// The image config (none for a plain `.bfc` tree).
    pub config: Option<ImageConfiguration>,
    /// What names the image for good: the manifest digest, or the `.bfc` file's absolute path.
    pub id: String,
}

/// Opens the layer files of image `query` in the store, each with a decoded-chunk cache of
/// `cache_bytes`; layers pulled lazily are opened as partial files that fetch what is read.
pub fn open_layers(
    store: &Store,
    query: &str,
    cache_bytes: usize,
    lazy: &LazyOptions,
) -> Result<Opened> {
    let info = inspect(Some(store), query)?;
    let mut layers = Vec::with_capacity(info.layers.len());
    for l in info.layers.iter().rev() {
        if l.bfc.is_none() {
            if let Some(c) = lazy::open_layer(store, &l.diff_id, cache_bytes, lazy)? {
                layers.push(Layer::new(c));
                continue;
            }
        }
        let path = l.bfc.clone().ok_or_else(|| Error::BadImage {
            path: store.root().to_path_buf(),
            why: format!(
                "layer {} of {} is not in the store; pull the image again",
                l.diff_id, info.repository
            ),
        })?;
        // For a mount: the index checksum is computed once it serves (`start_index_check`).
        let mut c = bfc::Container::open_deferred(&path)?;
        c.set_cache_bytes(cache_bytes);
        layers.push(Layer::new(Arc::new(c)));
    }
    Ok(Opened {
        layers,
        spec: WhiteoutSpec::Oci,
        config: info.config,
        id: info.digest,
    })
}

/// The layers of an open `.bfc` file: a single-file image (`pull -o`: one prefix per layer, OCI
/// whiteouts) or else one plain tree (typed whiteouts only).
pub fn file_layers(c: Arc<bfc::Container>, path: &Path) -> Result<Opened> {
    let id = std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    if c.image_blob("manifest.json").is_none() {
        return Ok(Opened {
            layers: vec![Layer::new(c)],
            spec: WhiteoutSpec::Typed,
            config: None,
            id,
        });
    }
    let info = inspect_file(path)?;
    let layers = info
        .layers
        .iter()
        .rev()
        .map(|l| Layer {
            container: c.clone(),
            root: layer_dir(&l.diff_id).into_bytes(),
        })
        .collect();
    Ok(Opened {
        layers,
        spec: WhiteoutSpec::Oci,
        config: info.config,
        id,
    })
}
