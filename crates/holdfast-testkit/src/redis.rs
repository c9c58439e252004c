//! A `redis-server` per test (or per suite) on a free port, with no persistence.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// A redis-server of the test's own, killed on drop.
pub struct Redis {
    /// The port it listens on (127.0.0.1), kept across [`Redis::restart`].
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
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
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (all data is lost: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
