//! Loading the configuration: defaults, then a TOML file, then `HOLDFAST_*` variables
//! (`__` separates levels: `HOLDFAST_HEARTBEAT__PING_INTERVAL_MS`).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use holdfast_gateway::telemetry::{TraceSampler, TracingConfig};
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
    cfg.tracing = tracing_from(|k| std::env::var(k).ok())?;
    load_key_files(&mut cfg)?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The trace export settings from the standard `OTEL_*` variables (read through `var`): off
/// without an endpoint, with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
pub fn tracing_from(var: impl Fn(&str) -> Option<String>) -> Result<TracingConfig, String> {
    let var = |k: &str| {
        var(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let bad = |k: &str, why: &str| format!("invalid configuration: `{k}`: {why}");
    let mut t = TracingConfig::default();
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
    {
        return Ok(t);
    }
    if let Some(e) = var("OTEL_TRACES_EXPORTER").filter(|e| e != "otlp") {
        return Err(bad(
            "OTEL_TRACES_EXPORTER",
            &format!("{e:?} is not supported (otlp or none)"),
        ));
    }
    t.endpoint = match (
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(e), _) => e,
        (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
        (None, None) => return Ok(t),
    };
    if !t.endpoint.starts_with("http://") {
        return Err(bad(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "must be an http:// URL (put a TLS-terminating collector or sidecar in front)",
        ));
    }
    let protocol =
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(p) = protocol.filter(|p| p != "http/protobuf") {
        return Err(bad(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            &format!("{p:?} is not supported (http/protobuf)"),
        ));
    }
    if let Some(name) = var("OTEL_SERVICE_NAME") {
        t.service_name = name;
    }
    let ratio = |default: f64| -> Result<f64, String> {
        match var("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(default),
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| bad("OTEL_TRACES_SAMPLER_ARG", "must be a ratio in [0, 1]")),
        }
    };
    if let Some(s) = var("OTEL_TRACES_SAMPLER") {
        t.sampler = match s.as_str() {
            "always_on" => TraceSampler::AlwaysOn,
            "always_off" => TraceSampler::AlwaysOff,
            "traceidratio" => TraceSampler::Ratio(ratio(1.0)?),
            "parentbased_always_on" => TraceSampler::ParentAlwaysOn,
            "parentbased_always_off" => TraceSampler::ParentAlwaysOff,
            "parentbased_traceidratio" => TraceSampler::ParentRatio(ratio(1.0)?),
            other => {
                return Err(bad(
                    "OTEL_TRACES_SAMPLER",
                    &format!("{other:?} is not supported"),
                ))
            }
        };
    }
    let number = |k: &str| -> Result<Option<u64>, String> {
        var(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(k, "must be a whole number"))
            })
            .transpose()
    };
    let timeout = match number("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")? {
        Some(t) => Some(t),
        None => number("OTEL_EXPORTER_OTLP_TIMEOUT")?,
    };
    if let Some(ms) = timeout {
        t.timeout_ms = ms.max(1);
    }
    if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE")? {
        t.max_queue_size = (n as usize).clamp(1, 1 << 20);
    }
    if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
        t.max_export_batch_size = (n as usize).max(1);
    }
    if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY")? {
        t.scheduled_delay_ms = ms;
    }
    let headers =
        var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"));
    for pair in headers.iter().flat_map(|h| h.split(',')) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "must be key=value pairs separated by commas",
            ));
        };
        t.headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(t)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Result<TracingConfig, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tracing_from(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn tracing_is_off_without_an_endpoint_or_when_disabled() {
        assert!(!with(&[]).unwrap().enabled());
        assert!(!with(&[("OTEL_SERVICE_NAME", "x")]).unwrap().enabled());
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert!(!with(&disabled).unwrap().enabled());
    }

    #[test]
    fn tracing_reads_the_standard_variables() {
        let t = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=abc, x-team = rt"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ])
        .unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.service_name, "edge");
        assert_eq!(t.sampler, TraceSampler::ParentRatio(0.25));
        assert_eq!(t.headers[1], ("x-team".to_owned(), "rt".to_owned()));
        assert_eq!(t.max_queue_size, 100);
        let t = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:2/traces"),
        ])
        .unwrap();
        assert_eq!(t.endpoint, "http://b:2/traces");
    }

    #[test]
    fn tracing_refuses_what_it_cannot_do() {
        let e = "http://127.0.0.1:4318";
        for bad in [
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")],
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ],
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
        ] {
            assert!(with(&bad).is_err(), "{bad:?}");
        }
    }
}
