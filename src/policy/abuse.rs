//! Abuse blocking: ban an IP after too many watched responses, or at once
//! for a blocked user agent or path.
//!
//! ```yaml
//! scanner-trap:
//!   type: abuse
//!   watch: [401, 403, 404, 429]   # statuses that count against a caller
//!   threshold: 20                 # the 20th within `window` bans
//!   window: 1m
//!   ban: 15m
//!   block_user_agents: ["(?i)sqlmap|nikto|masscan"]
//!   block_paths: ["^/wp-(admin|login)", "\\.php$", "^/\\.env"]
//!   ipv6_prefix: 64               # IPv6 callers are grouped by this prefix
//!   watch_authenticated: false    # count only answers to unauthenticated calls
//! ```
//!
//! The key is the client IP (an IPv6 address grouped by `ipv6_prefix`, as
//! one subscriber usually holds a whole /64). A banned key is answered
//! 403 `banned` with `Retry-After` before anything else runs: one store
//! lookup per request. A request matching `block_user_agents` or
//! `block_paths` bans its key at once. Otherwise the answer's status is
//! watched on the way out; the `threshold`-th watched answer within
//! `window` (a fixed window from the first) bans the key for `ban`. The
//! ban's reason names the authenticated client when there was one, so the
//! admin API shows who was behind the address. With
//! `watch_authenticated: false`, answers to a call that authenticated are
//! not counted: a known client's upstream 404s and its 429s are its own
//! business (its limits and keys govern it), while failed authentication
//! and probes of unrouted paths (judged before any auth) still count.
//!
//! As a gateway-wide policy it also judges requests that matched no route
//! (`stack::build_unrouted`): a scanner's 404s count like any others.
//! `report_only`: nothing is banned and nobody is refused. A would-be ban
//! is logged and noted (`would_reject: banned`) on the request that would
//! have imposed it: one matching a block list, or a watched answer at or
//! past the threshold. (No ban is stored, so the requests such a ban would
//! then have refused are not counted.)
//!
//! Memory is capped however many addresses call (the memory store's
//! tables, `state::memory`): while the counters' table is full of live
//! windows, the watched answers of addresses it has no room for are
//! counted together on one shared counter per `window`, so a flood from
//! many addresses reaches the threshold sooner, never later; and a new ban
//! replaces the soonest-ending of a few sampled ones.

use http::Response;
use regex::bytes::RegexSet;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{CompileCx, IpGroup, PolicyMeta, Saved, Stage, Step};
use crate::body::Body;
use crate::clock::{Nanos, SharedClock};
use crate::config::units::ConfigDuration;
use crate::context::RequestContext;
use crate::problem::{Code, Reject, RejectedWith};
use crate::state::{self, AnyStore, Ban, Store, StoreErrorMode, SECOND};

/// `type: abuse` — bans a client IP after too many watched answers within `window`, or at once
/// for a blocked user agent or path; a banned IP gets 403 `banned` with `Retry-After`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbuseConfig {
    /// Response statuses that count against a caller (default `[401, 403, 404, 429]`).
    #[serde(default = "default_watch")]
    pub watch: Vec<u16>,
    /// The watched answer that bans: the `threshold`-th within `window` (default `20`).
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// The counting window, fixed from the first watched answer (default `1m`).
    #[serde(default = "default_window")]
    pub window: ConfigDuration,
    /// How long a ban lasts (default `15m`).
    #[serde(default = "default_ban")]
    pub ban: ConfigDuration,
    /// Regexes of `User-Agent`s banned at once, e.g. `["(?i)sqlmap|nikto|masscan"]`.
    #[serde(default)]
    pub block_user_agents: Vec<String>,
    /// Regexes of request paths banned at once, e.g. `["^/wp-(admin|login)", "\\.php$"]`.
    #[serde(default)]
    pub block_paths: Vec<String>,
    /// IPv6 callers are grouped by this prefix length (default `64`: one subscriber's /64 is one
    /// key).
    #[serde(default = "super::default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Whether answers to authenticated calls count (default `true`);
    /// `false` counts only what anonymous callers and failed
    /// authentication got.
    #[serde(default = "default_watch_authenticated")]
    pub watch_authenticated: bool,
}

fn default_watch_authenticated() -> bool {
    true
}

fn default_watch() -> Vec<u16> {
    vec![401, 403, 404, 429]
}
fn default_threshold() -> u32 {
    20
}
fn default_window() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(60))
}
fn default_ban() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(15 * 60))
}

/// A compiled `abuse` policy.
#[derive(Debug)]
pub struct Abuse {
    meta: Arc<PolicyMeta>,
    /// One bit per status code 0..=639: a watched status is a bit test.
    watch: [u64; 10],
    threshold: u64,
    window: Nanos,
    ban: Nanos,
    block_user_agents: Option<RegexSet>,
    block_paths: Option<RegexSet>,
    ipv6_prefix: u8,
    watch_authenticated: bool,
    store: AnyStore,
    clock: SharedClock,
    on_error: StoreErrorMode,
}

impl PolicyKind for AbuseConfig {
    const TYPE: &'static str = "abuse";
    const SCHEMA_NAME: &'static str = "AbusePolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }

    fn refusals(&self) -> &'static [Code] {
        &[Code::Banned]
    }
}

fn compile(
    config: &AbuseConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    let mut ok = true;
    let mut watch = [0u64; 10];
    for (i, &status) in config.watch.iter().enumerate() {
        if (100..=599).contains(&status) {
            watch[usize::from(status / 64)] |= 1 << (status % 64);
        } else {
            cx.error(
                &["watch", &i.to_string()],
                format!("{status} is not an HTTP status (100-599)"),
            );
            ok = false;
        }
    }
    if config.threshold == 0 {
        cx.error(&["threshold"], "the threshold is at least 1");
        ok = false;
    }
    let nanos = |d: &ConfigDuration| d.0.as_nanos().min(u128::from(u64::MAX)) as Nanos;
    let (window, ban) = (nanos(&config.window), nanos(&config.ban));
    if window == 0 {
        cx.error(&["window"], "the window must be longer than zero");
        ok = false;
    }
    if ban == 0 {
        cx.error(&["ban"], "the ban must be longer than zero");
        ok = false;
    }
    ok &= super::check_ipv6_prefix(config.ipv6_prefix, cx);
    let block_user_agents = regex_set(&config.block_user_agents, "block_user_agents", cx);
    let block_paths = regex_set(&config.block_paths, "block_paths", cx);
    let (Ok(block_user_agents), Ok(block_paths), true) = (block_user_agents, block_paths, ok)
    else {
        return None;
    };
    let policy = Arc::new(Abuse {
        meta: meta.clone(),
        watch,
        threshold: u64::from(config.threshold),
        window,
        ban,
        block_user_agents,
        block_paths,
        ipv6_prefix: config.ipv6_prefix,
        watch_authenticated: config.watch_authenticated,
        store: cx.store.clone(),
        clock: cx.clock.clone(),
        on_error: StoreErrorMode::new(cx.config.state.on_store_error),
    });
    Some(vec![Stage::new(
        super::Phase::Screen,
        meta,
        Step::Abuse(policy),
    )])
}

/// Compiles the patterns once into one set (one pass per request), each
/// checked alone first so an error names its index.
fn regex_set(
    patterns: &[String],
    field: &str,
    cx: &mut CompileCx<'_>,
) -> Result<Option<RegexSet>, ()> {
    let mut ok = true;
    for (i, p) in patterns.iter().enumerate() {
        if let Err(e) = regex::bytes::Regex::new(p) {
            cx.error(&[field, &i.to_string()], format!("not a valid regex: {e}"));
            ok = false;
        }
    }
    if !ok {
        return Err(());
    }
    if patterns.is_empty() {
        return Ok(None);
    }
    RegexSet::new(patterns).map(Some).map_err(|e| {
        cx.error(
            &[field],
            format!("the patterns do not compile together: {e}"),
        );
    })
}

// === impl Abuse ===

impl Abuse {
    fn watches(&self, status: u16) -> bool {
        status < 640 && self.watch[usize::from(status / 64)] & (1 << (status % 64)) != 0
    }

    /// Before the call: `Err` refuses it (banned now or already).
    async fn screen(
        &self,
        parts: &http::request::Parts,
        cx: &RequestContext,
        key: &str,
    ) -> Result<(), Reject> {
        let now = self.clock.now();
        match self.store.ban_get(key, now).await {
            Ok(Some(ban)) => return Err(self.refuse(&ban, now)),
            Ok(None) => {}
            Err(error) => return self.on_error.handle(&self.meta.name, &error, now),
        }
        let blocked =
            |set: &Option<RegexSet>, value: &[u8]| set.as_ref().is_some_and(|s| s.is_match(value));
        let user_agent = parts
            .headers
            .get(http::header::USER_AGENT)
            .map_or(&b""[..], |v| v.as_bytes());
        let reason = if blocked(&self.block_paths, parts.uri.path().as_bytes()) {
            "blocked path"
        } else if blocked(&self.block_user_agents, user_agent) {
            "blocked user agent"
        } else {
            return Ok(());
        };
        let ban = Ban {
            reason: format!("{reason} `{}`{}", parts.uri.path(), client_note(Some(cx))),
            until: now.saturating_add(self.ban),
        };
        self.impose(key, ban.clone(), now).await;
        Err(self.refuse(&ban, now))
    }

    /// The refusal of a banned caller (report-only: the pipeline notes it
    /// as a would-be `banned` and lets the call on).
    fn refuse(&self, ban: &Ban, now: Nanos) -> Reject {
        Reject::new(Code::Banned, "this address is banned for a while")
            .with_retry_after(state::ceil_secs(ban.until.saturating_sub(now)))
    }

    /// Sets a ban (report-only: only logs it).
    async fn impose(&self, key: &str, ban: Ban, now: Nanos) {
        if self.meta.report_only {
            tracing::info!(
                policy = &*self.meta.name,
                key,
                reason = ban.reason,
                "report-only abuse policy would ban"
            );
            return;
        }
        tracing::warn!(
            policy = &*self.meta.name,
            key,
            reason = ban.reason,
            "banned"
        );
        if let Err(error) = self.store.ban_set(key, ban, now).await {
            tracing::warn!(policy = &*self.meta.name, %error, "could not store a ban");
        }
    }

    /// After the call: counts a watched status, bans at the threshold;
    /// whether this answer reached it. (Takes the status and context, not
    /// the response: a body is not `Sync`, so a reference to it cannot live
    /// across the store call.)
    async fn watch_answer(&self, key: &str, status: u16, client: Option<Arc<str>>) -> bool {
        if !self.watches(status) {
            return false;
        }
        let now = self.clock.now();
        let count = match self.store.hit(key, self.window, now).await {
            Ok(count) => count,
            Err(error) => {
                // Nothing to refuse any more: the answer is already made.
                let _ = self.on_error.handle(&self.meta.name, &error, now);
                return false;
            }
        };
        let reached = count >= self.threshold;
        if reached {
            let ban = Ban {
                reason: format!(
                    "{count} watched answers within {}s, the last {status}{}",
                    self.window.div_ceil(SECOND),
                    match client {
                        Some(id) => format!(" (client {id})"),
                        None => String::new(),
                    },
                ),
                until: now.saturating_add(self.ban),
            };
            self.impose(key, ban, now).await;
        }
        reached
    }
}

/// ` (client hr-portal)` when the call was authenticated.
fn client_note(cx: Option<&RequestContext>) -> String {
    match cx.and_then(|cx| cx.client.as_ref()) {
        Some(client) => format!(" (client {})", client.id),
        None => String::new(),
    }
}

// === the stage ===

impl Abuse {
    /// The request half: a banned caller, or one that just gave itself
    /// away, is refused. The key is kept to count the answer, whoever
    /// makes it (a report-only refusal lets the call on, and its answer
    /// still counts).
    pub(crate) async fn before(
        &self,
        parts: &http::request::Parts,
        cx: &RequestContext,
        saved: &mut Saved,
    ) -> Result<(), Reject> {
        let group = IpGroup::of(cx.client_ip, self.ipv6_prefix);
        let key = state::key(&self.meta.name, format_args!("{group}"));
        let verdict = self.screen(parts, cx, &key).await;
        *saved = Saved::AbuseKey(key);
        verdict
    }

    /// The response half: counts a watched status, whoever answered, but
    /// for this policy's own refusal (a banned caller retrying does not
    /// lengthen its ban).
    pub(crate) async fn after(
        &self,
        response: &mut Response<Body>,
        cx: &mut RequestContext,
        key: &str,
    ) {
        let own = response
            .extensions()
            .get::<RejectedWith>()
            .is_some_and(|r| r.policy.as_deref() == Some(&*self.meta.name));
        let status = response.status().as_u16();
        if own || !self.watches(status) {
            return;
        }
        let client = cx.client.as_ref().map(|c| c.id.clone());
        if client.is_some() && !self.watch_authenticated {
            return;
        }
        let reached = self.watch_answer(key, status, client).await;
        // Report-only: the answer that would have imposed the ban is the
        // one counted and logged as a would-be `banned`.
        if reached && self.meta.report_only {
            cx.would_reject.push((self.meta.name.clone(), Code::Banned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::policy::testing::{compile_policies, echo_terminal, request};
    use tower::ServiceExt;

    #[test]
    fn bad_patterns_statuses_and_prefixes_are_config_errors() {
        let clock: SharedClock = ManualClock::new(0);
        let errors = compile_policies(
            "version: 1\nlisten: 127.0.0.1:0\n",
            "a: {type: abuse, watch: [404, 700], threshold: 0, ipv6_prefix: 129, \
             block_paths: ['ok', '(unclosed']}",
            &AnyStore::memory(),
            &clock,
        )
        .err()
        .expect("errors");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| e.starts_with("block_paths.1: not a valid regex")));
        assert!(errors.iter().any(|e| e.starts_with("watch.1:")));
    }

    #[tokio::test]
    async fn report_only_abuse_never_bans() {
        let clock = ManualClock::new(1_000 * SECOND);
        let shared: SharedClock = clock.clone();
        let store = AnyStore::memory();
        let policies = compile_policies(
            "version: 1\nlisten: 127.0.0.1:0\n",
            "trap: {type: abuse, threshold: 2, report_only: true, block_paths: ['^/x']}",
            &store,
            &shared,
        )
        .expect("compiles");
        let svc = crate::stack::build(&policies, echo_terminal(404));
        for i in 0..5 {
            let r = svc
                .clone()
                .oneshot(request(None))
                .await
                .expect("infallible");
            assert_eq!(r.status(), 404);
            // From the threshold (the 2nd watched answer) on, each answer
            // is a would-be ban.
            let cx = r.extensions().get::<RequestContext>().expect("cx");
            let noted: Vec<_> = cx.would_reject.iter().map(|(p, c)| (&**p, *c)).collect();
            let expected = if i >= 1 {
                vec![("trap", Code::Banned)]
            } else {
                vec![]
            };
            assert_eq!(noted, expected, "call {i}");
        }
        let bans = store.ban_list(clock.now()).await.expect("store");
        assert!(bans.is_empty(), "{bans:?}");
    }

    #[test]
    fn watched_statuses_are_a_bit_test() {
        let clock: SharedClock = ManualClock::new(0);
        let policies = compile_policies(
            "version: 1\nlisten: 127.0.0.1:0\n",
            "a: {type: abuse, watch: [401, 599, 100]}",
            &AnyStore::memory(),
            &clock,
        );
        assert!(policies.is_ok());
        let mut w = [0u64; 10];
        for s in [401u16, 599, 100] {
            w[usize::from(s / 64)] |= 1 << (s % 64);
        }
        let abuse = Abuse {
            meta: Arc::new(PolicyMeta {
                name: "a".into(),
                type_name: "abuse",
                report_only: false,
            }),
            watch: w,
            threshold: 1,
            window: 1,
            ban: 1,
            block_user_agents: None,
            block_paths: None,
            ipv6_prefix: 64,
            watch_authenticated: true,
            store: AnyStore::memory(),
            clock,
            on_error: StoreErrorMode::new(Default::default()),
        };
        assert!(abuse.watches(401) && abuse.watches(599) && abuse.watches(100));
        assert!(!abuse.watches(404) && !abuse.watches(200) && !abuse.watches(639));
    }
}
