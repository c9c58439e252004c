//! Reconnection tokens: 32 random bytes, hex encoded, handed to the client once. Only their
//! SHA-256 (hex) is stored, in the room's state; presented tokens are compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh reconnection token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a token: its SHA-256, hex encoded.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two stored forms in constant time (for equal lengths).
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A random stream epoch: 8 hex digits, new for every incarnation of a room's stream.
pub fn random_epoch() -> String {
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hash_and_compare() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        let h = hash_token(&t);
        assert!(hashes_match(&hash_token(&t), &h));
        assert!(!hashes_match(&hash_token(&new_token()), &h));
        assert!(!hashes_match("", &h));
    }
}
