//! The blob-info cache `blob-info.json`: what the store knows about layer blobs it does not keep
//! (pulled blobs are converted and deleted; pushed blobs are made and uploaded). For each blob
//! digest: the diff_id it decompresses to, its descriptor (media type, size, annotations), and
//! the registry repositories (`registry/repository`) where it is known to be.
//!
//! A push uses it to skip work: a blob of the same diff_id and media type that the target
//! repository has (HEAD) is not made again, and one that another repository of the same
//! registry has is mounted (`POST …?mount=&from=`). The cache is only a hint: every use is
//! checked with the registry, so a stale entry costs one request.
//!
//! Changed only under `locks/blob-info.lock`, by reading, editing and atomically replacing the
//! file, like `refs.json`.
use super::{save_json, Error, Lock, Result, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Locations kept per blob (the most recent).
const MAX_LOCATIONS: usize = 16;
/// Blobs kept (the most recently recorded).
const MAX_BLOBS: usize = 10_000;

/// One known blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// `sha256:<hex>` of the uncompressed layer tar.
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `registry/repository` names holding the blob, most recent last.
    #[serde(default)]
    pub locations: Vec<String>,
    /// Unix time it was last recorded (for trimming).
    #[serde(default)]
    pub seen: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct InfoFile {
    version: u32,
    /// By blob digest.
    blobs: BTreeMap<String, BlobInfo>,
}

/// The loaded cache, held with its lock while it is read or edited.
pub struct BlobInfos {
    path: PathBuf,
    file: InfoFile,
    _lock: Lock,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl BlobInfos {
    /// Locks and reads the cache. An absent file is empty; so is an unreadable one (it is a
    /// cache: the next save replaces it), with a warning.
    pub fn load(store: &Store) -> Result<BlobInfos> {
        let lock = Lock::exclusive(&store.root().join("locks/blob-info.lock"))?;
        let path = store.root().join("blob-info.json");
        let empty = InfoFile {
            version: 1,
            blobs: BTreeMap::new(),
        };
        let file = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<InfoFile>(&bytes) {
                Ok(f) if f.version == 1 => f,
                Ok(f) => {
                    log::warn!(
                        "{}: unsupported version {}; starting an empty cache",
                        path.display(),
                        f.version
                    );
                    empty
                }
                Err(e) => {
                    log::warn!("{}: {e}; starting an empty cache", path.display());
                    empty
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => empty,
            Err(source) => return Err(Error::Io { path, source }),
        };
        Ok(BlobInfos {
            path,
            file,
            _lock: lock,
        })
    }

    /// Records blob `digest` (and, if given, that `location` holds it).
    pub fn record(&mut self, digest: &str, info: BlobInfo, location: Option<&str>) {
        let e = self
            .file
            .blobs
            .entry(digest.to_string())
            .or_insert_with(|| info.clone());
        e.diff_id = info.diff_id;
        e.media_type = info.media_type;
        e.size = info.size;
        if !info.annotations.is_empty() {
            e.annotations = info.annotations;
        }
        for l in info.locations.iter().map(String::as_str).chain(location) {
            e.locations.retain(|x| x != l);
            e.locations.push(l.to_string());
        }
        if e.locations.len() > MAX_LOCATIONS {
            let extra = e.locations.len() - MAX_LOCATIONS;
            e.locations.drain(..extra);
        }
        e.seen = now();
        if self.file.blobs.len() > MAX_BLOBS {
            let mut by_age: Vec<(u64, String)> = self
                .file
                .blobs
                .iter()
                .map(|(d, b)| (b.seen, d.clone()))
                .collect();
            by_age.sort();
            for (_, d) in by_age.iter().take(self.file.blobs.len() - MAX_BLOBS) {
                self.file.blobs.remove(d);
            }
        }
    }

    /// Known blobs of layer `diff_id` with media type `media_type`, most recently seen first.
    pub fn candidates(&self, diff_id: &str, media_type: &str) -> Vec<(String, BlobInfo)> {
        let mut v: Vec<(String, BlobInfo)> = self
            .file
            .blobs
            .iter()
            .filter(|(_, b)| b.diff_id == diff_id && b.media_type == media_type)
            .map(|(d, b)| (d.clone(), b.clone()))
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.1.seen));
        v
    }

    /// Writes the cache: temp file, fsync, rename, fsync the directory.
    pub fn save(&self) -> Result<()> {
        save_json(&self.path, &self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(diff: &str, mt: &str) -> BlobInfo {
        BlobInfo {
            diff_id: diff.into(),
            media_type: mt.into(),
            size: 3,
            annotations: BTreeMap::new(),
            locations: vec![],
            seen: 0,
        }
    }

    #[test]
    fn records_locations_and_finds_candidates_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let mut b = BlobInfos::load(&store).unwrap();
            b.record("sha256:a", info("sha256:d", "gz"), Some("r/x"));
            b.record("sha256:a", info("sha256:d", "gz"), Some("r/y"));
            b.record("sha256:a", info("sha256:d", "gz"), Some("r/x"));
            b.record("sha256:b", info("sha256:d", "zst"), None);
            b.save().unwrap();
        }
        let b = BlobInfos::load(&store).unwrap();
        let c = b.candidates("sha256:d", "gz");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "sha256:a");
        assert_eq!(c[0].1.locations, ["r/y", "r/x"]);
        assert!(b.candidates("sha256:e", "gz").is_empty());
    }

    #[test]
    fn a_damaged_cache_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("blob-info.json"), b"{").unwrap();
        let b = BlobInfos::load(&store).unwrap();
        assert!(b.candidates("sha256:d", "gz").is_empty());
    }
}
