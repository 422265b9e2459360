//! The policy chain per request: ip + auth (API key) + roles + header
//! checks and rewrites, then the same plus a per-client rate limit on the
//! memory store, compiled as the gateway compiles them into one pipeline in
//! front of a stub terminal service (no network), run the way the entry
//! runs an operation (`Pipeline::run`). Measures the policies alone:
//! building the request and its context, running every stage, the stub's
//! answer.

// The allocator the `tollgate` binary runs with (src/main.rs), so the
// figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

use tollgate::body::{self, Body};
use tollgate::context::RequestContext;
use tollgate::credentials::Credentials;
use tollgate::policy::{self, CompileCx, OperationService, RoleTable};
use tollgate::stack::{Pipeline, Terminal};

const KEY: &str = "tk_live_bench_0123456789abcdef";

fn chain(with_rate_limit: bool) -> Pipeline {
    let yaml = format!(
        r#"version: 1
listen: 127.0.0.1:0
roles: [reader, admin, suspended]
clients:
  - id: bench-client
    roles: [reader]
    api_keys: [{{ sha256: {} }}]
policies:
  screen: {{ type: ip, allow: [127.0.0.0/8, 10.0.0.0/8], deny: [10.66.0.0/16] }}
  keyed: {{ type: auth, methods: [api_key] }}
  readers: {{ type: roles, allow: [reader, admin], deny: [suspended] }}
  tenant:
    type: headers
    require: [X-Tenant]
    match: {{ X-Tenant: "[a-z0-9-]{{1,32}}" }}
    forbid: [X-Debug]
    request: {{ remove: [Cookie], set: {{ X-Caller: "${{client.id}}" }} }}
    response: {{ remove: [Server] }}
{}"#,
        hex::encode(Sha256::digest(KEY.as_bytes())),
        if with_rate_limit {
            "  per-client: { type: rate_limit, limit: 1000000000, window: 1s, key: client }\n"
        } else {
            ""
        }
    );
    let loaded = tollgate::config::load_str(Path::new("bench.yaml"), &yaml).expect("config");
    let config = &loaded.config;
    let roles = RoleTable::new(config.roles.clone());
    let clock = tollgate::clock::SystemClock::shared();
    let client = tollgate::proxy::build_client(None).expect("client");
    let jwks = tollgate::credentials::jwks::JwksRegistry::new(client, clock.clone());
    let (credentials, errors) = Credentials::build(config, &roles, Path::new("."), &jwks);
    assert!(errors.is_empty(), "{errors:?}");
    let mut cx = CompileCx::new(config, &roles, &clock, Path::new("."))
        .with_credentials(Arc::new(credentials));
    let compiled: Vec<_> = config
        .policies
        .iter()
        .map(|(name, def)| policy::compile(def, name, &mut cx).expect("policy compiles"))
        .collect();
    let terminal = OperationService::new(tower::service_fn(|req: Request<Body>| async move {
        let (parts, _) = req.into_parts();
        let mut response = Response::new(body::empty());
        *response.extensions_mut() = parts.extensions;
        Ok(response)
    }));
    Pipeline::new(&compiled, Terminal::Service(terminal))
}

fn request() -> (Request<Body>, RequestContext) {
    let req = Request::get("/employees/42")
        .header("x-api-key", KEY)
        .header("x-tenant", "acme-corp")
        .header("cookie", "session=abc")
        .body(body::empty())
        .expect("request");
    let cx = RequestContext::new(
        HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
        "127.0.0.1:40000".parse().expect("peer"),
        "127.0.0.1".parse().expect("ip"),
    );
    (req, cx)
}

fn bench(c: &mut Criterion) {
    for (name, with_rate_limit) in [
        ("policy_chain/ip+auth(api key)+roles+headers", false),
        (
            "policy_chain/ip+auth(api key)+roles+headers+rate_limit",
            true,
        ),
    ] {
        bench_chain(c, name, with_rate_limit);
    }
}

fn bench_chain(c: &mut Criterion, name: &str, with_rate_limit: bool) {
    let svc = chain(with_rate_limit);
    // Every stage answers without waiting, so the future completes on its
    // first poll: no runtime in the measurement.
    let run = |pipeline: &Pipeline| {
        let (req, mut cx) = request();
        pipeline
            .run(req, &mut cx)
            .now_or_never()
            .expect("ready at once")
    };
    let response = run(&svc);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().contains_key("ratelimit"),
        with_rate_limit,
        "the rate limit ran"
    );
    c.bench_function(name, |b| b.iter(|| black_box(run(&svc))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
