//! Config mistakes and where they are reported: each test writes one (or a
//! few) mistakes into an otherwise valid config and asserts the exact
//! `FILE:LINE:COL: path: message` the user sees.

use std::path::{Path, PathBuf};

use tollgate::config::{load_file, load_str, ConfigError};

/// Loads `yaml` as `gw.yaml` and returns the rendered errors.
fn errors(yaml: &str) -> Vec<String> {
    match load_str(Path::new("gw.yaml"), yaml) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ConfigError::to_string).collect(),
    }
}

/// Asserts exactly one error, starting with `prefix`.
#[track_caller]
fn assert_one(yaml: &str, prefix: &str) {
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    assert!(
        errors[0].starts_with(prefix),
        "expected an error starting with\n  {prefix}\ngot\n  {}",
        errors[0]
    );
}

/// A small valid config; tests replace one line of it.
const VALID: &str = "\
version: 1
listen: 127.0.0.1:8080
roles: [admin, reader]
clients:
  - id: hr-portal
    roles: [reader]
    api_keys:
      - env: HR_PORTAL_KEY
policies:
  key-required: { type: auth, methods: [api_key] }
  per-client: { type: rate_limit, limit: 5, window: 1m }
apply: [key-required]
apis:
  - name: directory
    base_path: /employees
    upstream: http://127.0.0.1:9090
    apply: [per-client]
    operations:
      - id: getEmployee
        method: GET
        path: /{id}
      - id: health
        method: GET
        path: /health
        skip: [key-required]
";

/// `VALID` with every occurrence of `from` replaced by `to` (each test
/// checks that the replacement happened).
#[track_caller]
fn valid_with(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "`{from}` is not in the base config");
    VALID.replace(from, to)
}

#[test]
fn the_base_config_is_valid() {
    assert_eq!(errors(VALID), Vec::<String>::new());
}

#[test]
fn a_yaml_syntax_error_is_reported_where_the_parser_stopped() {
    assert_one(
        &valid_with("roles: [admin, reader]", "roles: [admin, reader"),
        "gw.yaml:4:8: illegal placement of ':' indicator",
    );
}

#[test]
fn a_key_written_twice_is_reported_at_its_second_writing() {
    assert_one(
        &valid_with("listen: 127.0.0.1:8080\n", "listen: 127.0.0.1:8080\nlisten: 0.0.0.0:80\n"),
        "gw.yaml:3:1: listen: `listen` is written twice in this mapping (first at line 2, column 1)",
    );
}

#[test]
fn an_unknown_top_level_key_points_at_the_key() {
    assert_one(
        &valid_with(
            "listen: 127.0.0.1:8080\n",
            "listen: 127.0.0.1:8080\nlisen: 1\n",
        ),
        "gw.yaml:3:1: lisen: unknown field `lisen`, expected one of `version`, `listen`,",
    );
}

#[test]
fn an_unknown_key_in_an_operation_points_at_the_key() {
    assert_one(
        &valid_with(
            "        path: /health\n",
            "        path: /health\n        methd: GET\n",
        ),
        "gw.yaml:25:9: apis[0].operations[1].methd: unknown field `methd`, expected one of `id`,",
    );
}

#[test]
fn a_wrong_type_points_at_the_key_inside_the_policy() {
    assert_one(
        &valid_with("limit: 5,", "limit: many,"),
        "gw.yaml:11:35: policies.per-client.limit: invalid type: string \"many\", expected u64",
    );
}

#[test]
fn a_missing_required_field_points_at_the_mapping_that_lacks_it() {
    assert_one(
        &valid_with(
            "        method: GET\n        path: /{id}\n",
            "        path: /{id}\n",
        ),
        "gw.yaml:19:9: apis[0].operations[0]: missing field `method`",
    );
}

#[test]
fn a_bad_duration_points_at_its_key() {
    assert_one(
        &valid_with("window: 1m", "window: 1 minute"),
        "gw.yaml:11:45: policies.per-client.window: `1 minute` has an unknown unit ` minute`",
    );
}

#[test]
fn an_unknown_policy_type_points_at_type() {
    assert_one(
        &valid_with("type: auth", "type: authn"),
        "gw.yaml:10:19: policies.key-required.type: unknown policy type `authn`, expected one of auth,",
    );
}

#[test]
fn an_unknown_policy_name_in_apply_points_at_the_entry() {
    assert_one(
        &valid_with("    apply: [per-client]", "    apply: [per-clinet]"),
        "gw.yaml:17:13: apis[0].apply[0]: no policy is named `per-clinet` (defined: key-required, per-client)",
    );
}

#[test]
fn an_undeclared_role_of_a_client_points_at_the_role() {
    assert_one(
        &valid_with("    roles: [reader]", "    roles: [reeder]"),
        "gw.yaml:6:13: clients[0].roles[0]: role `reeder` is not declared in `roles`",
    );
}

#[test]
fn an_undeclared_role_in_an_inline_roles_policy_points_at_the_role() {
    assert_one(
        &valid_with(
            "        path: /{id}\n",
            "        path: /{id}\n        apply: [{ type: roles, allow: [reader, auditor] }]\n",
        ),
        "gw.yaml:22:48: apis[0].operations[0].apply[0].allow[1]: role `auditor` is not declared in `roles`",
    );
}

#[test]
fn a_duplicate_operation_id_says_where_the_first_one_is() {
    assert_one(
        &valid_with("id: health", "id: getEmployee"),
        "gw.yaml:22:9: apis[0].operations[1].id: operation id `getEmployee` is already used by \
         apis[0].operations[0] (at line 19, column 9)",
    );
}

#[test]
fn a_skip_of_a_policy_that_is_not_inherited_is_an_error() {
    assert_one(
        &valid_with(
            "skip: [key-required]",
            "skip: [key-required, per-client, key-required2]",
        ),
        "gw.yaml:25:42: apis[0].operations[1].skip[2]: no policy is named `key-required2`",
    );
    let yaml = valid_with("apply: [key-required]\n", "apply: []\n");
    assert_one(
        &yaml,
        "gw.yaml:25:16: apis[0].operations[1].skip[0]: `key-required` is not in the gateway's or \
         this API's `apply`, so there is nothing to skip",
    );
}

#[test]
fn three_independent_mistakes_are_all_reported_in_file_order() {
    let yaml = valid_with("version: 1", "version: one")
        .replace("limit: 5,", "limit: 5, burst: lots,")
        .replace(
            "        method: GET\n        path: /health",
            "        method: GET",
        );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:1:1: version: invalid type: string \"one\", expected u32",
            "gw.yaml:11:45: policies.per-client.burst: invalid type: string \"lots\", expected u64",
            "gw.yaml:22:9: apis[0].operations[1]: missing field `path`",
        ]
    );
}

#[test]
fn two_bad_fields_of_one_struct_are_two_errors() {
    let yaml = valid_with(
        "listen: 127.0.0.1:8080\n",
        "listen: 127.0.0.1:8080\nlimits:\n  max_body: big\n  upstream_timeout: 30\n",
    );
    assert_eq!(
        errors(&yaml),
        [
            "gw.yaml:4:3: limits.max_body: `big` is not a size; write e.g. `512`, `64KiB`, `1MiB`",
            "gw.yaml:5:3: limits.upstream_timeout: invalid type: integer `30`, expected a duration \
             such as `30s`, `250ms`, `1m`, `1h` or `1d`",
        ]
    );
}

#[test]
fn semantic_checks_report_every_mistake_with_its_place() {
    let yaml = "\
version: 2
listen: 127.0.0.1:8080
state: { store: redis }
roles: [a, a]
clients:
  - id: c
    api_keys:
      - sha256: abc
      - { env: K, sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 }
      - { env: K, expires: tomorrow }
  - id: c
jwt: { algorithms: [RS256] }
apis:
  - name: x
    base_path: /x/
    skip: [p]
    operations: []
  - name: x
    operations: []
policies:
  p: { type: auth, methods: [jwt] }
";
    assert_eq!(
        errors(yaml),
        [
            "gw.yaml:1:1: version: unsupported version 2; this gateway reads version 1",
            "gw.yaml:3:10: state.store: `store: redis` needs `redis_url`",
            "gw.yaml:4:12: roles[1]: role `a` is declared twice (first at line 4, column 9)",
            "gw.yaml:8:9: clients[0].api_keys[0].sha256: `sha256` must be 64 hex digits (`tollgate key` prints one)",
            "gw.yaml:9:9: clients[0].api_keys[1]: give either `sha256` or `env`, not both",
            "gw.yaml:10:19: clients[0].api_keys[2].expires: `tomorrow` is not an RFC 3339 time such as 2026-01-31T00:00:00Z",
            "gw.yaml:11:5: clients[1].id: client id `c` is already used (at line 6, column 5)",
            "gw.yaml:12:1: jwt: give exactly one of `public_key_file`, `secret_env`, `jwks_file` or `jwks_url`",
            "gw.yaml:15:5: apis[0].base_path: `/x/` must start with `/` and not end with `/` (or be empty)",
            "gw.yaml:16:12: apis[0].skip[0]: `p` is not in the gateway's `apply`, so there is nothing to skip",
            "gw.yaml:18:5: apis[1].name: API name `x` is already used (at line 14, column 5)",
        ]
    );
}

#[test]
fn error_at_and_policy_error_point_at_written_nodes_or_their_parent() {
    let loaded = load_str(Path::new("gw.yaml"), VALID).expect("valid");
    let at = loaded.error_at(&["apis", "0", "operations", "1", "path"], "bad path");
    assert_eq!(
        at.to_string(),
        "gw.yaml:24:9: apis[0].operations[1].path: bad path"
    );
    // `upstream` is not written on the operation: its mapping is reported.
    let at = loaded.error_at(&["apis", "0", "operations", "0", "upstream"], "no upstream");
    assert_eq!((at.line, at.column), (19, 9));
    let at = loaded.policy_error("per-client", &["window"], "too short");
    assert_eq!(
        at.to_string(),
        "gw.yaml:11:45: policies.per-client.window: too short"
    );
}

// === include ===

/// A directory holding `gw.yaml` and policy files; returns the config path.
fn write_dir(dir: &Path, config: &str, files: &[(&str, &str)]) -> PathBuf {
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write policy file");
    }
    let config_path = dir.join("gw.yaml");
    std::fs::write(&config_path, config).expect("write config");
    config_path
}

fn file_errors(config: &Path) -> Vec<String> {
    match load_file(config) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ConfigError::to_string).collect(),
    }
}

const WITH_INCLUDE: &str = "\
version: 1
listen: 127.0.0.1:8080
roles: [reader]
include: [policies/*.yaml]
apply: [key-required, per-client]
apis: []
";

const AUTH_FILE: &str = "\
# who is calling
key-required:
  type: auth
  methods: [api_key]
";

const LIMITS_FILE: &str = "\
per-client:
  type: rate_limit
  limit: 5
  window: 1m
  for_roles: [reader]
";

#[test]
fn included_policies_are_loaded_and_located_in_their_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_dir(
        dir.path(),
        WITH_INCLUDE,
        &[
            ("policies/auth.yaml", AUTH_FILE),
            ("policies/limits.yaml", LIMITS_FILE),
        ],
    );
    let loaded = load_file(&config).expect("valid");
    let names: Vec<&str> = loaded.config.policies.keys().map(String::as_str).collect();
    assert_eq!(names, ["key-required", "per-client"]);
    let err = loaded.policy_error("per-client", &["window"], "too short");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4:3: per-client.window: too short",
            dir.path().join("policies/limits.yaml").display()
        )
    );
}

#[test]
fn an_error_inside_an_included_file_is_reported_with_that_files_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_dir(
        dir.path(),
        WITH_INCLUDE,
        &[
            ("policies/auth.yaml", AUTH_FILE),
            (
                "policies/limits.yaml",
                &LIMITS_FILE.replace("for_roles: [reader]", "for_roles: [reader, writer]"),
            ),
        ],
    );
    assert_eq!(
        file_errors(&config),
        [format!(
            "{}:5:23: per-client.for_roles[1]: role `writer` is not declared in `roles`",
            dir.path().join("policies/limits.yaml").display()
        )]
    );
    // A parse error in the file is placed in the file too.
    std::fs::write(
        dir.path().join("policies/auth.yaml"),
        AUTH_FILE.replace("methods: [api_key]", "methods: [api_key]\n  header: X-Key"),
    )
    .expect("write");
    let errors = file_errors(&config);
    assert_eq!(
        errors[0],
        format!(
            "{}:5:3: key-required.header: unknown field `header`, expected one of `methods`, \
             `api_key`, `forward_credentials`",
            dir.path().join("policies/auth.yaml").display()
        )
    );
}

#[test]
fn a_glob_matching_nothing_is_an_error_at_its_include_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_dir(
        dir.path(),
        &WITH_INCLUDE.replace("[policies/*.yaml]", "[policies/*.yaml, extra/*.yml]"),
        &[
            ("policies/auth.yaml", AUTH_FILE),
            ("policies/limits.yaml", LIMITS_FILE),
        ],
    );
    assert_eq!(
        file_errors(&config),
        [format!(
            "{}:4:28: include[1]: `extra/*.yml` matches no file",
            config.display()
        )]
    );
}

#[test]
fn a_policy_defined_twice_is_an_error_naming_both_places() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_dir(
        dir.path(),
        &format!(
            "{WITH_INCLUDE}policies:\n  per-client: {{ type: quota, limit: 5, period: day }}\n"
        ),
        &[
            ("policies/auth.yaml", AUTH_FILE),
            ("policies/limits.yaml", LIMITS_FILE),
            (
                "policies/more.yaml",
                "key-required: { type: auth, methods: [jwt] }\n",
            ),
        ],
    );
    let policies = dir.path().join("policies");
    assert_eq!(
        file_errors(&config),
        [
            format!(
                "{}:1:1: per-client: policy `per-client` is already defined at {}:8:3",
                policies.join("limits.yaml").display(),
                config.display()
            ),
            format!(
                "{}:1:1: key-required: policy `key-required` is already defined at {}:2:1",
                policies.join("more.yaml").display(),
                policies.join("auth.yaml").display()
            ),
        ]
    );
}
