//! `rm` and `prune`: untag images, then free every blob and layer file that no recorded image and
//! no container still references (the liveness rules are here; the store deletes).
use super::query::matches;
use super::{Error, Result};
use crate::oci;
use crate::store::{self, refs::RefEntry, refs::Refs, Store};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use std::collections::HashSet;

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
fn live_set(store: &Store) -> Result<(HashSet<String>, HashSet<String>)> {
    let refs = Refs::load(store)?;
    let mut roots: Vec<String> = refs.entries().iter().map(|e| e.digest.clone()).collect();
    let mut live_blobs = HashSet::new();
    let mut live_layers = HashSet::new();
    // A container's state file names its image by digest or by name; every sha256 digest in it,
    // and every recorded name it mentions, keeps that image alive.
    for text in container_state_strings(store)? {
        if let Ok(hex) = store::sha256_hex(&text) {
            live_layers.insert(hex.to_string());
            live_blobs.insert(hex.to_string());
            roots.push(format!("sha256:{hex}"));
        } else {
            roots.extend(matches(&refs, &text).into_iter().map(|e| e.digest));
        }
    }
    for root in roots {
        let Ok(hex) = store::sha256_hex(&root) else {
            continue;
        };
        live_blobs.insert(hex.to_string());
        let Ok(bytes) = store.read_blob(&root, oci::MAX_DOCUMENT) else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
            continue;
        };
        let cfg = manifest.config().digest().to_string();
        if let Ok(h) = store::sha256_hex(&cfg) {
            live_blobs.insert(h.to_string());
        }
        if let Ok(cbytes) = store.read_blob(&cfg, oci::MAX_DOCUMENT) {
            if let Ok(config) = serde_json::from_slice::<ImageConfiguration>(&cbytes) {
                for d in config.rootfs().diff_ids() {
                    if let Ok(h) = store::sha256_hex(d) {
                        live_layers.insert(h.to_string());
                    }
                }
            }
        }
    }
    Ok((live_blobs, live_layers))
}

/// All JSON strings in `containers/*/*.json` (state files of the container module).
fn container_state_strings(store: &Store) -> Result<Vec<String>> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(store.containers_dir()) else {
        return Ok(out);
    };
    for d in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "json") {
                let parsed = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                match parsed {
                    Some(v) => walk(&v, &mut out),
                    // It could name any image: refuse to guess what is garbage.
                    None => {
                        return Err(Error::BadImage {
                            path: p,
                            why: "unreadable container state; nothing was removed".into(),
                        })
                    }
                }
            }
        }
    }
    Ok(out)
}
