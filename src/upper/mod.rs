//! The writable upper directory of a container, in the kernel overlayfs format so that the
//! kernel's overlayfs, given the same lower trees and this upper, shows the same tree:
//! a whiteout is a character device 0:0, an opaque directory has `trusted.overlay.opaque=y`.
//!
//! Every path handed in is relative to the upper root and is resolved with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, then used through `*at` calls on the parent
//! directory: a symlink a container wrote into its upper dir can never redirect a write outside.
mod attr;
mod copy_up;
mod whiteout;

pub use attr::{get_xattr_fd, is_overlay_xattr, SetTime};
pub use copy_up::Meta;
pub use whiteout::{is_whiteout, OPAQUE_XATTR};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A container's upper and work directories (on one filesystem, so copy-ups are renames).
pub struct UpperDir {
    root: OwnedFd,
    work: OwnedFd,
    root_path: PathBuf,
    work_path: PathBuf,
    tmp_seq: AtomicU64,
}

impl std::fmt::Debug for UpperDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpperDir")
            .field("upper", &self.root_path)
            .field("work", &self.work_path)
            .finish()
    }
}

/// Resolution flags for every lookup below the upper root.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Splits `a/b/c` into (`a/b`, `c`); the parent of a top-level name is "" (the root).
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[][..], rel),
    }
}

fn os(p: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(p)
}

impl UpperDir {
    /// Opens (creating if needed) `upper` and `work`; they must be on one filesystem.
    pub fn open(upper: &Path, work: &Path) -> io::Result<UpperDir> {
        std::fs::create_dir_all(upper)?;
        std::fs::create_dir_all(work)?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let root = rfs::open(upper, flags, Mode::empty()).map_err(errno)?;
        let work_fd = rfs::open(work, flags, Mode::empty()).map_err(errno)?;
        let (a, b) = (
            rfs::fstat(&root).map_err(errno)?,
            rfs::fstat(&work_fd).map_err(errno)?,
        );
        if a.st_dev != b.st_dev {
            return Err(io::Error::other(format!(
                "upper dir {} and work dir {} are on different filesystems",
                upper.display(),
                work.display()
            )));
        }
        Ok(UpperDir {
            root,
            work: work_fd,
            root_path: upper.to_path_buf(),
            work_path: work.to_path_buf(),
            tmp_seq: AtomicU64::new(0),
        })
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// Opens `rel` ("" = the root) beneath the upper root with `flags`, never through a
    /// symlink. A path longer than one resolution can take (PATH_MAX) is walked in pieces, each
    /// resolved beneath the directory the previous one reached, so deep trees work as on any
    /// file system and no piece can leave the root.
    pub(crate) fn open_beneath(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        const PIECE: usize = 2048;
        let open = |at: &OwnedFd, p: &[u8], flags: OFlags| {
            let p: &[u8] = if p.is_empty() { b"." } else { p };
            rfs::openat2(at, os(p), flags | OFlags::CLOEXEC, Mode::empty(), beneath())
        };
        if rel.len() < PIECE {
            return open(&self.root, rel, flags);
        }
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY;
        let mut at: Option<OwnedFd> = None;
        let mut rest = rel;
        while rest.len() >= PIECE {
            let cut = rest[..PIECE]
                .iter()
                .rposition(|&b| b == b'/')
                .filter(|&i| i > 0)
                .ok_or(Errno::NAMETOOLONG)?;
            let next = open(at.as_ref().unwrap_or(&self.root), &rest[..cut], dir_flags)?;
            at = Some(next);
            rest = &rest[cut + 1..];
        }
        open(at.as_ref().unwrap_or(&self.root), rest, flags)
    }

    /// An O_PATH descriptor of directory `rel` ("" = the root), resolved beneath the root.
    pub fn dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        self.open_beneath(rel, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(errno)
    }

    /// The parent directory of `rel` and the last component.
    pub fn parent<'a>(&self, rel: &'a [u8]) -> io::Result<(OwnedFd, &'a [u8])> {
        let (p, name) = split(rel);
        if name.is_empty() || name == b"." || name == b".." {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        Ok((self.dir(p)?, name))
    }

    /// lstat of `rel`; None when it (or a parent) does not exist in the upper dir.
    pub fn stat(&self, rel: &[u8]) -> io::Result<Option<rfs::Stat>> {
        if rel.is_empty() {
            return rfs::fstat(&self.root).map(Some).map_err(errno);
        }
        let (dir, name) = match self.parent(rel) {
            Ok(x) => x,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(None)
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rfs::statat(&dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// lstat of the directory holding `rel` and of `rel` itself (None: absent), through one
    /// resolution of the directory.
    pub fn stat_in_dir(&self, rel: &[u8]) -> io::Result<(rfs::Stat, Option<rfs::Stat>)> {
        let (dir, name) = self.parent(rel)?;
        let d = rfs::fstat(&dir).map_err(errno)?;
        match rfs::statat(&dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok((d, Some(st))),
            Err(Errno::NOENT) => Ok((d, None)),
            Err(e) => Err(errno(e)),
        }
    }

    /// Opens regular file `rel` with `flags` (never following a symlink), e.g. for reads,
    /// writes or FUSE passthrough.
    pub fn open_file(&self, rel: &[u8], flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        let (dir, name) = self.parent(rel)?;
        rfs::openat(
            &dir,
            os(name),
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        )
        .map_err(errno)
    }

    /// Names and lstat of the entries of upper directory `rel` (empty when it does not exist).
    pub fn list(&self, rel: &[u8]) -> io::Result<Vec<(Vec<u8>, rfs::Stat)>> {
        let fd = match self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(Vec::new()),
            Err(e) => return Err(errno(e)),
        };
        let mut out = Vec::new();
        let mut d = rfs::Dir::read_from(&fd).map_err(errno)?;
        for ent in d.by_ref() {
            let ent = ent.map_err(errno)?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            match rfs::statat(&fd, ent.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name.to_vec(), st)),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes `rel` (an empty directory when `dir`).
    pub fn remove(&self, rel: &[u8], dir: bool) -> io::Result<()> {
        let (d, name) = self.parent(rel)?;
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rfs::unlinkat(&d, os(name), flags).map_err(errno)
    }

    /// Removes `rel` and everything below it (an upper directory being replaced).
    pub fn remove_tree(&self, rel: &[u8]) -> io::Result<()> {
        match self.stat(rel)? {
            None => Ok(()),
            Some(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory => {
                for (name, _) in self.list(rel)? {
                    let mut child = rel.to_vec();
                    child.push(b'/');
                    child.extend_from_slice(&name);
                    self.remove_tree(&child)?;
                }
                self.remove(rel, true)
            }
            Some(_) => self.remove(rel, false),
        }
    }

    /// Renames `from` to `to` inside the upper dir (replacing `to` unless `noreplace`).
    pub fn rename(&self, from: &[u8], to: &[u8], flags: rfs::RenameFlags) -> io::Result<()> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        rfs::renameat_with(&fd, os(fname), &td, os(tname), flags).map_err(errno)
    }

    /// A hard link `to` for the upper file `from`.
    pub fn link(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        rfs::linkat(&fd, os(fname), &td, os(tname), AtFlags::empty()).map_err(errno)
    }

    /// A fresh name in the work dir for building an entry before it is renamed into place.
    fn tmp_name(&self) -> Vec<u8> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        format!("#bfcfs-{}-{n}", std::process::id()).into_bytes()
    }

    /// Moves `tmp` from the work dir to `rel` (replacing what is there when `replace`).
    fn publish(&self, tmp: &[u8], rel: &[u8], replace: bool) -> io::Result<()> {
        let (td, tname) = self.parent(rel)?;
        let flags = if replace {
            rfs::RenameFlags::empty()
        } else {
            rfs::RenameFlags::NOREPLACE
        };
        match rfs::renameat_with(&self.work, os(tmp), &td, os(tname), flags) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = rfs::unlinkat(&self.work, os(tmp), AtFlags::empty());
                let _ = rfs::unlinkat(&self.work, os(tmp), AtFlags::REMOVEDIR);
                Err(errno(e))
            }
        }
    }

    /// Symlink target of upper entry `rel`.
    pub fn readlink(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        let (d, name) = self.parent(rel)?;
        rfs::readlinkat(&d, os(name), Vec::new())
            .map(|c| c.into_bytes())
            .map_err(errno)
    }

    /// Removes stale temporaries a crash may have left in the work dir.
    pub fn clean_work(&self) -> io::Result<()> {
        let fd = rfs::openat(
            &self.work,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let mut d = rfs::Dir::read_from(&fd).map_err(errno)?;
        let mut stale = Vec::new();
        for ent in d.by_ref() {
            let ent = ent.map_err(errno)?;
            let n = ent.file_name().to_bytes();
            if n.starts_with(b"#bfcfs-") {
                stale.push(n.to_vec());
            }
        }
        for n in stale {
            if rfs::unlinkat(&fd, os(&n), AtFlags::empty()).is_err() {
                let p = self.work_path.join(os(&n));
                let _ = std::fs::remove_dir_all(p);
            }
        }
        Ok(())
    }
}
