//! The in-process store: N shards, each a `parking_lot::Mutex` over plain
//! hash maps, so unrelated keys rarely contend and every decision is one
//! short critical section (never held across an `.await`: the methods are
//! synchronous inside their ready futures).
//!
//! GCRA is written here rather than taken from `governor`: the decision has
//! to match the Redis script exactly (same state: one theoretical arrival
//! time per key), take the time as an argument, and support a non-committing
//! peek; governor's keyed limiter owns its clock and its state layout.
//!
//! Bounded memory: an entry that has gone idle (bucket full again, period
//! or window over, ban lifted) is indistinguishable from an absent one, so
//! it may be dropped at any time. Each table sweeps itself when an insert
//! finds it at its sweep mark, then sets the mark to twice the live size:
//! memory stays within about twice the live keys, and sweeping costs O(1)
//! amortised per insert with no background task. [`MemoryStore::sweep`]
//! does the same on demand.
//!
//! A total cap, whatever the traffic: each table (buckets, quotas, abuse
//! counters, bans) holds at most [`DEFAULT_MAX_KEYS`] live keys (split
//! evenly over the shards), so a caller holding many addresses (an IPv6
//! /32 is 2³² /64s) cannot grow memory past it. When a shard's table is
//! full of live entries (after a sweep; a full table is swept at most once
//! a second, so a flood cannot make every insert a scan):
//! - existing keys go on exactly as before: a live entry is never evicted,
//!   so nobody's limit is reset by someone else's flood;
//! - a new key of a rate limit, quota or abuse counter is judged in one
//!   **overflow** cell shared by every key that finds no room (one per rule:
//!   per GCRA interval and burst, per quota period, per abuse window). New
//!   callers then share one budget, stricter than their own would be,
//!   and rotating addresses or header values gains nothing: all of them
//!   together get what one key would. Once entries go idle, new keys get
//!   their own cells again;
//! - a new ban replaces the ban ending soonest among a few sampled ones:
//!   bans outnumbering the cap are held as long as there is room, the rest
//!   as long as later bans do not need the slot.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::{ready, Future};
use std::hash::BuildHasher;

use super::{
    Ban, CallFilter, CallLogBounds, CallPage, CallRecord, CallSummary, FastHash, GcraRule,
    QuotaDecision, RateDecision, SessionKey, Store, StoreError, UsageEntry,
};
use crate::clock::Nanos;

/// Shards: a power of two, enough that 64 cores rarely meet on one lock.
const SHARDS: usize = 64;

/// A table is not swept below this many entries: small tables are cheap to
/// keep, and sweeping them often would cost more than it frees.
const MIN_SWEEP: usize = 1024;

/// The live keys one table (buckets, quotas, abuse counters or bans) holds
/// at most, over all shards: about 100-200 MiB per table when full.
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// How often a full table is swept again (an insert that finds it full
/// sooner goes to the overflow cell without a scan).
const FULL_RESCAN: Nanos = 1_000_000_000;

/// How many bans are looked at to choose the one a new ban replaces.
const BAN_SAMPLE: usize = 8;

/// The in-process [`Store`](super::Store) (`state.store: memory`): sharded maps with a cap
/// on live keys (see the module doc).
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard; seeded per process so keys a caller chooses (IPs,
    /// header values) cannot be aimed at one shard. foldhash, not SipHash:
    /// this runs on every decision, and the seed is what defends the maps.
    hasher: FastHash,
    /// Where new keys are judged while their shard's table is full.
    overflow: Mutex<Overflow>,
    /// The call log: one table, bounded by the `CallLogBounds` of each push.
    calls: Mutex<CallTable>,
}

/// The shared cells of keys that found no room (see the module doc), one
/// per rule. Few: bounded by the distinct rules of the configs in use.
#[derive(Debug, Default)]
struct Overflow {
    /// GCRA arrival time per (interval, tolerance).
    buckets: HashMap<(Nanos, Nanos), Nanos>,
    /// Calls counted per quota period end.
    quotas: HashMap<Nanos, u64>,
    /// Abuse hits per window length.
    hits: HashMap<Nanos, HitCell>,
}

#[derive(Debug)]
struct Shard {
    /// GCRA: the theoretical arrival time per key.
    buckets: Table<Nanos>,
    quotas: Table<QuotaCell>,
    hits: Table<HitCell>,
    bans: Table<Ban>,
    /// MCP sessions per owner (see [`SessionOwner`]).
    sessions: Table<SessionOwner>,
    /// Usage counters per subject: bounded by the config (client and
    /// operation ids), so never evicted; foldhash, as these are touched on
    /// every call and their keys come from the config, not from callers.
    usage: HashMap<String, HashMap<String, u64, FastHash>, FastHash>,
}

/// One owner's MCP sessions: at most the `max_per_owner` of the last
/// open, each with its value and last use.
#[derive(Debug, Default)]
struct SessionOwner {
    open: HashMap<Box<str>, SessionCell>,
    /// The idle time of the last open: what makes a session gone.
    idle: Nanos,
}

#[derive(Debug)]
struct SessionCell {
    value: Box<str>,
    last: Nanos,
}

impl SessionOwner {
    fn live(&self, cell: &SessionCell, now: Nanos) -> bool {
        now.saturating_sub(cell.last) < self.idle
    }
}

#[derive(Debug, Clone, Copy)]
struct QuotaCell {
    count: u64,
    period_end: Nanos,
}

#[derive(Debug, Clone, Copy)]
struct HitCell {
    count: u64,
    window_end: Nanos,
}

/// Whether an entry holds nothing an absent entry would not.
trait Idle {
    fn idle(&self, now: Nanos) -> bool;
}

impl Idle for Nanos {
    /// A bucket whose arrival time has passed is full again.
    fn idle(&self, now: Nanos) -> bool {
        *self <= now
    }
}

impl Idle for QuotaCell {
    fn idle(&self, now: Nanos) -> bool {
        now >= self.period_end
    }
}

impl Idle for HitCell {
    fn idle(&self, now: Nanos) -> bool {
        now >= self.window_end
    }
}

impl Idle for SessionOwner {
    /// An owner whose every session has idled out holds nothing.
    fn idle(&self, now: Nanos) -> bool {
        self.open.values().all(|cell| !self.live(cell, now))
    }
}

impl Idle for Ban {
    fn idle(&self, now: Nanos) -> bool {
        now >= self.until
    }
}

/// A map that drops idle entries when it grows to its sweep mark, and
/// holds at most `cap` entries.
#[derive(Debug)]
struct Table<V> {
    map: HashMap<Box<str>, V, FastHash>,
    sweep_at: usize,
    cap: usize,
    /// While full: no sweep before this time.
    rescan_at: Nanos,
}

impl<V> Table<V> {
    fn new(cap: usize) -> Self {
        Table {
            map: HashMap::default(),
            sweep_at: MIN_SWEEP,
            cap,
            rescan_at: 0,
        }
    }
}

impl<V: Idle> Table<V> {
    /// Whether a new key fits, sweeping first if the table is at its mark
    /// (a full one at most once per [`FULL_RESCAN`]).
    fn has_room(&mut self, now: Nanos) -> bool {
        let len = self.map.len();
        if len >= self.sweep_at.min(self.cap) && (len < self.cap || now >= self.rescan_at) {
            self.sweep(now);
            if self.map.len() >= self.cap {
                self.rescan_at = now.saturating_add(FULL_RESCAN);
            }
        }
        self.map.len() < self.cap
    }

    /// Inserts a new key if it fits; false if the table is full.
    fn insert(&mut self, key: &str, value: V, now: Nanos) -> bool {
        if !self.has_room(now) {
            return false;
        }
        self.map.insert(key.into(), value);
        true
    }

    fn sweep(&mut self, now: Nanos) {
        self.map.retain(|_, v| !v.idle(now));
        let live = self.map.len();
        self.sweep_at = (live * 2).max(MIN_SWEEP);
        // Give memory back after a flood has passed.
        if self.map.capacity() > 4 * self.sweep_at {
            self.map.shrink_to(self.sweep_at);
        }
    }
}

// === impl MemoryStore ===

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store holding at most [`DEFAULT_MAX_KEYS`] live keys per table.
    pub fn new() -> MemoryStore {
        MemoryStore::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// A store whose tables hold at most about `max_keys` live keys each
    /// (rounded up to a multiple of the shard count).
    pub fn with_max_keys(max_keys: usize) -> MemoryStore {
        let cap = max_keys.div_ceil(SHARDS).max(1);
        let shard = || Shard {
            buckets: Table::new(cap),
            quotas: Table::new(cap),
            hits: Table::new(cap),
            bans: Table::new(cap),
            sessions: Table::new(cap),
            usage: HashMap::default(),
        };
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(shard())).collect(),
            hasher: Default::default(),
            overflow: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h & (SHARDS - 1)]
    }

    /// Drops every idle entry now (the tables also do this on their own as
    /// they grow; this is for a periodic task or a test).
    pub fn sweep(&self, now: Nanos) {
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            s.buckets.sweep(now);
            s.quotas.sweep(now);
            s.hits.sweep(now);
            s.bans.sweep(now);
            s.sessions.sweep(now);
        }
    }

    /// Entries held, idle ones included (for tests and the memory bench).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.buckets.map.len()
                    + s.quotas.map.len()
                    + s.hits.map.len()
                    + s.bans.map.len()
                    + s.sessions.map.len()
            })
            .sum()
    }

    /// Whether the store holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GCRA decision, synchronously (the bench calls this directly).
    pub fn gcra_now(&self, key: &str, rule: GcraRule, now: Nanos, commit: bool) -> RateDecision {
        let mut shard = self.shard(key).lock();
        let table = &mut shard.buckets;
        // One lookup for a known key, the common case.
        if let Some(tat) = table.map.get_mut(key) {
            let (decision, new_tat) = gcra_decide(*tat, rule, now);
            if commit && decision.allowed {
                *tat = new_tat;
            }
            return decision;
        }
        if !table.has_room(now) {
            drop(shard);
            return self.overflow.lock().gcra(rule, now, commit);
        }
        let (decision, new_tat) = gcra_decide(now, rule, now);
        if commit && decision.allowed {
            table.insert(key, new_tat, now);
        }
        decision
    }

    fn quota_peek_now(&self, key: &str, period_end: Nanos) -> u64 {
        let shard = self.shard(key).lock();
        shard
            .quotas
            .map
            .get(key)
            .filter(|c| c.period_end == period_end)
            .map_or(0, |c| c.count)
    }

    fn usage_add_now(&self, subject: &str, counts: &[(&str, u64)]) {
        let mut shard = self.shard(subject).lock();
        let fields = match shard.usage.get_mut(subject) {
            Some(fields) => fields,
            None => shard.usage.entry(subject.to_string()).or_default(),
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

    fn usage_list_now(&self) -> Vec<UsageEntry> {
        let mut out: Vec<UsageEntry> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock();
                shard
                    .usage
                    .iter()
                    .map(|(subject, fields)| {
                        let mut counts: Vec<(String, u64)> =
                            fields.iter().map(|(f, n)| (f.clone(), *n)).collect();
                        counts.sort();
                        UsageEntry {
                            subject: subject.clone(),
                            counts,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.subject.cmp(&b.subject));
        out
    }

    fn quota_take_now(
        &self,
        key: &str,
        limit: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> QuotaDecision {
        let mut shard = self.shard(key).lock();
        let table = &mut shard.quotas;
        if !table.map.contains_key(key) && !table.has_room(now) {
            drop(shard);
            return self.overflow.lock().quota_take(limit, period_end, now);
        }
        // A counter from an earlier period counts as zero.
        let used = table
            .map
            .get(key)
            .filter(|c| c.period_end == period_end)
            .map_or(0, |c| c.count);
        if used >= limit {
            return QuotaDecision {
                allowed: false,
                used,
                remaining: 0,
            };
        }
        let cell = QuotaCell {
            count: used + 1,
            period_end,
        };
        match table.map.get_mut(key) {
            Some(old) => *old = cell,
            None => {
                // Room was made sure of above.
                table.insert(key, cell, now);
            }
        }
        QuotaDecision {
            allowed: true,
            used: used + 1,
            remaining: limit - used - 1,
        }
    }

    fn quota_refund_now(&self, key: &str, period_end: Nanos) {
        let mut shard = self.shard(key).lock();
        match shard.quotas.map.get_mut(key) {
            Some(cell) => {
                if cell.period_end == period_end {
                    cell.count = cell.count.saturating_sub(1);
                }
            }
            // A take within the period always leaves its key, unless it
            // found no room and went to the overflow count.
            None => {
                drop(shard);
                let mut overflow = self.overflow.lock();
                if let Some(count) = overflow.quotas.get_mut(&period_end) {
                    *count = count.saturating_sub(1);
                }
            }
        }
    }

    /// [`Store::quota_take_units`] under the key's shard lock.
    fn quota_take_units_now(
        &self,
        key: &str,
        limit: u64,
        units: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> QuotaDecision {
        let mut shard = self.shard(key).lock();
        let table = &mut shard.quotas;
        if !table.map.contains_key(key) && !table.has_room(now) {
            drop(shard);
            return self
                .overflow
                .lock()
                .quota_take_units(limit, units, period_end, now);
        }
        let used = table
            .map
            .get(key)
            .filter(|c| c.period_end == period_end)
            .map_or(0, |c| c.count);
        let decision = units_decision(used, limit, units);
        if decision.allowed && units > 0 {
            let cell = QuotaCell {
                count: decision.used,
                period_end,
            };
            match table.map.get_mut(key) {
                Some(old) => *old = cell,
                None => {
                    table.insert(key, cell, now);
                }
            }
        }
        decision
    }

    /// [`Store::quota_settle`] under the key's shard lock.
    fn quota_settle_now(&self, key: &str, delta: i64, period_end: Nanos, now: Nanos) -> u64 {
        let mut shard = self.shard(key).lock();
        let table = &mut shard.quotas;
        if !table.map.contains_key(key) && delta > 0 && period_end > now && table.has_room(now) {
            let count = settled(0, delta);
            table.insert(key, QuotaCell { count, period_end }, now);
            return count;
        }
        match table.map.get_mut(key) {
            Some(cell) if cell.period_end == period_end => {
                cell.count = settled(cell.count, delta);
                cell.count
            }
            // Settled after the period rolled over: the new period's count
            // is not this call's.
            Some(_) if period_end <= now => 0,
            Some(cell) => {
                *cell = QuotaCell {
                    count: settled(0, delta),
                    period_end,
                };
                cell.count
            }
            // The take went to the overflow count (no room for its key).
            None => {
                drop(shard);
                let mut overflow = self.overflow.lock();
                match overflow.quotas.get_mut(&period_end) {
                    Some(count) => {
                        *count = settled(*count, delta);
                        *count
                    }
                    None => 0,
                }
            }
        }
    }

    fn hit_now(&self, key: &str, window: Nanos, now: Nanos) -> u64 {
        let mut shard = self.shard(key).lock();
        let table = &mut shard.hits;
        let fresh = HitCell {
            count: 1,
            window_end: now.saturating_add(window),
        };
        match table.map.get_mut(key) {
            Some(cell) if !cell.idle(now) => {
                cell.count += 1;
                cell.count
            }
            Some(cell) => {
                *cell = fresh;
                1
            }
            None => {
                if table.insert(key, fresh, now) {
                    return 1;
                }
                drop(shard);
                self.overflow.lock().hit(window, now)
            }
        }
    }

    fn ban_get_now(&self, key: &str, now: Nanos) -> Option<Ban> {
        let shard = self.shard(key).lock();
        shard.bans.map.get(key).filter(|b| !b.idle(now)).cloned()
    }

    fn ban_set_now(&self, key: &str, ban: Ban, now: Nanos) {
        let mut shard = self.shard(key).lock();
        let table = &mut shard.bans;
        match table.map.get_mut(key) {
            Some(active) if !active.idle(now) && active.until >= ban.until => {}
            Some(old) => *old = ban,
            None => {
                if !table.has_room(now) {
                    // Full of live bans: the one ending soonest of a few
                    // makes room (the map's order is its seeded hash's).
                    let soonest = table
                        .map
                        .iter()
                        .take(BAN_SAMPLE)
                        .min_by_key(|(_, b)| b.until)
                        .map(|(k, _)| k.clone());
                    if let Some(soonest) = soonest {
                        table.map.remove(&soonest);
                    }
                }
                table.map.insert(key.into(), ban);
            }
        }
    }

    fn ban_list_now(&self, now: Nanos) -> Vec<(String, Ban)> {
        let mut out: Vec<(String, Ban)> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock();
                shard
                    .bans
                    .map
                    .iter()
                    .filter(|(_, b)| !b.idle(now))
                    .map(|(k, b)| (k.to_string(), b.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn ban_remove_now(&self, key: &str, now: Nanos) -> bool {
        let mut shard = self.shard(key).lock();
        shard.bans.map.remove(key).is_some_and(|b| !b.idle(now))
    }

    fn session_open_now(
        &self,
        session: SessionKey<'_>,
        value: &str,
        max_per_owner: u64,
        idle: Nanos,
        now: Nanos,
    ) -> bool {
        let mut shard = self.shard(session.owner).lock();
        let table = &mut shard.sessions;
        if !table.map.contains_key(session.owner)
            && !table.insert(session.owner, SessionOwner::default(), now)
        {
            return false;
        }
        let Some(owner) = table.map.get_mut(session.owner) else {
            return false;
        };
        owner.idle = idle;
        let idle_out = |cell: &SessionCell| now.saturating_sub(cell.last) < idle;
        owner.open.retain(|_, cell| idle_out(cell));
        let max = usize::try_from(max_per_owner.max(1)).unwrap_or(usize::MAX);
        while owner.open.len() >= max {
            let oldest = owner
                .open
                .iter()
                .min_by_key(|(_, cell)| cell.last)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => owner.open.remove(&id),
                None => break,
            };
        }
        owner.open.insert(
            session.id.into(),
            SessionCell {
                value: value.into(),
                last: now,
            },
        );
        true
    }

    fn session_touch_now(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> Option<String> {
        let mut shard = self.shard(session.owner).lock();
        let owner = shard.sessions.map.get_mut(session.owner)?;
        let cell = owner.open.get_mut(session.id)?;
        if now.saturating_sub(cell.last) >= idle {
            owner.open.remove(session.id);
            return None;
        }
        cell.last = now;
        Some(cell.value.to_string())
    }

    fn session_close_now(&self, session: SessionKey<'_>, idle: Nanos, now: Nanos) -> bool {
        let mut shard = self.shard(session.owner).lock();
        let Some(owner) = shard.sessions.map.get_mut(session.owner) else {
            return false;
        };
        owner
            .open
            .remove(session.id)
            .is_some_and(|cell| now.saturating_sub(cell.last) < idle)
    }
}

// === impl Overflow ===

impl Overflow {
    /// The GCRA decision of the rule's shared bucket.
    fn gcra(&mut self, rule: GcraRule, now: Nanos, commit: bool) -> RateDecision {
        // Idle cells are dropped once several rules have gathered.
        if self.buckets.len() > 64 {
            self.buckets.retain(|_, tat| !tat.idle(now));
        }
        let tat = self
            .buckets
            .get(&(rule.interval, rule.tolerance))
            .copied()
            .unwrap_or(now);
        let (decision, new_tat) = gcra_decide(tat, rule, now);
        if commit && decision.allowed {
            self.buckets
                .insert((rule.interval, rule.tolerance), new_tat);
        }
        decision
    }

    /// One unit of the period's shared count, if it is under `limit`.
    fn quota_take(&mut self, limit: u64, period_end: Nanos, now: Nanos) -> QuotaDecision {
        self.quotas.retain(|end, _| *end > now);
        let used = self.quotas.entry(period_end).or_insert(0);
        if *used >= limit {
            return QuotaDecision {
                allowed: false,
                used: *used,
                remaining: 0,
            };
        }
        *used += 1;
        QuotaDecision {
            allowed: true,
            used: *used,
            remaining: limit - *used,
        }
    }

    /// Units of the period's shared count, if they fit under `limit`.
    fn quota_take_units(
        &mut self,
        limit: u64,
        units: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> QuotaDecision {
        self.quotas.retain(|end, _| *end > now);
        let used = self.quotas.entry(period_end).or_insert(0);
        let decision = units_decision(*used, limit, units);
        *used = decision.used;
        decision
    }

    /// A hit on the window's shared counter: the count within the window.
    fn hit(&mut self, window: Nanos, now: Nanos) -> u64 {
        let cell = self.hits.entry(window).or_insert(HitCell {
            count: 0,
            window_end: 0,
        });
        if cell.idle(now) {
            *cell = HitCell {
                count: 0,
                window_end: now.saturating_add(window),
            };
        }
        cell.count += 1;
        cell.count
    }
}

/// The GCRA step from theoretical arrival time `tat`: the decision, and the
/// arrival time to store if the call is taken.
fn gcra_decide(tat: Nanos, rule: GcraRule, now: Nanos) -> (RateDecision, Nanos) {
    let start = tat.max(now);
    let new_tat = start.saturating_add(rule.interval);
    let horizon = now.saturating_add(rule.tolerance);
    if new_tat <= horizon {
        let decision = RateDecision {
            allowed: true,
            remaining: (horizon - new_tat) / rule.interval,
            retry_after: 0,
            reset_after: new_tat - now,
        };
        (decision, new_tat)
    } else {
        let decision = RateDecision {
            allowed: false,
            remaining: 0,
            retry_after: new_tat - horizon,
            reset_after: start - now,
        };
        (decision, tat)
    }
}

/// The rule of [`Store::quota_take_units`], shared with the Redis script:
/// admitted while the count is below `limit` and the units fit.
fn units_decision(used: u64, limit: u64, units: u64) -> QuotaDecision {
    let fits = used < limit && units <= limit - used;
    if !fits {
        return QuotaDecision {
            allowed: false,
            used,
            remaining: limit.saturating_sub(used),
        };
    }
    QuotaDecision {
        allowed: true,
        used: used + units,
        remaining: limit - used - units,
    }
}

/// A count after adding `delta`, never below 0.
fn settled(count: u64, delta: i64) -> u64 {
    if delta >= 0 {
        count.saturating_add(delta as u64)
    } else {
        count.saturating_sub(delta.unsigned_abs())
    }
}

impl Store for MemoryStore {
    fn gcra(
        &self,
        key: &str,
        rule: GcraRule,
        now: Nanos,
        commit: bool,
    ) -> impl Future<Output = Result<RateDecision, StoreError>> + Send {
        ready(Ok(self.gcra_now(key, rule, now, commit)))
    }

    fn quota_take(
        &self,
        key: &str,
        limit: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<QuotaDecision, StoreError>> + Send {
        ready(Ok(self.quota_take_now(key, limit, period_end, now)))
    }

    fn quota_refund(
        &self,
        key: &str,
        period_end: Nanos,
        _now: Nanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.quota_refund_now(key, period_end);
        ready(Ok(()))
    }

    fn quota_take_units(
        &self,
        key: &str,
        limit: u64,
        units: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<QuotaDecision, StoreError>> + Send {
        ready(Ok(
            self.quota_take_units_now(key, limit, units, period_end, now)
        ))
    }

    fn quota_settle(
        &self,
        key: &str,
        delta: i64,
        period_end: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.quota_settle_now(key, delta, period_end, now)))
    }

    fn hit(
        &self,
        key: &str,
        window: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.hit_now(key, window, now)))
    }

    fn ban_get(
        &self,
        key: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<Option<Ban>, StoreError>> + Send {
        ready(Ok(self.ban_get_now(key, now)))
    }

    fn ban_set(
        &self,
        key: &str,
        ban: Ban,
        now: Nanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.ban_set_now(key, ban, now);
        ready(Ok(()))
    }

    fn ban_list(
        &self,
        now: Nanos,
    ) -> impl Future<Output = Result<Vec<(String, Ban)>, StoreError>> + Send {
        ready(Ok(self.ban_list_now(now)))
    }

    fn ban_remove(
        &self,
        key: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.ban_remove_now(key, now)))
    }

    fn quota_peek(
        &self,
        key: &str,
        period_end: Nanos,
        _now: Nanos,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.quota_peek_now(key, period_end)))
    }

    fn usage_add(
        &self,
        subject: &str,
        counts: &[(&str, u64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.usage_add_now(subject, counts);
        ready(Ok(()))
    }

    fn usage_list(&self) -> impl Future<Output = Result<Vec<UsageEntry>, StoreError>> + Send {
        ready(Ok(self.usage_list_now()))
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(Ok(()))
    }

    fn calls_push(
        &self,
        calls: &[CallRecord],
        bounds: CallLogBounds,
        now: Nanos,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.calls.lock().push(calls, bounds, now);
        ready(Ok(()))
    }

    fn calls_page(
        &self,
        filter: &CallFilter,
        now: Nanos,
    ) -> impl Future<Output = Result<CallPage, StoreError>> + Send {
        ready(Ok(self.calls.lock().page(filter, now)))
    }

    fn calls_get(
        &self,
        request_id: &str,
        now: Nanos,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        ready(Ok(self.calls.lock().get(request_id, now)))
    }
    fn session_open(
        &self,
        session: SessionKey<'_>,
        value: &str,
        max_per_owner: u64,
        idle: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.session_open_now(
            session,
            value,
            max_per_owner,
            idle,
            now,
        )))
    }

    fn session_touch(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        ready(Ok(self.session_touch_now(session, idle, now)))
    }

    fn session_close(
        &self,
        session: SessionKey<'_>,
        idle: Nanos,
        now: Nanos,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.session_close_now(session, idle, now)))
    }
}

// === the call log ===

/// The call log in memory: entries oldest first, and the bytes they weigh.
/// Every push evicts from the front what is expired or past the bounds, so
/// the table never holds more than `max_bytes` (plus the one entry being
/// added) whatever the traffic. Lookups scan it: it holds at most
/// `max_entries`, and only the admin API reads it.
#[derive(Debug, Default)]
struct CallTable {
    entries: std::collections::VecDeque<StoredCall>,
    /// The request ids held, so a push checks for one at once.
    ids: std::collections::HashSet<String>,
    bytes: u64,
    /// The last sequence number given out.
    seq: u64,
}

#[derive(Debug)]
struct StoredCall {
    seq: u64,
    summary: CallSummary,
    entry: String,
    weight: u64,
}

impl CallTable {
    fn push(&mut self, calls: &[CallRecord], bounds: CallLogBounds, now: Nanos) {
        for call in calls {
            if !self.ids.insert(call.summary.id.clone()) {
                continue;
            }
            self.seq += 1;
            let weight = call.summary.weight(&call.entry);
            self.bytes += weight;
            self.entries.push_back(StoredCall {
                seq: self.seq,
                summary: call.summary.clone(),
                entry: call.entry.clone(),
                weight,
            });
        }
        while let Some(oldest) = self.entries.front() {
            let over =
                self.entries.len() as u64 > bounds.max_entries || self.bytes > bounds.max_bytes;
            if !over && now < oldest.summary.expires {
                break;
            }
            self.bytes -= oldest.weight;
            self.ids.remove(&oldest.summary.id);
            self.entries.pop_front();
        }
    }

    fn page(&self, filter: &CallFilter, now: Nanos) -> CallPage {
        let limit = filter.limit.max(1);
        let mut matching = self
            .entries
            .iter()
            .rev()
            .filter(|c| filter.matches(c.seq, &c.summary, now));
        let entries: Vec<(u64, String)> = matching
            .by_ref()
            .take(limit)
            .map(|c| (c.seq, c.entry.clone()))
            .collect();
        let more = matching.next().is_some();
        CallPage {
            next: more.then(|| entries.last().map(|(seq, _)| *seq)).flatten(),
            entries,
        }
    }

    fn get(&self, request_id: &str, now: Nanos) -> Option<String> {
        self.entries
            .iter()
            .find(|c| c.summary.id == request_id && now < c.summary.expires)
            .map(|c| c.entry.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::suite;
    use crate::state::SECOND;

    /// The shared behaviour suite (`state::suite`), against memory.
    #[tokio::test]
    async fn memory_store_passes_the_store_suite() {
        suite::run_all(MemoryStore::new).await;
    }

    mod gcra_properties {
        use super::*;
        use crate::clock::{Clock, ManualClock};
        use proptest::prelude::*;
        use std::time::Duration;

        const MS: Nanos = 1_000_000;

        /// A rule with a window the limit divides exactly (so the interval
        /// is not rounded), and the request times, as gaps from the start
        /// (many zero: bursts).
        fn case() -> impl Strategy<Value = (u64, Nanos, u64, Vec<Nanos>)> {
            (1u64..20, 1u64..2000, 1u64..10).prop_flat_map(|(limit, interval_ms, burst)| {
                let interval = interval_ms * MS;
                let gap = prop_oneof![Just(0), 0..interval * 2, 0..interval * burst * 3];
                (
                    Just(limit),
                    Just(interval * limit),
                    Just(burst),
                    proptest::collection::vec(gap, 1..120),
                )
            })
        }

        /// Runs the requests through the store, reading the time from a
        /// `ManualClock`: (time, admitted) for each.
        fn run(rule: GcraRule, gaps: &[Nanos]) -> Vec<(Nanos, bool)> {
            let store = MemoryStore::new();
            let clock = ManualClock::new(1_700_000_000 * SECOND);
            gaps.iter()
                .map(|gap| {
                    clock.advance(Duration::from_nanos(*gap));
                    let now = clock.now();
                    (now, store.gcra_now("k", rule, now, true).allowed)
                })
                .collect()
        }

        proptest! {
            /// In any stretch of time, no more pass than the bucket holds
            /// plus what the configured rate refills meanwhile.
            #[test]
            fn never_more_than_burst_plus_rate_times_elapsed((limit, window, burst, gaps) in case()) {
                let rule = GcraRule::new(limit, window, burst);
                let decisions = run(rule, &gaps);
                for i in 0..decisions.len() {
                    let mut admitted = 0u128;
                    for j in i..decisions.len() {
                        admitted += u128::from(decisions[j].1);
                        let elapsed = u128::from(decisions[j].0 - decisions[i].0);
                        // admitted <= burst + elapsed * limit / window, in integers.
                        prop_assert!(
                            admitted * u128::from(window)
                                <= u128::from(burst) * u128::from(window) + elapsed * u128::from(limit),
                            "{admitted} passed in {elapsed}ns (limit {limit}/{window}ns, burst {burst})"
                        );
                    }
                }
            }

            /// Each call passes exactly when a plain token bucket (capacity
            /// `burst`, one token back per interval, kept in nanoseconds)
            /// holds a token: the limiter never refuses a call it owes.
            #[test]
            fn admits_exactly_when_the_bucket_has_a_token(
                limit in 1u64..1000,
                window_ms in 1u64..600_000,
                burst in 1u64..50,
                gaps in proptest::collection::vec(0u64..2_000 * MS, 1..200),
            ) {
                let rule = GcraRule::new(limit, window_ms * MS, burst);
                let capacity = u128::from(rule.interval) * u128::from(burst);
                let mut level = capacity;
                let mut last = None;
                for (now, allowed) in run(rule, &gaps) {
                    if let Some(last) = last {
                        level = (level + u128::from(now - last)).min(capacity);
                    }
                    last = Some(now);
                    let has_token = level >= u128::from(rule.interval);
                    prop_assert_eq!(allowed, has_token, "level {} of {}", level, capacity);
                    if has_token {
                        level -= u128::from(rule.interval);
                    }
                }
            }
        }
    }

    #[test]
    fn idle_buckets_are_swept_as_the_table_grows() {
        let store = MemoryStore::new();
        let rule = GcraRule::new(1, SECOND, 1);
        let n = SHARDS * MIN_SWEEP * 2;
        for i in 0..n {
            store.gcra_now(&format!("p:{i}"), rule, 0, true);
        }
        assert_eq!(store.len(), n);
        // A second later every bucket is full again, so idle: inserting a
        // new wave sweeps the old one as the tables reach their marks.
        for i in 0..n {
            store.gcra_now(&format!("q:{i}"), rule, 2 * SECOND, true);
        }
        assert!(store.len() < n + n / 2, "{} entries held", store.len());
        store.sweep(4 * SECOND);
        assert!(store.is_empty());
    }

    #[test]
    fn new_keys_of_a_full_table_share_one_overflow_bucket_and_old_ones_keep_theirs() {
        let store = MemoryStore::with_max_keys(SHARDS * 4);
        let rule = GcraRule::new(2, 3600 * SECOND, 2);
        // An early caller, then a flood of new keys far past the cap.
        assert!(store.gcra_now("p:early", rule, 0, true).allowed);
        let passed = (0..10_000)
            .filter(|i| store.gcra_now(&format!("p:{i}"), rule, 0, true).allowed)
            .count();
        // The shards' room (at most 4 keys each, 2 calls per key) plus the
        // overflow bucket's 2: nowhere near one fresh budget per key.
        assert!(passed <= SHARDS * 4 * 2 + 2, "{passed} passed");
        assert!(store.len() <= SHARDS * 4, "{} entries", store.len());
        // The early caller still has its own bucket, one call left.
        assert!(store.gcra_now("p:early", rule, 0, true).allowed);
        assert!(!store.gcra_now("p:early", rule, 0, true).allowed);
        // Once the flood's buckets are idle, new keys get their own again.
        assert!(store.gcra_now("p:late", rule, 7200 * SECOND, true).allowed);
        assert!(store.gcra_now("p:late", rule, 7200 * SECOND, true).allowed);
    }

    #[test]
    fn a_full_table_overflows_quotas_and_abuse_counts_into_shared_cells() {
        let store = MemoryStore::with_max_keys(SHARDS);
        let end = 3600 * SECOND;
        let taken = (0..5_000)
            .filter(|i| store.quota_take_now(&format!("q:{i}"), 3, end, 0).allowed)
            .count();
        assert!(taken <= SHARDS * 3 + 3, "{taken} taken");
        // Hits of keys that find no room add up on one counter.
        let most = (0..5_000)
            .map(|i| store.hit_now(&format!("h:{i}"), 60 * SECOND, 0))
            .max();
        assert!(most >= Some(1000), "{most:?}");
    }

    #[test]
    fn a_full_ban_table_replaces_a_ban_and_stays_bounded() {
        let store = MemoryStore::with_max_keys(SHARDS);
        for i in 0..5_000u64 {
            let ban = Ban {
                until: 100 * SECOND + i,
                reason: "test".into(),
            };
            store.ban_set_now(&format!("b:{i}"), ban, 0);
        }
        assert!(store.len() <= SHARDS, "{} bans", store.len());
        // The newest ban is held.
        assert!(store.ban_get_now("b:4999", 0).is_some());
    }

    #[test]
    fn live_buckets_are_never_swept() {
        let store = MemoryStore::new();
        let rule = GcraRule::new(1, 3600 * SECOND, 1);
        for i in 0..5000 {
            store.gcra_now(&format!("p:{i}"), rule, 0, true);
        }
        store.sweep(SECOND);
        assert_eq!(store.len(), 5000);
        assert!(!store.gcra_now("p:42", rule, SECOND, false).allowed);
    }
}
