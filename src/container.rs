//! Containers: a named upper + work dir pair in the store (`containers/<name>/`) that keeps the
//! writes made on top of one image across mounts. `containers/<name>/state.json` names the image
//! (by manifest digest, or a `.bfc` file's path), so `prune` keeps the image's layers while the
//! container exists (image/gc.rs reads the `image` field of every `containers/*/state.json`).
//!
//! A container is used by one server at a time: whoever mounts it takes an exclusive `flock` on
//! its directory first and the server keeps it for as long as it serves (the kernel drops it when
//! the server exits, however it ends). So two mounts of one container cannot both win, and
//! `rm-container` cannot delete an upper dir that a server, or a container running on a lazily
//! detached mount, still writes to.
mod mount;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use std::time::{Duration, Instant};

use crate::mount::{mountinfo, UnmountError};
use crate::store::Store;

pub use mount::{
    log_file, mount_image, run_server, run_supervisor, KeyFor, Mounted, Plan, ServeArgs, ServeSpec,
    SuperviseArgs, UpperChoice,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container name {0:?}: use 1-64 letters, digits, '_', '.', '-', starting with a letter or digit")]
    BadName(String),
    #[error("no container {name:?} in the store at {}; `bfcfs containers` lists them", .root.display())]
    NotFound { name: String, root: PathBuf },
    #[error("container {name:?} is mounted on {}: unmount it first (`bfcfs umount {}`)", .at.display(), .at.display())]
    Mounted { name: String, at: PathBuf },
    #[error("container {name:?} is in use by a bfcfs server: {why}")]
    InUse { name: String, why: String },
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
    /// Where this container is mounted in this mount namespace, if it is (the mount's source
    /// names the container dir).
    pub fn mounted_at(&self) -> Option<PathBuf> {
        mountinfo::mounted_at(self.dir.as_os_str())
    }
}

/// A container whose directory this process holds locked: the lock lasts as long as this value
/// and every copy of its descriptor (a forked server inherits it, so it keeps the lock after the
/// command that forked it exits).
#[derive(Debug)]
pub struct Held {
    pub container: Container,
    _lock: File,
}

impl Held {
    /// The descriptor that holds the lock (a supervisor inherits it to keep the container held).
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self._lock)
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

fn not_found(store: &Store, name: &str) -> Error {
    Error::NotFound {
        name: name.to_string(),
        root: store.root().to_path_buf(),
    }
}

/// Reads `dir/state.json`; None if there is none.
fn read_state(dir: &Path) -> Result<Option<State>> {
    let path = dir.join("state.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let state = serde_json::from_slice(&bytes).map_err(|source| Error::State { path, source })?;
    Ok(Some(state))
}

/// Writes `dir/state.json` durably: temp file, fsync, rename, fsync of the directory.
fn write_state(dir: &Path, state: &State) -> Result<()> {
    let path = dir.join("state.json");
    let json = serde_json::to_vec_pretty(state).map_err(|source| Error::State {
        path: path.clone(),
        source,
    })?;
    let mut tmp = crate::atomic_file::AtomicFile::beside(&path)
        .map_err(io_err(&path))?
        .with_mode(0o644);
    tmp.write_all(&json).map_err(io_err(tmp.path()))?;
    tmp.commit(&path).map_err(io_err(&path))
}

/// How long a mount or `rm-container` waits for a server that holds a container it has mounted
/// nowhere: one whose mount was just unmounted (by umount(8), say) is on its way out and unlocks
/// when it exits; one that is still mounting shows its mount soon. A detached mount that is
/// still in use costs this wait before the refusal.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// One try at `op` (a non-blocking flock): false if another descriptor holds a conflicting lock.
fn try_flock(f: &File, op: FlockOperation, dir: &Path) -> Result<bool> {
    loop {
        match rustix::fs::flock(f, op) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(io_err(dir)(e.into())),
        }
    }
}

/// Tries `op` every 10 ms for at most [`EXIT_WAIT`], or until `give_up` says that the holder is
/// not about to let go (only ever while a server may be exiting).
fn flock_wait(
    f: &File,
    op: FlockOperation,
    dir: &Path,
    give_up: impl Fn() -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        if try_flock(f, op, dir)? {
            return Ok(true);
        }
        if Instant::now() >= deadline || give_up() {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Takes the lock on container directory `dir`. `Ok(None)`: the directory is gone (also when it
/// was removed, and maybe made again, while this waited); `Err(InUse/Mounted)`: a server holds
/// it. Waits only for a server whose mount is gone.
fn lock_dir(name: &str, dir: &Path) -> Result<Option<File>> {
    let f = lock_dir_inode(name, dir)?;
    let same = |f: &File| match (f.metadata(), fs::metadata(dir)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    Ok(f.filter(same))
}

fn lock_dir_inode(name: &str, dir: &Path) -> Result<Option<File>> {
    let f = match File::open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let op = FlockOperation::NonBlockingLockExclusive;
    if try_flock(&f, op, dir)? {
        return Ok(Some(f));
    }
    // A holder with its mount gone is a server on its way out; one that is mounting (its mount
    // appears meanwhile) or serving keeps the container.
    let (here, elsewhere) = mounts_of(dir);
    let serving = || mountinfo::mounted_at(dir.as_os_str()).is_some();
    if here.is_none() && elsewhere.is_empty() && flock_wait(&f, op, dir, serving)? {
        return Ok(Some(f));
    }
    Err(in_use(name, dir))
}

/// Where container directory `dir` is mounted: here, and in other mount namespaces.
fn mounts_of(dir: &Path) -> (Option<PathBuf>, Vec<mountinfo::Foreign>) {
    (
        mountinfo::mounted_at(dir.as_os_str()),
        mountinfo::in_other_namespaces(|m| m.source == dir.as_os_str()),
    )
}

/// Why a container is held, as precisely as the mount tables tell.
fn in_use(name: &str, dir: &Path) -> Error {
    let (here, elsewhere) = mounts_of(dir);
    if let Some(at) = here {
        return Error::Mounted {
            name: name.to_string(),
            at,
        };
    }
    let why = match elsewhere.first() {
        Some(f) => format!("it is mounted on {f} (a running container?)"),
        None => "it is being mounted, or its mount was detached and is still in use".to_string(),
    };
    Error::InUse {
        name: name.to_string(),
        why,
    }
}

/// Unmounts `mountpoint` (see [`crate::mount::unmount`]). When it served a container, waits (a
/// few seconds at most) until its server has let the container go, so that the container can be
/// mounted again or removed as soon as this returns.
pub fn unmount(mountpoint: &Path, lazy: bool) -> std::result::Result<(), UnmountError> {
    let source = mountinfo::fuse_mount_at(&mountinfo::absolute(mountpoint)).map(|m| m.source);
    crate::mount::unmount(mountpoint, lazy)?;
    let dir = source.map(PathBuf::from);
    if let (false, Some(dir)) = (lazy, dir.filter(|d| d.join("state.json").is_file())) {
        if let Ok(f) = File::open(&dir) {
            let op = FlockOperation::NonBlockingLockShared;
            if !flock_wait(&f, op, &dir, || false).unwrap_or(true) {
                log::warn!("the server of {} is still running", dir.display());
            }
        }
    }
    Ok(())
}

/// Opens container `name` (without holding it).
pub fn open(store: &Store, name: &str) -> Result<Container> {
    check_name(name)?;
    let dir = store.containers_dir().join(name);
    match read_state(&dir)? {
        Some(state) => Ok(Container { dir, state }),
        None => Err(not_found(store, name)),
    }
}

/// Holds container `name`: fails with `InUse`/`Mounted` while a server holds it.
pub fn hold(store: &Store, name: &str) -> Result<Held> {
    check_name(name)?;
    let dir = store.containers_dir().join(name);
    let lock = lock_dir(name, &dir)?.ok_or_else(|| not_found(store, name))?;
    // Read after locking: a container removed meanwhile has no state any more.
    let state = read_state(&dir)?.ok_or_else(|| not_found(store, name))?;
    Ok(Held {
        container: Container { dir, state },
        _lock: lock,
    })
}

/// Creates container `name` and holds it. `Ok(None)`: another process made it first.
fn create(store: &Store, name: &str, image: &str, reference: &str) -> Result<Option<Held>> {
    let parent = store.containers_dir();
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let dir = parent.join(name);
    let fresh = match fs::create_dir(&dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let Some(lock) = lock_dir(name, &dir)? else {
        return Ok(None);
    };
    // A directory without state that nobody holds was left by a creation that died: take it.
    if !fresh && read_state(&dir)?.is_some() {
        return Ok(None);
    }
    let state = State {
        name: name.to_string(),
        image: image.to_string(),
        reference: reference.to_string(),
        created: now(),
    };
    let made = [dir.join("upper"), dir.join("work")]
        .iter()
        .try_for_each(|d| fs::create_dir_all(d).map_err(io_err(d)))
        .and_then(|()| write_state(&dir, &state));
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Some(Held {
        container: Container { dir, state },
        _lock: lock,
    }))
}

/// Holds container `name` made from `image`, or creates it (a fresh name when `name` is None).
/// The bool says whether it was created here.
pub fn open_or_create(
    store: &Store,
    name: Option<&str>,
    image: &str,
    reference: &str,
) -> Result<(Held, bool)> {
    if let Some(n) = name {
        check_name(n)?;
    }
    // Each round either holds, creates, or saw another process create or remove it meanwhile.
    for _ in 0..8 {
        if let Some(n) = name {
            match hold(store, n) {
                Ok(h) if h.container.state.image == image => return Ok((h, false)),
                Ok(h) => {
                    return Err(Error::OtherImage {
                        name: n.to_string(),
                        has: h.container.state.image,
                        asked: image.to_string(),
                    })
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let n = match name {
            Some(n) => n.to_string(),
            None => fresh_name(store),
        };
        if let Some(h) = create(store, &n, image, reference)? {
            return Ok((h, true));
        }
    }
    Err(Error::InUse {
        name: name.unwrap_or_default().to_string(),
        why: "other processes keep creating and removing it".to_string(),
    })
}

/// Removes a container this process created and holds (a mount that failed).
pub fn discard(held: Held) -> Result<()> {
    let dir = held.container.dir.clone();
    let r = fs::remove_dir_all(&dir).map_err(io_err(&dir));
    drop(held);
    r
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

/// Removes container `name` and its upper dir; refuses while a server holds it (mounted here, in
/// another mount namespace, or detached but still in use).
pub fn remove(store: &Store, name: &str) -> Result<()> {
    let held = hold(store, name)?;
    discard(held)
}
