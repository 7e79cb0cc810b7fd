//! sha256 digests in the OCI spelling `sha256:<64 lowercase hex digits>`, computed in one place for
//! the registry client, the store and the layer converter. Imports nothing from the crate.
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    sha256_finish(Sha256::new_with_prefix(bytes))
}

/// `sha256:<hex>` of everything `hasher` was given.
pub fn sha256_finish(hasher: Sha256) -> String {
    format!("sha256:{}", hex(&hasher.finalize()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_known_input() {
        assert_eq!(
            sha256_digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }
}
