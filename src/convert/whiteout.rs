//! OCI whiteouts in layer tars, compared as bytes (a `.wh.` name that is not UTF-8 is still a
//! whiteout).
//!
//! From the OCI image spec ("Whiteouts"): a file `.wh.NAME` means NAME is removed from the lower
//! layers; `.wh..wh..opq` in a directory means all lower entries of that directory are hidden.
//! Other names starting `.wh..wh.` are AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`) and are
//! not part of the image.

/// What a member's base name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// An ordinary member.
    None,
    /// `.wh.NAME`: hides NAME below.
    Whiteout,
    /// `.wh..wh..opq`: hides the directory's lower contents.
    Opaque,
    /// `.wh..wh.*` AUFS metadata: dropped.
    AufsMeta,
    /// `.wh.` with nothing after it: malformed.
    Empty,
}

pub const PREFIX: &[u8] = b".wh.";
pub const OPAQUE: &[u8] = b".wh..wh..opq";

/// Classifies the last component of `path`.
pub fn classify(path: &[u8]) -> Marker {
    let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    if name == OPAQUE {
        Marker::Opaque
    } else if name.starts_with(b".wh..wh.") {
        Marker::AufsMeta
    } else if name == PREFIX {
        Marker::Empty
    } else if name.starts_with(PREFIX) {
        Marker::Whiteout
    } else {
        Marker::None
    }
}

/// True if some ancestor directory of `path` is AUFS metadata (its contents are dropped too).
pub fn under_aufs_meta(path: &[u8]) -> bool {
    super::sanitize::ancestors(path).any(|a| classify(a) == Marker::AufsMeta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bytes() {
        assert_eq!(classify(b"a/.wh.b"), Marker::Whiteout);
        assert_eq!(classify(b".wh.\xff\xfe"), Marker::Whiteout);
        assert_eq!(classify(b"d/.wh..wh..opq"), Marker::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), Marker::AufsMeta);
        assert_eq!(classify(b"x/.wh."), Marker::Empty);
        assert_eq!(classify(b"a.wh.b"), Marker::None);
        assert_eq!(classify(b".wh/x"), Marker::None);
        assert!(under_aufs_meta(b".wh..wh.plnk/123"));
        assert!(!under_aufs_meta(b"a/.wh.b"));
    }
}
