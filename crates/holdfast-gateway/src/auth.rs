//! Token verification (HS256 JWT) and, for development and tests, minting.
//!
//! A token's `sub` is the user id and `exp` (Unix seconds) is required. Tokens are never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

/// The claims Holdfast reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Malformed, badly signed, or missing `sub`/`exp`.
    #[error("invalid token")]
    Invalid,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
}

/// Checks tokens against the node's secret.
///
/// Holds the decoding key and validation rules once, so verifying a token does not rebuild them.
pub struct Verifier {
    /// The HS256 key.
    key: DecodingKey,
    /// Algorithm pinned to HS256; `exp` and `sub` required.
    validation: jsonwebtoken::Validation,
}

impl Verifier {
    /// A verifier for `secret` tolerating `leeway_secs` of clock skew.
    pub fn new(secret: &str, leeway_secs: u64) -> Verifier {
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        match decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() && data.claims.sub.len() <= 256 => {
                Ok(data.claims)
            }
            Ok(_) => Err(AuthError::Invalid),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(AuthError::Expired),
            Err(_) => Err(AuthError::Invalid),
        }
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Current Unix time in milliseconds.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Mints an HS256 token for `user` valid for `ttl`. For development and tests: production
/// tokens come from the application's own backend, signed with the same secret.
pub fn mint_token(secret: &str, user: &str, ttl: Duration) -> String {
    mint_token_until(secret, user, unix_now() + ttl.as_secs())
}

/// Mints an HS256 token for `user` expiring at `exp` (Unix seconds), which may be in the past.
pub fn mint_token_until(secret: &str, user: &str, exp: u64) -> String {
    let claims = Claims {
        sub: user.to_owned(),
        exp,
    };
    // Encoding HS256 with an in-memory key cannot fail for these claims.
    encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_good_refuses_bad_and_expired() {
        let v = Verifier::new("s3cret", 0);
        let good = mint_token("s3cret", "alice", Duration::from_secs(60));
        assert_eq!(v.verify(&good).expect("valid").sub, "alice");
        let wrong = mint_token("other", "alice", Duration::from_secs(60));
        assert_eq!(v.verify(&wrong), Err(AuthError::Invalid));
        let expired = mint_token_until("s3cret", "alice", unix_now() - 120);
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        assert_eq!(v.verify("not.a.jwt"), Err(AuthError::Invalid));
        let empty_sub = mint_token("s3cret", "", Duration::from_secs(60));
        assert_eq!(v.verify(&empty_sub), Err(AuthError::Invalid));
    }
}
