//! Byte-level views of a BFC container for tests that lie to the parser: find the header, the
//! objects, the index entries, the bfcfs extension and the footer, edit them, and recompute the
//! index checksum so that the lie reaches the code under test instead of failing the checksum.
use bfcfs::bfc::codec::bfc_crc;

pub const HEADER: usize = 4096;
pub const FOOTER: usize = 56;
pub const OBJ_HEADER: usize = 40;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// One index record with the absolute offset of each field.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Offset of the record (its path length field).
    pub at: usize,
    pub path: Vec<u8>,
    pub obj_offset: u64,
    pub obj_size: u64,
    pub mode: u32,
    pub mtime_ns: u64,
    pub comp: u32,
    pub enc: u32,
    pub size: u64,
    pub crc: u32,
}

impl Rec {
    /// Absolute offsets of the fixed fields after the path.
    pub fn obj_offset_at(&self) -> usize {
        self.at + 4 + self.path.len()
    }
    pub fn obj_size_at(&self) -> usize {
        self.obj_offset_at() + 8
    }
    pub fn mode_at(&self) -> usize {
        self.obj_offset_at() + 16
    }
    pub fn comp_at(&self) -> usize {
        self.obj_offset_at() + 28
    }
    pub fn enc_at(&self) -> usize {
        self.obj_offset_at() + 32
    }
    pub fn size_at(&self) -> usize {
        self.obj_offset_at() + 36
    }
    pub fn crc_at(&self) -> usize {
        self.obj_offset_at() + 44
    }
    /// Offset of the payload (after object header, name and padding).
    pub fn payload_at(&self, bytes: &[u8]) -> usize {
        let o = self.obj_offset as usize;
        let name_len = u16::from_le_bytes([bytes[o + 4], bytes[o + 5]]) as usize;
        let h = OBJ_HEADER + name_len;
        o + h + (16 - h % 16) % 16
    }
    pub fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// A section of the bfcfs extension: tag, absolute offset of its body and the body length.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub tag: u32,
    /// Offset of the section's length field.
    pub len_at: usize,
    pub body: usize,
    pub len: usize,
}

/// Where everything is in a valid container.
#[derive(Debug, Clone)]
pub struct Layout {
    pub len: usize,
    pub index_offset: usize,
    pub index_size: usize,
    pub footer: usize,
    pub entries: Vec<Rec>,
    /// Offset just after the last index record (the extension starts here when present).
    pub entries_end: usize,
    pub sections: Vec<Section>,
}

impl Layout {
    pub fn parse(b: &[u8]) -> Layout {
        let footer = b.len() - FOOTER;
        assert_eq!(
            &b[footer..footer + 8],
            b"BFCFIDX\0",
            "not a valid container"
        );
        let index_size = u64_at(b, footer + 8) as usize;
        let index_offset = u64_at(b, footer + 20) as usize;
        let count = u32_at(b, index_offset + 4) as usize;
        let mut at = index_offset + 8;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let plen = u32_at(b, at) as usize;
            let f = at + 4 + plen;
            entries.push(Rec {
                at,
                path: b[at + 4..f].to_vec(),
                obj_offset: u64_at(b, f),
                obj_size: u64_at(b, f + 8),
                mode: u32_at(b, f + 16),
                mtime_ns: u64_at(b, f + 20),
                comp: u32_at(b, f + 28),
                enc: u32_at(b, f + 32),
                size: u64_at(b, f + 36),
                crc: u32_at(b, f + 44),
            });
            at = f + 48;
        }
        let entries_end = at;
        let mut sections = Vec::new();
        if entries_end + 12 <= index_offset + index_size
            && &b[entries_end..entries_end + 4] == b"BFCX"
        {
            let n = u32_at(b, entries_end + 8);
            let mut s = entries_end + 12;
            for _ in 0..n {
                let tag = u32_at(b, s);
                let len = u64_at(b, s + 4) as usize;
                sections.push(Section {
                    tag,
                    len_at: s + 4,
                    body: s + 12,
                    len,
                });
                s += 12 + len;
            }
        }
        Layout {
            len: b.len(),
            index_offset,
            index_size,
            footer,
            entries,
            entries_end,
            sections,
        }
    }

    pub fn entry(&self, path: &str) -> &Rec {
        self.entries
            .iter()
            .find(|r| r.path == path.as_bytes())
            .unwrap_or_else(|| panic!("no entry {path}"))
    }

    pub fn section(&self, tag: u32) -> Section {
        *self
            .sections
            .iter()
            .find(|s| s.tag == tag)
            .unwrap_or_else(|| panic!("no extension section {tag:#x}"))
    }

    pub fn index_range(&self) -> std::ops::Range<usize> {
        self.index_offset..self.index_offset + self.index_size
    }
}

/// Recomputes the index checksum in the footer after the index bytes were edited.
pub fn fix_index_crc(b: &mut [u8]) {
    let l = Layout::footer_fields(b);
    let crc = bfc_crc(&b[l.0..l.0 + l.1]);
    let footer = b.len() - FOOTER;
    put_u32(b, footer + 16, crc);
}

impl Layout {
    /// (index offset, index size) from the footer, without parsing the index.
    pub fn footer_fields(b: &[u8]) -> (usize, usize) {
        let footer = b.len() - FOOTER;
        (
            u64_at(b, footer + 20) as usize,
            u64_at(b, footer + 8) as usize,
        )
    }
}

/// Recomputes the header checksum after header bytes were edited.
pub fn fix_header_crc(b: &mut [u8]) {
    let crc = bfc_crc(&b[12..HEADER]);
    put_u32(b, 8, crc);
}

/// Replaces the index with `records` (re-encoded) followed by `tail` (the extension bytes, or
/// nothing), and writes a matching footer. Record offsets other than `path` are kept as given.
/// The extension's record offset table (OFFSETS) and its locator are made to match the new
/// records, as a writer of these records would have written them.
pub fn rewrite_index(b: &mut Vec<u8>, records: &[Rec], tail: &[u8]) {
    let l = Layout::parse(b);
    let old_footer = b[l.footer..].to_vec();
    let mut idx = Vec::new();
    idx.extend_from_slice(&1u32.to_le_bytes());
    idx.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let mut starts = Vec::new();
    for r in records {
        starts.push(idx.len() as u32);
        idx.extend_from_slice(&(r.path.len() as u32).to_le_bytes());
        idx.extend_from_slice(&r.path);
        idx.extend_from_slice(&r.obj_offset.to_le_bytes());
        idx.extend_from_slice(&r.obj_size.to_le_bytes());
        idx.extend_from_slice(&r.mode.to_le_bytes());
        idx.extend_from_slice(&r.mtime_ns.to_le_bytes());
        idx.extend_from_slice(&r.comp.to_le_bytes());
        idx.extend_from_slice(&r.enc.to_le_bytes());
        idx.extend_from_slice(&r.size.to_le_bytes());
        idx.extend_from_slice(&r.crc.to_le_bytes());
    }
    let ext_at = idx.len();
    let mut tail = tail.to_vec();
    if tail.len() >= 28 && tail.ends_with(b"BFCXLOC1") && &tail[..4] == b"BFCX" {
        let n = tail.len();
        tail[n - 16..n - 8].copy_from_slice(&(ext_at as u64).to_le_bytes());
        let mut s = 12;
        for _ in 0..u32_at(&tail, 8) {
            let (tag, len) = (u32_at(&tail, s), u64_at(&tail, s + 4) as usize);
            if tag == 10 && len == 4 + 4 * starts.len() {
                for (k, at) in starts.iter().enumerate() {
                    put_u32(&mut tail, s + 16 + 4 * k, *at);
                }
            }
            s += 12 + len;
        }
    }
    idx.extend_from_slice(&tail);
    b.truncate(l.index_offset);
    b.extend_from_slice(&idx);
    let mut footer = old_footer;
    put_u64(&mut footer, 8, idx.len() as u64);
    put_u32(&mut footer, 16, bfc_crc(&idx));
    put_u64(&mut footer, 20, l.index_offset as u64);
    b.extend_from_slice(&footer);
}

/// The extension bytes of a container (empty when it has none).
pub fn extension_bytes(b: &[u8]) -> Vec<u8> {
    let l = Layout::parse(b);
    b[l.entries_end..l.index_offset + l.index_size].to_vec()
}
