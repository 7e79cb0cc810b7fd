//! `pull --lazy`: the manifest (the BFC variant out of the tag's index when there is one), the
//! config, and for every BFC layer its head (file header, index, footer: one range request for
//! the index when the descriptor's annotations say where it is). Content is fetched when it is
//! read (`lazy`). Layers that are not BFC files are pulled in full (`prefer`) or refused
//! (`require`).
use super::layer::pull_layer;
use super::pull::{pulled_name, Progress, PullOptions, Pulled};
use super::{record_name, Error, Result};
use crate::lazy::{self, Origin, Retry, ANNOTATION_DIFF_ID};
use crate::oci::{self, media, registry::Registry, Source};
use crate::store::{refs::Refs, sha256_hex, Store};
use oci_spec::image::{Descriptor, ImageIndex};

/// What `pull --lazy` does with a layer that is not a BFC file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LazyMode {
    /// Fail, naming the layer.
    Require,
    /// Pull it in full, and say so.
    Prefer,
}

/// The platform feature that marks the BFC manifest of an index (docs/FORMAT.md).
pub const BFC_FEATURE: &str = "bfcfs.bfc.v1";

/// Digests of the manifests of an index (as served) whose `platform.os.features` has
/// [`BFC_FEATURE`] (read from the JSON: oci-spec names the field `os_features`).
fn bfc_manifests(raw: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
    let Some(list) = v.get("manifests").and_then(|m| m.as_array()) else {
        return Vec::new();
    };
    list.iter()
        .filter(|m| {
            let p = m.get("platform");
            ["os.features", "os_features"].iter().any(|k| {
                p.and_then(|p| p.get(k))
                    .and_then(|f| f.as_array())
                    .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(BFC_FEATURE)))
            })
        })
        .filter_map(|m| m.get("digest")?.as_str().map(str::to_string))
        .collect()
}

/// Out of an index: the BFC manifest for the platform, else the ordinary one.
fn choose(
    image: &str,
    platform: &oci::PlatformSpec,
    index: &ImageIndex,
    raw: &[u8],
) -> oci::Result<Descriptor> {
    let marked = bfc_manifests(raw);
    let is_bfc_manifest = |d: &Descriptor| marked.iter().any(|m| m == d.digest().as_ref());
    let mut bfc = index.clone();
    bfc.set_manifests(
        index
            .manifests()
            .iter()
            .filter(|d| is_bfc_manifest(d))
            .cloned()
            .collect(),
    );
    if let Ok(d) = platform.choose(image, &bfc) {
        return Ok(d.clone());
    }
    let mut plain = index.clone();
    plain.set_manifests(
        index
            .manifests()
            .iter()
            .filter(|d| !is_bfc_manifest(d))
            .cloned()
            .collect(),
    );
    platform.choose(image, &plain).cloned()
}

/// Pulls `source` lazily. Only registry images can be lazy: others are pulled in full with
/// `prefer` and refused with `require`.
pub fn pull_lazy(
    store: &Store,
    source: &Source,
    opts: &PullOptions,
    mode: LazyMode,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let Source::Registry(image) = source else {
        if mode == LazyMode::Require {
            return Err(Error::BadReference {
                reference: source.display_name(),
                why: "only registry images can be pulled lazily (--lazy-mode=require)".into(),
            });
        }
        log::warn!(
            "{}: not a registry image; pulling it in full",
            source.display_name()
        );
        let mut p = super::pull(store, source, opts, progress)?;
        p.fell_back = vec!["(all layers: not a registry image)".into()];
        return Ok(p);
    };
    let _shared = store.lock_shared()?;
    let registry = Registry::connect(image, &opts.registry)?;
    let cached = |d: &oci_spec::image::Digest| store.read_blob(d.as_ref(), oci::MAX_DOCUMENT).ok();
    let name = image.to_string();
    let resolved = registry.resolve_with(
        image,
        &|index, raw| choose(&name, &opts.platform, index, raw),
        &cached,
    )?;
    let manifest_digest = resolved.manifest_digest.to_string();
    let layers: Vec<(&Descriptor, &String)> =
        resolved.layers().iter().zip(resolved.diff_ids()).collect();
    if mode == LazyMode::Require {
        if let Some((d, _)) = layers
            .iter()
            .find(|(d, _)| d.media_type().to_string() != media::BFC_LAYER)
        {
            return Err(Error::BadImage {
                path: store.root().to_path_buf(),
                why: format!(
                    "{name}: layer {} is {}, not a BFC layer, and --lazy-mode=require pulls nothing in full (push the image with --format bfc)",
                    d.digest(),
                    d.media_type()
                ),
            });
        }
    }
    store.put_blob(&manifest_digest, &resolved.manifest_bytes)?;
    store.put_blob(
        resolved.manifest.config().digest().as_ref(),
        &resolved.config_bytes,
    )?;
    let retry = Retry::from(&opts.registry);
    let mut fell_back = Vec::new();
    let mut fetched = 0;
    let errors: Vec<Result<Option<String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = layers
            .iter()
            .map(|&(desc, diff_id)| {
                let registry = &registry;
                let name = &name;
                s.spawn(move || {
                    lazy_layer(
                        store, registry, name, image, desc, diff_id, opts, retry, progress,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::BadImage {
                        path: store.root().to_path_buf(),
                        why: "a layer worker panicked".into(),
                    })
                })
            })
            .collect()
    });
    for r in errors {
        match r? {
            Some(full) => fell_back.push(full),
            None => fetched += 1,
        }
    }
    let (rname, tag) = record_name(source);
    let mut refs = Refs::load(store)?;
    refs.set(&rname, tag.as_deref(), &manifest_digest);
    refs.save()?;
    Ok(Pulled {
        name: pulled_name(&rname, tag.as_deref(), &manifest_digest),
        manifest_digest,
        layers_fetched: fetched,
        layers_total: layers.len(),
        fell_back,
    })
}

/// One layer of a lazy pull: a BFC layer gets its head; another is pulled in full (returns its
/// digest then).
#[allow(clippy::too_many_arguments)]
fn lazy_layer(
    store: &Store,
    registry: &Registry,
    name: &str,
    image: &oci::ImageRef,
    desc: &Descriptor,
    diff_id: &str,
    opts: &PullOptions,
    retry: Retry,
    progress: &dyn Progress,
) -> Result<Option<String>> {
    let digest = desc.digest().to_string();
    if desc.media_type().to_string() != media::BFC_LAYER {
        log::warn!(
            "{name}: layer {digest} ({}) is not a BFC layer: pulling it in full",
            desc.media_type()
        );
        pull_layer(store, registry, desc, diff_id, &opts.writer, progress)?;
        return Ok(Some(digest));
    }
    let said = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_DIFF_ID));
    if let Some(d) = said.filter(|d| d.as_str() != diff_id) {
        return Err(Error::BadImage {
            path: store.root().to_path_buf(),
            why: format!(
                "{name}: layer {digest} says it is diff_id {d}, the config says {diff_id}"
            ),
        });
    }
    let hex = sha256_hex(diff_id)?.to_string();
    if store.layer_path(diff_id)?.exists() || lazy::layer_progress(store, diff_id).is_some() {
        progress.finish(&digest, "already present");
        return Ok(None);
    }
    let _lock = store.lock_layer(diff_id)?;
    progress.start(&digest, desc.size());
    let head = lazy::registry_head(registry, desc, name, retry)?;
    let origin = Origin {
        image: Some(image.name()),
        digest: Some(digest.clone()),
        diff_id: Some(diff_id.to_string()),
        url: None,
        size: desc.size(),
        insecure: opts.registry.insecure.clone(),
    };
    let dir = lazy::create_layer(store, &hex, &origin, &head)?;
    lazy::check_new_layer(&dir)?;
    progress.finish(
        &digest,
        &format!(
            "lazy: {} of {} bytes local",
            head.header.len() + head.tail.len(),
            desc.size()
        ),
    );
    Ok(None)
}
