//! `pull`: resolve the source, store its manifest and config, then fetch and convert the layers
//! with a small pool of worker threads, and record the image's name last, so that a failed pull
//! records nothing.
use super::fetch::resolve;
use super::layer::pull_layer;
use super::names::record_names;
use super::single_file::write_single_file;
use super::workers::for_each_layer;
use super::{record_name, Error, Result};
use crate::bfc::WriterOptions;
use crate::oci::{self, PlatformSpec, Source};
use crate::store::{refs::Refs, Store};
use oci_spec::image::Descriptor;
use std::path::PathBuf;

/// What a pull reports as it goes (implemented by `cli/progress.rs`).
pub trait Progress: Sync {
    /// A layer starts downloading (`size` bytes compressed).
    fn start(&self, _layer: &str, _size: u64) {}
    /// `done` bytes of the layer are in.
    fn bytes(&self, _layer: &str, _done: u64) {}
    /// The layer is finished; `how` says what happened ("pulled", "already present", ...).
    fn finish(&self, _layer: &str, _how: &str) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// How to pull.
#[derive(Clone)]
pub struct PullOptions {
    pub platform: PlatformSpec,
    pub registry: oci::registry::Options,
    /// Compression and encryption of the layer BFC files.
    pub writer: WriterOptions,
    /// Write the whole image into this one BFC file instead of the store's layers.
    pub output: Option<PathBuf>,
    /// Layers fetched and converted at once (clamped to 1..=4).
    pub jobs: usize,
    /// `platform` was asked for (`--platform`): an image of another platform is an error. When
    /// it is only this host's default, a mismatch is a warning (the files can still be read).
    pub platform_explicit: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: PlatformSpec::host(),
            registry: Default::default(),
            writer: WriterOptions::default(),
            output: None,
            jobs: 3,
            platform_explicit: false,
        }
    }
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Name recorded in the store (or the source, with `-o`).
    pub name: String,
    pub manifest_digest: String,
    /// Layers fetched and converted by this pull (0 when all were present).
    pub layers_fetched: usize,
    pub layers_total: usize,
    /// `pull --lazy`: the layers pulled in full because they are not BFC layers.
    pub fell_back: Vec<String>,
}

/// How a pull names what it recorded: `name:tag`, or `name@digest` without a tag.
pub(super) fn pulled_name(name: &str, tag: Option<&str>, manifest_digest: &str) -> String {
    match tag {
        Some(t) => format!("{name}:{t}"),
        None => format!("{name}@{manifest_digest}"),
    }
}

/// Pulls `source` into `store` (or into one file with `opts.output`).
pub fn pull(
    store: &Store,
    source: &Source,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let _shared = store.lock_shared()?;
    let (fetcher, resolved, given_names) = resolve(store, source, opts)?;
    check_platform(source, &resolved.config, opts)?;
    pull_resolved(
        store,
        source,
        fetcher.as_ref(),
        &resolved,
        &given_names,
        opts,
        progress,
    )
}

/// The rest of [`pull`] once `source` is resolved (the caller holds the store's shared lock):
/// store manifest and config, fetch and convert the layers, record the name (names.rs: from
/// `given_names`, what the source calls the image, else the source's own name).
pub(super) fn pull_resolved(
    store: &Store,
    source: &Source,
    fetcher: &dyn oci::Fetch,
    resolved: &oci::Resolved,
    given_names: &[String],
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let manifest_digest = resolved.manifest_digest.to_string();
    if let Some(out) = &opts.output {
        write_single_file(store, fetcher, resolved, opts, out, progress)?;
        return Ok(Pulled {
            name: source.display_name(),
            manifest_digest,
            layers_fetched: resolved.layers().len(),
            layers_total: resolved.layers().len(),
            fell_back: Vec::new(),
        });
    }
    store.put_blob(&manifest_digest, &resolved.manifest_bytes)?;
    store.put_blob(
        resolved.manifest.config().digest().as_ref(),
        &resolved.config_bytes,
    )?;

    let layers: Vec<(&Descriptor, &String)> =
        resolved.layers().iter().zip(resolved.diff_ids()).collect();
    let fetched = for_each_layer(layers.len(), opts.jobs, store.root(), |i| {
        let (desc, diff_id) = layers[i];
        pull_layer(store, fetcher, desc, diff_id, &opts.writer, progress)
    })?
    .into_iter()
    .filter(|&f| f)
    .count();
    remember_blobs(store, source, &layers)?;
    let names = record_names(source, given_names);
    let mut refs = Refs::load(store)?;
    for (name, tag) in &names {
        refs.set(name, tag.as_deref(), &manifest_digest);
    }
    refs.save()?;
    let (name, tag) = names
        .into_iter()
        .next()
        .unwrap_or_else(|| record_name(source));
    Ok(Pulled {
        name: pulled_name(&name, tag.as_deref(), &manifest_digest),
        manifest_digest,
        layers_fetched: fetched,
        layers_total: layers.len(),
        fell_back: Vec::new(),
    })
}

/// An image whose config names another platform than the one asked for: an error when
/// `--platform` was given, a warning when it is the host's default (what an index offers was
/// already chosen by platform; this catches single-platform images).
fn check_platform(
    source: &Source,
    config: &oci_spec::image::ImageConfiguration,
    opts: &PullOptions,
) -> Result<()> {
    let want = &opts.platform;
    let arch_ok = *config.architecture() == want.arch;
    let os_ok = *config.os() == want.os;
    let variant_ok = match (&want.variant, config.variant()) {
        (Some(w), Some(v)) => w == v,
        _ => true,
    };
    if arch_ok && os_ok && variant_ok {
        return Ok(());
    }
    let has = match config.variant() {
        Some(v) => format!("{}/{}/{v}", config.os(), config.architecture()),
        None => format!("{}/{}", config.os(), config.architecture()),
    };
    if opts.platform_explicit {
        return Err(Error::WrongPlatform {
            image: source.display_name(),
            has,
            wanted: want.to_string(),
        });
    }
    log::warn!(
        "image {} is for {has}, not this host's {want}: its programs may not run here",
        source.display_name()
    );
    Ok(())
}

/// Records the pulled layer blobs in the blob-info cache, with the repository they came from,
/// so that a push to the same registry can mount them instead of uploading.
fn remember_blobs(store: &Store, source: &Source, layers: &[(&Descriptor, &String)]) -> Result<()> {
    use crate::store::blob_info::{BlobInfo, BlobInfos};
    let location = match source {
        Source::Registry(r) => Some(format!("{}/{}", r.registry(), r.repository())),
        _ => None,
    };
    let mut known = BlobInfos::load(store)?;
    for (desc, diff_id) in layers {
        let mt = desc.media_type().to_string();
        let Some(comp) = super::layer_blob::TarCompression::of_media_type(&mt) else {
            continue;
        };
        known.record(
            desc.digest().as_ref(),
            BlobInfo {
                diff_id: diff_id.to_string(),
                media_type: comp.media_type().to_string(),
                size: desc.size(),
                annotations: Default::default(),
                locations: Vec::new(),
                seen: 0,
            },
            location.as_deref(),
        );
    }
    known.save()?;
    Ok(())
}
