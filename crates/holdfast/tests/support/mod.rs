//! A `holdfast serve` process for tests that need the real binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_testkit::{free_port, SECRET};

pub const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `holdfast serve` process on 127.0.0.1 whose stderr lines are collected; killed on drop.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Node {
    pub async fn start(env: &[(&str, String)]) -> Node {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &addr.to_string()])
            .env("HOLDFAST_AUTH__HMAC_SECRET", SECRET)
            .env("HOLDFAST_HEARTBEAT__PING_INTERVAL_MS", "200")
            .env("HOLDFAST_HEARTBEAT__PONG_TIMEOUT_MS", "2000")
            .env("HOLDFAST_API__LISTEN", "")
            .env("HOLDFAST_ROOMS__JOIN", "open")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let node = Node { child, addr, lines };
        node.wait_listening().await;
        node
    }

    async fn wait_listening(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node did not listen; stderr: {:?}", self.lines());
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a stderr line satisfies `f`.
    pub async fn wait_line(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        for _ in 0..100 {
            if let Some(l) = self.lines().into_iter().find(|l| f(l)) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line {what}; got {:#?}", self.lines());
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
