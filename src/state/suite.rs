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
    calls_are_paged_newest_first_and_found_by_request_id(make()).await;
    calls_are_filtered_by_client_operation_status_and_time(make()).await;
    the_call_log_evicts_the_oldest_past_its_bounds(make()).await;
    expired_calls_are_hidden_and_a_request_id_is_kept_once(make()).await;
    quota_units_are_taken_only_while_they_fit(make()).await;
    quota_settles_add_and_give_back_units(make()).await;
    quota_units_start_over_in_a_new_period(make()).await;
    sessions_are_found_only_through_their_owner(make()).await;
    sessions_idle_out_and_use_keeps_them(make()).await;
    an_owner_at_its_cap_drops_its_own_least_recently_used_session(make()).await;
}

// === the call log ===
//
// The log is one per store (not per key), so each case starts an hour past
// the previous one's entries: they have expired, and its first push evicts
// them.

const CALL_TTL: Nanos = 600 * SECOND;

fn call(id: &str, at: Nanos, client: &str, operation: &str, status: u16) -> CallRecord {
    CallRecord {
        summary: CallSummary {
            id: id.into(),
            time: at,
            expires: at + CALL_TTL,
            client: client.into(),
            operation: operation.into(),
            status,
        },
        entry: format!("{{\"request_id\":\"{id}\"}}"),
    }
}

fn bounds(max_entries: u64, max_bytes: u64) -> CallLogBounds {
    CallLogBounds {
        max_entries,
        max_bytes,
        ttl: CALL_TTL,
    }
}

fn ids(page: &CallPage) -> Vec<String> {
    page.entries
        .iter()
        .map(|(_, e)| {
            let v: serde_json::Value = serde_json::from_str(e).expect("entry JSON");
            v["request_id"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

fn filter(limit: usize) -> CallFilter {
    CallFilter {
        limit,
        ..CallFilter::default()
    }
}

pub async fn calls_are_paged_newest_first_and_found_by_request_id(store: impl Store) {
    let t = T0 + 3600 * SECOND;
    let calls: Vec<CallRecord> = (0..5)
        .map(|i| call(&format!("c1-{i}"), t + i, "alpha", "getEmployee", 200))
        .collect();
    store
        .calls_push(&calls[..2], bounds(100, 1 << 20), t)
        .await
        .expect("store");
    store
        .calls_push(&calls[2..], bounds(100, 1 << 20), t + 5)
        .await
        .expect("store");
    let first = store.calls_page(&filter(2), t + 10).await.expect("store");
    assert_eq!(ids(&first), ["c1-4", "c1-3"]);
    let cursor = first.next.expect("a next page");
    let second = store
        .calls_page(
            &CallFilter {
                before: Some(cursor),
                ..filter(2)
            },
            t + 10,
        )
        .await
        .expect("store");
    assert_eq!(ids(&second), ["c1-2", "c1-1"]);
    let last = store
        .calls_page(
            &CallFilter {
                before: second.next,
                ..filter(2)
            },
            t + 10,
        )
        .await
        .expect("store");
    assert_eq!(ids(&last), ["c1-0"]);
    assert_eq!(last.next, None);
    let found = store.calls_get("c1-3", t + 10).await.expect("store");
    assert_eq!(found.as_deref(), Some(calls[3].entry.as_str()));
    assert_eq!(store.calls_get("c1-9", t + 10).await.expect("store"), None);
}

pub async fn calls_are_filtered_by_client_operation_status_and_time(store: impl Store) {
    let t = T0 + 2 * 3600 * SECOND;
    let calls = [
        call("c2-a", t, "alpha", "getEmployee", 200),
        call("c2-b", t + SECOND, "beta", "getEmployee", 404),
        call("c2-c", t + 2 * SECOND, "alpha", "createEmployee", 429),
        call("c2-d", t + 3 * SECOND, "", "getEmployee", 401),
    ];
    store
        .calls_push(&calls, bounds(100, 1 << 20), t + 3 * SECOND)
        .await
        .expect("store");
    let now = t + 4 * SECOND;
    let page = |f: CallFilter| {
        let store = &store;
        async move { ids(&store.calls_page(&f, now).await.expect("store")) }
    };
    let alpha = CallFilter {
        client: Some("alpha".into()),
        ..filter(10)
    };
    assert_eq!(page(alpha).await, ["c2-c", "c2-a"]);
    let gets = CallFilter {
        operation: Some("getEmployee".into()),
        ..filter(10)
    };
    assert_eq!(page(gets).await, ["c2-d", "c2-b", "c2-a"]);
    let client_errors = CallFilter {
        status: Some(StatusFilter::Class(4)),
        ..filter(10)
    };
    assert_eq!(page(client_errors).await, ["c2-d", "c2-c", "c2-b"]);
    let not_found = CallFilter {
        status: Some(StatusFilter::Exact(404)),
        ..filter(10)
    };
    assert_eq!(page(not_found).await, ["c2-b"]);
    let recent = CallFilter {
        since: Some(t + 2 * SECOND),
        ..filter(10)
    };
    assert_eq!(page(recent).await, ["c2-d", "c2-c"]);
    let anonymous = CallFilter {
        client: Some(String::new()),
        ..filter(10)
    };
    assert_eq!(page(anonymous).await, ["c2-d"]);
}

pub async fn the_call_log_evicts_the_oldest_past_its_bounds(store: impl Store) {
    let t = T0 + 3 * 3600 * SECOND;
    let calls: Vec<CallRecord> = (0..6)
        .map(|i| call(&format!("c3-{i}"), t + i, "alpha", "getEmployee", 200))
        .collect();
    let weight = calls[0].summary.weight(&calls[0].entry);
    // Room for three entries' bytes (and ten entries): the oldest go.
    for c in &calls {
        store
            .calls_push(std::slice::from_ref(c), bounds(10, 3 * weight), t + 6)
            .await
            .expect("store");
    }
    let all = store.calls_page(&filter(10), t + 7).await.expect("store");
    assert_eq!(ids(&all), ["c3-5", "c3-4", "c3-3"]);
    assert_eq!(store.calls_get("c3-0", t + 7).await.expect("store"), None);
    // Room for two entries by count: one push of two evicts down to them.
    store
        .calls_push(
            &[
                call("c3-6", t + 6, "alpha", "getEmployee", 200),
                call("c3-7", t + 7, "alpha", "getEmployee", 200),
            ],
            bounds(2, 1 << 20),
            t + 7,
        )
        .await
        .expect("store");
    let two = store.calls_page(&filter(10), t + 8).await.expect("store");
    assert_eq!(ids(&two), ["c3-7", "c3-6"]);
}

pub async fn expired_calls_are_hidden_and_a_request_id_is_kept_once(store: impl Store) {
    let t = T0 + 4 * 3600 * SECOND;
    let first = call("c4-a", t, "alpha", "getEmployee", 200);
    let mut again = call("c4-a", t + SECOND, "beta", "createEmployee", 500);
    again.entry = "{\"request_id\":\"c4-a\",\"second\":true}".into();
    store
        .calls_push(std::slice::from_ref(&first), bounds(10, 1 << 20), t)
        .await
        .expect("store");
    store
        .calls_push(&[again], bounds(10, 1 << 20), t + SECOND)
        .await
        .expect("store");
    let page = store
        .calls_page(&filter(10), t + 2 * SECOND)
        .await
        .expect("store");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].1, first.entry);
    // Past its expiry it is neither listed nor found, before any eviction.
    let later = t + CALL_TTL;
    assert!(store
        .calls_page(&filter(10), later)
        .await
        .expect("store")
        .entries
        .is_empty());
    assert_eq!(store.calls_get("c4-a", later).await.expect("store"), None);
}

pub async fn quota_units_are_taken_only_while_they_fit(store: impl Store) {
    let end = T0 + 3600 * SECOND;
    let take = |units| store.quota_take_units("s16:q", 10, units, end, T0);
    let d = take(6).await.expect("store");
    assert_eq!((d.allowed, d.used, d.remaining), (true, 6, 4));
    // 5 more do not fit in the 4 left: refused, nothing taken.
    let d = take(5).await.expect("store");
    assert_eq!((d.allowed, d.used, d.remaining), (false, 6, 4));
    let d = take(4).await.expect("store");
    assert_eq!((d.allowed, d.used, d.remaining), (true, 10, 0));
    // Nothing left: even a free call is refused.
    assert!(!take(0).await.expect("store").allowed);
    assert_eq!(store.quota_peek("s16:q", end, T0).await.expect("store"), 10);
    // A free call takes nothing while there is room, and creates nothing.
    let d = store
        .quota_take_units("s16:free", 10, 0, end, T0)
        .await
        .expect("store");
    assert_eq!((d.allowed, d.used), (true, 0));
    // More than the whole limit never fits.
    let d = store
        .quota_take_units("s16:big", 10, 11, end, T0)
        .await
        .expect("store");
    assert!(!d.allowed);
    assert_eq!(
        store.quota_peek("s16:big", end, T0).await.expect("store"),
        0
    );
}

pub async fn quota_settles_add_and_give_back_units(store: impl Store) {
    let end = T0 + 3600 * SECOND;
    store
        .quota_take_units("s17:q", 100, 10, end, T0)
        .await
        .expect("store");
    // The upstream reported 3 units for a call that declared 10.
    let used = store
        .quota_settle("s17:q", -7, end, T0)
        .await
        .expect("store");
    assert_eq!(used, 3);
    // One that declared 10 and reported 150: past the limit, charged.
    store
        .quota_take_units("s17:q", 100, 10, end, T0)
        .await
        .expect("store");
    let used = store
        .quota_settle("s17:q", 140, end, T0)
        .await
        .expect("store");
    assert_eq!(used, 153);
    assert!(
        !store
            .quota_take_units("s17:q", 100, 1, end, T0)
            .await
            .expect("store")
            .allowed
    );
    // Giving back more than was counted stops at zero.
    let used = store
        .quota_settle("s17:q", -1000, end, T0)
        .await
        .expect("store");
    assert_eq!(used, 0);
    assert_eq!(store.quota_peek("s17:q", end, T0).await.expect("store"), 0);
    // A negative settle never creates a counter; a positive one does.
    let none = store
        .quota_settle("s17:new", -5, end, T0)
        .await
        .expect("store");
    assert_eq!(none, 0);
    let some = store
        .quota_settle("s17:new", 5, end, T0)
        .await
        .expect("store");
    assert_eq!(some, 5);
    assert_eq!(
        store.quota_peek("s17:new", end, T0).await.expect("store"),
        5
    );
}

pub async fn quota_units_start_over_in_a_new_period(store: impl Store) {
    let end = T0 + 3600 * SECOND;
    store
        .quota_take_units("s18:q", 10, 10, end, T0)
        .await
        .expect("store");
    let next = end + 3600 * SECOND;
    let d = store
        .quota_take_units("s18:q", 10, 4, next, end)
        .await
        .expect("store");
    assert_eq!((d.allowed, d.used, d.remaining), (true, 4, 6));
    // A settle of the old period, arriving after it ended, changes nothing.
    store
        .quota_settle("s18:q", 50, end, end + SECOND)
        .await
        .expect("store");
    assert_eq!(
        store.quota_peek("s18:q", next, end).await.expect("store"),
        4
    );
}

fn session<'a>(owner: &'a str, id: &'a str) -> SessionKey<'a> {
    SessionKey { owner, id }
}

pub async fn sessions_are_found_only_through_their_owner(store: impl Store) {
    let idle = 60 * SECOND;
    let alice = session("s16-alice", "a1");
    assert!(store
        .session_open(alice, "2025-06-18", 4, idle, T0)
        .await
        .expect("store"));
    assert_eq!(
        store
            .session_touch(alice, idle, T0 + SECOND)
            .await
            .expect("store"),
        Some("2025-06-18".to_string())
    );
    let stolen = session("s16-mallory", "a1");
    assert_eq!(
        store
            .session_touch(stolen, idle, T0 + SECOND)
            .await
            .expect("store"),
        None
    );
    assert!(!store
        .session_close(stolen, idle, T0 + SECOND)
        .await
        .expect("store"));
    assert!(store
        .session_close(alice, idle, T0 + SECOND)
        .await
        .expect("store"));
    assert_eq!(
        store
            .session_touch(alice, idle, T0 + SECOND)
            .await
            .expect("store"),
        None
    );
    assert!(!store
        .session_close(alice, idle, T0 + SECOND)
        .await
        .expect("store"));
}

pub async fn sessions_idle_out_and_use_keeps_them(store: impl Store) {
    let idle = 60 * SECOND;
    let used = session("s17-owner", "used");
    let unused = session("s17-owner", "unused");
    for s in [used, unused] {
        store
            .session_open(s, "v", 4, idle, T0)
            .await
            .expect("store");
    }
    for t in [50, 100] {
        let at = T0 + t * SECOND;
        let got = store.session_touch(used, idle, at).await.expect("store");
        assert_eq!(got.as_deref(), Some("v"), "at {t}s");
    }
    let at = T0 + 100 * SECOND;
    assert_eq!(
        store.session_touch(unused, idle, at).await.expect("store"),
        None
    );
    // Exactly `idle` after the last use, it is gone.
    let at = T0 + 160 * SECOND;
    assert_eq!(
        store.session_touch(used, idle, at).await.expect("store"),
        None
    );
}

pub async fn an_owner_at_its_cap_drops_its_own_least_recently_used_session(store: impl Store) {
    let idle = 600 * SECOND;
    let other = session("s18-other", "keep");
    store
        .session_open(other, "o", 2, idle, T0)
        .await
        .expect("store");
    let open = |id: &'static str, at: Nanos| {
        store.session_open(session("s18-flood", id), "f", 2, idle, at)
    };
    open("a", T0 + SECOND).await.expect("store");
    open("b", T0 + 2 * SECOND).await.expect("store");
    // `a` is used again, so `b` is now the least recently used.
    let a = session("s18-flood", "a");
    let got = store.session_touch(a, idle, T0 + 3 * SECOND).await;
    assert!(got.expect("store").is_some());
    open("c", T0 + 4 * SECOND).await.expect("store");
    let at = T0 + 10 * SECOND;
    let touch = |s: SessionKey<'static>| store.session_touch(s, idle, at);
    assert!(touch(session("s18-flood", "b"))
        .await
        .expect("store")
        .is_none());
    assert!(touch(session("s18-flood", "a"))
        .await
        .expect("store")
        .is_some());
    assert!(touch(session("s18-flood", "c"))
        .await
        .expect("store")
        .is_some());
    // A hundred more from the flooding owner leave the other owner's be.
    for i in 0..100u64 {
        let id = format!("x{i}");
        store
            .session_open(session("s18-flood", &id), "f", 2, idle, at + i)
            .await
            .expect("store");
    }
    assert_eq!(touch(other).await.expect("store").as_deref(), Some("o"));
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
