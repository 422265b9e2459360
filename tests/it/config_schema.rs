//! `tollgate schema`: the config's JSON Schema for editors. The committed
//! copies in `schema/` must be what the binary prints, every config and
//! policy file the repository ships must validate against it, and it must
//! refuse what the loader refuses (and accept what it accepts).

use crate::cli::tollgate;
use serde_json::Value;
use std::path::{Path, PathBuf};

const REGENERATE: &str = "cargo run -q -- schema > schema/tollgate.schema.json && \
cargo run -q -- schema --policy-file > schema/tollgate-policies.schema.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What `tollgate schema [args]` prints, as text and as JSON.
fn printed(args: &[&str]) -> (String, Value) {
    let mut all = vec!["schema"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = tollgate(&all);
    assert_eq!(code, 0, "{stderr}");
    let json = serde_json::from_str(&stdout).expect("the schema is JSON");
    (stdout, json)
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft7::meta::validate(schema)
        .unwrap_or_else(|e| panic!("not a valid draft-07 schema: {e}"));
    jsonschema::draft7::new(schema).unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

/// Every violation of `yaml` (text) against the schema, as `path: message`.
fn violations(validator: &jsonschema::Validator, yaml: &str) -> Vec<String> {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("YAML");
    let json = serde_json::to_value(value).expect("YAML as JSON");
    validator
        .iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_committed_schemas_are_what_tollgate_schema_prints() {
    for (args, file) in [
        (&[][..], "schema/tollgate.schema.json"),
        (
            &["--policy-file"][..],
            "schema/tollgate-policies.schema.json",
        ),
    ] {
        let (text, _) = printed(args);
        let committed = std::fs::read_to_string(root().join(file)).unwrap_or_default();
        assert!(
            committed == text,
            "{file} is out of step with the config structs (a config key was added, \
             removed or documented differently). Regenerate it from the repository root:\n\n    \
             {REGENERATE}\n"
        );
    }
}

#[test]
fn every_shipped_config_and_policy_file_validates_and_names_its_schema() {
    let (_, config) = printed(&[]);
    let (_, policy_file) = printed(&["--policy-file"]);
    let (config, policy_file) = (validator(&config), validator(&policy_file));
    let mut checked = 0;
    let configs = std::iter::once(root().join("config.example.yaml")).chain(yaml_files("examples"));
    let policies = yaml_files("policies");
    assert!(!policies.is_empty());
    for (file, validator, schema) in configs.map(|f| (f, &config, "tollgate.schema.json")).chain(
        policies
            .into_iter()
            .map(|f| (f, &policy_file, "tollgate-policies.schema.json")),
    ) {
        let text = std::fs::read_to_string(&file).expect("read");
        let errors = violations(validator, &text);
        assert!(
            errors.is_empty(),
            "{}:\n{}",
            file.display(),
            errors.join("\n")
        );
        // The editor finds the schema through the file's first modeline.
        let modeline = text
            .lines()
            .find_map(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{} has no yaml-language-server line", file.display()));
        let target = file
            .parent()
            .unwrap_or(Path::new("."))
            .join(modeline.trim());
        assert!(
            target.ends_with(schema) && target.exists(),
            "{}: `{modeline}` is not schema/{schema}",
            file.display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "{checked}");
}

/// A config with every policy kind, inline and named, with `report_only`.
const EVERY_KIND: &str = r#"
version: 1
listen: 127.0.0.1:8080
limits: { max_body: 2MiB, max_header_bytes: 16384, upstream_timeout: 250ms }
state: { store: memory, timeout: 50ms }
roles: [reader]
clients:
  - id: app
    roles: [reader]
    api_keys: [{ sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 }]
policies:
  key: { type: auth, methods: [api_key], api_key: { header: X-API-Key, bearer: true } }
  readers: { type: roles, allow: [reader] }
  lan: { type: ip, allow: [10.0.0.0/8], report_only: true }
  hdr: { type: headers, require: [X-Trace], request: { set: { X-Caller: "${client.id}" } } }
  rate: { type: rate_limit, limit: 5, window: 1m, key: "header:X-User" }
  daily: { type: quota, limit: 100, period: day, key: global }
  trap: { type: abuse, watch: [401, 404], threshold: 5, window: 1m, ban: 15m }
  cached: { type: cache, ttl: 30s, vary: [Accept], max_size: 1MiB, max_entry_size: 64KiB, shared: true }
  browser: { type: cors, origins: [https://app.example.com, "https://*.example.com"], methods: [GET], headers: [X-API-Key], expose: [RateLimit], credentials: true, max_age: 10m }
apply: [key, { type: rate_limit, limit: 10, window: 1s }]
apis:
  - name: dir
    upstream: http://127.0.0.1:9
    apply: [browser, readers, lan, hdr, rate, daily, trap, cached]
    operations:
      - { id: get, method: GET, path: "/{id}", skip: [daily], response_schema: { type: object } }
"#;

#[test]
fn what_the_loader_accepts_the_schema_accepts() {
    let (_, schema) = printed(&[]);
    let errors = violations(&validator(&schema), EVERY_KIND);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    tollgate::config::load_str(Path::new("every-kind.yaml"), EVERY_KIND)
        .unwrap_or_else(|e| panic!("the loader refuses it: {e:?}"));
}

#[test]
fn what_the_loader_refuses_the_schema_refuses() {
    let (_, schema) = printed(&[]);
    let validator = validator(&schema);
    for (from, to) in [
        (
            "listen: 127.0.0.1:8080",
            "listen: 127.0.0.1:8080\nlisten_twice: true",
        ),
        ("window: 1m, key", "window: 1 minute, key"),
        ("max_body: 2MiB", "max_body: 2 parsecs"),
        ("type: cache, ttl: 30s", "type: cach, ttl: 30s"),
        (
            "credentials: true, max_age",
            "credentials: yes please, max_age",
        ),
        (
            "type: quota, limit: 100",
            "type: quota, window: 1m, limit: 100",
        ),
        ("key: global }", "key: user }"),
        ("report_only: true", "report_only: sometimes"),
        (
            "{ type: rate_limit, limit: 10, window: 1s }",
            "{ limit: 10, window: 1s }",
        ),
        ("period: day", "period: fortnight"),
        ("shared: true", "shared: true, mode: lru"),
    ] {
        assert!(EVERY_KIND.contains(from), "{from}");
        let bad = EVERY_KIND.replacen(from, to, 1);
        assert!(
            !violations(&validator, &bad).is_empty(),
            "the schema accepts `{to}`"
        );
        assert!(
            tollgate::config::load_str(Path::new("bad.yaml"), &bad).is_err(),
            "the loader accepts `{to}`"
        );
    }
}
