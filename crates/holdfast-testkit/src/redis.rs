//! A `redis-server` per test (or per suite) on a free port, with no persistence (or, with
//! [`Redis::start_with_snapshots`], with snapshots taken only by `SAVE`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// A redis-server of the test's own, killed on drop.
pub struct Redis {
    /// The port it listens on (127.0.0.1), kept across [`Redis::restart`].
    pub port: u16,
    child: Option<Child>,
    /// The directory of its snapshot, when it loads one at start (and of its certificate).
    dir: Option<std::path::PathBuf>,
    /// Whether it serves TLS only (`rediss://`).
    tls: bool,
}

impl Redis {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: None,
            tls: false,
        };
        r.spawn();
        r
    }

    /// Like [`Redis::start`], but snapshots are kept in a directory of its own: `SAVE` writes
    /// one, and [`Redis::restart`] loads the last one (a Redis that comes back with older
    /// data, as after a crash between snapshots).
    pub fn start_with_snapshots() -> Redis {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("holdfast-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut r = Redis {
            port,
            child: None,
            dir: Some(dir),
            tls: false,
        };
        r.spawn();
        r
    }

    /// A server that speaks TLS only, with this certificate and key (PEM); clients are not
    /// asked for a certificate. Its URL is `rediss://`.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Redis {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("holdfast-redis-tls-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::write(dir.join("cert.pem"), cert_pem).expect("write the certificate");
        std::fs::write(dir.join("key.pem"), key_pem).expect("write the key");
        let mut r = Redis {
            port,
            child: None,
            dir: Some(dir),
            tls: true,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if let (true, Some(dir)) = (self.tls, &self.dir) {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("cert.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(dir) = &self.dir {
            cmd.arg("--dir").arg(dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// The URL to connect to it.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (all data since the last snapshot is lost; everything without
    /// snapshots).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty (or from its last snapshot).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A Redis Cluster of the test's own: `masters` `redis-server --cluster-enabled yes` on free
/// ports of 127.0.0.1 (no replicas, no persistence), joined with `redis-cli --cluster create`.
/// Killed on drop.
pub struct RedisCluster {
    /// The masters' ports.
    pub ports: Vec<u16>,
    /// Their cluster bus ports (chosen free, not port + 10000, which may be out of range).
    bus_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts the servers, creates the cluster and waits until every node reports
    /// `cluster_state:ok`. A port taken by someone else meanwhile: tried again on others.
    pub fn start(masters: usize) -> RedisCluster {
        let mut last = String::new();
        for _ in 0..3 {
            match RedisCluster::try_start(masters) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("no Redis Cluster: {last}");
    }

    fn try_start(masters: usize) -> Result<RedisCluster, String> {
        // Distinct ports for the clients and the cluster bus.
        let mut all: Vec<u16> = Vec::new();
        while all.len() < masters * 2 {
            let p = free_port();
            if !all.contains(&p) {
                all.push(p);
            }
        }
        let bus_ports = all.split_off(masters);
        let ports = all;
        let dir = std::env::temp_dir().join(format!(
            "holdfast-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut c = RedisCluster {
            children: ports.iter().map(|_| None).collect(),
            bus_ports,
            ports,
            dir,
        };
        for i in 0..masters {
            c.try_spawn(i)?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for p in &c.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (scripts/test installs it)");
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        c.wait_ok();
        Ok(c)
    }

    fn spawn(&mut self, i: usize) {
        if let Err(e) = self.try_spawn(i) {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self, i: usize) -> Result<(), String> {
        let port = self.ports[i];
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--cluster-port",
                &self.bus_ports[i].to_string(),
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.children[i] = Some(child);
        for _ in 0..200 {
            let exited = self.children[i]
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return Err(format!("redis-server exited at start on port {port}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("redis-server did not start on port {port}"))
    }

    /// Waits (up to 20 s) until every node reports `cluster_state:ok`.
    pub fn wait_ok(&self) {
        for _ in 0..400 {
            let ok = self.ports.iter().all(|p| {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the Redis Cluster did not become ok");
    }

    /// The URL naming every master as a seed node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Kills master `i` and starts it again on the same port with the same cluster identity
    /// and slots, and no data (a shard master restarted without persistence).
    pub fn restart(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn(i);
        self.wait_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, one replica and one sentinel (quorum 1) on free ports of 127.0.0.1, the master
/// named `mymaster`; no persistence. Killed on drop.
pub struct RedisSentinel {
    /// The master's and the replica's ports (their roles swap on failover).
    pub data_ports: [u16; 2],
    /// The sentinel's port.
    pub sentinel_port: u16,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on port {port}");
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

impl RedisSentinel {
    /// Starts the master, the replica (waiting until it is in sync) and the sentinel (waiting
    /// until it knows the replica).
    pub fn start() -> RedisSentinel {
        let data_ports = [free_port(), free_port()];
        let sentinel_port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "holdfast-redis-sentinel-{}-{sentinel_port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut s = RedisSentinel {
            data_ports,
            sentinel_port,
            children: Vec::new(),
            dir,
        };
        let data = |port: u16, replica_of: Option<u16>| {
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            if let Some(m) = replica_of {
                cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
            }
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test installs it)")
        };
        s.children.push(data(data_ports[0], None));
        wait_port(data_ports[0]);
        s.children.push(data(data_ports[1], Some(data_ports[0])));
        wait_port(data_ports[1]);
        wait_for("the replica to sync", || {
            cli(data_ports[1], &["info", "replication"]).contains("master_link_status:up")
        });
        let conf = s.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 4000\n",
                s.dir.display(),
                data_ports[0]
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        s.children.push(child);
        wait_port(sentinel_port);
        wait_for("the sentinel to know the replica", || {
            cli(sentinel_port, &["sentinel", "replicas", "mymaster"])
                .contains(&data_ports[1].to_string())
        });
        s
    }

    /// `redis+sentinel://127.0.0.1:<sentinel>/mymaster`.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster", self.sentinel_port)
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self) -> u16 {
        cli(
            self.sentinel_port,
            &["sentinel", "get-master-addr-by-name", "mymaster"],
        )
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Waits until the replica has everything the master wrote (`WAIT 1`).
    pub fn sync(&self) {
        let master = self.master_port();
        let n = cli(master, &["wait", "1", "2000"]);
        assert_eq!(n.trim(), "1", "the replica acknowledged the writes");
    }

    /// `SENTINEL FAILOVER mymaster`, then waits until the other server is master and the
    /// old one follows it.
    pub fn failover(&self) {
        let old = self.master_port();
        let new = if old == self.data_ports[0] {
            self.data_ports[1]
        } else {
            self.data_ports[0]
        };
        // The sentinel may not yet rate the replica fit to promote (it refreshes what it knows
        // of the replica every few seconds): ask again while it says so.
        let mut r = String::new();
        wait_for("a replica the sentinel can promote", || {
            r = cli(self.sentinel_port, &["sentinel", "failover", "mymaster"]);
            !r.contains("NOGOODSLAVE")
        });
        assert!(r.contains("OK"), "SENTINEL FAILOVER: {r}");
        wait_for("the failover", || {
            self.master_port() == new
                && cli(new, &["role"]).starts_with("master")
                && cli(old, &["role"]).starts_with("slave")
        });
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
