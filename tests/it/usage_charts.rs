//! Usage over time (issue #18 item 3): a day of traffic through a real
//! gateway and upstream, made on the injected clock — calls, rate-limit
//! refusals and reported task units — then read back from
//! `GET /admin/usage/series` bucket by bucket, and the status page drawn in
//! headless Chromium: the screenshot must show the charts' colours (bars,
//! refusals, units, the latency line), not a blank page.

use crate::common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tollgate::calendar::days_from_civil;
use tollgate::clock::{ManualClock, SharedClock};

const HR_KEY: &str = "charts-hr-key";
const OPS_KEY: &str = "charts-ops-key";
const MINUTE: u64 = 60;
const QUARTER: u64 = 15 * 60;

fn config(upstream: &str) -> String {
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    format!(
        r#"version: 1
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
clients:
  - id: hr
    api_keys: [{{ sha256: {} }}]
  - id: ops
    api_keys: [{{ sha256: {} }}]
policies:
  key-required: {{ type: auth, methods: [api_key] }}
  per-minute: {{ type: rate_limit, limit: 6, window: 1m, key: client }}
apply: [key-required]
apis:
  - name: reports
    base_path: /r
    upstream: {upstream}
    cost_header: X-Tasks-Used
    operations:
      - {{ id: runReport, method: GET, path: /run, cost: 5 }}
      - {{ id: search, method: GET, path: /search, apply: [per-minute] }}
      - {{ id: lookup, method: GET, path: /lookup }}
"#,
        hash(HR_KEY),
        hash(OPS_KEY)
    )
}

/// What one step of the traffic did, as the test expects the series to
/// count it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Step {
    calls: u64,
    refused: u64,
    units: u64,
}

/// One step for `hr`: maybe a report reporting `report` units, then
/// `searches` searches (6 a minute pass; the bucket is full again after a
/// minute). Returns what the series should count.
async fn hr_step(app: &App, report: Option<u64>, searches: u64) -> Step {
    let key = [("x-api-key", HR_KEY)];
    let mut step = Step::default();
    if let Some(units) = report {
        let got = app
            .get_with(&format!("/r/run?h-x-tasks-used={units}"), &key)
            .await;
        assert_eq!(got.status, 200);
        step.calls += 1;
        step.units += units;
    }
    for i in 0..searches {
        let got = app.get_with("/r/search", &key).await;
        step.calls += 1;
        if i < 6 {
            assert_eq!(got.status, 200);
            step.units += 1;
        } else {
            got.assert_problem(429, "rate_limited");
            step.refused += 1;
        }
    }
    step
}

async fn ops_step(app: &App, lookups: u64) {
    for _ in 0..lookups {
        let got = app.get_with("/r/lookup", &[("x-api-key", OPS_KEY)]).await;
        assert_eq!(got.status, 200);
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test]
async fn a_day_of_usage_is_bucketed_exactly_and_drawn_on_the_status_page() {
    let up = Upstream::start().await;
    let day0 = days_from_civil(2026, 3, 10) as u64 * 86_400;
    let clock = ManualClock::new(day0 * 1_000_000_000);
    let shared: SharedClock = clock.clone();
    let app = App::start(&config(&up.url()), shared).await;
    let at = |secs: u64| clock.set(secs * 1_000_000_000);

    // 23 hours, one step per quarter hour.
    let mut quarters = Vec::new();
    for s in 0..92u64 {
        at(day0 + s * QUARTER + 1);
        let wave = [1, 2, 4, 6, 8, 9, 7, 5, 3][(s % 9) as usize];
        let step = hr_step(&app, Some((s * 7) % 13 + 1), wave).await;
        ops_step(&app, s % 3 + 1).await;
        quarters.push(step);
    }
    // The last hour, one step a minute.
    let h0 = day0 + 92 * QUARTER;
    let mut minutes = Vec::new();
    for m in 0..60u64 {
        at(h0 + m * MINUTE + 1);
        let report = (m % 2 == 0).then_some(m % 9 + 1);
        let step = hr_step(&app, report, 1 + (m % 8)).await;
        ops_step(&app, m % 4).await;
        minutes.push(step);
    }
    at(h0 + 59 * MINUTE + 30);

    // The last hour of hr, minute by minute, exactly as made.
    let got = app
        .admin_get("/admin/usage/series?range=hour&by=client&client=hr")
        .await;
    assert_eq!(got.status, 200);
    let json = got.json();
    assert_eq!(json["step_seconds"], 60);
    assert_eq!(json["scope"], "instance");
    let hr = &json["series"][0];
    assert_eq!(hr["client"], "hr");
    let buckets = hr["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 60);
    for (m, (b, want)) in buckets.iter().zip(&minutes).enumerate() {
        let seen = Step {
            calls: num(&b["calls"]),
            refused: num(&b["refused"]),
            units: num(&b["units"]),
        };
        assert_eq!(seen, *want, "minute {m}: {b}");
        if want.refused > 0 {
            assert_eq!(num(&b["refusals"]["rate_limited"]), want.refused);
        } else {
            assert_eq!(b["refusals"], serde_json::json!({}));
        }
        assert!(b["p95_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{b}");
    }
    assert_eq!(
        buckets[0]["start"],
        tollgate::calendar::format_rfc3339(h0 * 1_000_000_000)
    );
    let sum = |steps: &[Step], f: fn(&Step) -> u64| steps.iter().map(f).sum::<u64>();
    assert_eq!(num(&hr["calls"]), sum(&minutes, |s| s.calls));
    assert_eq!(num(&hr["units"]), sum(&minutes, |s| s.units));

    // The day, per operation: the hour's minutes fold into its quarters.
    let json = app
        .admin_get("/admin/usage/series?range=day&by=operation")
        .await
        .json();
    assert_eq!(json["step_seconds"], 900);
    let ops: Vec<(&str, u64)> = json["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| (s["operation"].as_str().unwrap_or(""), num(&s["calls"])))
        .collect();
    let searches = sum(&quarters, |s| s.calls) + sum(&minutes, |s| s.calls) - (92 + 30);
    let lookups: u64 =
        (0..92).map(|s| s % 3 + 1).sum::<u64>() + (0..60).map(|m| m % 4).sum::<u64>();
    assert_eq!(
        ops,
        [
            ("search", searches),
            ("lookup", lookups),
            ("runReport", 122)
        ]
    );
    let total = app.admin_get("/admin/usage/series?range=day").await.json();
    let all = &total["series"][0];
    assert_eq!(all["buckets"].as_array().map(Vec::len), Some(96));
    assert_eq!(num(&all["calls"]), searches + lookups + 122);
    assert_eq!(
        num(&all["refusals"]["rate_limited"]),
        sum(&quarters, |s| s.refused) + sum(&minutes, |s| s.refused)
    );
    // The 96th quarter holds the hour's last 15 minutes.
    let last = &all["buckets"][95];
    let last_quarter: u64 = (45..60).map(|m| minutes[m].calls + m as u64 % 4).sum();
    assert_eq!(num(&last["calls"]), last_quarter);

    // A question the endpoint cannot answer.
    app.admin_get("/admin/usage/series?range=week")
        .await
        .assert_problem(400, "invalid_query");
    app.admin_get("/admin/usage/series?since=1h")
        .await
        .assert_problem(400, "invalid_query");

    // The page: one row of charts per series, bars and lines drawn.
    let page = app.admin_get("/").await;
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = String::from_utf8(page.body.to_vec()).expect("utf-8");
    assert!(!html.contains("<script"));
    // Per range: all traffic, 2 clients, 3 operations; 3 charts each.
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 2 * 6 * 3);
    assert!(html.matches("<rect class=\"bar\"").count() > 500);
    assert!(html.matches("<rect class=\"bar refused\"").count() > 20);
    assert_eq!(html.matches("<path class=\"line\"").count(), 2 * 6);

    let admin = app.running.admin_addr.expect("admin listener");
    let Some(png) = screenshot(&format!("http://{admin}/"), "usage-charts.png").await else {
        app.shutdown().await;
        return;
    };
    // Count the pixels of each chart colour; the legend's swatches are a
    // few hundred at most, the charts thousands.
    let pixels = decode_rgb(&png);
    let count = |rgb: [u8; 3], tolerance: u8| {
        pixels
            .iter()
            .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= tolerance))
            .count()
    };
    let calls = count([0x3b, 0x6f, 0xd1], 0);
    let refused = count([0xd1, 0x45, 0x3b], 0);
    let units = count([0x2e, 0x9a, 0x5b], 0);
    let latency = count([0xc7, 0x7c, 0x0e], 40);
    assert!(calls > 5_000, "calls bars: {calls} pixels");
    assert!(units > 3_000, "units bars: {units} pixels");
    assert!(refused > 300, "refusal bars: {refused} pixels");
    assert!(latency > 800, "latency lines: {latency} pixels");
    app.shutdown().await;
}

/// The RGB pixels of a PNG.
fn decode_rgb(path: &PathBuf) -> Vec<[u8; 3]> {
    let file = std::fs::File::open(path).expect("png");
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// A screenshot of `url` in headless Chromium, saved under
/// target/test-artifacts/; `None` when no Chromium is installed (outside
/// CI).
async fn screenshot(url: &str, name: &str) -> Option<PathBuf> {
    let browser = browser::chromium("the browser half")?;
    let png = browser::artifact(name);
    let flags = [
        "--hide-scrollbars".to_string(),
        "--window-size=1100,1250".to_string(),
        format!("--screenshot={}", png.display()),
    ];
    let output = browser::headless(&browser, &flags, url).await;
    assert!(
        png.is_file(),
        "no screenshot; chromium said: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(png)
}
