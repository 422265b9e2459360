//! Many gateways on Redis Cluster and on Sentinel (DESIGN §8, issue #20):
//! each test starts its own servers on 127.0.0.1 (a 3-master, 3-replica
//! cluster, or a master, a replica and three sentinels) and gateways with
//! separate `Deps`, as separate processes would have. The failover tests
//! kill a master under load and check what callers saw: nothing waited past
//! the store deadline, `fail_closed` answered 503 and `fail_open` let calls
//! through while no master answered, and once the replica was promoted the
//! limits were exact again. They print the window's numbers (the README's
//! "Many instances on Redis Cluster / Sentinel" quotes them).

use crate::common::redis_server::{RedisCluster, RedisSentinels, RedisServer, SENTINEL_MASTER};
use crate::common::*;
use futures_util::future::join_all;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::clock::{Clock, SystemClock};
use tollgate::gateway::Deps;
use tollgate::state::redis::{RedisAccess, RedisTarget};
use tollgate::state::{Ban, RedisStore, Store};

/// The store deadline of the failover tests.
const DEADLINE: Duration = Duration::from_millis(100);
/// What a call may take beyond the store deadline: the proxying itself and
/// this test process's own scheduling, on a 2-core machine that runs
/// builds and the other tests beside it (alone, the slowest call stays
/// under the deadline; the README quotes those runs).
const SLACK: Duration = Duration::from_millis(400);

/// A gateway config over `upstream` whose operation `/t/{name}` applies
/// only the named policy, for each `(name, definition)` in `policies`.
fn config(upstream: &str, state: &str, policies: &[(String, &str)]) -> String {
    let defs: String = policies
        .iter()
        .map(|(name, def)| format!("  {name}: {def}\n"))
        .collect();
    let ops: String = policies
        .iter()
        .map(|(name, _)| {
            format!("      - {{id: op-{name}, method: GET, path: /{name}, apply: [{name}]}}\n")
        })
        .collect();
    format!(
        "version: 1\nlisten: 127.0.0.1:0\nstate: {state}\npolicies:\n{defs}\
         apis:\n  - name: t\n    base_path: /t\n    upstream: {upstream}\n    operations:\n{ops}"
    )
}

/// `state:` for a cluster, with the store deadline `timeout`.
fn on_cluster(cluster: &RedisCluster, mode: &str, timeout: Duration) -> String {
    format!(
        "{{store: redis, redis: {{cluster: [{}]}}, timeout: {}ms, on_store_error: {mode}}}",
        cluster.urls().join(", "),
        timeout.as_millis()
    )
}

/// `state:` for the sentinels' master.
fn on_sentinels(setup: &RedisSentinels, mode: &str) -> String {
    format!(
        "{{store: redis, redis: {{sentinel: {{master: {SENTINEL_MASTER}, nodes: [{}]}}}}, \
         timeout: {}ms, on_store_error: {mode}}}",
        setup.sentinel_urls().join(", "),
        DEADLINE.as_millis()
    )
}

/// A policy name starting with `stem` whose `key: global` store key
/// (`NAME:global`, the hash tag) lands on a slot served by the master
/// `want` (any master, for `None`); with that master and slot.
async fn name_on(cluster: &RedisCluster, stem: &str, want: Option<usize>) -> (String, usize, u16) {
    for i in 0..1000 {
        let name = format!("{stem}{i}");
        let slot = cluster.keyslot(&format!("{name}:global")).await;
        let master = cluster.master_of(slot).await.expect("slot owner");
        if want.map_or(true, |w| w == master) {
            return (name, master, slot);
        }
    }
    panic!("no name on master {want:?}");
}

async fn instances(yaml: &str, n: usize) -> Vec<(Deps, TestGateway)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let deps = deps_for(yaml, SystemClock::shared());
        let gw = gateway_with_deps(yaml, &deps).await;
        out.push((deps, gw));
    }
    out
}

/// `calls` concurrent GETs of `path`, spread over the gateways: how many
/// got 200 and how many 429.
async fn burst(gws: &[&TestGateway], path: &str, calls: usize) -> (usize, usize) {
    let got = join_all((0..calls).map(|i| gws[i % gws.len()].get(path))).await;
    let count = |s: u16| got.iter().filter(|g| g.status.as_u16() == s).count();
    (count(200), count(429))
}

#[tokio::test]
async fn three_gateways_admit_exactly_the_limit_on_every_master_of_a_cluster() {
    let cluster = RedisCluster::start().await;
    let up = Upstream::start().await;
    // One limit per master, so all three masters decide.
    let mut policies = Vec::new();
    let mut masters = Vec::new();
    for i in 0..1000 {
        let (name, master, _) = name_on(&cluster, &format!("m{i}x"), None).await;
        if !masters.contains(&master) {
            masters.push(master);
            policies.push((
                name,
                "{type: rate_limit, limit: 5, window: 1h, key: global}",
            ));
        }
        if policies.len() == 3 {
            break;
        }
    }
    assert_eq!(policies.len(), 3, "three masters");
    // A deadline long enough for the first connection on a busy machine.
    let state = on_cluster(&cluster, "fail_closed", Duration::from_secs(2));
    let yaml = config(&up.url(), &state, &policies);
    let gws = instances(&yaml, 3).await;
    let gws: Vec<&TestGateway> = gws.iter().map(|(_, gw)| gw).collect();
    for (name, _) in &policies {
        let got = burst(&gws, &format!("/t/{name}"), 30).await;
        assert_eq!(got, (5, 25), "{name}");
    }
    assert_eq!(up.count(), 15);
    // Each limit's key sits on its master, under its hash tag.
    let keys = cluster.all_keys().await;
    for (name, _) in &policies {
        let key = format!("tollgate:gcra:{{{name}:global}}");
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
}

#[tokio::test]
async fn keys_of_one_decision_share_one_slot_and_listings_cover_every_master() {
    let cluster = RedisCluster::start().await;
    let target = RedisTarget::Cluster(cluster.urls());
    let store = RedisStore::connect_to(
        &target,
        &RedisAccess::default(),
        Duration::from_secs(2),
        "tollgate",
    )
    .expect("cluster store");
    let now = SystemClock::new().now();
    let hour = 3_600_000_000_000;
    let subjects: Vec<String> = (0..24).map(|i| format!("p:client:c{i}")).collect();
    for key in &subjects {
        // Every kind of key, and two quota periods, for one trait key.
        let rule = tollgate::state::GcraRule::new(5, hour, 5);
        assert!(
            store
                .gcra(key, rule, now, true)
                .await
                .expect("gcra")
                .allowed
        );
        for period_end in [now + hour, now + 2 * hour] {
            let taken = store
                .quota_take(key, 3, period_end, now)
                .await
                .expect("quota");
            assert!(taken.allowed);
        }
        store.hit(key, hour, now).await.expect("hit");
        let ban = Ban {
            reason: "test".into(),
            until: now + hour,
        };
        store.ban_set(key, ban, now).await.expect("ban");
        store.usage_add(key, &[("calls", 1)]).await.expect("usage");
    }
    let listed = store.usage_list().await.expect("usage_list");
    let keys = cluster.all_keys().await;
    // 24 × (gcra, two quota periods, hit, ban, usage).
    assert_eq!(keys.len(), 24 * 6, "{keys:?}");
    let mut masters = std::collections::BTreeSet::new();
    for subject in &subjects {
        let tag = format!("{{{subject}}}");
        let mine: Vec<&String> = keys.iter().filter(|k| k.contains(&tag)).collect();
        assert_eq!(mine.len(), 6, "{subject}: {mine:?}");
        let slot = cluster.keyslot(subject).await;
        for key in mine {
            assert_eq!(cluster.keyslot(key).await, slot, "{key}");
        }
        masters.insert(cluster.master_of(slot).await);
    }
    assert_eq!(masters.len(), 3, "keys spread over every master");
    // Listings scan every master.
    let bans = store.ban_list(now).await.expect("ban_list");
    let banned: Vec<&String> = bans.iter().map(|(k, _)| k).collect();
    let mut want: Vec<&String> = subjects.iter().collect();
    want.sort();
    assert_eq!(banned, want);
    let mut usage: Vec<(String, Vec<(String, u64)>)> =
        listed.into_iter().map(|u| (u.subject, u.counts)).collect();
    usage.sort();
    assert_eq!(usage.len(), 24, "{usage:?}");
    assert!(usage.iter().all(|(_, c)| c == &[("calls".to_string(), 1)]));
}

/// One call's outcome, timed.
struct Sample {
    started: Instant,
    took: Duration,
    status: u16,
    code: Option<String>,
}

/// `workers` callers per gateway, each calling `path` every 5 ms until
/// stopped: a steady load through a failover.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(usize, Sample)>>>,
}

impl Load {
    fn start(gws: &[Arc<TestGateway>], path: &str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (g, gw) in gws.iter().enumerate() {
            for _ in 0..workers {
                let (gw, stop, path) = (gw.clone(), stop.clone(), path.to_string());
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut tick = tokio::time::interval(Duration::from_millis(5));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let started = Instant::now();
                        let got = gw.get(&path).await;
                        let code = (got.status != 200)
                            .then(|| got.json()["code"].as_str().map(str::to_string))
                            .flatten();
                        out.push((
                            g,
                            Sample {
                                started,
                                took: started.elapsed(),
                                status: got.status.as_u16(),
                                code,
                            },
                        ));
                    }
                    out
                }));
            }
        }
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<(usize, Sample)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for task in self.tasks {
            out.extend(task.await.expect("load task"));
        }
        out.sort_by_key(|(_, s)| s.started);
        out
    }
}

/// Until every gateway's call of `path` is limited again (429): the
/// store decides once more.
async fn until_limited(gws: &[Arc<TestGateway>], path: &str) {
    crate::common::redis_server::settle("limits decided again", || async {
        for gw in gws {
            if gw.get(path).await.status != 429 {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Until every replica of `master` has everything the master has written
/// so far (its own `slave_repl_offset` has reached the master's
/// `master_repl_offset`), so the used-up limit survives the kill.
/// Replication is asynchronous: a kill right after a write may lose it,
/// and the promoted replica then admits those calls again (the README
/// states that bound); these tests measure the failover itself.
async fn replicated(master: &RedisServer) {
    let field = |info: &str, name: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    let info: String = master
        .query(&["INFO", "replication"])
        .await
        .expect("INFO replication");
    let written = field(&info, "master_repl_offset").expect("master_repl_offset");
    // `slaveN:ip=...,port=...,state=...,offset=...`
    let replicas: Vec<std::net::SocketAddr> = info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains("ip="))
        .filter_map(|l| {
            let kv = |k: &str| l.split([':', ',']).find_map(|p| p.strip_prefix(k));
            format!("{}:{}", kv("ip=")?, kv("port=")?).parse().ok()
        })
        .collect();
    assert!(!replicas.is_empty(), "no replica in {info}");
    crate::common::redis_server::settle("the replicas caught up", || async {
        for addr in &replicas {
            let info: String = crate::common::redis_server::query(*addr, &["INFO", "replication"])
                .await
                .ok()?;
            if field(&info, "slave_repl_offset")? < written {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// What the load through a failover saw, checked and printed: gateway 0
/// runs `fail_closed`, gateway 1 `fail_open`, both on a limit already used
/// up before the kill at `killed`.
fn judge(what: &str, samples: &[(usize, Sample)], killed: Instant, promoted: Duration) {
    let slowest = samples
        .iter()
        .map(|(_, s)| s.took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest <= DEADLINE + SLACK,
        "{what}: a call waited {slowest:?} (deadline {DEADLINE:?})"
    );
    let of = |g: usize| samples.iter().filter(move |(i, _)| *i == g).map(|(_, s)| s);
    // fail_closed: refused or limited, never let through over the limit.
    let mut refused = 0;
    for s in of(0) {
        match s.status {
            429 => assert_eq!(s.code.as_deref(), Some("rate_limited")),
            503 => {
                assert_eq!(s.code.as_deref(), Some("state_store_unavailable"));
                refused += 1;
            }
            other => panic!("{what}: fail_closed answered {other}"),
        }
    }
    assert!(refused > 0, "{what}: fail_closed never saw the outage");
    // fail_open: through (over the limit) during the window, else limited.
    let over = of(1).filter(|s| s.status == 200).count();
    assert!(over > 0, "{what}: fail_open never saw the outage");
    assert!(of(1).all(|s| s.status == 200 || s.status == 429));
    // The window: from the kill to the last call not decided by the store.
    let last_undecided = samples
        .iter()
        .filter(|(_, s)| s.status != 429)
        .map(|(_, s)| s.started + s.took)
        .max()
        .unwrap_or(killed);
    let window = last_undecided.saturating_duration_since(killed);
    let calls = samples
        .iter()
        .filter(|(_, s)| s.started >= killed && s.started <= last_undecided)
        .count();
    eprintln!(
        "{what}: promoted after {promoted:?}; decisions exact again {window:?} after the kill; \
         {calls} calls in the window, fail_closed refused {refused}, fail_open let {over} over \
         the limit; slowest call {slowest:?} (deadline {DEADLINE:?})"
    );
}

/// The limit `used` (3) is used up, then `failover` kills the master
/// under load and waits until the replica is promoted (returning when it
/// killed); then `fresh` (5, same master) must admit exactly 5 of 20
/// across both gateways. `states` are the `state:` blocks for
/// `fail_closed` and `fail_open`.
async fn failover_case<F, Fut>(
    what: &str,
    states: [String; 2],
    used: &str,
    fresh: &str,
    failover: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Instant>,
{
    let up = Upstream::start().await;
    let policies = [
        (
            used.to_string(),
            "{type: rate_limit, limit: 3, window: 1h, key: global}",
        ),
        (
            fresh.to_string(),
            "{type: rate_limit, limit: 5, window: 1h, key: global}",
        ),
    ];
    let mut gws = Vec::new();
    let mut all_deps = Vec::new();
    for state in &states {
        let yaml = config(&up.url(), state, &policies);
        let deps = deps_for(&yaml, SystemClock::shared());
        gws.push(Arc::new(gateway_with_deps(&yaml, &deps).await));
        all_deps.push(deps);
    }
    // Connected before the calls count: the first connection (slot map,
    // or asking the sentinels) may take longer than the deadline.
    for deps in &all_deps {
        crate::common::redis_server::settle("the store connected", || async {
            deps.store.ping().await.ok()
        })
        .await;
    }
    let path = format!("/t/{used}");
    let refs: Vec<&TestGateway> = gws.iter().map(|g| g.as_ref()).collect();
    assert_eq!(burst(&refs, &path, 10).await, (3, 7));
    let load = Load::start(&gws, &path, 2);
    let killed = failover().await;
    let promoted_after = killed.elapsed();
    until_limited(&gws, &path).await;
    let samples = load.finish().await;
    judge(what, &samples, killed, promoted_after);
    // Exact again on the promoted master: 5 of 20, across both gateways.
    let fresh_path = format!("/t/{fresh}");
    assert_eq!(
        burst(&refs, &fresh_path, 20).await,
        (5, 15),
        "{what}: after promotion"
    );
    drop(all_deps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_under_load_fails_per_mode_within_the_deadline_and_its_replica_takes_over(
) {
    let mut cluster = RedisCluster::start().await;
    let (used, master, slot) = name_on(&cluster, "used", None).await;
    let (fresh, _, _) = name_on(&cluster, "fresh", Some(master)).await;
    let states = ["fail_closed", "fail_open"].map(|mode| on_cluster(&cluster, mode, DEADLINE));
    failover_case("cluster", states, &used, &fresh, || async {
        // Let the load reach the store before the kill.
        tokio::task::yield_now().await;
        replicated(&cluster.nodes[master]).await;
        let killed = Instant::now();
        assert_eq!(cluster.kill_master_of(slot).await, master);
        cluster.wait_promoted(slot, master).await;
        killed
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_killed_under_load_fails_per_mode_within_the_deadline_and_its_replica_takes_over(
) {
    let mut setup = RedisSentinels::start().await;
    let states = ["fail_closed", "fail_open"].map(|mode| on_sentinels(&setup, mode));
    failover_case("sentinel", states, "used", "fresh", || async {
        tokio::task::yield_now().await;
        replicated(&setup.master).await;
        let killed = Instant::now();
        setup.master.stop().await;
        setup.wait_promoted().await;
        killed
    })
    .await;
}

/// `state` mistakes, each reported at its key as FILE:LINE:COL.
#[test]
fn state_forms_are_checked_at_load_with_file_line_and_column() {
    let errors = |state: &str| {
        let yaml = format!("version: 1\nlisten: 127.0.0.1:0\nstate:\n{state}\napis: []\n");
        match compile(
            std::path::Path::new("gw.yaml"),
            &yaml,
            SystemClock::shared(),
        ) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        }
    };
    assert_eq!(
        errors(
            "  store: redis\n  redis_url: redis://127.0.0.1:1\n  redis:\n    cluster: [redis://127.0.0.1:2]"
        ),
        ["gw.yaml:6:3: state.redis: give only one of `redis_url`, `redis.cluster` and `redis.sentinel`"]
    );
    assert_eq!(
        errors("  store: redis\n  redis:\n    cluster: [redis://127.0.0.1:2, 'http://127.0.0.1:3']"),
        ["gw.yaml:6:36: state.redis.cluster[1]: `http://127.0.0.1:3` is not a redis:// or rediss:// URL"]
    );
    assert_eq!(
        errors("  store: redis\n  redis:\n    cluster: [redis://127.0.0.1:2]\n    ca_file: ca.pem"),
        ["gw.yaml:7:5: state.redis.ca_file: `ca_file` is for rediss:// URLs, and none is given"]
    );
    assert_eq!(
        errors("  store: redis\n  redis:\n    sentinel: {master: '', nodes: []}"),
        [
            "gw.yaml:6:16: state.redis.sentinel.master: `master` must not be empty",
            "gw.yaml:6:28: state.redis.sentinel.nodes: list at least one sentinel",
        ]
    );
    assert_eq!(
        errors(
            "  store: redis\n  redis:\n    cluster: ['rediss://127.0.0.1:2', redis://127.0.0.1:3]\n    username_env: U"
        ),
        [
            "gw.yaml:5:3: state.redis: mix of redis:// and rediss:// URLs: use one scheme for every node",
            "gw.yaml:7:5: state.redis.username_env: an ACL user needs `password_env` too",
        ]
    );
    let unknown = errors("  store: redis\n  redis:\n    nodes: [redis://127.0.0.1:2]");
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].starts_with("gw.yaml:6:5: "), "{unknown:?}");
    assert!(unknown[0].contains("nodes"), "{unknown:?}");
    // Read when the store is built: an unset variable, named at its key.
    assert_eq!(
        errors(
            "  store: redis\n  redis_url: redis://127.0.0.1:1\n  redis:\n    password_env: TOLLGATE_TEST_UNSET_REDIS_PASSWORD"
        ),
        ["gw.yaml:7:5: state.redis.password_env: environment variable `TOLLGATE_TEST_UNSET_REDIS_PASSWORD` is not set (or empty)"]
    );
}
