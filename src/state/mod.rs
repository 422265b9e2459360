//! The state store: counters that outlive a reload (rate-limit buckets,
//! quotas, abuse hits, bans, usage, the call log) and the MCP endpoint's
//! sessions, behind one [`Store`] trait of atomic decisions.
//!
//! ```yaml
//! state:
//!   store: memory              # or redis (see `redis.rs`)
//!   on_store_error: fail_closed
//! ```
//!
//! Every method is one *decision*, not a read followed by a write: the
//! memory store makes it under one shard lock, and the Redis store makes
//! it as one script (`EVALSHA`), so two gateways sharing Redis can never
//! both take the last token. Each method's doc states its atomicity rule.
//!
//! Keys are `{policy}:{key}` (see [`key`]): a policy's counters belong to its
//! name, not to the compiled layer, so a reload (a new `Gateway` compiled
//! with the same `Deps`) keeps them. Each kind of counter (buckets, quotas,
//! hits, bans) is its own keyspace: `abuse` uses one key for its hits and
//! its ban, and a Redis store prefixes the kind (`tollgate:ban:{key}`).
//!
//! Time is always passed in (`now`, nanoseconds since the epoch from the
//! injected [`Clock`](crate::clock::Clock)), never read by the store, so the
//! behaviour suite is exact and a Redis store agrees with its callers on
//! what "now" is.

pub mod memory;
pub mod redis;
#[cfg(test)]
mod suite;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::Nanos;
use crate::config::schema::OnStoreError;
use crate::problem::{Code, Reject};
use crate::trace;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// The hasher of the maps touched on every call (the memory store's, the
/// usage series'): foldhash, randomly seeded per map.
pub(crate) type FastHash = foldhash::fast::RandomState;

/// One second in nanoseconds.
pub const SECOND: Nanos = 1_000_000_000;

/// A store call failed (Redis down, timed out, circuit open). The policy
/// decides what that means through `state.on_store_error`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// A GCRA rule: a bucket of `burst` calls, refilled `limit` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraRule {
    /// Emission interval: the time one call's token takes to come back
    /// (`window / limit`), at least 1ns.
    pub interval: Nanos,
    /// How far ahead of `now` the theoretical arrival time may run: the
    /// bucket's capacity (`interval * burst`).
    pub tolerance: Nanos,
}

impl GcraRule {
    /// The rule for `limit` calls per `window` with a bucket of `burst` (each at least 1).
    pub fn new(limit: u64, window: Nanos, burst: u64) -> GcraRule {
        let interval = (window / limit.max(1)).max(1);
        GcraRule {
            interval,
            tolerance: interval.saturating_mul(burst.max(1)),
        }
    }
}

/// What a GCRA call decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the call passes (and took a token).
    pub allowed: bool,
    /// Calls that would still pass right now, after this one.
    pub remaining: u64,
    /// Time until the call would pass (0 when allowed).
    pub retry_after: Nanos,
    /// Time until the bucket is full again.
    pub reset_after: Nanos,
}

/// What a quota take decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    /// Whether the call passes (and took a unit).
    pub allowed: bool,
    /// Calls counted in this period, this one included when allowed.
    pub used: u64,
    /// Calls (or units) left in this period after this one.
    pub remaining: u64,
}

/// An active ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// Why the key was banned, as the admin API shows it (e.g. the watched answers and the client).
    pub reason: String,
    /// When the ban lifts (nanos since the epoch).
    pub until: Nanos,
}

/// The counters every policy keeps, as atomic decisions. Implemented by
/// [`MemoryStore`] and [`RedisStore`]; [`AnyStore`] picks one
/// at load without boxing. Every method is meant to be one round trip.
pub trait Store: Send + Sync + 'static {
    /// GCRA check-and-take on `key`. Atomic: the read of the bucket, the
    /// decision and (when `commit` and allowed) the update happen as one
    /// step; a refused call consumes nothing; with `commit = false` nothing
    /// is ever written (a peek). A store whose calls can arrive out of
    /// clock order (Redis) decides a call whose `now` is behind the time
    /// the bucket was last written at, by at most its deadline, at that
    /// time, so a burst gets exactly its tolerance (see `redis.rs`).
    fn gcra(
        &self,
        key: &str,
        rule: GcraRule,
        now: Nanos,
        commit: bool,
    ) -> impl Future<Output = Result<RateDecision, StoreError>> + Send;

    /// Counts one call against a quota of `limit` for the period ending at
    /// `period_end`. Atomic: a counter from an earlier period is reset, then
    /// incremented only if below `limit`; a refused call consumes nothing.
    /// The key expires at `period_end`.
    fn quota_take(
        &self,
        key: &str,
        limit: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<QuotaDecision, StoreError>> + Send;

    /// Gives back one call taken by [`Store::quota_take`] in the period
    /// ending at `period_end` (the call was not answered by the upstream).
    /// Atomic; does nothing if the period has rolled over or the count is 0.
    fn quota_refund(
        &self,
        key: &str,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes `units` from a quota of `limit` units for the period ending at
    /// `period_end` (a quota counted in task units). Atomic: a counter from
    /// an earlier period is reset, then `units` are added only if the count
    /// is below `limit` and `used + units <= limit`; a refused take
    /// consumes nothing. `units = 0` takes nothing but still needs the count
    /// below `limit`. The key expires at `period_end`.
    fn quota_take_units(
        &self,
        key: &str,
        limit: u64,
        units: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<QuotaDecision, StoreError>> + Send;

    /// Adds `delta` units (negative: gives them back) to the count of the
    /// period ending at `period_end`, after the call: what the upstream
    /// reported minus what was taken. Atomic; the count never goes below
    /// 0 and may go above the limit (the work was done; later takes are
    /// refused). Returns the new count. Creates the counter (expiring at
    /// `period_end`) only for a positive `delta`.
    fn quota_settle(
        &self,
        key: &str,
        delta: i64,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Counts one event in a fixed window of `window` starting at the first
    /// event; returns the count including this one. Atomic increment; the
    /// window (and key) expires `window` after its first event.
    fn hit(
        &self,
        key: &str,
        window: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The active ban on `key`, if any (expired bans are absent).
    fn ban_get(
        &self,
        key: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<Option<Ban>, StoreError>> + Send;

    /// Bans `key` until `ban.until`, replacing any ban there (a later ban
    /// never shortens an active one: the later `until` wins). Atomic.
    fn ban_set(
        &self,
        key: &str,
        ban: Ban,
        now: Nanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every active ban, as `(key, ban)`, sorted by key (for the admin API).
    fn ban_list(
        &self,
        now: Nanos,
    ) -> impl Future<Output = Result<Vec<(String, Ban)>, StoreError>> + Send;

    /// Lifts the ban on `key`; whether there was an active one.
    fn ban_remove(
        &self,
        key: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Calls counted by [`Store::quota_take`] on `key` in the period ending
    /// at `period_end` (0 when the counter is from an earlier period). A
    /// read; for the admin API's usage report.
    fn quota_peek(
        &self,
        key: &str,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Adds `counts` to the usage counters of `subject` (a client id):
    /// each `(field, n)` is an atomic increment of one counter, the fields
    /// are not one transaction. A store may buffer and flush these in
    /// batches (usage is a report, not a decision); `usage_list` then lags
    /// by at most one flush interval. Subjects and fields come from the
    /// config (client and operation ids, error codes), so they are bounded.
    fn usage_add(
        &self,
        subject: &str,
        counts: &[(&str, u64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every subject's usage counters, sorted by subject then field.
    fn usage_list(&self) -> impl Future<Output = Result<Vec<UsageEntry>, StoreError>> + Send;

    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends call-log entries (newest last in `calls`), then evicts,
    /// oldest first, every entry past its `expires` and as many as it
    /// takes to be within `bounds`. Atomic per call: the appends and the
    /// eviction are one step, so concurrent writers never leave the log
    /// over its bounds. An entry whose request id is already in the log
    /// is not added (the first one stays). The log's keys expire
    /// `bounds.ttl` after the last append.
    fn calls_push(
        &self,
        calls: &[CallRecord],
        bounds: CallLogBounds,
        now: Nanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live entries matching `filter`, newest first, at most
    /// `filter.limit`, and the cursor of the next page. A read.
    fn calls_page(
        &self,
        filter: &CallFilter,
        now: Nanos,
    ) -> impl Future<Output = Result<CallPage, StoreError>> + Send;

    /// The live entry of `request_id`, if the log holds one. A read.
    fn calls_get(
        &self,
        request_id: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Opens session `id` of `owner` (the MCP client that opened it),
    /// holding `value`. Atomic: the owner's sessions idle for `idle` are
    /// dropped, and while it still holds `max_per_owner` its least
    /// recently used ones are dropped to make room; no other owner's
    /// session is ever touched. False when the store has no room for a
    /// new owner (the memory store's cap; see `memory.rs`).
    fn session_open(
        &self,
        session: SessionKey<'_>,
        value: &str,
        max_per_owner: u64,
        idle: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The value of `owner`'s session `id`, marking it used `now`; `None`
    /// when it does not exist, is another owner's, or was last used
    /// `idle` or more ago (it is then dropped). Atomic.
    fn session_touch(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Ends `owner`'s session `id`; whether it had one live. Atomic.
    fn session_close(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// One call-log entry on its way to the store: the fields the log is
/// filtered by, and the entry itself as JSON (written by `crate::call_log`;
/// the store never looks inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// What the entry is filtered and evicted by.
    pub summary: CallSummary,
    /// The entry as JSON, opaque to the store.
    pub entry: String,
}

/// What the call log is filtered and evicted by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallSummary {
    /// The request id (as the access log and `X-Request-Id` show it).
    pub id: String,
    /// When the call was answered.
    pub time: Nanos,
    /// When the entry stops being shown (and may be evicted).
    pub expires: Nanos,
    /// The client id; empty when anonymous.
    pub client: String,
    /// The operation id that answered.
    pub operation: String,
    /// The HTTP status the caller got.
    pub status: u16,
}

impl CallSummary {
    /// Bytes the entry is counted as against `CallLogBounds::max_bytes`.
    pub fn weight(&self, entry: &str) -> u64 {
        (entry.len() + self.id.len() + self.client.len() + self.operation.len() + 64) as u64
    }
}

/// How much the call log holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLogBounds {
    /// Entries in all, at most (the oldest go first).
    pub max_entries: u64,
    /// Entries' bytes (`CallSummary::weight`) in all.
    pub max_bytes: u64,
    /// How long the whole log is kept after its last append.
    pub ttl: Nanos,
}

/// Which entries a call-log page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only this client's calls (`""`: anonymous ones).
    pub client: Option<String>,
    /// Only calls to this operation id.
    pub operation: Option<String>,
    /// Only calls answered with this status or status class.
    pub status: Option<StatusFilter>,
    /// Only calls answered at or after this time.
    pub since: Option<Nanos>,
    /// Only entries older than this cursor (a page's `next`).
    pub before: Option<u64>,
    /// At most this many entries (at least 1).
    pub limit: usize,
}

/// `status=404` or `status=4xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Exactly this status, e.g. `404`.
    Exact(u16),
    /// The hundreds digit: `4` for `4xx`.
    Class(u16),
}

impl CallFilter {
    /// Whether `summary` is live at `now` and shown by this filter.
    pub fn matches(&self, seq: u64, summary: &CallSummary, now: Nanos) -> bool {
        now < summary.expires
            && self.before.map_or(true, |cursor| seq < cursor)
            && self.since.map_or(true, |since| summary.time >= since)
            && self.client.as_ref().map_or(true, |c| *c == summary.client)
            && self
                .operation
                .as_ref()
                .map_or(true, |o| *o == summary.operation)
            && self.status.map_or(true, |s| match s {
                StatusFilter::Exact(code) => summary.status == code,
                StatusFilter::Class(class) => summary.status / 100 == class,
            })
    }
}

/// One page of the call log, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallPage {
    /// `(seq, entry JSON)`: `seq` orders the log (higher is newer).
    pub entries: Vec<(u64, String)>,
    /// The cursor of the next (older) page, when there is one.
    pub next: Option<u64>,
}

/// A session and the owner it is bound to: a session is only ever found
/// through its owner, so one owner can never reach (or evict) another's.
#[derive(Debug, Clone, Copy)]
pub struct SessionKey<'a> {
    /// Who the session belongs to (a client id, or an address when anonymous).
    pub owner: &'a str,
    /// The session id the client was given.
    pub id: &'a str,
}

/// One subject's usage counters, as `usage_list` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    /// Whose counters these are (a client id).
    pub subject: String,
    /// `(field, count)`, sorted by field.
    pub counts: Vec<(String, u64)>,
}

/// The store chosen by `state.store`. An enum rather than `dyn Store` so the
/// memory path is a direct call, with no boxed futures. Cloning shares it.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// The in-process store (`store: memory`).
    Memory(Arc<MemoryStore>),
    /// Redis, one node, Cluster or Sentinel (`store: redis`).
    Redis(Arc<RedisStore>),
}

impl AnyStore {
    /// A fresh, empty in-process store (`store: memory`, and unit tests).
    pub fn memory() -> AnyStore {
        AnyStore::Memory(Arc::new(MemoryStore::new()))
    }

    /// `memory` or `redis`: for `/readyz` and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "memory",
            AnyStore::Redis(_) => "redis",
        }
    }

    /// Store calls that failed since start (always 0 for memory): for
    /// `/metrics`.
    pub fn errors_total(&self) -> u64 {
        match self {
            AnyStore::Memory(_) => 0,
            AnyStore::Redis(r) => r.errors_total(),
        }
    }

    /// Writes what the store buffers in-process (Redis usage counts) out
    /// now; at shutdown, so nothing metered is lost. Memory: nothing to do.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(_) => Ok(()),
            AnyStore::Redis(r) => r.flush_usage().await,
        }
    }

    /// Whether the store is failing now (its circuit breaker has tripped;
    /// never for memory): for `/readyz`.
    pub fn is_degraded(&self) -> bool {
        match self {
            AnyStore::Memory(_) => false,
            AnyStore::Redis(r) => r.is_degraded(),
        }
    }
}

impl Store for AnyStore {
    async fn gcra(
        &self,
        key: &str,
        rule: GcraRule,
        now: Nanos,
        commit: bool,
    ) -> Result<RateDecision, StoreError> {
        match self {
            AnyStore::Memory(m) => m.gcra(key, rule, now, commit).await,
            AnyStore::Redis(r) => trace::store_call("gcra", r.gcra(key, rule, now, commit)).await,
        }
    }

    async fn quota_take(
        &self,
        key: &str,
        limit: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<QuotaDecision, StoreError> {
        match self {
            AnyStore::Memory(m) => m.quota_take(key, limit, period_end, now).await,
            AnyStore::Redis(r) => {
                trace::store_call("quota_take", r.quota_take(key, limit, period_end, now)).await
            }
        }
    }

    async fn quota_refund(
        &self,
        key: &str,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(m) => m.quota_refund(key, period_end, now).await,
            AnyStore::Redis(r) => {
                trace::store_call("quota_refund", r.quota_refund(key, period_end, now)).await
            }
        }
    }

    async fn quota_take_units(
        &self,
        key: &str,
        limit: u64,
        units: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<QuotaDecision, StoreError> {
        match self {
            AnyStore::Memory(m) => m.quota_take_units(key, limit, units, period_end, now).await,
            AnyStore::Redis(r) => r.quota_take_units(key, limit, units, period_end, now).await,
        }
    }

    async fn quota_settle(
        &self,
        key: &str,
        delta: i64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<u64, StoreError> {
        match self {
            AnyStore::Memory(m) => m.quota_settle(key, delta, period_end, now).await,
            AnyStore::Redis(r) => r.quota_settle(key, delta, period_end, now).await,
        }
    }

    async fn hit(&self, key: &str, window: Nanos, now: Nanos) -> Result<u64, StoreError> {
        match self {
            AnyStore::Memory(m) => m.hit(key, window, now).await,
            AnyStore::Redis(r) => trace::store_call("hit", r.hit(key, window, now)).await,
        }
    }

    async fn ban_get(&self, key: &str, now: Nanos) -> Result<Option<Ban>, StoreError> {
        match self {
            AnyStore::Memory(m) => m.ban_get(key, now).await,
            AnyStore::Redis(r) => trace::store_call("ban_get", r.ban_get(key, now)).await,
        }
    }

    async fn ban_set(&self, key: &str, ban: Ban, now: Nanos) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(m) => m.ban_set(key, ban, now).await,
            AnyStore::Redis(r) => trace::store_call("ban_set", r.ban_set(key, ban, now)).await,
        }
    }

    async fn ban_list(&self, now: Nanos) -> Result<Vec<(String, Ban)>, StoreError> {
        match self {
            AnyStore::Memory(m) => m.ban_list(now).await,
            AnyStore::Redis(r) => r.ban_list(now).await,
        }
    }

    async fn ban_remove(&self, key: &str, now: Nanos) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(m) => m.ban_remove(key, now).await,
            AnyStore::Redis(r) => r.ban_remove(key, now).await,
        }
    }

    async fn quota_peek(
        &self,
        key: &str,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<u64, StoreError> {
        match self {
            AnyStore::Memory(m) => m.quota_peek(key, period_end, now).await,
            AnyStore::Redis(r) => r.quota_peek(key, period_end, now).await,
        }
    }

    async fn usage_add(&self, subject: &str, counts: &[(&str, u64)]) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(m) => m.usage_add(subject, counts).await,
            AnyStore::Redis(r) => r.usage_add(subject, counts).await,
        }
    }

    async fn usage_list(&self) -> Result<Vec<UsageEntry>, StoreError> {
        match self {
            AnyStore::Memory(m) => m.usage_list().await,
            AnyStore::Redis(r) => r.usage_list().await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(m) => m.ping().await,
            AnyStore::Redis(r) => r.ping().await,
        }
    }

    async fn calls_push(
        &self,
        calls: &[CallRecord],
        bounds: CallLogBounds,
        now: Nanos,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(m) => m.calls_push(calls, bounds, now).await,
            AnyStore::Redis(r) => r.calls_push(calls, bounds, now).await,
        }
    }

    async fn calls_page(&self, filter: &CallFilter, now: Nanos) -> Result<CallPage, StoreError> {
        match self {
            AnyStore::Memory(m) => m.calls_page(filter, now).await,
            AnyStore::Redis(r) => r.calls_page(filter, now).await,
        }
    }

    async fn calls_get(&self, request_id: &str, now: Nanos) -> Result<Option<String>, StoreError> {
        match self {
            AnyStore::Memory(m) => m.calls_get(request_id, now).await,
            AnyStore::Redis(r) => r.calls_get(request_id, now).await,
        }
    }

    async fn session_open(
        &self,
        session: SessionKey<'_>,
        value: &str,
        max_per_owner: u64,
        idle: Nanos,
        now: Nanos,
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(m) => {
                m.session_open(session, value, max_per_owner, idle, now)
                    .await
            }
            AnyStore::Redis(r) => {
                r.session_open(session, value, max_per_owner, idle, now)
                    .await
            }
        }
    }

    async fn session_touch(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> Result<Option<String>, StoreError> {
        match self {
            AnyStore::Memory(m) => m.session_touch(session, idle, now).await,
            AnyStore::Redis(r) => r.session_touch(session, idle, now).await,
        }
    }

    async fn session_close(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(m) => m.session_close(session, idle, now).await,
            AnyStore::Redis(r) => r.session_close(session, idle, now).await,
        }
    }
}

/// `{policy}:{key}`: the one place store keys are spelled.
pub fn key(policy: &str, key: std::fmt::Arguments<'_>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(policy.len() + 48);
    out.push_str(policy);
    out.push(':');
    let _ = out.write_fmt(key);
    out
}

/// Whole seconds, rounded up, at least 1: for `Retry-After`.
pub fn ceil_secs(nanos: Nanos) -> u64 {
    nanos.div_ceil(SECOND).max(1)
}

/// What a policy does when the store fails, per `state.on_store_error`.
#[derive(Debug)]
pub struct StoreErrorMode {
    mode: OnStoreError,
    /// When fail-open last logged, so an outage logs once per interval, not
    /// once per request.
    last_log: AtomicU64,
}

impl StoreErrorMode {
    /// Fail-open outages log at most this often per policy.
    const LOG_EVERY: Nanos = 10 * SECOND;

    /// How store failures are answered for `state.on_store_error: mode`.
    pub fn new(mode: OnStoreError) -> StoreErrorMode {
        StoreErrorMode {
            mode,
            last_log: AtomicU64::new(0),
        }
    }

    /// `Err(503 state_store_unavailable)` when failing closed; `Ok(())`
    /// (let the call through) when failing open.
    pub fn handle(&self, policy: &str, error: &StoreError, now: Nanos) -> Result<(), Reject> {
        match self.mode {
            OnStoreError::FailClosed => {
                tracing::warn!(policy, %error, "state store failed; refusing (fail_closed)");
                Err(Reject::new(
                    Code::StateStoreUnavailable,
                    "the gateway cannot reach its state store",
                ))
            }
            OnStoreError::FailOpen => {
                let last = self.last_log.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= Self::LOG_EVERY
                    && self
                        .last_log
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(policy, %error, "state store failed; letting calls through (fail_open)");
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_rules_spread_the_window_over_the_limit() {
        let rule = GcraRule::new(5, 60 * SECOND, 5);
        assert_eq!(rule.interval, 12 * SECOND);
        assert_eq!(rule.tolerance, 60 * SECOND);
        // A zero limit cannot divide by zero.
        assert_eq!(GcraRule::new(0, 10, 0).interval, 10);
    }

    #[test]
    fn keys_are_namespaced_by_policy() {
        assert_eq!(
            key("per-ip", format_args!("ip:{}", "10.0.0.1")),
            "per-ip:ip:10.0.0.1"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(ceil_secs(0), 1);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(SECOND), 1);
        assert_eq!(ceil_secs(SECOND + 1), 2);
    }

    #[test]
    fn failing_closed_refuses_and_failing_open_lets_through() {
        let error = StoreError("down".into());
        let closed = StoreErrorMode::new(OnStoreError::FailClosed);
        let reject = closed.handle("p", &error, 0).err().map(|r| r.code);
        assert_eq!(reject, Some(Code::StateStoreUnavailable));
        let open = StoreErrorMode::new(OnStoreError::FailOpen);
        assert!(open.handle("p", &error, 20 * SECOND).is_ok());
        assert!(open.handle("p", &error, 21 * SECOND).is_ok());
    }
}
