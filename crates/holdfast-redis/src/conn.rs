//! Where Redis is and how commands reach it: one instance (`redis://`, `rediss://`) or a Redis
//! Cluster (`redis+cluster://`, `rediss+cluster://`). Everything above this module uses one
//! code path: a command or script touches keys of one hash tag, and [`Shared::query_groups`]
//! sends groups of such commands (one pipeline on one instance, one pipeline per group on a
//! cluster).

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::Shared;

/// How to reach Redis, as parsed from `broker.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One instance: the URL as given (`redis://` or `rediss://`).
    Single(String),
    /// A Redis Cluster: one URL per seed node (`redis://` or `rediss://` each, with the
    /// credentials and parameters of the original URL).
    Cluster(Vec<String>),
}

impl Target {
    /// Parses `broker.url`: `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS),
    /// `redis+cluster://[user:pass@]host1:port1,host2:port2[?...]` and `rediss+cluster://...`
    /// (a cluster, given one or more seed nodes).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "must look like redis://host:port".to_owned())?;
        match scheme {
            "redis" | "rediss" => Ok(Target::Single(url.to_owned())),
            "redis+cluster" | "rediss+cluster" => {
                let tls = scheme.starts_with("rediss");
                let (auth, rest) = match rest.rfind('@') {
                    Some(at) => (&rest[..=at], &rest[at + 1..]),
                    None => ("", rest),
                };
                let (hosts, tail) = match rest.find(['/', '?']) {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                if tail.starts_with('/') && !tail.starts_with("/?") && tail != "/" {
                    let db = tail.trim_start_matches('/');
                    if !db.is_empty() && !db.starts_with('0') {
                        return Err("a cluster has database 0 only".to_owned());
                    }
                }
                let query = tail.find('?').map_or("", |i| &tail[i..]);
                let nodes: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| {
                        format!(
                            "{}://{auth}{h}/{query}",
                            if tls { "rediss" } else { "redis" }
                        )
                    })
                    .collect();
                if nodes.is_empty() {
                    return Err("a cluster URL names at least one host:port".to_owned());
                }
                Ok(Target::Cluster(nodes))
            }
            _ => Err(
                "must start with redis://, rediss://, redis+cluster:// or rediss+cluster://"
                    .to_owned(),
            ),
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }
}

/// The command connection: reconnects by itself; cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// TLS settings for `rediss://`: the CA certificate(s) (PEM) to trust besides the system's.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_pem: Option<Vec<u8>>,
}

fn certs(tls: &Tls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: tls.ca_pem.clone(),
    }
}

/// A client for one instance (with the CA of `tls` when given).
pub(crate) fn single_client(url: &str, tls: &Tls) -> RedisResult<redis::Client> {
    match &tls.ca_pem {
        Some(_) if url.starts_with("rediss://") => redis::Client::build_with_tls(url, certs(tls)),
        _ => redis::Client::open(url),
    }
}

/// A cluster client; with `push`, over RESP3 with pushes (pub/sub) sent there.
pub(crate) fn cluster_client(
    nodes: &[String],
    tls: &Tls,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> RedisResult<redis::cluster::ClusterClient> {
    let mut b = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_millis(crate::RESPONSE_TIMEOUT_MS))
        .retries(2)
        .max_retry_wait(1000);
    if tls.ca_pem.is_some() {
        b = b.certs(certs(tls));
    }
    if let Some(push) = push {
        b = b
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push);
    }
    b.build()
}

/// Opens the command connection.
pub(crate) async fn open(target: &Target, tls: &Tls) -> RedisResult<Conn> {
    match target {
        Target::Single(url) => {
            let client = single_client(url, tls)?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(Duration::from_millis(crate::RESPONSE_TIMEOUT_MS))
                .set_number_of_retries(2)
                .set_max_delay(1000);
            Ok(Conn::Single(
                client.get_connection_manager_with_config(cfg).await?,
            ))
        }
        Target::Cluster(nodes) => {
            let client = cluster_client(nodes, tls, None)?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        }
    }
}

/// Most groups in flight at once on a cluster.
const GROUPS_IN_FLIGHT: usize = 16;

impl Shared {
    /// Runs pipelines whose commands each touch keys of one hash tag (a group may not mix
    /// tags). On one instance all of them go as one pipeline; on a cluster one per group,
    /// a bounded number at a time. Each group's answers, or `None` when it failed.
    pub(crate) async fn query_groups(&self, groups: Vec<Pipeline>) -> Vec<Option<Vec<Value>>> {
        if groups.is_empty() {
            return Vec::new();
        }
        match &self.conn {
            Conn::Single(c) => {
                let mut all = redis::pipe();
                let lens: Vec<usize> = groups
                    .iter()
                    .map(|g| {
                        let mut n = 0;
                        for cmd in g.cmd_iter() {
                            all.add_command(cmd.clone());
                            n += 1;
                        }
                        n
                    })
                    .collect();
                let mut conn = c.clone();
                let r: Result<Vec<Value>, RedisError> = all.query_async(&mut conn).await;
                match r {
                    Ok(values) => {
                        let mut values = values.into_iter();
                        lens.iter()
                            .map(|n| Some(values.by_ref().take(*n).collect()))
                            .collect()
                    }
                    Err(_) => {
                        self.metrics.errors.inc();
                        groups.iter().map(|_| None).collect()
                    }
                }
            }
            Conn::Cluster(c) => {
                let each: Vec<_> = groups
                    .into_iter()
                    .map(|g| {
                        let mut conn = c.clone();
                        async move { g.query_async::<Vec<Value>>(&mut conn).await.ok() }.boxed()
                    })
                    .collect();
                futures_util::stream::iter(each)
                    .buffered(GROUPS_IN_FLIGHT)
                    .collect()
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn urls_are_parsed() {
        assert_eq!(
            Target::parse("redis://h:1/2"),
            Ok(Target::Single("redis://h:1/2".into()))
        );
        assert_eq!(
            Target::parse("rediss+cluster://u:p@a:1,b:2?protocol=3"),
            Ok(Target::Cluster(vec![
                "rediss://u:p@a:1/?protocol=3".into(),
                "rediss://u:p@b:2/?protocol=3".into()
            ]))
        );
        assert_eq!(
            Target::parse("redis+cluster://a:1, b:2/"),
            Ok(Target::Cluster(vec![
                "redis://a:1/".into(),
                "redis://b:2/".into()
            ]))
        );
        assert!(Target::parse("redis+cluster:///").is_err());
        assert!(Target::parse("redis+cluster://a:1/3").is_err());
        assert!(Target::parse("http://a").is_err());
    }
}
