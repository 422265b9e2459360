//! The state store: counters that outlive a reload (rate-limit buckets,
//! quotas, abuse hits, bans), behind one [`Store`] trait of atomic
//! decisions.
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
    pub allowed: bool,
    /// Calls counted in this period, this one included when allowed.
    pub used: u64,
    pub remaining: u64,
}

/// An active ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
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
    /// is ever written (a peek).
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
}

/// One subject's usage counters, as `usage_list` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    pub subject: String,
    /// `(field, count)`, sorted by field.
    pub counts: Vec<(String, u64)>,
}

/// The store chosen by `state.store`. An enum rather than `dyn Store` so the
/// memory path is a direct call, with no boxed futures. Cloning shares it.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

impl AnyStore {
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
