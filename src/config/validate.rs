//! Checks of a parsed config that serde cannot make: the version, unique
//! names, references (roles, policy names, `skip`), and settings that need
//! each other. Every mistake is collected with its position.
//!
//! Not checked here, because the gateway compiler parses them anyway and
//! one parse should own each error: listen addresses, CIDRs, URLs, HTTP
//! methods, path templates and route conflicts, regexes, and each policy
//! kind's own fields.

use std::collections::{BTreeSet, HashMap};

use super::load::{ConfigError, LoadedConfig};
use super::schema::{ApiKeyConfig, PolicyRef, StoreKind};
use crate::policy::RoleTable;

/// Every mistake found, in no particular order (the loader sorts them).
pub(crate) fn validate(loaded: &LoadedConfig) -> Vec<ConfigError> {
    let mut v = Validator {
        loaded,
        errors: Vec::new(),
    };
    v.version();
    v.roles();
    v.clients();
    v.jwt();
    v.settings();
    v.named_policies();
    v.apis();
    v.errors
}

struct Validator<'a> {
    loaded: &'a LoadedConfig,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error<S: AsRef<str>>(&mut self, path: &[S], message: impl Into<String>) {
        self.errors.push(self.loaded.error_at(path, message));
    }

    /// Where `path` was written, as `line L, column C`, for messages that
    /// name a first occurrence.
    fn place(&self, path: &[String]) -> String {
        let at = self.loaded.error_at(path, "");
        format!("line {}, column {}", at.line, at.column)
    }

    fn version(&mut self) {
        let version = self.loaded.config.version;
        if version != 1 {
            self.error(
                &["version"],
                format!("unsupported version {version}; this gateway reads version 1"),
            );
        }
    }

    fn roles(&mut self) {
        let roles = &self.loaded.config.roles;
        if roles.len() > RoleTable::MAX {
            self.error(
                &["roles"],
                format!(
                    "{} roles are declared; at most {} are supported",
                    roles.len(),
                    RoleTable::MAX
                ),
            );
        }
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, role) in roles.iter().enumerate() {
            if let Some(&j) = first.get(role.as_str()) {
                let at = path(&["roles", &j.to_string()]);
                let message = format!(
                    "role `{role}` is declared twice (first at {})",
                    self.place(&at)
                );
                self.error(&["roles", &i.to_string()], message);
            } else {
                first.insert(role, i);
            }
        }
    }

    fn clients(&mut self) {
        let clients = &self.loaded.config.clients;
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut key_ids: HashMap<&str, Vec<String>> = HashMap::new();
        for (c, client) in clients.iter().enumerate() {
            let c_s = c.to_string();
            if let Some(&j) = first.get(client.id.as_str()) {
                let at = path(&["clients", &j.to_string(), "id"]);
                let message = format!(
                    "client id `{}` is already used (at {})",
                    client.id,
                    self.place(&at)
                );
                self.error(&["clients", &c_s, "id"], message);
            } else {
                first.insert(&client.id, c);
            }
            for (r, role) in client.roles.iter().enumerate() {
                self.declared_role(role, &path(&["clients", &c_s, "roles", &r.to_string()]));
            }
            for (k, key) in client.api_keys.iter().enumerate() {
                let at = path(&["clients", &c_s, "api_keys", &k.to_string()]);
                self.api_key(key, &at);
                if let Some(id) = &key.id {
                    if let Some(other) = key_ids.get(id.as_str()) {
                        let message = format!(
                            "key id `{id}` is already used (at {}): usage and logs tell keys apart by it",
                            self.place(other)
                        );
                        self.error(&child(&at, "id"), message);
                    } else {
                        key_ids.insert(id, child(&at, "id"));
                    }
                }
            }
        }
    }

    fn api_key(&mut self, key: &ApiKeyConfig, at: &[String]) {
        match (&key.sha256, &key.env) {
            (Some(_), Some(_)) => {
                self.error(at, "give either `sha256` or `env`, not both")
            }
            (None, None) => self.error(
                at,
                "an API key needs `sha256` (hex of the key's SHA-256) or `env` (a variable holding the key)",
            ),
            _ => {}
        }
        if let Some(hash) = &key.sha256 {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error(
                    &child(at, "sha256"),
                    "`sha256` must be 64 hex digits (`tollgate key` prints one)",
                );
            }
        }
        if let Some(id) = &key.id {
            let fits = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
            if !fits {
                self.error(
                    &child(at, "id"),
                    format!("key id `{id}`: 1 to 64 letters, digits, `-`, `_`, `.` or `:`"),
                );
            }
        }
        if let Some(expires) = &key.expires {
            if crate::calendar::parse_rfc3339(expires).is_none() {
                self.error(
                    &child(at, "expires"),
                    format!("`{expires}` is not an RFC 3339 time such as 2026-01-31T00:00:00Z"),
                );
            }
        }
    }

    fn jwt(&mut self) {
        let Some(jwt) = &self.loaded.config.jwt else {
            return;
        };
        let given = [
            jwt.public_key_file.is_some(),
            jwt.secret_env.is_some(),
            jwt.jwks_file.is_some(),
            jwt.jwks_url.is_some(),
        ]
        .iter()
        .filter(|&&g| g)
        .count();
        if given != 1 {
            self.error(
                &["jwt"],
                "give exactly one of `public_key_file`, `secret_env`, `jwks_file` or `jwks_url`",
            );
        }
        if let Some(url) = &jwt.jwks_url {
            if let Err(message) = crate::credentials::jwks::parse_url(url) {
                self.error(&["jwt", "jwks_url"], message);
            }
        }
    }

    /// `state`: with `store: redis`, exactly one of `redis_url`,
    /// `redis.cluster`, `redis.sentinel`; node URLs of `redis://` or
    /// `rediss://`, one scheme; a CA only for `rediss://`. (The CA file and the
    /// environment variables are read when the store is built.)
    fn state(&mut self) {
        let state = &self.loaded.config.state;
        let redis = state.redis.clone().unwrap_or_default();
        // `redis_url` beside `store: memory` is allowed (DESIGN's example
        // has it): switching the store is then one word.
        if state.store != StoreKind::Redis {
            return;
        }
        let forms = [
            state.redis_url.is_some(),
            !redis.cluster.is_empty(),
            redis.sentinel.is_some(),
        ];
        match forms.iter().filter(|&&f| f).count() {
            // (Worded as before the cluster and sentinel forms existed:
            // the README lists all three.)
            0 => self.error(&["state", "store"], "`store: redis` needs `redis_url`"),
            1 => {}
            _ => self.error(
                &["state", "redis"],
                "give only one of `redis_url`, `redis.cluster` and `redis.sentinel`",
            ),
        }
        // `redis_url` itself is parsed when the store is built (as it was
        // before the other forms): only whether it is TLS matters here.
        let mut tls = Vec::new();
        if let Some(url) = &state.redis_url {
            tls.push(url.starts_with("rediss://"));
        }
        let mut urls: Vec<(Vec<String>, &str)> = Vec::new();
        for (i, url) in redis.cluster.iter().enumerate() {
            urls.push((
                child(&path(&["state", "redis", "cluster"]), &i.to_string()),
                url,
            ));
        }
        if let Some(sentinel) = &redis.sentinel {
            if sentinel.master.trim().is_empty() {
                self.error(
                    &["state", "redis", "sentinel", "master"],
                    "`master` must not be empty",
                );
            }
            if sentinel.nodes.is_empty() {
                self.error(
                    &["state", "redis", "sentinel", "nodes"],
                    "list at least one sentinel",
                );
            }
            for (i, url) in sentinel.nodes.iter().enumerate() {
                urls.push((
                    child(
                        &path(&["state", "redis", "sentinel", "nodes"]),
                        &i.to_string(),
                    ),
                    url,
                ));
            }
        }
        for (at, url) in &urls {
            match url.split_once("://").map(|(scheme, _)| scheme) {
                Some("redis") => tls.push(false),
                Some("rediss") => tls.push(true),
                _ => self.error(at, format!("`{url}` is not a redis:// or rediss:// URL")),
            }
        }
        if tls.contains(&true) && tls.contains(&false) {
            self.error(
                &["state", "redis"],
                "mix of redis:// and rediss:// URLs: use one scheme for every node",
            );
        }
        if redis.ca_file.is_some() && !tls.contains(&true) {
            self.error(
                &["state", "redis", "ca_file"],
                "`ca_file` is for rediss:// URLs, and none is given",
            );
        }
        if redis.username_env.is_some() && redis.password_env.is_none() {
            self.error(
                &["state", "redis", "username_env"],
                "an ACL user needs `password_env` too",
            );
        }
    }

    fn settings(&mut self) {
        let config = &self.loaded.config;
        self.state();
        if config.limits.max_connections < 1 {
            self.error(
                &["limits", "max_connections"],
                "`max_connections` must be at least 1",
            );
        }
        if config.limits.max_connections_per_ip == Some(0) {
            self.error(
                &["limits", "max_connections_per_ip"],
                "`max_connections_per_ip` must be at least 1 (leave it out for no cap)",
            );
        }
        if let Some(workers) = config.workers {
            if !(1..=1024).contains(&workers) {
                self.error(&["workers"], "`workers` must be between 1 and 1024");
            }
        }
        // A zero timeout would cut off every request, not just slow ones.
        let limits = &config.limits;
        for (field, value) in [
            ("header_read_timeout", limits.header_read_timeout),
            ("body_read_timeout", limits.body_read_timeout),
            ("upstream_timeout", limits.upstream_timeout),
            ("idle_timeout", limits.idle_timeout),
            ("http2_ping_interval", limits.http2_ping_interval),
            ("send_timeout", limits.send_timeout),
            ("body_deadline", limits.body_deadline),
        ] {
            if value.0.is_zero() {
                self.error(
                    &["limits", field],
                    format!("`{field}` must be longer than zero"),
                );
            }
        }
    }

    /// Roles named inside the named policies (wherever they were written).
    fn named_policies(&mut self) {
        for (name, def) in &self.loaded.config.policies {
            for (sub, role) in def.config.roles_used() {
                if !self.is_declared(role) {
                    let message = undeclared(role);
                    self.errors
                        .push(self.loaded.policy_error(name, &sub, message));
                }
            }
        }
    }

    fn apis(&mut self) {
        let config = &self.loaded.config;
        let gateway_apply = path(&["apply"]);
        self.apply_list(&config.apply, &gateway_apply);
        let gateway_names = names(&config.apply);

        let mut api_names: HashMap<&str, usize> = HashMap::new();
        let mut operation_ids: HashMap<&str, (usize, usize)> = HashMap::new();
        for (a, api) in config.apis.iter().enumerate() {
            let a_s = a.to_string();
            let api_at = path(&["apis", &a_s]);
            if let Some(&j) = api_names.get(api.name.as_str()) {
                let first = path(&["apis", &j.to_string(), "name"]);
                let message = format!(
                    "API name `{}` is already used (at {})",
                    api.name,
                    self.place(&first)
                );
                self.error(&child(&api_at, "name"), message);
            } else {
                api_names.insert(&api.name, a);
            }
            let base = &api.base_path;
            if !base.is_empty() && (!base.starts_with('/') || base.ends_with('/')) {
                self.error(
                    &child(&api_at, "base_path"),
                    format!("`{base}` must start with `/` and not end with `/` (or be empty)"),
                );
            }

            self.apply_list(&api.apply, &child(&api_at, "apply"));
            self.skips(
                &api.skip,
                &child(&api_at, "skip"),
                &gateway_names,
                "the gateway's",
            );
            let mut inherited = gateway_names.clone();
            inherited.extend(names(&api.apply));

            for (o, op) in api.operations.iter().enumerate() {
                let op_at = path(&["apis", &a_s, "operations", &o.to_string()]);
                if let Some(&(fa, fo)) = operation_ids.get(op.id.as_str()) {
                    let first =
                        path(&["apis", &fa.to_string(), "operations", &fo.to_string(), "id"]);
                    let message = format!(
                        "operation id `{}` is already used by {} (at {})",
                        op.id,
                        super::display_path(&first[..first.len() - 1]),
                        self.place(&first)
                    );
                    self.error(&child(&op_at, "id"), message);
                } else {
                    operation_ids.insert(&op.id, (a, o));
                }
                self.apply_list(&op.apply, &child(&op_at, "apply"));
                self.skips(
                    &op.skip,
                    &child(&op_at, "skip"),
                    &inherited,
                    "the gateway's or this API's",
                );
            }
        }
    }

    /// Each entry of an `apply` list: a name must be defined; an inline
    /// definition may only name declared roles.
    fn apply_list(&mut self, refs: &[PolicyRef], at: &[String]) {
        for (i, r) in refs.iter().enumerate() {
            let entry = child(at, &i.to_string());
            match r {
                PolicyRef::Name(name) => {
                    if !self.loaded.defines_policy(name) {
                        let message = self.unknown_policy(name);
                        self.error(&entry, message);
                    }
                }
                PolicyRef::Inline(def) => {
                    for (sub, role) in def.config.roles_used() {
                        if !self.is_declared(role) {
                            let mut full = entry.clone();
                            full.extend(sub);
                            self.error(&full, undeclared(role));
                        }
                    }
                }
            }
        }
    }

    /// `skip` may only name a policy the level inherits from outside
    /// (`outer`): skipping anything else is a typo or a stale entry, and
    /// would silently leave the policy on.
    fn skips(&mut self, skip: &[String], at: &[String], outer: &BTreeSet<&str>, whose: &str) {
        for (i, name) in skip.iter().enumerate() {
            let entry = child(at, &i.to_string());
            if !self.loaded.defines_policy(name) {
                let message = self.unknown_policy(name);
                self.error(&entry, message);
            } else if !outer.contains(name.as_str()) {
                self.error(
                    &entry,
                    format!("`{name}` is not in {whose} `apply`, so there is nothing to skip"),
                );
            }
        }
    }

    fn unknown_policy(&self, name: &str) -> String {
        let known: Vec<&str> = self
            .loaded
            .config
            .policies
            .keys()
            .map(String::as_str)
            .collect();
        if known.is_empty() {
            format!("no policy is named `{name}` (none are defined)")
        } else {
            format!(
                "no policy is named `{name}` (defined: {})",
                known.join(", ")
            )
        }
    }

    fn declared_role(&mut self, role: &str, at: &[String]) {
        if !self.is_declared(role) {
            self.error(at, undeclared(role));
        }
    }

    fn is_declared(&self, role: &str) -> bool {
        self.loaded.config.roles.iter().any(|r| r == role)
    }
}

fn undeclared(role: &str) -> String {
    RoleTable::undeclared(role)
}

/// The policy names an `apply` list uses (inline definitions have none).
fn names(refs: &[PolicyRef]) -> BTreeSet<&str> {
    refs.iter()
        .filter_map(|r| match r {
            PolicyRef::Name(name) => Some(name.as_str()),
            PolicyRef::Inline(_) => None,
        })
        .collect()
}

fn path(segments: &[&str]) -> Vec<String> {
    segments.iter().map(|s| s.to_string()).collect()
}

fn child(at: &[String], key: &str) -> Vec<String> {
    let mut out = at.to_vec();
    out.push(key.to_string());
    out
}
