//! The reference index `refs.json`: which manifest each `name:tag` points to.
//!
//! Changed only under `locks/refs.lock`, by reading, editing and atomically replacing the file.
use super::{save_json, Error, Lock, Result, Store};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One recorded image name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    /// `registry/repository` or a local transport (`oci:/abs/dir`).
    pub name: String,
    /// Tag, or `None` for an image pulled by digest only.
    pub tag: Option<String>,
    /// Manifest digest (`sha256:<hex>`).
    pub digest: String,
    /// Unix time of the pull that recorded it.
    pub pulled: u64,
}

impl RefEntry {
    /// `name:tag` or `name@digest`.
    pub fn display(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => format!("{}@{}", self.name, self.digest),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RefsFile {
    version: u32,
    images: Vec<RefEntry>,
}

/// The loaded index, held with its lock while it is edited.
pub struct Refs {
    path: PathBuf,
    file: RefsFile,
    _lock: Lock,
}

impl Refs {
    /// Locks and reads the index (an absent file is an empty index).
    pub fn load(store: &Store) -> Result<Refs> {
        let lock = Lock::exclusive(&store.root().join("locks/refs.lock"))?;
        let path = store.root().join("refs.json");
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: RefsFile = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    why: format!("not a bfcfs reference index: {e}"),
                })?;
                if f.version != 1 {
                    return Err(Error::Corrupt {
                        path,
                        why: format!("unsupported version {}", f.version),
                    });
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RefsFile {
                version: 1,
                images: Vec::new(),
            },
            Err(source) => return Err(Error::Io { path, source }),
        };
        Ok(Refs {
            path,
            file,
            _lock: lock,
        })
    }

    pub fn entries(&self) -> &[RefEntry] {
        &self.file.images
    }

    /// Points `name:tag` (or `name@digest` when `tag` is `None`) at `digest`.
    pub fn set(&mut self, name: &str, tag: Option<&str>, digest: &str) {
        let pulled = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.file.images.retain(|e| {
            !(e.name == name && e.tag.as_deref() == tag && (tag.is_some() || e.digest == digest))
        });
        self.file.images.push(RefEntry {
            name: name.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.to_string(),
            pulled,
        });
        self.file
            .images
            .sort_by(|a, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
    }

    /// Removes the entries for which `f` is true; returns them.
    pub fn remove_where(&mut self, f: impl Fn(&RefEntry) -> bool) -> Vec<RefEntry> {
        let (gone, kept) = std::mem::take(&mut self.file.images)
            .into_iter()
            .partition(|e| f(e));
        self.file.images = kept;
        gone
    }

    /// Writes the index: temp file, fsync, rename, fsync the directory.
    pub fn save(&self) -> Result<()> {
        save_json(&self.path, &self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_tag_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let mut r = Refs::load(&store).unwrap();
            r.set("docker.io/library/a", Some("1"), "sha256:x");
            r.set("docker.io/library/a", Some("1"), "sha256:y");
            r.set("docker.io/library/a", None, "sha256:z");
            r.save().unwrap();
        }
        let r = Refs::load(&store).unwrap();
        assert_eq!(r.entries().len(), 2);
        assert_eq!(r.entries()[1].digest, "sha256:y");
        assert_eq!(r.entries()[0].display(), "docker.io/library/a@sha256:z");
    }
}
