//! `[auth]` (keys, JWKS), the room join policy and `[hooks]`: who may connect and join.

use serde::{Deserialize, Serialize};

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret shared with the application that mints tokens. Empty means development
    /// mode: the binary generates a random secret for the run and says so.
    pub hmac_secret: String,
    /// How long an unauthenticated connection may wait before sending `auth`.
    pub timeout_ms: u64,
    /// Clock skew tolerated when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Further verification keys, chosen by the token header's `kid` (`[[auth.keys]]`).
    pub keys: Vec<KeyConfig>,
    /// A JWKS document (`http://` URL) with public keys chosen by `kid`. Empty: none.
    pub jwks_url: String,
    /// How long a fetched JWKS is used before it is fetched again in the background.
    pub jwks_cache_secs: u64,
    /// Least time between two fetches of the JWKS (a token with an unknown `kid` triggers one).
    pub jwks_min_refresh_secs: u64,
    /// Time limit of one JWKS fetch, connection included.
    pub jwks_timeout_ms: u64,
    /// Largest JWKS response accepted, in bytes.
    pub jwks_max_bytes: usize,
    /// Accepted `iss` values; empty: `iss` is not checked.
    pub issuer: Vec<String>,
    /// Accepted `aud` values; empty: `aud` is not checked.
    pub audience: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hmac_secret: String::new(),
            timeout_ms: 10_000,
            leeway_secs: 0,
            keys: Vec::new(),
            jwks_url: String::new(),
            jwks_cache_secs: 300,
            jwks_min_refresh_secs: 30,
            jwks_timeout_ms: 5_000,
            jwks_max_bytes: 256 * 1024,
            issuer: Vec::new(),
            audience: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Whether any real verification key is configured (a secret, a key or a JWKS).
    pub fn has_keys(&self) -> bool {
        !self.hmac_secret.is_empty() || !self.keys.is_empty() || !self.jwks_url.is_empty()
    }
}

/// One `[[auth.keys]]` entry: exactly one of `secret` (HS*) or `public_key` (PEM, RS*/PS*,
/// ES*, EdDSA).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// The `kid` tokens name this key with; empty: tokens without a `kid` may use it.
    pub kid: String,
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`,
    /// `ES256`, `ES384` or `EdDSA`.
    pub alg: String,
    /// The shared secret of an HS* key.
    pub secret: String,
    /// The PEM public key of an asymmetric key (the binary fills it from `public_key_file`).
    pub public_key: String,
    /// A file holding the PEM public key; read by the binary at start.
    pub public_key_file: String,
}

/// How a room's joins are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMode {
    /// Any authenticated user may join.
    Open,
    /// The connection token's `rooms` claim, or a join token for the room, must allow it.
    Token,
    /// The application's `hooks.join_url` decides.
    Hook,
}

pub use crate::room::options::RoomsConfig;

/// `[hooks]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// `http://` URL POSTed `{user, room, session_id, node_id}` for rooms with `join = "hook"`.
    pub join_url: String,
    /// `http://` URL POSTed `{user, node_id}` after a connection's token is verified; empty:
    /// not called.
    pub connect_url: String,
    /// Time limit of one hook call, connection included; a late answer refuses.
    pub timeout_ms: u64,
    /// Most hook calls in flight on this node; a call beyond it is refused at once.
    pub max_concurrent: usize,
    /// Largest hook response accepted, in bytes; a larger one refuses.
    pub max_response_bytes: usize,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            join_url: String::new(),
            connect_url: String::new(),
            timeout_ms: 2_000,
            max_concurrent: 256,
            max_response_bytes: 64 * 1024,
        }
    }
}
