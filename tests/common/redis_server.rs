//! A private `redis-server` for tests: on a free port of 127.0.0.1, no
//! persistence, killed on drop; it can be stopped and started again on the
//! same port (for outage tests). Also compiled into the library's unit
//! tests (`src/state/redis.rs` includes this file by path), so there is one
//! copy of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a fresh redis-server gets to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a redis-server on a free port and waits until it answers.
    pub async fn start() -> RedisServer {
        // A port the kernel just handed out and took back is free unless
        // something grabs it in between; try a few before giving up.
        let mut last_error = String::new();
        for _ in 0..5 {
            let addr = free_addr();
            let dir = tempfile::tempdir().expect("temp dir for redis-server");
            let mut server = RedisServer {
                addr,
                child: None,
                dir,
            };
            match server.spawn().await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn()
            .await
            .unwrap_or_else(|e| panic!("redis-server did not come back: {e}"));
    }

    /// Sends one inline command and returns the raw reply (for `DEBUG
    /// SLEEP`, `FLUSHALL` and such).
    pub async fn command(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect redis");
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write redis");
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.expect("read redis");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .arg("--port")
            .arg(self.addr.port().to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("redis-server not runnable ({e}); install redis-server"))?;
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            if answers_ping(self.addr).await {
                self.child = Some(child);
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err("redis-server did not answer PING in time".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

async fn answers_ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.ok()?;
        buf[..n].starts_with(b"+PONG").then_some(())
    };
    tokio::time::timeout(Duration::from_millis(200), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}
