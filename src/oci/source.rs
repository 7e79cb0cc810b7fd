//! Images already on disk: OCI layout directories (`oci:`), tarred layouts (`oci-archive:`) and
//! `docker save` tarballs (`docker-archive:`), read as the same manifest + blobs a registry
//! serves. Archives are unpacked into a temporary directory first (tar's `unpack_in` keeps every
//! member inside it); a docker archive gets a synthesized OCI manifest whose layer digests are
//! computed from the files.
use super::{
    check_image, decode_document, BlobSink, Document, Error, Fetch, PlatformSpec, Resolved, Result,
    MAX_DOCUMENT,
};
use crate::digest::{sha256_digest, sha256_finish};
use oci_spec::image::{Descriptor, DescriptorBuilder, Digest, ImageManifestBuilder, MediaType};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A local image source with its blobs on disk.
pub struct Local {
    blobs: Blobs,
    resolved: Resolved,
    /// What the source calls the image: a layout's `org.opencontainers.image.ref.name`, a
    /// docker archive's `RepoTags`.
    names: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_small(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(Error::TooLarge {
            url: path.display().to_string(),
            what,
            limit: MAX_DOCUMENT,
        });
    }
    Ok(bytes)
}

fn unpack(archive: &Path, tmp_in: &Path) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&crate::atomic_file::temp_prefix("archive"))
        .tempdir_in(tmp_in)
        .map_err(io_err(tmp_in))?;
    let f = File::open(archive).map_err(io_err(archive))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    for entry in ar.entries().map_err(io_err(archive))? {
        let mut entry = entry.map_err(io_err(archive))?;
        let kind = entry.header().entry_type();
        // Only directories and regular files belong in an image archive.
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        entry.unpack_in(dir.path()).map_err(io_err(archive))?;
    }
    Ok(dir)
}

impl Local {
    /// Opens `oci:DIR[:TAG]`.
    pub fn oci_dir(dir: &Path, tag: Option<&str>, platform: &PlatformSpec) -> Result<Local> {
        Self::layout(dir.to_path_buf(), tag, platform, None)
    }

    /// Opens `oci-archive:FILE[:TAG]`, unpacking it under `tmp`.
    pub fn oci_archive(
        file: &Path,
        tag: Option<&str>,
        platform: &PlatformSpec,
        tmp: &Path,
    ) -> Result<Local> {
        let dir = unpack(file, tmp)?;
        Self::layout(dir.path().to_path_buf(), tag, platform, Some(dir))
    }

    fn layout(
        root: PathBuf,
        tag: Option<&str>,
        platform: &PlatformSpec,
        tmp: Option<tempfile::TempDir>,
    ) -> Result<Local> {
        let index_path = root.join("index.json");
        let bytes = read_small(&index_path, "index.json")?;
        let url = index_path.display().to_string();
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
                url: url.clone(),
                what: "index.json",
                why: e.to_string(),
            })?;
        let candidates: Vec<&Descriptor> = match tag {
            Some(t) => index
                .manifests()
                .iter()
                .filter(|d| {
                    d.annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_some_and(|n| n == t)
                })
                .collect(),
            None => index.manifests().iter().collect(),
        };
        let desc = match candidates.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(Error::BadDocument {
                    url,
                    what: "index.json",
                    why: match tag {
                        Some(t) => format!("no image tagged {t:?}"),
                        None => "no images".into(),
                    },
                })
            }
            _ => {
                return Err(Error::BadDocument {
                    url,
                    what: "index.json",
                    why: "several images; name one with :TAG".into(),
                })
            }
        };
        let blobs = Blobs {
            root,
            extra: HashMap::new(),
        };
        let resolved = blobs.resolve_from(&desc, platform)?;
        let names = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
            .into_iter()
            .collect();
        Ok(Local {
            blobs,
            resolved,
            names,
            _tmp: tmp,
        })
    }
}

/// Where the blobs of a local source are.
struct Blobs {
    root: PathBuf,
    /// Blob files that do not live at `blobs/<alg>/<hex>` (docker archives).
    extra: HashMap<String, PathBuf>,
}

impl Blobs {
    fn resolve_from(&self, desc: &Descriptor, platform: &PlatformSpec) -> Result<Resolved> {
        let mut desc = desc.clone();
        for _ in 0..2 {
            let (url, bytes) = self.read_document(desc.digest(), "manifest")?;
            let ct = desc.media_type().to_string();
            match decode_document(&url, Some(&ct), &bytes)? {
                Document::Index(index) => {
                    desc = platform
                        .choose(&self.root.display().to_string(), &index)?
                        .clone();
                }
                Document::Manifest(manifest) => {
                    let manifest = *manifest;
                    let (curl, config_bytes) =
                        self.read_document(manifest.config().digest(), "image config")?;
                    let config = check_image(&curl, &manifest, &config_bytes)?;
                    return Ok(Resolved {
                        manifest_digest: desc.digest().clone(),
                        manifest_bytes: bytes,
                        manifest,
                        config_bytes,
                        config,
                    });
                }
            }
        }
        Err(Error::BadDocument {
            url: self.root.display().to_string(),
            what: "index.json",
            why: "nested indexes".into(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        match self.extra.get(digest.as_ref()) {
            Some(p) => p.clone(),
            None => self
                .root
                .join("blobs")
                .join(digest.algorithm().as_ref())
                .join(digest.digest()),
        }
    }

    fn read_document(&self, digest: &Digest, what: &'static str) -> Result<(String, Vec<u8>)> {
        let path = self.blob_path(digest);
        let url = path.display().to_string();
        let bytes = read_small(&path, what)?;
        let found = sha256_digest(&bytes);
        if found != digest.as_ref() {
            return Err(Error::DigestMismatch {
                url,
                expected: digest.to_string(),
                found,
            });
        }
        Ok((url, bytes))
    }
}

impl Local {
    /// Opens `docker-archive:FILE` (the first image of `manifest.json`), unpacking under `tmp`.
    pub fn docker_archive(file: &Path, tmp: &Path) -> Result<Local> {
        Self::docker_archive_nth(file, tmp, 0)
    }

    /// Opens image `n` (from 0) of `manifest.json` in a docker archive.
    pub fn docker_archive_nth(file: &Path, tmp: &Path, n: usize) -> Result<Local> {
        let dir = unpack(file, tmp)?;
        let root = dir.path().to_path_buf();
        let mpath = root.join("manifest.json");
        let url = format!("{}:manifest.json", file.display());
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Item {
            config: String,
            layers: Vec<String>,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
        }
        let items: Vec<Item> = serde_json::from_slice(&read_small(&mpath, "manifest.json")?)
            .map_err(|e| Error::BadDocument {
                url: url.clone(),
                what: "manifest.json",
                why: e.to_string(),
            })?;
        let item = items.get(n).ok_or_else(|| Error::BadDocument {
            url: url.clone(),
            what: "manifest.json",
            why: format!("no image {n} (the archive holds {})", items.len()),
        })?;
        let member = |name: &str| -> Result<PathBuf> {
            // unpack_in kept every member inside `root`; refuse names that point elsewhere.
            if name.split('/').any(|c| c == "..") || name.starts_with('/') {
                return Err(Error::BadDocument {
                    url: url.clone(),
                    what: "manifest.json",
                    why: format!("member name {name:?} leaves the archive"),
                });
            }
            Ok(root.join(name))
        };
        let mut extra = HashMap::new();
        let config_path = member(&item.config)?;
        let config_bytes = read_small(&config_path, "image config")?;
        let config_digest = sha256_digest(&config_bytes);
        let mut layers = Vec::new();
        for l in &item.layers {
            let path = member(l)?;
            let (digest, size) = hash_file(&path)?;
            let mut f = File::open(&path).map_err(io_err(&path))?;
            let mut magic = [0u8; 4];
            let n = f.read(&mut magic).map_err(io_err(&path))?;
            let mt = match &magic[..n] {
                [0x1f, 0x8b, ..] => MediaType::ImageLayerGzip,
                [0x28, 0xb5, 0x2f, 0xfd] => MediaType::ImageLayerZstd,
                _ => MediaType::ImageLayer,
            };
            layers.push(descriptor(mt, &digest, size)?);
            extra.insert(digest, path);
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config_bytes.len() as u64,
            )?)
            .layers(layers)
            .build()
            .map_err(|e| Error::BadDocument {
                url: url.clone(),
                what: "manifest.json",
                why: e.to_string(),
            })?;
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::BadDocument {
            url: url.clone(),
            what: "manifest.json",
            why: e.to_string(),
        })?;
        extra.insert(config_digest, config_path);
        let config = check_image(&url, &manifest, &config_bytes)?;
        let manifest_digest = parse_digest(&url, &sha256_digest(&manifest_bytes))?;
        Ok(Local {
            blobs: Blobs { root, extra },
            resolved: Resolved {
                manifest_digest,
                manifest_bytes,
                manifest,
                config_bytes,
                config,
            },
            names: item.repo_tags.clone().unwrap_or_default(),
            _tmp: Some(dir),
        })
    }

    /// The image this source holds.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// What the source calls the image (a layout's ref name, a docker archive's RepoTags),
    /// unchecked: the caller decides which of them make names.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Fetch for Local {
    /// Copies blob `desc` into `sink` (at most its declared size; the sink checks the digest).
    fn fetch_blob(
        &self,
        desc: &Descriptor,
        sink: &mut dyn BlobSink,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let path = self.blobs.blob_path(desc.digest());
        let url = path.display().to_string();
        let f = File::open(&path).map_err(io_err(&path))?;
        sink.restart().map_err(|source| Error::Sink {
            url: url.clone(),
            digest: desc.digest().to_string(),
            source,
        })?;
        let mut r = f.take(desc.size().saturating_add(1));
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            sink.write_all(&buf[..n]).map_err(|source| Error::Sink {
                url: url.clone(),
                digest: desc.digest().to_string(),
                source,
            })?;
            progress(sink.offset());
        }
        if sink.offset() != desc.size() {
            return Err(Error::SizeMismatch {
                url,
                digest: desc.digest().to_string(),
                expected: desc.size(),
                found: sink.offset(),
            });
        }
        Ok(())
    }
}

fn parse_digest(url: &str, s: &str) -> Result<Digest> {
    s.parse().map_err(|e| Error::BadDocument {
        url: url.into(),
        what: "digest",
        why: format!("{e}"),
    })
}

fn descriptor(mt: MediaType, digest: &str, size: u64) -> Result<Descriptor> {
    DescriptorBuilder::default()
        .media_type(mt)
        .digest(parse_digest("descriptor", digest)?)
        .size(size)
        .build()
        .map_err(|e| Error::BadDocument {
            url: "descriptor".into(),
            what: "descriptor",
            why: e.to_string(),
        })
}

fn hash_file(path: &Path) -> Result<(String, u64)> {
    use sha2::Digest as _;
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((sha256_finish(h), size))
}
