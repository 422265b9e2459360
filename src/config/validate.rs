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
use super::schema::{ApiKeyConfig, PolicyDef, PolicyKind, PolicyRef, StoreKind};
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
                self.api_key(key, &path(&["clients", &c_s, "api_keys", &k.to_string()]));
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
        if let Some(expires) = &key.expires {
            if parse_rfc3339(expires).is_none() {
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
        ]
        .iter()
        .filter(|&&g| g)
        .count();
        if given != 1 {
            self.error(
                &["jwt"],
                "give exactly one of `public_key_file`, `secret_env` or `jwks_file`",
            );
        }
    }

    fn settings(&mut self) {
        let config = &self.loaded.config;
        if config.state.store == StoreKind::Redis && config.state.redis_url.is_none() {
            self.error(&["state", "store"], "`store: redis` needs `redis_url`");
        }
        if config.limits.max_connections < 1 {
            self.error(
                &["limits", "max_connections"],
                "`max_connections` must be at least 1",
            );
        }
    }

    /// Roles named inside the named policies (wherever they were written).
    fn named_policies(&mut self) {
        for (name, def) in &self.loaded.config.policies {
            for (sub, role) in roles_used(def) {
                if !self.is_declared(&role) {
                    let message = undeclared(&role);
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
                    if !self.loaded.config.policies.contains_key(name) {
                        let message = self.unknown_policy(name);
                        self.error(&entry, message);
                    }
                }
                PolicyRef::Inline(def) => {
                    for (sub, role) in roles_used(def) {
                        if !self.is_declared(&role) {
                            let mut full = entry.clone();
                            full.extend(sub);
                            self.error(&full, undeclared(&role));
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
            if !self.loaded.config.policies.contains_key(name) {
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
    format!("role `{role}` is not declared in `roles`")
}

/// The roles a definition names, each with its path inside the definition.
fn roles_used(def: &PolicyDef) -> Vec<(Vec<String>, String)> {
    let listed = |field: &str, roles: &[String]| -> Vec<(Vec<String>, String)> {
        roles
            .iter()
            .enumerate()
            .map(|(i, role)| (path(&[field, &i.to_string()]), role.clone()))
            .collect()
    };
    match &def.kind {
        PolicyKind::Roles(c) => {
            let mut out = listed("allow", &c.allow);
            out.extend(listed("deny", &c.deny));
            out
        }
        PolicyKind::RateLimit(c) => listed("for_roles", &c.for_roles),
        _ => Vec::new(),
    }
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

/// Parses an RFC 3339 date-time (`2026-01-31T12:00:00Z`,
/// `2026-01-31T12:00:00.5+02:00`) into seconds since the Unix epoch.
/// `None` when it is not one. Leap seconds (`:60`) count as the next second.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Optional fraction, then the offset.
    let mut i = 19;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && sep(i + 3, b":") => {
            let (h, m) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second - offset * 60)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:30:15.25z"),
            Some(1_709_209_815)
        );
        assert_eq!(parse_rfc3339("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:00:00-01:00"), Some(0));
    }

    #[test]
    fn malformed_rfc3339_times_are_refused() {
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+2:00",
            "2024-01-01T00:00:00Zjunk",
            "２０２４-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
