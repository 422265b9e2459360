//! The Redis store: the same decisions as [`MemoryStore`](super::MemoryStore),
//! made atomically inside Redis, so N gateway instances pointed at one
//! Redis share one rate limit, one quota, one ban list and one set of usage
//! counters.
//!
//! ```yaml
//! state:
//!   store: redis
//!   redis_url: redis://127.0.0.1:6379   # one Redis; or, instead:
//!   # redis:
//!   #   cluster: [redis://10.0.0.1:6379, redis://10.0.0.2:6379]  # seed nodes
//!   #   sentinel: { master: tollgate, nodes: [redis://10.0.0.5:26379] }
//!   #   ca_file: certs/redis-ca.pem       # for rediss:// URLs
//!   #   username_env: TOLLGATE_REDIS_USER
//!   #   password_env: TOLLGATE_REDIS_PASSWORD
//!   timeout: 50ms               # every store call's deadline
//!   on_store_error: fail_closed # or fail_open
//! ```
//!
//! It owns the connection, the Lua scripts, the per-call deadline, a
//! circuit breaker, the in-process usage buffer and the key layout:
//!
//! | key                                   | type   | holds                         | expires            |
//! |---------------------------------------|--------|-------------------------------|--------------------|
//! | `tollgate:gcra:{KEY}`                 | string | `{tat}:{seen}`: arrival time, latest writer's now (ns) | when the bucket is full again |
//! | `tollgate:quota:{KEY}:PERIOD_END`     | string | calls counted in the period   | at the period end  |
//! | `tollgate:hit:{KEY}`                  | hash   | `n` (count), `end` (ns)       | at the window end  |
//! | `tollgate:ban:{KEY}`                  | string | `{until_ns}:{reason}`         | when the ban lifts |
//! | `tollgate:usage:{SUBJECT}`            | hash   | field → count                 | 90 days after the last add |
//! | `tollgate:calls:{log}`                | list   | call-log summaries, newest first | `call_log.ttl` after the last push |
//! | `tollgate:calls:{log}:entries`        | hash   | request id → `{expires} {entry JSON}` | same |
//! | `tollgate:calls:{log}:meta`           | hash   | `seq` (last given), `bytes` (held) | same |
//!
//! `KEY` is the trait's key, which already starts with the policy name.
//! The braces are literal: they are a Redis Cluster hash tag, so a key's
//! slot is the slot of `KEY` alone, and every key one decision touches
//! (all the periods of one quota, its take and its refund) lands on the
//! same slot, whichever master owns it. Each script touches only keys of
//! one tag, so it runs on one node; the same layout serves a single Redis.
//! Every decision is one round trip: a script run with `EVALSHA` (on
//! `NOSCRIPT`, which is what a restarted Redis or a freshly promoted
//! replica answers until it has seen the script, the same call sends the
//! body with `EVAL`, which runs and caches it), or a single command. Rate
//! limit decisions, the one on every request, go in batches: the calls
//! a gateway makes while its previous batch for the same slot is out go
//! together as one script run ([`GcraBatches`]), so a loaded gateway
//! makes one round trip for many decisions. Each script's atomicity rule
//! is written above it.
//!
//! **Time.** `now` is the caller's (the gateway's injected clock), never
//! Redis's: expiry *decisions* compare stored times with `now`, and TTLs
//! (`PEXPIRE`, `SET PX`, computed as a duration from `now`) only keep
//! memory bounded. So instances sharing a Redis must have NTP-synced
//! clocks; a skew of `d` shifts the shared windows by `d` for the skewed
//! instance. Times are nanoseconds since the epoch written as decimal
//! strings: Lua numbers are doubles (exact to 2^53, about 104 days of
//! nanoseconds), so the GCRA script splits them into seconds and nanos and
//! works in differences from `now`.
//!
//! **Client.** The `redis` crate (0.32: its MSRV matches ours, 1.80), in
//! one of three shapes ([`RedisTarget`]), each one multiplexed connection
//! per store *and per tokio runtime* (a [`Lane`]: in the gateway, one per
//! worker thread and one for the control runtime), so concurrent requests
//! pipeline on it without a pool and a call never leaves its worker's
//! thread:
//!
//! - *single* (`redis_url`): a [`ConnectionManager`], which reconnects by
//!   itself after Redis comes back;
//! - *cluster* (`redis.cluster`, seed nodes): the crate's async cluster
//!   connection, which learns the slot map from the seeds, follows
//!   `MOVED`/`ASK`, and re-reads the map when a node fails, so a promoted
//!   replica is found without help. `SCAN` has no cluster routing, so the
//!   admin listings scan every master in turn (`RedisStore::scan`);
//! - *sentinel* (`redis.sentinel`): the sentinels are asked for the
//!   master's address, and a plain multiplexed connection is made to it.
//!   Any failed call drops that connection, so the lane's next call asks
//!   the sentinels again: after a failover it reaches the promoted replica
//!   (the crate checks `ROLE` before handing it out).
//!
//! `rediss://` URLs use rustls (the tree's rustls 0.23, ring provider),
//! trusting `redis.ca_file` if given, else the system roots. ACL user and
//! password come from the environment (`redis.username_env`,
//! `redis.password_env`), read once at load, never logged (the store's
//! `Debug` shows neither). `fred` would do too, but brings its own pool,
//! reconnect policy and runtime glue for what we use as "send a script,
//! await one reply".
//!
//! **Failure.** Redis being down at start is not an error: the connection
//! is made on first use. Every call has the deadline `state.timeout` and
//! goes through a circuit breaker (after 5 consecutive failures, calls
//! fail at once for a second, then one probe is let through), so a slow
//! or dead Redis never stalls a request; policies turn the [`StoreError`]
//! into 503 or a pass through `state.on_store_error`. A master's failover
//! is the same case: until its replica is promoted and found, calls for
//! its keys fail within the deadline and follow `on_store_error`; then
//! decisions are exact again (the README has the measured window).
//! [`RedisStore::errors_total`] and [`RedisStore::is_degraded`] are for
//! `/metrics` and `/readyz`.

use parking_lot::Mutex;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisError, RedisFuture, Script, TlsCertificates};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify, OnceCell};

use super::{
    Ban, CallFilter, CallLogBounds, CallPage, CallRecord, CallSummary, GcraRule, QuotaDecision,
    RateDecision, SessionKey, Store, StoreError, UsageEntry,
};
use crate::clock::Nanos;
use crate::config::schema::StateConfig;

/// Usage is flushed this often...
const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// ...or as soon as this many counters are waiting.
const USAGE_FLUSH_AT: usize = 256;
/// A usage hash untouched this long expires.
const USAGE_TTL_MS: u64 = 90 * 24 * 3600 * 1000;
/// Keys per `SCAN` page.
const SCAN_COUNT: usize = 500;

/// `tollgate:{kind}:` for every kind of key.
const DEFAULT_PREFIX: &str = "tollgate";

// Helpers shared by the scripts. Times are decimal strings of nanoseconds
// without leading zeros, so `before(a, b)` (a < b) compares lengths first.
const LUA_HELPERS: &str = r#"
local function before(a, b)
  return #a < #b or (#a == #b and a < b)
end
-- a decimal count of nanoseconds as (seconds, nanos), each exact in a double
local function split(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end
"#;

/// GCRA check-and-take, for a batch of calls (see [`GcraBatches`]). Atomic:
/// one script reads each call's bucket, decides and (when `commit` and
/// allowed) writes it, in the batch's order, so a batch decides exactly as
/// its calls one after the other would; a refusal or a peek writes
/// nothing. KEYS: the batch's buckets, each once; ARGV[1] ahead, ARGV[2]
/// the number R of distinct rules, then R pairs interval, tolerance; then
/// per call its now and a code ((key index * R + rule index) * 2 +
/// commit, indexes from 0). Returns per call two numbers (ns, from that
/// call's now), flattened: `remaining, reset_after` when allowed,
/// `-retry_after - 1, reset_after` when refused (never allowed with a
/// retry, never refused with a remaining call or a zero retry). Passing
/// each key and rule once and answering in two numbers, not four, is
/// about a third less of a decision's time inside Redis.
///
/// A bucket holds `{tat}:{seen}`: the theoretical arrival time and the
/// latest `now` that wrote it (a bare `{tat}` is read as before). Calls
/// reach Redis in another order than they read their clocks (two gateways'
/// connections, a call that had to load the script first), so a call may
/// find the bucket written by a later clock than its own. It is then
/// decided at that later time (`at`), as if it had arrived just after: the
/// bucket's clock never runs backwards, and a burst gets exactly its
/// tolerance however its calls were reordered (deciding at its own, older
/// `now` would see less of the bucket refilled and refuse the last token).
/// Only by at most `ahead` (the store deadline: a call older than that has
/// been given up by its caller), so a gateway whose clock runs ahead
/// cannot drag the others further than that.
///
/// A key that several calls of the batch share (a busy client's limit) is
/// read and parsed once, at its first call, kept as numbers while the
/// batch's calls decide on it in turn, and written once, after the last:
/// nothing else runs inside the script, so the stored value and its TTL
/// end as the last committing call would have left them, with one `GET`
/// and one `SET` instead of one each per call (the string work around
/// them is most of a decision's cost in Redis). The numbers kept are the
/// ones re-reading the written string would give: `{tat}` is written as
/// `%d%09d` of the same seconds and nanos, `{seen}` verbatim.
const GCRA: &str = r#"
local ahead = tonumber(ARGV[1])
local nrules = tonumber(ARGV[2])
local intervals, tolerances = {}, {}
for r = 1, nrules do
  intervals[r], tolerances[r] = tonumber(ARGV[1 + 2 * r]), tonumber(ARGV[2 + 2 * r])
end
-- each key's bucket, read at its first call and written after the last
local buckets, written, out = {}, {}, {}
for j = 3 + 2 * nrules, #ARGV, 2 do
  local now = ARGV[j]
  local c = tonumber(ARGV[j + 1])
  local commit = c % 2
  c = (c - commit) / 2
  local rule = c % nrules
  local ki = (c - rule) / nrules + 1
  local interval, tolerance = intervals[rule + 1], tolerances[rule + 1]
  local b = buckets[ki]
  if not b then
    b = {}
    local stored = redis.call('GET', KEYS[ki])
    if stored then
      local tat, seen = string.match(stored, '^(%d+):(%d+)$')
      if not tat then tat = stored end
      b.ts, b.tn = split(tat)
      if seen then b.seen = seen; b.ss, b.sn = split(seen) end
    end
    buckets[ki] = b
  end
  local ns, nn = split(now)
  -- at (as, an): when the call is decided; lead: at - now (ns, 0..ahead);
  -- mark (ms, mn): the latest now written so far, this one included
  local as, an, lead, mark, ms, mn = ns, nn, 0, now, ns, nn
  if b.seen then
    local d = (b.ss - ns) * 1e9 + (b.sn - nn)
    if d > 0 then mark, ms, mn = b.seen, b.ss, b.sn end
    if d > 0 and d <= ahead then as, an, lead = b.ss, b.sn, d end
  end
  -- start: how far the arrival time runs ahead of at (0 if behind)
  local start = 0
  if b.ts then
    local d = (b.ts - as) * 1e9 + (b.tn - an)
    if d > 0 then start = d end
  end
  local new = start + interval
  local k = #out
  if new > tolerance then
    out[k + 1], out[k + 2] = -(new - tolerance + lead) - 1, start + lead
  else
    local room = tolerance - new
    local remaining = math.floor(room / interval)
    if remaining * interval > room then remaining = remaining - 1 end
    if commit == 1 then
      local x = an + new
      local s = math.floor(x / 1e9)
      local r = x - s * 1e9
      if r < 0 then s = s - 1; r = r + 1e9 end
      if r >= 1e9 then s = s + 1; r = r - 1e9 end
      b.ts, b.tn = as + s, r
      b.seen, b.ss, b.sn = mark, ms, mn
      b.ttl = math.max(1, math.ceil((new + lead) / 1e6))
      if not b.dirty then b.dirty = true; written[#written + 1] = ki end
    end
    out[k + 1], out[k + 2] = remaining, new + lead
  end
end
for _, ki in ipairs(written) do
  local b = buckets[ki]
  redis.call('SET', KEYS[ki], string.format('%d%09d:%s', b.ts, b.tn, b.seen), 'PX', string.format('%d', b.ttl))
end
return out
"#;

/// Quota take. Atomic: the count is read, compared with the limit and
/// incremented in one script, so concurrent takes never overshoot; a
/// refusal writes nothing. The key names its period, so a new period is a
/// new counter; it expires at the period end. KEYS[1] counter; ARGV limit,
/// ttl_ms. Returns {allowed, used}.
const QUOTA_TAKE: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return {0, used} end
used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, used}
"#;

/// Quota refund. Atomic: decrements only a positive count (never below 0,
/// never creating the key). KEYS[1] counter.
const QUOTA_REFUND: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then redis.call('DECR', KEYS[1]) end
return 0
"#;

/// Fixed-window hit. Atomic: a window that has ended (on the caller's
/// clock) is replaced by a fresh one holding this hit, else the count is
/// incremented. KEYS[1] hash; ARGV now, window end, ttl_ms. Returns the count.
const HIT: &str = r#"
local e = redis.call('HGET', KEYS[1], 'end')
if e and before(ARGV[1], e) then
  return redis.call('HINCRBY', KEYS[1], 'n', 1)
end
redis.call('HSET', KEYS[1], 'n', 1, 'end', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Ban set. Atomic: an active ban lasting at least as long is kept (the
/// later `until` wins); otherwise the ban is written with a TTL to its
/// end (or removed, if it has already ended). KEYS[1] ban; ARGV now,
/// until, value, ttl_ms.
const BAN_SET: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local u = string.match(cur, '^(%d+):')
  if u and before(ARGV[1], u) and not before(u, ARGV[2]) then return 0 end
end
if not before(ARGV[1], ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"#;

/// Quota take of `units` (a quota counted in task units). Atomic like
/// [`QUOTA_TAKE`]: admitted while the count is below the limit and the
/// units fit; a refusal (or 0 units) writes nothing. KEYS[1] counter; ARGV
/// limit, units, ttl_ms. Returns {allowed, used}.
const QUOTA_TAKE_UNITS: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local units = tonumber(ARGV[2])
if used >= limit or units > limit - used then return {0, used} end
if units > 0 then
  used = redis.call('INCRBY', KEYS[1], units)
  if used == units then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
end
return {1, used}
"#;

/// Quota settle: adds a signed delta after the call, never below 0, and
/// creates the counter (with its TTL) only for a positive delta. Atomic.
/// KEYS[1] counter; ARGV delta, ttl_ms. Returns the new count.
const QUOTA_SETTLE: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = used + tonumber(ARGV[1])
if new < 0 then new = 0 end
if new == used then return used end
new = redis.call('INCRBY', KEYS[1], new - used)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return new
"#;

/// The task-unit scripts, hashed once per process (beside [`Scripts`], so
/// the store's own set is unchanged).
struct UnitScripts {
    take: Script,
    settle: Script,
}

static UNIT_SCRIPTS: std::sync::LazyLock<UnitScripts> = std::sync::LazyLock::new(|| UnitScripts {
    take: script(QUOTA_TAKE_UNITS),
    settle: script(QUOTA_SETTLE),
});

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_HELPERS}{body}"))
}

/// The scripts, hashed once per store (GCRA's is in [`GcraBatches`]).
struct Scripts {
    quota_take: Lua,
    quota_refund: Lua,
    hit: Lua,
    ban_set: Lua,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            quota_take: Lua::new(QUOTA_TAKE),
            quota_refund: Lua::new(QUOTA_REFUND),
            hit: Lua::new(HIT),
            ban_set: Lua::new(BAN_SET),
        }
    }
}

/// A store whose counters live in Redis. Cheap to share behind an `Arc`.
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    scripts: Scripts,
    gcra: Arc<GcraBatches>,
    usage: Arc<UsageBuffer>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.link.timeout)
            .field("errors_total", &self.errors_total())
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

/// The connections, the deadline and the breaker: what every call goes
/// through (shared with the usage flusher task).
struct Link {
    source: Source,
    timeout: Duration,
    breaker: Breaker,
    errors: AtomicU64,
    /// One [`Lane`] per tokio runtime that has made calls (`None`: a call
    /// made outside any runtime's context, which has no lane of its own).
    lanes: Mutex<HashMap<Option<tokio::runtime::Id>, Arc<Lane>>>,
}

/// More lanes than this (runtimes come and go, e.g. in tests; the gateway
/// has one per worker, at most 1024, and the control runtime) and the map
/// starts over: a live runtime's next call makes a new lane.
const MAX_LANES: usize = 1100;

/// What the calls made on one tokio runtime go through: their own
/// connection and their own GCRA batches. The gateway serves on one
/// single-threaded runtime per worker thread; a connection's driver task
/// and a batch's driver task run on the runtime that started them, so a
/// connection shared by all workers made every call of the other workers
/// cross threads twice (to the driver, and its answer back), each a
/// wake-up of a sleeping thread. With a lane per runtime, a decision
/// never leaves its worker's thread. The breaker, the error count and the
/// usage buffer stay per store: they are counters, not wake-ups.
struct Lane {
    conn: LaneConn,
    /// GCRA calls waiting per group; a group is present while its driver
    /// runs (see [`GcraBatches`]).
    gcra: Mutex<HashMap<u16, Vec<GcraCall>>>,
}

/// A lane's connection, made on the lane's first call, one kind per
/// [`Source`].
enum LaneConn {
    /// Once made, the manager reconnects by itself.
    Single(OnceCell<ConnectionManager>),
    /// Once made, the cluster connection follows the slot map by itself.
    Cluster(OnceCell<ClusterConnection>),
    /// The master's connection and its generation (so a failure seen on
    /// an old connection does not drop a newer one).
    Sentinel(Mutex<Option<(u64, MultiplexedConnection)>>),
}

/// Where connections come from, one kind per [`RedisTarget`]. Each is
/// made on first use, so a Redis that is down at start is not an error.
enum Source {
    Single {
        client: redis::Client,
        connect_within: Duration,
    },
    Cluster {
        client: ClusterClient,
    },
    Sentinel(Box<SentinelSource>),
}

/// The sentinels and the master they last named, shared by the lanes: a
/// failed call on any lane drops that master, so every lane's next call
/// finds the master anew (asking the sentinels once for all of them), as
/// when the store had one connection.
struct SentinelSource {
    /// Asking the sentinels is one caller at a time.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The master last named and its generation.
    master: Mutex<Option<(u64, redis::Client)>>,
    /// That generation, or 0 when there is none (a lane's connection to
    /// another generation is not used).
    current: AtomicU64,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
}

/// One connection of any [`Source`]: the scripts and commands run on it.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

/// Where the store's Redis is: compiled from `state` (see
/// [`RedisStore::from_config`]).
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis_url`: one server.
    Single(String),
    /// `redis.cluster`: seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    /// `redis.sentinel`: the master's name and the sentinels' URLs.
    Sentinel {
        /// The name the sentinels know the master by.
        master: String,
        /// The sentinels' URLs.
        nodes: Vec<String>,
    },
}

/// How to reach a [`RedisTarget`]. `Debug` never shows the credentials.
#[derive(Clone, Default)]
pub struct RedisAccess {
    /// PEM roots trusted for `rediss://` (else the system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// ACL user (with `password`), or `default` when only a password.
    pub username: Option<String>,
    /// The password (from `password_env`; never logged).
    pub password: Option<String>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "…"))
            .field("username", &self.username.as_ref().map(|_| "…"))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Usage counts waiting to be flushed, merged per subject and field.
#[derive(Default)]
struct UsageBuffer {
    counts: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// Counters waiting (an estimate for the flush-early rule).
    waiting: AtomicU64,
    flusher: AtomicBool,
    /// Wakes the flusher early (shared with it, outside the buffer, so it
    /// can wait without keeping the buffer alive).
    flush_now: Arc<Notify>,
}

// === impl RedisStore ===

impl RedisStore {
    /// A store for `url` whose calls each have the deadline `timeout`.
    /// Fails only if the URL is malformed; Redis need not be up.
    pub fn open(url: &str, timeout: Duration) -> Result<RedisStore, String> {
        Self::with_prefix(url, timeout, DEFAULT_PREFIX)
    }

    /// As [`RedisStore::open`], with keys under `{prefix}:` instead of
    /// `tollgate:` (for several deployments, or tests, on one Redis).
    pub fn with_prefix(url: &str, timeout: Duration, prefix: &str) -> Result<RedisStore, String> {
        let target = RedisTarget::Single(url.to_string());
        Self::connect_to(&target, &RedisAccess::default(), timeout, prefix)
    }

    /// A store on a single Redis, a cluster or a sentinel-watched master.
    /// Fails only if a URL or the CA is malformed; Redis need not be up.
    pub fn connect_to(
        target: &RedisTarget,
        access: &RedisAccess,
        timeout: Duration,
        prefix: &str,
    ) -> Result<RedisStore, String> {
        let source = Source::new(target, access, timeout)?;
        Ok(RedisStore {
            link: Arc::new(Link {
                source,
                timeout,
                breaker: Breaker::new(),
                errors: AtomicU64::new(0),
                lanes: Mutex::new(HashMap::new()),
            }),
            prefix: prefix.to_string(),
            scripts: Scripts::new(),
            gcra: Arc::new(GcraBatches::new(matches!(target, RedisTarget::Cluster(_)))),
            usage: Arc::default(),
        })
    }

    /// The store `state` describes: its target, the CA file (relative to
    /// `base_dir`) and the credentials read from the environment. An error
    /// names the config path it is about.
    pub fn from_config(
        state: &StateConfig,
        base_dir: &Path,
    ) -> Result<RedisStore, (Vec<&'static str>, String)> {
        let redis = state.redis.clone().unwrap_or_default();
        let (target, at) = match (&state.redis_url, &redis.sentinel) {
            (Some(url), _) => (RedisTarget::Single(url.clone()), vec!["state", "redis_url"]),
            (None, Some(s)) => (
                RedisTarget::Sentinel {
                    master: s.master.clone(),
                    nodes: s.nodes.clone(),
                },
                vec!["state", "redis", "sentinel", "nodes"],
            ),
            (None, None) if !redis.cluster.is_empty() => (
                RedisTarget::Cluster(redis.cluster.clone()),
                vec!["state", "redis", "cluster"],
            ),
            (None, None) => {
                return Err((
                    vec!["state", "store"],
                    "`store: redis` needs `redis_url`, `redis.cluster` or `redis.sentinel`".into(),
                ))
            }
        };
        let mut access = RedisAccess::default();
        if let Some(file) = &redis.ca_file {
            let pem = std::fs::read(base_dir.join(file)).map_err(|e| {
                (
                    vec!["state", "redis", "ca_file"],
                    format!("cannot read `{file}`: {e}"),
                )
            })?;
            access.ca_pem = Some(pem);
        }
        let from_env = |var: &Option<String>, field: &'static str| match var {
            None => Ok(None),
            Some(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Some(value)),
                _ => Err((
                    vec!["state", "redis", field],
                    format!("environment variable `{name}` is not set (or empty)"),
                )),
            },
        };
        access.username = from_env(&redis.username_env, "username_env")?;
        access.password = from_env(&redis.password_env, "password_env")?;
        Self::connect_to(&target, &access, state.timeout.0, DEFAULT_PREFIX).map_err(|e| (at, e))
    }

    /// Store calls that failed (Redis error, deadline passed, circuit open)
    /// since start: for `/metrics`.
    pub fn errors_total(&self) -> u64 {
        self.link.errors.load(Ordering::Relaxed)
    }

    /// Whether the breaker has tripped (Redis failing; calls fail fast
    /// until a probe succeeds): for `/readyz`.
    pub fn is_degraded(&self) -> bool {
        self.link.breaker.tripped()
    }

    /// `{prefix}:{kind}:{key}`, the braces literal: a cluster hash tag.
    fn key(&self, kind: &str, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + kind.len() + key.len() + 4);
        out.push_str(&self.prefix);
        out.push(':');
        out.push_str(kind);
        out.push_str(":{");
        out.push_str(key);
        out.push('}');
        out
    }

    /// The key of one quota period: its tag is the quota key's alone, so
    /// every period of it shares a slot.
    fn quota_key(&self, key: &str, period_end: Nanos) -> String {
        let mut out = self.key("quota", key);
        out.push(':');
        out.push_str(itoa::Buffer::new().format(period_end));
        out
    }

    /// Every key of `kind` (SCAN, one round trip per page; on a cluster,
    /// on every master in turn), with the `{prefix}:{kind}:{` and `}`
    /// around it removed.
    async fn scan(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let head = format!("{}:{kind}:{{", self.prefix);
        let pattern = format!("{}*", glob_escape(&head));
        let nodes = self
            .link
            .call(|c| async move { c.scan_nodes().await })
            .await?;
        let mut out = Vec::new();
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let node = node.clone();
                let page: (u64, Vec<String>) = self
                    .link
                    .call(|mut c| async move { c.query_on(&cmd, node.as_ref()).await })
                    .await?;
                out.extend(page.1.into_iter().filter_map(|k| {
                    k.strip_prefix(&head)
                        .and_then(|k| k.strip_suffix('}'))
                        .map(str::to_string)
                }));
                cursor = page.0;
                if cursor == 0 {
                    break;
                }
            }
        }
        // SCAN may return a key twice.
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `{prefix}:usage:{`: a usage key is this, the subject and `}`.
    fn usage_head(&self) -> String {
        format!("{}:usage:{{", self.prefix)
    }

    /// Starts the usage flusher the first time usage is added (there is a
    /// runtime then; there may be none when the store is built).
    fn ensure_flusher(&self) {
        if self.usage.flusher.swap(true, Ordering::AcqRel) {
            return;
        }
        let usage = Arc::downgrade(&self.usage);
        let wake = self.usage.flush_now.clone();
        let link = self.link.clone();
        let prefix = self.usage_head();
        tokio::spawn(flush_usage_forever(usage, wake, link, prefix));
    }

    /// Writes the local usage buffer to Redis now.
    pub async fn flush_usage(&self) -> Result<(), StoreError> {
        flush_usage_once(&self.usage, &self.link, &self.usage_head()).await
    }
}

/// The flusher task: every [`USAGE_FLUSH_EVERY`], or sooner when the
/// buffer fills; ends when the store is dropped.
async fn flush_usage_forever(
    usage: Weak<UsageBuffer>,
    wake: Arc<Notify>,
    link: Arc<Link>,
    prefix: String,
) {
    let mut tick = tokio::time::interval(USAGE_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let Some(buffer) = usage.upgrade() else {
            return;
        };
        if let Err(error) = flush_usage_once(&buffer, &link, &prefix).await {
            tracing::debug!(%error, "usage flush failed; kept for the next one");
        }
    }
}

/// One pipelined round trip: `HINCRBY` per counter and a `PEXPIRE` per
/// subject (on a cluster, one pipeline per subject, all at once: a
/// pipeline may not span slots). On failure the counts go back into the
/// buffer (they are bounded by the config, so the buffer is too).
async fn flush_usage_once(
    usage: &UsageBuffer,
    link: &Arc<Link>,
    head: &str,
) -> Result<(), StoreError> {
    let taken = std::mem::take(&mut *usage.counts.lock());
    usage.waiting.store(0, Ordering::Relaxed);
    if taken.is_empty() {
        return Ok(());
    }
    let pipes: Vec<redis::Pipeline> = taken
        .iter()
        .map(|(subject, fields)| {
            let key = format!("{head}{subject}}}");
            let mut pipe = redis::pipe();
            for (field, n) in fields {
                pipe.cmd("HINCRBY").arg(&key).arg(field).arg(*n).ignore();
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(USAGE_TTL_MS).ignore();
            pipe
        })
        .collect();
    let result = link
        .call(|c| async move { c.run_pipelines(pipes).await })
        .await;
    if result.is_err() {
        let mut counts = usage.counts.lock();
        for (subject, fields) in taken {
            let entry = counts.entry(subject).or_default();
            for (field, n) in fields {
                let count = entry.entry(field).or_default();
                *count = count.saturating_add(n);
            }
        }
    }
    result
}

/// Escapes a literal for a `SCAN MATCH` glob.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Milliseconds from `now` to `until`, rounded up, at least 1 (a TTL).
fn ttl_ms(until: Nanos, now: Nanos) -> u64 {
    until.saturating_sub(now).div_ceil(1_000_000).max(1)
}

/// A stored ban value `{until}:{reason}`.
fn parse_ban(value: &str) -> Option<Ban> {
    let (until, reason) = value.split_once(':')?;
    Some(Ban {
        reason: reason.to_string(),
        until: until.parse().ok()?,
    })
}

fn active(ban: Option<String>, now: Nanos) -> Option<Ban> {
    ban.as_deref().and_then(parse_ban).filter(|b| b.until > now)
}

// === GCRA batches ===

/// Calls per GCRA script run at most (a script blocks its Redis while it
/// runs: 128 decisions take well under a millisecond).
const GCRA_BATCH_MAX: usize = 128;

/// A Lua script sent as `EVALSHA`; on `NOSCRIPT` (a restarted Redis, a
/// promoted replica) as `EVAL` with its body, which runs it and caches it:
/// one round trip more, not two.
struct Lua {
    body: String,
    sha: String,
}

impl Lua {
    fn new(body: &str) -> Lua {
        let body = format!("{LUA_HELPERS}{body}");
        let sha = Script::new(&body).get_hash().to_string();
        Lua { body, sha }
    }

    /// Runs the script; `fill` adds `numkeys`, the keys and the args.
    async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        fill: impl Fn(&mut redis::Cmd),
    ) -> Result<T, RedisError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha);
        fill(&mut cmd);
        match cmd.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(&self.body);
                fill(&mut cmd);
                cmd.query_async(conn).await
            }
            other => other,
        }
    }
}

/// One GCRA call waiting for its batch.
struct GcraCall {
    /// The full Redis key.
    key: String,
    rule: GcraRule,
    now: Nanos,
    commit: bool,
    /// The store deadline from the moment the call was made: the caller
    /// is answered by then (it keeps no timer of its own, see
    /// [`drive_gcra`]).
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<RateDecision, StoreError>>,
}

/// GCRA calls are sent in batches, one script run per batch, so a busy
/// gateway makes one round trip and one script run for many decisions
/// instead of one each. Per *group* (the key's cluster slot, since one
/// script may only touch one slot; one group for a single Redis or a
/// Sentinel master) at most one batch is in flight: a call that finds
/// none starts a driver task and is sent at once; calls arriving while a
/// batch is out wait for it to come back and go together in the next one.
/// So an idle gateway adds no wait, and a loaded one sends batches as
/// large as its load (up to [`GCRA_BATCH_MAX`]). Exactness is the
/// script's: a batch decides as its calls one after the other would.
///
/// The waiting calls are per [`Lane`] (per runtime: per worker thread in
/// the gateway), so a batch holds one worker's calls and its driver runs
/// on that worker, beside the calls and the connection.
struct GcraBatches {
    lua: Lua,
    cluster: bool,
    /// Script runs (round trips) so far: for tests.
    runs: AtomicU64,
}

impl GcraBatches {
    fn new(cluster: bool) -> GcraBatches {
        GcraBatches {
            lua: Lua::new(GCRA),
            cluster,
            runs: AtomicU64::new(0),
        }
    }

    /// Queues `call` in `lane`; its group when no driver runs for it (the
    /// caller starts one).
    fn join(&self, lane: &Lane, call: GcraCall) -> Option<u16> {
        let group = if self.cluster {
            key_slot(call.key.as_bytes())
        } else {
            0
        };
        let mut waiting = lane.gcra.lock();
        match waiting.entry(group) {
            std::collections::hash_map::Entry::Occupied(mut queue) => {
                queue.get_mut().push(call);
                None
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(vec![call]);
                Some(group)
            }
        }
    }

    /// The next batch of `group`, without calls whose caller has given up
    /// or whose deadline has passed (those are answered with the deadline
    /// error; no token is taken for either); `None` (and the group
    /// removed, under the same lock) when nothing waits.
    fn next(lane: &Lane, group: u16, timeout: Duration) -> Option<Vec<GcraCall>> {
        let now = tokio::time::Instant::now();
        let mut waiting = lane.gcra.lock();
        loop {
            let queue = waiting.get_mut(&group)?;
            if queue.is_empty() {
                waiting.remove(&group);
                return None;
            }
            let n = queue.len().min(GCRA_BATCH_MAX);
            let mut batch = Vec::with_capacity(n);
            for call in queue.drain(..n) {
                if call.reply.is_closed() {
                    continue;
                }
                if call.deadline <= now {
                    let _ = call.reply.send(Err(deadline_passed(timeout)));
                    continue;
                }
                batch.push(call);
            }
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }
}

/// A group's driver: sends its batches one after the other until none
/// waits. Each run goes through the breaker and has the earliest deadline
/// of its calls, so every caller is answered within its own deadline —
/// the wait for the batch before included, since that one ended by the
/// deadline of a call made earlier — with one timer per batch, not one
/// per call. (A per-call timer cost more than its own bookkeeping on a
/// busy worker: a timer due sooner than any the runtime slept with makes
/// tokio wake its own driver through an `eventfd` write, about one per
/// three requests under `benches/store-load.sh`.)
async fn drive_gcra(batches: Arc<GcraBatches>, link: Arc<Link>, lane: Arc<Lane>, group: u16) {
    // Should the driver panic or be dropped before it is done (its
    // runtime shutting down), its group goes (its waiting callers, who
    // keep no timer, get an error at once) so that the next call starts
    // a new driver.
    struct Unwind<'a> {
        lane: &'a Lane,
        group: u16,
        done: bool,
    }
    impl Drop for Unwind<'_> {
        fn drop(&mut self) {
            if !self.done {
                self.lane.gcra.lock().remove(&self.group);
            }
        }
    }
    let mut unwind = Unwind {
        lane: &lane,
        group,
        done: false,
    };
    let ahead = link.timeout.as_nanos().min(u128::from(u64::MAX)) as Nanos;
    while let Some(batch) = GcraBatches::next(&lane, group, link.timeout) {
        let Some(deadline) = batch.iter().map(|c| c.deadline).min() else {
            continue;
        };
        batches.runs.fetch_add(1, Ordering::Relaxed);
        let lua = &batches.lua;
        let calls = &batch;
        let args = GcraArgs::of(calls);
        let args = &args;
        let fill = |cmd: &mut redis::Cmd| {
            cmd.arg(args.keys.len());
            for key in &args.keys {
                cmd.arg(*key);
            }
            cmd.arg(ahead).arg(args.rules.len());
            for rule in &args.rules {
                cmd.arg(rule.interval).arg(rule.tolerance);
            }
            for (call, code) in calls.iter().zip(&args.codes) {
                cmd.arg(call.now).arg(*code);
            }
        };
        let result: Result<Vec<i64>, StoreError> = link
            .try_call_on(&lane, deadline, |mut c| async move {
                lua.run(&mut c, fill).await
            })
            .await;
        let result = result.and_then(|values| {
            let decisions: Option<Vec<RateDecision>> = values
                .chunks_exact(2)
                .map(|d| gcra_decision(d[0], d[1]))
                .collect();
            match decisions {
                Some(decisions) if decisions.len() == batch.len() && values.len() % 2 == 0 => {
                    Ok(decisions)
                }
                _ => Err(StoreError("redis: a malformed GCRA answer".into())),
            }
        });
        match result {
            Ok(decisions) => {
                for (call, decision) in batch.into_iter().zip(decisions) {
                    let _ = call.reply.send(Ok(decision));
                }
            }
            Err(error) => {
                for call in batch {
                    let _ = call.reply.send(Err(error.clone()));
                }
            }
        }
    }
    // `next` removed the group, under the lock a new call would take.
    unwind.done = true;
}

/// A batch's script arguments: its distinct keys and rules, in the order
/// they first appear, and each call's code (see [`GCRA`]).
struct GcraArgs<'a> {
    keys: Vec<&'a str>,
    rules: Vec<GcraRule>,
    codes: Vec<u64>,
}

impl<'a> GcraArgs<'a> {
    fn of(calls: &'a [GcraCall]) -> GcraArgs<'a> {
        let mut index: HashMap<&str, u64> = HashMap::new();
        let mut keys = Vec::new();
        let mut rules: Vec<GcraRule> = Vec::new();
        let mut picks = Vec::with_capacity(calls.len());
        for call in calls {
            let key = *index.entry(&call.key).or_insert_with(|| {
                keys.push(call.key.as_str());
                keys.len() as u64 - 1
            });
            let rule = match rules.iter().position(|r| *r == call.rule) {
                Some(i) => i,
                None => {
                    rules.push(call.rule);
                    rules.len() - 1
                }
            } as u64;
            picks.push((key, rule, u64::from(call.commit)));
        }
        let n = rules.len() as u64;
        let codes = picks
            .into_iter()
            .map(|(key, rule, commit)| (key * n + rule) * 2 + commit)
            .collect();
        GcraArgs { keys, rules, codes }
    }
}

/// One call's two numbers of a [`GCRA`] answer as its decision; `None`
/// for numbers the script never answers.
fn gcra_decision(first: i64, reset_after: i64) -> Option<RateDecision> {
    let reset_after = u64::try_from(reset_after).ok()?;
    if first >= 0 {
        return Some(RateDecision {
            allowed: true,
            remaining: first as u64,
            retry_after: 0,
            reset_after,
        });
    }
    let retry_after = first.checked_neg()?.checked_sub(1)?;
    Some(RateDecision {
        allowed: false,
        remaining: 0,
        retry_after: u64::try_from(retry_after).ok()?,
        reset_after,
    })
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the
/// bytes between the first `{` and the next `}`, if not empty) or of the
/// whole key, mod 16384 — as Redis computes it.
fn key_slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tag) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

// === impl Source ===

/// A node to send a command to: `None` is "wherever the connection routes it".
type Node = Option<(String, u16)>;

impl Source {
    fn new(
        target: &RedisTarget,
        access: &RedisAccess,
        timeout: Duration,
    ) -> Result<Source, String> {
        let certs = || TlsCertificates {
            client_tls: None,
            root_cert: access.ca_pem.clone(),
        };
        // A connection attempt gets at least a second (it carries on for
        // the next caller after a caller's deadline has passed).
        let connect_within = timeout.max(Duration::from_secs(1));
        match target {
            RedisTarget::Single(url) => {
                let mut info = parse_url(url, "redis_url")?;
                apply_access(&mut info.redis, access);
                let client = if access.ca_pem.is_some() {
                    redis::Client::build_with_tls(info, certs())
                } else {
                    redis::Client::open(info)
                }
                .map_err(|e| format!("bad redis_url: {e}"))?;
                Ok(Source::Single {
                    client,
                    connect_within,
                })
            }
            RedisTarget::Cluster(nodes) => {
                let infos = nodes
                    .iter()
                    .map(|url| {
                        let mut info = parse_url(url, "cluster node")?;
                        apply_access(&mut info.redis, access);
                        Ok(info)
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let mut builder = ClusterClientBuilder::new(infos)
                    // Few, short retries (a MOVED or a refreshed slot map
                    // after a failover); the call's deadline bounds them.
                    .retries(2)
                    .min_retry_wait(5)
                    .max_retry_wait((timeout.as_millis() as u64).max(10))
                    .connection_timeout(connect_within)
                    .response_timeout(connect_within);
                if let Some(user) = &access.username {
                    builder = builder.username(user.clone());
                }
                if let Some(password) = &access.password {
                    builder = builder.password(password.clone());
                }
                if access.ca_pem.is_some() {
                    builder = builder.certs(certs());
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("bad cluster nodes: {e}"))?;
                Ok(Source::Cluster { client })
            }
            RedisTarget::Sentinel { master, nodes } => {
                let infos = nodes
                    .iter()
                    .map(|url| parse_url(url, "sentinel node"))
                    .collect::<Result<Vec<_>, String>>()?;
                let tls = infos
                    .iter()
                    .any(|i| matches!(i.addr, redis::ConnectionAddr::TcpTls { .. }));
                let addrs = infos.into_iter().map(|i| i.addr);
                let mut builder =
                    SentinelClientBuilder::new(addrs, master.clone(), SentinelServerType::Master)
                        .map_err(|e| format!("bad sentinel nodes: {e}"))?;
                if tls {
                    // The master is reached as the sentinels are.
                    builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                    if access.ca_pem.is_some() {
                        builder = builder
                            .set_client_to_redis_certificates(certs())
                            .set_client_to_sentinel_certificates(certs());
                    }
                }
                if let Some(user) = &access.username {
                    builder = builder.set_client_to_redis_username(user.clone());
                }
                if let Some(password) = &access.password {
                    builder = builder.set_client_to_redis_password(password.clone());
                }
                let sentinels = builder
                    .build()
                    .map_err(|e| format!("bad sentinel nodes: {e}"))?;
                Ok(Source::Sentinel(Box::new(SentinelSource {
                    sentinels: tokio::sync::Mutex::new(sentinels),
                    master: Mutex::new(None),
                    current: AtomicU64::new(0),
                    generation: AtomicU64::new(0),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(connect_within)
                        .set_response_timeout(connect_within),
                })))
            }
        }
    }

    /// A lane's connection cell, empty.
    fn lane(&self) -> Lane {
        let conn = match self {
            Source::Single { .. } => LaneConn::Single(OnceCell::new()),
            Source::Cluster { .. } => LaneConn::Cluster(OnceCell::new()),
            Source::Sentinel(_) => LaneConn::Sentinel(Mutex::new(None)),
        };
        Lane {
            conn,
            gcra: Mutex::new(HashMap::new()),
        }
    }

    /// `lane`'s connection ready now, if any (the common case: no await).
    fn ready(&self, lane: &Lane) -> Option<(Conn, u64)> {
        match &lane.conn {
            LaneConn::Single(conn) => conn.get().map(|c| (Conn::Single(c.clone()), 0)),
            LaneConn::Cluster(conn) => conn.get().map(|c| (Conn::Cluster(c.clone()), 0)),
            LaneConn::Sentinel(current) => {
                let Source::Sentinel(s) = self else {
                    return None;
                };
                let master = s.current.load(Ordering::Acquire);
                current
                    .lock()
                    .as_ref()
                    .filter(|(g, _)| *g == master)
                    .map(|(g, c)| (Conn::Sentinel(c.clone()), *g))
            }
        }
    }

    /// Makes (or, for a sentinel, finds anew) `lane`'s connection.
    async fn make(&self, lane: &Lane) -> Result<(Conn, u64), RedisError> {
        match (self, &lane.conn) {
            (
                Source::Single {
                    client,
                    connect_within,
                },
                LaneConn::Single(conn),
            ) => {
                let config = ConnectionManagerConfig::new()
                    // No retries inside the manager: a failed reconnect
                    // fails the call at once and the breaker spaces out the
                    // next attempts (its default backoff would wait up to
                    // a minute before noticing Redis is back).
                    .set_number_of_retries(0)
                    .set_connection_timeout(*connect_within);
                let c = conn
                    .get_or_try_init(|| ConnectionManager::new_with_config(client.clone(), config))
                    .await?;
                Ok((Conn::Single(c.clone()), 0))
            }
            (Source::Cluster { client }, LaneConn::Cluster(conn)) => {
                let c = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                Ok((Conn::Cluster(c.clone()), 0))
            }
            (Source::Sentinel(s), LaneConn::Sentinel(current)) => {
                let known = s.master.lock().clone();
                let (g, master) = match known {
                    Some(known) => known,
                    None => {
                        let mut sentinels = s.sentinels.lock().await;
                        // Someone else may have found it while we waited.
                        let known = s.master.lock().clone();
                        match known {
                            Some(known) => known,
                            None => {
                                let master = sentinels.async_get_client().await?;
                                let g = s.generation.fetch_add(1, Ordering::Relaxed) + 1;
                                *s.master.lock() = Some((g, master.clone()));
                                s.current.store(g, Ordering::Release);
                                (g, master)
                            }
                        }
                    }
                };
                let c = master
                    .get_multiplexed_async_connection_with_config(&s.config)
                    .await?;
                *current.lock() = Some((g, c.clone()));
                Ok((Conn::Sentinel(c), g))
            }
            _ => Err(RedisError::from((
                redis::ErrorKind::ClientError,
                "a lane of another kind of store",
            ))),
        }
    }

    /// A call on `lane`'s connection `generation` failed: a sentinel's
    /// master may have changed, so that connection and that master are
    /// dropped, and the next call of any lane asks the sentinels again.
    /// (The others heal by themselves.)
    fn failed(&self, lane: &Lane, generation: u64) {
        let (Source::Sentinel(s), LaneConn::Sentinel(current)) = (self, &lane.conn) else {
            return;
        };
        {
            let mut current = current.lock();
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        }
        let mut master = s.master.lock();
        if master.as_ref().is_some_and(|(g, _)| *g == generation) {
            *master = None;
            s.current.store(0, Ordering::Release);
        }
    }
}

fn parse_url(url: &str, what: &str) -> Result<redis::ConnectionInfo, String> {
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| format!("bad {what}: {e}"))
}

fn apply_access(info: &mut redis::RedisConnectionInfo, access: &RedisAccess) {
    if let Some(user) = &access.username {
        info.username = Some(user.clone());
    }
    if let Some(password) = &access.password {
        info.password = Some(password.clone());
    }
}

// === impl Conn ===

impl Conn {
    /// The nodes a `SCAN` must visit: every master of a cluster, else
    /// the one server.
    async fn scan_nodes(self) -> Result<Vec<Node>, RedisError> {
        let Conn::Cluster(mut c) = self else {
            return Ok(vec![None]);
        };
        let nodes = c
            .route_command(
                &redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let text: String = redis::from_redis_value(&nodes)?;
        Ok(cluster_masters(&text).into_iter().map(Some).collect())
    }

    /// Runs `cmd` on `node` (or where it routes, for `None`).
    async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        node: Option<&(String, u16)>,
    ) -> Result<T, RedisError> {
        match (self, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                redis::from_redis_value(&c.route_command(cmd, routing).await?)
            }
            (c, _) => cmd.query_async(c).await,
        }
    }

    /// Runs pipelines whose results are all ignored: as one pipeline on
    /// one server, or each on its own (all at once) on a cluster, where
    /// a pipeline may not span slots.
    async fn run_pipelines(mut self, pipes: Vec<redis::Pipeline>) -> Result<(), RedisError> {
        if let Conn::Cluster(c) = &self {
            let runs = pipes.iter().map(|p| {
                let mut c = c.clone();
                async move { p.query_async::<()>(&mut c).await }
            });
            futures_util::future::try_join_all(runs).await?;
            return Ok(());
        }
        let mut all = redis::pipe();
        for pipe in &pipes {
            for cmd in pipe.cmd_iter() {
                all.add_command(cmd.clone()).ignore();
            }
        }
        all.query_async(&mut self).await
    }

    /// `HGETALL` of each key, in order: one pipeline, or (on a cluster)
    /// one command per key, all at once.
    async fn hgetall_each(
        mut self,
        keys: Vec<String>,
    ) -> Result<Vec<HashMap<String, u64>>, RedisError> {
        if let Conn::Cluster(c) = &self {
            let runs = keys.iter().map(|k| {
                let mut c = c.clone();
                async move { redis::cmd("HGETALL").arg(k).query_async(&mut c).await }
            });
            return futures_util::future::try_join_all(runs).await;
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("HGETALL").arg(key);
        }
        pipe.query_async(&mut self).await
    }
}

/// The `host:port` of every master in `CLUSTER NODES` output that is not
/// marked failed (`id addr@cport[,hostname] flags master ...`).
fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !is_master || failed {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

// === impl Link ===

impl Link {
    /// The lane of the runtime this runs on (made on its first call).
    fn lane(&self) -> Arc<Lane> {
        let id = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let mut lanes = self.lanes.lock();
        if let Some(lane) = lanes.get(&id) {
            return lane.clone();
        }
        if lanes.len() >= MAX_LANES {
            lanes.clear();
        }
        let lane = Arc::new(self.source.lane());
        lanes.insert(id, lane.clone());
        lane
    }

    /// The connection, made in a task of its own when there is none yet:
    /// a caller whose deadline passes gives up waiting, but the attempt
    /// (bounded by the connection timeout) carries on for the next
    /// caller, so a Redis that is slower to reach than `timeout` still
    /// gets connected. Later reconnects are the connection's own.
    async fn connection(self: &Arc<Self>, lane: &Arc<Lane>) -> Result<(Conn, u64), RedisError> {
        if let Some(ready) = self.source.ready(lane) {
            return Ok(ready);
        }
        let link = self.clone();
        let lane = lane.clone();
        let task = tokio::spawn(async move { link.source.make(&lane).await });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(RedisError::from((
                redis::ErrorKind::ClientError,
                "redis connect task failed",
                e.to_string(),
            ))),
        }
    }

    /// Runs one round trip through the breaker, within the deadline; a
    /// failure counts in `errors`.
    async fn call<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let result = self.try_call(op).await;
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// As [`Link::call`], counting nothing: for a batch, whose callers
    /// count their own failures.
    async fn try_call<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.try_call_on(&self.lane(), deadline, op).await
    }

    /// As [`Link::try_call`], on `lane` (a batch driver's, which is the
    /// lane of the runtime it runs on), until `deadline`.
    async fn try_call_on<T, F, Fut>(
        self: &Arc<Self>,
        lane: &Arc<Lane>,
        deadline: tokio::time::Instant,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let Some(permit) = self.breaker.admit() else {
            return Err(StoreError(
                "circuit open after repeated redis failures".into(),
            ));
        };
        let mut used = None;
        let attempt = async {
            let (conn, generation) = self.connection(lane).await?;
            used = Some(generation);
            op(conn).await
        };
        let error = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(value)) => {
                permit.succeeded();
                return Ok(value);
            }
            Ok(Err(e)) => StoreError(format!("redis: {e}")),
            Err(_) => deadline_passed(self.timeout),
        };
        if let Some(generation) = used {
            self.source.failed(lane, generation);
        }
        permit.failed();
        Err(error)
    }
}

/// The error of a call not answered within the store deadline.
fn deadline_passed(timeout: Duration) -> StoreError {
    StoreError(format!("redis did not answer within {timeout:?}"))
}

// === impl Breaker ===

/// A circuit breaker over consecutive failures. Closed: every call goes
/// through. After `TRIP_AFTER` failures in a row it opens: calls fail at
/// once for `OPEN_FOR`; then one probe goes through (the others keep
/// failing fast) — success closes it, failure opens it again.
struct Breaker {
    failures: AtomicU32,
    /// Milliseconds since `born` until which it stays open.
    open_until: AtomicU64,
    probing: AtomicBool,
    born: Instant,
}

/// Leave to make one call; reports how it went (a dropped permit, e.g. a
/// caller that hung up, frees the probe slot without a verdict).
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    const TRIP_AFTER: u32 = 5;
    const OPEN_FOR: Duration = Duration::from_secs(1);

    fn new() -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            born: crate::clock::monotonic(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn tripped(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= Self::TRIP_AFTER
    }

    fn admit(&self) -> Option<Permit<'_>> {
        if !self.tripped() {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        if self.now_ms() < self.open_until.load(Ordering::Relaxed) {
            return None;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Permit {
                breaker: self,
                probe: true,
            })
    }
}

impl Permit<'_> {
    fn succeeded(self) {
        self.breaker.failures.store(0, Ordering::Relaxed);
    }

    fn failed(self) {
        let b = self.breaker;
        let failures = b.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if failures >= Breaker::TRIP_AFTER {
            let until = b.now_ms() + Breaker::OPEN_FOR.as_millis() as u64;
            b.open_until.store(until, Ordering::Relaxed);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

// === impl Store for RedisStore ===

impl Store for RedisStore {
    /// Joins the batch of its group (see [`GcraBatches`]); answered within
    /// the deadline, the wait for the batch before it included (the
    /// driver sees to it: see [`drive_gcra`]).
    async fn gcra(
        &self,
        key: &str,
        rule: GcraRule,
        now: Nanos,
        commit: bool,
    ) -> Result<RateDecision, StoreError> {
        let key = self.key("gcra", key);
        let (reply, answer) = oneshot::channel();
        let call = GcraCall {
            key,
            rule,
            now,
            commit,
            deadline: tokio::time::Instant::now() + self.link.timeout,
            reply,
        };
        let lane = self.link.lane();
        if let Some(group) = self.gcra.join(&lane, call) {
            tokio::spawn(drive_gcra(
                self.gcra.clone(),
                self.link.clone(),
                lane,
                group,
            ));
        }
        let result = match answer.await {
            Ok(result) => result,
            Err(_) => Err(StoreError("redis: the batch was dropped".into())),
        };
        if result.is_err() {
            self.link.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn quota_take(
        &self,
        key: &str,
        limit: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<QuotaDecision, StoreError> {
        let key = self.quota_key(key, period_end);
        let ttl = ttl_ms(period_end, now);
        let lua = &self.scripts.quota_take;
        let (allowed, used): (u8, u64) = self
            .link
            .call(|mut c| async move {
                lua.run(&mut c, |cmd| {
                    cmd.arg(1).arg(&key).arg(limit).arg(ttl);
                })
                .await
            })
            .await?;
        Ok(QuotaDecision {
            allowed: allowed == 1,
            used,
            remaining: limit.saturating_sub(used),
        })
    }

    async fn quota_refund(
        &self,
        key: &str,
        period_end: Nanos,
        _now: Nanos,
    ) -> Result<(), StoreError> {
        let key = self.quota_key(key, period_end);
        let lua = &self.scripts.quota_refund;
        self.link
            .call(|mut c| async move {
                lua.run::<()>(&mut c, |cmd| {
                    cmd.arg(1).arg(&key);
                })
                .await
            })
            .await
    }

    async fn quota_take_units(
        &self,
        key: &str,
        limit: u64,
        units: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<QuotaDecision, StoreError> {
        let mut invocation = UNIT_SCRIPTS.take.key(self.quota_key(key, period_end));
        invocation
            .arg(limit)
            .arg(units)
            .arg(ttl_ms(period_end, now));
        let (allowed, used): (u8, u64) = self
            .link
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(QuotaDecision {
            allowed: allowed == 1,
            used,
            remaining: limit.saturating_sub(used),
        })
    }

    async fn quota_settle(
        &self,
        key: &str,
        delta: i64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<u64, StoreError> {
        // The period is over: its counter is gone (or going), and the new
        // period's is not this call's.
        if period_end <= now {
            return Ok(0);
        }
        let mut invocation = UNIT_SCRIPTS.settle.key(self.quota_key(key, period_end));
        invocation.arg(delta).arg(ttl_ms(period_end, now));
        self.link
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    async fn hit(&self, key: &str, window: Nanos, now: Nanos) -> Result<u64, StoreError> {
        let key = self.key("hit", key);
        let end = now.saturating_add(window);
        let ttl = ttl_ms(end, now);
        let lua = &self.scripts.hit;
        self.link
            .call(|mut c| async move {
                lua.run(&mut c, |cmd| {
                    cmd.arg(1).arg(&key).arg(now).arg(end).arg(ttl);
                })
                .await
            })
            .await
    }

    async fn ban_get(&self, key: &str, now: Nanos) -> Result<Option<Ban>, StoreError> {
        let key = self.key("ban", key);
        let value: Option<String> = self
            .link
            .call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(active(value, now))
    }

    async fn ban_set(&self, key: &str, ban: Ban, now: Nanos) -> Result<(), StoreError> {
        let key = self.key("ban", key);
        let value = format!("{}:{}", ban.until, ban.reason);
        let ttl = ttl_ms(ban.until, now);
        let lua = &self.scripts.ban_set;
        self.link
            .call(|mut c| async move {
                lua.run::<()>(&mut c, |cmd| {
                    cmd.arg(1)
                        .arg(&key)
                        .arg(now)
                        .arg(ban.until)
                        .arg(&value)
                        .arg(ttl);
                })
                .await
            })
            .await
    }

    async fn ban_list(&self, now: Nanos) -> Result<Vec<(String, Ban)>, StoreError> {
        let keys = self.scan("ban").await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_COUNT) {
            let full: Vec<String> = chunk.iter().map(|k| self.key("ban", k)).collect();
            let values: Vec<Option<String>> = self
                .link
                .call(|mut c| async move { redis::cmd("MGET").arg(full).query_async(&mut c).await })
                .await?;
            out.extend(
                chunk
                    .iter()
                    .zip(values)
                    .filter_map(|(k, v)| active(v, now).map(|b| (k.clone(), b))),
            );
        }
        // Already sorted: `scan` sorts the keys.
        Ok(out)
    }

    async fn ban_remove(&self, key: &str, now: Nanos) -> Result<bool, StoreError> {
        let key = self.key("ban", key);
        // GETDEL: the removal and the read of what was removed are one step.
        let value: Option<String> = self
            .link
            .call(|mut c| async move { redis::cmd("GETDEL").arg(key).query_async(&mut c).await })
            .await?;
        Ok(active(value, now).is_some())
    }

    async fn quota_peek(
        &self,
        key: &str,
        period_end: Nanos,
        _now: Nanos,
    ) -> Result<u64, StoreError> {
        let key = self.quota_key(key, period_end);
        let used: Option<u64> = self
            .link
            .call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Ok(used.unwrap_or(0))
    }

    /// Buffers the counts in-process; a task flushes them every second (or
    /// at [`USAGE_FLUSH_AT`] waiting counters) in one pipelined round trip.
    /// Never fails: counts that cannot be flushed wait for the next flush.
    async fn usage_add(&self, subject: &str, counts: &[(&str, u64)]) -> Result<(), StoreError> {
        self.ensure_flusher();
        {
            let mut buffer = self.usage.counts.lock();
            let fields = match buffer.get_mut(subject) {
                Some(fields) => fields,
                None => buffer.entry(subject.to_string()).or_default(),
            };
            for (field, n) in counts {
                match fields.get_mut(*field) {
                    Some(count) => *count = count.saturating_add(*n),
                    None => {
                        fields.insert((*field).to_string(), *n);
                    }
                }
            }
        }
        let waiting = self
            .usage
            .waiting
            .fetch_add(counts.len() as u64, Ordering::Relaxed);
        if waiting + counts.len() as u64 >= USAGE_FLUSH_AT as u64 {
            self.usage.flush_now.notify_one();
        }
        Ok(())
    }

    /// This instance's buffered counts are flushed first; other instances'
    /// lag by at most their flush interval.
    async fn usage_list(&self) -> Result<Vec<UsageEntry>, StoreError> {
        self.flush_usage().await?;
        let subjects = self.scan("usage").await?;
        let mut out = Vec::with_capacity(subjects.len());
        for chunk in subjects.chunks(SCAN_COUNT) {
            let keys: Vec<String> = chunk.iter().map(|s| self.key("usage", s)).collect();
            let hashes: Vec<HashMap<String, u64>> = self
                .link
                .call(|c| async move { c.hgetall_each(keys).await })
                .await?;
            for (subject, fields) in chunk.iter().zip(hashes) {
                if fields.is_empty() {
                    continue;
                }
                let mut counts: Vec<(String, u64)> = fields.into_iter().collect();
                counts.sort();
                out.push(UsageEntry {
                    subject: subject.clone(),
                    counts,
                });
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.link
            .call(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    async fn calls_push(
        &self,
        calls: &[CallRecord],
        bounds: CallLogBounds,
        now: Nanos,
    ) -> Result<(), StoreError> {
        if calls.is_empty() {
            return Ok(());
        }
        let (list, entries, meta) = self.call_log_keys();
        let mut invocation = calls_push_script().key(list);
        invocation
            .key(entries)
            .key(meta)
            .arg(now.to_string())
            .arg(bounds.max_entries)
            .arg(bounds.max_bytes)
            .arg((bounds.ttl / 1_000_000).max(1));
        for call in calls {
            let summary = serde_json::to_string(&call.summary)
                .map_err(|e| StoreError(format!("call summary: {e}")))?;
            invocation
                .arg(&call.summary.id)
                .arg(call.summary.expires.to_string())
                .arg(call.summary.weight(&call.entry))
                .arg(summary)
                .arg(format!("{} {}", call.summary.expires, call.entry));
        }
        self.link
            .call(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
            .await
    }

    async fn calls_page(&self, filter: &CallFilter, now: Nanos) -> Result<CallPage, StoreError> {
        let (list, entries, _) = self.call_log_keys();
        let items: Vec<String> = self
            .link
            .call(|mut c| async move {
                redis::cmd("LRANGE")
                    .arg(list)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let limit = filter.limit.max(1);
        let mut matching = items
            .iter()
            .filter_map(|item| parse_call_item(item))
            .filter(|(seq, summary)| filter.matches(*seq, summary, now));
        let page: Vec<(u64, CallSummary)> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        if page.is_empty() {
            return Ok(CallPage::default());
        }
        let ids: Vec<&str> = page.iter().map(|(_, s)| s.id.as_str()).collect();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(entries).arg(&ids);
        let values: Vec<Option<String>> = self
            .link
            .call(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        let next = more.then(|| page.last().map(|(seq, _)| *seq)).flatten();
        let entries = page
            .iter()
            .zip(values)
            .filter_map(|((seq, _), value)| Some((*seq, live_call_entry(value?, now)?)))
            .collect();
        Ok(CallPage { entries, next })
    }

    async fn calls_get(&self, request_id: &str, now: Nanos) -> Result<Option<String>, StoreError> {
        let (_, entries, _) = self.call_log_keys();
        let id = request_id.to_string();
        let value: Option<String> = self
            .link
            .call(|mut c| async move {
                redis::cmd("HGET")
                    .arg(entries)
                    .arg(id)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(value.and_then(|v| live_call_entry(v, now)))
    }
    async fn session_open(
        &self,
        session: SessionKey<'_>,
        value: &str,
        max_per_owner: u64,
        idle: Nanos,
        now: Nanos,
    ) -> Result<bool, StoreError> {
        let (index, key) = self.session_keys(session);
        let mut invocation = SESSION_OPEN.key(index);
        invocation
            .key(key)
            .arg(now / MILLI)
            .arg(idle.div_ceil(MILLI).max(1))
            .arg(max_per_owner.max(1))
            .arg(value)
            .arg(session.id);
        self.link
            .call(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
            .await?;
        Ok(true)
    }

    async fn session_touch(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> Result<Option<String>, StoreError> {
        let (index, key) = self.session_keys(session);
        let mut invocation = SESSION_TOUCH.key(index);
        invocation
            .key(key)
            .arg(now / MILLI)
            .arg(idle.div_ceil(MILLI).max(1))
            .arg(session.id);
        self.link
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    async fn session_close(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> Result<bool, StoreError> {
        let (index, key) = self.session_keys(session);
        let mut invocation = SESSION_CLOSE.key(index);
        invocation
            .key(key)
            .arg(now / MILLI)
            .arg(idle.div_ceil(MILLI).max(1))
            .arg(session.id);
        let closed: u8 = self
            .link
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(closed == 1)
    }
}

// === the call log ===

/// Call-log push. Atomic: the appends and the eviction are one script, so
/// concurrent gateways never leave the log over its bounds. Each call is
/// added unless its request id is already there (HSETNX); then, oldest
/// first (the list's tail), entries are evicted while the log holds more
/// than `max_entries` or `max_bytes`, or the oldest has expired. Every key
/// then expires `ttl` after this push. KEYS[1] list, KEYS[2] entries,
/// KEYS[3] meta; ARGV now, max_entries, max_bytes, ttl_ms, then per call
/// id, expires, weight, summary JSON, entry value. A list item is
/// `{seq} {expires} {weight} {id} {summary JSON}`.
const CALLS_PUSH: &str = r#"
local now = ARGV[1]
local max_n = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[3], 'bytes')
end
for i = 5, #ARGV, 5 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[2], id, ARGV[i + 4]) == 1 then
    local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
    redis.call('LPUSH', KEYS[1], seq .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' ' .. id .. ' ' .. ARGV[i + 3])
    redis.call('HINCRBY', KEYS[3], 'bytes', ARGV[i + 2])
  end
end
local n = redis.call('LLEN', KEYS[1])
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
while n > 0 do
  local last = redis.call('LINDEX', KEYS[1], -1)
  local exp, w, id = string.match(last, '^%d+ (%d+) (%d+) (%S+) ')
  if exp and n <= max_n and bytes <= max_bytes and before(now, exp) then break end
  redis.call('RPOP', KEYS[1])
  if id then redis.call('HDEL', KEYS[2], id) end
  bytes = bytes - (tonumber(w) or 0)
  n = n - 1
end
if bytes < 0 then bytes = 0 end
redis.call('HSET', KEYS[3], 'bytes', string.format('%d', bytes))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return n
"#;

/// The push script, hashed once per process.
fn calls_push_script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| script(CALLS_PUSH))
}

impl RedisStore {
    /// The call log's list, entries hash and meta hash: one hash tag, so
    /// one slot (and one script) on a cluster.
    fn call_log_keys(&self) -> (String, String, String) {
        let list = self.key("calls", "log");
        (
            list.clone(),
            format!("{list}:entries"),
            format!("{list}:meta"),
        )
    }
}

/// `{seq} {expires} {weight} {id} {summary JSON}` as `(seq, summary)`.
fn parse_call_item(item: &str) -> Option<(u64, CallSummary)> {
    let mut parts = item.splitn(5, ' ');
    let seq = parts.next()?.parse().ok()?;
    let summary = serde_json::from_str(parts.nth(3)?).ok()?;
    Some((seq, summary))
}

/// The entry of a `{expires} {entry}` value, unless it has expired.
fn live_call_entry(value: String, now: Nanos) -> Option<String> {
    let (expires, entry) = value.split_once(' ')?;
    (now < expires.parse::<Nanos>().ok()?).then(|| entry.to_string())
}

// === MCP sessions ===
//
// An owner's sessions share its hash tag: `{prefix}:session:{owner}` is a
// sorted set of its session ids scored by last use (ms, the caller's
// clock), and `{prefix}:session:{owner}:{id}` holds each one's value. Both
// expire `idle` after the last use (Redis's clock: only the clean-up); the
// scripts judge idleness by the scores, on the caller's clock.

const MILLI: Nanos = 1_000_000;

/// Session open. Atomic: the owner's idled-out sessions are dropped, then
/// its least recently used ones while it holds `max`; then the session is
/// written. KEYS[1] index, KEYS[2] session; ARGV now_ms, idle_ms, max,
/// value, id.
static SESSION_OPEN: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - idle)
local n = redis.call('ZCARD', KEYS[1]) - #gone
if n >= max then
  local oldest = redis.call('ZRANGE', KEYS[1], #gone, #gone + n - max)
  for _, id in ipairs(oldest) do table.insert(gone, id) end
end
for _, id in ipairs(gone) do
  redis.call('DEL', KEYS[1] .. ':' .. id)
  redis.call('ZREM', KEYS[1], id)
end
redis.call('SET', KEYS[2], ARGV[4], 'PX', idle)
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], idle)
return 1
"#,
    )
});

/// Session touch. Atomic: a session last used `idle` or more ago is
/// dropped and not found; a live one is marked used now. KEYS[1] index,
/// KEYS[2] session; ARGV now_ms, idle_ms, id. Returns the value or nil.
static SESSION_TOUCH: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local last = redis.call('ZSCORE', KEYS[1], ARGV[3])
local value = redis.call('GET', KEYS[2])
if not last or not value then return false end
if tonumber(ARGV[1]) - tonumber(last) >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[3])
  return false
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return value
"#,
    )
});

/// Session close. Atomic: the session is removed; 1 when it was live.
/// KEYS[1] index, KEYS[2] session; ARGV now_ms, idle_ms, id.
static SESSION_CLOSE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local last = redis.call('ZSCORE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[3])
local existed = redis.call('DEL', KEYS[2])
if existed == 1 and last and tonumber(ARGV[1]) - tonumber(last) < tonumber(ARGV[2]) then
  return 1
end
return 0
"#,
    )
});

impl RedisStore {
    /// The owner's index and the session's key (one hash tag: the owner).
    fn session_keys(&self, session: SessionKey<'_>) -> (String, String) {
        let index = self.key("session", session.owner);
        let key = format!("{index}:{}", session.id);
        (index, key)
    }
}

#[cfg(test)]
#[path = "../../tests/common/redis_server.rs"]
pub(crate) mod redis_server;

#[cfg(test)]
mod tests {
    use super::redis_server::RedisServer;
    use super::*;
    use crate::state::{suite, SECOND};

    const TIMEOUT: Duration = Duration::from_millis(500);

    /// The shared behaviour suite (`state::suite`), against a real
    /// redis-server of its own.
    #[tokio::test]
    async fn redis_store_passes_the_store_suite() {
        let server = RedisServer::start().await;
        let url = server.url();
        suite::run_all(|| RedisStore::open(&url, TIMEOUT).expect("url")).await;
    }

    /// The same suite against a real 3-master, 3-replica cluster: keys of
    /// every case spread over the masters.
    #[tokio::test]
    async fn redis_cluster_store_passes_the_store_suite() {
        let cluster = super::redis_server::RedisCluster::start().await;
        let target = RedisTarget::Cluster(cluster.urls());
        let access = RedisAccess::default();
        suite::run_all(|| {
            RedisStore::connect_to(&target, &access, TIMEOUT, DEFAULT_PREFIX).expect("nodes")
        })
        .await;
        // Batches are grouped by slot, computed here as the cluster does.
        for key in [
            "tollgate:gcra:{p:k}",
            "foo",
            "{}x",
            "a{b}c{d}",
            "x{}{y}",
            "{p:{k}",
        ] {
            assert_eq!(
                key_slot(key.as_bytes()),
                cluster.keyslot(key).await,
                "{key}"
            );
        }
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    /// Concurrent calls go to Redis in batches, one script run each, and
    /// decide exactly as one by one would.
    #[tokio::test]
    async fn concurrent_gcra_calls_share_script_runs() {
        let server = RedisServer::start().await;
        let store = RedisStore::open(&server.url(), TIMEOUT).expect("url");
        store.ping().await.expect("ping");
        let rule = GcraRule::new(50, 3600 * SECOND, 50);
        let now = 1_761_234_567 * SECOND;
        let keys = ["p:a", "p:b"];
        let calls = (0..400).map(|i| store.gcra(keys[i % 2], rule, now, true));
        let got = futures_util::future::join_all(calls).await;
        for (k, key) in keys.iter().enumerate() {
            let admitted = (0..400)
                .filter(|i| i % 2 == k)
                .filter(|&i| got[i].as_ref().expect("gcra").allowed)
                .count();
            assert_eq!(admitted, 50, "{key}");
        }
        let runs = store.gcra.runs.load(Ordering::Relaxed);
        assert!(runs * 8 <= 400, "{runs} script runs for 400 calls");
        // A lone call afterwards is sent on its own, at once.
        let d = store.gcra("p:c", rule, now, true).await.expect("gcra");
        assert_eq!((d.allowed, d.remaining), (true, 49));
        assert_eq!(store.gcra.runs.load(Ordering::Relaxed), runs + 1);
    }

    /// The GCRA script's rule written out in integers (a bucket is its
    /// arrival time and the latest `now` that wrote it): the reference the
    /// batched script is held to.
    fn gcra_model(
        bucket: &mut Option<(Nanos, Nanos)>,
        rule: GcraRule,
        now: Nanos,
        commit: bool,
    ) -> RateDecision {
        let ahead = TIMEOUT.as_nanos() as Nanos;
        let (mut at, mut lead, mut mark) = (now, 0, now);
        if let Some((_, seen)) = *bucket {
            if seen > now {
                mark = seen;
                if seen - now <= ahead {
                    (at, lead) = (seen, seen - now);
                }
            }
        }
        let start = bucket.map_or(0, |(tat, _)| tat.saturating_sub(at));
        let new = start + rule.interval;
        if new > rule.tolerance {
            return RateDecision {
                allowed: false,
                remaining: 0,
                retry_after: new - rule.tolerance + lead,
                reset_after: start + lead,
            };
        }
        if commit {
            *bucket = Some((at + new, mark));
        }
        RateDecision {
            allowed: true,
            remaining: (rule.tolerance - new) / rule.interval,
            retry_after: 0,
            reset_after: new + lead,
        }
    }

    /// A batch whose calls share keys reads and writes each key once: it
    /// still decides, call by call, what the same calls sent one at a
    /// time decide, and what the rule says (out-of-order clocks, calls
    /// more than the deadline behind, peeks and refusals among them), and
    /// leaves the same buckets behind.
    #[tokio::test]
    async fn a_batch_sharing_keys_decides_as_its_calls_one_at_a_time() {
        let server = RedisServer::start().await;
        let store = RedisStore::open(&server.url(), TIMEOUT).expect("url");
        store.ping().await.expect("ping");
        let rules = [
            GcraRule::new(20, SECOND, 5),
            GcraRule::new(3, 1_000_000_007, 2),
        ];
        let t: Nanos = 1_761_234_567 * SECOND + 987_654_321;
        let ms = 1_000_000;
        let calls: Vec<(usize, GcraRule, Nanos, bool)> = (0..240u64)
            .map(|i| {
                let jitter = (i * 7919) % 13 * ms;
                let behind = if i % 17 == 0 { 600 * ms } else { 0 };
                let now = t + i * 10 * ms + jitter - behind;
                let k = (i % 2) as usize;
                (k, rules[k], now, i % 5 != 0)
            })
            .collect();
        let mut buckets = [None, None];
        let model: Vec<RateDecision> = calls
            .iter()
            .map(|&(k, rule, now, commit)| gcra_model(&mut buckets[k], rule, now, commit))
            .collect();
        assert!(model.iter().any(|d| d.allowed) && model.iter().any(|d| !d.allowed));
        let mut one_by_one = Vec::new();
        for &(k, rule, now, commit) in &calls {
            let key = ["one:a", "one:b"][k];
            one_by_one.push(store.gcra(key, rule, now, commit).await.expect("gcra"));
        }
        let runs = store.gcra.runs.load(Ordering::Relaxed);
        let together =
            futures_util::future::join_all(calls.iter().map(|&(k, rule, now, commit)| {
                store.gcra(["all:a", "all:b"][k], rule, now, commit)
            }))
            .await;
        let batched = store.gcra.runs.load(Ordering::Relaxed) - runs;
        assert!(batched * 8 <= 240, "{batched} script runs for 240 calls");
        for (i, (got, want)) in together.into_iter().zip(&model).enumerate() {
            assert_eq!(got.expect("gcra"), *want, "call {i}, batched");
            assert_eq!(one_by_one[i], *want, "call {i}, one at a time");
        }
        for (k, keys) in [("one:a", "all:a"), ("one:b", "all:b")].iter().enumerate() {
            let (tat, seen) = buckets[k].expect("a bucket");
            for key in [keys.0, keys.1] {
                let stored: String = server
                    .query(&["GET", &store.key("gcra", key)])
                    .await
                    .expect("GET");
                assert_eq!(stored, format!("{tat}:{seen}"), "{key}");
            }
        }
    }

    /// `rediss://` with the config's CA file and an ACL user whose name and
    /// password come from the environment; the password is in no `Debug`.
    #[tokio::test]
    async fn a_tls_redis_with_an_acl_user_is_reached_as_the_config_says() {
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.to_string_lossy().into_owned()
        };
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
        let cert = write("redis.pem", ck.cert.pem());
        let key = write("redis.key", ck.key_pair.serialize_pem());
        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
        write("other-ca.pem", other.cert.pem());
        let tls_port = super::redis_server::free_addr().port().to_string();
        let server = RedisServer::start_with(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-auth-clients",
            "no",
        ])
        .await;
        let set: String = server
            .query(&["ACL", "SETUSER", "gw", "on", ">s3cret-pw", "~*", "+@all"])
            .await
            .expect("ACL SETUSER");
        assert_eq!(set, "OK");
        let off: String = server
            .query(&["ACL", "SETUSER", "default", "off"])
            .await
            .expect("default off");
        assert_eq!(off, "OK");
        std::env::set_var("TOLLGATE_TEST_TLS_REDIS_USER", "gw");
        std::env::set_var("TOLLGATE_TEST_TLS_REDIS_PASSWORD", "s3cret-pw");
        let state = |ca: &str, password_env: &str| -> StateConfig {
            let yaml = format!(
                "{{store: redis, redis_url: 'rediss://127.0.0.1:{tls_port}', timeout: 2s, \
                 redis: {{ca_file: {ca}, username_env: TOLLGATE_TEST_TLS_REDIS_USER, \
                 password_env: {password_env}}}}}"
            );
            serde_yaml::from_str(&yaml).expect("state yaml")
        };
        let good = state("redis.pem", "TOLLGATE_TEST_TLS_REDIS_PASSWORD");
        let store = RedisStore::from_config(&good, dir.path()).expect("store");
        store.ping().await.expect("ping over TLS as gw");
        let rule = GcraRule::new(1, SECOND, 1);
        assert!(
            store
                .gcra("p:k", rule, SECOND, true)
                .await
                .expect("gcra")
                .allowed
        );
        assert!(!format!("{store:?}").contains("s3cret"));
        let access = RedisAccess {
            password: Some("s3cret-pw".into()),
            ..RedisAccess::default()
        };
        assert!(!format!("{access:?}").contains("s3cret"));
        // A CA that did not sign the server's certificate: refused.
        let wrong_ca = RedisStore::from_config(
            &state("other-ca.pem", "TOLLGATE_TEST_TLS_REDIS_PASSWORD"),
            dir.path(),
        )
        .expect("store");
        assert!(wrong_ca.ping().await.is_err());
        // An unset variable is a config error at its key.
        let unset = state("redis.pem", "TOLLGATE_TEST_TLS_REDIS_UNSET");
        let error = RedisStore::from_config(&unset, dir.path()).err();
        let (at, message) = error.expect("unset variable refused");
        assert_eq!(at, ["state", "redis", "password_env"]);
        assert!(
            message.contains("TOLLGATE_TEST_TLS_REDIS_UNSET"),
            "{message}"
        );
        assert!(!message.contains("s3cret"));
    }

    /// What a promoted replica (or a restarted server) answers is
    /// `NOSCRIPT`: the script is loaded again within the same call.
    #[tokio::test]
    async fn scripts_flushed_from_redis_are_loaded_again_on_noscript() {
        let server = RedisServer::start().await;
        let store = RedisStore::open(&server.url(), TIMEOUT).expect("url");
        let rule = GcraRule::new(2, 3600 * SECOND, 2);
        let first = store.gcra("p:k", rule, SECOND, true).await.expect("gcra");
        assert_eq!((first.allowed, first.remaining), (true, 1));
        let flushed: String = server.query(&["SCRIPT", "FLUSH"]).await.expect("flush");
        assert_eq!(flushed, "OK");
        let second = store.gcra("p:k", rule, SECOND, true).await.expect("gcra");
        assert_eq!((second.allowed, second.remaining), (true, 0));
        let third = store.gcra("p:k", rule, SECOND, true).await.expect("gcra");
        assert!(!third.allowed);
    }

    #[test]
    fn cluster_nodes_output_gives_the_live_masters() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host.example master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 0 3 connected
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 5 connected 10923-16383
";
        assert_eq!(
            cluster_masters(nodes),
            [
                ("127.0.0.1".to_string(), 7001),
                ("127.0.0.1".to_string(), 7002),
                ("127.0.0.1".to_string(), 7005)
            ]
        );
    }

    #[test]
    fn a_malformed_url_is_refused_at_open() {
        let error = RedisStore::open("not a url", TIMEOUT).err();
        assert!(error.is_some_and(|e| e.contains("redis_url")));
    }

    #[tokio::test]
    async fn a_store_opened_while_redis_is_down_works_once_it_is_up() {
        let mut server = RedisServer::start().await;
        server.stop().await;
        let store = RedisStore::open(&server.url(), TIMEOUT).expect("url");
        assert!(store.ping().await.is_err());
        server.restart().await;
        store.ping().await.expect("ping after redis came up");
    }

    #[tokio::test]
    async fn the_breaker_fails_fast_after_repeated_failures() {
        let mut server = RedisServer::start().await;
        server.stop().await;
        let store = RedisStore::open(&server.url(), TIMEOUT).expect("url");
        for _ in 0..Breaker::TRIP_AFTER {
            assert!(store.ping().await.is_err());
        }
        assert!(store.is_degraded());
        let error = store.ping().await.err().map(|e| e.0);
        assert!(error.is_some_and(|e| e.contains("circuit open")));
        assert_eq!(store.errors_total(), u64::from(Breaker::TRIP_AFTER) + 1);
    }

    /// The Lua GCRA works on split decimal times; the memory store on
    /// u64 nanos. Same rule, same calls, odd intervals, real-epoch times:
    /// the same decisions, to the nanosecond.
    #[tokio::test]
    async fn redis_gcra_decides_exactly_as_the_memory_store() {
        let server = RedisServer::start().await;
        let redis = RedisStore::open(&server.url(), TIMEOUT).expect("url");
        let memory = crate::state::MemoryStore::new();
        let rules = [
            GcraRule::new(3, 1_000_000_007, 2),
            GcraRule::new(7, 3600 * SECOND + 1, 5),
            GcraRule::new(1000, SECOND, 50),
        ];
        let mut now: Nanos = 1_761_234_567 * SECOND + 999_999_999;
        for step in 0u64..300 {
            let rule = rules[(step % 3) as usize];
            let key = format!("eq:{}", step % 3);
            let commit = step % 7 != 0;
            let m = memory.gcra_now(&key, rule, now, commit);
            let r = redis.gcra(&key, rule, now, commit).await.expect("store");
            assert_eq!(r, m, "step {step}");
            now += (step * 7_919_993) % 400_000_001;
        }
    }

    /// Calls reach Redis in another order than they read the clock: the
    /// last token of a burst still goes to a call whose `now` is a little
    /// behind the one that wrote the bucket first (it is decided at that
    /// later time), but never more than the deadline behind; a bucket
    /// written as a bare arrival time (before `{tat}:{seen}`) still reads.
    #[tokio::test]
    async fn a_burst_reaching_redis_out_of_clock_order_gets_exactly_its_tolerance() {
        let server = RedisServer::start().await;
        let store = RedisStore::open(&server.url(), TIMEOUT).expect("url");
        let hour = 3600 * SECOND;
        let rule = GcraRule::new(3, hour, 3);
        let t: Nanos = 1_761_234_567 * SECOND + 123;
        let ms = 1_000_000;
        let take = |key: &'static str, now: Nanos| {
            let store = &store;
            async move { store.gcra(key, rule, now, true).await.expect("gcra") }
        };
        let later = take("p:order", t + 10 * ms).await;
        assert_eq!((later.allowed, later.remaining), (true, 2));
        for remaining in [1, 0] {
            let d = take("p:order", t).await;
            assert_eq!((d.allowed, d.remaining), (true, remaining));
        }
        let refused = take("p:order", t).await;
        assert!(!refused.allowed);
        // Times are from the caller's now: the bucket's clock is 10 ms on.
        assert_eq!(refused.retry_after, rule.interval + 10 * ms);
        assert_eq!(refused.reset_after, 3 * rule.interval + 10 * ms);
        // More than the deadline behind: decided at its own time.
        let far = TIMEOUT.as_nanos() as Nanos + ms;
        assert!(take("p:far", t + far).await.allowed);
        assert!(take("p:far", t).await.allowed);
        assert!(!take("p:far", t).await.allowed);
        // The older layout: a bare arrival time one interval ahead.
        let bare = (t + rule.interval).to_string();
        let set: String = server
            .query(&["SET", "tollgate:gcra:{p:bare}", &bare])
            .await
            .expect("SET");
        assert_eq!(set, "OK");
        let d = take("p:bare", t).await;
        assert_eq!((d.allowed, d.remaining), (true, 1));
    }

    /// A batch names each key and rule once; each call's code picks its
    /// key, rule and commit; an answer's two numbers read back as the
    /// decision, and numbers the script never sends are refused.
    #[test]
    fn gcra_batch_arguments_and_answers_are_compact() {
        let rules = [GcraRule::new(5, SECOND, 5), GcraRule::new(7, SECOND, 1)];
        let call = |key: &str, rule: GcraRule, commit: bool| GcraCall {
            key: key.to_string(),
            rule,
            now: 1,
            commit,
            deadline: tokio::time::Instant::now(),
            reply: oneshot::channel().0,
        };
        let calls = [
            call("k:a", rules[0], true),
            call("k:b", rules[1], false),
            call("k:a", rules[1], true),
            call("k:b", rules[0], true),
        ];
        let args = GcraArgs::of(&calls);
        assert_eq!(args.keys, ["k:a", "k:b"]);
        assert_eq!(args.rules, rules);
        // ((key * 2 rules + rule) * 2 + commit)
        assert_eq!(args.codes, [1, 6, 3, 5]);
        let allowed = gcra_decision(4, 200).expect("allowed");
        assert_eq!(
            (
                allowed.allowed,
                allowed.remaining,
                allowed.retry_after,
                allowed.reset_after
            ),
            (true, 4, 0, 200)
        );
        let refused = gcra_decision(-31, 900).expect("refused");
        assert_eq!(
            (
                refused.allowed,
                refused.remaining,
                refused.retry_after,
                refused.reset_after
            ),
            (false, 0, 30, 900)
        );
        assert_eq!(gcra_decision(i64::MIN, 1), None);
        assert_eq!(gcra_decision(1, -1), None);
    }

    #[test]
    fn ttls_round_up_and_ban_reasons_may_hold_colons() {
        assert_eq!(ttl_ms(1_000_001, 0), 2);
        assert_eq!(ttl_ms(5, 10), 1);
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(
            parse_ban("17:by: scanner"),
            Some(Ban {
                reason: "by: scanner".into(),
                until: 17
            })
        );
    }
}
