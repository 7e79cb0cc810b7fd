//! `rm` and `prune`: untag images, then free every blob and layer file that no recorded image and
//! no container still references (the liveness rules are here; the store deletes).
use super::{Error, Result};
use crate::oci;
use crate::store::{self, refs::RefEntry, refs::Refs, Store};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use std::collections::HashSet;
use std::path::PathBuf;

/// What `rm` and `prune` did.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub report: store::gc::Report,
}

/// Untags each image named in `queries`, then frees what nothing references.
pub fn remove(store: &Store, queries: &[String]) -> Result<Removed> {
    let lock = store.lock_exclusive()?;
    let mut untagged = Vec::new();
    {
        let mut refs = Refs::load(store)?;
        let mut doomed = Vec::new();
        for q in queries {
            doomed.extend(super::query::named_in(store, &refs, q)?);
        }
        let gone = refs.remove_where(|e| doomed.contains(e));
        untagged.extend(gone.iter().map(RefEntry::display));
        refs.save()?;
    }
    let report = collect(store, &lock)?;
    Ok(Removed { untagged, report })
}

/// Removes every blob, layer and temp file that no image or container references.
pub fn prune(store: &Store) -> Result<store::gc::Report> {
    let lock = store.lock_exclusive()?;
    collect(store, &lock)
}

fn collect(store: &Store, lock: &store::Lock) -> Result<store::gc::Report> {
    let (blobs, layers) = live_set(store)?;
    Ok(store.collect_garbage(lock, &blobs, &layers)?)
}

/// Digests (bare hex) of the blobs and layers that images and containers reference.
///
/// Liveness comes from explicit records only: `refs.json` names manifests, each container's
/// `state.json` names its image (`State::image`), a manifest names its config, the config names
/// its layers (diff_ids). The walk fails closed: a root whose manifest or config is missing,
/// damaged or unparsable stops the collection (naming the blob) before anything is removed,
/// since what it would have kept alive is unknown.
fn live_set(store: &Store) -> Result<(HashSet<String>, HashSet<String>)> {
    let refs = Refs::load(store)?;
    // (root manifest digest, who holds it)
    let mut roots: Vec<(String, String)> = refs
        .entries()
        .iter()
        .map(|e| (e.digest.clone(), format!("image {}", e.display())))
        .collect();
    for (name, path, state) in container_states(store)? {
        let holder = format!("container {name} ({})", path.display());
        if store::sha256_hex(&state.image).is_ok() {
            roots.push((state.image.clone(), holder));
        } else if state.image.starts_with('/') {
            // A `.bfc` file outside the store: nothing in the store to keep.
        } else {
            return Err(Error::BadImage {
                path,
                why: format!(
                    "the container's image {:?} is neither a digest nor a file path; nothing was removed",
                    state.image
                ),
            });
        }
    }
    let mut live_blobs = HashSet::new();
    let mut live_layers = HashSet::new();
    for (root, holder) in roots {
        let refuse = |what: &str, digest: &str, why: String| {
            Error::BadImage {
            path: store
                .blob_path(digest)
                .unwrap_or_else(|_| store.blobs_dir().join(digest)),
            why: format!(
                "{what} {digest} of {holder}: {why}; nothing was removed (remove the image or container, or pull it again)"
            ),
        }
        };
        let hex = store::sha256_hex(&root)
            .map_err(|e| refuse("manifest", &root, e.to_string()))?
            .to_string();
        live_blobs.insert(hex);
        let bytes = store
            .read_blob(&root, oci::MAX_DOCUMENT)
            .map_err(|e| refuse("manifest", &root, crate::error_chain::chain(&e)))?;
        let manifest = serde_json::from_slice::<ImageManifest>(&bytes)
            .map_err(|e| refuse("manifest", &root, format!("not an image manifest: {e}")))?;
        let cfg = manifest.config().digest().to_string();
        let cfg_hex = store::sha256_hex(&cfg)
            .map_err(|e| refuse("config", &cfg, e.to_string()))?
            .to_string();
        live_blobs.insert(cfg_hex);
        let cbytes = store
            .read_blob(&cfg, oci::MAX_DOCUMENT)
            .map_err(|e| refuse("config", &cfg, crate::error_chain::chain(&e)))?;
        let config = serde_json::from_slice::<ImageConfiguration>(&cbytes)
            .map_err(|e| refuse("config", &cfg, format!("not an image config: {e}")))?;
        for d in config.rootfs().diff_ids() {
            let h = store::sha256_hex(d)
                .map_err(|e| refuse("config", &cfg, format!("diff_id: {e}")))?;
            live_layers.insert(h.to_string());
        }
    }
    Ok((live_blobs, live_layers))
}

/// What liveness needs from a container's state record (`container::State::image`): the
/// image's manifest digest, or the path of a `.bfc` file outside the store.
#[derive(serde::Deserialize)]
struct State {
    image: String,
}

/// The state record of every container (`containers/<name>/state.json`). A state that exists but
/// cannot be read or parsed is refused: it could name any image.
fn container_states(store: &Store) -> Result<Vec<(String, PathBuf, State)>> {
    let mut out = Vec::new();
    let dir = store.containers_dir();
    let dirs = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(Error::BadImage {
                path: dir,
                why: format!("cannot list containers: {e}; nothing was removed"),
            })
        }
    };
    for d in dirs {
        let d = d.map_err(|e| Error::BadImage {
            path: dir.clone(),
            why: format!("cannot list containers: {e}; nothing was removed"),
        })?;
        if !d.path().is_dir() {
            continue;
        }
        let p = d.path().join("state.json");
        let state = match std::fs::read(&p) {
            // Not a container (as for `container::list`): creation writes the state last.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e.to_string()),
            Ok(b) => serde_json::from_slice::<State>(&b).map_err(|e| e.to_string()),
        };
        match state {
            Ok(s) => out.push((d.file_name().to_string_lossy().into_owned(), p, s)),
            Err(why) => {
                return Err(Error::BadImage {
                    path: p,
                    why: format!("unreadable container state ({why}); nothing was removed"),
                })
            }
        }
    }
    Ok(out)
}
