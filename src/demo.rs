//! The sample "workflow" upstream behind `tollgate demo`: a few JSON
//! endpoints standing in for workflow trigger URLs (an employee directory
//! and a lead-scoring function), so a newcomer can try the gateway with
//! nothing else installed.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds the sample upstream and serves it on a background task.
pub async fn start_sample_upstream(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req| async {
                    Ok::<_, Infallible>(answer(req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

const EMPLOYEES: &[(&str, &str, &str)] = &[
    ("42", "Ada Lovelace", "Engineering"),
    ("7", "Grace Hopper", "Platform"),
    ("12", "Katherine Johnson", "Analytics"),
];

async fn answer(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let called_by = req
        .headers()
        .get("x-tollgate-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["workflows", "list-employees"]) => {
            let list: Vec<_> = EMPLOYEES
                .iter()
                .map(|(id, name, dept)| json!({"id": id, "name": name, "department": dept}))
                .collect();
            reply(
                StatusCode::OK,
                json!({"employees": list, "called_by": called_by}),
            )
        }
        (Method::GET, ["workflows", "get-employee", id]) => {
            match EMPLOYEES.iter().find(|e| e.0 == *id) {
                Some((id, name, dept)) => reply(
                    StatusCode::OK,
                    json!({"id": id, "name": name, "department": dept, "called_by": called_by}),
                ),
                None => reply(StatusCode::NOT_FOUND, json!({"error": "no such employee"})),
            }
        }
        (Method::POST, ["workflows", "score-lead"]) => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return reply(StatusCode::BAD_REQUEST, json!({"error": "body too large"}))
                }
            };
            let lead: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            let employees = lead["employees"].as_u64().unwrap_or(0);
            let industry_bonus = match lead["industry"].as_str() {
                Some("software") | Some("finance") => 20,
                Some(_) => 5,
                None => 0,
            };
            let score = (employees.min(1000) / 20 + industry_bonus).min(100);
            reply(
                StatusCode::OK,
                json!({"company": lead["company"], "score": score, "called_by": called_by}),
            )
        }
        (Method::GET, ["health"]) => reply(StatusCode::OK, json!({"status": "ok"})),
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "no such workflow"})),
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// What `tollgate demo` prints: where things run and curl lines to paste.
pub fn banner(gateway: SocketAddr, upstream: SocketAddr, mcp_path: Option<&str>) -> String {
    let g = format!("http://{gateway}");
    // One stateless MCP request (revision 2026-07-28): the tools this key may call.
    let mcp = match mcp_path {
        Some(path) => format!(
            r#"
  curl -s {g}{path} -H 'X-API-Key: demo-reader-key' -H 'Content-Type: application/json' \
       -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/list' \
       -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}'   # MCP: the tools this key may call"#
        ),
        None => String::new(),
    };
    format!(
        r#"Tollgate demo
  gateway:          {g}   (config.example.yaml)
  sample workflows: http://{upstream}

Try:
  curl -i {g}/employees/42                                  # 401: no key
  curl -i {g}/employees/42 -H 'X-API-Key: demo-reader-key'   # 200 from the workflow
  curl -i {g}/employees/%2e%2e/admin                        # 404: the path is normalised first
  curl -i -X POST {g}/leads/score -H 'X-API-Key: demo-reader-key' \
       -H 'Content-Type: application/json' -d '{{"company":"Acme","employees":250,"industry":"software"}}'   # 403: admins only
  curl -i -X POST {g}/leads/score -H 'Authorization: Bearer demo-admin-key' \
       -H 'Content-Type: application/json' -d '{{"company":"Acme","employees":250,"industry":"software"}}'
  for i in $(seq 1 12); do curl -s -o /dev/null -w '%{{http_code}} ' {g}/employees/7 -H 'X-API-Key: demo-reader-key'; done; echo   # 429 once 10 calls in a minute are used
  curl -s http://127.0.0.1:9901/openapi.json | head -20      # the OpenAPI 3.1 export (admin listener)
  curl -s http://127.0.0.1:9901/metrics | grep tollgate_requests_total
  curl -s http://127.0.0.1:9901/admin/usage{mcp}
  open http://127.0.0.1:9901/                               # the status page

Stop with Ctrl-C."#
    )
}
