//! A directory tree → an uncompressed layer tar in the store → a layer BFC file, by the same
//! conversion as a pulled layer. Used by `import` (a plain tree) and `commit` (a container's
//! upper dir, in the kernel overlayfs format).
//!
//! Entries go in byte order of their names, so the same tree gives the same digest. Hardlinks
//! stay hardlinks; sockets are skipped; xattrs travel as PAX `SCHILY.xattr.*` records, except
//! overlayfs's private `trusted.overlay.*` (bfcfs's own `trusted.overlay.bfcfs.*` included).
//!
//! In an upper dir (see [`Walk::Upper`]) a whiteout (character device 0:0) becomes an empty file
//! `.wh.NAME`, and a directory with `trusted.overlay.opaque=y` gets a `.wh..wh..opq` entry: the
//! OCI changeset encodings of the same two facts.
use super::layer::convert_with_split;
use super::{Error, Result};
use crate::bfc::WriterOptions;
use crate::digest::sha256_finish;
use crate::store::{self, BlobWriter, Store};
use crate::upper::{is_overlay_xattr, OPAQUE_XATTR};
use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How to read the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    /// Every entry is what it is.
    Plain,
    /// A container's upper dir: overlayfs whiteouts and opaque dirs become OCI ones.
    Upper,
}

/// The new layer: its descriptor (an uncompressed tar, so its digest is the diff_id) and diff_id.
pub(super) struct NewLayer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// Writes the tree at `dir` as a layer tar into the store and converts it into the layer's BFC
/// file (unless one with that diff_id is there already); the tar blob is removed afterwards, as
/// for a pulled layer.
pub(super) fn store_tree_layer(store: &Store, dir: &Path, walk: Walk) -> Result<NewLayer> {
    let mut sink = HashingSink {
        blob: BlobWriter::new(store)?,
        hasher: Sha256::new(),
    };
    {
        let mut b = tar::Builder::new(&mut sink);
        b.follow_symlinks(false);
        let mut links = HashMap::new();
        add_tree(&mut b, dir, Path::new(""), walk, &mut links)?;
        b.finish().map_err(store::io_err(dir))?;
    }
    let size = sink.blob.len();
    let diff_id = sha256_finish(sink.hasher);
    let blob = sink.blob.commit(&diff_id, Some(size))?;
    let digest = Digest::from_str(&diff_id).map_err(|e| Error::BadImage {
        path: blob.clone(),
        why: format!("digest {diff_id}: {e}"),
    })?;
    let descriptor = Descriptor::new(MediaType::ImageLayer, size, digest);
    let dest = store.layer_path(&diff_id)?;
    if !dest.exists() {
        let _lock = store.lock_layer(&diff_id)?;
        if !dest.exists() {
            convert_with_split(
                store,
                &dest,
                &WriterOptions::default(),
                &blob,
                &descriptor,
                &diff_id,
            )?;
        }
    }
    // As for a pulled layer, the BFC file replaces the blob.
    let _ = fs::remove_file(&blob);
    Ok(NewLayer {
        descriptor,
        diff_id,
    })
}

/// Bytes of the layer tar go to the blob writer and are hashed on the way (the diff_id).
struct HashingSink {
    blob: BlobWriter,
    hasher: Sha256,
}

impl io::Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.blob.write(buf).map_err(io::Error::other)?;
        self.hasher.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends the entries under `root/rel` in byte order of their names; files with several links
/// become one file and hardlinks to it (`links`: (dev, ino) → first name).
fn add_tree<W: io::Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    walk: Walk,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(store::io_err(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(store::io_err(&dir))?;
    names.sort();
    for n in names {
        let name = rel.join(&n);
        let path = root.join(&name);
        let m = fs::symlink_metadata(&path).map_err(store::io_err(&path))?;
        let ft = m.file_type();
        if ft.is_socket() {
            log::warn!(
                "{}: a socket cannot go into a layer; skipped",
                path.display()
            );
            continue;
        }
        if walk == Walk::Upper && ft.is_char_device() && m.rdev() == 0 {
            let mut wh = OsStr::new(".wh.").to_os_string();
            wh.push(&n);
            append_marker(b, &m, &rel.join(wh), &path)?;
            continue;
        }
        let mut pax = layer_xattrs(&path)?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
        // ustar numbers cannot be negative (the tar crate would wrap a pre-1970 mtime into a
        // huge one that Go's archive/tar rejects): a PAX `mtime` record carries it instead.
        if m.mtime() < 0 {
            h.set_mtime(0);
            pax.push(("mtime".into(), m.mtime().to_string().into_bytes()));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(
                pax.iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect::<Vec<_>>(),
            )
            .map_err(store::io_err(&path))?;
        }
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &name, first)
                    .map_err(store::io_err(&path))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), name.clone());
        }
        append_entry(b, &mut h, &m, &path, &name)?;
        if ft.is_dir() {
            if walk == Walk::Upper && is_opaque(&path)? {
                append_marker(b, &m, &name.join(".wh..wh..opq"), &path)?;
            }
            add_tree(b, root, &name, walk, links)?;
        }
    }
    Ok(())
}

/// Appends one entry whose header `h` carries `m`'s metadata. Built here rather than with
/// `Builder::append_path_with_name`, which names fifos and devices by their source path.
fn append_entry<W: io::Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    m: &fs::Metadata,
    path: &Path,
    name: &Path,
) -> Result<()> {
    let err = |e: io::Error| Error::from(store::io_err(path)(e));
    let ft = m.file_type();
    if ft.is_file() {
        let f = fs::File::open(path).map_err(err)?;
        return b.append_data(h, name, f).map_err(err);
    }
    h.set_size(0);
    if ft.is_symlink() {
        let target = fs::read_link(path).map_err(err)?;
        h.set_entry_type(tar::EntryType::Symlink);
        return b.append_link(h, name, target).map_err(err);
    }
    let kind = if ft.is_dir() {
        tar::EntryType::Directory
    } else if ft.is_fifo() {
        tar::EntryType::Fifo
    } else if ft.is_char_device() {
        tar::EntryType::Char
    } else {
        tar::EntryType::Block
    };
    h.set_entry_type(kind);
    if ft.is_char_device() || ft.is_block_device() {
        let rdev = m.rdev();
        h.set_device_major(libc::major(rdev)).map_err(err)?;
        h.set_device_minor(libc::minor(rdev)).map_err(err)?;
    }
    b.append_data(h, name, io::empty()).map_err(err)?;
    Ok(())
}

/// An empty regular file `name` (a whiteout or opaque marker) with `m`'s owner and mtime.
fn append_marker<W: io::Write>(
    b: &mut tar::Builder<W>,
    m: &fs::Metadata,
    name: &Path,
    from: &Path,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(m.uid().into());
    h.set_gid(m.gid().into());
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
    b.append_data(&mut h, name, io::empty())
        .map_err(store::io_err(from))?;
    Ok(())
}

/// True when the upper dir `path` carries `trusted.overlay.opaque=y`.
fn is_opaque(path: &Path) -> Result<bool> {
    let mut buf = [0u8; 4];
    match rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut buf) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        Err(rustix::io::Errno::NODATA)
        | Err(rustix::io::Errno::NOTSUP)
        | Err(rustix::io::Errno::RANGE) => Ok(false),
        Err(e) => Err(store::io_err(path)(e.into()).into()),
    }
}

/// The xattrs of `path` (not followed) that belong in a layer, as PAX record names and values:
/// all but overlayfs's private ones. A name that is not UTF-8 cannot be a PAX key; it is skipped
/// with a warning.
fn layer_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let io = |e: rustix::io::Errno| Error::from(store::io_err(path)(e.into()));
    let names = match read_sized(|buf: &mut [u8]| rustix::fs::llistxattr(path, buf)) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if is_overlay_xattr(name) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(name) else {
            log::warn!(
                "{}: xattr {:?} is not UTF-8 and cannot go into a layer; skipped",
                path.display(),
                String::from_utf8_lossy(name)
            );
            continue;
        };
        let get = |buf: &mut [u8]| rustix::fs::lgetxattr(path, OsStr::from_bytes(name), buf);
        let value = match read_sized(get) {
            Ok(v) => v,
            // Removed since it was listed.
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(io(e)),
        };
        out.push((format!("SCHILY.xattr.{text}"), value));
    }
    Ok(out)
}

/// Calls `f` with a buffer big enough for what it reads: 1 KiB, then the most an xattr name
/// list or value can be (64 KiB, XATTR_SIZE_MAX / XATTR_LIST_MAX).
fn read_sized(f: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> rustix::io::Result<Vec<u8>> {
    const MAX: usize = 64 << 10;
    let mut len = 1024;
    loop {
        let mut buf = vec![0u8; len];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if len < MAX => len = MAX,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_travel_except_overlayfs_private_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"x").unwrap();
        let set = |k: &str, v: &[u8]| {
            rustix::fs::lsetxattr(&f, k, v, rustix::fs::XattrFlags::empty()).unwrap()
        };
        set("user.note", b"kept");
        set("user.empty", b"");
        set("trusted.overlay.bfcfs.origin", b"12345678");
        set("trusted.overlay.opaque", b"y");
        let mut got = layer_xattrs(&f).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                ("SCHILY.xattr.user.empty".to_string(), vec![]),
                ("SCHILY.xattr.user.note".to_string(), b"kept".to_vec()),
            ]
        );
    }
}
