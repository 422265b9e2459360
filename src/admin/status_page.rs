//! `GET /`: the read-only status page, plain server-rendered HTML with
//! inline style and no scripts: the charts of usage over time are inline
//! SVG drawn here (no script, nothing fetched, the strict CSP holds).

use http::header::HeaderValue;
use http::{Response, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::usage::SeriesQuery;
use super::{text, Admin};
use crate::body::Body;
use crate::gateway::Gateway;
use crate::usage_series::{Counts, GroupBy, Range, SeriesView};

impl Admin {
    pub(super) async fn status_page(&self, gateway: &Gateway) -> Response<Body> {
        let usage = self.usage(gateway).await.ok();
        let bans = self.bans().await.ok();
        let charts = [Range::Hour, Range::Day].map(|range| {
            let view = |by| {
                self.series_view(&SeriesQuery {
                    range,
                    by,
                    client: None,
                    operation: None,
                })
            };
            RangeCharts {
                range,
                total: view(GroupBy::Total),
                clients: view(GroupBy::Client),
                operations: view(GroupBy::Operation),
            }
        });
        let mut html = status_html(gateway, usage.as_ref(), bans.as_deref(), &charts);
        // The call log's own section (admin/calls.rs), before the end.
        if let Some(end) = html.rfind("</body>") {
            html.insert_str(end, &self.calls_section().await);
        }
        let mut response = text(StatusCode::OK, "text/html; charset=utf-8", html);
        // Read-only and self-contained: nothing to load, and never framed
        // (no clickjacking of the admin API through it).
        response.headers_mut().insert(
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        response
    }
}

/// The status page: plain server-rendered HTML, inline style, no scripts.
fn status_html(
    gateway: &Gateway,
    usage: Option<&Value>,
    bans: Option<&[Value]>,
    charts: &[RangeCharts],
) -> String {
    let mut h = String::with_capacity(8192);
    h.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Tollgate status</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
         h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em}\
         table{border-collapse:collapse;margin:.5em 0}\
         th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}\
         th{background:#f0f0f0}code{font-size:.95em}.muted{color:#777}\
         .policy{display:inline-block;background:#eef;border-radius:3px;padding:0 .4em;margin:1px}\
         .report{background:#ffe9c4}\
         table.charts td{vertical-align:top}table.charts svg{display:block}\
         .legend{font-size:.85em;color:#555}\
         .k{display:inline-block;width:.8em;height:.8em;margin:0 .25em 0 .6em;vertical-align:-.05em}\
         </style></head><body><h1>Tollgate</h1>",
    );
    let _ = write!(
        h,
        "<p class=\"muted\">{} &middot; config <code>{}</code></p>",
        esc(&gateway.summary()),
        esc(&gateway.loaded.file.display().to_string())
    );

    usage_charts(&mut h, charts);

    h.push_str("<h2>APIs and operations</h2><table><tr><th>API</th><th>Operation</th><th>Method</th><th>Path</th><th>Policies</th></tr>");
    for op in &gateway.operations {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>",
            esc(&op.info.api),
            esc(&op.info.id),
            esc(op.method.as_str()),
            esc(&op.template)
        );
        for p in &op.policies {
            let _ = write!(
                h,
                "<span class=\"policy{}\" title=\"{}\">{}</span> ",
                if p.report_only { " report" } else { "" },
                esc(p.type_name),
                esc(&p.name)
            );
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</table>");

    h.push_str("<h2>Top clients by calls</h2>");
    let mut clients: Vec<&Value> = usage
        .and_then(|u| u["clients"].as_array())
        .map(|c| {
            c.iter()
                .filter(|c| c["calls"].as_u64().unwrap_or(0) > 0)
                .collect()
        })
        .unwrap_or_default();
    clients.sort_by_key(|c| std::cmp::Reverse(c["calls"].as_u64().unwrap_or(0)));
    if clients.is_empty() {
        h.push_str("<p class=\"muted\">No calls yet.</p>");
    } else {
        h.push_str("<table><tr><th>Client</th><th>Calls</th><th>Task units</th><th>Rejected</th><th>Bytes in</th><th>Bytes out</th></tr>");
        for c in clients.iter().take(20) {
            let rejected: u64 = c["rejections"]
                .as_object()
                .map(|r| r.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(c["client"].as_str().unwrap_or("")),
                c["calls"].as_u64().unwrap_or(0),
                c["units"].as_u64().unwrap_or(0),
                rejected,
                c["bytes_in"].as_u64().unwrap_or(0),
                c["bytes_out"].as_u64().unwrap_or(0)
            );
        }
        h.push_str("</table>");
    }

    quotas_table(&mut h, usage);

    h.push_str("<h2>Rejections by code</h2>");
    let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
    for c in usage
        .and_then(|u| u["clients"].as_array())
        .into_iter()
        .flatten()
    {
        for (code, n) in c["rejections"].as_object().into_iter().flatten() {
            *by_code.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    if by_code.is_empty() {
        h.push_str("<p class=\"muted\">None.</p>");
    } else {
        h.push_str("<table><tr><th>Code</th><th>Count</th></tr>");
        for (code, n) in &by_code {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{n}</td></tr>",
                esc(code)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Active bans</h2>");
    match bans {
        None => h.push_str("<p class=\"muted\">The state store did not answer.</p>"),
        Some([]) => h.push_str("<p class=\"muted\">None.</p>"),
        Some(bans) => {
            h.push_str("<table><tr><th>Key</th><th>Reason</th><th>Until</th></tr>");
            for b in bans {
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(b["key"].as_str().unwrap_or("")),
                    esc(b["reason"].as_str().unwrap_or("")),
                    esc(b["until"].as_str().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// Every quota counted per client or globally: used of limit, in its unit
/// (calls or tasks), and when it resets.
fn quotas_table(h: &mut String, usage: Option<&Value>) {
    let per_client = usage
        .and_then(|u| u["clients"].as_array())
        .into_iter()
        .flatten()
        .flat_map(|c| {
            let client = c["client"].as_str().unwrap_or("");
            c["quotas"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |q| (format!("client {client}"), q))
        });
    let global = usage
        .and_then(|u| u["quotas"].as_array())
        .into_iter()
        .flatten()
        .filter(|q| q.get("used").is_some())
        .map(|q| ("global".to_string(), q));
    let rows: Vec<(String, &Value)> = global.chain(per_client).collect();
    if rows.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Quotas</h2><table><tr><th>Policy</th><th>Counted for</th><th>Used</th>\
         <th>Limit</th><th>Unit</th><th>Resets</th></tr>",
    );
    for (whom, q) in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{} a {}</td><td>{}</td><td>{}</td></tr>",
            esc(q["policy"].as_str().unwrap_or("")),
            esc(&whom),
            q["used"].as_u64().unwrap_or(0),
            q["limit"].as_u64().unwrap_or(0),
            esc(q["period"].as_str().unwrap_or("")),
            esc(q["unit"].as_str().unwrap_or("")),
            esc(q["resets_at"].as_str().unwrap_or(""))
        );
    }
    h.push_str("</table>");
}

/// The series of one range the page draws: all traffic, each client, each
/// operation.
struct RangeCharts {
    range: Range,
    total: Vec<SeriesView>,
    clients: Vec<SeriesView>,
    operations: Vec<SeriesView>,
}

/// How many clients and operations get their own row of charts.
const CHART_ROWS: usize = 8;
const CHART_W: u32 = 240;
const CHART_H: u32 = 56;
/// Room above the bars for the scale label.
const CHART_TOP: u32 = 13;
const BG: &str = "#f4f5f7";
const CALLS: &str = "#3b6fd1";
const REFUSED: &str = "#d1453b";
const UNITS: &str = "#2e9a5b";
const LATENCY: &str = "#c77c0e";

/// The usage charts: per range a table of rows (all traffic, then the
/// busiest clients and operations), each with calls (refusals in red),
/// task units and p95 latency over the range.
fn usage_charts(h: &mut String, charts: &[RangeCharts]) {
    h.push_str("<h2>Usage over time</h2><p class=\"legend\">This instance's calls");
    let _ = write!(
        h,
        "<span class=\"k\" style=\"background:{CALLS}\"></span>calls\
         <span class=\"k\" style=\"background:{REFUSED}\"></span>refused\
         <span class=\"k\" style=\"background:{UNITS}\"></span>task units\
         <span class=\"k\" style=\"background:{LATENCY}\"></span>p95 latency</p>"
    );
    for c in charts {
        let (title, step) = match c.range {
            Range::Hour => (
                "Last hour",
                "a bar per minute, oldest left, now at the right",
            ),
            Range::Day => (
                "Last day",
                "a bar per 15 minutes, oldest left, now at the right",
            ),
        };
        let _ = write!(
            h,
            "<h3>{title} <span class=\"muted\">({step})</span></h3>\
             <table class=\"charts\" data-range=\"{}\"><tr><th></th><th>Calls</th><th>Task units</th><th>p95 latency</th></tr>",
            c.range.as_str()
        );
        let rows = c
            .total
            .iter()
            .map(|v| ("All traffic".to_string(), "total", v))
            .chain(c.clients.iter().take(CHART_ROWS).map(|v| {
                let name = v.client.clone().unwrap_or_default();
                (format!("client {name}"), "client", v)
            }))
            .chain(c.operations.iter().take(CHART_ROWS).map(|v| {
                let name = v.operation.clone().unwrap_or_default();
                (format!("operation {name}"), "operation", v)
            }));
        for (label, kind, view) in rows {
            chart_row(h, &label, kind, view);
        }
        h.push_str("</table>");
    }
}

fn chart_row(h: &mut String, label: &str, kind: &str, view: &SeriesView) {
    let t = &view.total;
    let _ = write!(
        h,
        "<tr data-kind=\"{kind}\"><td><code>{}</code></td><td>",
        esc(label)
    );
    bar_chart(
        h,
        "calls",
        &view.buckets,
        |c| c.calls,
        |c| c.refused(),
        CALLS,
    );
    let _ = write!(
        h,
        "<span class=\"legend\">{} calls, {} refused{}</span></td><td>",
        t.calls,
        t.refused(),
        refusal_codes(t)
    );
    bar_chart(h, "units", &view.buckets, |c| c.units, |_| 0, UNITS);
    let _ = write!(
        h,
        "<span class=\"legend\">{} units</span></td><td>",
        t.units
    );
    line_chart(h, &view.buckets);
    let p95 = t.p95_ms().map_or("no calls".to_string(), |ms| {
        format!("p95 ≤ {}", ms_text(ms))
    });
    let _ = write!(h, "<span class=\"legend\">{p95}</span></td></tr>");
}

/// ` (rate_limited 3, quota_exceeded 1)`, or nothing.
fn refusal_codes(c: &Counts) -> String {
    let codes = c.refusals();
    if codes.is_empty() {
        return String::new();
    }
    let list: Vec<String> = codes
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    esc(&format!(" ({})", list.join(", ")))
}

fn ms_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// A whole number of pixels per bucket, at least `CHART_W` in all.
fn bar_width(buckets: usize) -> u32 {
    CHART_W.div_ceil(buckets.max(1) as u32)
}

/// Opens a chart of `buckets` bars' `<svg>` with its background.
fn svg_open(h: &mut String, chart: &str, buckets: usize, label: String) {
    let w = bar_width(buckets) * buckets.max(1) as u32;
    let _ = write!(
        h,
        "<svg class=\"chart\" data-chart=\"{chart}\" width=\"{w}\" height=\"{CHART_H}\" \
         viewBox=\"0 0 {w} {CHART_H}\" role=\"img\" aria-label=\"{}\">\
         <title>{}</title><rect width=\"{w}\" height=\"{CHART_H}\" fill=\"{BG}\"/>",
        esc(&label),
        esc(&label)
    );
}

/// One bar per bucket, scaled to the busiest; `low` (refusals) drawn over
/// the bottom of each bar in red.
fn bar_chart(
    h: &mut String,
    chart: &str,
    buckets: &[(crate::clock::Nanos, Counts)],
    value: impl Fn(&Counts) -> u64,
    low: impl Fn(&Counts) -> u64,
    color: &str,
) {
    let max = buckets.iter().map(|(_, c)| value(c)).max().unwrap_or(0);
    svg_open(
        h,
        chart,
        buckets.len(),
        format!("{chart}: at most {max} per bucket"),
    );
    let width = bar_width(buckets.len());
    let scale = |v: u64| -> u32 {
        if max == 0 || v == 0 {
            return 0;
        }
        // At least one pixel for any count.
        ((v as f64 / max as f64) * f64::from(CHART_H - CHART_TOP))
            .ceil()
            .max(1.0) as u32
    };
    h.push_str("<g shape-rendering=\"crispEdges\">");
    for (i, (_, c)) in buckets.iter().enumerate() {
        let (v, r) = (value(c), low(c).min(value(c)));
        let x = i as u32 * width;
        let bar_w = width.saturating_sub(1).max(1);
        let height = scale(v);
        if height > 0 {
            let _ = write!(
                h,
                "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"{bar_w}\" height=\"{height}\" fill=\"{color}\"/>",
                CHART_H - height
            );
        }
        let low_h = scale(r).min(height);
        if low_h > 0 {
            let _ = write!(
                h,
                "<rect class=\"bar refused\" x=\"{x}\" y=\"{}\" width=\"{bar_w}\" height=\"{low_h}\" fill=\"{REFUSED}\"/>",
                CHART_H - low_h
            );
        }
    }
    h.push_str("</g>");
    if max > 0 {
        scale_label(h, &format!("max {max}"));
    }
    h.push_str("</svg>");
}

/// The chart's scale, small in its top left corner.
fn scale_label(h: &mut String, text: &str) {
    let _ = write!(
        h,
        "<text x=\"3\" y=\"10\" font-size=\"9\" font-family=\"sans-serif\" fill=\"#555\">{}</text>",
        esc(text)
    );
}

/// p95 latency per bucket as a line (broken where a bucket had no calls),
/// scaled to the slowest; a lone point is a short dash.
fn line_chart(h: &mut String, buckets: &[(crate::clock::Nanos, Counts)]) {
    let points: Vec<Option<f64>> = buckets.iter().map(|(_, c)| c.p95_ms()).collect();
    let max = points.iter().flatten().fold(0f64, |a, &b| a.max(b));
    svg_open(
        h,
        "latency",
        points.len(),
        format!("p95 latency: at most {}", ms_text(max)),
    );
    let step = f64::from(bar_width(points.len()));
    let mut d = String::new();
    let mut open = false;
    for (i, p) in points.iter().enumerate() {
        let Some(ms) = p else {
            open = false;
            continue;
        };
        let x = step * (i as f64 + 0.5);
        let y = f64::from(CHART_H)
            - 3.0
            - (ms / max.max(f64::MIN_POSITIVE)) * f64::from(CHART_H - CHART_TOP - 3);
        let next_drawn = points.get(i + 1).is_some_and(Option::is_some);
        if open {
            let _ = write!(d, " L{x:.1} {y:.1}");
        } else if next_drawn {
            let _ = write!(d, " M{x:.1} {y:.1}");
        } else {
            // A point on its own: a short dash, so it shows.
            let _ = write!(d, " M{:.1} {y:.1} L{:.1} {y:.1}", x - 2.5, x + 2.5);
        }
        open = next_drawn;
    }
    if !d.is_empty() {
        let _ = write!(
            h,
            "<path class=\"line\" d=\"{}\" fill=\"none\" stroke=\"{LATENCY}\" stroke-width=\"2.5\" stroke-linejoin=\"round\"/>",
            d.trim_start()
        );
        scale_label(h, &format!("max {}", ms_text(max)));
    }
    h.push_str("</svg>");
}

/// Escapes text for HTML element content and quoted attributes.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
