//! The per-request pieces outside the policies: route lookup (a small and
//! a large API), path normalisation (clean paths take the borrowed fast
//! path; dirty ones are rewritten), problem+json rendering, and formatting
//! one access-log line (JSON and text) into a reused buffer.

// Black-box tests and benches measure real elapsed time; the library
// reads time through `tollgate::clock` only (clippy.toml).
#![allow(clippy::disallowed_methods)]

// The allocator the `tollgate` binary runs with (src/main.rs), so the
// figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderValue, Method};
use std::time::{Duration, SystemTime};
use tollgate::access_log::{self, AccessRecord, Format};
use tollgate::problem::{Code, Reject};
use tollgate::routing::{normalize_path, RouteTable};

/// `n` operations spread over GET/POST, half with a `{param}`, like an
/// imported spec.
fn table(n: usize) -> RouteTable {
    let mut routes = RouteTable::new();
    for i in 0..n {
        let (method, template) = match i % 4 {
            0 => (Method::GET, format!("/api/v1/resource{i}")),
            1 => (Method::POST, format!("/api/v1/resource{}", i - 1)),
            2 => (Method::GET, format!("/api/v1/resource{i}/{{id}}")),
            _ => (Method::GET, format!("/workflows/w{i}/{{id}}/runs")),
        };
        routes.insert(method, &template, i).expect("route");
    }
    routes
}

fn routing(c: &mut Criterion) {
    for n in [10, 10_000] {
        let routes = table(n);
        let target = format!("/api/v1/resource{}/42", (n / 2) / 4 * 4 + 2);
        assert!(routes.lookup(&Method::GET, &target).is_ok(), "{target}");
        c.bench_function(&format!("route_lookup/{n}_operations/hit"), |b| {
            b.iter(|| black_box(routes.lookup(&Method::GET, black_box(&target)).is_ok()))
        });
        c.bench_function(&format!("route_lookup/{n}_operations/miss"), |b| {
            b.iter(|| black_box(routes.lookup(&Method::GET, black_box("/nope/x")).is_err()))
        });
    }
}

fn normalisation(c: &mut Criterion) {
    let clean = "/api/v1/employees/42/documents";
    let dirty = "/api//v1/./employees/%7e42/../42/documents/";
    assert!(matches!(
        normalize_path(clean),
        Ok(std::borrow::Cow::Borrowed(_))
    ));
    assert!(matches!(
        normalize_path(dirty),
        Ok(std::borrow::Cow::Owned(_))
    ));
    c.bench_function("normalize_path/clean", |b| {
        b.iter(|| black_box(normalize_path(black_box(clean)).is_ok()))
    });
    c.bench_function("normalize_path/dirty", |b| {
        b.iter(|| black_box(normalize_path(black_box(dirty)).is_ok()))
    });
}

fn problems(c: &mut Criterion) {
    let request_id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
    c.bench_function("problem_json/rate_limited_with_retry_after", |b| {
        b.iter(|| {
            let reject = Reject::new(
                Code::RateLimited,
                "too many calls; retry after the time in Retry-After",
            )
            .with_retry_after(black_box(17));
            black_box(reject.into_response(&request_id))
        })
    });
}

/// What `finish` hands the access log for an authenticated, forwarded call.
fn access_record() -> AccessRecord<'static> {
    AccessRecord {
        time: SystemTime::now(),
        request_id: "0123456789abcdef0123456789abcdef",
        client_ip: [203, 0, 113, 9].into(),
        client: "hr-portal",
        key_id: Some("hr-2027"),
        api: "employee-directory",
        operation: "getEmployee",
        method: "GET",
        path: "/employees/12345",
        status: 200,
        duration: Duration::from_micros(1_234),
        upstream: Some(Duration::from_micros(987)),
        bytes_in: Some(0),
        bytes_out: Some(24),
        code: None,
        would_reject: None,
        would_reject_policy: None,
        trace_id: None,
    }
}

fn access_lines(c: &mut Criterion) {
    let record = access_record();
    let mut line = Vec::with_capacity(512);
    for (name, format) in [("json", Format::Json), ("text", Format::Text)] {
        c.bench_function(&format!("access_log/format/{name}"), |b| {
            b.iter(|| {
                line.clear();
                access_log::write_line(format, black_box(&record), &mut line);
                black_box(line.len())
            })
        });
    }
    // What the request's thread pays: format, then queue for the writer
    // thread (which writes to nowhere here).
    let sink = access_log::AccessLog::new(
        access_log::Destination::Writer(Box::new(std::io::sink())),
        Format::Json,
        1 << 20,
        Default::default(),
    );
    c.bench_function("access_log/record/json", |b| {
        b.iter(|| sink.record(black_box(&record)))
    });
    assert!(sink.flush(Duration::from_secs(10)));
}

criterion_group!(benches, routing, normalisation, problems, access_lines);
criterion_main!(benches);
