//! Task units: what one call costs, as declared in config and as reported
//! by the upstream.
//!
//! ```yaml
//! apis:
//!   - name: reports
//!     cost_header: X-Tasks-Used      # the upstream's report; every operation of the API
//!     operations:
//!       - id: runReport
//!         method: POST
//!         path: /run
//!         cost: 25                   # declared: 25 task units a call (default 1)
//!       - id: cheapLookup
//!         method: GET
//!         path: /lookup
//!         cost_header: X-Units       # overrides the API's header name
//! ```
//!
//! A forwarded call the upstream answered costs its declared `cost`, or
//! what the upstream reported in `cost_header` when it sent one: a
//! non-negative whole number (`X-Tasks-Used: 7`). The header is removed
//! before the caller sees the answer, whatever its value. A value that is
//! not a whole number (`7.5`, `-1`, `lots`, two values) falls back to the
//! declared cost and is counted in `tollgate_cost_header_invalid_total`.
//!
//! A call the gateway answered itself costs no units: a refusal by any
//! policy, an upstream failure (502/504), a response the schema refused,
//! or an answer from the cache. The proxy puts the call's [`TaskUnits`] in
//! the request's context; [`units_of`] reads what a finished response
//! cost, for usage, metrics and quotas counted in units.

use http::header::HeaderName;
use http::{HeaderMap, Response};
use prometheus_client::metrics::counter::Counter;

use crate::context::RequestContext;
use crate::policy::cache::CacheHit;
use crate::problem::RejectedWith;

/// What a call of one operation costs: compiled once per operation from
/// `cost` and `cost_header` (the operation's, else its API's).
#[derive(Debug, Clone)]
pub struct TaskCost {
    /// The declared cost of a call (`cost:`, default 1).
    pub declared: u64,
    /// The response header the upstream reports its units in.
    pub header: Option<HeaderName>,
    /// `tollgate_cost_header_invalid_total` of this operation.
    invalid: Counter,
}

impl Default for TaskCost {
    /// One unit a call, no header: an operation that says nothing.
    fn default() -> Self {
        TaskCost {
            declared: 1,
            header: None,
            invalid: Counter::default(),
        }
    }
}

/// The units a forwarded call cost, kept in the request's context
/// (`RequestContext::units`) by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskUnits(pub u64);

/// A `cost_header` value of the config that is not a header name.
pub fn parse_header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid HTTP header name"))
}

// === impl TaskCost ===

impl TaskCost {
    /// The cost of an operation: `declared` units a call, unless the upstream reports otherwise
    /// in `header`; unreadable reports are counted in `invalid`.
    pub fn new(declared: u64, header: Option<HeaderName>, invalid: Counter) -> TaskCost {
        TaskCost {
            declared,
            header,
            invalid,
        }
    }

    /// The units an upstream answer with these headers cost; the cost
    /// header is removed from them.
    pub fn settle(&self, headers: &mut HeaderMap) -> TaskUnits {
        let Some(name) = &self.header else {
            return TaskUnits(self.declared);
        };
        let mut values = headers.get_all(name).iter();
        let reported = match (values.next(), values.next()) {
            (None, _) => return TaskUnits(self.declared),
            (Some(value), None) => parse_units(value.as_bytes()),
            // Two reports: neither is believed.
            (Some(_), Some(_)) => None,
        };
        headers.remove(name);
        match reported {
            Some(units) => TaskUnits(units),
            None => {
                self.invalid.inc();
                TaskUnits(self.declared)
            }
        }
    }
}

/// A whole, non-negative number of units, digits only (optional spaces
/// around), at most 18 digits so it never overflows.
fn parse_units(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The units a finished response cost: none when the gateway answered it
/// (a refusal, an upstream failure, a cache hit), else what the proxy
/// settled.
pub fn units_of<B>(response: &Response<B>, cx: &RequestContext) -> u64 {
    let extensions = response.extensions();
    if extensions.get::<RejectedWith>().is_some() || extensions.get::<CacheHit>().is_some() {
        return 0;
    }
    cx.units.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cost() -> TaskCost {
        TaskCost::new(
            5,
            Some(HeaderName::from_static("x-tasks-used")),
            Counter::default(),
        )
    }

    #[test]
    fn a_reported_count_replaces_the_declared_one_and_the_header_goes() {
        let cost = cost();
        let mut headers = HeaderMap::new();
        headers.insert("x-tasks-used", HeaderValue::from_static(" 12 "));
        assert_eq!(cost.settle(&mut headers), TaskUnits(12));
        assert!(headers.is_empty());
        assert_eq!(cost.invalid.get(), 0);
        // Zero is a report too: the workflow did nothing billable.
        headers.insert("x-tasks-used", HeaderValue::from_static("0"));
        assert_eq!(cost.settle(&mut headers), TaskUnits(0));
    }

    #[test]
    fn no_report_costs_the_declared_units() {
        let mut headers = HeaderMap::new();
        headers.insert("x-other", HeaderValue::from_static("3"));
        assert_eq!(cost().settle(&mut headers), TaskUnits(5));
        assert_eq!(headers.len(), 1);
        assert_eq!(
            TaskCost::default().settle(&mut HeaderMap::new()),
            TaskUnits(1)
        );
    }

    #[test]
    fn an_invalid_report_falls_back_to_the_declared_cost_and_is_counted() {
        let cost = cost();
        for bad in ["-1", "7.5", "lots", "", "1e3", "+3", "9999999999999999999"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-tasks-used", HeaderValue::from_static(bad));
            assert_eq!(cost.settle(&mut headers), TaskUnits(5), "{bad:?}");
            assert!(headers.is_empty(), "{bad:?} left in the answer");
        }
        let mut headers = HeaderMap::new();
        headers.append("x-tasks-used", HeaderValue::from_static("1"));
        headers.append("x-tasks-used", HeaderValue::from_static("2"));
        assert_eq!(cost.settle(&mut headers), TaskUnits(5));
        assert!(headers.is_empty());
        assert_eq!(cost.invalid.get(), 8);
    }

    #[test]
    fn refused_and_cached_answers_cost_nothing() {
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let mut cx = RequestContext::new(HeaderValue::from_static("r"), peer, peer.ip());
        assert_eq!(units_of(&Response::new(()), &cx), 0, "no answer upstream");
        cx.units = Some(4);
        let mut response = Response::new(());
        assert_eq!(units_of(&response, &cx), 4);
        response.extensions_mut().insert(CacheHit);
        assert_eq!(units_of(&response, &cx), 0);
        let mut refused = Response::new(());
        refused.extensions_mut().insert(RejectedWith {
            code: crate::problem::Code::QuotaExceeded,
            policy: None,
        });
        assert_eq!(units_of(&refused, &cx), 0);
    }
}
