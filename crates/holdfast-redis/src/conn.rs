//! Where Redis is and how commands reach it: one instance (`redis://`, `rediss://`), a Redis
//! Cluster (`redis+cluster://`, `rediss+cluster://`) or a master watched by Redis Sentinel
//! (`redis+sentinel://`, `rediss+sentinel://`). Everything above this module uses one
//! code path: a command or script touches keys of one hash tag, and [`Shared::query_groups`]
//! sends groups of such commands (one pipeline on one instance, one pipeline per group on a
//! cluster).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::Shared;

/// How to reach Redis, as parsed from `broker.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One instance: the URL as given (`redis://` or `rediss://`).
    Single(String),
    /// A Redis Cluster: one URL per seed node (`redis://` or `rediss://` each, with the
    /// credentials and parameters of the original URL).
    Cluster(Vec<String>),
    /// A master watched by Redis Sentinel: the sentinels and the master's name; the master
    /// is asked of the sentinels at start, on every reconnection and every second.
    Sentinel(SentinelTarget),
}

/// `redis+sentinel://[user:pass@]host:port,host:port/<master>[/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels, `(host, port)`.
    pub sentinels: Vec<(String, u16)>,
    /// The master's name (`sentinel monitor <name> ...`).
    pub master: String,
    /// The database on the master.
    pub db: i64,
    /// Credentials for the master (not for the sentinels).
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS to the sentinels and the master (`rediss+sentinel://`).
    pub tls: bool,
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
            "redis+sentinel" | "rediss+sentinel" => {
                let (auth, rest) = match rest.rfind('@') {
                    Some(at) => (&rest[..at], &rest[at + 1..]),
                    None => ("", rest),
                };
                let (username, password) = match auth.split_once(':') {
                    _ if auth.is_empty() => (None, None),
                    Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
                    None => (Some(auth.to_owned()), None),
                };
                let (hosts, path) = rest
                    .split_once('/')
                    .ok_or_else(|| "a sentinel URL ends with /<master name>".to_owned())?;
                let mut path = path.split('/');
                let master = path.next().unwrap_or("").to_owned();
                if master.is_empty() {
                    return Err("a sentinel URL ends with /<master name>".to_owned());
                }
                let db = match path.next() {
                    None | Some("") => 0,
                    Some(d) => d
                        .parse::<i64>()
                        .map_err(|_| "the database after the master name is a number".to_owned())?,
                };
                let mut sentinels = Vec::new();
                for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                    let (host, port) = h
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                        .ok_or_else(|| format!("`{h}` is not host:port"))?;
                    sentinels.push((host, port));
                }
                if sentinels.is_empty() {
                    return Err("a sentinel URL names at least one sentinel host:port".to_owned());
                }
                Ok(Target::Sentinel(SentinelTarget {
                    sentinels,
                    master,
                    db,
                    username,
                    password,
                    tls: scheme.starts_with("rediss"),
                }))
            }
            _ => Err("must start with redis://, rediss://, redis+cluster://, \
                 rediss+cluster://, redis+sentinel:// or rediss+sentinel://"
                .to_owned()),
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }
}

/// The command connection: reconnects by itself; cheap to clone.
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// The connection to the current master, and the slot holding the newest one (with its
    /// address): a clone takes the newest.
    Sentinel(ConnectionManager, Arc<RwLock<(String, ConnectionManager)>>),
}

impl Clone for Conn {
    fn clone(&self) -> Conn {
        match self {
            Conn::Single(c) => Conn::Single(c.clone()),
            Conn::Cluster(c) => Conn::Cluster(c.clone()),
            Conn::Sentinel(_, slot) => {
                let now = slot.read().unwrap_or_else(|e| e.into_inner()).1.clone();
                Conn::Sentinel(now, slot.clone())
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) | Conn::Sentinel(c, _) => c.req_packed_command(cmd),
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
            Conn::Single(c) | Conn::Sentinel(c, _) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) | Conn::Sentinel(c, _) => c.get_db(),
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

/// A client for the master the sentinels name now (each sentinel tried in turn; the master
/// must answer `ROLE` as a master).
pub(crate) async fn sentinel_master(t: &SentinelTarget, tls: &Tls) -> RedisResult<redis::Client> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    let addrs = t.sentinels.iter().map(|(host, port)| {
        if t.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut b = SentinelClientBuilder::new(addrs, t.master.clone(), SentinelServerType::Master)?
        .set_client_to_redis_db(t.db);
    if let Some(u) = &t.username {
        b = b.set_client_to_redis_username(u.clone());
    }
    if let Some(p) = &t.password {
        b = b.set_client_to_redis_password(p.clone());
    }
    if t.tls {
        b = b
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if tls.ca_pem.is_some() {
            b = b
                .set_client_to_redis_certificates(certs(tls))
                .set_client_to_sentinel_certificates(certs(tls));
        }
    }
    let mut client = b.build()?;
    tokio::time::timeout(Duration::from_secs(3), client.async_get_client())
        .await
        .map_err(|_| RedisError::from((ErrorKind::IoError, "the sentinels did not answer")))?
}

async fn manager(client: redis::Client) -> RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_millis(crate::RESPONSE_TIMEOUT_MS))
        .set_number_of_retries(2)
        .set_max_delay(1000);
    client.get_connection_manager_with_config(cfg).await
}

/// Opens the command connection.
pub(crate) async fn open(target: &Target, tls: &Tls) -> RedisResult<Conn> {
    match target {
        Target::Single(url) => Ok(Conn::Single(manager(single_client(url, tls)?).await?)),
        Target::Sentinel(t) => {
            let client = sentinel_master(t, tls).await?;
            let addr = client.get_connection_info().addr.to_string();
            let conn = manager(client).await?;
            Ok(Conn::Sentinel(
                conn.clone(),
                Arc::new(RwLock::new((addr, conn))),
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
            Conn::Single(_) | Conn::Sentinel(..) => {
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
                let mut conn = self.conn.clone();
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

impl Shared {
    /// With Sentinel: asks the sentinels for the master and, when it moved (a failover),
    /// points the command connection at the new one. Nothing otherwise.
    pub(crate) async fn follow_master(&self) {
        let (Target::Sentinel(t), Conn::Sentinel(_, slot)) = (&self.target, &self.conn) else {
            return;
        };
        let client = match sentinel_master(t, &self.tls).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no master from the Redis sentinels");
                return;
            }
        };
        let addr = client.get_connection_info().addr.to_string();
        let current = slot.read().unwrap_or_else(|e| e.into_inner()).0.clone();
        if addr == current {
            return;
        }
        match manager(client).await {
            Ok(conn) => {
                tracing::warn!(old = %current, new = %addr, master = %t.master, "the Redis master moved (Sentinel failover); following it");
                *slot.write().unwrap_or_else(|e| e.into_inner()) = (addr, conn);
            }
            Err(e) => {
                tracing::warn!(error = %e, new = %addr, "cannot connect to the new Redis master yet")
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
        assert_eq!(
            Target::parse("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2"),
            Ok(Target::Sentinel(super::SentinelTarget {
                sentinels: vec![("s1".into(), 26379), ("s2".into(), 26380)],
                master: "mymaster".into(),
                db: 2,
                username: None,
                password: Some("pw".into()),
                tls: false,
            }))
        );
        assert!(Target::parse("redis+sentinel://s1:26379").is_err());
        assert!(Target::parse("redis+sentinel://s1:26379/").is_err());
        assert!(Target::parse("redis+sentinel://s1/m").is_err());
    }
}
