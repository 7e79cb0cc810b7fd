//! tar-split: what a layer's tar holds beyond the content its BFC file keeps, so the tar can be
//! rebuilt byte for byte (same diff_id, so the image config and its signatures stay valid), as
//! containers/storage does with tar-split.
//!
//! While a layer converts, every byte of the uncompressed stream passes the [`Recorder`]. The
//! content of a regular file that the BFC file stores at a path is replaced by a reference
//! (path, size, CRC-32C); every other byte — headers, PAX and GNU records, padding, the end
//! blocks and whatever follows them, and content the BFC file does not keep (sparse members,
//! whiteout payloads) — is kept verbatim. [`rebuild`] writes the tar back from the side file
//! and the BFC file, checking each referenced file's size and CRC.
//!
//! Side file (`layers/<diff_id hex>.tar-split`), one zstd stream of:
//! ```text
//! "BFCTSPL1"
//! records: 0x01 RAW  len:varint bytes[len]            (len ≤ 1 MiB)
//!          0x02 FILE plen:varint path[plen] size:varint crc32c:u32le
//!          0x00 END  total:varint sha256[32]           (the tar's length and digest)
//! ```
//! Varints are unsigned LEB128 (at most 10 bytes). Nothing may follow END.
use super::{Error, Result};
use crate::bfc::{Container, Kind};
use crate::error_chain::escape;
use sha2::{Digest as _, Sha256};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"BFCTSPL1";
const RAW: u8 = 1;
const FILE: u8 = 2;
const END: u8 = 0;
/// Largest RAW record written and accepted.
pub const MAX_RAW: usize = 1 << 20;
/// Longest path accepted in a FILE record.
const MAX_PATH: usize = 4096;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A content reference being passed through.
struct Pending {
    left: u64,
    size: u64,
    path: Vec<u8>,
    crc: u32,
}

/// Records a tar stream as it is read (see the module doc). Write errors are kept and reported
/// by [`Recorder::finish`] so that reading the layer is not disturbed by them.
pub struct Recorder<'w> {
    out: zstd::stream::write::Encoder<'static, &'w mut dyn Write>,
    pos: u64,
    raw: Vec<u8>,
    pending: Option<Pending>,
    error: Option<io::Error>,
}

impl<'w> Recorder<'w> {
    pub fn new(out: &'w mut dyn Write) -> io::Result<Recorder<'w>> {
        let mut out = zstd::stream::write::Encoder::new(out, 3)?;
        out.write_all(MAGIC)?;
        Ok(Recorder {
            out,
            pos: 0,
            raw: Vec::new(),
            pending: None,
            error: None,
        })
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }

    fn flush_raw(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        let mut rec = vec![RAW];
        varint(&mut rec, self.raw.len() as u64);
        let raw = std::mem::take(&mut self.raw);
        self.emit(&rec);
        self.emit(&raw);
        self.raw = raw;
        self.raw.clear();
    }

    /// The next `size` bytes, starting at stream offset `start`, are the content of the
    /// regular file stored at `path`. Ignored (the bytes stay verbatim) unless the stream is
    /// exactly at `start`.
    pub fn content(&mut self, start: u64, size: u64, path: &[u8]) {
        if start != self.pos || size == 0 || self.pending.is_some() || path.len() > MAX_PATH {
            return;
        }
        self.flush_raw();
        self.pending = Some(Pending {
            left: size,
            size,
            path: path.to_vec(),
            crc: 0,
        });
    }

    /// Bytes of the uncompressed stream, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if let Some(p) = &mut self.pending {
                let n = usize::try_from(p.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                p.crc = crc32c::crc32c_append(p.crc, &bytes[..n]);
                p.left -= n as u64;
                self.pos += n as u64;
                bytes = &bytes[n..];
                if p.left == 0 {
                    if let Some(p) = self.pending.take() {
                        let mut rec = vec![FILE];
                        varint(&mut rec, p.path.len() as u64);
                        rec.extend_from_slice(&p.path);
                        varint(&mut rec, p.size);
                        rec.extend_from_slice(&p.crc.to_le_bytes());
                        self.emit(&rec);
                    }
                }
            } else {
                let n = (MAX_RAW - self.raw.len()).min(bytes.len());
                self.raw.extend_from_slice(&bytes[..n]);
                self.pos += n as u64;
                bytes = &bytes[n..];
                if self.raw.len() >= MAX_RAW {
                    self.flush_raw();
                }
            }
        }
    }

    /// Ends the record: the stream was `self.pos` bytes with sha256 `digest`.
    pub fn finish(mut self, digest: &[u8; 32]) -> io::Result<()> {
        if self.pending.is_some() {
            return Err(io::Error::other("the stream ended inside a file's content"));
        }
        self.flush_raw();
        let mut rec = vec![END];
        varint(&mut rec, self.pos);
        rec.extend_from_slice(digest);
        self.emit(&rec);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.finish()?.flush()
    }
}

/// Reads the side file.
struct Parser<R> {
    r: R,
    file: String,
}

impl<R: BufRead> Parser<R> {
    fn bad(&self, why: impl Into<String>) -> Error {
        Error::Stream {
            layer: self.file.clone(),
            why: format!("tar-split side file: {}", why.into()),
        }
    }

    fn byte(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.byte(),
            Err(e) => Err(self.bad(format!("reading: {e}"))),
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r
            .read_exact(buf)
            .map_err(|e| self.bad(format!("truncated ({e})")))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?.ok_or_else(|| self.bad("truncated varint"))?;
            let part = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(self.bad("varint over 64 bits"));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint over 10 bytes"))
    }
}

/// Writes the tar that `split` (read from `split_path`) describes, taking file content from
/// the layer's BFC file `c`. Each referenced file must exist with the recorded size and CRC, and
/// the output must have the recorded length and sha256; any difference is an error naming the
/// member.
pub fn rebuild(
    split: impl Read,
    split_path: &Path,
    c: &Container,
    out: &mut dyn Write,
) -> Result<()> {
    let file = split_path.display().to_string();
    let decoder = zstd::stream::read::Decoder::new(split).map_err(|e| Error::Stream {
        layer: file.clone(),
        why: format!("tar-split side file: zstd: {e}"),
    })?;
    let mut p = Parser {
        r: BufReader::new(decoder),
        file: file.clone(),
    };
    let werr = |e: io::Error| Error::Stream {
        layer: file.clone(),
        why: format!("writing the rebuilt tar: {e}"),
    };
    let mut magic = [0u8; 8];
    p.exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(p.bad("bad magic (not a bfcfs tar-split file)"));
    }
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let tag = p.byte()?.ok_or_else(|| p.bad("truncated: no END record"))?;
        match tag {
            RAW => {
                let len = p.varint()?;
                if len as usize > MAX_RAW || len == 0 {
                    return Err(p.bad(format!("RAW record of {len} bytes")));
                }
                let chunk = &mut buf[..len as usize];
                p.exact(chunk)?;
                hasher.update(&*chunk);
                out.write_all(chunk).map_err(werr)?;
                total += len;
            }
            FILE => {
                let plen = p.varint()?;
                if plen == 0 || plen as usize > MAX_PATH {
                    return Err(p.bad(format!("path of {plen} bytes")));
                }
                let mut path = vec![0u8; plen as usize];
                p.exact(&mut path)?;
                let size = p.varint()?;
                let mut crc = [0u8; 4];
                p.exact(&mut crc)?;
                let crc = u32::from_le_bytes(crc);
                let member = escape(&String::from_utf8_lossy(&path)).into_owned();
                let differs = |why: String| Error::Member {
                    layer: file.clone(),
                    member: member.clone(),
                    why: format!("the layer file does not hold the tar's content: {why}"),
                };
                let i = c
                    .find(&path)
                    .ok_or_else(|| differs("no such entry".into()))?;
                if c.kind(i) != Kind::File || c.size(i) != size {
                    return Err(differs(format!(
                        "a {} of {} bytes, the tar has a file of {size}",
                        c.kind(i).name(),
                        c.size(i)
                    )));
                }
                let mut r = c.open_reader(i).map_err(|source| Error::Bfc {
                    layer: file.clone(),
                    member: member.clone(),
                    source,
                })?;
                let mut got_crc = 0u32;
                let mut left = size;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = r
                        .read(&mut buf[..want])
                        .map_err(|e| differs(format!("reading it: {e}")))?;
                    if n == 0 {
                        return Err(differs(format!("it ends {left} bytes early")));
                    }
                    got_crc = crc32c::crc32c_append(got_crc, &buf[..n]);
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n]).map_err(werr)?;
                    left -= n as u64;
                }
                if got_crc != crc {
                    return Err(differs(format!(
                        "CRC-32C {got_crc:08x}, the tar's is {crc:08x} (a later member of the same name replaced it?)"
                    )));
                }
                total += size;
            }
            END => {
                let want_total = p.varint()?;
                let mut digest = [0u8; 32];
                p.exact(&mut digest)?;
                if p.byte()?.is_some() {
                    return Err(p.bad("bytes after the END record"));
                }
                if want_total != total {
                    return Err(p.bad(format!(
                        "the tar should be {want_total} bytes, the records make {total}"
                    )));
                }
                let got: [u8; 32] = hasher.finalize().into();
                if got != digest {
                    return Err(p.bad("the rebuilt tar's sha256 differs from the recorded one"));
                }
                return Ok(());
            }
            other => return Err(p.bad(format!("unknown record type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with PAX records, a GNU long name, a hardlink, an empty file, a large file, a
    /// whiteout with a payload, junk after the end blocks; converted with a side file, it
    /// rebuilds byte for byte, and a damaged side file or layer is refused.
    fn tricky_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        let mut add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
            h.set_size(data.len() as u64);
            b.append_data(&mut h.clone(), path, data).unwrap();
        };
        b.append_pax_extensions([("SCHILY.xattr.user.a", &b"1"[..]), ("mtime", b"1.5")])
            .unwrap();
        add(&mut b, "etc/passwd", b"root:x:0:0\n");
        add(&mut b, &format!("long/{}", "n".repeat(200)), b"long");
        add(&mut b, "empty", b"");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        add(&mut b, "big", &big);
        add(
            &mut b,
            "d/.wh.gone",
            b"payload the layer file does not keep",
        );
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Link);
        l.set_mode(0o644);
        l.set_size(0);
        b.append_link(&mut l, "big2", "big").unwrap();
        let mut t = b.into_inner().unwrap();
        t.extend_from_slice(&[0u8; 1024]);
        t.extend_from_slice(b"trailing junk after the end of the archive");
        t
    }

    fn convert(tar: &[u8]) -> (Container, Vec<u8>) {
        let mut split = Vec::new();
        let mut w = crate::bfc::Writer::new(
            std::io::Cursor::new(Vec::new()),
            crate::bfc::WriterOptions::default(),
            Path::new("t.bfc"),
        )
        .unwrap();
        let limits = crate::convert::sanitize::Limits::for_blob(tar.len() as u64);
        let stats =
            crate::convert::convert_layer_split(tar, &mut w, b"", "t", limits, &mut split).unwrap();
        assert_eq!(stats.diff_id, crate::digest::sha256_digest(tar));
        let bytes = w.finish().unwrap().into_inner();
        (Container::from_bytes("t.bfc", bytes).unwrap(), split)
    }

    #[test]
    fn a_converted_tar_rebuilds_byte_for_byte() {
        let tar = tricky_tar();
        let (c, split) = convert(&tar);
        let mut out = Vec::new();
        rebuild(&split[..], Path::new("t.tar-split"), &c, &mut out).unwrap();
        assert!(
            out == tar,
            "rebuilt {} bytes, the tar has {}",
            out.len(),
            tar.len()
        );
        // Mostly references: the side file is far smaller than the tar.
        assert!(
            split.len() * 20 < tar.len(),
            "{} vs {}",
            split.len(),
            tar.len()
        );

        // A side file cut short is refused.
        let raw = zstd::decode_all(&split[..]).unwrap();
        let cut = zstd::encode_all(&raw[..raw.len() - 5], 3).unwrap();
        let err = rebuild(&cut[..], Path::new("t.tar-split"), &c, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        // A layer file whose content differs from the tar's is refused, naming the member
        // (content bytes are not covered by the header checksum).
        let mut t3 = tar.clone();
        let at = t3.windows(10).position(|w| w == b"root:x:0:0").unwrap();
        t3[at] = b'R';
        let (c3, _) = convert(&t3);
        let err = rebuild(&split[..], Path::new("t.tar-split"), &c3, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("etc/passwd"), "{err}");
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            let mut p = Parser {
                r: &b[..],
                file: "t".into(),
            };
            assert_eq!(p.varint().unwrap(), v);
        }
        let mut p = Parser {
            r: &[0xffu8; 11][..],
            file: "t".into(),
        };
        assert!(p.varint().is_err());
    }
}
