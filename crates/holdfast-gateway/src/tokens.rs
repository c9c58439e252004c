//! Reconnection tokens: 32 random bytes, hex encoded, handed to the client once. Only their
//! SHA-256 (hex) is stored, in the room's state; presented tokens are compared in constant time.

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh reconnection token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a token: its SHA-256. 32 bytes in memory (a room keeps one or two per
/// member); 64 hex digits when serialised, as the cluster store keeps it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| serde::de::Error::custom("a token hash is 64 hex digits"))?;
        Ok(TokenHash(bytes))
    }
}

/// The stored form of a token: its SHA-256.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// Compares two stored forms in constant time.
pub fn hashes_match(a: &TokenHash, b: &TokenHash) -> bool {
    bool::from(a.0.ct_eq(&b.0))
}

/// A random stream epoch: 8 hex digits, new for every incarnation of a room's stream.
pub fn random_epoch() -> String {
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_hash_and_compare() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        let h = hash_token(&t);
        assert!(hashes_match(&hash_token(&t), &h));
        assert!(!hashes_match(&hash_token(&new_token()), &h));
    }

    #[test]
    fn a_token_hash_is_stored_as_64_hex_digits() {
        let h = hash_token("t");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json.len(), 66, "{json}");
        let back: TokenHash = serde_json::from_str(&json).unwrap();
        assert!(hashes_match(&back, &h));
        assert!(serde_json::from_str::<TokenHash>("\"abc\"").is_err());
        assert!(serde_json::from_str::<TokenHash>(&format!("\"{}\"", "z".repeat(64))).is_err());
    }
}
