//! Usage quotas per UTC calendar period, consumed only by forwarded calls.
//!
//! ```yaml
//! daily-quota:
//!   type: quota
//!   limit: 10000
//!   period: day       # hour | day | month (UTC calendar)
//!   key: client       # client | ip | global | header:X-User
//! ```
//!
//! The call takes one unit from the store before it is forwarded (one
//! atomic take, so concurrent calls can never overshoot the limit), and
//! gives it back if the answer was made by the gateway rather than the
//! upstream: refused by a later policy (request schema), or failed at the
//! proxy (502 `upstream_unavailable`, 504 `upstream_timeout`, 413). Any
//! answer the upstream itself gave — a 500 included — counts: the workflow
//! ran. Past the limit: 429 `quota_exceeded` with `Retry-After` until the
//! period ends; that refusal consumes nothing. (A caller that hangs up
//! before the answer keeps its unit used: the upstream may have run.)
//!
//! **Task units.** With `unit: tasks` the quota counts the task units calls
//! cost (an operation's `cost`, or what its upstream reports in
//! `cost_header`; see `crate::cost`) instead of calls — "10,000 tasks a
//! month":
//!
//! ```yaml
//! monthly-tasks:
//!   type: quota
//!   limit: 10000
//!   period: month
//!   unit: tasks       # calls (default) | tasks
//! ```
//!
//! Before the call only its declared cost is known: the call is admitted
//! while the period's remaining units are at least its declared cost (and
//! at least one), and that cost is taken at once, atomically. After the
//! answer the quota is settled with what the call actually cost: the
//! difference (reported − declared) is added or given back. A call may
//! therefore take the count past the limit (the work was done and is
//! charged); every later call is then refused until the period ends. A
//! call the gateway answered itself gives back all it took, as above.
//!
//! With `key: header:NAME`, an anonymous caller's calls also take from a
//! count per address shared by every value it sends, `anonymous_per_ip`
//! per period (default 10 × `limit`), as with `rate_limit`: inventing a
//! new value per call gains at most that.

use http::Response;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::rate_limit::{
    RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
use super::registry::PolicyKind;
use super::{CompileCx, LimitKey, PolicyMeta, Saved, Stage, Step};
use crate::body::Body;
use crate::calendar;
use crate::clock::{Nanos, SharedClock};
use crate::context::{RateLimitDecision, RequestContext};
use crate::problem::{Code, Reject, RejectedWith};
use crate::state::{self, AnyStore, Store, StoreErrorMode, SECOND};
use http::HeaderValue;

/// `type: quota` — a budget of calls (or task units) per UTC calendar period, taken only by
/// forwarded calls; past it 429 `quota_exceeded` with `Retry-After` until the period ends.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Calls (or task units, with `unit: tasks`) allowed per period, e.g. `10000`.
    pub limit: u64,
    /// The UTC calendar period the quota resets on: `hour`, `day` or `month`.
    pub period: QuotaPeriod,
    /// What the quota counts by: `client` (default; the IP when anonymous), `ip`, `global` or
    /// `header:NAME`.
    #[serde(default)]
    pub key: super::LimitKey,
    /// IPv6 callers counted by IP are grouped by this prefix.
    #[serde(default = "super::default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// With `key: header:NAME`: the calls per period one anonymous address
    /// may make whatever values it sends (default 10 × `limit`).
    #[serde(default)]
    pub anonymous_per_ip: Option<u64>,
    /// What the quota counts: `calls` (default), or the `tasks` units calls
    /// cost (`cost` / `cost_header` of the operation).
    #[serde(default)]
    pub unit: QuotaUnit,
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaUnit {
    /// One per forwarded call.
    #[default]
    Calls,
    /// The task units forwarded calls cost.
    Tasks,
}

impl QuotaUnit {
    /// The unit's name in config and usage reports.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaUnit::Calls => "calls",
            QuotaUnit::Tasks => "tasks",
        }
    }
}

/// UTC calendar periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// From the top of one UTC hour to the next.
    Hour,
    /// From one UTC midnight to the next.
    Day,
    /// From the first of one month (UTC) to the first of the next.
    Month,
}

/// A compiled `quota` policy.
#[derive(Debug)]
pub struct Quota {
    meta: Arc<PolicyMeta>,
    limit: u64,
    period: QuotaPeriod,
    key: LimitKey,
    ipv6_prefix: u8,
    /// `key: header:NAME`: the per-address count of anonymous callers.
    anonymous_per_ip: Option<u64>,
    unit: QuotaUnit,
    /// The name as a structured-field string, for the `RateLimit` headers.
    quoted_name: Arc<str>,
    store: AnyStore,
    clock: SharedClock,
    on_error: StoreErrorMode,
}

impl PolicyKind for QuotaConfig {
    const TYPE: &'static str = "quota";
    const SCHEMA_NAME: &'static str = "QuotaPolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }

    fn refusals(&self) -> &'static [Code] {
        &[Code::QuotaExceeded]
    }
}

fn compile(
    config: &QuotaConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    if config.limit == 0 {
        cx.error(&["limit"], "a quota allows at least 1 call per period");
        return None;
    }
    if !super::check_ipv6_prefix(config.ipv6_prefix, cx)
        | !super::rate_limit::check_anonymous_per_ip(&config.key, config.anonymous_per_ip, cx)
    {
        return None;
    }
    let anonymous_per_ip = match config.key {
        LimitKey::Header(_) => Some(
            config
                .anonymous_per_ip
                .unwrap_or(config.limit.saturating_mul(10)),
        ),
        _ => None,
    };
    let policy = Arc::new(Quota {
        meta: meta.clone(),
        limit: config.limit,
        period: config.period,
        key: config.key.clone(),
        ipv6_prefix: config.ipv6_prefix,
        anonymous_per_ip,
        unit: config.unit,
        quoted_name: super::rate_limit::sf_string(&meta.name).into(),
        store: cx.store.clone(),
        clock: cx.clock.clone(),
        on_error: StoreErrorMode::new(cx.config.state.on_store_error),
    });
    Some(vec![Stage::new(
        super::Phase::Quota,
        meta,
        Step::Quota(policy),
    )])
}

/// A unit taken for a call, to give back if the upstream never answered
/// (and the anonymous address's unit, if one was taken too).
pub struct Taken {
    key: String,
    address: Option<String>,
    period_end: Nanos,
    /// What was taken: 1 call, or the call's declared task units.
    units: u64,
}

// === impl Quota ===

impl Quota {
    /// Takes one unit: `Ok(Some)` taken, `Ok(None)` let through without
    /// taking (report-only over the limit, or the store failed open).
    async fn take(
        &self,
        headers: &http::HeaderMap,
        cx: &mut RequestContext,
    ) -> Result<Option<Taken>, Reject> {
        let key = self
            .key
            .store_key(&self.meta.name, self.ipv6_prefix, headers, cx);
        let now = self.clock.now();
        let period_end = period_end(self.period, now);
        let units = match self.unit {
            QuotaUnit::Calls => 1,
            QuotaUnit::Tasks => cx.operation.as_ref().map_or(1, |op| op.cost.declared),
        };
        let fail = |error| {
            self.on_error
                .handle(&self.meta.name, &error, now)
                .map(|()| None)
        };
        let address = self.anonymous_per_ip.and_then(|limit| {
            let key = super::rate_limit::anonymous_address_key(
                &self.key,
                &self.meta.name,
                self.ipv6_prefix,
                headers,
                cx,
            )?;
            Some((key, limit))
        });
        // The address's count is looked at first and taken from last, so a
        // call refused by either takes from neither.
        let mut allowed = true;
        if let Some((address, limit)) = &address {
            match self.store.quota_peek(address, period_end, now).await {
                Ok(used) => allowed = used < *limit && units <= *limit - used,
                Err(error) => return fail(error),
            }
        }
        if allowed {
            let d = match self
                .take_units(&key, self.limit, units, period_end, now)
                .await
            {
                Ok(d) => d,
                Err(error) => return fail(error),
            };
            allowed = d.allowed;
        }
        if allowed {
            let Some((address, limit)) = address else {
                return Ok(Some(Taken {
                    key,
                    address: None,
                    period_end,
                    units,
                }));
            };
            let d = match self
                .take_units(&address, limit, units, period_end, now)
                .await
            {
                Ok(d) => d,
                Err(error) => return fail(error),
            };
            if d.allowed {
                return Ok(Some(Taken {
                    key,
                    address: Some(address),
                    period_end,
                    units,
                }));
            }
            // Another call took the address's last unit meanwhile.
            let value = Taken {
                key: key.clone(),
                address: None,
                period_end,
                units,
            };
            self.refund(value).await;
        }
        if self.meta.report_only {
            tracing::info!(
                policy = &*self.meta.name,
                key,
                "report-only quota would refuse"
            );
            cx.would_reject
                .push((self.meta.name.clone(), Code::QuotaExceeded));
            return Ok(None);
        }
        let reset_secs = state::ceil_secs(period_end - now);
        let window_secs = (period_end - period_start(self.period, now)) / SECOND;
        let policy_header = format!("{};q={};w={window_secs}", self.quoted_name, self.limit);
        // The refusal describes this quota, whatever limit governed before:
        // an outer rate limit writes the decision closest to exhaustion.
        cx.record_rate_limit(RateLimitDecision {
            policy: self.meta.name.clone(),
            quoted_name: self.quoted_name.clone(),
            policy_header: HeaderValue::try_from(policy_header.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("\"?\"")),
            limit: self.limit,
            limit_header: self.limit.into(),
            remaining: 0,
            reset_secs,
            window_secs,
        });
        Err(Reject::new(
            Code::QuotaExceeded,
            "the quota for this period is used up; retry after the time in Retry-After",
        )
        .with_retry_after(reset_secs)
        .with_header(RATELIMIT_POLICY, policy_header)
        .with_header(
            RATELIMIT,
            format!("{};r=0;t={reset_secs}", self.quoted_name),
        )
        .with_header(X_RATELIMIT_LIMIT, self.limit)
        .with_header(X_RATELIMIT_REMAINING, 0u64)
        .with_header(X_RATELIMIT_RESET, reset_secs))
    }

    /// One call (the store's own `quota_take`), or `units` task units.
    async fn take_units(
        &self,
        key: &str,
        limit: u64,
        units: u64,
        period_end: Nanos,
        now: Nanos,
    ) -> Result<state::QuotaDecision, state::StoreError> {
        match self.unit {
            QuotaUnit::Calls => self.store.quota_take(key, limit, period_end, now).await,
            QuotaUnit::Tasks => {
                self.store
                    .quota_take_units(key, limit, units, period_end, now)
                    .await
            }
        }
    }

    /// Settles a task-unit take with what the call cost: adds (or gives
    /// back) the difference from what was taken.
    async fn settle(&self, taken: &Taken, cost: u64) {
        let delta = cost as i128 - taken.units as i128;
        let Ok(delta) = i64::try_from(delta) else {
            return;
        };
        if delta == 0 {
            return;
        }
        let now = self.clock.now();
        for key in std::iter::once(&taken.key).chain(taken.address.as_ref()) {
            if let Err(error) = self
                .store
                .quota_settle(key, delta, taken.period_end, now)
                .await
            {
                tracing::warn!(policy = &*self.meta.name, %error, "quota settle failed");
            }
        }
    }

    async fn refund(&self, taken: Taken) {
        if self.unit == QuotaUnit::Tasks {
            // Everything taken goes back: the call cost nothing.
            return self.settle(&taken, 0).await;
        }
        let now = self.clock.now();
        for key in std::iter::once(&taken.key).chain(taken.address.as_ref()) {
            if let Err(error) = self.store.quota_refund(key, taken.period_end, now).await {
                // Failing to give a unit back only ever errs against the
                // caller by one call; worth a log, not a refusal.
                tracing::warn!(policy = &*self.meta.name, %error, "quota refund failed");
            }
        }
    }
}

/// When the UTC calendar period holding `now` began (nanos since the epoch).
pub fn period_start(period: QuotaPeriod, now: Nanos) -> Nanos {
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;
    let secs = now / SECOND;
    let start_secs = match period {
        QuotaPeriod::Hour => secs / HOUR * HOUR,
        QuotaPeriod::Day => secs / DAY * DAY,
        QuotaPeriod::Month => {
            let (year, month, _) = calendar::civil_from_days((secs / DAY) as i64);
            calendar::days_from_civil(year, month, 1) as u64 * DAY
        }
    };
    start_secs.saturating_mul(SECOND)
}

/// When the UTC calendar period holding `now` ends (nanos since the epoch).
pub fn period_end(period: QuotaPeriod, now: Nanos) -> Nanos {
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;
    let secs = now / SECOND;
    let end_secs = match period {
        QuotaPeriod::Hour => (secs / HOUR + 1) * HOUR,
        QuotaPeriod::Day => (secs / DAY + 1) * DAY,
        QuotaPeriod::Month => {
            let (year, month, _) = calendar::civil_from_days((secs / DAY) as i64);
            let (year, month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            calendar::days_from_civil(year, month, 1) as u64 * DAY
        }
    };
    end_secs.saturating_mul(SECOND)
}

// === the stage ===

impl Quota {
    /// The request half: takes a unit, kept in `saved` to give back if
    /// the gateway ends up answering the call itself.
    pub(crate) async fn before(
        &self,
        headers: &http::HeaderMap,
        cx: &mut RequestContext,
        saved: &mut Saved,
    ) -> Result<(), Reject> {
        if let Some(taken) = self.take(headers, cx).await? {
            *saved = Saved::QuotaTaken(taken);
        }
        Ok(())
    }

    /// The response half: a call the upstream never answered (a refusal
    /// after this stage, an upstream failure) costs no quota; a quota of
    /// task units is settled with what the call cost.
    pub(crate) async fn after(
        &self,
        response: &mut Response<Body>,
        cx: &RequestContext,
        taken: Taken,
    ) {
        if response.extensions().get::<RejectedWith>().is_some() {
            self.refund(taken).await;
        } else if self.unit == QuotaUnit::Tasks {
            let cost = cx.units.unwrap_or(taken.units);
            self.settle(&taken, cost).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::policy::testing::{compile_policies, echo_terminal, request};
    use crate::policy::OperationService;
    use http::Request;
    use tower::ServiceExt;

    /// Nanos of a UTC date and time.
    fn at(y: i64, mo: i64, d: i64, h: u64, mi: u64, s: u64) -> Nanos {
        ((calendar::days_from_civil(y, mo, d) as u64 * 86_400) + h * 3600 + mi * 60 + s) * SECOND
    }

    #[test]
    fn months_end_on_the_first_of_the_next_month_across_leap_years() {
        let month = |t| period_end(QuotaPeriod::Month, t);
        assert_eq!(month(at(2024, 2, 29, 23, 59, 59)), at(2024, 3, 1, 0, 0, 0));
        assert_eq!(month(at(2023, 2, 28, 12, 0, 0)), at(2023, 3, 1, 0, 0, 0));
        assert_eq!(month(at(2100, 2, 28, 0, 0, 0)), at(2100, 3, 1, 0, 0, 0));
        assert_eq!(month(at(2000, 2, 29, 0, 0, 0)), at(2000, 3, 1, 0, 0, 0));
        assert_eq!(month(at(2024, 12, 31, 23, 59, 59)), at(2025, 1, 1, 0, 0, 0));
        assert_eq!(month(at(2024, 1, 31, 0, 0, 0)), at(2024, 2, 1, 0, 0, 0));
        assert_eq!(month(at(2024, 4, 30, 0, 0, 0)), at(2024, 5, 1, 0, 0, 0));
        // The first instant of a month belongs to that month.
        assert_eq!(month(at(2024, 3, 1, 0, 0, 0)), at(2024, 4, 1, 0, 0, 0));
    }

    #[test]
    fn periods_start_on_the_utc_boundary() {
        let t = at(2024, 2, 29, 13, 30, 5);
        assert_eq!(
            period_start(QuotaPeriod::Hour, t),
            at(2024, 2, 29, 13, 0, 0)
        );
        assert_eq!(period_start(QuotaPeriod::Day, t), at(2024, 2, 29, 0, 0, 0));
        assert_eq!(period_start(QuotaPeriod::Month, t), at(2024, 2, 1, 0, 0, 0));
    }

    #[test]
    fn hours_and_days_end_on_the_utc_boundary() {
        let t = at(2024, 12, 31, 23, 30, 0) + 1;
        assert_eq!(period_end(QuotaPeriod::Hour, t), at(2025, 1, 1, 0, 0, 0));
        assert_eq!(period_end(QuotaPeriod::Day, t), at(2025, 1, 1, 0, 0, 0));
        let t = at(2024, 6, 1, 0, 0, 0);
        assert_eq!(period_end(QuotaPeriod::Hour, t), at(2024, 6, 1, 1, 0, 0));
        assert_eq!(period_end(QuotaPeriod::Day, t), at(2024, 6, 2, 0, 0, 0));
    }

    async fn status_of(svc: &OperationService) -> u16 {
        let r = svc
            .clone()
            .oneshot(request(None))
            .await
            .expect("infallible");
        r.status().as_u16()
    }

    /// A request of an operation declaring `cost` units, whose stub
    /// upstream reports `reported` (or nothing).
    fn costly_request(cost: u64, reported: Option<u64>) -> Request<Body> {
        let mut req = request(None);
        if let Some(cx) = req.extensions_mut().get_mut::<RequestContext>() {
            cx.operation = Some(Arc::new(crate::context::OperationInfo {
                api: "a".into(),
                id: "run".into(),
                header_value: http::HeaderValue::from_static("run"),
                cost: crate::cost::TaskCost::new(cost, None, Default::default()),
            }));
        }
        if let Some(units) = reported {
            req.headers_mut().insert("x-report", units.into());
        }
        req
    }

    /// A terminal answering 200 with the units the request asks it to
    /// report, else the declared cost, as the proxy would.
    fn reporting_terminal() -> OperationService {
        OperationService::new(tower::service_fn(|req: Request<Body>| async move {
            let (parts, _) = req.into_parts();
            let cx = parts.extensions.get::<RequestContext>().cloned();
            let declared = cx
                .as_ref()
                .and_then(|c| c.operation.as_ref())
                .map_or(1, |o| o.cost.declared);
            let units = parts
                .headers
                .get("x-report")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(declared);
            let mut response = Response::new(crate::body::empty());
            if let Some(mut cx) = cx {
                cx.units = Some(units);
                response.extensions_mut().insert(cx);
            }
            Ok(response)
        }))
    }

    #[tokio::test]
    async fn a_task_quota_admits_by_declared_cost_and_settles_by_the_report() {
        let t0 = at(2024, 1, 1, 10, 0, 0);
        let clock = ManualClock::new(t0);
        let shared: SharedClock = clock.clone();
        let store = AnyStore::memory();
        let policies = compile_policies(
            "version: 1\nlisten: 127.0.0.1:0\n",
            "q: {type: quota, limit: 10, period: hour, key: global, unit: tasks}",
            &store,
            &shared,
        )
        .expect("compiles");
        let svc = crate::stack::build(&policies, reporting_terminal());
        let end = at(2024, 1, 1, 11, 0, 0);
        let used = || store.quota_peek("q:global", end, t0);
        let call = |cost, reported| {
            let svc = svc.clone();
            async move {
                let r = svc
                    .oneshot(costly_request(cost, reported))
                    .await
                    .expect("infallible");
                (r.status().as_u16(), r.headers().get("retry-after").cloned())
            }
        };
        // Declared 4, reported 2: 2 charged.
        assert_eq!(call(4, Some(2)).await.0, 200);
        assert_eq!(used().await.expect("store"), 2);
        // Declared 4 (fits in 8 left), reported 7: 9 charged in all.
        assert_eq!(call(4, Some(7)).await.0, 200);
        assert_eq!(used().await.expect("store"), 9);
        // 1 left is less than the 4 declared: refused, nothing taken,
        // Retry-After to the end of the hour.
        let (status, retry) = call(4, None).await;
        assert_eq!(status, 429);
        assert_eq!(retry, Some(http::HeaderValue::from(3600u64)));
        assert_eq!(used().await.expect("store"), 9);
        // A declared cost of 1 still fits; with no report it costs 1.
        assert_eq!(call(1, None).await.0, 200);
        assert_eq!(used().await.expect("store"), 10);
        assert_eq!(call(0, None).await.0, 429);
        // The next hour starts from nothing.
        clock.set(end);
        assert_eq!(call(4, Some(12)).await.0, 200);
        let next = at(2024, 1, 1, 12, 0, 0);
        assert_eq!(
            store
                .quota_peek("q:global", next, end)
                .await
                .expect("store"),
            12
        );
        // Past the limit by the report: every later call is refused.
        assert_eq!(call(1, None).await.0, 429);
    }

    #[tokio::test]
    async fn a_task_quota_gives_back_everything_a_failed_call_took() {
        let clock = ManualClock::new(at(2024, 1, 1, 0, 0, 0));
        let shared: SharedClock = clock.clone();
        let store = AnyStore::memory();
        let policies = compile_policies(
            "version: 1\nlisten: 127.0.0.1:0\n",
            "q: {type: quota, limit: 5, period: day, key: ip, unit: tasks}",
            &store,
            &shared,
        )
        .expect("compiles");
        let failing = OperationService::new(tower::service_fn(|req: Request<Body>| async move {
            let (parts, _) = req.into_parts();
            Ok(Reject::new(Code::UpstreamTimeout, "slow").respond(parts.extensions))
        }));
        let down = crate::stack::build(&policies, failing);
        for _ in 0..4 {
            let r = down
                .clone()
                .oneshot(costly_request(5, None))
                .await
                .expect("infallible");
            assert_eq!(r.status().as_u16(), 504);
        }
        let end = at(2024, 1, 2, 0, 0, 0);
        let key = "q:ip:192.0.2.1";
        assert_eq!(
            store
                .quota_peek(key, end, shared.now())
                .await
                .expect("store"),
            0
        );
    }

    #[tokio::test]
    async fn gateway_made_answers_give_their_unit_back() {
        let clock = ManualClock::new(at(2024, 1, 1, 0, 0, 0));
        let shared: SharedClock = clock.clone();
        let store = AnyStore::memory();
        let policies = compile_policies(
            "version: 1\nlisten: 127.0.0.1:0\n",
            "q: {type: quota, limit: 1, period: hour, key: ip}",
            &store,
            &shared,
        )
        .expect("compiles");
        // A terminal that answers like the proxy when the upstream is down.
        let failing = OperationService::new(tower::service_fn(|req: Request<Body>| async move {
            let (parts, _) = req.into_parts();
            Ok(Reject::new(Code::UpstreamUnavailable, "down").respond(parts.extensions))
        }));
        let down = crate::stack::build(&policies, failing);
        for _ in 0..3 {
            assert_eq!(status_of(&down).await, 502);
        }
        let up = crate::stack::build(&policies, echo_terminal(500));
        assert_eq!(status_of(&up).await, 500);
        assert_eq!(status_of(&up).await, 429);
    }
}
