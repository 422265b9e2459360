//! The gateway's credentials: every client's API keys and the JWT verifier,
//! built once per compiled config (not per `auth` policy) from the top-level
//! `clients:` and `jwt:` sections, and shared by every `auth` policy.
//!
//! ```yaml
//! roles: [reader, admin]
//! clients:
//!   - id: hr-portal
//!     roles: [reader]
//!     api_keys:
//!       - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//!       - { env: HR_PORTAL_KEY, id: hr-2025, expires: 2026-01-01T00:00:00Z }
//! jwt:
//!   issuer: https://idp.example.com
//!   audience: tollgate
//!   algorithms: [RS256]
//!   public_key_file: keys/idp.pem    # or secret_env (HS*), jwks_file, or jwks_url
//!   roles_claim: roles
//!   leeway: 60s
//! ```
//!
//! Plain keys are never kept: a key from the environment is hashed at load,
//! and a presented key is looked up by its SHA-256. A key's `id` is what
//! logs and usage show of it. `jwks_file` is read at every compile (so a
//! reload picks up rotated keys); `jwks_url` keys live in a
//! [`JwksSource`](jwks::JwksSource) that outlives reloads.

pub mod jwks;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::clock::Nanos;
use crate::config::schema::{ApiKeyConfig, Config, JwtConfig};
use crate::context::{Client, RoleSet};
use crate::policy::RoleTable;
use jwks::{JwksRegistry, JwksSource};

/// A config mistake: the absolute YAML path (`clients`, `0`, `api_keys`, `1`,
/// `env`) and the message.
pub type PathError = (Vec<String>, String);

/// Every client's keys and roles, and the JWT verifier if `jwt:` is set.
#[derive(Default)]
pub struct Credentials {
    /// API keys by the SHA-256 of the key; the map is keyed by a seeded
    /// foldhash (a digest needs no SipHash: nobody can aim one at a bucket).
    keys: HashMap<[u8; 32], ApiKey, foldhash::fast::RandomState>,
    /// Configured clients' roles, for a JWT whose `sub` names one.
    clients: HashMap<Arc<str>, RoleSet>,
    jwt: Option<JwtVerifier>,
    roles: RoleTable,
}

struct ApiKey {
    hash: [u8; 32],
    client: Arc<str>,
    roles: RoleSet,
    key_id: Option<Arc<str>>,
    /// Refused strictly after this instant.
    expires: Option<Nanos>,
}

/// Verifies tokens with keys and algorithms fixed by the config: the token's
/// header only *selects* among them, so `alg: none` or an HMAC token signed
/// with an RSA public key cannot pass.
struct JwtVerifier {
    keys: KeySource,
    /// One validation per allowed algorithm (the crate insists that every
    /// algorithm of a validation fits the key's family).
    validations: Vec<(Algorithm, Validation)>,
    /// Allowed clock skew for `exp` and `nbf`, in nanoseconds.
    leeway: i128,
    roles_claim: Option<String>,
}

/// Where a verifier's keys come from: fixed at compile (`secret_env`,
/// `public_key_file`, `jwks_file`), or fetched (`jwks_url`).
enum KeySource {
    Fixed(Arc<Vec<JwtKey>>),
    Remote(Arc<JwksSource>),
}

/// One verification key, and what a token must name to use it.
pub(crate) struct JwtKey {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyMiss {
    /// No key of the token's family (and `kid`, if it names one).
    NoneFits,
    /// Several keys fit and the token names none.
    Ambiguous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

// === impl Credentials ===

impl Credentials {
    /// Builds the table from the config, reading `env:` keys, the JWT secret
    /// and key files now. Mistakes come back with absolute paths; whatever
    /// was valid is still built.
    pub fn build(
        config: &Config,
        roles: &RoleTable,
        base_dir: &Path,
        jwks: &JwksRegistry,
    ) -> (Credentials, Vec<PathError>) {
        let mut errors = Vec::new();
        let mut out = Credentials {
            roles: roles.clone(),
            ..Credentials::default()
        };
        for (i, client) in config.clients.iter().enumerate() {
            let at = |rest: &[&str]| {
                let mut p = vec!["clients".to_string(), i.to_string()];
                p.extend(rest.iter().map(|s| s.to_string()));
                p
            };
            let id: Arc<str> = client.id.as_str().into();
            if !is_client_id(&id) {
                errors.push((
                    at(&["id"]),
                    format!("client id `{id}` cannot be sent as a header value ({CLIENT_ID_RULE})"),
                ));
            }
            let mut set = RoleSet::EMPTY;
            for (r, name) in client.roles.iter().enumerate() {
                match roles.bit(name) {
                    Some(bit) => set = set.with(bit),
                    None => errors.push((
                        at(&["roles", &r.to_string()]),
                        format!("role `{name}` is not declared in `roles:`"),
                    )),
                }
            }
            if out.clients.insert(id.clone(), set).is_some() {
                errors.push((at(&["id"]), format!("client `{id}` is declared twice")));
            }
            for (k, key) in client.api_keys.iter().enumerate() {
                let k_s = k.to_string();
                let key_at = |field: &str| at(&["api_keys", &k_s, field]);
                match api_key(key, &id, set, &key_at) {
                    Ok(entry) => match out.keys.entry(entry.hash) {
                        std::collections::hash_map::Entry::Occupied(_) => errors.push((
                            key_at(key_field(key)),
                            "this key is already configured".into(),
                        )),
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(entry);
                        }
                    },
                    Err(e) => errors.push(e),
                }
            }
        }
        if let Some(jwt) = &config.jwt {
            let before = errors.len();
            let verifier = JwtVerifier::build(jwt, base_dir, jwks, &mut errors);
            if errors.len() == before {
                out.jwt = verifier;
            }
        }
        (out, errors)
    }

    /// Whether a `jwt:` section compiled into a verifier.
    pub fn has_jwt(&self) -> bool {
        self.jwt.is_some()
    }

    /// The client a presented API key belongs to. The error is a detail for
    /// the caller; it never contains the key.
    pub fn check_api_key(&self, presented: &[u8], now: Nanos) -> Result<Client, &'static str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // The map's lookup time depends only on the digest, which tells an
        // attacker nothing about any configured key; the final comparison is
        // constant-time all the same.
        let key = self
            .keys
            .get(&digest)
            .filter(|k| bool::from(k.hash.ct_eq(&digest)))
            .ok_or("the API key is not valid")?;
        if key.expires.is_some_and(|at| now > at) {
            return Err("the API key has expired");
        }
        Ok(Client {
            id: key.client.clone(),
            roles: key.roles,
            key_id: key.key_id.clone(),
        })
    }

    /// Verifies tokens of another issuer with the same machinery (keys,
    /// algorithms, JWKS rotation, leeway): the MCP endpoint's OAuth
    /// resource server (`crate::agents::oauth`). No client table: a
    /// token's roles are what its caller maps them from.
    pub fn for_tokens(
        config: &JwtConfig,
        roles: &RoleTable,
        base_dir: &Path,
        jwks: &JwksRegistry,
    ) -> (Credentials, Vec<PathError>) {
        let mut errors = Vec::new();
        let jwt = JwtVerifier::build(config, base_dir, jwks, &mut errors);
        let out = Credentials {
            roles: roles.clone(),
            jwt: jwt.filter(|_| errors.is_empty()),
            ..Credentials::default()
        };
        (out, errors)
    }

    /// The client a bearer token names. The error is a detail for the caller.
    pub fn check_jwt(&self, token: &str, now: Nanos) -> Result<Client, Cow<'static, str>> {
        self.check_jwt_claims(token, now).map(|(client, _)| client)
    }

    /// [`Credentials::check_jwt`], with the token's verified claims.
    pub fn check_jwt_claims(
        &self,
        token: &str,
        now: Nanos,
    ) -> Result<(Client, serde_json::Map<String, serde_json::Value>), Cow<'static, str>> {
        let jwt = self.jwt.as_ref().ok_or("tokens are not accepted")?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the token is malformed or its algorithm is not accepted")?;
        check_header_params(token)?;
        let validation = jwt
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, v)| v)
            .ok_or("the token's algorithm is not accepted")?;
        let keys = jwt.keys.current();
        let key = match key_for(&keys, header.alg, header.kid.as_deref()) {
            Ok(key) => key,
            Err(_) if keys.is_empty() => {
                return Err("the token signing keys are not available yet".into())
            }
            Err(KeyMiss::NoneFits) => return Err("no configured key fits the token".into()),
            Err(KeyMiss::Ambiguous) => {
                return Err("the token does not say which key (`kid`) signed it".into())
            }
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, key, validation,
        )
        .map_err(|e| jwt_error_detail(e.kind()))?;
        let claims = data.claims;
        // In integer nanoseconds: at today's epoch seconds an f64 cannot
        // tell one nanosecond (or a hundred) from the next.
        let now = i128::from(now);
        let instant = |claim: &'static str| match claims.get(claim) {
            None => Ok(None),
            Some(value) => numeric_date_nanos(value)
                .filter(|nanos| (0..=MAX_NUMERIC_DATE_NANOS).contains(nanos))
                .map(Some)
                .ok_or_else(|| {
                    Cow::from(format!(
                        "the token's `{claim}` is not a NumericDate between 1970 and 9999"
                    ))
                }),
        };
        // RFC 7519 §4.1.1: one StringOrURI. The crate would also take an
        // array holding the issuer, which other verifiers read differently.
        if claims.get("iss").is_some_and(|iss| !iss.is_string()) {
            return Err("the token's `iss` is not a single string".into());
        }
        if instant("exp")?.is_some_and(|exp| now > exp + jwt.leeway) {
            return Err("the token has expired".into());
        }
        if instant("nbf")?.is_some_and(|nbf| nbf > now + jwt.leeway) {
            return Err("the token is not valid yet".into());
        }
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or("the token has no `sub` claim")?;
        // The `sub` becomes `X-Tollgate-Client` and `${client.id}`: a value
        // that is not exactly one header value (spaces around it, CR/LF,
        // controls, non-ASCII) would reach the upstream as another client,
        // or silently not at all.
        if !is_client_id(sub) {
            return Err(
                format!("the token's `sub` is not a usable client id ({CLIENT_ID_RULE})").into(),
            );
        }
        let (id, roles) = match self.clients.get_key_value(sub) {
            Some((id, roles)) => (id.clone(), *roles),
            None => {
                let roles = jwt
                    .roles_claim
                    .as_deref()
                    .and_then(|claim| claims.get(claim))
                    .map(|v| self.roles_in_claim(v))
                    .unwrap_or_default();
                (Arc::from(sub), roles)
            }
        };
        let client = Client {
            id,
            roles,
            key_id: None,
        };
        Ok((client, claims))
    }

    /// For keys fetched from `jwks_url`: the source to fetch from before
    /// judging `token`, when the token (of a configured algorithm) names a
    /// key the current set lacks — a rotation the gateway has not seen yet.
    /// Otherwise `None`, after starting a background refresh if the keys
    /// are past their max-age (the caller goes on with the current keys).
    pub fn jwks_to_fetch(&self, token: &str, now: Nanos) -> Option<Arc<JwksSource>> {
        let jwt = self.jwt.as_ref()?;
        let KeySource::Remote(source) = &jwt.keys else {
            return None;
        };
        let header = jsonwebtoken::decode_header(token).ok()?;
        if !jwt.validations.iter().any(|(alg, _)| *alg == header.alg) {
            return None;
        }
        let keys = source.keys();
        match key_for(&keys, header.alg, header.kid.as_deref()) {
            Err(KeyMiss::NoneFits) => Some(source.clone()),
            _ => {
                source.refresh_if_due(now);
                None
            }
        }
    }

    /// Declared roles named by a claim (an array of names, or one
    /// space-separated string); undeclared names are ignored.
    fn roles_in_claim(&self, value: &serde_json::Value) -> RoleSet {
        let add = |set: RoleSet, name: &str| match self.roles.bit(name) {
            Some(bit) => set.with(bit),
            None => set,
        };
        match value {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str())
                .fold(RoleSet::EMPTY, add),
            serde_json::Value::String(s) => s.split_whitespace().fold(RoleSet::EMPTY, add),
            _ => RoleSet::EMPTY,
        }
    }
}

fn key_field(key: &ApiKeyConfig) -> &'static str {
    if key.sha256.is_some() {
        "sha256"
    } else {
        "env"
    }
}

/// One configured key, hashed.
fn api_key(
    key: &ApiKeyConfig,
    client: &Arc<str>,
    roles: RoleSet,
    at: &dyn Fn(&str) -> Vec<String>,
) -> Result<ApiKey, PathError> {
    let hash = match (&key.sha256, &key.env) {
        (Some(hex_digest), None) => {
            let hex_digest = hex_digest.strip_prefix("sha256:").unwrap_or(hex_digest);
            let mut hash = [0u8; 32];
            hex::decode_to_slice(hex_digest.trim(), &mut hash).map_err(|_| {
                (
                    at("sha256"),
                    "expected the 64 hex digits of the key's SHA-256".to_string(),
                )
            })?;
            hash
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(plain) if !plain.is_empty() => Sha256::digest(plain.as_bytes()).into(),
            _ => {
                return Err((
                    at("env"),
                    format!("environment variable `{var}` is not set (or empty)"),
                ))
            }
        },
        _ => {
            let mut path = at("");
            path.pop();
            return Err((
                path,
                "a key has exactly one of `sha256` or `env`".to_string(),
            ));
        }
    };
    if let Some(id) = &key.id {
        // Ids are shown in logs and usage: one that is the key itself would
        // publish it.
        let id_hash: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        if bool::from(id_hash.ct_eq(&hash)) {
            return Err((
                at("id"),
                "this id is the key itself; an id is shown in logs and usage, so give a \
                 non-secret name (`tollgate key` prints one)"
                    .to_string(),
            ));
        }
    }
    let expires = match &key.expires {
        None => None,
        Some(text) => Some(crate::calendar::parse_rfc3339(text).ok_or_else(|| {
            (
                at("expires"),
                format!("`{text}` is not an RFC 3339 time like 2026-01-01T00:00:00Z"),
            )
        })?),
    };
    Ok(ApiKey {
        hash,
        client: client.clone(),
        roles,
        key_id: key.id.as_deref().map(Arc::from),
        expires,
    })
}

// === impl JwtVerifier ===

impl JwtVerifier {
    fn build(
        config: &JwtConfig,
        base_dir: &Path,
        jwks: &JwksRegistry,
        errors: &mut Vec<PathError>,
    ) -> Option<Self> {
        let at = |field: &str| vec!["jwt".to_string(), field.to_string()];
        let mut algorithms = Vec::new();
        for (i, name) in config.algorithms.iter().enumerate() {
            match name.parse::<Algorithm>() {
                Ok(alg) => algorithms.push(alg),
                Err(_) => errors.push((
                    vec!["jwt".into(), "algorithms".into(), i.to_string()],
                    format!(
                        "`{name}` is not an accepted algorithm (HS256/384/512, RS256/384/512, \
                         PS256/384/512, ES256/384, EdDSA)"
                    ),
                )),
            }
        }
        if config.algorithms.is_empty() {
            errors.push((at("algorithms"), "list at least one algorithm".into()));
        }
        let sources = [
            config.secret_env.is_some(),
            config.public_key_file.is_some(),
            config.jwks_file.is_some(),
            config.jwks_url.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            errors.push((
                vec!["jwt".into()],
                "give exactly one of `secret_env`, `public_key_file`, `jwks_file` or `jwks_url`"
                    .into(),
            ));
            return None;
        }
        let families: Vec<Family> = algorithms.iter().map(|a| family(*a)).collect();
        let keys = if let Some(var) = &config.secret_env {
            if families.iter().any(|f| *f != Family::Hmac) {
                errors.push((
                    at("algorithms"),
                    "`secret_env` serves only HS256/384/512".into(),
                ));
            }
            match std::env::var(var) {
                Ok(secret) if secret.len() < min_hmac_secret(&algorithms) => {
                    errors.push((
                        at("secret_env"),
                        format!(
                            "the secret in `{var}` is {} bytes; {} needs at least {} \
                             (RFC 7518 §3.2: as long as the hash), e.g. `openssl rand -base64 48`",
                            secret.len(),
                            strongest_hmac(&algorithms),
                            min_hmac_secret(&algorithms)
                        ),
                    ));
                    return None;
                }
                Ok(secret) if !secret.is_empty() => fixed(vec![JwtKey {
                    kid: None,
                    family: Family::Hmac,
                    key: DecodingKey::from_secret(secret.as_bytes()),
                }]),
                _ => {
                    errors.push((
                        at("secret_env"),
                        format!("environment variable `{var}` is not set (or empty)"),
                    ));
                    return None;
                }
            }
        } else if let Some(file) = &config.public_key_file {
            let &key_family = families.first()?;
            if families.iter().any(|f| *f != key_family) || key_family == Family::Hmac {
                errors.push((
                    at("algorithms"),
                    "one `public_key_file` serves one key type: list only RS*/PS*, only ES*, \
                     or only EdDSA (HS* needs `secret_env`)"
                        .into(),
                ));
                return None;
            }
            let pem = match std::fs::read(base_dir.join(file)) {
                Ok(pem) => pem,
                Err(e) => {
                    errors.push((at("public_key_file"), format!("cannot read `{file}`: {e}")));
                    return None;
                }
            };
            let key = match key_family {
                Family::Rsa => DecodingKey::from_rsa_pem(&pem),
                Family::Ec => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_ed_pem(&pem),
            };
            match key {
                Ok(key) => fixed(vec![JwtKey {
                    kid: None,
                    family: key_family,
                    key,
                }]),
                Err(e) => {
                    errors.push((
                        at("public_key_file"),
                        format!("`{file}` is not a PEM public key for {key_family:?}: {e}"),
                    ));
                    return None;
                }
            }
        } else if let Some(file) = &config.jwks_file {
            // Read at every compile: a reload picks up a rotated file.
            let parsed = std::fs::read_to_string(base_dir.join(file))
                .map_err(|e| format!("cannot read `{file}`: {e}"))
                .and_then(|text| parse_jwk_set(&text).map_err(|e| format!("`{file}` {e}")));
            let (keys, problems) = match parsed {
                Ok(parsed) => parsed,
                Err(message) => {
                    errors.push((at("jwks_file"), message));
                    return None;
                }
            };
            for problem in problems {
                errors.push((at("jwks_file"), format!("a key in `{file}`: {problem}")));
            }
            if keys.is_empty() {
                errors.push((at("jwks_file"), format!("`{file}` holds no usable key")));
                return None;
            }
            fixed(keys)
        } else {
            let url = config.jwks_url.as_deref().unwrap_or_default();
            match jwks::parse_url(url) {
                Ok(uri) => KeySource::Remote(jwks.source(uri)),
                Err(message) => {
                    errors.push((at("jwks_url"), message));
                    return None;
                }
            }
        };
        let validations = algorithms
            .iter()
            .map(|alg| (*alg, validation(*alg, config)))
            .collect();
        Some(JwtVerifier {
            keys,
            validations,
            leeway: config
                .leeway
                .map_or(60 * 1_000_000_000, |d| d.0.as_nanos() as i128),
            roles_claim: config.roles_claim.clone(),
        })
    }
}

fn fixed(keys: Vec<JwtKey>) -> KeySource {
    KeySource::Fixed(Arc::new(keys))
}

// === impl KeySource ===

impl KeySource {
    /// The keys in use now.
    fn current(&self) -> Arc<Vec<JwtKey>> {
        match self {
            KeySource::Fixed(keys) => keys.clone(),
            KeySource::Remote(source) => source.keys(),
        }
    }
}

/// The key a token of `alg` (and `kid`) is verified with.
fn key_for<'k>(
    keys: &'k [JwtKey],
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<&'k DecodingKey, KeyMiss> {
    let wanted = family(alg);
    let mut fitting = keys
        .iter()
        .filter(|k| k.family == wanted)
        .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid);
    match (fitting.next(), fitting.next()) {
        (Some(key), None) => Ok(&key.key),
        (None, _) => Err(KeyMiss::NoneFits),
        // Several keys fit: the token must name one by `kid`.
        (Some(_), Some(_)) => match kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.family == wanted && k.kid.as_deref() == Some(kid))
                .map(|k| &k.key)
                .ok_or(KeyMiss::NoneFits),
            None => Err(KeyMiss::Ambiguous),
        },
    }
}

/// The signing keys of a JWK set (RFC 7517) and a note on each key that
/// could not be used; an error when the text is not a JWK set at all. Keys
/// marked for encryption (`"use": "enc"`) are left out.
pub(crate) fn parse_jwk_set(text: &str) -> Result<(Vec<JwtKey>, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawSet = serde_json::from_str(text).map_err(|e| format!("is not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in set.keys.into_iter().enumerate() {
        let jwk = match serde_json::from_value::<Jwk>(raw) {
            Ok(jwk) => jwk,
            Err(e) => {
                problems.push(format!("key {i}: {e}"));
                continue;
            }
        };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            AlgorithmParameters::OctetKey(oct) => {
                use base64::Engine as _;
                let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(oct.value.trim_end_matches('='))
                    .map_or(0, |k| k.len());
                let needed = match jwk.common.key_algorithm {
                    Some(jsonwebtoken::jwk::KeyAlgorithm::HS384) => 48,
                    Some(jsonwebtoken::jwk::KeyAlgorithm::HS512) => 64,
                    _ => 32,
                };
                if len < needed {
                    problems.push(format!(
                        "key {i}: an HMAC key of {len} bytes; at least {needed} are needed \
                         (RFC 7518 §3.2)"
                    ));
                    continue;
                }
                Family::Hmac
            }
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(JwtKey {
                kid: jwk.common.key_id.clone(),
                family,
                key,
            }),
            Err(e) => problems.push(format!("key {i}: {e}")),
        }
    }
    Ok((keys, problems))
}

/// The crate's checks for one algorithm: signature, `iss`, `aud` and the
/// presence of `exp`/`sub`. Time (`exp`, `nbf`) is checked by the caller
/// against the injected clock, not the system time the crate would read.
fn validation(alg: Algorithm, config: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &config.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Ed,
    }
}

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z, in nanoseconds.
/// Earlier than 1970 or later than this, a date is not a real one (and
/// `nbf: 1e30` must not wrap into the past on the way to nanoseconds).
const MAX_NUMERIC_DATE_NANOS: i128 = 253_402_300_799 * 1_000_000_000;

/// A JWT NumericDate (seconds since the epoch, maybe fractional) in
/// nanoseconds; `None` if the value is not a number, or too large to count
/// in nanoseconds at all.
fn numeric_date_nanos(value: &serde_json::Value) -> Option<i128> {
    const NANOS: i128 = 1_000_000_000;
    if let Some(secs) = value.as_i64() {
        return Some(i128::from(secs) * NANOS);
    }
    if let Some(secs) = value.as_u64() {
        return Some(i128::from(secs) * NANOS);
    }
    // Past ±1e20 s the nanoseconds would not fit an i128 exactly anyway:
    // refused rather than saturated or wrapped.
    let secs = value.as_f64().filter(|f| f.is_finite() && f.abs() < 1e20)?;
    // Whole seconds exactly, the fraction to the nearest nanosecond.
    let whole = secs.trunc();
    (whole as i128)
        .checked_mul(NANOS)?
        .checked_add(((secs - whole) * 1e9).round() as i128)
}

/// RFC 7515 §4.1.11: a recipient must reject a token whose `crit` lists an
/// extension it does not implement, and this verifier implements none; so
/// any `crit`, and RFC 7797's `b64: false` (an unencoded payload, whose
/// signature covers different bytes than the ones checked here), refuse it.
fn check_header_params(token: &str) -> Result<(), &'static str> {
    use base64::Engine as _;
    let malformed = "the token is malformed";
    let encoded = token.split('.').next().ok_or(malformed)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| malformed)?;
    if header.contains_key("crit") {
        return Err(
            "the token names critical header parameters (`crit`) this gateway does not implement",
        );
    }
    if header
        .get("b64")
        .is_some_and(|b64| b64 != &serde_json::Value::Bool(true))
    {
        return Err(
            "the token's payload is not base64url-encoded (`b64`); such tokens are not accepted",
        );
    }
    Ok(())
}

/// What a client id may be, said in messages.
const CLIENT_ID_RULE: &str = "1 to 256 printable ASCII characters, no space at either end";

/// Whether `id` can be the client id: it is sent on as one header value
/// (`X-Tollgate-Client`, `${client.id}`) and compared as sent, so it must
/// read the same to every HTTP parser: printable ASCII, spaces only inside.
pub fn is_client_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (1..=256).contains(&bytes.len())
        && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        && bytes.first() != Some(&b' ')
        && bytes.last() != Some(&b' ')
}

/// The shortest HMAC secret the listed algorithms accept (RFC 7518 §3.2: a
/// key at least as long as the hash output).
fn min_hmac_secret(algorithms: &[Algorithm]) -> usize {
    algorithms
        .iter()
        .map(|alg| match alg {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        })
        .max()
        .unwrap_or(32)
}

/// The name of the HMAC algorithm that needs the longest secret.
fn strongest_hmac(algorithms: &[Algorithm]) -> &'static str {
    match min_hmac_secret(algorithms) {
        64 => "HS512",
        48 => "HS384",
        _ => "HS256",
    }
}

fn jwt_error_detail(kind: &jsonwebtoken::errors::ErrorKind) -> Cow<'static, str> {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidIssuer => "the token's issuer is not accepted".into(),
        K::InvalidAudience => "the token's audience is not accepted".into(),
        K::InvalidAlgorithm => "the token's algorithm is not accepted".into(),
        K::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim").into(),
        _ => "the token is malformed".into(),
    }
}

/// Whether a bearer value is shaped like a JWT (three base64url segments,
/// the first a JSON object), so it is tried as a token rather than a key.
pub fn looks_like_jwt(value: &str) -> bool {
    value.starts_with("eyJ")
        && value.bytes().filter(|b| *b == b'.').count() == 2
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jwt_shaped_bearer_values_are_tried_as_tokens() {
        assert!(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig-_"));
        assert!(!looks_like_jwt("tk_live_0123456789"));
        assert!(!looks_like_jwt("eyJ.only-one-dot"));
    }

    fn config(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).expect("config")
    }

    fn jwks() -> Arc<JwksRegistry> {
        let client = crate::proxy::build_client(None).expect("client");
        JwksRegistry::new(client, crate::clock::ManualClock::new(0))
    }

    #[test]
    fn keys_are_found_by_hash_and_expire_strictly_after_their_time() {
        let cfg = config(
            "version: 1\nlisten: 127.0.0.1:0\nroles: [reader]\nclients:\n  - id: a\n    roles: [reader]\n    api_keys:\n      - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n        id: k1\n        expires: 1970-01-01T00:00:01Z\n",
        );
        let roles = RoleTable::new(cfg.roles.clone());
        let (creds, errors) = Credentials::build(&cfg, &roles, Path::new("."), &jwks());
        assert!(errors.is_empty(), "{errors:?}");
        let client = creds
            .check_api_key(b"password", 1_000_000_000)
            .expect("valid at the instant");
        assert_eq!(&*client.id, "a");
        assert_eq!(client.key_id.as_deref(), Some("k1"));
        assert_eq!(client.roles, RoleSet::EMPTY.with(0));
        assert_eq!(
            creds.check_api_key(b"password", 1_000_000_001).err(),
            Some("the API key has expired")
        );
        assert!(creds.check_api_key(b"Password", 0).is_err());
    }

    #[test]
    fn numeric_dates_are_exact_to_the_nanosecond() {
        use serde_json::json;
        assert_eq!(
            numeric_date_nanos(&json!(1_800_000_000)),
            Some(1_800_000_000_000_000_000)
        );
        assert_eq!(
            numeric_date_nanos(&json!(1_800_000_000.5)),
            Some(1_800_000_000_500_000_000)
        );
        assert_eq!(numeric_date_nanos(&json!(-1)), Some(-1_000_000_000));
        assert_eq!(
            numeric_date_nanos(&json!(u64::MAX)),
            Some(i128::from(u64::MAX) * 1_000_000_000)
        );
        assert_eq!(numeric_date_nanos(&json!("1800000000")), None);
        assert_eq!(numeric_date_nanos(&json!(null)), None);
    }

    #[test]
    fn numeric_dates_too_large_for_nanoseconds_are_not_dates() {
        use serde_json::json;
        assert_eq!(numeric_date_nanos(&json!(1e30)), None);
        assert_eq!(numeric_date_nanos(&json!(-1e300)), None);
        assert_eq!(
            numeric_date_nanos(&json!(1.5e19)),
            Some(15_000_000_000_000_000_000 * 1_000_000_000)
        );
    }

    #[test]
    fn crit_and_unencoded_payloads_are_refused_in_the_header() {
        let token = |header: &str| {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("{}.e30.sig", b64.encode(header))
        };
        assert!(check_header_params(&token(r#"{"alg":"RS256"}"#)).is_ok());
        assert!(check_header_params(&token(r#"{"alg":"RS256","b64":true}"#)).is_ok());
        assert!(check_header_params(&token(r#"{"alg":"RS256","crit":["x"],"x":1}"#)).is_err());
        assert!(check_header_params(&token(r#"{"alg":"RS256","b64":false}"#)).is_err());
        assert!(check_header_params(&token(r#"{"alg":"RS256","b64":"no"}"#)).is_err());
        assert!(check_header_params("!!.e30.sig").is_err());
    }

    #[test]
    fn client_ids_are_printable_ascii_with_no_space_at_either_end() {
        for good in ["ops", "ops team", "a:b/c@d", &"x".repeat(256)] {
            assert!(is_client_id(good), "{good:?}");
        }
        for bad in [
            "",
            " ops",
            "ops ",
            "o\tps",
            "o\r\nps",
            "op\u{7f}",
            "opé",
            &"x".repeat(257),
        ] {
            assert!(!is_client_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_hmac_secret_is_at_least_as_long_as_the_longest_hash_listed() {
        use Algorithm::*;
        assert_eq!(min_hmac_secret(&[HS256]), 32);
        assert_eq!(min_hmac_secret(&[HS256, HS384]), 48);
        assert_eq!(min_hmac_secret(&[HS512, HS256]), 64);
        assert_eq!(strongest_hmac(&[HS256, HS512]), "HS512");
    }

    #[test]
    fn short_hmac_keys_in_a_jwk_set_are_not_used() {
        let set = r#"{"keys":[{"kty":"oct","k":"c2hvcnQ"},{"kty":"oct","alg":"HS512","k":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE"},{"kty":"oct","k":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE"}]}"#;
        let (keys, problems) = parse_jwk_set(set).expect("a set");
        assert_eq!(keys.len(), 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("at least 32"), "{problems:?}");
        assert!(problems[1].contains("at least 64"), "{problems:?}");
    }

    #[test]
    fn key_mistakes_are_reported_at_their_absolute_paths() {
        let cfg = config(
            "version: 1\nlisten: 127.0.0.1:0\nclients:\n  - id: a\n    roles: [ghost]\n    api_keys:\n      - sha256: abc\n      - env: TOLLGATE_TEST_SURELY_UNSET_VAR\n      - {}\n      - { sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8, expires: soon }\n      - { sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8, id: password }\n",
        );
        let (_, errors) = Credentials::build(&cfg, &RoleTable::default(), Path::new("."), &jwks());
        let paths: Vec<String> = errors.iter().map(|(p, _)| p.join(".")).collect();
        assert_eq!(
            paths,
            [
                "clients.0.roles.0",
                "clients.0.api_keys.0.sha256",
                "clients.0.api_keys.1.env",
                "clients.0.api_keys.2",
                "clients.0.api_keys.3.expires",
                "clients.0.api_keys.4.id",
            ]
        );
    }

    #[test]
    fn jwt_config_mistakes_are_reported_at_their_absolute_paths() {
        let cfg = config(
            "version: 1\nlisten: 127.0.0.1:0\njwt:\n  algorithms: [none, RS256]\n  public_key_file: /nonexistent/key.pem\n",
        );
        let (creds, errors) =
            Credentials::build(&cfg, &RoleTable::default(), Path::new("."), &jwks());
        let paths: Vec<String> = errors.iter().map(|(p, _)| p.join(".")).collect();
        assert_eq!(paths, ["jwt.algorithms.0", "jwt.public_key_file"]);
        assert!(!creds.has_jwt());
    }
}
