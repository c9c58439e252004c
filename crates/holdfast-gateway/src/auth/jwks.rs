//! Public keys from a JWKS document (`auth.jwks_url`), cached and chosen by `kid`.
//!
//! - The document is fetched on the first token that names a `kid`, then again in the
//!   background once it is older than `auth.jwks_cache_secs`, and at once when a token names a
//!   `kid` the cache does not hold (key rotation). Fetches are at least
//!   `auth.jwks_min_refresh_secs` apart, so tokens with made-up `kid`s cannot make the node
//!   hammer the JWKS server; one fetch runs at a time and concurrent verifications wait for it.
//! - Each fetch is bounded by `auth.jwks_timeout_ms` and `auth.jwks_max_bytes`.
//! - A failed fetch (server down, timeout, non-200, bad JSON) keeps the keys already cached:
//!   tokens signed with them keep verifying; a token with an unknown `kid` is refused
//!   (`auth_failed`) until a fetch succeeds.
//! - Only asymmetric keys are taken (RSA, EC P-256/P-384, OKP Ed25519); `oct` keys and keys
//!   without a `kid` are ignored, and an entry that does not parse is skipped, not fatal.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::AuthConfig;
use crate::outbound::HttpClient;

/// Most keys taken from one JWKS document.
const MAX_KEYS: usize = 256;

/// One key from the JWKS.
pub struct JwkKey {
    pub(crate) key: DecodingKey,
    /// The algorithm named by the key's `alg`, if any.
    alg: Option<Algorithm>,
    /// The key family's algorithms.
    family: &'static [Algorithm],
}

impl JwkKey {
    /// Whether a token signed with `alg` may be verified with this key.
    pub fn allows(&self, alg: Algorithm) -> bool {
        match self.alg {
            Some(a) => a == alg,
            None => self.family.contains(&alg),
        }
    }
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const P256: &[Algorithm] = &[Algorithm::ES256];
const P384: &[Algorithm] = &[Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<JwkKey>>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch last started.
    attempted_at: Option<Instant>,
}

/// A cached JWKS.
pub struct Jwks {
    url: String,
    cache_for: Duration,
    min_refresh: Duration,
    timeout: Duration,
    max_bytes: usize,
    client: HttpClient,
    state: RwLock<State>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// A JWKS cache for `auth.jwks_url`; nothing is fetched until a token needs it.
    pub fn new(cfg: &AuthConfig) -> Jwks {
        Jwks {
            url: cfg.jwks_url.clone(),
            cache_for: Duration::from_secs(cfg.jwks_cache_secs),
            min_refresh: Duration::from_secs(cfg.jwks_min_refresh_secs),
            timeout: Duration::from_millis(cfg.jwks_timeout_ms),
            max_bytes: cfg.jwks_max_bytes,
            client: HttpClient::new(),
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a fetch may start now (none started within `min_refresh`).
    fn may_fetch(&self, now: Instant) -> bool {
        self.read()
            .attempted_at
            .is_none_or(|t| now.duration_since(t) >= self.min_refresh)
    }

    /// The key named `kid`, fetching the document when the cache does not hold it (rate
    /// limited), or refreshing it in the background when it is stale.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Option<Arc<JwkKey>> {
        let now = Instant::now();
        let (found, stale) = {
            let s = self.read();
            let stale = s
                .fetched_at
                .is_none_or(|t| now.duration_since(t) >= self.cache_for);
            (s.keys.get(kid).cloned(), stale)
        };
        if let Some(k) = found {
            if stale && self.may_fetch(now) {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Ok(_guard) = me.fetching.try_lock() {
                        me.fetch().await;
                    }
                });
            }
            return Some(k);
        }
        if !self.may_fetch(now) {
            return None;
        }
        let started = Instant::now();
        let _guard = self.fetching.lock().await;
        // Another verification may have fetched while this one waited.
        let fetched_meanwhile = self.read().attempted_at.is_some_and(|t| t >= started);
        if !fetched_meanwhile && self.may_fetch(Instant::now()) {
            self.fetch().await;
        }
        self.read().keys.get(kid).cloned()
    }

    /// Fetches the document; on success replaces the cached keys, on failure keeps them.
    async fn fetch(&self) {
        {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            s.attempted_at = Some(Instant::now());
        }
        let reply = self
            .client
            .get(&self.url, self.timeout, self.max_bytes)
            .await;
        let keys = match reply {
            Ok(r) if r.status == 200 => match parse(&r.body) {
                Some(keys) => keys,
                None => {
                    tracing::warn!(url = %self.url, "JWKS is not a JSON key set; keeping the cached keys");
                    return;
                }
            },
            Ok(r) => {
                tracing::warn!(url = %self.url, status = r.status, "JWKS fetch refused; keeping the cached keys");
                return;
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the cached keys");
                return;
            }
        };
        tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.keys = keys;
        s.fetched_at = Some(Instant::now());
    }
}

/// The usable keys of a JWKS document; `None` when it is not one.
fn parse(body: &[u8]) -> Option<HashMap<String, Arc<JwkKey>>> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).ok()?;
    let mut out = HashMap::new();
    for v in set.keys.into_iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(v) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty()) else {
            continue;
        };
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => P256,
                EllipticCurve::P384 => P384,
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => ED,
            _ => continue,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => match ka.to_string().parse::<Algorithm>() {
                Ok(a) if family.contains(&a) => Some(a),
                _ => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.insert(kid, Arc::new(JwkKey { key, alg, family }));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_what_it_cannot_use() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "x": "not-base64!", "y": "x"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird"}
        ]});
        let keys = parse(doc.to_string().as_bytes()).expect("a key set");
        assert_eq!(keys.len(), 1);
        assert!(keys["ed"].allows(Algorithm::EdDSA));
        assert!(!keys["ed"].allows(Algorithm::HS256));
        assert!(parse(b"[]").is_none());
    }
}
