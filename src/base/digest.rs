//! A 128-bit digest of a key, for the in-memory sets a server keeps per request (the replay
//! memory, the dedupe window): 16 bytes an entry whatever the key's length, and no key held
//! in memory or written to the state file. 128 bits of SHA-256: two keys collide with odds far
//! below any hardware fault at the millions of entries a window can hold.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The first 128 bits of a key's SHA-256; written as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Digest(u128);

impl Digest {
    pub(crate) fn of(key: &str) -> Digest {
        let hash = Sha256::digest(key.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        Digest(u128::from_be_bytes(first))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:032x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        // Checked by hand: `from_str_radix` would also take a leading `+`.
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "a digest is 32 hex digits, not {text:?}"
            )));
        }
        u128::from_str_radix(&text, 16)
            .map(Digest)
            .map_err(|_| serde::de::Error::custom("a digest is 32 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_the_first_half_of_the_sha256_and_reads_back_from_its_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223 b00361a396177a9cb410ff61f20015ad
        let d = Digest::of("abc");
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(text, "\"ba7816bf8f01cfea414140de5dae2223\"");
        assert_eq!(serde_json::from_str::<Digest>(&text).unwrap(), d);
        assert_ne!(Digest::of("abd"), d);
        for bad in [
            "\"ba7816bf\"",
            "\"+a7816bf8f01cfea414140de5dae2223\"",
            "\"zz7816bf8f01cfea414140de5dae2223\"",
            "7",
        ] {
            assert!(serde_json::from_str::<Digest>(bad).is_err(), "{bad}");
        }
    }
}
