//! The memory store's footprint under a flood of distinct keys (DESIGN §8:
//! bounded memory). Alone in its test binary so the process RSS is its own.

use tollgate::state::{GcraRule, MemoryStore, SECOND};

/// Resident set size in KiB, from /proc (Linux); `None` elsewhere.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_flood_of_a_million_distinct_ips_stays_under_200_mib() {
    let Some(before) = rss_kib() else {
        eprintln!("no /proc/self/status: skipped");
        return;
    };
    let store = MemoryStore::new();
    let rule = GcraRule::new(100, 60 * SECOND, 100);
    let now = 1_700_000_000 * SECOND;
    let mut key = String::with_capacity(64);
    for i in 0u32..1_000_000 {
        let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
        key.clear();
        use std::fmt::Write as _;
        let _ = write!(key, "per-ip:ip:{a}.{b}.{c}.{d}");
        assert!(store.gcra_now(&key, rule, now, true).allowed);
    }
    assert_eq!(store.len(), 1_000_000);
    let after = rss_kib().unwrap_or(before);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!("1M live rate-limit keys: RSS {before} KiB -> {after} KiB (+{grown_mib:.1} MiB)");
    assert!(grown_mib < 200.0, "grew {grown_mib:.1} MiB");

    // Once idle (a minute later every bucket is full again), a sweep gives
    // the entries back.
    store.sweep(now + 61 * SECOND);
    assert!(store.is_empty());
}
