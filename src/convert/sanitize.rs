//! The one place that decides what to do with hostile layer members.
//!
//! Policy (OCI image-spec "Applying changesets", and what Docker's `archive.Unpack` does):
//! - names are cleaned lexically: a leading `/` is dropped (absolute names are relative to the
//!   layer root), `.` components, repeated and trailing slashes go; `a/../b` becomes `b`;
//! - a name that climbs above the root (`../x`, `a/../../x`) is rejected, as is a name holding NUL,
//!   a component longer than 255 bytes (NAME_MAX) or a name longer than 4095 bytes (PATH_MAX);
//! - the root itself (`./`) carries no entry and is skipped;
//! - a member below a non-directory member of the same layer (`link -> /etc` then `link/passwd`)
//!   is rejected: extracting it would write through the symlink;
//! - hardlinks must name a regular file that appeared earlier in the same layer;
//! - duplicates: the last member wins (the writer replaces the index entry; a directory replaced by
//!   a non-directory takes its subtree with it);
//! - sizes are bounded: a member may not declare more than [`Limits::max_member`] bytes, and the
//!   uncompressed stream may not exceed [`Limits::max_total`] (decompression bombs).
//!
//! Nothing here touches the filesystem: members only ever become index entries of a BFC file.

/// Bounds applied to one layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest size one member may declare.
    pub max_member: u64,
    /// Largest uncompressed stream (the tar), whatever the compressed size.
    pub max_total: u64,
    /// Largest number of members.
    pub max_members: u64,
}

impl Limits {
    /// Default bounds for a layer whose compressed blob has `compressed` bytes: the tar may be
    /// at most 100× the blob plus 1 GiB, and never more than 1 TiB.
    pub fn for_blob(compressed: u64) -> Limits {
        let total = compressed
            .saturating_mul(100)
            .saturating_add(1 << 30)
            .min(1 << 40);
        Limits {
            max_member: total,
            max_total: total,
            max_members: 10_000_000,
        }
    }
}

/// Longest name accepted (Linux PATH_MAX minus the NUL).
pub const MAX_PATH: usize = 4095;
/// Longest component accepted (Linux NAME_MAX).
pub const MAX_COMPONENT: usize = 255;

/// Cleans a member name. `Ok(None)` is the layer root (nothing to add).
pub fn clean_name(raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("name climbs above the layer root (..)".into());
                }
            }
            c => {
                if c.len() > MAX_COMPONENT {
                    return Err(format!(
                        "a name component is {} bytes long (limit {MAX_COMPONENT})",
                        c.len()
                    ));
                }
                parts.push(c);
            }
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let out = parts.join(&b'/');
    if out.len() > MAX_PATH {
        return Err(format!(
            "name is {} bytes long (limit {MAX_PATH})",
            out.len()
        ));
    }
    Ok(Some(out))
}

/// Every proper ancestor of `path` (`a`, `a/b` for `a/b/c`).
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<Option<String>, String> {
        clean_name(s.as_bytes()).map(|o| o.map(|v| String::from_utf8(v).unwrap()))
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(c("./usr/bin/").unwrap().as_deref(), Some("usr/bin"));
        assert_eq!(c("/etc/passwd").unwrap().as_deref(), Some("etc/passwd"));
        assert_eq!(c("a//b/./c").unwrap().as_deref(), Some("a/b/c"));
        assert_eq!(c("a/../b").unwrap().as_deref(), Some("b"));
        assert_eq!(c("./").unwrap(), None);
        assert_eq!(c("/").unwrap(), None);
    }

    #[test]
    fn escapes_and_junk_are_rejected() {
        for bad in ["..", "../x", "a/../../x", "/../etc"] {
            assert!(c(bad).unwrap_err().contains("climbs"), "{bad}");
        }
        assert!(clean_name(b"a\0b").unwrap_err().contains("NUL"));
        assert!(c(&"x".repeat(256)).unwrap_err().contains("component"));
        assert!(c(&["y"; 2100].join("/"))
            .unwrap_err()
            .contains("limit 4095"));
    }

    #[test]
    fn ancestors_of_a_path() {
        let v: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(v, vec![&b"a"[..], &b"a/b"[..]]);
        assert_eq!(ancestors(b"a").count(), 0);
    }
}
