//! Token verification (JWT) and, for development and tests, minting.
//!
//! A token's `sub` is the user id and `exp` (Unix seconds) is required; `nbf` is honoured, and
//! `iss`/`aud` are checked when `auth.issuer`/`auth.audience` are configured. Keys:
//! - `auth.hmac_secret`: HS256, for tokens without a `kid` (or whose `kid` no other key has);
//! - `[[auth.keys]]`: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 and EdDSA keys,
//!   chosen by `kid`;
//! - `auth.jwks_url`: public keys from a JWKS document, chosen by `kid` (see [`jwks`]).
//!
//! A token's header `alg` must be the algorithm its key is configured for (a key never
//! verifies with another algorithm family). Tokens are never logged.

pub mod jwks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{
    decode, decode_header, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey,
};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, KeyConfig};

/// Most entries in a `rooms` claim or a `send` list.
pub const MAX_CLAIM_ENTRIES: usize = 1_000;
/// Longest entry of a `rooms` claim or a `send` list, in bytes.
pub const MAX_CLAIM_ENTRY_LEN: usize = 256;

/// Who a session may send direct messages to: `true`/`false`, or a list of user ids and
/// prefix patterns ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SendClaim {
    /// Everyone (`true`) or no one (`false`).
    All(bool),
    /// These users and patterns.
    Users(Vec<String>),
}

/// The claims Holdfast reads from a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Rooms the user may join where the join policy is `token`: exact names, or prefixes
    /// ending in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Users the session may send direct messages to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<SendClaim>,
    /// In a join token: the one room it admits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The device the user connects from, for `session.single_socket = "device"` (the
    /// `device` query parameter gives it when the token does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Claims {
    /// Whether the claim lists stay within their bounds.
    fn bounded(&self) -> bool {
        let ok = |list: &[String]| {
            list.len() <= MAX_CLAIM_ENTRIES
                && list
                    .iter()
                    .all(|e| !e.is_empty() && e.len() <= MAX_CLAIM_ENTRY_LEN)
        };
        !self.sub.is_empty()
            && self.sub.len() <= 256
            && self.rooms.as_deref().is_none_or(ok)
            && match &self.send {
                Some(SendClaim::Users(u)) => ok(u),
                _ => true,
            }
            && self
                .room
                .as_deref()
                .is_none_or(|r| r.len() <= MAX_CLAIM_ENTRY_LEN)
            && self
                .device
                .as_deref()
                .is_none_or(|d| d.len() <= MAX_CLAIM_ENTRY_LEN)
    }

    /// Takes `device` (a query parameter) as the device id when the token names none.
    pub fn with_device(mut self, device: Option<&str>) -> Claims {
        self.set_device(device);
        self
    }

    /// Sets `device` (the upgrade request's `device` parameter) when the token names no device.
    pub fn set_device(&mut self, device: Option<&str>) {
        if self.device.is_none() {
            self.device = device
                .filter(|d| !d.is_empty() && d.len() <= MAX_CLAIM_ENTRY_LEN)
                .map(str::to_owned);
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Malformed, badly signed, unknown key, not yet valid, wrong issuer or audience, or
    /// missing `sub`/`exp`.
    #[error("invalid token")]
    Invalid,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
}

/// One verification key.
pub(crate) struct VerifyKey {
    /// The `kid` it is chosen by; `None`: tokens without a `kid`.
    pub(crate) kid: Option<String>,
    /// The one algorithm it verifies.
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

/// Parses an algorithm name as configured.
fn parse_alg(name: &str) -> Result<Algorithm, String> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!("unsupported alg `{other}`")),
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Builds the decoding key of a configured key entry.
fn key_from_config(k: &KeyConfig) -> Result<VerifyKey, String> {
    let alg = parse_alg(&k.alg)?;
    let key = if is_hmac(alg) {
        if k.secret.is_empty() || !k.public_key.is_empty() {
            return Err(format!(
                "an {:?} key needs `secret` (and no public key)",
                alg
            ));
        }
        DecodingKey::from_secret(k.secret.as_bytes())
    } else {
        if !k.secret.is_empty() {
            return Err(format!("an {alg:?} key takes a public key, not a secret"));
        }
        if k.public_key.is_empty() {
            return Err(if k.public_key_file.is_empty() {
                format!("an {alg:?} key needs `public_key` or `public_key_file`")
            } else {
                format!("`public_key_file` {} was not loaded", k.public_key_file)
            });
        }
        let pem = k.public_key.as_bytes();
        let parsed = match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            _ => DecodingKey::from_rsa_pem(pem),
        };
        parsed.map_err(|e| format!("the public key of kid `{}` is not a valid PEM: {e}", k.kid))?
    };
    Ok(VerifyKey {
        kid: (!k.kid.is_empty()).then(|| k.kid.clone()),
        alg,
        key,
    })
}

/// Checks one `[[auth.keys]]` entry (used by configuration validation).
pub fn check_key_config(k: &KeyConfig) -> Result<(), String> {
    key_from_config(k).map(|_| ())
}

/// Checks tokens against the node's keys.
pub struct Verifier {
    /// `hmac_secret` and `[[auth.keys]]`.
    keys: Vec<VerifyKey>,
    /// The JWKS, when `auth.jwks_url` is set.
    jwks: Option<Arc<jwks::Jwks>>,
    leeway: u64,
    issuer: Vec<String>,
    audience: Vec<String>,
}

impl Verifier {
    /// A verifier for one HS256 `secret` tolerating `leeway_secs` of clock skew.
    pub fn new(secret: &str, leeway_secs: u64) -> Verifier {
        Verifier::from_config(&AuthConfig {
            hmac_secret: secret.to_owned(),
            leeway_secs,
            ..AuthConfig::default()
        })
    }

    /// A verifier for the `[auth]` section. Keys that do not parse are left out with an error
    /// logged ([`crate::Config::validate`] refuses them first).
    pub fn from_config(cfg: &AuthConfig) -> Verifier {
        let mut keys = Vec::new();
        if !cfg.hmac_secret.is_empty() {
            keys.push(VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(cfg.hmac_secret.as_bytes()),
            });
        }
        for k in &cfg.keys {
            match key_from_config(k) {
                Ok(v) => keys.push(v),
                Err(e) => tracing::error!(kid = %k.kid, "verification key left out: {e}"),
            }
        }
        let jwks = (!cfg.jwks_url.is_empty()).then(|| Arc::new(jwks::Jwks::new(cfg)));
        Verifier {
            keys,
            jwks,
            leeway: cfg.leeway_secs,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
        }
    }

    fn validation(&self, alg: Algorithm) -> jsonwebtoken::Validation {
        let mut v = jsonwebtoken::Validation::new(alg);
        v.leeway = self.leeway;
        v.set_required_spec_claims(&["exp", "sub"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        if self.issuer.is_empty() {
            v.iss = None;
        } else {
            v.set_issuer(&self.issuer);
        }
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audience);
        }
        v
    }

    fn check(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, AuthError> {
        match decode::<Claims>(token, key, &self.validation(alg)) {
            Ok(data) if data.claims.bounded() => Ok(data.claims),
            Ok(_) => Err(AuthError::Invalid),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(AuthError::Expired),
            Err(_) => Err(AuthError::Invalid),
        }
    }

    /// Verifies a token and returns its claims. With a JWKS configured, a `kid` no key has
    /// may fetch the JWKS again (at most once per `auth.jwks_min_refresh_secs`).
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        let alg = header.alg;
        if let Some(kid) = header.kid.as_deref() {
            if let Some(k) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                if k.alg != alg {
                    return Err(AuthError::Invalid);
                }
                return self.check(token, &k.key, alg);
            }
            if let Some(jwks) = &self.jwks {
                if let Some(k) = jwks.key(kid).await {
                    if !k.allows(alg) {
                        return Err(AuthError::Invalid);
                    }
                    return self.check(token, &k.key, alg);
                }
            }
        }
        // No `kid`, or one no key has: the keys without a `kid`, for this algorithm.
        let mut result = Err(AuthError::Invalid);
        for k in self.keys.iter().filter(|k| k.kid.is_none() && k.alg == alg) {
            result = self.check(token, &k.key, alg);
            if result.is_ok() {
                break;
            }
        }
        result
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
        ..Claims::default()
    };
    mint_claims(secret, &claims)
}

/// Mints an HS256 token carrying `claims` (for tests and development).
pub fn mint_claims(secret: &str, claims: &Claims) -> String {
    // Encoding HS256 with an in-memory key cannot fail for these claims.
    encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// A key to sign tokens with: a secret (HS*) or a PEM private key (RS*/PS*, ES*, EdDSA).
pub struct SigningKey {
    alg: Algorithm,
    kid: Option<String>,
    key: EncodingKey,
}

impl SigningKey {
    /// A signing key for `alg` from a secret (HS*) or PEM private key (others; EC and Ed25519
    /// keys in PKCS#8).
    pub fn new(alg: &str, material: &[u8], kid: Option<String>) -> Result<SigningKey, String> {
        let alg = parse_alg(alg)?;
        let key = match alg {
            a if is_hmac(a) => Ok(EncodingKey::from_secret(material)),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(material),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(material),
            _ => EncodingKey::from_rsa_pem(material),
        }
        .map_err(|e| format!("not a usable {alg:?} private key: {e}"))?;
        Ok(SigningKey { alg, kid, key })
    }

    /// Signs any serialisable claims.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = self.kid.clone();
        encode(&header, claims, &self.key).map_err(|e| format!("cannot sign: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_good_refuses_bad_and_expired() {
        let v = Verifier::new("s3cret", 0);
        let good = mint_token("s3cret", "alice", Duration::from_secs(60));
        assert_eq!(v.verify(&good).await.expect("valid").sub, "alice");
        let wrong = mint_token("other", "alice", Duration::from_secs(60));
        assert_eq!(v.verify(&wrong).await, Err(AuthError::Invalid));
        let expired = mint_token_until("s3cret", "alice", unix_now() - 120);
        assert_eq!(v.verify(&expired).await, Err(AuthError::Expired));
        assert_eq!(v.verify("not.a.jwt").await, Err(AuthError::Invalid));
        let empty_sub = mint_token("s3cret", "", Duration::from_secs(60));
        assert_eq!(v.verify(&empty_sub).await, Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn keys_by_kid_nbf_issuer_and_audience() {
        let cfg = AuthConfig {
            hmac_secret: "base".into(),
            keys: vec![KeyConfig {
                kid: "k2".into(),
                alg: "HS512".into(),
                secret: "second".into(),
                ..KeyConfig::default()
            }],
            issuer: vec!["https://issuer.example".into()],
            audience: vec!["holdfast".into()],
            ..AuthConfig::default()
        };
        let v = Verifier::from_config(&cfg);
        let exp = unix_now() + 60;
        let body = |extra: serde_json::Value| {
            let mut c = serde_json::json!({"sub": "u", "exp": exp, "iss": "https://issuer.example", "aud": "holdfast"});
            if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            c
        };
        let k2 = SigningKey::new("HS512", b"second", Some("k2".into())).expect("key");
        let base = SigningKey::new("HS256", b"base", None).expect("key");
        assert!(v
            .verify(&k2.sign(&body(serde_json::json!({}))).expect("sign"))
            .await
            .is_ok());
        assert!(v
            .verify(&base.sign(&body(serde_json::json!({}))).expect("sign"))
            .await
            .is_ok());
        // The kid's key with another algorithm is refused.
        let wrong_alg = SigningKey::new("HS256", b"second", Some("k2".into())).expect("key");
        assert_eq!(
            v.verify(&wrong_alg.sign(&body(serde_json::json!({}))).expect("sign"))
                .await,
            Err(AuthError::Invalid)
        );
        let later = body(serde_json::json!({"nbf": unix_now() + 3600}));
        assert_eq!(
            v.verify(&k2.sign(&later).expect("sign")).await,
            Err(AuthError::Invalid)
        );
        let bad_iss = body(serde_json::json!({"iss": "https://other.example"}));
        assert_eq!(
            v.verify(&k2.sign(&bad_iss).expect("sign")).await,
            Err(AuthError::Invalid)
        );
        let bad_aud = body(serde_json::json!({"aud": "someone-else"}));
        assert_eq!(
            v.verify(&k2.sign(&bad_aud).expect("sign")).await,
            Err(AuthError::Invalid)
        );
        let claims = body(serde_json::json!({"rooms": ["lobby", "game-*"], "send": ["bob"]}));
        let c = v
            .verify(&k2.sign(&claims).expect("sign"))
            .await
            .expect("valid");
        assert_eq!(c.rooms, Some(vec!["lobby".to_owned(), "game-*".to_owned()]));
        assert_eq!(c.send, Some(SendClaim::Users(vec!["bob".to_owned()])));
    }
}
