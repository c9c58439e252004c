//! Loading the configuration: defaults, then a TOML file, then `HOLDFAST_*` variables
//! (`__` separates levels: `HOLDFAST_HEARTBEAT__PING_INTERVAL_MS`).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use holdfast_gateway::Config;

/// Loads and validates the configuration; an error names the offending key.
pub fn load(file: Option<&Path>) -> Result<Config, String> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(format!("config file {} does not exist", path.display()));
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed("HOLDFAST_").split("__"));
    let cfg: Config = fig.extract().map_err(|e| {
        let key = e.path.join(".");
        if key.is_empty() {
            format!("invalid configuration: {e}")
        } else {
            format!("invalid configuration: `{key}`: {}", e.kind)
        }
    })?;
    let mut cfg = cfg;
    load_key_files(&mut cfg)?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Reads each `[[auth.keys]]` `public_key_file` into `public_key`.
fn load_key_files(cfg: &mut Config) -> Result<(), String> {
    for k in &mut cfg.auth.keys {
        if !k.public_key_file.is_empty() && k.public_key.is_empty() {
            k.public_key = std::fs::read_to_string(&k.public_key_file).map_err(|e| {
                format!(
                    "invalid configuration: `auth.keys`: cannot read public_key_file {}: {e}",
                    k.public_key_file
                )
            })?;
        }
    }
    Ok(())
}

/// The configuration as TOML with secrets redacted.
pub fn render_redacted(cfg: &Config) -> Result<String, String> {
    let mut shown = cfg.clone();
    shown.auth.hmac_secret = if shown.auth.hmac_secret.is_empty() {
        "(none: `serve` refuses to start unless in development mode)".into()
    } else {
        "(redacted)".into()
    };
    for k in &mut shown.auth.keys {
        if !k.secret.is_empty() {
            k.secret = "(redacted)".into();
        }
    }
    shown.broker.url = holdfast_redis::redact_url(&shown.broker.url);
    for key in &mut shown.api.keys {
        *key = "(redacted)".into();
    }
    toml::to_string(&shown).map_err(|e| format!("cannot render the configuration: {e}"))
}

/// A random 256-bit secret, hex encoded, for development mode.
pub fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
