//! `GET /admin/calls` and `GET /admin/calls/{request_id}`: the call log
//! (`crate::call_log`), newest first, and the status page's section of
//! recent calls.
//!
//! ```text
//! GET /admin/calls?client=hr-portal&operation=getEmployee&status=4xx&since=2026-01-01T00:00:00Z&limit=50&cursor=123
//!   -> {"calls": [entry, ...], "next_cursor": "117" | null}
//! GET /admin/calls/0f3c...   (the X-Request-Id the caller got)
//!   -> entry, or 404 call_not_found
//! ```
//!
//! `status` is a code (`404`) or a class (`4xx`); `client=` (empty) finds
//! anonymous calls; `since` is RFC 3339; `limit` is 1-500 (default 50);
//! `cursor` is a page's `next_cursor`. Before reading, this instance's
//! queued entries are written out (for at most a couple of seconds), so
//! the calls it just answered are in the answer.

use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::fmt::Write as _;

use super::{json_response, problem, status_page::esc, Admin};
use crate::body::Body;
use crate::calendar::parse_rfc3339;
use crate::call_log::FLUSH_WITHIN;
use crate::problem::Code;
use crate::state::{CallFilter, StatusFilter, Store};

/// Entries per page unless `limit` says otherwise, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// Calls the status page shows.
const ON_STATUS_PAGE: usize = 20;

impl Admin {
    /// `GET /admin/calls?...`: one page of the log.
    pub(super) async fn calls(&self, query: Option<&str>) -> Response<Body> {
        let filter = match parse_filter(query.unwrap_or("")) {
            Ok(filter) => filter,
            Err(detail) => return problem(Code::InvalidQuery, detail),
        };
        let log = &self.reloader.deps().call_log;
        log.flush(FLUSH_WITHIN).await;
        match log.store().calls_page(&filter, self.now()).await {
            Ok(page) => json_response(
                StatusCode::OK,
                &json!({
                    "calls": page.entries.iter().map(|(_, e)| entry_value(e)).collect::<Vec<_>>(),
                    "next_cursor": page.next.map(|n| n.to_string()),
                }),
            ),
            Err(error) => self.store_failed(error),
        }
    }

    /// `GET /admin/calls/{request_id}`: one entry.
    pub(super) async fn call(&self, encoded: &str) -> Response<Body> {
        let Ok(id) = percent_encoding::percent_decode_str(encoded).decode_utf8() else {
            return problem(Code::InvalidPath, "the request id is not UTF-8");
        };
        let log = &self.reloader.deps().call_log;
        log.flush(FLUSH_WITHIN).await;
        match log.store().calls_get(&id, self.now()).await {
            Ok(Some(entry)) => json_response(StatusCode::OK, &entry_value(&entry)),
            Ok(None) => problem(
                Code::CallNotFound,
                format!("the call log holds no call with request id `{id}`"),
            ),
            Err(error) => self.store_failed(error),
        }
    }

    /// The status page's section: the latest calls, one line each.
    pub(super) async fn calls_section(&self) -> String {
        let filter = CallFilter {
            limit: ON_STATUS_PAGE,
            ..CallFilter::default()
        };
        let log = &self.reloader.deps().call_log;
        let mut h = String::from("<h2>Recent calls</h2>");
        let page = match log.store().calls_page(&filter, self.now()).await {
            Ok(page) => page,
            Err(_) => {
                h.push_str("<p class=\"muted\">The state store did not answer.</p>");
                return h;
            }
        };
        if page.entries.is_empty() {
            h.push_str(
                "<p class=\"muted\">None recorded (an API or operation opts in with \
                 <code>record:</code>).</p>",
            );
            return h;
        }
        h.push_str(
            "<table><tr><th>Time</th><th>Request id</th><th>Client</th><th>Operation</th>\
             <th>Method</th><th>Path</th><th>Status</th><th>ms</th></tr>",
        );
        for (_, entry) in &page.entries {
            let e = entry_value(entry);
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td>\
                 <td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&s(&e["time"])),
                esc(&s(&e["request_id"])),
                esc(&s(&e["client"])),
                esc(&s(&e["operation"])),
                esc(&s(&e["request"]["method"])),
                esc(&s(&e["request"]["path"])),
                e["status"].as_u64().unwrap_or(0),
                e["duration_ms"].as_f64().unwrap_or(0.0),
            );
        }
        h.push_str("</table>");
        h
    }
}

/// A stored entry as JSON (it was written as JSON; anything else is shown
/// as the text it is).
fn entry_value(entry: &str) -> Value {
    serde_json::from_str(entry).unwrap_or_else(|_| Value::from(entry))
}

/// The query of `GET /admin/calls`.
fn parse_filter(query: &str) -> Result<CallFilter, String> {
    let mut filter = CallFilter {
        limit: DEFAULT_LIMIT,
        ..CallFilter::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| format!("`{name}` is not UTF-8"))?
            .into_owned();
        match name {
            "client" => filter.client = Some(value),
            "operation" => filter.operation = Some(value),
            "status" => filter.status = Some(parse_status(&value)?),
            "since" => {
                filter.since = Some(parse_rfc3339(&value).ok_or_else(|| {
                    format!("`since` is an RFC 3339 time (2026-01-01T00:00:00Z), not `{value}`")
                })?)
            }
            "limit" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("`limit` is 1 to {MAX_LIMIT}, not `{value}`"))?
            }
            "cursor" => {
                filter.before =
                    Some(value.parse().map_err(|_| {
                        format!("`cursor` is a page's `next_cursor`, not `{value}`")
                    })?)
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (client, operation, status, since, limit, cursor)"
                ))
            }
        }
    }
    Ok(filter)
}

/// `404` or `4xx`.
fn parse_status(value: &str) -> Result<StatusFilter, String> {
    let bad = || format!("`status` is a code (404) or a class (4xx), not `{value}`");
    let lower = value.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        return match class.parse::<u16>() {
            Ok(c @ 1..=5) => Ok(StatusFilter::Class(c)),
            _ => Err(bad()),
        };
    }
    match value.parse::<u16>() {
        Ok(code @ 100..=599) => Ok(StatusFilter::Exact(code)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_strictly() {
        let f = parse_filter("client=hr&operation=getEmployee&status=4xx&limit=5&cursor=9")
            .expect("valid");
        assert_eq!(f.client.as_deref(), Some("hr"));
        assert_eq!(f.operation.as_deref(), Some("getEmployee"));
        assert_eq!(f.status, Some(StatusFilter::Class(4)));
        assert_eq!((f.limit, f.before), (5, Some(9)));
        assert_eq!(
            parse_filter("status=404").expect("valid").status,
            Some(StatusFilter::Exact(404))
        );
        assert!(parse_filter("since=2026-01-01T00:00:00Z")
            .expect("valid")
            .since
            .is_some());
        for bad in [
            "status=6xx",
            "status=abc",
            "limit=0",
            "limit=501",
            "cursor=x",
            "since=yesterday",
            "clinet=x",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
