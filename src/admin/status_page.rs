//! `GET /`: the read-only status page, plain server-rendered HTML with
//! inline style and no scripts.

use http::header::HeaderValue;
use http::{Response, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{text, Admin};
use crate::body::Body;
use crate::gateway::Gateway;

impl Admin {
    pub(super) async fn status_page(&self, gateway: &Gateway) -> Response<Body> {
        let usage = self.usage(gateway).await.ok();
        let bans = self.bans().await.ok();
        let html = status_html(gateway, usage.as_ref(), bans.as_deref());
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
fn status_html(gateway: &Gateway, usage: Option<&Value>, bans: Option<&[Value]>) -> String {
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
         </style></head><body><h1>Tollgate</h1>",
    );
    let _ = write!(
        h,
        "<p class=\"muted\">{} &middot; config <code>{}</code></p>",
        esc(&gateway.summary()),
        esc(&gateway.loaded.file.display().to_string())
    );

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

/// Escapes text for HTML element content and quoted attributes.
fn esc(s: &str) -> String {
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
