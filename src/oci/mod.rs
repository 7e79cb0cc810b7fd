//! Step 1 of the pipeline: find an image and fetch its manifest, config and layer blobs.
//!
//! `reference` parses SOURCE strings, `registry` speaks the OCI Distribution API over ureq
//! (with `auth` for the Basic and Bearer flows), `source` reads images already on disk, and
//! `platform` picks one manifest out of an index. Nothing here knows about the store or BFC:
//! blob bytes go to a [`BlobSink`] that the caller hands in, and the caller checks the digest.
pub mod auth;
pub mod credentials;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod source;

pub use platform::PlatformSpec;
pub use reference::{ImageRef, Source};

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest};
use std::io;
use std::path::PathBuf;

/// Cap on manifests, indexes and configs read into memory.
pub const MAX_DOCUMENT: u64 = 4 * 1024 * 1024;

/// Errors of the registry client and local sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {input:?}: {source}")]
    Reference {
        input: String,
        #[source]
        source: oci_spec::distribution::ParseError,
    },
    #[error("invalid image source {input:?}: {why}")]
    Source { input: String, why: String },
    #[error("{url}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("{url}: HTTP {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: HTTP {status}: the registry asked to wait {} s", .wait.as_secs())]
    Busy {
        url: String,
        status: u16,
        wait: std::time::Duration,
    },
    #[error("{url}: HTTP {status}: the registry asked to wait {wait} s, longer than the {cap} s bfcfs waits (BFCFS_MAX_RETRY_WAIT); try again later")]
    WaitTooLong {
        url: String,
        status: u16,
        wait: u64,
        cap: u64,
    },
    #[error("{url}: transfer too slow: {bytes} bytes in {secs} s, under the minimum of {limit} bytes/s (BFCFS_LOW_SPEED_LIMIT, BFCFS_LOW_SPEED_TIME)")]
    TooSlow {
        url: String,
        bytes: u64,
        secs: u64,
        limit: u64,
    },
    #[error("{url}: the registry sent no {what} for {secs} s (BFCFS_LOW_SPEED_TIME)")]
    Stalled {
        url: String,
        what: &'static str,
        secs: u64,
    },
    #[error("{url}: giving up on blob {digest} after {resumes} resumed transfers ({have} of {expected} bytes in); last failure: {last}")]
    TooManyResumes {
        url: String,
        digest: String,
        resumes: u32,
        have: u64,
        expected: u64,
        last: String,
    },
    #[error("{url}: authentication failed: {why}")]
    Auth { url: String, why: String },
    #[error(
        "refusing plain HTTP to {host} ({url}); pass --insecure-registry {host} if you trust it"
    )]
    Insecure { host: String, url: String },
    #[error("{url}: {what} exceeds the cap of {limit} bytes")]
    TooLarge {
        url: String,
        what: &'static str,
        limit: u64,
    },
    #[error("{url}: digest mismatch: expected {expected}, got {found}")]
    DigestMismatch {
        url: String,
        expected: String,
        found: String,
    },
    #[error("{url}: size mismatch for {digest}: expected {expected} bytes, got {found}")]
    SizeMismatch {
        url: String,
        digest: String,
        expected: u64,
        found: u64,
    },
    #[error("{url}: bad {what}: {why}")]
    BadDocument {
        url: String,
        what: &'static str,
        why: String,
    },
    #[error("no image for platform {wanted} in {image}; available: {available}")]
    NoPlatform {
        image: String,
        wanted: String,
        available: String,
    },
    #[error("invalid platform {input:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")]
    Platform { input: String },
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{url}: writing blob {digest}")]
    Sink {
        url: String,
        digest: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where blob bytes go. The store's blob writer implements it: it hashes what it is given and
/// checks the digest when the caller commits it.
pub trait BlobSink {
    /// Appends bytes.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Bytes written so far (the offset a Range request resumes from).
    fn offset(&self) -> u64;
    /// Discards everything written (the server ignored a Range request).
    fn restart(&mut self) -> io::Result<()>;
}

/// Where layer blobs come from: the registry client ([`registry::Registry`]) or an image on disk
/// ([`source::Local`]). Shared by the pull workers, hence `Sync`.
pub trait Fetch: Sync {
    /// Streams blob `desc` into `sink`; `progress` is told the sink offset as bytes arrive. The
    /// caller checks the digest when it commits the sink.
    fn fetch_blob(
        &self,
        desc: &Descriptor,
        sink: &mut dyn BlobSink,
        progress: &dyn Fn(u64),
    ) -> Result<()>;
}

/// One image, resolved to a single platform: manifest and config have been checked against
/// their digests, layers have not been fetched yet.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Digest of the platform manifest (what the store records).
    pub manifest_digest: Digest,
    /// The manifest bytes exactly as served (their sha256 is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    /// The config bytes exactly as served.
    pub config_bytes: Vec<u8>,
    pub config: ImageConfiguration,
}

impl Resolved {
    /// Layer descriptors, base first.
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.layers()
    }
    /// The config's diff_ids, one per layer.
    pub fn diff_ids(&self) -> &[String] {
        self.config.rootfs().diff_ids()
    }
}

/// Media types this client understands.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// The Accept header sent for manifests: all four kinds.
    pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

    /// A layer pushed as its BFC file (`push --format bfc`, docs/FORMAT.md).
    pub const BFC_LAYER: &str = "application/vnd.bfcfs.layer.v1.bfc";

    /// Whether a layer media type is one this converter can read (the content is sniffed
    /// anyway), or a BFC layer (which a lazy pull mounts as it is).
    pub fn is_layer(m: &str) -> bool {
        m.starts_with("application/vnd.oci.image.layer.")
            || m.starts_with("application/vnd.docker.image.rootfs.")
            || m == BFC_LAYER
    }
}

/// Decoded manifest document: an image manifest or an index of them.
pub enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<oci_spec::image::ImageIndex>),
}

/// Decides what a manifest document is from its Content-Type, then its `mediaType` field, then
/// its shape, and decodes it.
pub fn decode_document(url: &str, content_type: Option<&str>, bytes: &[u8]) -> Result<Document> {
    // serde quotes the offending value: escape it.
    let bad = |why: String| Error::BadDocument {
        url: url.to_string(),
        what: "manifest",
        why: crate::error_chain::escape(&why).into_owned(),
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let declared = value.get("mediaType").and_then(|v| v.as_str());
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let kind = ct
        .or(declared)
        .unwrap_or(if value.get("manifests").is_some() {
            media::OCI_INDEX
        } else {
            media::OCI_MANIFEST
        });
    match kind {
        media::OCI_INDEX | media::DOCKER_LIST => serde_json::from_value(value)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| bad(format!("bad index: {e}"))),
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => serde_json::from_value(value)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(|e| bad(format!("bad image manifest: {e}"))),
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED => Err(bad(
            "Docker schema 1 manifests are not supported; push the image again with a current tool"
                .into(),
        )),
        other => Err(bad(format!("unsupported media type {other}"))),
    }
}

/// Checks an image manifest and decodes its config: layer media types, one diff_id per layer.
pub fn check_image(
    url: &str,
    manifest: &ImageManifest,
    config_bytes: &[u8],
) -> Result<ImageConfiguration> {
    let config: ImageConfiguration =
        serde_json::from_slice(config_bytes).map_err(|e| Error::BadDocument {
            url: url.to_string(),
            what: "image config",
            why: crate::error_chain::escape(&e.to_string()).into_owned(),
        })?;
    for l in manifest.layers() {
        let mt = l.media_type().to_string();
        if !media::is_layer(&mt) {
            return Err(Error::BadDocument {
                url: url.to_string(),
                what: "manifest",
                why: format!("layer {} has unsupported media type {mt}", l.digest()),
            });
        }
        if l.digest().algorithm().as_ref() != "sha256" {
            return Err(Error::BadDocument {
                url: url.to_string(),
                what: "manifest",
                why: format!("layer {} is not a sha256 digest", l.digest()),
            });
        }
    }
    let n = config.rootfs().diff_ids().len();
    if n != manifest.layers().len() {
        return Err(Error::BadDocument {
            url: url.to_string(),
            what: "image config",
            why: format!(
                "{n} diff_ids for {} layers in the manifest",
                manifest.layers().len()
            ),
        });
    }
    for d in config.rootfs().diff_ids() {
        if d.strip_prefix("sha256:")
            .and_then(|h| h.parse::<oci_spec::image::Sha256Digest>().ok())
            .is_none()
        {
            return Err(Error::BadDocument {
                url: url.to_string(),
                what: "image config",
                why: format!("diff_id {d:?} is not a sha256 digest"),
            });
        }
    }
    Ok(config)
}
