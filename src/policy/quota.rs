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
//! With `key: header:NAME`, an anonymous caller's calls also take from a
//! count per address shared by every value it sends, `anonymous_per_ip`
//! per period (default 10 × `limit`), as with `rate_limit`: inventing a
//! new value per call gains at most that.

use http::Response;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{CompileCx, LimitKey, PolicyMeta, Saved, Stage, Step};
use crate::body::Body;
use crate::calendar;
use crate::clock::{Nanos, SharedClock};
use crate::context::RequestContext;
use crate::problem::{Code, Reject, RejectedWith};
use crate::state::{self, AnyStore, Store, StoreErrorMode, SECOND};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub limit: u64,
    pub period: QuotaPeriod,
    #[serde(default)]
    pub key: super::LimitKey,
    /// IPv6 callers counted by IP are grouped by this prefix.
    #[serde(default = "super::default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// With `key: header:NAME`: the calls per period one anonymous address
    /// may make whatever values it sends (default 10 × `limit`).
    #[serde(default)]
    pub anonymous_per_ip: Option<u64>,
}

/// UTC calendar periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    Hour,
    Day,
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
                Ok(used) => allowed = used < *limit,
                Err(error) => return fail(error),
            }
        }
        if allowed {
            let d = match self
                .store
                .quota_take(&key, self.limit, period_end, now)
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
                }));
            };
            let d = match self
                .store
                .quota_take(&address, limit, period_end, now)
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
                }));
            }
            // Another call took the address's last unit meanwhile.
            let value = Taken {
                key: key.clone(),
                address: None,
                period_end,
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
        Err(Reject::new(
            Code::QuotaExceeded,
            "the quota for this period is used up; retry after the time in Retry-After",
        )
        .with_retry_after(state::ceil_secs(period_end - now)))
    }

    async fn refund(&self, taken: Taken) {
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
    /// after this stage, an upstream failure) costs no quota.
    pub(crate) async fn after(&self, response: &mut Response<Body>, taken: Taken) {
        if response.extensions().get::<RejectedWith>().is_some() {
            self.refund(taken).await;
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
