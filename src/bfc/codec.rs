//! Pure functions over bytes: the BFC checksum, ChaCha20-Poly1305 as a stream, key derivation.
//!
//! The AEAD is RFC 8439 ChaCha20-Poly1305 (what libsodium's `crypto_aead_chacha20poly1305_ietf`
//! and the `chacha20poly1305` crate compute), built from the `chacha20` and `poly1305` crates so
//! that content streams with bounded memory and a read at any offset can decrypt just its range
//! (ChaCha20 is seekable) once the tag over the whole payload has been checked.
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use poly1305::universal_hash::{KeyInit, UniversalHash};
use poly1305::Poly1305;
use zeroize::Zeroize;

pub const NONCE_SIZE: usize = 12;
pub const TAG_SIZE: usize = 16;
pub const KEY_SIZE: usize = 32;
pub const SALT_SIZE: usize = 16;

/// The BFC checksum: CRC-32C polynomial with initial value 0 and no final XOR (what upstream's
/// SSE4.2 path computes; not the standard CRC-32C).
pub fn bfc_crc(data: &[u8]) -> u32 {
    bfc_crc_append(0, data)
}

/// Continues a BFC checksum over more bytes.
pub fn bfc_crc_append(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// `bfc_crc` of `a ‖ b` from `bfc_crc(a)`, the standard CRC-32C of `b` and its length: the
/// writer learns the index header last (its entry count) but checksums the rest as it goes.
pub fn bfc_crc_join(crc_a: u32, crc32c_b: u32, len_b: u64) -> u32 {
    // bfc_crc_append(c, b) = !crc32c_append(!c, b), and crc32c_append(x, b) is
    // crc32c_combine(x, crc32c(b), len(b)) for any x.
    !crc32c::crc32c_combine(!crc_a, crc32c_b, len_b as usize)
}

/// `bfc_crc` of a large buffer on two threads (each half, then combined).
pub fn bfc_crc_parallel(data: &[u8]) -> u32 {
    if data.len() < 4 << 20 {
        return bfc_crc(data);
    }
    let (a, b) = data.split_at(data.len() / 2);
    let (ca, cb) = std::thread::scope(|s| {
        let t = s.spawn(|| crc32c::crc32c(b));
        let ca = crc32c::crc32c_append(!0, a);
        (ca, t.join().unwrap_or_else(|_| crc32c::crc32c(b)))
    });
    !crc32c::crc32c_combine(ca, cb, b.len())
}

/// A key as the user gives it. Password keys are stretched with Argon2id using the salt in the
/// container header.
#[derive(Clone)]
pub enum Key {
    Password(Vec<u8>),
    Raw([u8; KEY_SIZE]),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Password(_) => f.write_str("Key::Password(..)"),
            Key::Raw(_) => f.write_str("Key::Raw(..)"),
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        match self {
            Key::Password(p) => p.zeroize(),
            Key::Raw(k) => k.zeroize(),
        }
    }
}

impl Key {
    /// Reads a keyfile: its first 32 bytes are the key (as upstream does).
    pub fn from_keyfile(path: &std::path::Path) -> std::io::Result<Key> {
        let data = std::fs::read(path)?;
        if data.len() < KEY_SIZE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "keyfile {} has {} bytes, needs at least {KEY_SIZE}",
                    path.display(),
                    data.len()
                ),
            ));
        }
        let mut k = [0u8; KEY_SIZE];
        k.copy_from_slice(&data[..KEY_SIZE]);
        Ok(Key::Raw(k))
    }

    /// The 32-byte content key. Argon2id t=3, m=64 MiB, p=1 (libsodium's
    /// `crypto_pwhash(..., OPSLIMIT_MODERATE-like 3, 64 MiB, ARGON2ID13)` as upstream calls it).
    pub fn derive(&self, salt: &[u8; SALT_SIZE]) -> Result<ContentKey, String> {
        match self {
            Key::Raw(k) => Ok(ContentKey(*k)),
            Key::Password(p) => {
                let params = argon2::Params::new(65536, 3, 1, Some(KEY_SIZE))
                    .map_err(|e| format!("argon2 parameters: {e}"))?;
                let a = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = [0u8; KEY_SIZE];
                a.hash_password_into(p, salt, &mut out)
                    .map_err(|e| format!("argon2: {e}"))?;
                Ok(ContentKey(out))
            }
        }
    }
}

/// A derived 32-byte ChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct ContentKey(pub [u8; KEY_SIZE]);

impl Drop for ContentKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Poly1305 over a stream of bytes, padding only at the end (RFC 8439 section 2.8).
struct StreamMac {
    mac: Poly1305,
    buf: [u8; 16],
    buf_len: usize,
}

impl StreamMac {
    fn update(&mut self, mut data: &[u8]) {
        if self.buf_len > 0 {
            let take = (16 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 16 {
                return;
            }
            self.mac.update(&[self.buf.into()]);
            self.buf_len = 0;
        }
        let full = data.len() / 16 * 16;
        for block in data[..full].chunks_exact(16) {
            let mut b = [0u8; 16];
            b.copy_from_slice(block);
            self.mac.update(&[b.into()]);
        }
        let rest = &data[full..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    fn pad(&mut self) {
        if self.buf_len > 0 {
            self.mac.update_padded(&self.buf[..self.buf_len]);
            self.buf_len = 0;
        }
    }
}

/// Encrypts or authenticates one payload incrementally: `nonce ‖ ciphertext ‖ tag` with the
/// entry path as associated data.
pub struct AeadStream {
    cipher: ChaCha20,
    mac: StreamMac,
    ad_len: u64,
    ct_len: u64,
}

impl AeadStream {
    pub fn new(key: &ContentKey, nonce: &[u8; NONCE_SIZE], ad: &[u8]) -> AeadStream {
        let mut cipher = ChaCha20::new((&key.0).into(), nonce.into());
        let mut block0 = [0u8; 64];
        cipher.apply_keystream(&mut block0);
        let mut mac = StreamMac {
            mac: Poly1305::new(block0[..32].into()),
            buf: [0; 16],
            buf_len: 0,
        };
        block0.zeroize();
        mac.update(ad);
        mac.pad();
        AeadStream {
            cipher,
            mac,
            ad_len: ad.len() as u64,
            ct_len: 0,
        }
    }

    /// Encrypts `data` in place and adds the ciphertext to the tag.
    pub fn encrypt(&mut self, data: &mut [u8]) {
        self.cipher.apply_keystream(data);
        self.mac.update(data);
        self.ct_len += data.len() as u64;
    }

    /// Adds ciphertext to the tag without decrypting it (verification pass).
    pub fn authenticate(&mut self, ciphertext: &[u8]) {
        self.mac.update(ciphertext);
        self.ct_len += ciphertext.len() as u64;
    }

    /// Decrypts `data` in place after adding it to the tag.
    pub fn decrypt(&mut self, data: &mut [u8]) {
        self.mac.update(data);
        self.ct_len += data.len() as u64;
        self.cipher.apply_keystream(data);
    }

    pub fn tag(mut self) -> [u8; TAG_SIZE] {
        self.mac.pad();
        let mut lens = [0u8; 16];
        lens[..8].copy_from_slice(&self.ad_len.to_le_bytes());
        lens[8..].copy_from_slice(&self.ct_len.to_le_bytes());
        self.mac.update(&lens);
        self.mac.mac.finalize().into()
    }

    /// Constant-time comparison of the computed tag with the stored one.
    pub fn verify(self, stored: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let tag = self.tag();
        stored.len() == TAG_SIZE && bool::from(tag.ct_eq(stored))
    }
}

/// Decrypts `data` (ciphertext starting at byte `offset` of the message) in place, without
/// authentication: only for payloads whose tag was already verified.
pub fn decrypt_range(key: &ContentKey, nonce: &[u8; NONCE_SIZE], offset: u64, data: &mut [u8]) {
    let mut cipher = ChaCha20::new((&key.0).into(), nonce.into());
    // Block 0 is the Poly1305 key; the message starts at block 1.
    cipher.seek(64 + offset);
    cipher.apply_keystream(data);
}

/// Fresh random bytes for nonces, salts and UUIDs.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, Payload};

    #[test]
    fn joined_checksum_is_the_checksum_of_both() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for cut in [0, 1, 8, 4096, 99_999, 100_000] {
            let (a, b) = data.split_at(cut);
            let joined = bfc_crc_join(bfc_crc(a), crc32c::crc32c(b), b.len() as u64);
            assert_eq!(joined, bfc_crc(&data), "cut at {cut}");
        }
    }

    #[test]
    fn checksum_matches_upstream_vectors() {
        assert_eq!(bfc_crc(b"123456789"), 0x58E3_FA20);
        assert_eq!(bfc_crc(b"hello world\n"), 0xDB9F_C7CF);
        assert_eq!(bfc_crc(b""), 0);
        let c = bfc_crc_append(bfc_crc(b"1234"), b"56789");
        assert_eq!(c, 0x58E3_FA20);
        let big: Vec<u8> = (0..(9u32 << 20) + 7)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        assert_eq!(bfc_crc_parallel(&big), bfc_crc(&big));
    }

    #[test]
    fn stream_aead_matches_rfc8439_crate() {
        let key = ContentKey([7u8; 32]);
        let nonce = [3u8; 12];
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 1000, 70001] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let ad = b"tree/some/path";
            let aead = chacha20poly1305::ChaCha20Poly1305::new((&key.0).into());
            let want = aead
                .encrypt((&nonce).into(), Payload { msg: &msg, aad: ad })
                .unwrap();
            // Encrypt in uneven pieces.
            let mut s = AeadStream::new(&key, &nonce, ad);
            let mut got = msg.clone();
            let mut pos = 0;
            let mut step = 1;
            while pos < got.len() {
                let end = (pos + step).min(got.len());
                s.encrypt(&mut got[pos..end]);
                pos = end;
                step = step * 3 + 1;
            }
            got.extend_from_slice(&s.tag());
            assert_eq!(got, want, "len {len}");
            // Random-access decryption of a middle range.
            if len > 20 {
                let mut part = want[10..20].to_vec();
                decrypt_range(&key, &nonce, 10, &mut part);
                assert_eq!(part, msg[10..20]);
            }
            let mut v = AeadStream::new(&key, &nonce, ad);
            v.authenticate(&want[..len]);
            assert!(v.verify(&want[len..]));
            let mut w = AeadStream::new(&key, &nonce, b"other");
            w.authenticate(&want[..len]);
            assert!(!w.verify(&want[len..]));
        }
    }
}
