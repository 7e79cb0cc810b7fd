//! Step 3 of the pipeline: one streaming pass over a layer blob into BFC entries.
//!
//! ```text
//! blob ─▶ sniff (gzip 1f 8b | zstd 28 b5 2f fd | plain) ─▶ decoder ─▶ Tally (sha256 = diff_id,
//!        byte budget) ─▶ tar::Archive ─▶ sanitize ─▶ bfc::Writer (under an optional prefix)
//! ```
//! The diff_id is the sha256 of the whole uncompressed stream, so after the last member the rest
//! of the stream (end-of-archive blocks, padding) is read through the tally as well.
pub mod sanitize;
pub mod split;
pub mod whiteout;

use crate::bfc::{self, Kind, Meta, Writer};
use crate::error_chain::escape;
use sanitize::{ancestors, clean_name, Limits};
use sha2::{Digest as _, Sha256};
use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use whiteout::Marker;

/// Errors of layer conversion; each names the layer and, when there is one, the member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer {layer}: member {member:?}: {why}")]
    Member {
        layer: String,
        member: String,
        why: String,
    },
    #[error("layer {layer}: {why}")]
    Stream { layer: String, why: String },
    #[error(
        "layer {layer}: diff_id mismatch: the image config says {expected}, the content is {found}"
    )]
    DiffId {
        layer: String,
        expected: String,
        found: String,
    },
    #[error("layer {layer}: member {member:?}")]
    Bfc {
        layer: String,
        member: String,
        #[source]
        source: bfc::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What one conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub tar_bytes: u64,
    /// Members turned into entries (whiteouts included).
    pub entries: u64,
}

/// One expansion budget per layer ([`Limits::max_total`]): every byte the layer can make the
/// writer produce is charged here once. The uncompressed tar stream is charged as it is read
/// (so a gzip or zstd bomb stops here), and a GNU sparse member is charged the part of its
/// declared size that is not in the stream (its holes) before a byte of it is written, so a
/// small blob that declares huge sparse files stops at the same cap as a compression bomb.
/// Hardlinks share their target's data and cost nothing.
#[derive(Debug)]
struct Budget {
    used: Cell<u64>,
    limit: u64,
}

impl Budget {
    /// Charges `n` bytes of `what`; the error says what overflowed the cap.
    fn charge(&self, n: u64, what: &str) -> std::result::Result<(), String> {
        let used = self.used.get().saturating_add(n);
        self.used.set(used);
        if used > self.limit {
            return Err(format!(
                "{what} take the layer past its expansion cap: it exceeds {} bytes (decompression bomb?)",
                self.limit
            ));
        }
        Ok(())
    }
}

/// Counts and hashes the uncompressed stream and charges it to the layer's budget.
struct Tally<'b, 's, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    budget: &'b Budget,
    /// Records what rebuilds the tar (split.rs), when asked for.
    split: Option<&'b RefCell<split::Recorder<'s>>>,
}

impl<R: Read> Read for Tally<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count = self.count.saturating_add(n as u64);
        self.budget
            .charge(n as u64, "the uncompressed bytes")
            .map_err(io::Error::other)?;
        self.hasher.update(&buf[..n]);
        if let Some(s) = self.split {
            s.borrow_mut().feed(&buf[..n]);
        }
        Ok(n)
    }
}

/// The compression a blob starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// Sniffs the magic bytes.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes `blob` (any supported compression) and adds each member of the tar to `writer`,
/// under `prefix` (empty for a layer file of its own, `layers/<hex>` inside a single-file
/// image). `layer` names the layer in errors.
pub fn convert_layer<W: Write + Seek>(
    blob: impl Read,
    writer: &mut Writer<W>,
    prefix: &[u8],
    layer: &str,
    limits: Limits,
) -> Result<Stats> {
    convert(blob, writer, prefix, layer, limits, None)
}

/// [`convert_layer`], also writing to `split_out` the tar-split record that rebuilds the
/// uncompressed tar from the BFC file ([`split::rebuild`]).
pub fn convert_layer_split<W: Write + Seek>(
    blob: impl Read,
    writer: &mut Writer<W>,
    prefix: &[u8],
    layer: &str,
    limits: Limits,
    split_out: &mut dyn Write,
) -> Result<Stats> {
    let rec = split::Recorder::new(split_out).map_err(|e| Error::Stream {
        layer: layer.to_string(),
        why: format!("starting the tar-split record: {e}"),
    })?;
    let rec = RefCell::new(rec);
    let stats = convert(blob, writer, prefix, layer, limits, Some(&rec))?;
    let digest = stats
        .diff_id
        .strip_prefix("sha256:")
        .and_then(|h| {
            let mut d = [0u8; 32];
            for (i, b) in d.iter_mut().enumerate() {
                *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(d)
        })
        .unwrap_or([0u8; 32]);
    rec.into_inner()
        .finish(&digest)
        .map_err(|e| Error::Stream {
            layer: layer.to_string(),
            why: format!("writing the tar-split record: {e}"),
        })?;
    Ok(stats)
}

fn convert<W: Write + Seek>(
    blob: impl Read,
    writer: &mut Writer<W>,
    prefix: &[u8],
    layer: &str,
    limits: Limits,
    split: Option<&RefCell<split::Recorder<'_>>>,
) -> Result<Stats> {
    // tar-rs quotes raw member names in its errors: escape whatever it says.
    let stream_err = |why: String| Error::Stream {
        layer: layer.to_string(),
        why: escape(&why).into_owned(),
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let head = buffered
        .fill_buf()
        .map_err(|e| stream_err(format!("reading the blob: {e}")))?;
    let decoder: Box<dyn Read> = match sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| stream_err(format!("zstd: {e}")))?,
        ),
        Compression::None => Box::new(buffered),
    };
    let budget = Budget {
        used: Cell::new(0),
        limit: limits.max_total,
    };
    let tally = Tally {
        inner: decoder,
        hasher: Sha256::new(),
        count: 0,
        budget: &budget,
        split,
    };
    let mut archive = tar::Archive::new(tally);
    let mut conv = Converter {
        writer,
        prefix,
        layer,
        limits,
        budget: &budget,
        split,
        entries: 0,
        last: String::from("(start of layer)"),
    };
    {
        let entries = archive
            .entries()
            .map_err(|e| stream_err(format!("reading the tar stream: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                stream_err(format!(
                    "reading the tar stream after member {:?}: {e}",
                    conv.last
                ))
            })?;
            conv.add(&mut entry)?;
        }
    }
    let mut tally = archive.into_inner();
    io::copy(&mut tally, &mut io::sink())
        .map_err(|e| stream_err(format!("reading the end of the tar stream: {e}")))?;
    Ok(Stats {
        diff_id: crate::digest::sha256_finish(tally.hasher),
        tar_bytes: tally.count,
        entries: conv.entries,
    })
}

struct Converter<'a, 's, W: Write + Seek> {
    writer: &'a mut Writer<W>,
    prefix: &'a [u8],
    layer: &'a str,
    limits: Limits,
    budget: &'a Budget,
    split: Option<&'a RefCell<split::Recorder<'s>>>,
    entries: u64,
    last: String,
}

impl<W: Write + Seek> Converter<'_, '_, W> {
    fn member_err(&self, member: &str, why: impl Into<String>) -> Error {
        Error::Member {
            layer: self.layer.to_string(),
            member: member.to_string(),
            why: escape(&why.into()).into_owned(),
        }
    }

    fn full(&self, path: &[u8]) -> Vec<u8> {
        if self.prefix.is_empty() {
            path.to_vec()
        } else {
            [self.prefix, b"/", path].concat()
        }
    }

    fn add<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let member = show(&raw);
        self.last = member.clone();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let path = match clean_name(&raw).map_err(|why| self.member_err(&member, why))? {
            Some(p) => p,
            None => return Ok(()), // the layer root
        };
        if whiteout::under_aufs_meta(&path) || whiteout::classify(&path) == Marker::AufsMeta {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.max_members {
            return Err(self.member_err(
                &member,
                format!("more than {} members", self.limits.max_members),
            ));
        }
        let size = entry.size();
        if size > self.limits.max_member {
            return Err(self.member_err(
                &member,
                format!(
                    "declares {size} bytes, over the limit of {}",
                    self.limits.max_member
                ),
            ));
        }
        let bfc_err = |source| Error::Bfc {
            layer: self.layer.to_string(),
            member: member.clone(),
            source,
        };
        // Writing below a non-directory would go through a symlink or file of this layer.
        for a in ancestors(&path) {
            let full_a = self.full(a);
            match self.writer.kind_of(&full_a).map_err(bfc_err)? {
                None | Some(Kind::Dir) => {}
                Some(k) => {
                    return Err(self.member_err(
                        &member,
                        format!("its parent {:?} is a {} in this layer", show(a), k.name()),
                    ))
                }
            }
        }
        let meta = self.meta(entry, &member)?;
        let full = self.full(&path);
        match whiteout::classify(&path) {
            Marker::Whiteout | Marker::Opaque => {
                self.replace(&full).map_err(bfc_err)?;
                return self.writer.add_whiteout(&full, &meta).map_err(bfc_err);
            }
            Marker::Empty => return Err(self.member_err(&member, "a whiteout without a name")),
            Marker::AufsMeta | Marker::None => {}
        }
        use tar::EntryType as T;
        if kind == T::GNUSparse {
            // The stored segments come through the stream (and are charged there); the holes
            // are zeros the writer would produce out of nothing.
            let stored = entry.header().entry_size().unwrap_or(0);
            self.budget
                .charge(size.saturating_sub(stored), "the sparse file's holes")
                .map_err(|why| self.member_err(&member, why))?;
        }
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                self.replace(&full).map_err(bfc_err)?;
                // A sparse member's stored bytes are not the file's content: they stay raw.
                if let (Some(s), false) = (self.split, kind == T::GNUSparse) {
                    s.borrow_mut()
                        .content(entry.raw_file_position(), size, &full);
                }
                let got = self.writer.add_file(&full, &meta, entry).map_err(bfc_err)?;
                // GNU sparse members expand beyond their stored size.
                if got != size && kind != T::GNUSparse {
                    return Err(self.member_err(
                        &member,
                        format!("the stream ends after {got} of {size} bytes"),
                    ));
                }
            }
            T::Directory => {
                // A directory over a directory keeps what is below it (last metadata wins).
                self.writer.add_dir(&full, &meta).map_err(bfc_err)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.member_err(&member, "symlink without a target"))?
                    .into_owned();
                self.replace(&full).map_err(bfc_err)?;
                self.writer
                    .add_symlink(&full, &meta, &target)
                    .map_err(bfc_err)?;
            }
            T::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.member_err(&member, "hardlink without a target"))?
                    .into_owned();
                let target = clean_name(&raw_target)
                    .map_err(|why| self.member_err(&member, format!("hardlink target: {why}")))?
                    .ok_or_else(|| self.member_err(&member, "hardlink to the layer root"))?;
                let full_target = self.full(&target);
                if self.writer.kind_of(&full_target).map_err(bfc_err)? != Some(Kind::File)
                    || full_target == full
                {
                    return Err(self.member_err(
                        &member,
                        format!(
                            "hardlink to {:?}, which is not a regular file earlier in this layer",
                            show(&raw_target)
                        ),
                    ));
                }
                self.replace(&full).map_err(bfc_err)?;
                self.writer
                    .add_hardlink(&full, &full_target)
                    .map_err(bfc_err)?;
            }
            T::Char | T::Block | T::Fifo => {
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let k = match kind {
                    T::Char => Kind::CharDev,
                    T::Block => Kind::BlockDev,
                    _ => Kind::Fifo,
                };
                self.replace(&full).map_err(bfc_err)?;
                self.writer
                    .add_special(&full, k, &meta, (major, minor))
                    .map_err(bfc_err)?;
            }
            other => {
                return Err(self.member_err(
                    &member,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        }
        Ok(())
    }

    /// Last member wins: a directory replaced by a non-directory loses its subtree.
    fn replace(&mut self, full: &[u8]) -> bfc::Result<()> {
        if self.writer.is_dir(full)? {
            self.writer.remove_tree(full);
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, member: &str) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| self.member_err(member, format!("bad {what}: {e}"));
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        // Some writers leave uid/gid blank; that means 0, not a broken archive.
        let blank = |f: &[u8]| f.iter().all(|b| *b == 0 || *b == b' ');
        let mut uid = if blank(&h.as_old().uid) {
            0
        } else {
            h.uid().map_err(|e| bad("uid", e))?
        };
        let mut gid = if blank(&h.as_old().gid) {
            0
        } else {
            h.gid().map_err(|e| bad("gid", e))?
        };
        let mut mtime_ns = match negative_base256(&h.as_old().mtime) {
            Some(secs) => secs,
            None => i64::try_from(h.mtime().map_err(|e| bad("mtime", e))?)
                .unwrap_or(i64::MAX / 1_000_000_000),
        }
        .saturating_mul(1_000_000_000);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
            for ext in pax {
                let ext = ext.map_err(|e| bad("PAX record", e))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if !name.is_empty() {
                        xattrs.push((name.to_vec(), value.to_vec()));
                    }
                } else if key == b"uid" {
                    uid = parse_u64(value).ok_or_else(|| self.member_err(member, "bad PAX uid"))?;
                } else if key == b"gid" {
                    gid = parse_u64(value).ok_or_else(|| self.member_err(member, "bad PAX gid"))?;
                } else if key == b"mtime" {
                    mtime_ns = parse_pax_time(value)
                        .ok_or_else(|| self.member_err(member, "bad PAX mtime"))?;
                }
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .map_err(|_| self.member_err(member, format!("{what} {v} is over 2^32")))
        };
        Ok(Meta {
            mode,
            mtime_ns,
            uid: Some(id(uid, "uid")?),
            gid: Some(id(gid, "gid")?),
            xattrs,
        })
    }
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX time: `[-]SECONDS[.FRACTION]` → nanoseconds.
/// A numeric field in GNU's base-256 form holding a negative number (a pre-1970 time, as GNU
/// tar writes it: first byte 0xff, two's complement); `None` for anything else.
fn negative_base256(field: &[u8]) -> Option<i64> {
    let (&first, rest) = field.split_first()?;
    if first != 0xff || rest.len() < 8 {
        return None;
    }
    let (high, low) = rest.split_at(rest.len() - 8);
    let v = i64::from_be_bytes(low.try_into().ok()?);
    (v < 0 && high.iter().all(|&b| b == 0xff)).then_some(v)
}

fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut ns: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        ns += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    let total = secs.checked_mul(1_000_000_000)?.checked_add(ns)?;
    Some(if neg { -total } else { total })
}

/// Checks a conversion's diff_id against the config's.
pub fn check_diff_id(layer: &str, stats: &Stats, expected: &str) -> Result<()> {
    if stats.diff_id != expected {
        return Err(Error::DiffId {
            layer: layer.to_string(),
            expected: expected.to_string(),
            found: stats.diff_id.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1.5"), Some(1_500_000_000));
        assert_eq!(parse_pax_time(b"-2.25"), Some(-2_250_000_000));
        assert_eq!(
            parse_pax_time(b"1700000000.123456789123"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_pax_time(b"x"), None);
    }

    /// GNU tar's base-256 negative numbers (what `tar --format=gnu` writes for a 1960 mtime).
    #[test]
    fn negative_base256_times() {
        let mut f = [0xffu8; 12];
        f[4..].copy_from_slice(&(-315_619_200i64).to_be_bytes());
        assert_eq!(negative_base256(&f), Some(-315_619_200));
        assert_eq!(negative_base256(b"00000000000\0"), None);
        let mut pos = [0u8; 12];
        pos[0] = 0x80;
        pos[4..].copy_from_slice(&5i64.to_be_bytes());
        assert_eq!(negative_base256(&pos), None);
        f[1] = 0;
        assert_eq!(negative_base256(&f), None);
    }

    #[test]
    fn sniffs_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(sniff(b"usr/"), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
    }
}
