//! Tokens for many synthetic users, signed with the server's shared secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The claims Holdfast reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Signs HS256 tokens for synthetic users.
pub struct TokenMinter {
    /// The shared secret, prepared once: every connection needs a token.
    key: EncodingKey,
    /// How long each token stays valid; longer than any run so no session expires mid-run.
    ttl: Duration,
}

impl TokenMinter {
    /// A minter for the given shared secret.
    pub fn new(secret: &str, ttl: Duration) -> Self {
        TokenMinter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            ttl,
        }
    }

    /// A token for `user`, valid from now for the minter's lifetime.
    pub fn mint(&self, user: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub: user.to_owned(),
            exp: (now + self.ttl).as_secs(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn tokens_decode_with_the_shared_secret() {
        let minter = TokenMinter::new("s3cret", Duration::from_secs(3600));
        let token = minter.mint("u42").unwrap();
        let data = decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims.sub, "u42");
        assert!(data.claims.exp > 1_700_000_000);
        assert!(decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"other"),
            &Validation::new(Algorithm::HS256),
        )
        .is_err());
    }
}
