//! Calls to the application's HTTP hooks: `hooks.join_url` (rooms whose join policy is
//! `hook`) and `hooks.connect_url` (after a connection's token is verified).
//!
//! A hook admits only with HTTP 200 and a JSON body `{"allow": true, ...}`. Everything else
//! refuses: another status, a body that is not such JSON or larger than
//! `hooks.max_response_bytes`, no answer within `hooks.timeout_ms`, a connection failure, or
//! `hooks.max_concurrent` calls already in flight on this node (the call is not queued: it is
//! refused at once). A hook call only holds the task of the session that asked, so a hanging
//! hook never slows other sessions.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::HooksConfig;
use crate::outbound::HttpClient;
use crate::telemetry::{self, Telemetry};
use opentelemetry::trace::TraceContextExt;

/// What a hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutcome {
    /// 200 with `allow: true`; `data` is what the hook attached, if anything.
    Allow(Option<serde_json::Value>),
    /// Anything else; the reason is for logs only.
    Deny(&'static str),
}

/// The node's hook caller.
pub struct Hooks {
    config: HooksConfig,
    client: HttpClient,
    in_flight: Arc<Semaphore>,
    telemetry: Telemetry,
}

#[derive(Serialize)]
struct JoinRequest<'a> {
    user: &'a str,
    room: &'a str,
    session_id: &'a str,
    node_id: &'a str,
}

#[derive(Serialize)]
struct ConnectRequest<'a> {
    user: &'a str,
    node_id: &'a str,
}

impl Hooks {
    /// A hook caller for `[hooks]`; with tracing on, each call is a `hook` span whose context
    /// is sent as the `traceparent` header.
    pub fn new(config: &HooksConfig, telemetry: Telemetry) -> Hooks {
        Hooks {
            telemetry,
            in_flight: Arc::new(Semaphore::new(config.max_concurrent)),
            config: config.clone(),
            client: HttpClient::new(),
        }
    }

    /// Whether a connect hook is configured.
    pub fn has_connect(&self) -> bool {
        !self.config.connect_url.is_empty()
    }

    /// Asks `hooks.join_url` whether `user` may join `room`.
    pub async fn join(
        &self,
        user: &str,
        room: &str,
        session_id: &str,
        node_id: &str,
    ) -> HookOutcome {
        let body = JoinRequest {
            user,
            room,
            session_id,
            node_id,
        };
        self.call("join", &self.config.join_url, &body).await
    }

    /// Asks `hooks.connect_url` whether `user` may connect; admits when none is configured.
    pub async fn connect(&self, user: &str, node_id: &str) -> HookOutcome {
        if !self.has_connect() {
            return HookOutcome::Allow(None);
        }
        self.call(
            "connect",
            &self.config.connect_url,
            &ConnectRequest { user, node_id },
        )
        .await
    }

    async fn call<T: Serialize>(&self, hook: &'static str, url: &str, body: &T) -> HookOutcome {
        if !self.telemetry.enabled() {
            return self.call_with(url, body, None).await;
        }
        let Some(cx) = self.telemetry.start(
            "hook",
            opentelemetry::trace::SpanKind::Client,
            &opentelemetry::Context::current(),
            vec![opentelemetry::KeyValue::new("holdfast.hook", hook)],
        ) else {
            return self.call_with(url, body, None).await;
        };
        let tp = telemetry::traceparent_of(&cx);
        let outcome = self.call_with(url, body, tp.as_deref()).await;
        match &outcome {
            HookOutcome::Allow(_) => telemetry::end(&cx, "allow", false),
            HookOutcome::Deny(why) => {
                cx.span()
                    .set_attribute(opentelemetry::KeyValue::new("holdfast.reason", *why));
                telemetry::end(&cx, "deny", false);
            }
        }
        outcome
    }

    async fn call_with<T: Serialize>(
        &self,
        url: &str,
        body: &T,
        traceparent: Option<&str>,
    ) -> HookOutcome {
        if url.is_empty() {
            return HookOutcome::Deny("no hook URL configured");
        }
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return HookOutcome::Deny("too many hook calls in flight");
        };
        let Ok(body) = serde_json::to_vec(body) else {
            return HookOutcome::Deny("cannot encode the request");
        };
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let reply = self
            .client
            .post_json(
                url,
                body,
                traceparent,
                timeout,
                self.config.max_response_bytes,
            )
            .await;
        let outcome = match reply {
            Ok(r) if r.status == 200 => decide(&r.body),
            Ok(_) => HookOutcome::Deny("hook answered with a status other than 200"),
            Err(crate::outbound::CallError::Timeout) => HookOutcome::Deny("hook timed out"),
            Err(_) => HookOutcome::Deny("hook call failed"),
        };
        if let HookOutcome::Deny(reason) = &outcome {
            tracing::debug!(url, reason, "hook refused");
        }
        outcome
    }
}

/// Reads a 200 body: `{"allow": true, "data": ...}` admits.
fn decide(body: &[u8]) -> HookOutcome {
    #[derive(serde::Deserialize)]
    struct Answer {
        allow: bool,
        #[serde(default)]
        data: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer { allow: true, data }) => HookOutcome::Allow(data),
        Ok(_) => HookOutcome::Deny("hook answered allow: false"),
        Err(_) => HookOutcome::Deny("hook answer is not {\"allow\": bool}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_true_admits() {
        assert_eq!(decide(br#"{"allow":true}"#), HookOutcome::Allow(None));
        assert_eq!(
            decide(br#"{"allow":true,"data":{"role":"mod"}}"#),
            HookOutcome::Allow(Some(serde_json::json!({"role": "mod"})))
        );
        assert!(matches!(
            decide(br#"{"allow":false}"#),
            HookOutcome::Deny(_)
        ));
        assert!(matches!(
            decide(br#"{"allow":"yes"}"#),
            HookOutcome::Deny(_)
        ));
        assert!(matches!(decide(b"nope"), HookOutcome::Deny(_)));
    }
}
