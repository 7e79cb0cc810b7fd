//! Images written to disk: OCI image layouts (`oci:DIR[:TAG]`), tarred layouts
//! (`oci-archive:FILE[:TAG]`) and docker archives (`docker-archive:FILE[:REF]`, the
//! `docker save` format with plain tar layers), as push destinations and for `save`; and `load`,
//! which reads any of them into the store.
//!
//! A layout is built in a directory (an archive's in the store's `tmp/`), then `finish` writes
//! `index.json` / `manifest.json` and, for an archive, tars the directory into a temp file beside
//! the destination and renames it into place, so a failed save leaves no half archive.
use super::import::tag as tag_image;
use super::pull::{pull, pull_resolved, Progress, PullOptions, Pulled};
use super::push::{push_image, Destination, PushFormat, PushOptions, Target};
use super::query::{inspect, ImageInfo};
use super::{record_name, Error, Result};
use crate::atomic_file::AtomicFile;
use crate::oci::{self, Source};
use crate::store::refs::Refs;
use crate::store::{self, Store};
use serde_json::{json, Value};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The image's full name beside a tag-only `ref.name` (as containerd writes it).
const FULL_NAME: &str = "io.containerd.image.name";

/// The kind of file or directory written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    DockerArchive,
    OciArchive,
    OciDir,
}

/// A layout being written.
pub(super) struct Layout {
    format: SaveFormat,
    /// The directory or archive file asked for.
    dest: PathBuf,
    /// Where blobs go (`dest` for a directory, a temp dir for archives).
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// Tag or reference from the destination string.
    tag: Option<String>,
    /// index.json entries (OCI) or manifest.json items (docker), in order.
    entries: Mutex<Vec<Value>>,
    /// tag → the image's full name (`io.containerd.image.name` beside `ref.name`).
    full_names: Mutex<std::collections::HashMap<String, String>>,
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        Error::Store(store::Error::Io {
            path: p.to_path_buf(),
            source,
        })
    }
}

fn hex(digest: &str) -> Result<&str> {
    Ok(store::sha256_hex(digest)?)
}

impl Layout {
    /// Starts writing `dest` (a layout destination, not a registry).
    pub(super) fn open(store: &Store, dest: &Destination) -> Result<Layout> {
        let (format, path, tag) = match dest {
            Destination::OciDir { path, tag } => (SaveFormat::OciDir, path, tag.clone()),
            Destination::OciArchive { path, tag } => (SaveFormat::OciArchive, path, tag.clone()),
            Destination::DockerArchive { path, reference } => {
                (SaveFormat::DockerArchive, path, reference.clone())
            }
            Destination::Registry(r) => {
                return Err(Error::BadReference {
                    reference: r.to_string(),
                    why: "not a layout destination".into(),
                })
            }
        };
        Self::new(store, format, path, tag)
    }

    pub(super) fn new(
        store: &Store,
        format: SaveFormat,
        path: &Path,
        tag: Option<String>,
    ) -> Result<Layout> {
        let mut entries = Vec::new();
        let (dir, tmp) = if format == SaveFormat::OciDir {
            fs::create_dir_all(path.join("blobs/sha256")).map_err(io_err(path))?;
            // An existing layout keeps its other images.
            let index = path.join("index.json");
            match fs::read(&index) {
                Ok(b) => {
                    let v: Value = serde_json::from_slice(&b).map_err(|e| Error::BadImage {
                        path: index.clone(),
                        why: format!("not an OCI index: {e}"),
                    })?;
                    if let Some(m) = v.get("manifests").and_then(Value::as_array) {
                        entries = m.clone();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&index)(e)),
            }
            (path.to_path_buf(), None)
        } else {
            let t = tempfile::Builder::new()
                .prefix(&crate::atomic_file::temp_prefix("save"))
                .tempdir_in(store.tmp_dir())
                .map_err(io_err(&store.tmp_dir()))?;
            fs::create_dir_all(t.path().join("blobs/sha256")).map_err(io_err(t.path()))?;
            (t.path().to_path_buf(), Some(t))
        };
        Ok(Layout {
            format,
            dest: path.to_path_buf(),
            dir,
            _tmp: tmp,
            tag,
            entries: Mutex::new(entries),
            full_names: Mutex::default(),
        })
    }

    /// The name an image gets here: the destination's tag or reference, else the image's own
    /// tag (OCI) or `name:tag` (docker).
    pub(super) fn default_tag(&self, info: &ImageInfo) -> Option<String> {
        let tag = self.tag.clone().or_else(|| self.name_of(info));
        if let (Some(t), Some(own)) = (&tag, &info.tag) {
            if let Ok(mut names) = self.full_names.lock() {
                names.insert(t.clone(), format!("{}:{own}", info.repository));
            }
        }
        tag
    }

    fn name_of(&self, info: &ImageInfo) -> Option<String> {
        match self.format {
            SaveFormat::DockerArchive => info
                .tag
                .as_ref()
                .map(|t| format!("{}:{t}", info.repository)),
            _ => info.tag.clone(),
        }
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("blobs/sha256").join(hex(digest)?))
    }

    /// Writes `index.json` (and `oci-layout`) or `manifest.json`, and tars an archive into
    /// place.
    pub(super) fn finish(self) -> Result<()> {
        let entries = self.entries.into_inner().unwrap_or_default();
        let write = |name: &str, bytes: &[u8]| -> Result<()> {
            let p = self.dir.join(name);
            fs::write(&p, bytes).map_err(io_err(&p))
        };
        match self.format {
            SaveFormat::DockerArchive => {
                write("manifest.json", &to_vec(&Value::Array(entries))?)?;
            }
            _ => {
                write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
                let index = json!({"schemaVersion": 2, "mediaType": oci::media::OCI_INDEX,
                    "manifests": entries});
                write("index.json", &to_vec(&index)?)?;
            }
        }
        if self.format != SaveFormat::OciDir {
            tar_dir(&self.dir, &self.dest)?;
        }
        Ok(())
    }
}

fn to_vec(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::BadImage {
        path: PathBuf::from("index.json"),
        why: e.to_string(),
    })
}

/// Tars the files under `dir` (sorted, ordinary modes, time 0) into `dest`, atomically.
fn tar_dir(dir: &Path, dest: &Path) -> Result<()> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let r = rel.join(n);
            out.push(r.clone());
            if root.join(&r).is_dir() {
                walk(root, &r, out)?;
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files).map_err(io_err(dir))?;
    let abs = std::path::absolute(dest).unwrap_or_else(|_| dest.to_path_buf());
    let mut out = AtomicFile::beside(&abs)
        .map_err(io_err(&abs))?
        .with_mode(0o644);
    {
        let mut b = tar::Builder::new(std::io::BufWriter::new(out.file()));
        for rel in &files {
            let p = dir.join(rel);
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            if p.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, rel, std::io::empty())
                    .map_err(io_err(&p))?;
            } else {
                let f = fs::File::open(&p).map_err(io_err(&p))?;
                let len = f.metadata().map_err(io_err(&p))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(len);
                b.append_data(&mut h, rel, f).map_err(io_err(&p))?;
            }
        }
        b.into_inner()
            .map_err(io_err(&abs))?
            .flush()
            .map_err(io_err(&abs))?;
    }
    out.commit(&abs).map_err(io_err(&abs))
}

impl Target for Layout {
    fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.exists())
    }

    fn put_blob(&self, digest: &str, path: &Path, size: u64, progress: &dyn Fn(u64)) -> Result<()> {
        let dest = self.blob_path(digest)?;
        let mut out = AtomicFile::beside(&dest).map_err(io_err(&dest))?;
        let mut f = fs::File::open(path).map_err(io_err(path))?;
        let n = std::io::copy(&mut f, out.file()).map_err(io_err(&dest))?;
        if n != size {
            return Err(Error::BadImage {
                path: path.to_path_buf(),
                why: format!("{n} bytes, expected {size}"),
            });
        }
        progress(n);
        out.commit(&dest).map_err(io_err(&dest))
    }

    fn put_bytes(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.blob_path(digest)?;
        if dest.exists() {
            return Ok(());
        }
        let mut out = AtomicFile::beside(&dest).map_err(io_err(&dest))?;
        out.file().write_all(bytes).map_err(io_err(&dest))?;
        out.commit(&dest).map_err(io_err(&dest))
    }

    fn put_manifest(
        &self,
        digest: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        self.put_bytes(digest, bytes)?;
        let mut entries = self.entries.lock().map_err(|_| Error::BadImage {
            path: self.dest.clone(),
            why: "lock poisoned".into(),
        })?;
        match self.format {
            SaveFormat::DockerArchive => {
                let m: Value = serde_json::from_slice(bytes).map_err(|e| Error::BadImage {
                    path: self.dest.clone(),
                    why: format!("manifest: {e}"),
                })?;
                let path_of = |d: &Value| -> Result<String> {
                    let d = d.get("digest").and_then(Value::as_str).unwrap_or("");
                    Ok(format!("blobs/sha256/{}", hex(d)?))
                };
                let layers = m
                    .get("layers")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().map(path_of).collect::<Result<Vec<_>>>())
                    .transpose()?
                    .unwrap_or_default();
                let tags: Vec<&str> = tag.into_iter().collect();
                if tag.is_some() {
                    for e in entries.iter_mut() {
                        if let Some(t) = e.get_mut("RepoTags").and_then(Value::as_array_mut) {
                            t.retain(|x| x.as_str() != tag);
                        }
                    }
                }
                entries.push(json!({
                    "Config": path_of(&m["config"])?,
                    "RepoTags": tags,
                    "Layers": layers,
                }));
            }
            _ => {
                let Some(tag) = tag else { return Ok(()) };
                entries.retain(|e| e["annotations"][REF_NAME].as_str() != Some(tag));
                let mut ann = json!({REF_NAME: tag});
                if let Some(full) = self
                    .full_names
                    .lock()
                    .ok()
                    .and_then(|n| n.get(tag).cloned())
                {
                    ann[FULL_NAME] = json!(full);
                }
                entries.push(json!({
                    "mediaType": media_type,
                    "digest": digest,
                    "size": bytes.len(),
                    "annotations": ann,
                }));
            }
        }
        Ok(())
    }

    fn manifest_at(&self, tag: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let entries = self.entries.lock().map_err(|_| Error::BadImage {
            path: self.dest.clone(),
            why: "lock poisoned".into(),
        })?;
        let found = entries.iter().find(|e| {
            e["annotations"][REF_NAME].as_str() == Some(tag) || e["digest"].as_str() == Some(tag)
        });
        let digest = match found.and_then(|e| e["digest"].as_str()) {
            Some(d) => d.to_string(),
            None if tag.starts_with("sha256:") => tag.to_string(),
            None => return Ok(None),
        };
        let mt = found
            .and_then(|e| e["mediaType"].as_str())
            .map(str::to_string);
        drop(entries);
        match fs::read(self.blob_path(&digest)?) {
            Ok(b) => Ok(Some((b, mt))),
            Err(_) => Ok(None),
        }
    }

    fn plain_tars(&self) -> bool {
        self.format == SaveFormat::DockerArchive
    }
}

/// Writes the images `queries` name into one archive or layout at `out`.
pub fn save(
    store: &Store,
    queries: &[String],
    format: SaveFormat,
    out: &Path,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let _shared = store.lock_shared()?;
    let layout = Layout::new(store, format, out, None)?;
    let mut opts = opts.clone();
    opts.format = PushFormat::Oci;
    let mut saved = Vec::new();
    for q in queries {
        let info = inspect(Some(store), q)?;
        let tag = layout.default_tag(&info);
        let p = push_image(store, &info, &layout, tag.as_deref(), &opts, progress)?;
        if p.config_changed {
            log::warn!(
                "{q}: some layers had no tar-split side file; the saved config digest differs"
            );
        }
        saved.push(format!("{q} {}", p.digest));
    }
    layout.finish()?;
    Ok(saved)
}

/// What an archive or layout directory is, from its contents.
fn detect(path: &Path) -> Result<Source> {
    if path.is_dir() {
        return Ok(Source::OciDir {
            path: path.to_path_buf(),
            tag: None,
        });
    }
    let f = fs::File::open(path).map_err(io_err(path))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let (mut docker, mut oci) = (false, false);
    for e in ar.entries().map_err(io_err(path))? {
        let e = e.map_err(io_err(path))?;
        let name = e.path_bytes();
        let name = name.strip_prefix(b"./").unwrap_or(&name);
        docker |= name == b"manifest.json";
        oci |= name == b"index.json";
    }
    Ok(if docker {
        Source::DockerArchive {
            path: path.to_path_buf(),
        }
    } else if oci {
        Source::OciArchive {
            path: path.to_path_buf(),
            tag: None,
        }
    } else {
        return Err(Error::BadImage {
            path: path.to_path_buf(),
            why: "neither a docker archive (manifest.json) nor an OCI archive (index.json)".into(),
        });
    })
}

/// Reads one small member of a tar archive (or a file of a directory).
fn read_member(path: &Path, member: &str) -> Result<Option<Vec<u8>>> {
    if path.is_dir() {
        let p = path.join(member);
        return match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        };
    }
    let f = fs::File::open(path).map_err(io_err(path))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    for e in ar.entries().map_err(io_err(path))? {
        let mut e = e.map_err(io_err(path))?;
        let name = e.path_bytes().into_owned();
        if name.strip_prefix(b"./").unwrap_or(&name) == member.as_bytes() {
            let mut b = Vec::new();
            e.by_ref()
                .take(oci::MAX_DOCUMENT + 1)
                .read_to_end(&mut b)
                .map_err(io_err(path))?;
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// Loads every image of a docker archive, OCI archive or layout directory into the store; an
/// image is recorded under the names the archive gives it (RepoTags, or a `ref.name` that is an
/// image reference), else as `pull` records it. Returns the names.
pub fn load(
    store: &Store,
    path: &Path,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let source = detect(path)?;
    let mut names = Vec::new();
    // An image named by the archive is recorded under that name only, not also under the
    // archive's path as `pull` records it.
    let record = |names: &mut Vec<String>, src: &Source, pulled: &Pulled, reference: &str| {
        if reference.contains('/') || reference.contains(':') {
            if let Ok(n) = tag_image(store, &pulled.manifest_digest, reference) {
                names.push(n);
                let (name, _) = record_name(src);
                let mut refs = Refs::load(store)?;
                refs.remove_where(|e| e.name == name && e.digest == pulled.manifest_digest);
                refs.save()?;
                return Ok(());
            }
        }
        names.push(pulled.name.clone());
        Result::Ok(())
    };
    match &source {
        Source::DockerArchive { .. } => {
            let items: Vec<Value> = read_member(path, "manifest.json")?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let _shared = store.lock_shared()?;
            for (n, item) in items.iter().enumerate() {
                let local = oci::source::Local::docker_archive_nth(path, &store.tmp_dir(), n)?;
                let pulled = pull_resolved(
                    store,
                    &source,
                    &local,
                    local.resolved(),
                    &[],
                    opts,
                    progress,
                )?;
                let tags: Vec<String> = item
                    .get("RepoTags")
                    .cloned()
                    .and_then(|t| serde_json::from_value(t).ok())
                    .unwrap_or_default();
                if tags.is_empty() {
                    names.push(pulled.name.clone());
                }
                for t in tags {
                    record(&mut names, &source, &pulled, &t)?;
                }
            }
        }
        Source::OciDir { .. } | Source::OciArchive { .. } => {
            let index: Value = read_member(path, "index.json")?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| Error::BadImage {
                    path: path.to_path_buf(),
                    why: "no readable index.json".into(),
                })?;
            // containerd and bfcfs also put the full name in `io.containerd.image.name`.
            let full_names: std::collections::HashMap<String, String> = index["manifests"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|d| {
                            let a = &d["annotations"];
                            Some((
                                a[REF_NAME].as_str()?.to_string(),
                                a[FULL_NAME].as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let refs: Vec<Option<String>> = index["manifests"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|d| d["annotations"][REF_NAME].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let refs = if refs.iter().all(Option::is_some) && !refs.is_empty() {
                refs
            } else {
                vec![None]
            };
            for r in refs {
                let src = match &source {
                    Source::OciDir { path, .. } => Source::OciDir {
                        path: path.clone(),
                        tag: r.clone(),
                    },
                    _ => Source::OciArchive {
                        path: path.to_path_buf(),
                        tag: r.clone(),
                    },
                };
                let pulled = pull(store, &src, opts, progress)?;
                match &r {
                    None => names.push(pulled.name.clone()),
                    Some(r) => {
                        let name = full_names.get(r).unwrap_or(r);
                        record(&mut names, &src, &pulled, name)?
                    }
                }
            }
        }
        Source::Registry(_) => {}
    }
    Ok(names)
}
