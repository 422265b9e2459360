//! The bounded entries of each `cache` policy, and the registry that keeps
//! them across reloads.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::key::*;
use crate::metrics::{CacheMetrics, Metrics};

/// Every `cache` policy's store, by policy name. Lives in `Deps`, so a
/// reload that leaves the config as it was finds its entries again. Holds
/// weak references only: a store lives as long as a gateway using it.
pub struct CacheRegistry {
    pub(super) metrics: Arc<Metrics>,
    pub(super) stores: Mutex<HashMap<Arc<str>, Registered>>,
}

/// A store and the fingerprint of the config it was made for.
pub(super) type Registered = (u64, Weak<CacheStore>);

impl CacheRegistry {
    /// An empty registry; its stores report to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> CacheRegistry {
        CacheRegistry {
            metrics,
            stores: Mutex::default(),
        }
    }

    /// The store of policy `name` compiled from a config with this
    /// `fingerprint`: the existing one if both match, else a new one.
    pub(super) fn store(
        &self,
        name: &Arc<str>,
        fingerprint: u64,
        max_size: u64,
    ) -> Arc<CacheStore> {
        let mut stores = self.stores.lock();
        stores.retain(|_, (_, store)| store.strong_count() > 0);
        if let Some((seen, store)) = stores.get(name) {
            if *seen == fingerprint {
                if let Some(store) = store.upgrade() {
                    return store;
                }
            }
        }
        let store = Arc::new(CacheStore::new(max_size, self.metrics.cache(name)));
        stores.insert(name.clone(), (fingerprint, Arc::downgrade(&store)));
        store
    }
}

impl Default for CacheRegistry {
    fn default() -> Self {
        CacheRegistry::new(Arc::default())
    }
}

// === CacheStore: the bounded entries of one policy ===

/// One policy's entries and its budget for copies in progress.
pub struct CacheStore {
    pub(super) entries: moka::sync::Cache<Arc<CacheKey>, Arc<Entry>>,
    /// Bytes being copied by misses in flight; at most `budget`.
    pub(super) recording: AtomicU64,
    pub(super) budget: u64,
    pub(super) metrics: CacheMetrics,
    /// What this store last added to the shared `cache_bytes` gauge.
    pub(super) reported: AtomicI64,
}

/// Removes an entry once its freshness lifetime has passed (real time),
/// so stale entries free their memory; freshness itself is decided with
/// the injected clock at lookup.
pub(super) struct ExpireWhenStale;

impl moka::Expiry<Arc<CacheKey>, Arc<Entry>> for ExpireWhenStale {
    fn expire_after_create(
        &self,
        _key: &Arc<CacheKey>,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.fresh_for())
    }

    fn expire_after_update(
        &self,
        _key: &Arc<CacheKey>,
        entry: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.fresh_for())
    }
}

impl CacheStore {
    pub(super) fn new(max_size: u64, metrics: CacheMetrics) -> CacheStore {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_size)
            .weigher(|_key: &Arc<CacheKey>, entry: &Arc<Entry>| entry.weight)
            .expire_after(ExpireWhenStale)
            .build();
        CacheStore {
            entries,
            recording: AtomicU64::new(0),
            budget: max_size,
            metrics,
            reported: AtomicI64::new(0),
        }
    }

    pub(super) fn insert(&self, key: Arc<CacheKey>, entry: Entry) {
        self.entries.insert(key, Arc::new(entry));
        // Evict now rather than at moka's next housekeeping, so the bound
        // holds after every store, not eventually. Only misses pay this.
        self.entries.run_pending_tasks();
        self.report_size();
    }

    pub(super) fn remove(&self, key: &CacheKey) {
        self.entries.invalidate(key);
        self.entries.run_pending_tasks();
        self.report_size();
    }

    /// Brings the `cache_bytes` gauge up to date with this store's share.
    pub(super) fn report_size(&self) {
        let now = i64::try_from(self.entries.weighted_size()).unwrap_or(i64::MAX);
        let before = self.reported.swap(now, Ordering::Relaxed);
        self.metrics.bytes.inc_by(now - before);
    }

    /// Reserves `n` bytes for a copy in progress; false if the budget is spent.
    pub(super) fn reserve(&self, n: u64) -> bool {
        let mut current = self.recording.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(n).filter(|&t| t <= self.budget) else {
                return false;
            };
            match self.recording.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    pub(super) fn release(&self, n: u64) {
        self.recording.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Drop for CacheStore {
    fn drop(&mut self) {
        // Another store of the same name may report into the same gauge.
        self.metrics
            .bytes
            .dec_by(self.reported.load(Ordering::Relaxed));
    }
}
