//! The Redis store: the same decisions as [`MemoryStore`](super::MemoryStore),
//! made atomically inside Redis, so N gateway instances pointed at one
//! Redis share one rate limit, one quota, one ban list and one set of usage
//! counters.
//!
//! ```yaml
//! state:
//!   store: redis
//!   redis_url: redis://127.0.0.1:6379
//!   timeout: 50ms               # every store call's deadline
//!   on_store_error: fail_closed # or fail_open
//! ```
//!
//! It owns the connection, the Lua scripts, the per-call deadline, a
//! circuit breaker, the in-process usage buffer and the key layout:
//!
//! | key                                   | type   | holds                         | expires            |
//! |---------------------------------------|--------|-------------------------------|--------------------|
//! | `tollgate:gcra:{key}`                 | string | theoretical arrival time (ns) | when the bucket is full again |
//! | `tollgate:quota:{key}:{period_end}`   | string | calls counted in the period   | at the period end  |
//! | `tollgate:hit:{key}`                  | hash   | `n` (count), `end` (ns)       | at the window end  |
//! | `tollgate:ban:{key}`                  | string | `{until_ns}:{reason}`         | when the ban lifts |
//! | `tollgate:usage:{subject}`            | hash   | field → count                 | 90 days after the last add |
//!
//! `{key}` is the trait's key, which already starts with the policy name.
//! Every decision is one round trip: a script run with `EVALSHA` (the
//! `redis` crate's `Script` falls back to `EVAL`-and-load on `NOSCRIPT`),
//! or a single command. Each script's atomicity rule is written above it.
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
//! **Client.** The `redis` crate (0.32: its MSRV matches ours, 1.80) with
//! `tokio-comp` + `connection-manager`: one multiplexed connection per
//! store, so concurrent requests pipeline on it without a pool, and the
//! [`ConnectionManager`] reconnects by itself after Redis comes back. `fred`
//! would do too, but brings its own pool, reconnect policy and runtime
//! glue for what we use as "send a script, await one reply".
//!
//! **Failure.** Redis being down at start is not an error: the connection
//! is made on first use. Every call has the deadline `state.timeout` and
//! goes through a circuit breaker (after 5 consecutive failures,
//! calls fail at once for a second, then one probe is let through), so a slow or dead Redis never stalls a
//! request; policies turn the [`StoreError`] into 503 or a pass through
//! `state.on_store_error`. [`RedisStore::errors_total`] and
//! [`RedisStore::is_degraded`] are for `/metrics` and `/readyz`.

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OnceCell};

use super::{Ban, GcraRule, QuotaDecision, RateDecision, Store, StoreError, UsageEntry};
use crate::clock::Nanos;

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

/// GCRA check-and-take. Atomic: one script reads the arrival time, decides
/// and (when `commit` and allowed) writes the new one; a refusal or a peek
/// writes nothing. KEYS[1] bucket; ARGV now, interval, tolerance, commit.
/// Returns {allowed, remaining, retry_after, reset_after} (ns).
const GCRA: &str = r#"
local now = ARGV[1]
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local ns, nn = split(now)
-- start: how far the arrival time runs ahead of now (0 if behind)
local start = 0
local tat = redis.call('GET', KEYS[1])
if tat then
  local ts, tn = split(tat)
  local d = (ts - ns) * 1e9 + (tn - nn)
  if d > 0 then start = d end
end
local new = start + interval
if new > tolerance then
  return {0, 0, new - tolerance, start}
end
local room = tolerance - new
local remaining = math.floor(room / interval)
if remaining * interval > room then remaining = remaining - 1 end
if ARGV[4] == '1' then
  local x = nn + new
  local s = math.floor(x / 1e9)
  local r = x - s * 1e9
  if r < 0 then s = s - 1; r = r + 1e9 end
  if r >= 1e9 then s = s + 1; r = r - 1e9 end
  local ttl = math.max(1, math.ceil(new / 1e6))
  redis.call('SET', KEYS[1], string.format('%d%09d', ns + s, r), 'PX', string.format('%d', ttl))
end
return {1, remaining, 0, new}
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

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_HELPERS}{body}"))
}

/// The scripts, hashed once per store.
struct Scripts {
    gcra: Script,
    quota_take: Script,
    quota_refund: Script,
    hit: Script,
    ban_set: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            gcra: script(GCRA),
            quota_take: script(QUOTA_TAKE),
            quota_refund: script(QUOTA_REFUND),
            hit: script(HIT),
            ban_set: script(BAN_SET),
        }
    }
}

/// A store whose counters live in Redis. Cheap to share behind an `Arc`.
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    scripts: Scripts,
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

/// The connection, the deadline and the breaker: what every call goes
/// through (shared with the usage flusher task).
struct Link {
    client: redis::Client,
    /// Made on first use, so a Redis that is down at start is not an
    /// error; once made, the manager reconnects by itself.
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    breaker: Breaker,
    errors: AtomicU64,
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
        let client = redis::Client::open(url).map_err(|e| format!("bad redis_url: {e}"))?;
        Ok(RedisStore {
            link: Arc::new(Link {
                client,
                conn: OnceCell::new(),
                timeout,
                breaker: Breaker::new(),
                errors: AtomicU64::new(0),
            }),
            prefix: prefix.to_string(),
            scripts: Scripts::new(),
            usage: Arc::default(),
        })
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

    fn key(&self, kind: &str, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + kind.len() + key.len() + 2);
        out.push_str(&self.prefix);
        out.push(':');
        out.push_str(kind);
        out.push(':');
        out.push_str(key);
        out
    }

    /// Every key of `kind` (SCAN, one round trip per page), with the
    /// `{prefix}:{kind}:` part removed.
    async fn scan(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let head = self.key(kind, "");
        let pattern = format!("{}*", glob_escape(&head));
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let page: (u64, Vec<String>) = self
                .link
                .call(|mut c| {
                    let pattern = pattern.clone();
                    async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(SCAN_COUNT)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            out.extend(
                page.1
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&head).map(str::to_string)),
            );
            cursor = page.0;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice.
        out.sort();
        out.dedup();
        Ok(out)
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
        let prefix = self.key("usage", "");
        tokio::spawn(flush_usage_forever(usage, wake, link, prefix));
    }

    /// Writes the local usage buffer to Redis now.
    pub async fn flush_usage(&self) -> Result<(), StoreError> {
        flush_usage_once(&self.usage, &self.link, &self.key("usage", "")).await
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
/// subject. On failure the counts go back into the buffer (they are
/// bounded by the config, so the buffer is too).
async fn flush_usage_once(
    usage: &UsageBuffer,
    link: &Arc<Link>,
    prefix: &str,
) -> Result<(), StoreError> {
    let taken = std::mem::take(&mut *usage.counts.lock());
    usage.waiting.store(0, Ordering::Relaxed);
    if taken.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (subject, fields) in &taken {
        let key = format!("{prefix}{subject}");
        for (field, n) in fields {
            pipe.cmd("HINCRBY").arg(&key).arg(field).arg(*n).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(USAGE_TTL_MS).ignore();
    }
    let result = link
        .call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
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

// === impl Link ===

impl Link {
    fn connection_config(&self) -> ConnectionManagerConfig {
        // No retries inside the manager: a failed reconnect fails the call
        // at once and the breaker spaces out the next attempts (its default
        // backoff would wait up to a minute before noticing Redis is back).
        ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(self.timeout.max(Duration::from_secs(1)))
    }

    /// The first connection, made in a task of its own: a caller whose
    /// deadline passes gives up waiting, but the connection attempt
    /// (bounded by the connection timeout) carries on for the next caller,
    /// so a Redis that is slower to reach than `timeout` still gets
    /// connected. Later reconnects are the manager's own tasks.
    async fn connect(self: &Arc<Self>) -> Result<ConnectionManager, RedisError> {
        let link = self.clone();
        let task = tokio::spawn(async move {
            link.conn
                .get_or_try_init(|| {
                    ConnectionManager::new_with_config(
                        link.client.clone(),
                        link.connection_config(),
                    )
                })
                .await
                .cloned()
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(RedisError::from((
                redis::ErrorKind::ClientError,
                "redis connect task failed",
                e.to_string(),
            ))),
        }
    }

    /// Runs one round trip through the breaker, within the deadline.
    async fn call<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let Some(permit) = self.breaker.admit() else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError(
                "circuit open after repeated redis failures".into(),
            ));
        };
        let attempt = async {
            let conn = match self.conn.get() {
                Some(conn) => conn.clone(),
                None => self.connect().await?,
            };
            op(conn).await
        };
        let error = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => {
                permit.succeeded();
                return Ok(value);
            }
            Ok(Err(e)) => StoreError(format!("redis: {e}")),
            Err(_) => StoreError(format!("redis did not answer within {:?}", self.timeout)),
        };
        permit.failed();
        self.errors.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }
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
            born: Instant::now(),
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
    async fn gcra(
        &self,
        key: &str,
        rule: GcraRule,
        now: Nanos,
        commit: bool,
    ) -> Result<RateDecision, StoreError> {
        let mut invocation = self.scripts.gcra.key(self.key("gcra", key));
        invocation
            .arg(now.to_string())
            .arg(rule.interval)
            .arg(rule.tolerance)
            .arg(if commit { "1" } else { "0" });
        let (allowed, remaining, retry_after, reset_after): (u8, u64, u64, u64) = self
            .link
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining,
            retry_after,
            reset_after,
        })
    }

    async fn quota_take(
        &self,
        key: &str,
        limit: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<QuotaDecision, StoreError> {
        let mut invocation = self
            .scripts
            .quota_take
            .key(self.key("quota", &format!("{key}:{period_end}")));
        invocation.arg(limit).arg(ttl_ms(period_end, now));
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

    async fn quota_refund(
        &self,
        key: &str,
        period_end: Nanos,
        _now: Nanos,
    ) -> Result<(), StoreError> {
        let invocation = self
            .scripts
            .quota_refund
            .key(self.key("quota", &format!("{key}:{period_end}")));
        self.link
            .call(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
            .await
    }

    async fn hit(&self, key: &str, window: Nanos, now: Nanos) -> Result<u64, StoreError> {
        let mut invocation = self.scripts.hit.key(self.key("hit", key));
        invocation
            .arg(now.to_string())
            .arg(now.saturating_add(window).to_string())
            .arg(ttl_ms(now.saturating_add(window), now));
        self.link
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
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
        let mut invocation = self.scripts.ban_set.key(self.key("ban", key));
        invocation
            .arg(now.to_string())
            .arg(ban.until.to_string())
            .arg(format!("{}:{}", ban.until, ban.reason))
            .arg(ttl_ms(ban.until, now));
        self.link
            .call(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
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
        let key = self.key("quota", &format!("{key}:{period_end}"));
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
            let mut pipe = redis::pipe();
            for subject in chunk {
                pipe.cmd("HGETALL").arg(self.key("usage", subject));
            }
            let hashes: Vec<HashMap<String, u64>> = self
                .link
                .call(|mut c| async move { pipe.query_async(&mut c).await })
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
