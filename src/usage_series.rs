//! Usage over time: per client and per operation, calls, refusals by code,
//! p95 latency and task units, in time buckets — one minute each for the
//! last hour, fifteen minutes each for the last day — for the status
//! page's charts and `GET /admin/usage/series`.
//!
//! Kept in this process, beside the metrics registry (so a reload keeps
//! it): with several instances on Redis each shows its own traffic. (The
//! totals of `/admin/usage` are shared through the store; these charts are
//! not.)
//!
//! Bounded: at most [`MAX_SERIES`] (client, operation) pairs — a pair
//! first seen beyond that is counted under `(other)`, `(other)` — each
//! holding at most 60 + 96 buckets (under 200 bytes each), and only
//! buckets that saw a call: about 15 MB at the very most.
//! Latency is a histogram per bucket (32 classes, each √2 wider than the
//! last, from 0.5 ms to 23 s and beyond), so p95 is the upper bound of the
//! class the 95th percentile falls in: within a factor of √2.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Nanos;
use crate::problem::Code;
use crate::state::{FastHash, SECOND};

/// The most (client, operation) pairs kept; later ones share one.
pub const MAX_SERIES: usize = 512;
/// The client and operation of the pair that takes the overflow.
pub const OTHER: &str = "(other)";

const SHARDS: usize = 8;
const LATENCY_CLASSES: usize = 32;

/// Which stretch of time a view covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The last hour, per minute.
    Hour,
    /// The last day, per 15 minutes.
    Day,
}

impl Range {
    /// The range named `hour` or `day` (the admin query parameter).
    pub fn parse(s: &str) -> Option<Range> {
        match s {
            "hour" => Some(Range::Hour),
            "day" => Some(Range::Day),
            _ => None,
        }
    }

    /// The range's name, as [`Range::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "hour",
            Range::Day => "day",
        }
    }

    /// One bucket's length.
    pub fn step(self) -> Nanos {
        match self {
            Range::Hour => 60 * SECOND,
            Range::Day => 15 * 60 * SECOND,
        }
    }

    /// How many buckets the range holds.
    pub fn buckets(self) -> usize {
        match self {
            Range::Hour => 60,
            Range::Day => 96,
        }
    }
}

/// How a view groups the pairs it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One series: everything that matched.
    Total,
    /// One series per client.
    Client,
    /// One series per operation.
    Operation,
}

impl GroupBy {
    /// The grouping named `total`, `client` or `operation`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "total" => Some(GroupBy::Total),
            "client" => Some(GroupBy::Client),
            "operation" => Some(GroupBy::Operation),
            _ => None,
        }
    }
}

/// One answered call, as the series count it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// How long the call took to answer.
    pub duration: Duration,
    /// The code of a refusal (any answer the gateway made itself).
    pub refused: Option<Code>,
    /// The task units the call cost.
    pub units: u64,
}

/// Every (client, operation) pair's buckets.
#[derive(Debug)]
pub struct UsageSeries {
    shards: Box<[Mutex<Shard>]>,
    /// Pairs kept, across shards.
    pairs: AtomicUsize,
    /// When idle pairs were last looked for (at most once a minute, and
    /// only at the cap).
    last_sweep: AtomicU64,
}

/// Pairs by operation, then client (looked up by `&str`, no allocation).
#[derive(Debug, Default)]
struct Shard {
    by_operation: HashMap<Arc<str>, HashMap<Arc<str>, Pair, FastHash>, FastHash>,
}

/// One pair's buckets of each range.
#[derive(Debug, Default)]
struct Pair {
    minutes: VecDeque<Bucket>,
    quarters: VecDeque<Bucket>,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// The bucket's start divided by its step.
    slot: u64,
    counts: Counts,
}

/// What a bucket (or a merge of buckets) counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Answered calls.
    pub calls: u64,
    /// Task units they cost.
    pub units: u64,
    /// Refusals as `(code, count)`, only the codes seen (usually none or
    /// one, so a bucket stays small).
    refusals: Vec<(Code, u64)>,
    latency: [u32; LATENCY_CLASSES],
}

/// One series of a view: the pair's (or group's) buckets, oldest first,
/// one per step of the range (empty ones included).
#[derive(Debug, Clone)]
pub struct SeriesView {
    /// The client, unless grouped by operation only.
    pub client: Option<String>,
    /// The operation, unless grouped by client only.
    pub operation: Option<String>,
    /// `(bucket start, counts)`, oldest first.
    pub buckets: Vec<(Nanos, Counts)>,
    /// Everything in the range together.
    pub total: Counts,
}

// === impl Counts ===

impl Counts {
    fn add(&mut self, sample: &Sample) {
        self.calls += 1;
        self.units = self.units.saturating_add(sample.units);
        if let Some(code) = sample.refused {
            self.add_refusals(code, 1);
        }
        let class = latency_class(sample.duration);
        self.latency[class] = self.latency[class].saturating_add(1);
    }

    fn merge(&mut self, other: &Counts) {
        self.calls += other.calls;
        self.units = self.units.saturating_add(other.units);
        for &(code, n) in &other.refusals {
            self.add_refusals(code, n);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    fn add_refusals(&mut self, code: Code, n: u64) {
        match self.refusals.iter_mut().find(|(c, _)| *c == code) {
            Some((_, count)) => *count += n,
            None => self.refusals.push((code, n)),
        }
    }

    /// Refusals by code, codes that never refused left out.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals
            .iter()
            .map(|(code, n)| (code.as_str(), *n))
            .collect()
    }

    /// Every refusal, whatever its code.
    pub fn refused(&self) -> u64 {
        self.refusals.iter().map(|(_, n)| n).sum()
    }

    /// The 95th percentile latency in milliseconds (the upper bound of its
    /// class); `None` without calls.
    pub fn p95_ms(&self) -> Option<f64> {
        let count: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if count == 0 {
            return None;
        }
        // The smallest class holding at least 95% of the calls.
        let wanted = (count * 95).div_ceil(100);
        let mut seen = 0;
        for (class, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen >= wanted {
                return Some(class_upper_ms(class));
            }
        }
        Some(class_upper_ms(LATENCY_CLASSES - 1))
    }
}

/// The class of a latency: 0 up to 0.5 ms, then each √2 wider; the last
/// takes everything longer.
fn latency_class(d: Duration) -> usize {
    let ms = d.as_secs_f64() * 1000.0;
    if ms <= 0.5 {
        return 0;
    }
    let class = (2.0 * (ms / 0.5).log2()).ceil();
    (class as usize).min(LATENCY_CLASSES - 1)
}

/// The upper bound of a latency class, in milliseconds.
fn class_upper_ms(class: usize) -> f64 {
    0.5 * 2f64.powf(class as f64 / 2.0)
}

// === impl Pair ===

impl Pair {
    fn add(&mut self, now: Nanos, sample: &Sample) {
        for (range, buckets) in [
            (Range::Hour, &mut self.minutes),
            (Range::Day, &mut self.quarters),
        ] {
            let slot = now / range.step();
            match buckets.back_mut() {
                Some(last) if last.slot == slot => last.counts.add(sample),
                Some(last) if last.slot > slot => {
                    // The clock stepped back: count it where it belongs, if
                    // that bucket is still kept.
                    if let Some(b) = buckets.iter_mut().rev().find(|b| b.slot == slot) {
                        b.counts.add(sample);
                    }
                }
                _ => {
                    let mut counts = Counts::default();
                    counts.add(sample);
                    buckets.push_back(Bucket { slot, counts });
                }
            }
            prune(buckets, range, slot);
        }
    }

    /// Whether nothing is left in the last day.
    fn idle(&mut self, now: Nanos) -> bool {
        prune(&mut self.minutes, Range::Hour, now / Range::Hour.step());
        prune(&mut self.quarters, Range::Day, now / Range::Day.step());
        self.quarters.is_empty() && self.minutes.is_empty()
    }

    fn buckets(&self, range: Range) -> &VecDeque<Bucket> {
        match range {
            Range::Hour => &self.minutes,
            Range::Day => &self.quarters,
        }
    }
}

/// Drops the buckets older than the range ending in `slot`.
fn prune(buckets: &mut VecDeque<Bucket>, range: Range, slot: u64) {
    let oldest = (slot + 1).saturating_sub(range.buckets() as u64);
    while buckets.front().is_some_and(|b| b.slot < oldest) {
        buckets.pop_front();
    }
}

// === impl UsageSeries ===

impl Default for UsageSeries {
    fn default() -> Self {
        UsageSeries::new()
    }
}

impl UsageSeries {
    /// An empty series.
    pub fn new() -> UsageSeries {
        UsageSeries {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pairs: AtomicUsize::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    fn shard(&self, operation: &str) -> &Mutex<Shard> {
        // FNV-1a: operation ids come from the config, not from callers.
        let hash = operation.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Counts one answered call of `operation` by `client` at `now`.
    pub fn record(&self, client: &str, operation: &str, now: Nanos, sample: Sample) {
        let mut shard = self.shard(operation).lock();
        if let Some(pair) = shard
            .by_operation
            .get_mut(operation)
            .and_then(|clients| clients.get_mut(client))
        {
            pair.add(now, &sample);
            return;
        }
        if self.pairs.load(Ordering::Relaxed) >= MAX_SERIES {
            drop(shard);
            self.sweep(now);
            shard = self.shard(operation).lock();
        }
        if self.pairs.load(Ordering::Relaxed) >= MAX_SERIES {
            drop(shard);
            if (client, operation) != (OTHER, OTHER) {
                self.record_other(now, sample);
            }
            return;
        }
        self.pairs.fetch_add(1, Ordering::Relaxed);
        let mut pair = Pair::default();
        pair.add(now, &sample);
        shard
            .by_operation
            .entry(operation.into())
            .or_default()
            .insert(client.into(), pair);
    }

    /// The overflow pair: always kept, whatever the count.
    fn record_other(&self, now: Nanos, sample: Sample) {
        let mut shard = self.shard(OTHER).lock();
        let clients = shard.by_operation.entry(OTHER.into()).or_default();
        match clients.get_mut(OTHER) {
            Some(pair) => pair.add(now, &sample),
            None => {
                self.pairs.fetch_add(1, Ordering::Relaxed);
                let mut pair = Pair::default();
                pair.add(now, &sample);
                clients.insert(OTHER.into(), pair);
            }
        }
    }

    /// Drops the pairs with nothing in the last day, one shard at a time;
    /// at most once a minute.
    fn sweep(&self, now: Nanos) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 60 * SECOND
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for shard in self.shards.iter() {
            let mut dropped = 0;
            shard.lock().by_operation.retain(|_, clients| {
                clients.retain(|_, pair| {
                    let idle = pair.idle(now);
                    dropped += usize::from(idle);
                    !idle
                });
                !clients.is_empty()
            });
            self.pairs.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    /// The series of `range` ending at `now`, for the pairs matching the
    /// filters, grouped by `by`; busiest first (then by name).
    pub fn view(
        &self,
        range: Range,
        now: Nanos,
        client: Option<&str>,
        operation: Option<&str>,
        by: GroupBy,
    ) -> Vec<SeriesView> {
        let step = range.step();
        let len = range.buckets();
        let last = now / step;
        let first = (last + 1).saturating_sub(len as u64);
        let mut groups: BTreeMap<(Option<String>, Option<String>), Vec<Counts>> = BTreeMap::new();
        if by == GroupBy::Total {
            groups.insert((None, None), vec![Counts::default(); len]);
        }
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (op, clients) in &shard.by_operation {
                if operation.is_some_and(|o| o != &**op) {
                    continue;
                }
                for (who, pair) in clients {
                    if client.is_some_and(|c| c != &**who) {
                        continue;
                    }
                    let key = match by {
                        GroupBy::Total => (None, None),
                        GroupBy::Client => (Some(who.to_string()), None),
                        GroupBy::Operation => (None, Some(op.to_string())),
                    };
                    let buckets = groups
                        .entry(key)
                        .or_insert_with(|| vec![Counts::default(); len]);
                    for b in pair.buckets(range) {
                        if (first..=last).contains(&b.slot) {
                            buckets[(b.slot - first) as usize].merge(&b.counts);
                        }
                    }
                }
            }
        }
        let mut out: Vec<SeriesView> = groups
            .into_iter()
            .map(|((client, operation), counts)| {
                let mut total = Counts::default();
                for c in &counts {
                    total.merge(c);
                }
                let buckets = counts
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| ((first + i as u64) * step, c))
                    .collect();
                SeriesView {
                    client,
                    operation,
                    buckets,
                    total,
                }
            })
            .filter(|s| by == GroupBy::Total || s.total.calls > 0)
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.total.calls));
        out
    }

    /// How many pairs are kept now.
    pub fn pairs(&self) -> usize {
        self.pairs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Nanos = 1_700_000_100 * SECOND; // on a 15-minute boundary

    fn ok(ms: u64, units: u64) -> Sample {
        Sample {
            duration: Duration::from_millis(ms),
            refused: None,
            units,
        }
    }

    fn refused(code: Code) -> Sample {
        Sample {
            duration: Duration::from_micros(200),
            refused: Some(code),
            units: 0,
        }
    }

    #[test]
    fn calls_land_in_the_minute_and_quarter_they_were_made() {
        assert_eq!(T0 % (900 * SECOND), 0);
        let s = UsageSeries::new();
        s.record("hr", "getEmployee", T0, ok(10, 3));
        s.record("hr", "getEmployee", T0 + 59 * SECOND, ok(10, 2));
        s.record(
            "hr",
            "getEmployee",
            T0 + 60 * SECOND,
            refused(Code::RateLimited),
        );
        let now = T0 + 90 * SECOND;
        let hour = s.view(Range::Hour, now, None, None, GroupBy::Total);
        assert_eq!(hour.len(), 1);
        let b = &hour[0].buckets;
        assert_eq!(b.len(), 60);
        // The newest bucket is the current minute, the one before it T0's.
        assert_eq!(b[59].0, T0 + 60 * SECOND);
        assert_eq!((b[59].1.calls, b[59].1.units, b[59].1.refused()), (1, 0, 1));
        assert_eq!(b[58].0, T0);
        assert_eq!((b[58].1.calls, b[58].1.units), (2, 5));
        assert_eq!(b[..58].iter().map(|(_, c)| c.calls).sum::<u64>(), 0);
        assert_eq!(hour[0].total.calls, 3);
        assert_eq!(hour[0].total.refusals()["rate_limited"], 1);
        let day = s.view(Range::Day, now, None, None, GroupBy::Total);
        assert_eq!(day[0].buckets.len(), 96);
        assert_eq!(day[0].total.calls, 3);
        assert_eq!(day[0].buckets.last().map(|(_, c)| c.calls), Some(3));
    }

    #[test]
    fn an_hour_later_the_hour_is_empty_and_the_day_still_counts() {
        let s = UsageSeries::new();
        s.record("hr", "op", T0, ok(1, 1));
        let later = T0 + 3600 * SECOND;
        let hour = s.view(Range::Hour, later, None, None, GroupBy::Total);
        assert_eq!(hour[0].total.calls, 0);
        assert_eq!(hour[0].total.p95_ms(), None);
        let day = s.view(Range::Day, later, None, None, GroupBy::Total);
        assert_eq!(day[0].total.calls, 1);
        let next_day = T0 + 86_400 * SECOND;
        let day = s.view(Range::Day, next_day, None, None, GroupBy::Total);
        assert_eq!(day[0].total.calls, 0);
    }

    #[test]
    fn views_filter_and_group_by_client_or_operation() {
        let s = UsageSeries::new();
        s.record("hr", "get", T0, ok(1, 1));
        s.record("hr", "run", T0, ok(1, 10));
        s.record("hr", "run", T0, ok(1, 10));
        s.record("ops", "run", T0, ok(1, 5));
        let by_client = s.view(Range::Hour, T0, None, None, GroupBy::Client);
        let names: Vec<_> = by_client.iter().map(|v| v.client.as_deref()).collect();
        assert_eq!(names, [Some("hr"), Some("ops")]);
        assert_eq!(by_client[0].total.units, 21);
        let by_op = s.view(Range::Hour, T0, Some("hr"), None, GroupBy::Operation);
        let ops: Vec<_> = by_op
            .iter()
            .map(|v| (v.operation.as_deref(), v.total.calls))
            .collect();
        assert_eq!(ops, [(Some("run"), 2), (Some("get"), 1)]);
        let one = s.view(Range::Hour, T0, None, Some("run"), GroupBy::Total);
        assert_eq!((one[0].total.calls, one[0].total.units), (3, 25));
        // A filter nothing matches: one empty total, no groups.
        let none = s.view(Range::Hour, T0, Some("nobody"), None, GroupBy::Total);
        assert_eq!(none[0].total.calls, 0);
        assert!(s
            .view(Range::Hour, T0, Some("nobody"), None, GroupBy::Client)
            .is_empty());
    }

    #[test]
    fn p95_is_the_upper_bound_of_the_class_the_95th_call_falls_in() {
        let s = UsageSeries::new();
        for _ in 0..95 {
            s.record("hr", "op", T0, ok(3, 0));
        }
        for _ in 0..5 {
            s.record("hr", "op", T0, ok(900, 0));
        }
        let v = s.view(Range::Hour, T0, None, None, GroupBy::Total);
        let p95 = v[0].total.p95_ms().expect("calls");
        // 3 ms falls in the class (2.83 ms, 4 ms]: 0.5 ms × √2⁶ = 4 ms.
        assert_eq!(p95, 4.0);
        s.record("hr", "op", T0, ok(900, 0));
        let v = s.view(Range::Hour, T0, None, None, GroupBy::Total);
        let p95 = v[0].total.p95_ms().expect("calls");
        assert!((724.0..=1024.0).contains(&p95), "{p95}");
    }

    #[test]
    fn a_bucket_stays_small_so_the_cap_bounds_memory() {
        // 512 pairs × (60 + 96) buckets × 192 bytes ≈ 15 MB at the most
        // (README: usage over time), plus a few bytes per refusal code.
        assert!(std::mem::size_of::<Bucket>() <= 192);
    }

    #[test]
    fn pairs_beyond_the_cap_share_the_other_pair_and_idle_ones_make_room() {
        let s = UsageSeries::new();
        for i in 0..MAX_SERIES {
            s.record(&format!("c{i}"), "op", T0, ok(1, 1));
        }
        assert_eq!(s.pairs(), MAX_SERIES);
        s.record("late", "op", T0, ok(1, 1));
        s.record("later", "op2", T0, ok(1, 1));
        assert_eq!(s.pairs(), MAX_SERIES + 1);
        let other = s.view(Range::Hour, T0, Some(OTHER), None, GroupBy::Total);
        assert_eq!(other[0].total.calls, 2);
        // A day later the old pairs are idle: a new one gets its own.
        let later = T0 + 86_400 * SECOND;
        s.record("fresh", "op", later, ok(1, 1));
        let fresh = s.view(Range::Hour, later, Some("fresh"), None, GroupBy::Total);
        assert_eq!(fresh[0].total.calls, 1);
        assert!(s.pairs() < MAX_SERIES);
    }
}
