//! The bytes of BFC v1 as the upstream tool writes them (see docs/FORMAT.md): constants and the
//! fixed structures. Each field's comment gives its offset. All integers are little-endian.
//! Each structure's `encode` and `decode` sit side by side, so the writer and the reader cannot
//! disagree; `decode` reads through the bounds-checked [`Cursor`] and checks only what the bytes
//! themselves say (tags, magic, checksum). What a value must mean for the container as a whole
//! (ranges, sorted paths) is checked by `reader.rs`.
use super::codec::bfc_crc;
use super::cursor::Cursor;
use super::error::{Error, Result};

/// `BFCFv1\0\0` at offset 0.
pub const MAGIC: &[u8; 8] = b"BFCFv1\0\0";
pub const HEADER_SIZE: usize = 4096;
pub const FOOTER_SIZE: usize = 56;
pub const OBJ_HEADER_SIZE: usize = 40;
pub const ALIGN: usize = 16;
pub const FOOTER_IDX_TAG: &[u8; 8] = b"BFCFIDX\0";
pub const FOOTER_END_TAG: &[u8; 8] = b"BFCFEND\0";
pub const INDEX_VERSION: u32 = 1;
/// Bytes of the index header: `version u32, count u32`.
pub const INDEX_HEADER_SIZE: usize = 8;
/// Fixed part of an index entry (without the path bytes).
pub const INDEX_ENTRY_FIXED: usize = 52;

pub const TYPE_FILE: u8 = 1;
pub const TYPE_DIR: u8 = 2;
pub const TYPE_SYMLINK: u8 = 3;
/// Object type used by bfcfs for devices, fifos and sockets (upstream accepts any type byte).
pub const TYPE_SPECIAL: u8 = 4;

pub const COMP_NONE: u8 = 0;
pub const COMP_ZSTD: u8 = 1;
pub const ENC_NONE: u8 = 0;
pub const ENC_CHACHA20_POLY1305: u8 = 1;

pub const FEATURE_ZSTD: u64 = 1 << 0;
pub const FEATURE_AEAD: u64 = 1 << 1;
/// bfcfs extension section present after the index entries (docs/FORMAT.md).
pub const FEATURE_BFCFS_EXT: u64 = 1 << 16;

/// Upstream stores content this small raw even when compression was asked for.
pub const MIN_COMPRESS_SIZE: u64 = 64;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// Bytes of padding that make `len` a multiple of 16.
pub fn pad16(len: usize) -> usize {
    (ALIGN - len % ALIGN) % ALIGN
}

/// Offset of an object's payload relative to the object start.
pub fn payload_offset(name_len: usize) -> usize {
    OBJ_HEADER_SIZE + name_len + pad16(OBJ_HEADER_SIZE + name_len)
}

/// The 4096-byte header. Offsets: 0 magic, 8 checksum of bytes 12..4096, 12 block size,
/// 16 feature bits, 24 UUID, 40 salt (16 bytes used of 32), 72 reserved.
#[derive(Debug, Clone)]
pub struct Header {
    pub block_size: u32,
    pub features: u64,
    pub uuid: [u8; 16],
    pub salt: [u8; 32],
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.features.to_le_bytes());
        b[24..40].copy_from_slice(&self.uuid);
        b[40..72].copy_from_slice(&self.salt);
        let crc = bfc_crc(&b[12..]);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads the header and checks its magic and checksum.
    pub fn decode(c: &mut Cursor<'_>) -> Result<Header> {
        let start = c.offset();
        let mut h = Cursor::new(c.file(), c.bytes(HEADER_SIZE, "header")?, start);
        if h.bytes(8, "magic")? != MAGIC {
            return Err(Error::NotBfc {
                file: h.file().to_path_buf(),
                what: "wrong magic at offset 0 (expected BFCFv1)".into(),
            });
        }
        let stored = h.u32("header checksum")?;
        let computed = bfc_crc(h.rest());
        if stored != computed {
            return Err(Error::BadChecksum {
                file: h.file().to_path_buf(),
                what: "header".into(),
                offset: start + 8,
                stored,
                computed,
            });
        }
        Ok(Header {
            block_size: h.u32("block size")?,
            features: h.u64("features")?,
            uuid: h.array("uuid")?,
            salt: h.array("salt")?,
        })
    }
}

/// The 40-byte object header. Offsets: 0 type, 1 compression, 2 encryption, 3 reserved,
/// 4 name length, 6 padding, 8 mode, 12 mtime ns, 20 original size, 28 stored size, 36 checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjHeader {
    pub obj_type: u8,
    pub comp: u8,
    pub enc: u8,
    pub name_len: u16,
    pub mode: u32,
    pub mtime_ns: u64,
    pub orig_size: u64,
    pub stored_size: u64,
    pub crc: u32,
}

impl ObjHeader {
    /// The header of an object for `path` whose sizes and checksum are still zero (set them once
    /// the payload is known). The path's length was checked to fit in 16 bits.
    pub fn start(obj_type: u8, comp: u8, enc: u8, path: &[u8], mode: u32, mtime_ns: i64) -> Self {
        ObjHeader {
            obj_type,
            comp,
            enc,
            name_len: path.len() as u16,
            mode,
            mtime_ns: mtime_ns as u64,
            orig_size: 0,
            stored_size: 0,
            crc: 0,
        }
    }

    pub fn encode(&self) -> [u8; OBJ_HEADER_SIZE] {
        let mut b = [0u8; OBJ_HEADER_SIZE];
        b[0] = self.obj_type;
        b[1] = self.comp;
        b[2] = self.enc;
        b[4..6].copy_from_slice(&self.name_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.mode.to_le_bytes());
        b[12..20].copy_from_slice(&self.mtime_ns.to_le_bytes());
        b[20..28].copy_from_slice(&self.orig_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.stored_size.to_le_bytes());
        b[36..40].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    pub fn decode(c: &mut Cursor<'_>) -> Result<ObjHeader> {
        let obj_type = c.u8("object type")?;
        let comp = c.u8("object compression")?;
        let enc = c.u8("object encryption")?;
        let _reserved = c.u8("object reserved byte")?;
        let name_len = c.u16("object name length")?;
        let _padding = c.u16("object padding")?;
        Ok(ObjHeader {
            obj_type,
            comp,
            enc,
            name_len,
            mode: c.u32("object mode")?,
            mtime_ns: c.u64("object mtime")?,
            orig_size: c.u64("object original size")?,
            stored_size: c.u64("object stored size")?,
            crc: c.u32("object checksum")?,
        })
    }
}

/// The start of the index: `version u32, entry count u32`, then the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub version: u32,
    pub count: u32,
}

impl IndexHeader {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
    }

    pub fn decode(c: &mut Cursor<'_>) -> Result<IndexHeader> {
        Ok(IndexHeader {
            version: c.u32("index version")?,
            count: c.u32("entry count")?,
        })
    }
}

/// One index record as stored: `path_len u32, path, obj_offset u64, obj_size u64, mode u32,
/// mtime_ns u64, comp u32, enc u32, orig_size u64, crc u32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRecord {
    pub path: Vec<u8>,
    pub obj_offset: u64,
    pub obj_size: u64,
    pub mode: u32,
    pub mtime_ns: u64,
    pub comp: u32,
    pub enc: u32,
    pub orig_size: u64,
    pub crc: u32,
}

impl IndexRecord {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.path.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.path);
        out.extend_from_slice(&self.obj_offset.to_le_bytes());
        out.extend_from_slice(&self.obj_size.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.comp.to_le_bytes());
        out.extend_from_slice(&self.enc.to_le_bytes());
        out.extend_from_slice(&self.orig_size.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
    }

    /// Reads one record. Field names are static strings, so a valid index decodes without
    /// formatting anything (`Container::open` decodes every record); the caller adds the entry
    /// number to an error.
    pub fn decode(c: &mut Cursor<'_>) -> Result<IndexRecord> {
        let plen = c.u32("path length")? as usize;
        Ok(IndexRecord {
            path: c.bytes(plen, "path")?.to_vec(),
            obj_offset: c.u64("object offset")?,
            obj_size: c.u64("object size")?,
            mode: c.u32("mode")?,
            mtime_ns: c.u64("mtime")?,
            comp: c.u32("compression")?,
            enc: c.u32("encryption")?,
            orig_size: c.u64("size")?,
            crc: c.u32("checksum")?,
        })
    }
}

/// One index record read in place: `rec` starts at its path length and holds the whole record
/// (`Container::open` checked that it fits). Field offsets after the path, relative to
/// `4 + path_len`: 0 obj_offset, 8 obj_size, 16 mode, 20 mtime_ns, 28 comp, 32 enc,
/// 36 orig_size, 44 crc — the layout `IndexRecord::encode_into` writes.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    rec: &'a [u8],
    plen: usize,
}

impl<'a> RecordRef<'a> {
    /// A record with an empty path and zero fields.
    pub const EMPTY: RecordRef<'static> = RecordRef {
        rec: &[0u8; INDEX_ENTRY_FIXED],
        plen: 0,
    };

    /// The record starting at `rec[0]`, or None when `rec` is too short to hold it.
    pub fn at(rec: &'a [u8]) -> Option<RecordRef<'a>> {
        let plen = u32::from_le_bytes(*rec.first_chunk::<4>()?) as usize;
        let len = plen.checked_add(INDEX_ENTRY_FIXED)?;
        Some(RecordRef {
            rec: rec.get(..len)?,
            plen,
        })
    }
    /// Bytes of the whole record.
    pub fn len(&self) -> usize {
        self.rec.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rec.is_empty()
    }
    pub fn path(&self) -> &'a [u8] {
        &self.rec[4..4 + self.plen]
    }
    fn u32_at(&self, off: usize) -> u32 {
        let at = 4 + self.plen + off;
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.rec[at..at + 4]);
        u32::from_le_bytes(b)
    }
    fn u64_at(&self, off: usize) -> u64 {
        let at = 4 + self.plen + off;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.rec[at..at + 8]);
        u64::from_le_bytes(b)
    }
    pub fn obj_offset(&self) -> u64 {
        self.u64_at(0)
    }
    pub fn obj_size(&self) -> u64 {
        self.u64_at(8)
    }
    pub fn mode(&self) -> u32 {
        self.u32_at(16)
    }
    pub fn mtime_ns(&self) -> u64 {
        self.u64_at(20)
    }
    pub fn comp(&self) -> u32 {
        self.u32_at(28)
    }
    pub fn enc(&self) -> u32 {
        self.u32_at(32)
    }
    pub fn orig_size(&self) -> u64 {
        self.u64_at(36)
    }
    pub fn crc(&self) -> u32 {
        self.u32_at(44)
    }
}

/// The 56-byte footer at EOF-56. Offsets: 0 `BFCFIDX\0`, 8 index size, 16 index checksum,
/// 20 index offset, 28 container checksum (never checked), 32 reserved, 48 `BFCFEND\0`.
#[derive(Debug, Clone, Copy)]
pub struct Footer {
    pub index_size: u64,
    pub index_crc: u32,
    pub index_offset: u64,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(FOOTER_IDX_TAG);
        b[8..16].copy_from_slice(&self.index_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.index_crc.to_le_bytes());
        b[20..28].copy_from_slice(&self.index_offset.to_le_bytes());
        b[48..56].copy_from_slice(FOOTER_END_TAG);
        b
    }

    /// Reads the footer and checks its two tags.
    pub fn decode(c: &mut Cursor<'_>) -> Result<Footer> {
        let start = c.offset();
        if c.bytes(8, "footer tag")? != FOOTER_IDX_TAG {
            return Err(Error::Corrupt {
                file: c.file().to_path_buf(),
                offset: start,
                what: "footer tag BFCFIDX missing (truncated file or bytes after the footer?)"
                    .into(),
            });
        }
        let footer = Footer {
            index_size: c.u64("index size")?,
            index_crc: c.u32("index checksum")?,
            index_offset: c.u64("index offset")?,
        };
        let _ = c.bytes(20, "footer reserved")?;
        if c.bytes(8, "footer end tag")? != FOOTER_END_TAG {
            return Err(c.corrupt("footer end tag BFCFEND missing"));
        }
        Ok(footer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cursor(bytes: &[u8]) -> Cursor<'_> {
        Cursor::new(Path::new("t.bfc"), bytes, 0)
    }

    #[test]
    fn header_round_trips_and_checks_magic_and_checksum() {
        let h = Header {
            block_size: 4096,
            features: FEATURE_ZSTD | FEATURE_BFCFS_EXT,
            uuid: [7; 16],
            salt: [9; 32],
        };
        let b = h.encode();
        let d = Header::decode(&mut cursor(&b)).unwrap();
        assert_eq!(
            (d.block_size, d.features, d.uuid, d.salt),
            (h.block_size, h.features, h.uuid, h.salt)
        );
        let mut bad = b.clone();
        bad[100] ^= 1;
        let err = Header::decode(&mut cursor(&bad)).unwrap_err();
        assert!(matches!(err, Error::BadChecksum { offset: 8, .. }), "{err}");
        let mut bad = b;
        bad[0] = b'X';
        let err = Header::decode(&mut cursor(&bad)).unwrap_err();
        assert!(err.to_string().contains("wrong magic"), "{err}");
    }

    #[test]
    fn object_header_round_trips() {
        let h = ObjHeader {
            obj_type: TYPE_FILE,
            comp: COMP_ZSTD,
            enc: ENC_CHACHA20_POLY1305,
            name_len: 300,
            mode: S_IFREG | 0o644,
            mtime_ns: 1_700_000_000_123_456_789,
            orig_size: 1 << 40,
            stored_size: 12345,
            crc: 0xdead_beef,
        };
        let b = h.encode();
        let mut c = cursor(&b);
        assert_eq!(ObjHeader::decode(&mut c).unwrap(), h);
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn index_header_and_record_round_trip() {
        let head = IndexHeader {
            version: INDEX_VERSION,
            count: 2,
        };
        let rec = IndexRecord {
            path: b"usr/bin/env".to_vec(),
            obj_offset: 4096,
            obj_size: 80,
            mode: S_IFLNK | 0o777,
            mtime_ns: 42,
            comp: u32::from(COMP_NONE),
            enc: u32::from(ENC_NONE),
            orig_size: 9,
            crc: 0x1234_5678,
        };
        let mut b = Vec::new();
        head.encode_into(&mut b);
        rec.encode_into(&mut b);
        assert_eq!(b.len(), 8 + INDEX_ENTRY_FIXED + rec.path.len());
        let mut c = cursor(&b);
        assert_eq!(IndexHeader::decode(&mut c).unwrap(), head);
        assert_eq!(IndexRecord::decode(&mut c).unwrap(), rec);
        assert_eq!(c.remaining(), 0);
        let r = RecordRef::at(&b[8..]).unwrap();
        assert_eq!(
            IndexRecord {
                path: r.path().to_vec(),
                obj_offset: r.obj_offset(),
                obj_size: r.obj_size(),
                mode: r.mode(),
                mtime_ns: r.mtime_ns(),
                comp: r.comp(),
                enc: r.enc(),
                orig_size: r.orig_size(),
                crc: r.crc(),
            },
            rec
        );
        assert_eq!(r.len(), b.len() - 8);
        assert!(RecordRef::at(&b[8..b.len() - 1]).is_none());
        let err = IndexRecord::decode(&mut cursor(&b[8..b.len() - 1])).unwrap_err();
        assert!(err.to_string().contains("reading checksum"), "{err}");
    }

    #[test]
    fn footer_round_trips_and_checks_tags() {
        let f = Footer {
            index_size: 999,
            index_crc: 0xabcd_ef01,
            index_offset: 8192,
        };
        let b = f.encode();
        let mut c = cursor(&b);
        let d = Footer::decode(&mut c).unwrap();
        assert_eq!(
            (d.index_size, d.index_crc, d.index_offset),
            (f.index_size, f.index_crc, f.index_offset)
        );
        assert_eq!(c.remaining(), 0);
        let mut bad = b;
        bad[48] = b'X';
        let err = Footer::decode(&mut cursor(&bad)).unwrap_err();
        assert!(err.to_string().contains("BFCFEND"), "{err}");
    }
}
