//! The API key lifecycle end to end: a client holding two keys during a
//! rotation, expiry at the exact instant on the injected clock, the key id
//! in the access log and usage, and no key material in any output.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tollgate::clock::ManualClock;

const OLD_KEY: &str = "tk_live_hr_2026_0123456789abcdef";
const NEW_KEY: &str = "tk_live_hr_2027_fedcba9876543210";
/// 2027-01-15T08:00:00Z, when the old key expires.
const EXPIRES_SECS: u64 = 1_800_000_000;
const SECOND: u64 = 1_000_000_000;

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One client mid-rotation: the old key expires at 2027-01-15T08:00:00Z,
/// the new one does not; auth on every operation; an admin listener.
fn rotating(upstream: &str) -> String {
    simple_config(
        upstream,
        &format!(
            r#"admin: {{ listen: 127.0.0.1:0 }}
clients:
  - id: hr-portal
    api_keys:
      - {{ sha256: {}, id: hr-2026, expires: "2027-01-15T08:00:00Z" }}
      - {{ sha256: {}, id: hr-2027 }}
apply: [{{ type: auth, methods: [api_key] }}]"#,
            sha256_hex(OLD_KEY),
            sha256_hex(NEW_KEY)
        ),
    )
}

#[tokio::test]
async fn both_keys_work_during_a_rotation_until_the_old_one_expires_to_the_nanosecond() {
    let up = Upstream::start().await;
    let clock = ManualClock::new((EXPIRES_SECS - 3600) * SECOND);
    let app = App::start(&rotating(&up.url()), clock.clone()).await;
    let call = |key: &'static str| {
        let app = &app;
        async move { app.get_with("/employees/7", &[("x-api-key", key)]).await }
    };

    // An hour before: both keys identify the client.
    assert_eq!(call(OLD_KEY).await.status, 200);
    assert_eq!(call(NEW_KEY).await.status, 200);
    // At the expiry instant the old key is still valid...
    clock.set(EXPIRES_SECS * SECOND);
    assert_eq!(call(OLD_KEY).await.status, 200);
    // ...one nanosecond later it is refused, and says why.
    clock.advance(Duration::from_nanos(1));
    let refused = call(OLD_KEY).await;
    let problem = refused.assert_problem(401, "invalid_credentials");
    assert_eq!(problem["detail"], "the API key has expired");
    assert!(!String::from_utf8_lossy(&refused.body).contains(OLD_KEY));
    assert_eq!(call(NEW_KEY).await.status, 200);
    let clients: Vec<_> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-tollgate-client"].clone())
        .collect();
    assert_eq!(clients, ["hr-portal"; 4]);
    app.shutdown().await;
}

#[tokio::test]
async fn the_key_id_shows_in_the_access_log_and_usage_and_the_key_nowhere() {
    let up = Upstream::start().await;
    let clock = ManualClock::new((EXPIRES_SECS - 60) * SECOND);
    let app = App::start(&rotating(&up.url()), clock.clone()).await;
    let logs = capture_logs();
    for key in [OLD_KEY, NEW_KEY, NEW_KEY] {
        let got = app.get_with("/employees/7", &[("x-api-key", key)]).await;
        assert_eq!(got.status, 200);
    }
    // A query-string key and a wrong key: neither may be logged either.
    app.get_with("/employees/7", &[("x-api-key", "tk_live_guess_1234")])
        .await
        .assert_problem(401, "invalid_credentials");
    clock.advance(Duration::from_secs(61));
    app.get_with(
        "/employees/7",
        &[("authorization", &format!("Bearer {OLD_KEY}"))],
    )
    .await
    .assert_problem(401, "invalid_credentials");

    let access = logs.access();
    let ids: Vec<_> = access.iter().map(|l| l["key_id"].clone()).collect();
    let null = serde_json::Value::Null;
    assert_eq!(
        ids,
        [
            "hr-2026".into(),
            "hr-2027".into(),
            "hr-2027".into(),
            null.clone(),
            null
        ]
    );
    assert_eq!(access[0]["client"], "hr-portal");

    let usage = app.admin_get("/admin/usage").await;
    assert_eq!(usage.status, 200);
    let usage_json = usage.json();
    let hr = usage_json["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["client"] == "hr-portal"))
        .expect("hr-portal in usage");
    assert_eq!(
        hr["keys"],
        serde_json::json!({ "hr-2026": 1, "hr-2027": 2 })
    );
    assert_eq!(hr["calls"], 3);

    // The keys, their hashes and the guessed key appear in no output.
    let mut outputs = vec![
        ("logs", logs.text()),
        ("usage", String::from_utf8_lossy(&usage.body).into_owned()),
        ("metrics", app.metrics().await),
    ];
    for path in ["/admin/apis", "/", "/openapi.json", "/admin/bans"] {
        let got = app.admin_get(path).await;
        assert_eq!(got.status, 200, "{path}");
        outputs.push((path, String::from_utf8_lossy(&got.body).into_owned()));
    }
    assert!(outputs[0].1.contains("hr-2027"), "the logs were captured");
    for secret in [OLD_KEY, NEW_KEY, "tk_live_guess_1234"] {
        for (what, text) in &outputs {
            assert!(!text.contains(secret), "{what} holds a key");
            assert!(
                !text.contains(&sha256_hex(secret)),
                "{what} holds a key's hash"
            );
        }
    }
    app.shutdown().await;
}

fn config_errors(yaml: &str) -> Vec<String> {
    match compile(
        std::path::Path::new("keys.yaml"),
        yaml,
        tollgate::clock::SystemClock::shared(),
    ) {
        Ok(_) => panic!("the config compiled"),
        Err(errors) => errors,
    }
}

#[test]
fn a_key_id_used_twice_or_not_a_short_name_is_a_config_error() {
    let yaml = simple_config(
        "http://127.0.0.1:9",
        &format!(
            "clients:\n  - id: a\n    api_keys:\n      - {{ sha256: {}, id: shared }}\n  - id: b\n    api_keys:\n      - {{ sha256: {}, id: shared }}\n      - {{ sha256: {}, id: 'has space' }}",
            sha256_hex(NEW_KEY),
            sha256_hex(OLD_KEY),
            sha256_hex("third"),
        ),
    );
    let errors = config_errors(&yaml);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("keys.yaml:9:")
            && errors[0]
                .contains("clients[1].api_keys[0].id: key id `shared` is already used (at line 6,"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("keys.yaml:10:")
            && errors[1].contains("clients[1].api_keys[1].id: key id `has space`: 1 to 64"),
        "{errors:?}"
    );
}

#[test]
fn a_key_id_that_is_the_key_itself_is_refused_without_repeating_it() {
    let yaml = simple_config(
        "http://127.0.0.1:9",
        &format!(
            "clients:\n  - id: a\n    api_keys:\n      - {{ sha256: {}, id: {NEW_KEY} }}",
            sha256_hex(NEW_KEY),
        ),
    );
    let errors = config_errors(&yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("keys.yaml:6:"), "{errors:?}");
    assert!(
        errors[0].contains("clients[0].api_keys[0].id: this id is the key itself"),
        "{errors:?}"
    );
    assert!(!errors[0].contains(NEW_KEY), "{errors:?}");
}
