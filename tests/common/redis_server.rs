//! A private `redis-server` for tests: on a free port of 127.0.0.1, no
//! persistence, killed on drop; it can be stopped and started again on the
//! same port (for outage tests). Also a 3-master, 3-replica Redis Cluster
//! ([`RedisCluster`]) and a master, a replica and three sentinels
//! ([`RedisSentinels`]), for failover tests: their waits poll the
//! servers' own view (`CLUSTER INFO`, `SENTINEL get-master-addr-by-name`)
//! against a bounded deadline. Also compiled into the library's unit
//! tests (`src/state/redis.rs` includes this file by path), so there is one
//! copy of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a fresh redis-server gets to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How long a cluster or a failover gets to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Arguments after the port, dir and no-persistence ones.
    extra: Vec<String>,
    /// Kept alive with the server (a sentinel's config directory).
    keep: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a redis-server on a free port and waits until it answers.
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// As [`RedisServer::start`], with more `redis-server` arguments
    /// (`{port}` in one is replaced by the server's port, `{free_port}` by
    /// another free port, chosen anew on each attempt).
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        // A port the kernel just handed out and took back is free unless
        // something grabs it in between; try a few before giving up.
        let mut last_error = String::new();
        for _ in 0..5 {
            let addr = free_addr();
            let dir = tempfile::tempdir().expect("temp dir for redis-server");
            let extra = extra
                .iter()
                .map(|a| {
                    a.replace("{port}", &addr.port().to_string())
                        .replace("{free_port}", &free_addr().port().to_string())
                })
                .collect();
            let mut server = RedisServer {
                addr,
                child: None,
                dir,
                extra,
                keep: None,
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

    /// Sends one command (as separate arguments) over the redis crate and
    /// returns the reply: for replies longer than [`RedisServer::command`]
    /// reads (`CLUSTER NODES`, `SENTINEL ...`).
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        query(self.addr, args).await
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    async fn spawn(&mut self) -> Result<(), String> {
        // A config file (a sentinel's) must come first.
        let (file, extra) = match self.extra.split_first() {
            Some((first, rest)) if !first.starts_with("--") => (Some(first), rest),
            _ => (None, &self.extra[..]),
        };
        let mut child = Command::new("redis-server")
            .args(file)
            .arg("--port")
            .arg(self.addr.port().to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            // A replica's first sync starts at once, not after 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(extra)
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

pub fn free_addr() -> SocketAddr {
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

/// One command to `addr`, on a connection of its own, within a second.
pub async fn query<T: redis::FromRedisValue>(
    addr: SocketAddr,
    args: &[&str],
) -> redis::RedisResult<T> {
    let attempt = async {
        let client = redis::Client::open(format!("redis://{addr}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "no answer within a second",
        ))),
    }
}

/// Polls `check` every 20 ms until it gives a value, for at most
/// [`SETTLE_WITHIN`]; panics with `what` if it never does.
pub async fn settle<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not within {SETTLE_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === RedisCluster ===

/// Three masters with one replica each, on free ports (a node's cluster
/// bus port is given with `--cluster-port`, also free), `cluster-node-timeout`
/// short so a failover takes about two seconds.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A node's failure is noticed after this long (ms).
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 500;

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let timeout = CLUSTER_NODE_TIMEOUT_MS.to_string();
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes-{port}.conf",
                    "--cluster-port",
                    "{free_port}",
                    "--cluster-node-timeout",
                    &timeout,
                    // A replica may always take over, however stale.
                    "--cluster-replica-validity-factor",
                    "0",
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let out = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli runnable (install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok().await;
        cluster
    }

    /// `redis://HOST:PORT` of every node (seeds for the store).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Until every running node says `cluster_state:ok`, knows all six
    /// nodes, and every slot has a master that answers.
    pub async fn wait_ok(&self) {
        settle("cluster state ok on every node", || async {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let info: String = node.query(&["CLUSTER", "INFO"]).await.ok()?;
                let ok = info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains("cluster_slots_ok:16384");
                if !ok || !synced(node).await? {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of a running node).
    pub async fn keyslot(&self, key: &str) -> u16 {
        let node = self.any_running();
        node.query(&["CLUSTER", "KEYSLOT", key])
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// The index (in `nodes`) of the master serving `slot`, as a running
    /// node sees it.
    pub async fn master_of(&self, slot: u16) -> Option<usize> {
        let text: String = self.any_running().query(&["CLUSTER", "NODES"]).await.ok()?;
        let addr = owner_of(&text, slot)?;
        self.nodes.iter().position(|n| n.addr.to_string() == addr)
    }

    /// Kills the master serving `slot` (SIGKILL) and returns its index.
    pub async fn kill_master_of(&mut self, slot: u16) -> usize {
        let master = self.master_of(slot).await.expect("a master for the slot");
        self.nodes[master].stop().await;
        master
    }

    /// Until a running node other than `old` serves `slot` as a master and
    /// the cluster is ok again; returns that node's index.
    pub async fn wait_promoted(&self, slot: u16, old: usize) -> usize {
        let new = settle("a replica promoted for the slot", || async {
            self.master_of(slot)
                .await
                .filter(|&i| i != old && self.nodes[i].is_running())
        })
        .await;
        self.wait_ok().await;
        new
    }

    /// Every key on every running master (`KEYS *`; test data is small).
    pub async fn all_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let role: Vec<redis::Value> = node.query(&["ROLE"]).await.expect("ROLE");
            let master =
                matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master");
            if master {
                let keys: Vec<String> = node.query(&["KEYS", "*"]).await.expect("KEYS");
                out.extend(keys);
            }
        }
        out.sort();
        out
    }

    fn any_running(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running cluster node")
    }
}

/// Whether `node` is a master, or a replica whose link to its master is
/// up and past the first sync (so what the master holds, it holds).
async fn synced(node: &RedisServer) -> Option<bool> {
    let info: String = node.query(&["INFO", "replication"]).await.ok()?;
    Some(
        info.contains("role:master")
            || (info.contains("master_link_status:up")
                && info.contains("master_sync_in_progress:0")),
    )
}

/// The `host:port` of the live master whose slot ranges in `CLUSTER NODES`
/// output hold `slot`.
fn owner_of(nodes: &str, slot: u16) -> Option<String> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            return None;
        }
        let holds = fields.iter().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            match (lo.parse::<u16>(), hi.parse::<u16>()) {
                (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                _ => false,
            }
        });
        holds.then(|| fields[1].split('@').next().unwrap_or("").to_string())
    })
}

// === RedisSentinels ===

/// The name the sentinels know the master by.
pub const SENTINEL_MASTER: &str = "tollgate";

/// A master, its replica and three sentinels watching it (quorum 2), with
/// `down-after-milliseconds` and `failover-timeout` short.
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
}

impl RedisSentinels {
    pub async fn start() -> RedisSentinels {
        let master = RedisServer::start().await;
        let of = master.addr.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &of]).await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(Self::sentinel(&master).await);
        }
        let setup = RedisSentinels {
            master,
            replica,
            sentinels,
        };
        // Every sentinel has found the replica and the two other sentinels
        // (through the master's hello channel): only then can they agree.
        settle("sentinels know each other and the replica", || async {
            for s in &setup.sentinels {
                let info: HashMap<String, String> = s
                    .query(&["SENTINEL", "MASTER", SENTINEL_MASTER])
                    .await
                    .ok()?;
                let n = |k: &str| info.get(k).and_then(|v| v.parse::<u32>().ok());
                if n("num-slaves")? < 1 || n("num-other-sentinels")? < 2 {
                    return None;
                }
            }
            synced(&setup.replica).await?.then_some(())
        })
        .await;
        setup
    }

    /// A sentinel monitoring `master`: its config file is written first
    /// (a sentinel rewrites it as it learns).
    async fn sentinel(master: &RedisServer) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for a sentinel");
        let file = dir.path().join("sentinel.conf");
        let name = SENTINEL_MASTER;
        let conf = format!(
            "sentinel monitor {name} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {name} 300\n\
             sentinel failover-timeout {name} 2000\n\
             sentinel parallel-syncs {name} 1\n",
            port = master.addr.port()
        );
        std::fs::write(&file, conf).expect("write sentinel.conf");
        let file = file.to_string_lossy().into_owned();
        let mut server = RedisServer::start_with(&[&file, "--sentinel"]).await;
        // The config lives as long as the sentinel.
        server.keep = Some(dir);
        server
    }

    /// `redis://HOST:PORT` of every sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.url()).collect()
    }

    /// The master's port as the first answering sentinel names it.
    pub async fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            let addr: Option<(String, String)> = s
                .query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER])
                .await
                .ok()
                .flatten();
            if let Some((_, port)) = addr {
                return port.parse().ok();
            }
        }
        None
    }

    /// Until the sentinels name the replica as master and it says so itself.
    pub async fn wait_promoted(&self) {
        let want = self.replica.addr.port();
        settle("the sentinels promote the replica", || async {
            if self.master_port().await != Some(want) {
                return None;
            }
            let role: Vec<redis::Value> = self.replica.query(&["ROLE"]).await.ok()?;
            matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master")
                .then_some(())
        })
        .await
    }
}
