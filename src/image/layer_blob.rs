//! A stored layer made into a blob to send somewhere: its tar again (byte for byte from the
//! tar-split side file when the store has one, else a canonical tar of the BFC file's entries),
//! compressed as asked; or the BFC file itself, with zstd chunks. Blobs are written to a temp
//! file in the store's `tmp/` (removed when dropped) while their digests are computed.
use super::{Error, Result};
use crate::bfc::{self, Compression as BfcCompression, Container, Kind, Meta, Whiteout, Writer};
use crate::convert::split;
use crate::digest::sha256_finish;
use crate::store::{self, Store};
use sha2::{Digest as _, Sha256};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How a layer's tar is compressed in a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Gzip,
    Zstd,
}

impl TarCompression {
    /// The OCI media type of a layer blob with this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            TarCompression::None => "application/vnd.oci.image.layer.v1.tar",
            TarCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            TarCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The compression a layer media type names (OCI or Docker), if it is a tar layer.
    pub fn of_media_type(m: &str) -> Option<TarCompression> {
        match m {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(TarCompression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(TarCompression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(TarCompression::Zstd),
            _ => None,
        }
    }
}

/// A blob written to a temp file, with its digest and size.
pub struct Blob {
    pub file: tempfile::NamedTempFile,
    /// `sha256:<hex>` of the blob's bytes.
    pub digest: String,
    pub size: u64,
}

/// A layer tar blob: the blob, and the digest of the tar inside it.
pub struct TarBlob {
    pub blob: Blob,
    /// `sha256:<hex>` of the uncompressed tar (the layer's diff_id when reproduced).
    pub diff_id: String,
    /// True when the tar was rebuilt byte for byte from the side file (so `diff_id` is the
    /// original); false when it is a canonical tar of the entries.
    pub reproduced: bool,
}

/// Counts and hashes what goes through to `inner`.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn temp_blob(store: &Store) -> Result<tempfile::NamedTempFile> {
    let tmp = store.tmp_dir();
    Ok(tempfile::Builder::new()
        .prefix(&crate::atomic_file::temp_prefix("push"))
        .tempfile_in(&tmp)
        .map_err(store::io_err(&tmp))?)
}

fn open_layer(path: &Path) -> Result<Container> {
    let c = Container::open(path)?;
    if c.is_encrypted() {
        return Err(Error::BadImage {
            path: path.to_path_buf(),
            why: "the layer file is encrypted; push and save need plain layer files (pull the image again without --keyfile)".into(),
        });
    }
    Ok(c)
}

/// The layer `diff_id` (BFC file `layer`) as a tar blob compressed with `comp`: rebuilt from
/// the side file when there is one (an error if the result does not hash to `diff_id`),
/// canonical otherwise.
pub fn tar_blob(
    store: &Store,
    layer: &Path,
    diff_id: &str,
    comp: TarCompression,
) -> Result<TarBlob> {
    let c = open_layer(layer)?;
    let split_path = store.layer_split_path(diff_id)?;
    let split = match File::open(&split_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(store::Error::Io {
                path: split_path,
                source,
            }
            .into())
        }
    };
    let tmp = temp_blob(store)?;
    let handle = tmp
        .as_file()
        .try_clone()
        .map_err(store::io_err(tmp.path()))?;
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Store(store::Error::Io { path: p, source })
    };
    let tmp_path = tmp.path().to_path_buf();
    let outer = Hashing {
        inner: BufWriter::with_capacity(1 << 20, handle),
        hasher: Sha256::new(),
        len: 0,
    };
    let (outer, tar_hash, reproduced) = {
        let mut enc: Box<dyn WriteFinish<Hashing<BufWriter<File>>>> = match comp {
            TarCompression::None => Box::new(Plain(outer)),
            TarCompression::Gzip => Box::new(flate2::write::GzEncoder::new(
                outer,
                flate2::Compression::default(),
            )),
            TarCompression::Zstd => {
                Box::new(zstd::stream::write::Encoder::new(outer, 3).map_err(io_err(&tmp_path))?)
            }
        };
        let mut inner = Hashing {
            inner: &mut enc,
            hasher: Sha256::new(),
            len: 0,
        };
        let reproduced = match split {
            Some(f) => {
                split::rebuild(f, &split_path, &c, &mut inner)?;
                true
            }
            None => {
                canonical_tar(&c, &mut inner)?;
                false
            }
        };
        inner.flush().map_err(io_err(&tmp_path))?;
        let tar_hash = sha256_finish(inner.hasher);
        let outer = enc.finish_box().map_err(io_err(&tmp_path))?;
        (outer, tar_hash, reproduced)
    };
    if reproduced && tar_hash != diff_id {
        return Err(Error::BadImage {
            path: split_path,
            why: format!(
                "the layer tar rebuilt from this side file has digest {tar_hash}, not the diff_id {diff_id}; refusing to push a layer that would not match its config"
            ),
        });
    }
    let Hashing { inner, hasher, len } = outer;
    let handle = inner
        .into_inner()
        .map_err(|e| io_err(&tmp_path)(e.into_error()))?;
    handle.sync_all().map_err(io_err(&tmp_path))?;
    Ok(TarBlob {
        blob: Blob {
            file: tmp,
            digest: sha256_finish(hasher),
            size: len,
        },
        diff_id: tar_hash,
        reproduced,
    })
}

/// A compressor that gives back its output when finished.
trait WriteFinish<W>: Write {
    fn finish_box(self: Box<Self>) -> io::Result<W>;
}

struct Plain<W>(W);
impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl<W: Write> WriteFinish<W> for Plain<W> {
    fn finish_box(self: Box<Self>) -> io::Result<W> {
        Ok(self.0)
    }
}
impl<W: Write> WriteFinish<W> for flate2::write::GzEncoder<W> {
    fn finish_box(self: Box<Self>) -> io::Result<W> {
        self.finish()
    }
}
impl<W: Write> WriteFinish<W> for zstd::stream::write::Encoder<'static, W> {
    fn finish_box(self: Box<Self>) -> io::Result<W> {
        self.finish()
    }
}

/// Writes a canonical tar of container `c`'s entries in index (path) order: GNU headers (long
/// names and link targets as GNU records), PAX records for xattrs and sub-second mtimes,
/// hardlinks as links to the group's first name, whiteouts as the empty `.wh.` files they were.
/// Sockets cannot be in a layer tar and are left out (with a warning).
pub fn canonical_tar(c: &Container, out: &mut dyn Write) -> Result<()> {
    let file = c.file_name().to_path_buf();
    let terr = |path: &[u8], e: io::Error| {
        Error::Bfc(bfc::Error::Io {
            file: file.clone(),
            source: io::Error::new(
                e.kind(),
                format!(
                    "writing the tar entry {}: {e}",
                    String::from_utf8_lossy(path)
                ),
            ),
        })
    };
    let mut b = tar::Builder::new(out);
    for i in 0..c.len() {
        let e = c.entry(i)?;
        let path = Path::new(OsStr::from_bytes(&e.path));
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.perm());
        h.set_uid(u64::from(e.uid.unwrap_or(0)));
        h.set_gid(u64::from(e.gid.unwrap_or(0)));
        let secs = e.mtime_ns.div_euclid(1_000_000_000);
        let nanos = e.mtime_ns.rem_euclid(1_000_000_000);
        h.set_mtime(u64::try_from(secs).unwrap_or(0));
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if nanos != 0 || secs < 0 {
            pax.push(("mtime".into(), format_pax_time(e.mtime_ns).into_bytes()));
        }
        for (name, value) in &e.xattrs {
            match std::str::from_utf8(name) {
                Ok(n) => pax.push((format!("SCHILY.xattr.{n}"), value.clone())),
                Err(_) => log::warn!(
                    "{}: {}: an xattr name that is not UTF-8 cannot go into a PAX record; left out",
                    file.display(),
                    String::from_utf8_lossy(&e.path)
                ),
            }
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|err| terr(&e.path, err))?;
        }
        let r = match e.kind {
            Kind::File => match e.link_group {
                Some(g) if g as usize != i => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    let target = Path::new(OsStr::from_bytes(c.path(g as usize))).to_path_buf();
                    b.append_link(&mut h, path, target)
                }
                _ => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(e.size);
                    if e.whiteout != Whiteout::None || e.size == 0 {
                        b.append_data(&mut h, path, io::empty())
                    } else {
                        let mut r = c.open_reader(i)?;
                        let mut counted = ExactReader {
                            inner: &mut r,
                            left: e.size,
                        };
                        b.append_data(&mut h, path, &mut counted)
                    }
                }
            },
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty())
            }
            Kind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                let target = PathBuf::from(OsStr::from_bytes(c.symlink_target(i)?));
                b.append_link(&mut h, path, target)
            }
            Kind::CharDev | Kind::BlockDev | Kind::Fifo => {
                h.set_entry_type(match e.kind {
                    Kind::CharDev => tar::EntryType::Char,
                    Kind::BlockDev => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                h.set_size(0);
                if e.kind != Kind::Fifo {
                    let (ma, mi) = (
                        libc::major(e.rdev as libc::dev_t),
                        libc::minor(e.rdev as libc::dev_t),
                    );
                    h.set_device_major(ma).map_err(|err| terr(&e.path, err))?;
                    h.set_device_minor(mi).map_err(|err| terr(&e.path, err))?;
                }
                b.append_data(&mut h, path, io::empty())
            }
            Kind::Socket => {
                log::warn!(
                    "{}: {}: a socket cannot go into a layer tar; left out",
                    file.display(),
                    String::from_utf8_lossy(&e.path)
                );
                continue;
            }
        };
        r.map_err(|err| terr(&e.path, err))?;
    }
    b.finish().map_err(|err| terr(b"(end of archive)", err))?;
    Ok(())
}

/// Reads exactly `left` bytes of `inner` (an entry's content), failing if it ends early, so a
/// tar header's size always matches the bytes after it.
struct ExactReader<'a, R> {
    inner: &'a mut R,
    left: u64,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("content ended {} bytes early", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// PAX time for nanoseconds since the epoch: `SECONDS.NNNNNNNNN` (negative times too).
fn format_pax_time(ns: i64) -> String {
    let neg = ns < 0;
    let a = ns.unsigned_abs();
    format!(
        "{}{}.{:09}",
        if neg { "-" } else { "" },
        a / 1_000_000_000,
        a % 1_000_000_000
    )
}

/// The BFC file of a layer as pushed with `--format bfc`, and what its descriptor says.
pub struct BfcBlob {
    /// The file to send: the store's layer file itself, or a converted copy in `tmp/`.
    pub path: PathBuf,
    pub _tmp: Option<tempfile::NamedTempFile>,
    pub digest: String,
    pub size: u64,
    /// Start of the index; `[index_offset, size)` is everything a reader needs besides content.
    pub index_offset: u64,
    /// `sha256:<hex>` of `[index_offset, size)`.
    pub index_sha256: String,
}

/// Whether a layer file can be pushed as is: not encrypted, zstd compression on, and every
/// regular file larger than one chunk stored in independent chunks.
fn has_zstd_chunks(c: &Container) -> Result<bool> {
    if c.is_encrypted() || c.features() & bfc::layout::FEATURE_ZSTD == 0 {
        return Ok(false);
    }
    for i in 0..c.len() {
        if c.kind(i) == Kind::File
            && c.size(i) > u64::from(bfc::writer::DEFAULT_CHUNK_SIZE)
            && !c.entry(i)?.is_chunked()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The layer file `layer` as a BFC blob with zstd chunks: the file itself when it already is
/// one, else a copy of every entry written with zstd chunks.
pub fn bfc_blob(store: &Store, layer: &Path) -> Result<BfcBlob> {
    let c = open_layer(layer)?;
    let (path, tmp) = if has_zstd_chunks(&c)? {
        (layer.to_path_buf(), None)
    } else {
        let mut tmp = temp_blob(store)?;
        let tmp_path = tmp.path().to_path_buf();
        {
            let opts = bfc::WriterOptions {
                compression: BfcCompression::Zstd,
                ..Default::default()
            };
            let mut w = Writer::new(
                BufWriter::with_capacity(1 << 20, tmp.as_file_mut()),
                opts,
                &tmp_path,
            )?;
            copy_entries(&c, &mut w)?;
            w.finish()?.flush().map_err(|source| bfc::Error::Io {
                file: tmp_path.clone(),
                source,
            })?;
        }
        (tmp_path, Some(tmp))
    };
    let out = Container::open(&path)?;
    let (index_offset, _) = out.index_range();
    drop(out);
    let mut f = File::open(&path).map_err(store::io_err(&path))?;
    let mut whole = Sha256::new();
    let mut tail = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(store::io_err(&path))?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        let end = at + n as u64;
        if end > index_offset {
            let from = index_offset.saturating_sub(at) as usize;
            tail.update(&buf[from..n]);
        }
        at = end;
    }
    f.rewind().map_err(store::io_err(&path))?;
    Ok(BfcBlob {
        path,
        _tmp: tmp,
        digest: sha256_finish(whole),
        size: at,
        index_offset,
        index_sha256: sha256_finish(tail),
    })
}

/// Adds every entry of `c` to `w` with its metadata (hardlinks as links to the group's first
/// name, whiteouts as whiteouts).
fn copy_entries<W: Write + Seek>(c: &Container, w: &mut Writer<W>) -> Result<()> {
    for i in 0..c.len() {
        let e = c.entry(i)?;
        let meta = Meta {
            mode: e.perm(),
            mtime_ns: e.mtime_ns,
            uid: e.uid,
            gid: e.gid,
            xattrs: e.xattrs.clone(),
        };
        match e.kind {
            Kind::File if e.whiteout != Whiteout::None => w.add_whiteout(&e.path, &meta)?,
            Kind::File => match e.link_group {
                Some(g) if g as usize != i => w.add_hardlink(&e.path, c.path(g as usize))?,
                _ => {
                    let mut r = c.open_reader(i)?;
                    w.add_file(&e.path, &meta, &mut r)?;
                }
            },
            Kind::Dir => w.add_dir(&e.path, &meta)?,
            Kind::Symlink => w.add_symlink(&e.path, &meta, c.symlink_target(i)?)?,
            k => {
                let rdev = e.rdev as libc::dev_t;
                w.add_special(&e.path, k, &meta, (libc::major(rdev), libc::minor(rdev)))?
            }
        }
    }
    Ok(())
}
