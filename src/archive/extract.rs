//! Writes a container's entries under a destination directory. Entry paths were checked when
//! the container opened (relative, no `..`); here every parent component is checked to be a
//! real directory, never a symlink, so nothing the archive holds (symlinked parents, hardlinks,
//! absolute targets) can make a write land outside the destination.
use super::{Error, Progress, Result};
use crate::bfc::{self, error::show, Container, Kind};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Replace existing files.
    pub force: bool,
    /// Restore recorded uid/gid (as root).
    pub restore_owner: bool,
    /// Only these paths and what is below them (all when empty).
    pub only: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    /// Entries not restored, with the reason (content errors, devices without privilege).
    pub failed: Vec<String>,
}

fn selected(path: &[u8], only: &[Vec<u8>]) -> bool {
    only.is_empty()
        || only.iter().any(|o| {
            path == o.as_slice() || (path.starts_with(o) && path.get(o.len()) == Some(&b'/'))
        })
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn timestamp(ns: i64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

struct Extractor<'a> {
    c: &'a Container,
    dest: PathBuf,
    opts: &'a ExtractOptions,
    /// Directories (relative) known to be real directories created or checked by us.
    dirs: HashSet<Vec<u8>>,
    /// First extracted path of each hardlink group.
    links: HashMap<u32, PathBuf>,
    stats: Stats,
    progress: Progress<'a>,
    /// Copy buffer shared by every file: allocating it per file made glibc grow and trim the
    /// heap for each one (thousands of brk calls and page faults per rootfs).
    buf: Vec<u8>,
}

/// Extracts `c` under `dest` (created if missing).
pub fn extract(
    c: &Container,
    dest: &Path,
    opts: &ExtractOptions,
    progress: Progress<'_>,
) -> Result<Stats> {
    fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let mut x = Extractor {
        c,
        dest: dest.to_path_buf(),
        opts,
        dirs: HashSet::new(),
        links: HashMap::new(),
        stats: Stats::default(),
        progress,
        buf: vec![0u8; 256 << 10],
    };
    // Open checks the container's structure, each entry is checked when decoded: check them
    // all before writing anything, so a damaged index extracts nothing.
    for i in 0..c.len() {
        c.entry(i)?;
    }
    let mut dir_meta = Vec::new();
    for i in 0..c.len() {
        if !selected(c.path(i), &opts.only) {
            continue;
        }
        match x.one(i) {
            Ok(()) => {
                x.stats.entries += 1;
                if c.kind(i) == Kind::Dir {
                    dir_meta.push(i);
                }
            }
            Err(err @ Error::Refused { .. }) => return Err(err),
            Err(err) => {
                let msg = crate::error_chain::chain(&err);
                eprintln!("bfcfs: {msg}");
                x.stats.failed.push(format!("{}: {msg}", show(c.path(i))));
            }
        }
    }
    // Directory metadata last, deepest first, so adding children does not disturb mtimes.
    for &i in dir_meta.iter().rev() {
        let e = &c.entry(i)?;
        let p = x.target(&e.path);
        x.set_owner(&p, e)?;
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(e.perm()))
            .map_err(|err| Error::io(&p, err))?;
        set_times(&p, e.mtime_ns)?;
    }
    Ok(x.stats)
}

fn set_times(p: &Path, ns: i64) -> Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &timestamp(ns),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io(p, e.into()))
}

impl Extractor<'_> {
    fn target(&self, rel: &[u8]) -> PathBuf {
        self.dest.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// Makes sure every parent of `rel` is a real directory inside the destination.
    fn parents(&mut self, rel: &[u8]) -> Result<()> {
        let mut end = 0;
        while let Some(pos) = rel[end..].iter().position(|b| *b == b'/') {
            let parent = &rel[..end + pos];
            end += pos + 1;
            if self.dirs.contains(parent) {
                continue;
            }
            let p = self.target(parent);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(Error::Refused {
                        path: p,
                        why: format!(
                        "is not a directory (a symlink or file): refusing to write {} through it",
                        show(rel)
                    ),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
                }
                Err(e) => return Err(Error::io(&p, e)),
            }
            self.dirs.insert(parent.to_vec());
        }
        Ok(())
    }

    /// Clears the way for a new entry at `p`; directories over directories are kept.
    fn make_room(&self, p: &Path, is_dir: bool) -> Result<bool> {
        match fs::symlink_metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(p, e)),
            Ok(md) if is_dir && md.file_type().is_dir() => Ok(true),
            Ok(md) => {
                if !self.opts.force {
                    return Err(Error::io(
                        p,
                        std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "already exists (use -f to replace)",
                        ),
                    ));
                }
                let r = if md.file_type().is_dir() {
                    fs::remove_dir_all(p)
                } else {
                    fs::remove_file(p)
                };
                r.map_err(|e| Error::io(p, e))?;
                Ok(false)
            }
        }
    }

    fn set_owner(&self, p: &Path, e: &bfc::Entry) -> Result<()> {
        if self.opts.restore_owner {
            if let (Some(u), Some(g)) = (e.uid, e.gid) {
                std::os::unix::fs::lchown(p, Some(u), Some(g)).map_err(|err| Error::io(p, err))?;
            }
        }
        Ok(())
    }

    fn set_xattrs(&self, p: &Path, e: &bfc::Entry) -> Result<()> {
        for (n, v) in &e.xattrs {
            rustix::fs::lsetxattr(p, n.as_slice(), v, rustix::fs::XattrFlags::empty())
                .map_err(|err| Error::io(p, err.into()))?;
        }
        Ok(())
    }

    fn one(&mut self, i: usize) -> Result<()> {
        let c = self.c;
        let e = &c.entry(i)?;
        self.parents(&e.path)?;
        let p = self.target(&e.path);
        let exists = self.make_room(&p, e.kind == Kind::Dir)?;
        match e.kind {
            Kind::Dir => {
                if !exists {
                    fs::create_dir(&p).map_err(|err| Error::io(&p, err))?;
                }
                self.dirs.insert(e.path.clone());
                self.set_xattrs(&p, e)?;
                return Ok(());
            }
            Kind::File => {
                if let Some(g) = e.link_group {
                    if let Some(first) = self.links.get(&g) {
                        fs::hard_link(first, &p).map_err(|err| Error::io(&p, err))?;
                        return Ok(());
                    }
                }
                self.file(i, &p)?;
                if let Some(g) = e.link_group {
                    self.links.insert(g, p.clone());
                }
                return Ok(());
            }
            Kind::Symlink => {
                let t = c.symlink_target(i)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), &p)
                    .map_err(|err| Error::io(&p, err))?;
            }
            Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => {
                let ft = match e.kind {
                    Kind::CharDev => rustix::fs::FileType::CharacterDevice,
                    Kind::BlockDev => rustix::fs::FileType::BlockDevice,
                    Kind::Fifo => rustix::fs::FileType::Fifo,
                    _ => rustix::fs::FileType::Socket,
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    ft,
                    rustix::fs::Mode::from_raw_mode(e.perm() as _),
                    e.rdev as _,
                )
                .map_err(|err| Error::io(&p, err.into()))?;
                fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(e.perm()))
                    .map_err(|err| Error::io(&p, err))?;
            }
        }
        self.set_owner(&p, e)?;
        self.set_xattrs(&p, e)?;
        set_times(&p, e.mtime_ns)
    }

    /// Writes content to a temporary name beside the target and renames it into place only
    /// when every check passed: a damaged entry leaves nothing behind.
    fn file(&mut self, i: usize, p: &Path) -> Result<()> {
        let e = self.c.entry(i)?;
        let dir = p.parent().unwrap_or(&self.dest);
        let mut tmp = tempfile::Builder::new()
            .prefix(".bfcfs-extract.")
            .tempfile_in(dir)
            .map_err(|err| Error::io(dir, err))?;
        {
            let mut r = self.c.open_reader(i)?;
            // Reads fill the shared buffer, so each write is already large: no BufWriter.
            let w = tmp.as_file_mut();
            let mut total = 0u64;
            loop {
                let n = bfc::writer::read_full(&mut r, &mut self.buf)
                    .map_err(|err| bfc::content::unwrap_io(self.c.file_name(), err))?;
                if n == 0 {
                    break;
                }
                // Whole blocks of zeros become holes: a sparse image stays sparse on disk.
                if n == self.buf.len() && self.buf.iter().all(|b| *b == 0) {
                    w.seek(SeekFrom::Current(n as i64))
                        .map_err(|err| Error::io(p, err))?;
                } else {
                    w.write_all(&self.buf[..n])
                        .map_err(|err| Error::io(p, err))?;
                }
                total += n as u64;
                (self.progress)(n as u64);
                self.stats.bytes += n as u64;
            }
            w.set_len(total).map_err(|err| Error::io(p, err))?;
        }
        let f = tmp.as_file();
        if self.opts.restore_owner {
            if let (Some(u), Some(g)) = (e.uid, e.gid) {
                std::os::unix::fs::fchown(f, Some(u), Some(g)).map_err(|err| Error::io(p, err))?;
            }
        }
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(e.perm()))
            .map_err(|err| Error::io(p, err))?;
        for (n, v) in &e.xattrs {
            rustix::fs::fsetxattr(f, n.as_slice(), v, rustix::fs::XattrFlags::empty())
                .map_err(|err| Error::io(p, err.into()))?;
        }
        f.set_times(
            fs::FileTimes::new()
                .set_modified(time(e.mtime_ns))
                .set_accessed(time(e.mtime_ns)),
        )
        .map_err(|err| Error::io(p, err))?;
        tmp.persist_noclobber(p)
            .map_err(|err| Error::io(p, err.error))?;
        Ok(())
    }
}
