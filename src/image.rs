//! Joins the pipeline for one image: resolve (registry or local source) → fetch and verify blobs
//! into the store → convert each layer to its BFC file → record the reference. Also the
//! queries behind `images`, `inspect`, `rm` and `prune`, and the single-file image (`-o`).
//! The CLI and the tests call this; it is the only module that knows both `oci` and `store`.
use crate::atomic_file::AtomicFile;
use crate::bfc::{self, Writer, WriterOptions};
use crate::convert::{self, sanitize::Limits};
use crate::oci::{self, registry::Registry, Fetch, PlatformSpec, Resolved, Source};
use crate::store::{self, refs::RefEntry, refs::Refs, BlobWriter, Store};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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
    #[error("no image {query:?} in the store at {}; `bfcfs images` lists what is there", .root.display())]
    NotFound { query: String, root: PathBuf },
    #[error("{query:?} matches several images ({names}); name one with its tag or full digest")]
    Ambiguous { query: String, names: String },
    #[error("{}: {why}", .path.display())]
    BadImage { path: PathBuf, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

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
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: PlatformSpec::host(),
            registry: Default::default(),
            writer: WriterOptions::default(),
            output: None,
            jobs: 3,
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
}

impl oci::BlobSink for BlobWriter {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write(bytes).map_err(std::io::Error::other)
    }
    fn offset(&self) -> u64 {
        self.len()
    }
    fn restart(&mut self) -> std::io::Result<()> {
        BlobWriter::restart(self)
    }
}

/// Name and tag under which a source is recorded.
fn record_name(source: &Source) -> (String, Option<String>) {
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

/// Resolves `source` for `opts.platform`: what can hand out its blobs, and the checked manifest
/// and config. A registry's manifest and config come from the store when it has them.
fn resolve(
    store: &Store,
    source: &Source,
    opts: &PullOptions,
) -> Result<(Box<dyn Fetch>, Resolved)> {
    let local = |l: oci::source::Local| -> (Box<dyn Fetch>, Resolved) {
        let r = l.resolved().clone();
        (Box::new(l), r)
    };
    Ok(match source {
        Source::Registry(image) => {
            let reg = Registry::connect(image, &opts.registry)?;
            let cached =
                |d: &oci_spec::image::Digest| store.read_blob(d.as_ref(), oci::MAX_DOCUMENT).ok();
            let resolved = reg.resolve(image, &opts.platform, &cached)?;
            (Box::new(reg), resolved)
        }
        Source::OciDir { path, tag } => local(oci::source::Local::oci_dir(
            path,
            tag.as_deref(),
            &opts.platform,
        )?),
        Source::OciArchive { path, tag } => local(oci::source::Local::oci_archive(
            path,
            tag.as_deref(),
            &opts.platform,
            &store.tmp_dir(),
        )?),
        Source::DockerArchive { path } => {
            local(oci::source::Local::docker_archive(path, &store.tmp_dir())?)
        }
    })
}

/// Pulls `source` into `store` (or into one file with `opts.output`).
pub fn pull(
    store: &Store,
    source: &Source,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let _shared = store.lock_shared()?;
    let (fetcher, resolved) = resolve(store, source, opts)?;
    let fetcher = fetcher.as_ref();
    let manifest_digest = resolved.manifest_digest.to_string();
    if let Some(out) = &opts.output {
        write_single_file(store, fetcher, &resolved, opts, out, progress)?;
        return Ok(Pulled {
            name: source.display_name(),
            manifest_digest,
            layers_fetched: resolved.layers().len(),
            layers_total: resolved.layers().len(),
        });
    }
    store.put_blob(&manifest_digest, &resolved.manifest_bytes)?;
    store.put_blob(
        resolved.manifest.config().digest().as_ref(),
        &resolved.config_bytes,
    )?;

    let layers: Vec<(&Descriptor, &String)> =
        resolved.layers().iter().zip(resolved.diff_ids()).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let fetched = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let jobs = opts.jobs.clamp(1, 4).min(layers.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= layers.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let (desc, diff_id) = layers[i];
                match pull_layer(store, fetcher, desc, diff_id, &opts.writer, progress) {
                    Ok(true) => {
                        fetched.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let (name, tag) = record_name(source);
    let mut refs = Refs::load(store)?;
    refs.set(&name, tag.as_deref(), &manifest_digest);
    refs.save()?;
    Ok(Pulled {
        name: match &tag {
            Some(t) => format!("{name}:{t}"),
            None => format!("{name}@{manifest_digest}"),
        },
        manifest_digest,
        layers_fetched: fetched.into_inner(),
        layers_total: layers.len(),
    })
}

/// Fetches and converts one layer unless its BFC file exists. Returns whether it did work.
fn pull_layer(
    store: &Store,
    fetcher: &dyn Fetch,
    desc: &Descriptor,
    diff_id: &str,
    wopts: &WriterOptions,
    progress: &dyn Progress,
) -> Result<bool> {
    let digest = desc.digest().to_string();
    let dest = store.layer_path(diff_id)?;
    if dest.exists() {
        progress.finish(&digest, "already present");
        return Ok(false);
    }
    let _lock = store.lock_layer(diff_id)?;
    if dest.exists() {
        progress.finish(&digest, "pulled by another process");
        return Ok(false);
    }
    let blob = fetch_blob(store, fetcher, desc, progress)?;
    let f = std::fs::File::open(&blob).map_err(|source| store::Error::Io {
        path: blob.clone(),
        source,
    })?;
    let io = |source| bfc::Error::Io {
        file: dest.clone(),
        source,
    };
    let mut out = AtomicFile::beside(&dest).map_err(io)?.with_mode(0o644);
    {
        let mut w = Writer::new(
            BufWriter::with_capacity(1 << 20, out.file()),
            wopts.clone(),
            &dest,
        )?;
        let stats = convert::convert_layer(f, &mut w, b"", &digest, Limits::for_blob(desc.size()))?;
        convert::check_diff_id(&digest, &stats, diff_id)?;
        let mut bw = w.finish()?;
        bw.flush().map_err(io)?;
    }
    out.commit(&dest).map_err(io)?;
    // The BFC file replaces the blob; a crash before this line leaves garbage for prune.
    let _ = std::fs::remove_file(&blob);
    progress.finish(&digest, "pulled");
    Ok(true)
}

/// Gets blob `desc` into the store (verified) and returns its path.
fn fetch_blob(
    store: &Store,
    fetcher: &dyn Fetch,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let digest = desc.digest().to_string();
    let path = store.blob_path(&digest)?;
    if path.exists() {
        return Ok(path);
    }
    progress.start(&digest, desc.size());
    let mut w = BlobWriter::new(store)?;
    fetcher.fetch_blob(desc, &mut w, &|done| progress.bytes(&digest, done))?;
    Ok(w.commit(&digest, Some(desc.size()))?)
}

/// Name of the extension blob that describes a single-file image.
pub const SINGLE_FILE_INDEX: &str = "bfcfs.image.v1";

/// Writes the whole image into one BFC file: layer `i` under `layers/<diff_id hex>/`, the
/// manifest and config as image blobs (see docs/FORMAT.md, "single-file image").
fn write_single_file(
    store: &Store,
    fetcher: &dyn Fetch,
    resolved: &Resolved,
    opts: &PullOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let io = |source| bfc::Error::Io {
        file: out.to_path_buf(),
        source,
    };
    let mut file = AtomicFile::beside(out).map_err(io)?.with_mode(0o644);
    let mut layers_json = Vec::new();
    {
        let mut w = Writer::new(
            BufWriter::with_capacity(1 << 20, file.file()),
            opts.writer.clone(),
            out,
        )?;
        let dir_meta = bfc::Meta {
            mode: 0o755,
            ..Default::default()
        };
        w.add_dir(b"layers", &dir_meta)?;
        for (desc, diff_id) in resolved.layers().iter().zip(resolved.diff_ids()) {
            let digest = desc.digest().to_string();
            let hex = store::sha256_hex(diff_id)?.to_string();
            let prefix = format!("layers/{hex}");
            w.add_dir(prefix.as_bytes(), &dir_meta)?;
            let had = store.blob_path(&digest)?.exists();
            let blob = fetch_blob(store, fetcher, desc, progress)?;
            let f = std::fs::File::open(&blob).map_err(|source| store::Error::Io {
                path: blob.clone(),
                source,
            })?;
            let stats = convert::convert_layer(
                f,
                &mut w,
                prefix.as_bytes(),
                &digest,
                Limits::for_blob(desc.size()),
            )?;
            convert::check_diff_id(&digest, &stats, diff_id)?;
            if !had {
                let _ = std::fs::remove_file(&blob);
            }
            progress.finish(&digest, "converted");
            layers_json.push(serde_json::json!({
                "digest": digest, "diff_id": diff_id, "size": desc.size(),
                "media_type": desc.media_type().to_string(), "prefix": prefix,
            }));
        }
        w.add_image_blob("manifest.json", &resolved.manifest_bytes)?;
        w.add_image_blob("config.json", &resolved.config_bytes)?;
        let index = serde_json::json!({
            "version": 1, "manifest_digest": resolved.manifest_digest.to_string(), "layers": layers_json,
        });
        w.add_image_blob(SINGLE_FILE_INDEX, index.to_string().as_bytes())?;
        let mut bw = w.finish()?;
        bw.flush().map_err(io)?;
    }
    file.commit(out).map_err(io)?;
    Ok(())
}

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
    let layers = layer_infos(&manifest, &config, |diff_id| store.layer_path(diff_id).ok());
    Ok(ImageInfo {
        repository: entry.name.clone(),
        tag: entry.tag.clone(),
        digest: entry.digest.clone(),
        size: layers.iter().filter_map(|l| l.bfc_size).sum(),
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
fn matches(refs: &Refs, query: &str) -> Vec<RefEntry> {
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
        let (name, tag) = record_name(&source);
        let digest = match &source {
            Source::Registry(r) => r.digest().map(|d| d.to_string()),
            _ => None,
        };
        return entries
            .iter()
            .filter(|e| {
                e.name == name
                    && match &digest {
                        Some(d) => &e.digest == d,
                        None => e.tag == tag,
                    }
            })
            .cloned()
            .collect();
    }
    Vec::new()
}

fn find_one(store: &Store, refs: &Refs, query: &str) -> Result<RefEntry> {
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
    let config_digest = crate::digest::sha256_digest(config_bytes);
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
        let prefix = format!("layers/{}", l.diff_id.trim_start_matches("sha256:"));
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
        digest: crate::digest::sha256_digest(manifest_bytes),
        size: c.file_size(),
        created: config.created().clone(),
        layers: std::mem::take(&mut layers),
        manifest: Some(manifest),
        config: Some(config),
    })
}

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
            let found = matches(&refs, q);
            if found.is_empty() {
                return Err(Error::NotFound {
                    query: q.clone(),
                    root: store.root().to_path_buf(),
                });
            }
            doomed.extend(found);
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

/// An image's layers opened for mounting (top layer first) and what describes it.
#[derive(Debug)]
pub struct Opened {
    pub layers: Vec<crate::overlay::Layer>,
    pub spec: crate::overlay::WhiteoutSpec,
    /// The image config (none for a plain `.bfc` tree).
    pub config: Option<ImageConfiguration>,
    /// What names the image for good: the manifest digest, or the `.bfc` file's absolute path.
    pub id: String,
}

/// Opens the layer files of image `query` in the store, each with a decoded-chunk cache of
/// `cache_bytes`.
pub fn open_layers(store: &Store, query: &str, cache_bytes: usize) -> Result<Opened> {
    let info = inspect(Some(store), query)?;
    let mut layers = Vec::with_capacity(info.layers.len());
    for l in info.layers.iter().rev() {
        let path = l.bfc.clone().ok_or_else(|| Error::BadImage {
            path: store.root().to_path_buf(),
            why: format!(
                "layer {} of {} is not in the store; pull the image again",
                l.diff_id, info.repository
            ),
        })?;
        let mut c = bfc::Container::open(&path)?;
        c.set_cache_bytes(cache_bytes);
        layers.push(crate::overlay::Layer::new(std::sync::Arc::new(c)));
    }
    Ok(Opened {
        layers,
        spec: crate::overlay::WhiteoutSpec::Oci,
        config: info.config,
        id: info.digest,
    })
}

/// The layers of an open `.bfc` file: a single-file image (`pull -o`: one prefix per layer, OCI
/// whiteouts) or else one plain tree (typed whiteouts only).
pub fn file_layers(c: std::sync::Arc<bfc::Container>, path: &Path) -> Result<Opened> {
    use crate::overlay::{Layer, WhiteoutSpec};
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
            root: format!("layers/{}", l.diff_id.trim_start_matches("sha256:")).into_bytes(),
        })
        .collect();
    Ok(Opened {
        layers,
        spec: WhiteoutSpec::Oci,
        config: info.config,
        id,
    })
}
