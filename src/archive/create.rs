//! Walks local paths into a container. Entry paths are stored as upstream `bfc create` stores
//! them: relative to the current directory, so `tree/` becomes `tree`, `tree/bin`, ...
use super::{Error, Progress, Result};
use crate::atomic_file::AtomicFile;
use crate::bfc::{self, Kind, Meta, Writer};
use std::collections::HashMap;
use std::fs;
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Record uid/gid (bfcfs does when run as root, as tar does).
    pub record_owner: bool,
    /// (dev, ino) of a file never to archive (the output being written).
    pub skip: Option<(u64, u64)>,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    pub skipped: Vec<String>,
}

/// The entry path for a command-line argument: `./a/b/` → `a/b`, `/abs/x` → `abs/x`.
pub fn entry_name(arg: &Path) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    for c in arg.components() {
        match c {
            Component::Normal(n) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(n.as_bytes());
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(Error::Refused {
                    path: arg.to_path_buf(),
                    why: "paths with '..' cannot be stored; run create from a directory above it"
                        .into(),
                })
            }
        }
    }
    Ok(out)
}

struct Walk<'a, W: Write + Seek> {
    w: &'a mut Writer<W>,
    opts: &'a CreateOptions,
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: Stats,
    progress: Progress<'a>,
}

/// Adds every path in `inputs` (recursively) to `w`.
pub fn add_paths<W: Write + Seek>(
    w: &mut Writer<W>,
    inputs: &[&Path],
    opts: &CreateOptions,
    progress: Progress<'_>,
) -> Result<Stats> {
    let mut walk = Walk {
        w,
        opts,
        links: HashMap::new(),
        stats: Stats::default(),
        progress,
    };
    for input in inputs {
        let name = entry_name(input)?;
        if name.is_empty() {
            // "." or "/": store the children without a prefix.
            for child in sorted_children(input)? {
                let n = child
                    .file_name()
                    .map(|n| n.as_bytes().to_vec())
                    .unwrap_or_default();
                walk.add(&child, n)?;
            }
        } else {
            walk.add(input, name)?;
        }
    }
    Ok(walk.stats)
}

fn sorted_children(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|r| r.map(|d| d.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    v.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(v)
}

fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// Extended attributes of `path` (not following symlinks). Unsupported filesystems give none.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(path, e.into())),
        }
        if names.len() > 1 << 24 {
            return Err(Error::io(
                path,
                std::io::Error::other("xattr list too large"),
            ));
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 1024];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) if value.len() < 1 << 20 => {
                    value.resize(value.len() * 8, 0)
                }
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(Error::io(path, e.into())),
            }
        };
        if len != usize::MAX {
            value.truncate(len);
            out.push((name.to_vec(), value));
        }
    }
    Ok(out)
}

impl<W: Write + Seek> Walk<'_, W> {
    fn meta(&self, path: &Path, md: &fs::Metadata) -> Result<Meta> {
        Ok(Meta {
            mode: md.mode() & 0o7777,
            mtime_ns: mtime_ns(md),
            uid: self.opts.record_owner.then_some(md.uid()),
            gid: self.opts.record_owner.then_some(md.gid()),
            xattrs: read_xattrs(path)?,
        })
    }

    fn add(&mut self, path: &Path, name: Vec<u8>) -> Result<()> {
        let md = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        if Some((md.dev(), md.ino())) == self.opts.skip {
            return Ok(());
        }
        let meta = self.meta(path, &md)?;
        let ft = md.file_type();
        self.stats.entries += 1;
        if ft.is_dir() {
            self.w.add_dir(&name, &meta)?;
            for child in sorted_children(path)? {
                let mut n = name.clone();
                n.push(b'/');
                n.extend_from_slice(child.file_name().map(|n| n.as_bytes()).unwrap_or_default());
                self.add(&child, n)?;
            }
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    self.w.add_hardlink(&name, first)?;
                    return Ok(());
                }
                self.links.insert((md.dev(), md.ino()), name.clone());
            }
            let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut r = ProgressRead {
                inner: std::io::BufReader::with_capacity(256 << 10, f),
                progress: self.progress,
            };
            let n = self
                .w
                .add_file_sized(&name, &meta, &mut r, Some(md.len()))?;
            self.stats.bytes += n;
        } else if ft.is_symlink() {
            let t = fs::read_link(path).map_err(|e| Error::io(path, e))?;
            self.w.add_symlink(&name, &meta, t.as_os_str().as_bytes())?;
        } else {
            let (kind, rdev) = if ft.is_char_device() {
                (Kind::CharDev, md.rdev())
            } else if ft.is_block_device() {
                (Kind::BlockDev, md.rdev())
            } else if ft.is_fifo() {
                (Kind::Fifo, 0)
            } else {
                self.stats.entries -= 1;
                self.stats
                    .skipped
                    .push(format!("{}: socket not archived", path.display()));
                return Ok(());
            };
            let dev = (libc::major(rdev), libc::minor(rdev));
            self.w.add_special(&name, kind, &meta, dev)?;
        }
        Ok(())
    }
}

struct ProgressRead<'a, R> {
    inner: R,
    progress: Progress<'a>,
}

impl<R: std::io::Read> std::io::Read for ProgressRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// A container being written to a temporary file beside its final name.
pub type FileWriter = Writer<std::io::BufWriter<fs::File>>;

/// Opens `out` for writing a container atomically and returns the writer with the output's
/// (dev, ino), so the walk can skip the file being written.
pub fn start(out: &Path, opts: bfc::WriterOptions) -> Result<(FileWriter, AtomicFile, (u64, u64))> {
    let mut af = AtomicFile::beside(out)
        .map_err(|e| Error::io(out, e))?
        .with_mode(0o644); // an ordinary file
    let f = af.file().try_clone().map_err(|e| Error::io(out, e))?;
    let md = f.metadata().map_err(|e| Error::io(out, e))?;
    let w = Writer::new(std::io::BufWriter::with_capacity(1 << 20, f), opts, out)?;
    Ok((w, af, (md.dev(), md.ino())))
}
