//! API keys and JWTs: who is calling.
//!
//! ```yaml
//! policies:
//!   require-api-key:
//!     type: auth
//!     methods: [api_key, jwt]       # any one that succeeds identifies the caller
//!     api_key:
//!       header: X-API-Key           # default; names are case-insensitive
//!       bearer: true                # `Authorization: Bearer <key>` too (default)
//!       query: api_key              # optional query parameter
//!     forward_credentials: false    # default: the credential never reaches the upstream
//! ```
//!
//! The keys and the JWT verifier are the gateway's (`clients:`, `jwt:`),
//! built once in [`crate::credentials`]. No credential: 401
//! `unauthenticated` with `WWW-Authenticate`; a wrong, expired or invalid
//! one: 401 `invalid_credentials`. A key or token is never logged.

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use http::Uri;
use schemars::JsonSchema;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{CompileCx, Phase, PolicyMeta, Stage, Step};
use crate::clock::SharedClock;
use crate::context::{Client, RequestContext};
use crate::credentials::jwks::JwksSource;
use crate::credentials::{looks_like_jwt, Credentials};
use crate::gateway::AgentIdentity;
use crate::problem::{Code, Reject};

/// `type: auth` — identifies the caller by API key or JWT; none gets 401 `unauthenticated`
/// (with `WWW-Authenticate`), a wrong, expired or invalid one 401 `invalid_credentials`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The accepted credentials, tried in turn: `api_key` and/or `jwt`; the first that succeeds
    /// identifies the caller.
    pub methods: Vec<AuthMethod>,
    /// Where an API key may come from (default: the `X-API-Key` header, or `Authorization: Bearer
    /// <key>`).
    #[serde(default)]
    pub api_key: ApiKeySource,
    /// Send the credential on to the upstream (default: removed).
    #[serde(default)]
    pub forward_credentials: bool,
}

/// A kind of credential an `auth` policy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A client's key (`clients[].api_keys`), from the header, bearer token or query parameter of
    /// `api_key`.
    ApiKey,
    /// A bearer JWT verified as the top-level `jwt:` says.
    Jwt,
}

/// Where an API key may come from.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeySource {
    /// The header carrying the key (default `X-API-Key`; case-insensitive).
    pub header: String,
    /// The key may also come as `Authorization: Bearer <key>`.
    pub bearer: bool,
    /// A query parameter that may carry the key.
    pub query: Option<String>,
}

impl Default for ApiKeySource {
    fn default() -> Self {
        ApiKeySource {
            header: "X-API-Key".into(),
            bearer: true,
            query: None,
        }
    }
}

/// A compiled `auth` policy.
pub struct Auth {
    credentials: Arc<Credentials>,
    clock: SharedClock,
    /// The key header, when `api_key` is a method.
    key_header: Option<HeaderName>,
    /// `Authorization: Bearer` may carry a key.
    bearer_key: bool,
    /// `Authorization: Bearer` may carry a JWT.
    jwt: bool,
    /// The key's query parameter, when `api_key` is a method.
    query: Option<String>,
    forward_credentials: bool,
    /// `WWW-Authenticate` challenges for the schemes accepted, built once.
    challenges: Vec<HeaderValue>,
}

impl PolicyKind for AuthConfig {
    const TYPE: &'static str = "auth";
    const SCHEMA_NAME: &'static str = "AuthPolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }

    fn refusals(&self) -> &'static [Code] {
        &[Code::Unauthenticated, Code::InvalidCredentials]
    }
}

fn compile(
    config: &AuthConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    if config.methods.is_empty() {
        cx.error(&["methods"], "list at least one of api_key, jwt");
    }
    let api_key = config.methods.contains(&AuthMethod::ApiKey);
    let jwt = config.methods.contains(&AuthMethod::Jwt);
    if jwt && cx.config.jwt.is_none() {
        if let Some(i) = config.methods.iter().position(|m| *m == AuthMethod::Jwt) {
            cx.error(
                &["methods", &i.to_string()],
                "`jwt` needs the top-level `jwt:` section (issuer, algorithms, key)",
            );
        }
    }
    let key_header = match HeaderName::from_bytes(config.api_key.header.trim().as_bytes()) {
        Ok(name) => name,
        Err(_) => {
            cx.error(
                &["api_key", "header"],
                format!("`{}` is not a header name", config.api_key.header),
            );
            return None;
        }
    };
    if let Some(q) = &config.api_key.query {
        if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
            cx.error(
                &["api_key", "query"],
                format!("`{q}` is not a query parameter name"),
            );
        }
    }
    let mut challenges = Vec::new();
    if api_key {
        let mut c = format!("ApiKey realm=\"tollgate\", header=\"{key_header}\"");
        if let Some(q) = &config.api_key.query {
            c.push_str(&format!(", query=\"{q}\""));
        }
        challenges.extend(HeaderValue::try_from(c).ok());
    }
    if jwt || (api_key && config.api_key.bearer) {
        challenges.push(HeaderValue::from_static("Bearer realm=\"tollgate\""));
    }
    let auth = Auth {
        credentials: cx.credentials.clone(),
        clock: cx.clock.clone(),
        key_header: api_key.then_some(key_header),
        bearer_key: api_key && config.api_key.bearer,
        jwt,
        query: config.api_key.query.clone().filter(|_| api_key),
        forward_credentials: config.forward_credentials,
        challenges,
    };
    Some(vec![Stage::new(
        Phase::Authenticate,
        meta,
        Step::Auth(Arc::new(auth)),
    )])
}

// === impl Auth ===

/// Which credential forms a request carried (whether or not they were
/// tried), and which one proved the identity, so the rest can be removed.
#[derive(Default)]
struct Presented {
    header: bool,
    authorization: bool,
    query: bool,
    used: Option<Slot>,
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Header,
    Authorization,
    Query,
}

impl Auth {
    /// Identifies the caller, or says why not. The first credential that
    /// proves an identity wins; if none does, the first failure is reported.
    fn identify(&self, parts: &Parts, presented: &mut Presented) -> Result<Client, Reject> {
        let now = self.clock.now();
        // Every slot this policy reads is noted first, tried or not: a
        // second credential beside the one that wins must not travel on.
        let key_value = self
            .key_header
            .as_ref()
            .and_then(|name| parts.headers.get(name));
        presented.header = key_value.is_some();
        presented.authorization = (self.bearer_key || self.jwt)
            && parts
                .headers
                .get_all(AUTHORIZATION)
                .iter()
                .any(|v| bearer_value(v).is_some());
        presented.query = self.query.as_ref().is_some_and(|param| {
            parts
                .uri
                .query()
                .is_some_and(|q| query_pairs(q).any(|(k, _)| k == param.as_bytes()))
        });
        let mut failure: Option<Cow<'static, str>> = None;
        let mut note = |result: Result<Client, Cow<'static, str>>| match result {
            Ok(client) => Some(client),
            Err(detail) => {
                failure.get_or_insert(detail);
                None
            }
        };
        if let Some(value) = key_value {
            let checked = self.credentials.check_api_key(value.as_bytes(), now);
            if let Some(client) = note(checked.map_err(Cow::Borrowed)) {
                presented.used = Some(Slot::Header);
                return Ok(client);
            }
        }
        if self.bearer_key || self.jwt {
            if let Some(token) = parts.headers.get(AUTHORIZATION).and_then(bearer_value) {
                let checked = if self.jwt && (looks_like_jwt(token) || !self.bearer_key) {
                    self.credentials.check_jwt(token, now)
                } else {
                    self.credentials
                        .check_api_key(token.as_bytes(), now)
                        .map_err(Cow::Borrowed)
                };
                if let Some(client) = note(checked) {
                    presented.used = Some(Slot::Authorization);
                    return Ok(client);
                }
            }
        }
        if let Some(param) = &self.query {
            if let Some(value) = parts.uri.query().and_then(|q| query_value(q, param)) {
                let checked = self.credentials.check_api_key(&value, now);
                if let Some(client) = note(checked.map_err(Cow::Borrowed)) {
                    presented.used = Some(Slot::Query);
                    return Ok(client);
                }
            }
        }
        let reject = match failure {
            Some(detail) => Reject::new(Code::InvalidCredentials, detail),
            None => Reject::new(
                Code::Unauthenticated,
                "this operation needs a credential (an API key or a bearer token)",
            ),
        };
        Err(self
            .challenges
            .iter()
            .fold(reject, |r, c| r.with_header(WWW_AUTHENTICATE, c.clone())))
    }

    /// Removes the credentials the request carried, so the upstream never
    /// sees them. With `forward_credentials: true` only the one that proved
    /// the identity travels on (one value of it): a second key or an
    /// unverified token beside it is removed all the same, since the
    /// upstream might act on a credential the gateway never accepted.
    fn strip(&self, parts: &mut Parts, upstream: &mut Option<http::Uri>, presented: &Presented) {
        let keep = |slot| self.forward_credentials && presented.used == Some(slot);
        if let Some(name) = &self.key_header {
            if keep(Slot::Header) {
                if let Some(value) = parts.headers.get(name).cloned() {
                    parts.headers.insert(name.clone(), value);
                }
            } else if presented.header {
                parts.headers.remove(name);
            }
        }
        if keep(Slot::Authorization) {
            if let Some(value) = parts.headers.get(AUTHORIZATION).cloned() {
                parts.headers.insert(AUTHORIZATION, value);
            }
        } else if presented.authorization {
            // Only bearer values are this policy's: another scheme (Basic
            // for the workflow itself) is not a gateway credential.
            let others: Vec<HeaderValue> = parts
                .headers
                .get_all(AUTHORIZATION)
                .iter()
                .filter(|v| bearer_value(v).is_none())
                .cloned()
                .collect();
            parts.headers.remove(AUTHORIZATION);
            for value in others {
                parts.headers.append(AUTHORIZATION, value);
            }
        }
        if let (true, false, Some(param)) = (presented.query, keep(Slot::Query), &self.query) {
            if let Some(uri) = without_query_param(&parts.uri, param) {
                parts.uri = uri;
            }
            if let Some(upstream) = upstream.as_mut() {
                if let Some(uri) = without_query_param(upstream, param) {
                    *upstream = uri;
                }
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_value(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The pairs of a query string, name and value percent-decoded (as the
/// upstream's framework will read them: `api%5Fkey=` is `api_key=`).
fn query_pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, &str)> {
    query.split('&').map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), v)
    })
}

/// The percent-decoded value of the first `name=` pair of a query string.
fn query_value(query: &str, name: &str) -> Option<Vec<u8>> {
    query_pairs(query)
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| percent_decode(v))
        .filter(|v| !v.is_empty())
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `uri` without any `name=...` pair in its query; `None` if it had none.
fn without_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let is_param =
        |pair: &&str| percent_decode(pair.split('=').next().unwrap_or("")) == name.as_bytes();
    if !query.split('&').any(|p| is_param(&p)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_param(p)).collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

// === the stage ===

impl Auth {
    /// The request half: identifies the caller (the client goes into the
    /// context) and removes the credential before forwarding. A token
    /// naming a signing key not fetched yet waits for the fetch first.
    pub(crate) async fn before(
        &self,
        parts: &mut Parts,
        cx: &mut RequestContext,
    ) -> Result<(), Reject> {
        if parts.extensions.get::<AgentIdentity>().is_none() {
            if let Some(source) = self.jwks_to_fetch(&parts.headers) {
                source.fetch_for_unknown_kid().await;
            }
        }
        self.decide(parts, cx)
    }

    /// The request half when no signing key has to be fetched first;
    /// `None` (having done nothing) when one does.
    pub(crate) fn before_now(
        &self,
        parts: &mut Parts,
        cx: &mut RequestContext,
    ) -> Option<Result<(), Reject>> {
        // `jwks_to_fetch` starts nothing when it answers `Some`.
        if parts.extensions.get::<AgentIdentity>().is_none()
            && self.jwks_to_fetch(&parts.headers).is_some()
        {
            return None;
        }
        Some(self.decide(parts, cx))
    }

    /// Identifies the caller with the keys at hand and strips the
    /// credentials.
    fn decide(&self, parts: &mut Parts, cx: &mut RequestContext) -> Result<(), Reject> {
        // A tool call whose caller the MCP endpoint's OAuth resource
        // server authenticated: that identity, and no credential travels.
        if let Some(AgentIdentity(client)) = parts.extensions.remove::<AgentIdentity>() {
            let mut presented = Presented::default();
            let _ = self.identify(parts, &mut presented);
            presented.used = None;
            self.strip(parts, &mut cx.upstream, &presented);
            cx.client = Some(client);
            return Ok(());
        }
        let mut presented = Presented::default();
        let verdict = self.identify(parts, &mut presented);
        // Stripped whatever the verdict: a report-only refusal lets the
        // call on, and a credential that failed is no more the
        // upstream's business than one that passed.
        self.strip(parts, &mut cx.upstream, &presented);
        cx.client = Some(verdict?);
        Ok(())
    }
}

impl Auth {
    /// The key set to fetch before judging this request: its bearer token
    /// names a signing key the gateway has not fetched yet.
    fn jwks_to_fetch(&self, headers: &http::HeaderMap) -> Option<Arc<JwksSource>> {
        if !self.jwt {
            return None;
        }
        let token = headers.get(AUTHORIZATION).and_then(bearer_value)?;
        if self.bearer_key && !looks_like_jwt(token) {
            return None;
        }
        self.credentials.jwks_to_fetch(token, self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_read_whatever_the_scheme_case() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer_value(&v("Bearer abc")), Some("abc"));
        assert_eq!(bearer_value(&v("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_value(&v("Basic abc")), None);
        assert_eq!(bearer_value(&v("Bearer ")), None);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_value("a=1&key=x%2By+z", "key"),
            Some(b"x+y z".to_vec())
        );
        assert_eq!(query_value("keys=1", "key"), None);
        assert_eq!(query_value("key=", "key"), None);
        assert_eq!(percent_decode("100%"), b"100%".to_vec());
        // The name is read as the upstream's framework reads it.
        assert_eq!(query_value("api%5Fkey=k", "api_key"), Some(b"k".to_vec()));
        assert_eq!(percent_decode("%zz%41"), b"%zzA".to_vec());
    }

    #[test]
    fn the_key_parameter_is_removed_from_the_query() {
        let uri: Uri = "http://h/p?a=1&key=s3cret&b=2&key".parse().expect("uri");
        assert_eq!(
            without_query_param(&uri, "key").map(|u| u.to_string()),
            Some("http://h/p?a=1&b=2".into())
        );
        let only: Uri = "/p?key=s".parse().expect("uri");
        assert_eq!(
            without_query_param(&only, "key").map(|u| u.to_string()),
            Some("/p".into())
        );
        let encoded: Uri = "/p?%6Bey=s&a=1".parse().expect("uri");
        assert_eq!(
            without_query_param(&encoded, "key").map(|u| u.to_string()),
            Some("/p?a=1".into())
        );
        let none: Uri = "/p?keys=s".parse().expect("uri");
        assert!(without_query_param(&none, "key").is_none());
    }
}
