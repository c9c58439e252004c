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
    // Only `HOLDFAST_<SECTION>__<KEY>` variables are configuration: others with the prefix (for
    // example the `HOLDFAST_PORT=tcp://...` that Kubernetes injects for a Service named
    // `holdfast`) are not ours and are ignored.
    fig = fig.merge(
        Env::prefixed("HOLDFAST_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    let cfg: Config = fig.extract().map_err(describe)?;
    cfg.validate().map_err(|e| match file {
        Some(path) => format!("{}: {e}", path.display()),
        None => e.to_string(),
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

/// A figment error as one line naming where the value came from (the file, or the
/// environment variable) and the key.
fn describe(errors: figment::Error) -> String {
    let mut lines = Vec::new();
    for e in errors {
        let origin = e
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                Some(figment::Source::File(path)) => format!("{}: ", path.display()),
                Some(other) => format!("{other}: "),
                None => format!("{}: ", m.name),
            })
            .unwrap_or_default();
        let key = e.path.join(".");
        lines.push(if key.is_empty() {
            format!("{origin}invalid configuration: {}", e.kind)
        } else {
            format!("{origin}invalid configuration: `{key}`: {}", e.kind)
        });
    }
    lines.join("; ")
}

/// Everything `serve` would check before listening, without listening: the file parses with
/// no unknown key, every value is in range, and the TLS certificate and key load. Returns
/// warnings that do not prevent a start.
pub fn check(file: &Path) -> Result<Vec<String>, String> {
    let cfg = load(Some(file))?;
    if cfg.server.tls.enabled() {
        let tls = &cfg.server.tls;
        holdfast_gateway::tls::load(Path::new(&tls.cert), Path::new(&tls.key)).map_err(|e| {
            format!(
                "{}: invalid configuration: `server.tls`: {e}",
                file.display()
            )
        })?;
    }
    let mut warnings = Vec::new();
    if cfg.auth.hmac_secret.is_empty() {
        warnings.push(
            "auth.hmac_secret is empty: `serve` runs in development mode with a random secret"
                .to_owned(),
        );
    }
    if cfg.limits.allowed_origins.is_empty() {
        warnings.push(
            "limits.allowed_origins is empty: browser upgrades from every origin are accepted"
                .to_owned(),
        );
    }
    Ok(warnings)
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
