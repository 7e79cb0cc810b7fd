//! Containers: a named upper + work dir pair in the store (`containers/<name>/`) that keeps the
//! writes made on top of one image across mounts. `containers/<name>/state.json` names the image
//! (by manifest digest, or a `.bfc` file's path), so `prune` keeps the image's layers while the
//! container exists (`image::live_set` reads every string in `containers/*/*.json`).
mod mount;

use std::fs;
use std::path::{Path, PathBuf};

use crate::mount::mountinfo;
use crate::store::Store;

pub use mount::{mount_image, KeyFor, Mounted, Plan, UpperChoice};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container name {0:?}: use 1-64 letters, digits, '_', '.', '-', starting with a letter or digit")]
    BadName(String),
    #[error("no container {name:?} in the store at {}; `bfcfs containers` lists them", .root.display())]
    NotFound { name: String, root: PathBuf },
    #[error("container {name:?} is mounted on {}: unmount it first (`bfcfs umount {}`)", .at.display(), .at.display())]
    Mounted { name: String, at: PathBuf },
    #[error("container {name:?} was made from image {has}, not {asked}")]
    OtherImage {
        name: String,
        has: String,
        asked: String,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: bad container state: {source}", .path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `containers/<name>/state.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct State {
    pub name: String,
    /// The image's manifest digest, or the absolute path of a `.bfc` image file.
    pub image: String,
    /// What the user called the image.
    pub reference: String,
    /// Seconds since the epoch.
    pub created: u64,
}

/// One container's directory.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub state: State,
}

impl Container {
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Where this container is mounted, if it is (the mount's source names the container dir).
    pub fn mounted_at(&self) -> Option<PathBuf> {
        mountinfo::mounted_at(self.dir.as_os_str())
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh name: `c-` and 8 hex digits.
fn fresh_name(store: &Store) -> String {
    loop {
        let n = format!("c-{:08x}", rand::random::<u32>());
        if !store.containers_dir().join(&n).exists() {
            return n;
        }
    }
}

/// Opens container `name`.
pub fn open(store: &Store, name: &str) -> Result<Container> {
    check_name(name)?;
    let dir = store.containers_dir().join(name);
    let path = dir.join("state.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                name: name.to_string(),
                root: store.root().to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let state = serde_json::from_slice(&bytes).map_err(|source| Error::State { path, source })?;
    Ok(Container { dir, state })
}

/// Opens container `name` made from `image`, or creates it (a fresh name when `name` is None).
pub fn open_or_create(
    store: &Store,
    name: Option<&str>,
    image: &str,
    reference: &str,
) -> Result<(Container, bool)> {
    if let Some(n) = name {
        match open(store, n) {
            Ok(c) if c.state.image == image => return Ok((c, false)),
            Ok(c) => {
                return Err(Error::OtherImage {
                    name: n.to_string(),
                    has: c.state.image,
                    asked: image.to_string(),
                })
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => fresh_name(store),
    };
    let dir = store.containers_dir().join(&name);
    for d in [dir.join("upper"), dir.join("work")] {
        fs::create_dir_all(&d).map_err(io_err(&d))?;
    }
    let state = State {
        name,
        image: image.to_string(),
        reference: reference.to_string(),
        created: now(),
    };
    let path = dir.join("state.json");
    let json = serde_json::to_vec_pretty(&state).map_err(|source| Error::State {
        path: path.clone(),
        source,
    })?;
    let mut tmp = crate::atomic_file::AtomicFile::beside(&path)
        .map_err(io_err(&path))?
        .with_mode(0o644);
    std::io::Write::write_all(&mut tmp, &json).map_err(io_err(tmp.path()))?;
    tmp.commit(&path).map_err(io_err(&path))?;
    Ok((Container { dir, state }, true))
}

/// Every container, by name.
pub fn list(store: &Store) -> Result<Vec<Container>> {
    let dir = store.containers_dir();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        if let Some(name) = e.file_name().to_str() {
            if e.path().join("state.json").is_file() {
                out.push(open(store, name)?);
            }
        }
    }
    out.sort_by(|a, b| a.state.name.cmp(&b.state.name));
    Ok(out)
}

/// Removes container `name` and its upper dir; refuses while it is mounted.
pub fn remove(store: &Store, name: &str) -> Result<()> {
    let c = open(store, name)?;
    if let Some(at) = c.mounted_at() {
        return Err(Error::Mounted {
            name: name.to_string(),
            at,
        });
    }
    fs::remove_dir_all(&c.dir).map_err(io_err(&c.dir))
}
