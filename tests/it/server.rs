//! The listener: TLS with ALPN (h2 and http/1.1), https upstreams trusted
//! through `upstream_tls.ca_file`, the connection cap and the header-read
//! timeout against slowloris.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A self-signed certificate for 127.0.0.1, written to a temp dir.
struct TestCert {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl TestCert {
    fn new() -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_pem = ck.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).expect("write key");
        TestCert { dir, cert_pem }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.cert_pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

#[tokio::test]
async fn tls_listener_serves_http2_by_alpn_and_http1_without_it() {
    let up = Upstream::start().await;
    let cert = TestCert::new();
    let extra = format!(
        "tls: {{ cert_file: {}, key_file: {} }}",
        cert.path("cert.pem"),
        cert.path("key.pem")
    );
    let gw = gateway(&simple_config(&up.url(), &extra)).await;
    let url = format!("https://127.0.0.1:{}/employees/5", gw.addr.port());

    for offers_h2 in [true, false] {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cert.client_config())
            .https_only();
        // ALPN offers h2 and http/1.1, or http/1.1 alone.
        let (https, version) = if offers_h2 {
            (builder.enable_all_versions().build(), http::Version::HTTP_2)
        } else {
            (builder.enable_http1().build(), http::Version::HTTP_11)
        };
        let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);
        let response = client
            .request(Request::get(&url).body(Full::default()).expect("request"))
            .await
            .expect("TLS answer");
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        assert_eq!(up.last().headers["x-forwarded-proto"], "https");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_is_trusted_through_ca_file() {
    // The upstream: the gateway itself over TLS, forwarding to a plain upstream.
    let up = Upstream::start().await;
    let cert = TestCert::new();
    let tls = format!(
        "tls: {{ cert_file: {}, key_file: {} }}",
        cert.path("cert.pem"),
        cert.path("key.pem")
    );
    let inner = gateway(&simple_config(&up.url(), &tls)).await;
    let inner_url = format!("https://127.0.0.1:{}", inner.addr.port());

    let outer_config = |extra: &str| {
        format!(
            "version: 1\nlisten: 127.0.0.1:0\n{extra}\napis:\n  - name: front\n    upstream: {inner_url}\n    operations:\n      - {{ id: get, method: GET, path: '/employees/{{id}}' }}\n"
        )
    };
    let trusting = format!("upstream_tls: {{ ca_file: {} }}", cert.path("cert.pem"));
    let outer = gateway(&outer_config(&trusting)).await;
    let got = outer.get("/employees/3").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(up.last().uri, "/3");

    // Without the CA the same upstream is refused: 502, never a plain-text fallback.
    let untrusting = gateway(&outer_config("")).await;
    untrusting
        .get("/employees/3")
        .await
        .assert_problem(502, "upstream_unavailable");
    for gw in [outer, untrusting, inner] {
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn connections_past_max_connections_wait_for_a_free_slot() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(&up.url(), "limits: { max_connections: 1 }")).await;
    // The first connection holds the only slot.
    let first = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(first))
            .await
            .expect("handshake");
    let driver = tokio::spawn(conn);
    let ok = sender
        .send_request(
            Request::get("/employees/1")
                .header("host", "t")
                .body(Full::default())
                .expect("req"),
        )
        .await
        .expect("first answered");
    assert_eq!(ok.status(), 200);

    // A second connection is accepted by the kernel but not served...
    let url = gw.url("/employees/2");
    let second = tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        client
            .request(Request::get(url).body(Full::default()).expect("req"))
            .await
            .map(|r| r.status())
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), async {
        while up.count() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        waited.is_err(),
        "the second connection was served while the first held the only slot"
    );
    // ...until the first one closes.
    drop(sender);
    driver.abort();
    let status = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("served")
        .expect("task")
        .expect("answer");
    assert_eq!(status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slowloris_client_is_disconnected_after_header_read_timeout() {
    let up = Upstream::start().await;
    let gw = gateway(&simple_config(
        &up.url(),
        "limits: { header_read_timeout: 200ms }",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /employees/1 HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_json_access_log_names_every_field() {
    // The binary with --log-format json: one JSON object per request.
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port().await.port();
    let config = simple_config(&up.url(), "")
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, config).expect("write config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--log-format", "json", "serve", "-c"])
        .arg(&file)
        .env("RUST_LOG", "tollgate::access=info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tollgate");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("http://127.0.0.1:{port}/employees/77?q=1");
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(r) = client
                .request(Request::get(&url).body(Full::default()).expect("req"))
                .await
            {
                let status = r.status();
                let _ = r.into_body().collect().await;
                return status;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("gateway came up");
    assert_eq!(status, 200);
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let line = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"tollgate::access\"") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("an access-log line");
    let json: serde_json::Value = serde_json::from_str(&line).expect("json line");
    for field in [
        "time",
        "request_id",
        "client_ip",
        "api",
        "operation",
        "method",
        "path",
        "status",
        "duration_ms",
        "upstream_ms",
    ] {
        assert!(json.get(field).is_some(), "{field} missing in {line}");
    }
    assert_eq!(json["operation"], "getEmployee");
    assert_eq!(json["status"], 200);
    assert_eq!(json["path"], "/employees/77");
    let _ = child.kill().await;
}
