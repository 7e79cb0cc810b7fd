//! The queries behind `images` and `inspect`: list the recorded images, find the one a user's
//! IMAGE argument names, and describe an image in the store or a single-file image (`pull -o`).
use super::single_file::layer_dir;
use super::{record_name, Error, Result};
use crate::bfc;
use crate::digest::sha256_digest;
use crate::oci::{self, Source};
use crate::store::{refs::RefEntry, refs::Refs, Store};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One image as `images` and `inspect` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageInfo {
    /// `registry/repository` (or transport name).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    /// Bytes of the layer BFC files.
    pub size: u64,
    pub created: Option<String>,
    pub layers: Vec<LayerInfo>,
    #[serde(skip)]
    pub manifest: Option<ImageManifest>,
    #[serde(skip)]
    pub config: Option<ImageConfiguration>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub media_type: String,
    /// Compressed size (as in the manifest).
    pub size: u64,
    pub diff_id: String,
    /// Path of the layer's BFC file, when it is in the store.
    pub bfc: Option<PathBuf>,
    pub bfc_size: Option<u64>,
    /// A lazily pulled layer: (bytes local, size of its BFC file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy: Option<(u64, u64)>,
}

impl ImageInfo {
    /// For an image with lazily pulled layers: (bytes local, bytes of all its layer files).
    pub fn local_bytes(&self) -> Option<(u64, u64)> {
        self.layers.iter().any(|l| l.lazy.is_some()).then(|| {
            self.layers
                .iter()
                .fold((0, 0), |(have, all), l| match (l.lazy, l.bfc_size) {
                    (Some((h, s)), _) => (have + h, all + s),
                    (None, Some(s)) => (have + s, all + s),
                    (None, None) => (have, all),
                })
        })
    }
}

fn load_image(store: &Store, entry: &RefEntry) -> Result<ImageInfo> {
    let manifest_bytes = store.read_blob(&entry.digest, oci::MAX_DOCUMENT)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| Error::BadImage {
            path: store.blob_path(&entry.digest).unwrap_or_default(),
            why: format!("bad manifest: {e}"),
        })?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = store.read_blob(&config_digest, oci::MAX_DOCUMENT)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| Error::BadImage {
            path: store.blob_path(&config_digest).unwrap_or_default(),
            why: format!("bad config: {e}"),
        })?;
    let mut layers = layer_infos(&manifest, &config, |diff_id| store.layer_path(diff_id).ok());
    for l in layers.iter_mut().filter(|l| l.bfc.is_none()) {
        l.lazy = crate::lazy::layer_progress(store, &l.diff_id);
    }
    Ok(ImageInfo {
        repository: entry.name.clone(),
        tag: entry.tag.clone(),
        digest: entry.digest.clone(),
        size: layers
            .iter()
            .filter_map(|l| l.bfc_size.or(l.lazy.map(|x| x.1)))
            .sum(),
        created: config.created().clone(),
        layers,
        manifest: Some(manifest),
        config: Some(config),
    })
}

fn layer_infos(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
    path_of: impl Fn(&str) -> Option<PathBuf>,
) -> Vec<LayerInfo> {
    manifest
        .layers()
        .iter()
        .zip(config.rootfs().diff_ids())
        .map(|(d, diff_id)| {
            let bfc = path_of(diff_id).filter(|p| p.exists());
            let bfc_size = bfc
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len());
            LayerInfo {
                digest: d.digest().to_string(),
                media_type: d.media_type().to_string(),
                size: d.size(),
                diff_id: diff_id.clone(),
                bfc,
                bfc_size,
                lazy: None,
            }
        })
        .collect()
}

/// Every image in the store, in name order.
pub fn list(store: &Store) -> Result<Vec<ImageInfo>> {
    let refs = Refs::load(store)?;
    refs.entries()
        .iter()
        .map(|e| load_image(store, e))
        .collect()
}

/// The reference entries a user's IMAGE argument names: `name[:tag]`, `name@digest`, a
/// transport name (`oci:DIR:TAG`), or a digest / hex prefix of at least 4 characters.
pub(super) fn matches(refs: &Refs, query: &str) -> Vec<RefEntry> {
    let entries = refs.entries();
    let hex_prefix = query.strip_prefix("sha256:").unwrap_or(query);
    if hex_prefix.len() >= 4 && hex_prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        let found: Vec<RefEntry> = entries
            .iter()
            .filter(|e| {
                e.digest
                    .trim_start_matches("sha256:")
                    .starts_with(hex_prefix)
            })
            .cloned()
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    if let Ok(source) = query.parse::<Source>() {
        // `oci:DIR:TAG` was recorded under the name its ref name TAG gives (names.rs).
        let given: Vec<String> = match &source {
            Source::OciDir { tag, .. } | Source::OciArchive { tag, .. } => {
                tag.iter().cloned().collect()
            }
            _ => Vec::new(),
        };
        let mut names = super::names::record_names(&source, &given);
        names.push(record_name(&source));
        let digest = match &source {
            Source::Registry(r) => r.digest().map(|d| d.to_string()),
            _ => None,
        };
        let exact: Vec<RefEntry> = entries
            .iter()
            .filter(|e| {
                names.iter().any(|(name, tag)| {
                    e.name == *name
                        && match &digest {
                            Some(d) => &e.digest == d,
                            None => e.tag == *tag,
                        }
                })
            })
            .cloned()
            .collect();
        if !exact.is_empty() {
            return exact;
        }
    }
    match super::names::short_name(query) {
        Some((repo, tag)) => super::names::short_matches(entries, &repo, &tag),
        None => Vec::new(),
    }
}

pub(super) fn find_one(store: &Store, refs: &Refs, query: &str) -> Result<RefEntry> {
    let found = matches(refs, query);
    let digests: HashSet<&str> = found.iter().map(|e| e.digest.as_str()).collect();
    match (found.first(), digests.len()) {
        (None, _) => Err(Error::NotFound {
            query: query.into(),
            root: store.root().to_path_buf(),
        }),
        (Some(e), 1) => Ok(e.clone()),
        _ => Err(Error::Ambiguous {
            query: query.into(),
            names: found
                .iter()
                .map(|e| e.display())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Every recorded name, in name order.
pub fn names(store: &Store) -> Result<Vec<RefEntry>> {
    Ok(Refs::load(store)?.entries().to_vec())
}

/// The recorded names `query` names in `refs`: none is an error, and so is a digest prefix that
/// matches several images (the error lists them).
pub(super) fn named_in(store: &Store, refs: &Refs, query: &str) -> Result<Vec<RefEntry>> {
    let found = matches(refs, query);
    if found.is_empty() {
        return Err(Error::NotFound {
            query: query.into(),
            root: store.root().to_path_buf(),
        });
    }
    let digests: HashSet<&str> = found.iter().map(|e| e.digest.as_str()).collect();
    if digests.len() > 1 {
        return Err(Error::Ambiguous {
            query: query.into(),
            names: found
                .iter()
                .map(|e| format!("{} ({})", e.display(), &e.digest))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(found)
}

/// The recorded names that `queries` name together (see [`named_in`]).
pub fn resolve_names(store: &Store, queries: &[String]) -> Result<Vec<RefEntry>> {
    let refs = Refs::load(store)?;
    let mut out: Vec<RefEntry> = Vec::new();
    for q in queries {
        for e in named_in(store, &refs, q)? {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// The image `query` names in the store, or a single-file image (a path to a `.bfc` file).
pub fn inspect(store: Option<&Store>, query: &str) -> Result<ImageInfo> {
    let as_path = Path::new(query);
    if query.ends_with(".bfc") && as_path.is_file() {
        return inspect_file(as_path);
    }
    let Some(store) = store else {
        return Err(Error::NotFound {
            query: query.into(),
            root: PathBuf::new(),
        });
    };
    let refs = Refs::load(store)?;
    let entry = find_one(store, &refs, query)?;
    drop(refs);
    load_image(store, &entry)
}

/// Reads a single-file image written by `pull -o`.
pub fn inspect_file(path: &Path) -> Result<ImageInfo> {
    let c = bfc::Container::open(path)?;
    let bad = |why: String| Error::BadImage {
        path: path.to_path_buf(),
        why,
    };
    let manifest_bytes = c
        .image_blob("manifest.json")
        .ok_or_else(|| bad("not a single-file image: no manifest.json blob".into()))?;
    let config_bytes = c
        .image_blob("config.json")
        .ok_or_else(|| bad("not a single-file image: no config.json blob".into()))?;
    let manifest: ImageManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| bad(format!("bad manifest: {e}")))?;
    let config_digest = sha256_digest(config_bytes);
    if config_digest != manifest.config().digest().as_ref() {
        return Err(bad(format!(
            "config blob has digest {config_digest}, the manifest says {}",
            manifest.config().digest()
        )));
    }
    let config: ImageConfiguration =
        serde_json::from_slice(config_bytes).map_err(|e| bad(format!("bad config: {e}")))?;
    let mut layers = layer_infos(&manifest, &config, |_| None);
    for l in &mut layers {
        let prefix = layer_dir(&l.diff_id);
        if !c.is_dir(prefix.as_bytes()) {
            return Err(bad(format!(
                "layer {} has no {prefix}/ directory",
                l.digest
            )));
        }
    }
    if layers.len() != config.rootfs().diff_ids().len() {
        return Err(bad("manifest and config disagree on the layer count".into()));
    }
    Ok(ImageInfo {
        repository: path.display().to_string(),
        tag: None,
        digest: sha256_digest(manifest_bytes),
        size: c.file_size(),
        created: config.created().clone(),
        layers: std::mem::take(&mut layers),
        manifest: Some(manifest),
        config: Some(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_prefix_of_several_images_is_an_error_that_lists_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (a, b) = (
            format!("sha256:abcd1{}", "0".repeat(59)),
            format!("sha256:abcd2{}", "0".repeat(59)),
        );
        {
            let mut r = Refs::load(&store).unwrap();
            r.set("docker.io/library/x", Some("1"), &a);
            r.set("docker.io/library/x", Some("2"), &a);
            r.set("docker.io/library/y", Some("1"), &b);
            r.save().unwrap();
        }
        let err = resolve_names(&store, &["abcd".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("matches several images"), "{err}");
        assert!(
            err.contains("x:1") && err.contains("x:2") && err.contains("y:1"),
            "{err}"
        );
        // One image under two names is not ambiguous.
        assert_eq!(resolve_names(&store, &["abcd1".into()]).unwrap().len(), 2);
        assert_eq!(resolve_names(&store, &["y:1".into()]).unwrap().len(), 1);
        let err = resolve_names(&store, &["zz:1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no image"), "{err}");
    }
}
