//! The store behaviour suite, written once against the [`Store`] trait so
//! every implementation (memory now, Redis later) runs the same cases.
//! Each case uses its own keys, so a shared Redis needs no flushing between
//! them.

use super::*;

const T0: Nanos = 1_700_000_000 * SECOND;

/// Runs every case, each on a fresh store from `make`.
pub async fn run_all<S: Store>(make: impl Fn() -> S) {
    gcra_lets_the_burst_through_then_refuses(make()).await;
    gcra_refusals_consume_nothing_and_say_when_to_retry(make()).await;
    gcra_refills_one_call_per_interval(make()).await;
    gcra_peeks_do_not_consume(make()).await;
    gcra_keys_are_independent(make()).await;
    concurrent_gcra_takes_admit_exactly_the_burst(make()).await;
    quota_counts_up_to_the_limit_within_a_period(make()).await;
    quota_starts_over_in_a_new_period(make()).await;
    quota_refunds_give_back_one_call(make()).await;
    hits_count_within_a_window_then_start_over(make()).await;
    bans_hold_until_they_expire(make()).await;
    bans_are_listed_and_lifted(make()).await;
    a_shorter_ban_never_shortens_an_active_one(make()).await;
    quota_peek_reads_without_taking(make()).await;
    usage_counters_add_up_per_subject_and_field(make()).await;
    a_working_store_answers_ping(make()).await;
}

pub async fn quota_peek_reads_without_taking(store: impl Store) {
    let end = T0 + 3600 * SECOND;
    assert_eq!(store.quota_peek("s13:q", end, T0).await.expect("store"), 0);
    for _ in 0..3 {
        store.quota_take("s13:q", 10, end, T0).await.expect("store");
    }
    assert_eq!(store.quota_peek("s13:q", end, T0).await.expect("store"), 3);
    assert_eq!(store.quota_peek("s13:q", end, T0).await.expect("store"), 3);
    // The next period's view of the same key starts at zero.
    let next = end + 3600 * SECOND;
    assert_eq!(
        store.quota_peek("s13:q", next, end).await.expect("store"),
        0
    );
}

pub async fn usage_counters_add_up_per_subject_and_field(store: impl Store) {
    store
        .usage_add(
            "s14-beta",
            &[
                ("getEmployee:calls", 1),
                ("getEmployee:bytes_out", 100),
                ("getEmployee:cache_hits", 1),
            ],
        )
        .await
        .expect("store");
    store
        .usage_add("s14-alpha", &[("scoreLead:calls", 2)])
        .await
        .expect("store");
    store
        .usage_add(
            "s14-beta",
            &[
                ("getEmployee:calls", 4),
                ("getEmployee:cache_hits", 3),
                ("getEmployee:rejected:rate_limited", 1),
            ],
        )
        .await
        .expect("store");
    let mine: Vec<UsageEntry> = store
        .usage_list()
        .await
        .expect("store")
        .into_iter()
        .filter(|e| e.subject.starts_with("s14-"))
        .collect();
    let owned = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(f, n)| (f.to_string(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        mine,
        vec![
            UsageEntry {
                subject: "s14-alpha".into(),
                counts: owned(&[("scoreLead:calls", 2)]),
            },
            UsageEntry {
                subject: "s14-beta".into(),
                counts: owned(&[
                    ("getEmployee:bytes_out", 100),
                    ("getEmployee:cache_hits", 4),
                    ("getEmployee:calls", 5),
                    ("getEmployee:rejected:rate_limited", 1),
                ]),
            },
        ]
    );
}

pub async fn a_working_store_answers_ping(store: impl Store) {
    store.ping().await.expect("ping");
}

pub async fn gcra_lets_the_burst_through_then_refuses(store: impl Store) {
    let rule = GcraRule::new(5, 60 * SECOND, 5);
    for expected_remaining in (0..5).rev() {
        let d = store.gcra("s1:k", rule, T0, true).await.expect("store");
        assert!(d.allowed);
        assert_eq!(d.remaining, expected_remaining);
    }
    let d = store.gcra("s1:k", rule, T0, true).await.expect("store");
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
}

/// Many calls at once on two buckets (a store may send them together):
/// each admits exactly its burst, each admitted call with its own
/// `remaining`.
pub async fn concurrent_gcra_takes_admit_exactly_the_burst(store: impl Store) {
    let rule = GcraRule::new(7, 60 * SECOND, 7);
    let keys = ["s16:a", "s16:b"];
    let calls = (0..60u64).map(|i| store.gcra(keys[(i % 3 == 0) as usize], rule, T0 + i, true));
    let got = futures_util::future::join_all(calls).await;
    for (k, key) in keys.iter().enumerate() {
        let mut remaining: Vec<u64> = (0..60)
            .filter(|i| (i % 3 == 0) as usize == k)
            .map(|i| got[i].as_ref().expect("store"))
            .filter(|d| d.allowed)
            .map(|d| d.remaining)
            .collect();
        remaining.sort();
        assert_eq!(remaining, [0, 1, 2, 3, 4, 5, 6], "{key}");
    }
}

pub async fn gcra_refusals_consume_nothing_and_say_when_to_retry(store: impl Store) {
    let rule = GcraRule::new(2, 10 * SECOND, 2);
    for _ in 0..2 {
        assert!(
            store
                .gcra("s2:k", rule, T0, true)
                .await
                .expect("store")
                .allowed
        );
    }
    for _ in 0..10 {
        let d = store.gcra("s2:k", rule, T0, true).await.expect("store");
        assert!(!d.allowed);
        assert_eq!(d.retry_after, 5 * SECOND);
        assert_eq!(d.reset_after, 10 * SECOND);
    }
    // Refusals took nothing: one interval later exactly one call passes.
    let later = T0 + 5 * SECOND;
    let d = store.gcra("s2:k", rule, later, true).await.expect("store");
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    assert!(
        !store
            .gcra("s2:k", rule, later, true)
            .await
            .expect("store")
            .allowed
    );
}

pub async fn gcra_refills_one_call_per_interval(store: impl Store) {
    // 10 per second with a burst of 3.
    let rule = GcraRule::new(10, SECOND, 3);
    for _ in 0..3 {
        assert!(
            store
                .gcra("s3:k", rule, T0, true)
                .await
                .expect("store")
                .allowed
        );
    }
    assert!(
        !store
            .gcra("s3:k", rule, T0, true)
            .await
            .expect("store")
            .allowed
    );
    let d = store
        .gcra("s3:k", rule, T0 + SECOND / 10, true)
        .await
        .expect("store");
    assert!(d.allowed);
    // Long idle: the bucket is full again, never more than the burst.
    let d = store
        .gcra("s3:k", rule, T0 + 60 * SECOND, true)
        .await
        .expect("store");
    assert!(d.allowed);
    assert_eq!(d.remaining, 2);
}

pub async fn gcra_peeks_do_not_consume(store: impl Store) {
    let rule = GcraRule::new(1, SECOND, 1);
    for _ in 0..5 {
        let d = store.gcra("s4:k", rule, T0, false).await.expect("store");
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }
    assert!(
        store
            .gcra("s4:k", rule, T0, true)
            .await
            .expect("store")
            .allowed
    );
    assert!(
        !store
            .gcra("s4:k", rule, T0, false)
            .await
            .expect("store")
            .allowed
    );
}

pub async fn gcra_keys_are_independent(store: impl Store) {
    let rule = GcraRule::new(1, SECOND, 1);
    assert!(
        store
            .gcra("s5:a", rule, T0, true)
            .await
            .expect("store")
            .allowed
    );
    assert!(
        !store
            .gcra("s5:a", rule, T0, true)
            .await
            .expect("store")
            .allowed
    );
    assert!(
        store
            .gcra("s5:b", rule, T0, true)
            .await
            .expect("store")
            .allowed
    );
    assert!(
        store
            .gcra("other:a", rule, T0, true)
            .await
            .expect("store")
            .allowed
    );
}

pub async fn quota_counts_up_to_the_limit_within_a_period(store: impl Store) {
    let end = T0 + 3600 * SECOND;
    for used in 1..=3 {
        let d = store.quota_take("s6:k", 3, end, T0).await.expect("store");
        assert!(d.allowed);
        assert_eq!((d.used, d.remaining), (used, 3 - used));
    }
    let d = store
        .quota_take("s6:k", 3, end, T0 + SECOND)
        .await
        .expect("store");
    assert!(!d.allowed);
    assert_eq!((d.used, d.remaining), (3, 0));
    let zero = store
        .quota_take("s6:none", 0, end, T0)
        .await
        .expect("store");
    assert!(!zero.allowed);
}

pub async fn quota_starts_over_in_a_new_period(store: impl Store) {
    let end = T0 + 3600 * SECOND;
    for _ in 0..2 {
        store.quota_take("s7:k", 2, end, T0).await.expect("store");
    }
    assert!(
        !store
            .quota_take("s7:k", 2, end, T0)
            .await
            .expect("store")
            .allowed
    );
    let next_end = end + 3600 * SECOND;
    let d = store
        .quota_take("s7:k", 2, next_end, end)
        .await
        .expect("store");
    assert!(d.allowed);
    assert_eq!(d.used, 1);
}

pub async fn quota_refunds_give_back_one_call(store: impl Store) {
    let end = T0 + 3600 * SECOND;
    store.quota_take("s8:k", 1, end, T0).await.expect("store");
    store.quota_refund("s8:k", end, T0).await.expect("store");
    assert!(
        store
            .quota_take("s8:k", 1, end, T0)
            .await
            .expect("store")
            .allowed
    );
    // A refund for another period (it rolled over) changes nothing.
    store
        .quota_refund("s8:k", end - 1, T0)
        .await
        .expect("store");
    assert!(
        !store
            .quota_take("s8:k", 1, end, T0)
            .await
            .expect("store")
            .allowed
    );
    // Refunding an empty counter never goes below zero.
    store.quota_refund("s8:none", end, T0).await.expect("store");
    store.quota_refund("s8:none", end, T0).await.expect("store");
    assert_eq!(
        store
            .quota_take("s8:none", 5, end, T0)
            .await
            .expect("store")
            .used,
        1
    );
}

pub async fn hits_count_within_a_window_then_start_over(store: impl Store) {
    let window = 60 * SECOND;
    for n in 1..=3 {
        assert_eq!(
            store
                .hit("s9:k", window, T0 + n * SECOND)
                .await
                .expect("store"),
            n
        );
    }
    assert_eq!(store.hit("s9:other", window, T0).await.expect("store"), 1);
    // The window runs from the first hit (T0 + 1s).
    assert_eq!(
        store
            .hit("s9:k", window, T0 + 60 * SECOND)
            .await
            .expect("store"),
        4
    );
    assert_eq!(
        store
            .hit("s9:k", window, T0 + 61 * SECOND)
            .await
            .expect("store"),
        1
    );
}

pub async fn bans_hold_until_they_expire(store: impl Store) {
    assert_eq!(store.ban_get("s10:k", T0).await.expect("store"), None);
    let ban = Ban {
        reason: "test".into(),
        until: T0 + 60 * SECOND,
    };
    store
        .ban_set("s10:k", ban.clone(), T0)
        .await
        .expect("store");
    assert_eq!(
        store
            .ban_get("s10:k", T0 + 59 * SECOND)
            .await
            .expect("store"),
        Some(ban)
    );
    assert_eq!(
        store
            .ban_get("s10:k", T0 + 60 * SECOND)
            .await
            .expect("store"),
        None
    );
    assert_eq!(store.ban_get("s10:other", T0).await.expect("store"), None);
}

pub async fn bans_are_listed_and_lifted(store: impl Store) {
    let ban = |s: u64| Ban {
        reason: format!("r{s}"),
        until: T0 + s * SECOND,
    };
    store.ban_set("s11:b", ban(100), T0).await.expect("store");
    store.ban_set("s11:a", ban(100), T0).await.expect("store");
    store.ban_set("s11:gone", ban(1), T0).await.expect("store");
    let list = store.ban_list(T0 + 2 * SECOND).await.expect("store");
    let keys: Vec<&str> = list
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("s11:"))
        .collect();
    assert_eq!(keys, ["s11:a", "s11:b"]);
    assert!(store.ban_remove("s11:a", T0).await.expect("store"));
    assert!(!store.ban_remove("s11:a", T0).await.expect("store"));
    assert!(!store
        .ban_remove("s11:gone", T0 + 2 * SECOND)
        .await
        .expect("store"));
    assert_eq!(store.ban_get("s11:a", T0).await.expect("store"), None);
}

pub async fn a_shorter_ban_never_shortens_an_active_one(store: impl Store) {
    let long = Ban {
        reason: "long".into(),
        until: T0 + 600 * SECOND,
    };
    store
        .ban_set("s12:k", long.clone(), T0)
        .await
        .expect("store");
    let short = Ban {
        reason: "short".into(),
        until: T0 + 60 * SECOND,
    };
    store.ban_set("s12:k", short, T0).await.expect("store");
    assert_eq!(store.ban_get("s12:k", T0).await.expect("store"), Some(long));
}
