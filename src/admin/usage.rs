//! `GET /admin/usage`: per client, calls and task units side by side,
//! bytes, refusals by code, each operation's share, keys in use, and what
//! is used and left of every quota (in its unit: calls or tasks) — read
//! back from the store's usage counters and quota cells.
//!
//! `GET /admin/usage/series`: usage over time (`crate::usage_series`) —
//! `range=hour|day`, `by=total|client|operation`, and `client=` /
//! `operation=` filters — as JSON buckets, oldest first.

use http::Response;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::Admin;
use crate::body::Body;
use crate::calendar::format_rfc3339;
use crate::clock::Nanos;
use crate::config::schema::{PolicyDef, PolicyRef};
use crate::gateway::Gateway;
use crate::metrics;
use crate::policy::quota::{self, QuotaConfig, QuotaPeriod};
use crate::policy::LimitKey;
use crate::problem::Code;
use crate::state::{self, Store, UsageEntry};
use crate::usage_series::{Counts, GroupBy, Range, SeriesView};

// === impl Admin ===

impl Admin {
    /// Per client: calls, bytes, refusals by code, each operation's share,
    /// and what is used and left of every quota counted per client.
    pub(super) async fn usage(&self, gateway: &Gateway) -> Result<Value, Response<Body>> {
        let entries = self
            .store()
            .usage_list()
            .await
            .map_err(|e| self.store_failed(e))?;
        let mut clients: BTreeMap<String, ClientUsage> = BTreeMap::new();
        for client in &gateway.loaded.config.clients {
            clients.entry(client.id.clone()).or_default();
        }
        for entry in entries {
            let UsageEntry { subject, counts } = entry;
            clients.entry(subject).or_default().add(counts);
        }
        let now = self.now();
        let quotas = quota_policies(gateway);
        let mut global = Vec::new();
        for q in &quotas {
            match q.config.key {
                LimitKey::Global => {
                    let key = LimitKey::global_key(&q.name);
                    global.push(self.quota_state(q, &key, now).await?);
                }
                LimitKey::Client => {}
                LimitKey::Ip | LimitKey::Header(_) => global.push(json!({
                    "policy": q.name,
                    "key": if q.config.key == LimitKey::Ip { "ip".to_string() } else { "header".to_string() },
                    "limit": q.config.limit,
                    "period": period_name(q.config.period),
                    "unit": q.config.unit.as_str(),
                    "note": "counted per address or header value; not listed",
                })),
            }
        }
        let mut out = Vec::new();
        for (client, usage) in clients {
            let mut client_quotas = Vec::new();
            if client != metrics::ANONYMOUS {
                for q in quotas.iter().filter(|q| q.config.key == LimitKey::Client) {
                    let key = LimitKey::client_key(&q.name, &client);
                    client_quotas.push(self.quota_state(q, &key, now).await?);
                }
            }
            out.push(json!({
                "client": client,
                "calls": usage.calls,
                "units": usage.units,
                "bytes_in": usage.bytes_in,
                "bytes_out": usage.bytes_out,
                "cache_hits": usage.cache_hits,
                "rejections": usage.rejections,
                "keys": usage.keys,
                "operations": usage.operations.iter().map(|(op, u)| (op.clone(), json!({
                    "calls": u.calls,
                    "units": u.units,
                    "bytes_in": u.bytes_in,
                    "bytes_out": u.bytes_out,
                    "cache_hits": u.cache_hits,
                    "rejections": u.rejections,
                }))).collect::<serde_json::Map<_, _>>(),
                "quotas": client_quotas,
            }));
        }
        Ok(json!({ "clients": out, "quotas": global }))
    }

    async fn quota_state(
        &self,
        q: &QuotaPolicy,
        key: &str,
        now: Nanos,
    ) -> Result<Value, Response<Body>> {
        let end = quota::period_end(q.config.period, now);
        let used = self
            .store()
            .quota_peek(key, end, now)
            .await
            .map_err(|e| self.store_failed(e))?;
        Ok(json!({
            "policy": q.name,
            "period": period_name(q.config.period),
            "unit": q.config.unit.as_str(),
            "limit": q.config.limit,
            "used": used,
            "remaining": q.config.limit.saturating_sub(used),
            "resets_at": format_rfc3339(end),
        }))
    }
}

/// What `/admin/usage/series` was asked for.
pub(super) struct SeriesQuery {
    pub range: Range,
    pub by: GroupBy,
    pub client: Option<String>,
    pub operation: Option<String>,
}

impl SeriesQuery {
    /// Reads the query string; an unknown parameter or value is an error
    /// saying which (answered as 400 `invalid_query`).
    pub(super) fn parse(query: Option<&str>) -> Result<SeriesQuery, String> {
        let mut out = SeriesQuery {
            range: Range::Hour,
            by: GroupBy::Total,
            client: None,
            operation: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            let bad = |what: &str| format!("`{name}={value}`: {what}");
            match name {
                "range" => {
                    out.range = Range::parse(&value).ok_or_else(|| bad("use hour or day"))?
                }
                "by" => {
                    out.by = GroupBy::parse(&value)
                        .ok_or_else(|| bad("use total, client or operation"))?
                }
                "client" => out.client = Some(value),
                "operation" => out.operation = Some(value),
                _ => return Err(bad("the parameters are range, by, client and operation")),
            }
        }
        Ok(out)
    }
}

impl Admin {
    /// Usage over time of this instance, as JSON.
    pub(super) fn usage_series(&self, query: Option<&str>) -> Response<Body> {
        match SeriesQuery::parse(query) {
            Ok(q) => super::json_response(
                http::StatusCode::OK,
                &series_json(&q, &self.series_view(&q), self.now()),
            ),
            Err(detail) => super::problem(Code::InvalidQuery, detail),
        }
    }

    pub(super) fn series_view(&self, q: &SeriesQuery) -> Vec<SeriesView> {
        self.reloader.deps().metrics.series().view(
            q.range,
            self.now(),
            q.client.as_deref(),
            q.operation.as_deref(),
            q.by,
        )
    }
}

fn counts_json(c: &Counts) -> Value {
    json!({
        "calls": c.calls,
        "units": c.units,
        "refused": c.refused(),
        "refusals": c.refusals(),
        "p95_ms": c.p95_ms(),
    })
}

/// The JSON of a series view: one object per series, its buckets oldest
/// first (empty ones included, so every series has the same length).
fn series_json(q: &SeriesQuery, views: &[SeriesView], now: Nanos) -> Value {
    let step = q.range.step();
    let from = (now / step * step + step).saturating_sub(step * q.range.buckets() as u64);
    json!({
        "range": q.range.as_str(),
        "step_seconds": step / state::SECOND,
        "from": format_rfc3339(from),
        "to": format_rfc3339(now / step * step + step),
        "scope": "instance",
        "series": views.iter().map(|v| {
            let mut total = counts_json(&v.total);
            total["client"] = json!(v.client);
            total["operation"] = json!(v.operation);
            total["buckets"] = v.buckets.iter().map(|(start, c)| {
                let mut b = counts_json(c);
                b["start"] = json!(format_rfc3339(*start));
                b
            }).collect();
            total
        }).collect::<Vec<_>>(),
    })
}

/// A client's usage, parsed back from the store's fields (written by
/// `OperationMetrics::usage_counts`).
#[derive(Default)]
struct ClientUsage {
    calls: u64,
    /// Task units charged (refused and cached calls cost none).
    units: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Calls a `cache` policy answered (counted in `calls` too).
    cache_hits: u64,
    rejections: BTreeMap<String, u64>,
    operations: BTreeMap<String, OperationUsage>,
    /// Calls per key id (keys configured with an `id`): shows which of a
    /// client's keys is still in use during a rotation.
    keys: BTreeMap<String, u64>,
}

#[derive(Default)]
struct OperationUsage {
    calls: u64,
    units: u64,
    bytes_in: u64,
    bytes_out: u64,
    cache_hits: u64,
    rejections: BTreeMap<String, u64>,
}

impl ClientUsage {
    fn add(&mut self, counts: Vec<(String, u64)>) {
        for (field, n) in counts {
            if let Some(rest) = field.strip_prefix("op:") {
                if let Some((op, code)) = rest.rsplit_once(":rejected:") {
                    let op = self.operations.entry(op.to_string()).or_default();
                    *op.rejections.entry(code.to_string()).or_default() += n;
                } else if let Some((op, what)) = rest.rsplit_once(':') {
                    let op = self.operations.entry(op.to_string()).or_default();
                    match what {
                        "calls" => op.calls += n,
                        "units" => op.units += n,
                        "bytes_in" => op.bytes_in += n,
                        "bytes_out" => op.bytes_out += n,
                        "cache_hits" => op.cache_hits += n,
                        _ => {}
                    }
                }
            } else if let Some(code) = field.strip_prefix("rejected:") {
                *self.rejections.entry(code.to_string()).or_default() += n;
            } else if let Some(id) = field
                .strip_prefix("key:")
                .and_then(|rest| rest.strip_suffix(":calls"))
            {
                *self.keys.entry(id.to_string()).or_default() += n;
            } else {
                match field.as_str() {
                    "calls" => self.calls += n,
                    "units" => self.units += n,
                    "bytes_in" => self.bytes_in += n,
                    "bytes_out" => self.bytes_out += n,
                    "cache_hits" => self.cache_hits += n,
                    _ => {}
                }
            }
        }
    }
}

/// A `quota` policy of the config, by the name its counters are kept under.
struct QuotaPolicy {
    name: String,
    config: QuotaConfig,
}

/// Every quota policy: named ones, then inline ones in `apply` lists (named
/// as the compiler names them, so their counters are found).
fn quota_policies(gateway: &Gateway) -> Vec<QuotaPolicy> {
    let config = &gateway.loaded.config;
    let mut out = Vec::new();
    let mut push = |name: String, def: &PolicyDef| {
        if let Some(q) = def.config_of::<QuotaConfig>() {
            out.push(QuotaPolicy {
                name,
                config: q.clone(),
            });
        }
    };
    for (name, def) in &config.policies {
        push(name.clone(), def);
    }
    let mut inline = |scope: &str, refs: &[PolicyRef]| {
        for (i, r) in refs.iter().enumerate() {
            if let PolicyRef::Inline(def) = r {
                push(crate::gateway::inline_name(scope, def, i), def);
            }
        }
    };
    inline("gateway", &config.apply);
    for api in &config.apis {
        inline(&api.name, &api.apply);
        for op in &api.operations {
            inline(&op.id, &op.apply);
        }
    }
    out
}

fn period_name(period: QuotaPeriod) -> &'static str {
    match period {
        QuotaPeriod::Hour => "hour",
        QuotaPeriod::Day => "day",
        QuotaPeriod::Month => "month",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_fields_group_by_operation_and_code() {
        let mut usage = ClientUsage::default();
        usage.add(vec![
            ("calls".into(), 3),
            ("rejected:rate_limited".into(), 1),
            ("op:get:emp:calls".into(), 3),
            ("op:get:emp:rejected:rate_limited".into(), 1),
            ("key:hr:2027:calls".into(), 2),
            ("cache_hits".into(), 2),
            ("op:get:emp:cache_hits".into(), 2),
            ("units".into(), 40),
            ("op:get:emp:units".into(), 40),
        ]);
        assert_eq!(usage.units, 40);
        assert_eq!(usage.operations["get:emp"].units, 40);
        assert_eq!(usage.calls, 3);
        assert_eq!(usage.keys["hr:2027"], 2);
        assert_eq!(usage.cache_hits, 2);
        assert_eq!(usage.operations["get:emp"].cache_hits, 2);
        assert_eq!(usage.rejections["rate_limited"], 1);
        assert_eq!(usage.operations["get:emp"].calls, 3);
        assert_eq!(usage.operations["get:emp"].rejections["rate_limited"], 1);
    }
}
