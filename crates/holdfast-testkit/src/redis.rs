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
    /// The directory of its snapshot, when it loads one at start.
    dir: Option<std::path::PathBuf>,
}

impl Redis {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: None,
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
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
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
        format!("redis://127.0.0.1:{}/", self.port)
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
