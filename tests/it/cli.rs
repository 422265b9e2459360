//! The `tollgate` binary as a user runs it.

use std::process::Command;

pub(crate) fn tollgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tollgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_every_compile_mistake_as_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "version: 1\nlisten: 127.0.0.1:80800\ntrusted_proxies: [10.0.0.0/33]\napis:\n  - name: dir\n    upstream: ftp://x\n    operations:\n      - { id: get, method: GET, path: /a }\n      - id: put\n        method: \"G E T\"\n        path: /b\n        upstream: http://h/{nope}\n",
    )
    .expect("write");
    let path = file.display().to_string();
    let (code, _, stderr) = tollgate(&["check", "-c", &path]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{path}:2:1: listen: `127.0.0.1:80800` is not an address like 127.0.0.1:8080").as_str(),
            format!("{path}:3:19: trusted_proxies[0]: `10.0.0.0/33` is not a CIDR (like 10.0.0.0/8) or an IP address").as_str(),
            format!("{path}:6:5: apis[0].upstream: `ftp://x`: only http and https upstreams are supported").as_str(),
            format!("{path}:10:9: apis[0].operations[1].method: `G E T` is not an HTTP method").as_str(),
            "4 errors",
        ]
    );
}

#[test]
fn check_reports_mistakes_of_reading_referencing_and_compiling_in_one_run() {
    // One mistake serde finds (a bad duration), one validation finds (an
    // unknown policy), two the compiler finds (a CIDR, a misspelt method):
    // all in one run, and nothing said twice about the bad duration.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("three.yaml");
    std::fs::write(
        &file,
        "\
version: 1
listen: 127.0.0.1:0
policies:
  slow: { type: rate_limit, limit: 5, window: soon }
  office: { type: ip, allow: [10.0.0.0/99] }
apply: [slow, office, missing]
apis:
  - name: dir
    upstream: http://127.0.0.1:9
    operations:
      - { id: get, method: GETT, path: /a }
      - { id: purge, method: PURGE, path: /b }
",
    )
    .expect("write");
    let path = file.display().to_string();
    let (code, _, stderr) = tollgate(&["check", "-c", &path]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 6, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{path}:4:39: policies.slow.window: `soon` is not a duration"
        )),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        format!("{path}:5:31: policies.office.allow[0]: `10.0.0.0/99` is not a CIDR (like 10.0.0.0/8) or an IP address")
    );
    assert!(
        lines[2].starts_with(&format!(
            "{path}:6:23: apply[2]: no policy is named `missing`"
        )),
        "{stderr}"
    );
    assert_eq!(
        lines[3],
        format!("{path}:11:20: apis[0].operations[0].method: `GETT` is not a standard method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE); declare an extension method in `extension_methods`")
    );
    assert!(
        lines[4].starts_with(&format!(
            "{path}:12:22: apis[0].operations[1].method: `PURGE` is not a standard method"
        )),
        "{stderr}"
    );
    assert_eq!(lines[5], "5 errors");

    // Declared, the extension method is accepted.
    let declared = std::fs::read_to_string(&file)
        .expect("read")
        .replace("window: soon", "window: 1m")
        .replace("10.0.0.0/99", "10.0.0.0/8")
        .replace(", missing]", "]")
        .replace("GETT", "GET")
        .replace("apis:", "extension_methods: [PURGE]\napis:");
    std::fs::write(&file, declared).expect("write");
    let (code, _, stderr) = tollgate(&["check", "-c", &path]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn extension_methods_must_be_capitalised_tokens_and_not_standard_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ext.yaml");
    std::fs::write(
        &file,
        "version: 1\nlisten: 127.0.0.1:0\nextension_methods: [GET, purge, \"P Q\"]\napis: []\n",
    )
    .expect("write");
    let path = file.display().to_string();
    let (code, _, stderr) = tollgate(&["check", "-c", &path]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{path}:3:21: extension_methods[0]: `GET` is a standard method: list only others"
            )
            .as_str(),
            format!("{path}:3:26: extension_methods[1]: write `purge` in capitals").as_str(),
            format!("{path}:3:33: extension_methods[2]: `P Q` is not an HTTP method").as_str(),
            "3 errors",
        ]
    );
}

#[test]
fn check_accepts_a_good_config_and_summarises_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("good.yaml");
    std::fs::write(
        &file,
        "version: 1\nlisten: 127.0.0.1:0\napis:\n  - name: dir\n    upstream: http://127.0.0.1:9\n    operations:\n      - { id: get, method: GET, path: '/{id}' }\n",
    )
    .expect("write");
    let (code, stdout, stderr) = tollgate(&["check", "-c", &file.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("ok (1 API, 1 operation, 0 named policies)"),
        "{stdout}"
    );
}

#[test]
fn key_prints_a_key_its_id_and_a_config_line_that_check_accepts() {
    let (code, stdout, _) = tollgate(&["key"]);
    assert_eq!(code, 0);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_string()
    };
    let key = field("key:");
    let config = field("config:");
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    assert!(config.contains(&format!("sha256: {hash}")), "{config}");
    assert!(
        !config.contains(&key),
        "the config line must not hold the key"
    );
    let id = field("id:");
    assert!(!key.contains(&id), "the id is no part of the key");
    assert!(config.contains(&format!("id: {id}")), "{config}");

    // The line, pasted under a client's `api_keys:`, is a valid config.
    let item = config.strip_prefix("- ").expect("a YAML list item");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nlisten: 127.0.0.1:8080\nclients:\n  - id: new-app\n    api_keys:\n      - {item}\napis: []\n"
        ),
    )
    .expect("write");
    let path = file.display().to_string();
    let (code, stdout, stderr) = tollgate(&["check", "-c", &path]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn openapi_prints_the_export_of_the_example_config_in_json_and_yaml() {
    let (code, json, stderr) = tollgate(&["openapi", "-c", "config.example.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.values()))
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    for id in [
        "listEmployees",
        "getEmployee",
        "directoryHealth",
        "scoreLead",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let (code, yaml, _) = tollgate(&["openapi", "-c", "config.example.yaml", "--format", "yaml"]);
    assert_eq!(code, 0);
    let from_yaml: serde_json::Value = serde_yaml::from_str(&yaml).expect("yaml");
    assert_eq!(from_yaml, doc, "the YAML and JSON exports differ");
}

#[test]
fn import_turns_the_platform_spec_into_config_that_checks() {
    let (code, yaml, stderr) = tollgate(&[
        "import",
        "tests/fixtures/tray-platform-api.yaml",
        "--upstream",
        "http://127.0.0.1:9",
        "--name",
        "platform",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("imported.yaml");
    std::fs::write(&file, format!("version: 1\nlisten: 127.0.0.1:0\n{yaml}")).expect("write");
    let (code, stdout, stderr) = tollgate(&["check", "-c", &file.display().to_string()]);
    assert_eq!(code, 0, "{stderr}\n{yaml}");
    assert!(stdout.contains("18 operations"), "{stdout}");
}
