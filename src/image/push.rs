//! `push`: an image of the store to a registry, an OCI layout (`oci:`, `oci-archive:`) or a
//! docker archive, as an ordinary OCI image (`--format oci`) or with its layers as BFC files
//! (`--format bfc`, docs/FORMAT.md "Pushing BFC layers").
//!
//! Per layer, cheapest first: a blob of the same layer (diff_id) and media type that the
//! destination already has (HEAD), one that another repository of the same registry has
//! (cross-repository mount), else the blob is made (layer_blob.rs) and uploaded. The config
//! goes up next and the manifest last, so a tag never names missing blobs. What was learnt about
//! blobs is recorded in the store's blob-info cache for the next push.
use super::layer_blob::{bfc_blob, tar_blob, TarCompression};
use super::layout::Layout;
use super::pull::Progress;
use super::query::{inspect, ImageInfo};
use super::workers::for_each_layer;
use super::{Error, Result};
use crate::digest::sha256_digest;
use crate::oci::registry::{push::Mount, Options, Registry};
use crate::oci::{self, decode_document, media, Document, ImageRef, Source};
use crate::store::blob_info::{BlobInfo, BlobInfos};
use crate::store::{self, Store};
use oci_spec::image::Digest;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Media type of a layer pushed as its BFC file.
pub const BFC_LAYER: &str = "application/vnd.bfcfs.layer.v1.bfc";
/// Annotation: the layer's original diff_id (sha256 of its uncompressed tar).
pub const ANN_DIFF_ID: &str = "io.bfcfs.bfc.diff-id";
/// Annotation: where the index starts (decimal byte offset).
pub const ANN_INDEX_OFFSET: &str = "io.bfcfs.bfc.index.offset";
/// Annotation: bytes from the index start to the end of the file (decimal).
pub const ANN_INDEX_LENGTH: &str = "io.bfcfs.bfc.index.length";
/// Annotation: `sha256:<hex>` of those bytes.
pub const ANN_INDEX_SHA256: &str = "io.bfcfs.bfc.index.sha256";
/// `platform.os.features` entry marking the BFC manifest in an index.
pub const OS_FEATURE: &str = "bfcfs.bfc.v1";
/// Annotation on the BFC manifest (and its index entry): `io.bfcfs.format: bfc`.
pub const ANN_FORMAT: &str = "io.bfcfs.format";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Where a push goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `REGISTRY/REPO:TAG` (`docker://` optional).
    Registry(ImageRef),
    /// `oci:DIR[:TAG]`.
    OciDir { path: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE[:REF]`.
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
}

impl FromStr for Destination {
    type Err = oci::Error;
    fn from_str(s: &str) -> std::result::Result<Self, oci::Error> {
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) => (p, Some(r.to_string())),
                None => (rest, None),
            };
            if path.is_empty() || reference.as_deref() == Some("") {
                return Err(oci::Error::Source {
                    input: s.to_string(),
                    why: "docker-archive: wants FILE[:REF]".into(),
                });
            }
            return Ok(Destination::DockerArchive {
                path: path.into(),
                reference,
            });
        }
        Ok(match s.parse::<Source>()? {
            Source::Registry(r) => {
                if r.digest().is_some() {
                    return Err(oci::Error::Source {
                        input: s.to_string(),
                        why: "push to a tag, not a digest".into(),
                    });
                }
                Destination::Registry(r)
            }
            Source::OciDir { path, tag } => Destination::OciDir { path, tag },
            Source::OciArchive { path, tag } => Destination::OciArchive { path, tag },
            Source::DockerArchive { path } => Destination::DockerArchive {
                path,
                reference: None,
            },
        })
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = |f: &mut std::fmt::Formatter<'_>, t: &str, p: &Path, tag: &Option<String>| {
            write!(f, "{t}:{}", p.display())?;
            match tag {
                Some(tag) => write!(f, ":{tag}"),
                None => Ok(()),
            }
        };
        match self {
            Destination::Registry(r) => write!(f, "{r}"),
            Destination::OciDir { path, tag } => with(f, "oci", path, tag),
            Destination::OciArchive { path, tag } => with(f, "oci-archive", path, tag),
            Destination::DockerArchive { path, reference } => {
                with(f, "docker-archive", path, reference)
            }
        }
    }
}

/// The layer format of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    /// Ordinary OCI image: tar layers.
    Oci,
    /// Layers as BFC files, plus the ordinary image, under one index at the tag.
    Bfc,
}

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    pub format: PushFormat,
    /// Compression of tar layers (registry and OCI layouts; docker archives hold plain tars).
    pub compression: TarCompression,
    pub registry: Options,
    /// Layers made and uploaded at once (clamped to 1..=4).
    pub jobs: usize,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            format: PushFormat::Oci,
            compression: TarCompression::Gzip,
            registry: Options::default(),
            jobs: 2,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// The destination as given.
    pub destination: String,
    /// What the tag now names: the manifest (`--format oci`) or the index (`--format bfc`).
    pub digest: String,
    /// The ordinary image's manifest and config.
    pub manifest_digest: String,
    pub config_digest: String,
    /// The BFC manifest (`--format bfc`).
    pub bfc_manifest_digest: Option<String>,
    /// True when the config had to change (layers regenerated without a tar-split side file).
    pub config_changed: bool,
    /// Layer blobs uploaded, found in place (HEAD), mounted from another repository.
    pub uploaded: usize,
    pub present: usize,
    pub mounted: usize,
    /// Layers whose tar was rebuilt byte for byte from its side file.
    pub reproduced: usize,
}

/// One layer's blob as it ends up in the manifest.
struct LayerDesc {
    media_type: String,
    digest: String,
    size: u64,
    annotations: BTreeMap<String, String>,
    /// diff_id of the tar inside (for tar layers; the original for BFC layers).
    diff_id: String,
}

impl LayerDesc {
    fn json(&self) -> Value {
        let mut v = json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size});
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        v
    }
}

/// How a blob got to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Uploaded,
    Present,
    Mounted,
}

/// Where blobs and manifests go: a registry repository or a layout being written.
pub(super) trait Target: Sync {
    /// `registry/repository`, recorded in the blob-info cache (registries only).
    fn location(&self) -> Option<String> {
        None
    }
    fn has_blob(&self, digest: &str) -> Result<bool>;
    /// Mounts `digest` from `location` (`registry/repository`) if that is another repository of
    /// this registry; true when it worked.
    fn mount_from(&self, _digest: &str, _location: &str) -> Result<bool> {
        Ok(false)
    }
    fn put_blob(&self, digest: &str, path: &Path, size: u64, progress: &dyn Fn(u64)) -> Result<()>;
    fn put_bytes(&self, digest: &str, bytes: &[u8]) -> Result<()>;
    /// Stores a manifest or index; `tag` also names it.
    fn put_manifest(
        &self,
        digest: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()>;
    /// The manifest or index a tag names now, if any.
    fn manifest_at(&self, _tag: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        Ok(None)
    }
    /// Whether layers must be plain tars (docker archives).
    fn plain_tars(&self) -> bool {
        false
    }
}

fn parse_digest(d: &str) -> Result<Digest> {
    Digest::from_str(d).map_err(|e| Error::BadReference {
        reference: d.to_string(),
        why: format!("{e}"),
    })
}

struct RegistryTarget {
    reg: Registry,
    /// `registry` as written (e.g. `127.0.0.1:5000`), for locations.
    registry: String,
}

impl Target for RegistryTarget {
    fn location(&self) -> Option<String> {
        Some(format!("{}/{}", self.registry, self.reg.repository()))
    }
    fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.reg.blob_exists(&parse_digest(digest)?)?.is_some())
    }
    fn mount_from(&self, digest: &str, location: &str) -> Result<bool> {
        let Some(repo) = location
            .strip_prefix(&self.registry)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Ok(false);
        };
        if repo == self.reg.repository() || repo.is_empty() {
            return Ok(false);
        }
        Ok(self.reg.mount_blob(&parse_digest(digest)?, repo)? == Mount::Mounted)
    }
    fn put_blob(&self, digest: &str, path: &Path, size: u64, progress: &dyn Fn(u64)) -> Result<()> {
        let f = std::fs::File::open(path).map_err(store::io_err(path))?;
        Ok(self
            .reg
            .upload_blob(&parse_digest(digest)?, &f, size, progress)?)
    }
    fn put_bytes(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        self.reg.upload_bytes(&parse_digest(digest)?, bytes)?;
        Ok(())
    }
    fn put_manifest(
        &self,
        digest: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        Ok(self
            .reg
            .put_manifest(tag.unwrap_or(digest), media_type, bytes)?)
    }
    fn manifest_at(&self, tag: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        Ok(self.reg.manifest_at(tag)?)
    }
}

/// Pushes image `query` of `store` to `dest`.
pub fn push(
    store: &Store,
    query: &str,
    dest: &Destination,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Pushed> {
    let _shared = store.lock_shared()?;
    let info = inspect(Some(store), query)?;
    let mut pushed = match dest {
        Destination::Registry(r) => {
            let target = RegistryTarget {
                reg: Registry::connect_push(r, &opts.registry)?,
                registry: r.registry().to_string(),
            };
            push_image(store, &info, &target, r.tag(), opts, progress)?
        }
        _ => {
            let layout = Layout::open(store, dest)?;
            let tag = layout.default_tag(&info);
            let p = push_image(store, &info, &layout, tag.as_deref(), opts, progress)?;
            layout.finish()?;
            p
        }
    };
    pushed.destination = dest.to_string();
    Ok(pushed)
}

/// Pushes one image to `target`, tagging it `tag`.
pub(super) fn push_image(
    store: &Store,
    info: &ImageInfo,
    target: &dyn Target,
    tag: Option<&str>,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Pushed> {
    let manifest = info.manifest.as_ref().ok_or_else(|| Error::BadImage {
        path: store.root().to_path_buf(),
        why: format!("{} has no manifest", info.repository),
    })?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = store.read_blob(&config_digest, oci::MAX_DOCUMENT)?;
    let comp = if target.plain_tars() {
        TarCompression::None
    } else {
        opts.compression
    };
    if opts.format == PushFormat::Bfc && target.plain_tars() {
        return Err(Error::BadReference {
            reference: "docker-archive".into(),
            why: "a docker archive holds tar layers only; use --format oci".into(),
        });
    }
    let mut pushed = Pushed::default();

    // The ordinary image: kept if the tag already names it (with --format bfc), else pushed.
    let kept = match (opts.format, tag) {
        (PushFormat::Bfc, Some(t)) => ordinary_at(target, t, &config_digest)?,
        _ => None,
    };
    let ordinary = match kept {
        Some(desc) => {
            log::info!("the tag already holds the ordinary image {}", desc.digest);
            pushed.manifest_digest = desc.digest.clone();
            pushed.config_digest = config_digest.clone();
            desc
        }
        None => {
            let layers = push_layers(store, info, target, Kind::Tar(comp), opts, progress)?;
            count(&mut pushed, &layers);
            let diff_ids: Vec<String> = layers.iter().map(|l| l.desc.diff_id.clone()).collect();
            let (cfg_bytes, cfg_digest) = if diff_ids.as_slice() == info_diff_ids(info) {
                (config_bytes.clone(), config_digest.clone())
            } else {
                pushed.config_changed = true;
                let b = with_diff_ids(&config_bytes, &diff_ids, store)?;
                let d = sha256_digest(&b);
                (b, d)
            };
            target.put_bytes(&cfg_digest, &cfg_bytes)?;
            let m = manifest_json(
                &cfg_digest,
                cfg_bytes.len(),
                layers.iter().map(|l| l.desc.json()).collect(),
                None,
            );
            let digest = sha256_digest(&m);
            let ordinary_tag = if opts.format == PushFormat::Oci {
                tag
            } else {
                None
            };
            target.put_manifest(&digest, ordinary_tag, media::OCI_MANIFEST, &m)?;
            pushed.manifest_digest = digest.clone();
            pushed.config_digest = cfg_digest;
            ManifestDesc {
                media_type: media::OCI_MANIFEST.to_string(),
                digest,
                size: m.len() as u64,
            }
        }
    };
    if opts.format == PushFormat::Oci {
        pushed.digest = ordinary.digest;
        return Ok(pushed);
    }

    // The BFC image: same config, layers as BFC files.
    let layers = push_layers(store, info, target, Kind::Bfc, opts, progress)?;
    count(&mut pushed, &layers);
    target.put_bytes(&config_digest, &config_bytes)?;
    let mut ann = BTreeMap::new();
    ann.insert(ANN_FORMAT.to_string(), "bfc".to_string());
    let m = manifest_json(
        &config_digest,
        config_bytes.len(),
        layers.iter().map(|l| l.desc.json()).collect(),
        Some(&ann),
    );
    let bfc_digest = sha256_digest(&m);
    target.put_manifest(&bfc_digest, None, media::OCI_MANIFEST, &m)?;
    pushed.bfc_manifest_digest = Some(bfc_digest.clone());
    let platform = platform_of(&config_bytes);
    let mut bfc_platform = platform.clone();
    bfc_platform["os.features"] = json!([OS_FEATURE]);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [
            {"mediaType": ordinary.media_type, "digest": ordinary.digest, "size": ordinary.size,
             "platform": platform},
            {"mediaType": media::OCI_MANIFEST, "digest": bfc_digest, "size": m.len(),
             "platform": bfc_platform, "annotations": {ANN_FORMAT: "bfc"}},
        ],
    }))
    .map_err(|e| json_err(store, e))?;
    let index_digest = sha256_digest(&index);
    target.put_manifest(&index_digest, tag, media::OCI_INDEX, &index)?;
    pushed.digest = index_digest;
    Ok(pushed)
}

fn info_diff_ids(info: &ImageInfo) -> Vec<String> {
    info.layers.iter().map(|l| l.diff_id.clone()).collect()
}

fn count(p: &mut Pushed, layers: &[Done]) {
    for d in layers {
        match d.how {
            How::Uploaded => p.uploaded += 1,
            How::Present => p.present += 1,
            How::Mounted => p.mounted += 1,
        }
        if d.reproduced {
            p.reproduced += 1;
        }
    }
}

fn json_err(store: &Store, e: serde_json::Error) -> Error {
    Error::BadImage {
        path: store.root().to_path_buf(),
        why: format!("serializing a manifest: {e}"),
    }
}

/// A manifest or index as an index entry names it.
struct ManifestDesc {
    media_type: String,
    digest: String,
    size: u64,
}

/// The ordinary image with config `config_digest` at `tag`, if the tag names it (directly, or
/// as the first non-BFC entry of an index).
fn ordinary_at(
    target: &dyn Target,
    tag: &str,
    config_digest: &str,
) -> Result<Option<ManifestDesc>> {
    let Some((bytes, ct)) = target.manifest_at(tag)? else {
        return Ok(None);
    };
    let has_config = |bytes: &[u8], ct: Option<&str>| -> bool {
        matches!(decode_document(tag, ct, bytes),
            Ok(Document::Manifest(m)) if m.config().digest().as_ref() == config_digest
                && m.layers().iter().all(|l| l.media_type().to_string() != BFC_LAYER))
    };
    match decode_document(tag, ct.as_deref(), &bytes) {
        Ok(Document::Manifest(m)) => Ok(has_config(&bytes, ct.as_deref()).then(|| ManifestDesc {
            media_type: m
                .media_type()
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
        })),
        Ok(Document::Index(ix)) => {
            for d in ix.manifests() {
                let marked = d
                    .platform()
                    .as_ref()
                    .and_then(|p| p.os_features().as_ref())
                    .is_some_and(|f| f.iter().any(|x| x == OS_FEATURE));
                if marked {
                    continue;
                }
                let Some((b, ct)) = target.manifest_at(d.digest().as_ref())? else {
                    continue;
                };
                if sha256_digest(&b) == d.digest().as_ref() && has_config(&b, ct.as_deref()) {
                    return Ok(Some(ManifestDesc {
                        media_type: d.media_type().to_string(),
                        digest: d.digest().to_string(),
                        size: d.size(),
                    }));
                }
            }
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

/// `{"architecture", "os", "variant"?}` from the config.
fn platform_of(config: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(config).unwrap_or(Value::Null);
    let mut p = json!({
        "architecture": v.get("architecture").and_then(Value::as_str).unwrap_or("amd64"),
        "os": v.get("os").and_then(Value::as_str).unwrap_or("linux"),
    });
    if let Some(var) = v.get("variant").and_then(Value::as_str) {
        p["variant"] = json!(var);
    }
    p
}

fn manifest_json(
    config_digest: &str,
    config_size: usize,
    layers: Vec<Value>,
    annotations: Option<&BTreeMap<String, String>>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    });
    if let Some(a) = annotations {
        m["annotations"] = json!(a);
    }
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The config with `rootfs.diff_ids` replaced (layers that had to be regenerated).
fn with_diff_ids(config: &[u8], diff_ids: &[String], store: &Store) -> Result<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(config).map_err(|e| json_err(store, e))?;
    v["rootfs"]["diff_ids"] = json!(diff_ids);
    serde_json::to_vec(&v).map_err(|e| json_err(store, e))
}

#[derive(Clone, Copy)]
enum Kind {
    Tar(TarCompression),
    Bfc,
}

impl Kind {
    fn media_type(self) -> &'static str {
        match self {
            Kind::Tar(c) => c.media_type(),
            Kind::Bfc => BFC_LAYER,
        }
    }
}

/// A layer as pushed: its descriptor, whether its tar was rebuilt byte for byte, and how the
/// blob got there.
struct Done {
    desc: LayerDesc,
    reproduced: bool,
    how: How,
}

/// Gets every layer to `target` as `kind`, a small pool of threads at once; returns them in
/// order, and records what was learnt in the blob-info cache.
fn push_layers(
    store: &Store,
    info: &ImageInfo,
    target: &dyn Target,
    kind: Kind,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Vec<Done>> {
    let known = BlobInfos::load(store)?;
    let candidates: Vec<Vec<(String, BlobInfo)>> = info
        .layers
        .iter()
        .map(|l| {
            let mut c = known.candidates(&l.diff_id, kind.media_type());
            // The blob the image was pulled with, if it is of the kind asked for.
            if let Kind::Tar(comp) = kind {
                if TarCompression::of_media_type(&l.media_type) == Some(comp)
                    && !c.iter().any(|(d, _)| *d == l.digest)
                {
                    c.push((
                        l.digest.clone(),
                        BlobInfo {
                            diff_id: l.diff_id.clone(),
                            media_type: comp.media_type().to_string(),
                            size: l.size,
                            annotations: BTreeMap::new(),
                            locations: Vec::new(),
                            seen: 0,
                        },
                    ));
                }
            }
            c
        })
        .collect();
    drop(known);

    let out: Vec<Done> = for_each_layer(info.layers.len(), opts.jobs, store.root(), |i| {
        push_layer(store, info, i, &candidates[i], target, kind, progress)
    })?;
    let mut known = BlobInfos::load(store)?;
    let location = target.location();
    for d in &out {
        let l = &d.desc;
        known.record(
            &l.digest,
            BlobInfo {
                diff_id: match kind {
                    Kind::Tar(_) => l.diff_id.clone(),
                    Kind::Bfc => l
                        .annotations
                        .get(ANN_DIFF_ID)
                        .cloned()
                        .unwrap_or_else(|| l.diff_id.clone()),
                },
                media_type: l.media_type.clone(),
                size: l.size,
                annotations: l.annotations.clone(),
                locations: Vec::new(),
                seen: 0,
            },
            location.as_deref(),
        );
    }
    known.save()?;
    Ok(out)
}

fn short(d: &str) -> &str {
    let h = d.strip_prefix("sha256:").unwrap_or(d);
    &h[..h.len().min(12)]
}

/// One layer: reuse a known blob, else make it and upload it unless the target has it.
fn push_layer(
    store: &Store,
    info: &ImageInfo,
    i: usize,
    candidates: &[(String, BlobInfo)],
    target: &dyn Target,
    kind: Kind,
    progress: &dyn Progress,
) -> Result<Done> {
    let layer = &info.layers[i];
    let label = short(&layer.diff_id).to_string();
    let reuse = |digest: &str, b: &BlobInfo, how: How| Done {
        desc: LayerDesc {
            media_type: kind.media_type().to_string(),
            digest: digest.to_string(),
            size: b.size,
            annotations: b.annotations.clone(),
            diff_id: layer.diff_id.clone(),
        },
        reproduced: false,
        how,
    };
    for (digest, b) in candidates {
        if target.has_blob(digest)? {
            progress.finish(&label, &format!("{} already there", short(digest)));
            return Ok(reuse(digest, b, How::Present));
        }
    }
    for (digest, b) in candidates {
        for loc in b.locations.iter().rev() {
            if target.mount_from(digest, loc)? {
                progress.finish(&label, &format!("{} mounted from {loc}", short(digest)));
                return Ok(reuse(digest, b, How::Mounted));
            }
        }
    }
    let bfc_path = layer.bfc.clone().ok_or_else(|| Error::BadImage {
        path: store.root().to_path_buf(),
        why: format!(
            "layer {} of {} is not in the store; pull the image again",
            layer.diff_id, info.repository
        ),
    })?;
    let (desc, path, reproduced, _hold): (LayerDesc, PathBuf, bool, Box<dyn std::any::Any>) =
        match kind {
            Kind::Tar(comp) => {
                let t = tar_blob(store, &bfc_path, &layer.diff_id, comp)?;
                if !t.reproduced {
                    log::warn!(
                        "layer {} has no tar-split side file (pulled by an older bfcfs): its tar is regenerated, so its diff_id and the image's config digest change",
                        layer.diff_id
                    );
                }
                (
                    LayerDesc {
                        media_type: comp.media_type().to_string(),
                        digest: t.blob.digest.clone(),
                        size: t.blob.size,
                        annotations: BTreeMap::new(),
                        diff_id: t.diff_id.clone(),
                    },
                    t.blob.file.path().to_path_buf(),
                    t.reproduced,
                    Box::new(t.blob.file),
                )
            }
            Kind::Bfc => {
                let b = bfc_blob(store, &bfc_path)?;
                let mut ann = BTreeMap::new();
                ann.insert(ANN_DIFF_ID.to_string(), layer.diff_id.clone());
                ann.insert(ANN_INDEX_OFFSET.to_string(), b.index_offset.to_string());
                ann.insert(
                    ANN_INDEX_LENGTH.to_string(),
                    (b.size - b.index_offset).to_string(),
                );
                ann.insert(ANN_INDEX_SHA256.to_string(), b.index_sha256.clone());
                (
                    LayerDesc {
                        media_type: BFC_LAYER.to_string(),
                        digest: b.digest.clone(),
                        size: b.size,
                        annotations: ann,
                        diff_id: layer.diff_id.clone(),
                    },
                    b.path.clone(),
                    false,
                    Box::new(b._tmp),
                )
            }
        };
    let how = if target.has_blob(&desc.digest)? {
        progress.finish(&label, &format!("{} already there", short(&desc.digest)));
        How::Present
    } else {
        progress.start(&label, desc.size);
        target.put_blob(&desc.digest, &path, desc.size, &|done| {
            progress.bytes(&label, done)
        })?;
        progress.finish(&label, &format!("{} uploaded", short(&desc.digest)));
        How::Uploaded
    };
    Ok(Done {
        desc,
        reproduced,
        how,
    })
}
