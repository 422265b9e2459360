//! Agents that sign in: the MCP endpoint as an OAuth 2.1 resource server,
//! as the MCP authorization specification asks.
//!
//! ```yaml
//! agents:
//!   mcp_path: /mcp
//!   oauth:
//!     authorization_servers: [https://idp.example.com]
//!     jwks_url: https://idp.example.com/jwks      # JWT access tokens
//!     scopes: { directory:read: [reader], directory:write: [writer] }
//!     tool_scopes: { createEmployee: [directory:write] }
//!     initial_scopes: [directory:read]
//! ```
//!
//! - **Discovery** (RFC 9728): `GET /.well-known/oauth-protected-resource`
//!   plus the resource's path (`…/oauth-protected-resource/mcp`) answers
//!   the metadata: `resource`, `authorization_servers`, `scopes_supported`,
//!   `bearer_methods_supported: [header]`.
//! - **Challenge**: no bearer token is 401 `unauthenticated` with
//!   `WWW-Authenticate: Bearer resource_metadata="…", scope="…"`; a bad one
//!   401 `invalid_credentials` with `error="invalid_token"`.
//! - **Tokens** come from the `Authorization` header only. A JWT is checked
//!   by the `jwt:` machinery (keys, JWKS rotation, `exp`, `nbf`, leeway);
//!   `iss` must be the issuer and `aud` must name this resource (RFC 8707:
//!   a token for another resource is refused, there is no relaxed mode).
//!   An opaque token is introspected (RFC 7662, [`introspection`]) under
//!   the same rules, the answer cached for a bounded time.
//! - **Scopes**: each grants roles (`scopes`), which the tools' own
//!   `roles` policies judge; a tool may need scopes itself
//!   (`tool_scopes`): `tools/list` leaves it out, and `tools/call` answers
//!   403 `insufficient_scope` with `WWW-Authenticate: Bearer
//!   error="insufficient_scope", scope="…"` naming every scope the call
//!   needs beside those held, so the client can step up.
//!
//! The token's caller becomes the request's client (`sub`); its tool calls
//! carry that identity ([`crate::gateway::AgentIdentity`]) to their
//! operation, whose `auth` stage accepts it. The token itself is never
//! forwarded upstream.

pub mod introspection;

use http::header::{self, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

use crate::body::{self, Body};
use crate::clock::SharedClock;
use crate::config::schema::{AgentsOAuthConfig, Config, JwtConfig};
use crate::context::{Client, RequestContext, RoleSet};
use crate::credentials::jwks::JwksRegistry;
use crate::credentials::{is_client_id, looks_like_jwt, Credentials};
use crate::header_names::{X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::policy::{OperationService, RoleTable};
use crate::problem::{Code, Reject};
use crate::proxy::UpstreamClients;
use introspection::Introspection;

/// The well-known path of RFC 9728 metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// A compiled `agents.oauth`.
pub struct ResourceServer {
    /// `resource`, when the config fixes it (else from each request).
    resource: Option<String>,
    /// The path of the resource (`mcp_path`, or the configured resource's).
    resource_path: String,
    authorization_servers: Vec<String>,
    issuer: String,
    scopes_supported: Vec<String>,
    /// What a 401 asks for, space-separated.
    initial_scopes: String,
    /// Scope -> the role bits it grants.
    grants: Vec<(String, Vec<u8>)>,
    /// Tool -> the scopes a call needs.
    tool_scopes: HashMap<String, Vec<String>>,
    tokens: Option<Arc<Credentials>>,
    introspection: Option<Introspection>,
    clock: SharedClock,
}

/// What a verified token holds: its scopes (in the request's extensions
/// from the guard to the endpoint).
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's scopes, as the authorization server granted them.
    pub scopes: Vec<String>,
}

/// What `compile` needs besides the config section.
pub struct OAuthSource<'a> {
    /// The whole config file.
    pub config: &'a Config,
    /// The `agents.oauth` section.
    pub oauth: &'a AgentsOAuthConfig,
    /// The MCP endpoint's path (`agents.mcp_path`), for the default `resource`.
    pub mcp_path: &'a str,
    /// The declared roles, for the roles each scope grants.
    pub roles: &'a RoleTable,
    /// Where the config file lives: relative key files resolve there.
    pub base_dir: &'a std::path::Path,
    /// JWK sets by URL, kept across reloads.
    pub jwks: &'a JwksRegistry,
    /// The HTTP client for introspection.
    pub client: Arc<UpstreamClients>,
    /// The clock tokens' `exp` and `nbf` and cached introspection answers are judged by.
    pub clock: SharedClock,
    /// The tool names, to check `tool_scopes` against.
    pub tools: &'a [&'a str],
}

/// A mistake: the path below `agents.oauth` and the message.
type OAuthError = (Vec<String>, String);

// === impl ResourceServer ===

impl ResourceServer {
    /// Builds the resource server from `agents.oauth`; every mistake is returned, each with its
    /// path below `agents.oauth`.
    pub fn compile(source: OAuthSource<'_>) -> Result<ResourceServer, Vec<OAuthError>> {
        let OAuthSource {
            config,
            oauth,
            mcp_path,
            roles,
            base_dir,
            jwks,
            client,
            clock,
            tools,
        } = source;
        let mut errors: Vec<OAuthError> = Vec::new();
        let at = |rest: &[&str]| -> Vec<String> {
            let mut p = vec!["agents".to_string(), "oauth".to_string()];
            p.extend(rest.iter().map(|s| s.to_string()));
            p
        };
        let resource = match (&oauth.resource, &config.public_url) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(base)) => Some(format!("{}{mcp_path}", base.trim_end_matches('/'))),
            (None, None) => None,
        };
        let mut resource_path = mcp_path.to_string();
        if let Some(r) = &resource {
            match r.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("https" | "http"))
                        && uri.authority().is_some()
                        && uri.query().is_none()
                        && !r.contains('#') =>
                {
                    resource_path = uri.path().trim_end_matches('/').to_string();
                }
                _ => errors.push((
                    at(&["resource"]),
                    format!("`{r}` is not an absolute http(s) URL without query or fragment"),
                )),
            }
        }
        if oauth.authorization_servers.is_empty() {
            errors.push((
                at(&["authorization_servers"]),
                "name at least one authorization server (its issuer URL)".into(),
            ));
        }
        for (i, server) in oauth.authorization_servers.iter().enumerate() {
            if let Err(message) = crate::credentials::jwks::parse_url(server) {
                errors.push((at(&["authorization_servers", &i.to_string()]), message));
            }
        }
        let issuer = oauth
            .issuer
            .clone()
            .or_else(|| oauth.authorization_servers.first().cloned())
            .unwrap_or_default();
        let key_sources = [&oauth.jwks_url, &oauth.jwks_file, &oauth.public_key_file];
        let tokens = if key_sources.iter().any(|s| s.is_some()) {
            let jwt = JwtConfig {
                issuer: Some(issuer.clone()),
                audience: None,
                algorithms: oauth.algorithms.clone(),
                public_key_file: oauth.public_key_file.clone(),
                secret_env: None,
                jwks_file: oauth.jwks_file.clone(),
                jwks_url: oauth.jwks_url.clone(),
                roles_claim: None,
                leeway: oauth.leeway,
            };
            let (tokens, found) = Credentials::for_tokens(&jwt, roles, base_dir, jwks);
            for (path, message) in found {
                // `jwt.<field>` there is `agents.oauth.<field>` here.
                let rest: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
                errors.push((at(&rest), message));
            }
            Some(Arc::new(tokens))
        } else {
            None
        };
        let introspection = match &oauth.introspection {
            Some(config) => match Introspection::compile(config, client, clock.clone()) {
                Ok(i) => Some(i),
                Err((field, message)) => {
                    errors.push((at(&["introspection", field]), message));
                    None
                }
            },
            None => None,
        };
        if tokens.is_none() && introspection.is_none() {
            errors.push((
                at(&[]),
                "give a key source for JWT access tokens (`jwks_url`, `jwks_file` or \
                 `public_key_file`), `introspection` for opaque ones, or both"
                    .into(),
            ));
        }
        let mut grants = Vec::new();
        for (scope, names) in &oauth.scopes {
            if !valid_scope(scope) {
                errors.push((
                    at(&["scopes", scope]),
                    format!("`{scope}` is not a scope token (RFC 6749 §3.3)"),
                ));
            }
            let mut set = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match roles.bit(name) {
                    Some(bit) => set.push(bit),
                    None => errors.push((
                        at(&["scopes", scope, &i.to_string()]),
                        format!("role `{name}` is not declared in `roles:`"),
                    )),
                }
            }
            grants.push((scope.clone(), set));
        }
        let mut scopes_supported: Vec<String> = oauth.scopes.keys().cloned().collect();
        let mut tool_scopes = HashMap::new();
        for (tool, needed) in &oauth.tool_scopes {
            if !tools.contains(&tool.as_str()) {
                errors.push((
                    at(&["tool_scopes", tool]),
                    format!("`{tool}` is not an agent tool"),
                ));
            }
            for (i, scope) in needed.iter().enumerate() {
                if !valid_scope(scope) {
                    errors.push((
                        at(&["tool_scopes", tool, &i.to_string()]),
                        format!("`{scope}` is not a scope token (RFC 6749 §3.3)"),
                    ));
                }
                if !scopes_supported.contains(scope) {
                    scopes_supported.push(scope.clone());
                }
            }
            tool_scopes.insert(tool.clone(), needed.clone());
        }
        let initial: Vec<String> = match &oauth.initial_scopes {
            Some(listed) => {
                for (i, scope) in listed.iter().enumerate() {
                    if !scopes_supported.contains(scope) {
                        errors.push((
                            at(&["initial_scopes", &i.to_string()]),
                            format!("`{scope}` is in neither `scopes` nor `tool_scopes`"),
                        ));
                    }
                }
                listed.clone()
            }
            None => oauth.scopes.keys().cloned().collect(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ResourceServer {
            resource,
            resource_path,
            authorization_servers: oauth.authorization_servers.clone(),
            issuer,
            scopes_supported,
            initial_scopes: initial.join(" "),
            grants,
            tool_scopes,
            tokens,
            introspection,
            clock,
        })
    }

    /// Whether `path` is where this resource's metadata is served: the
    /// path-suffixed form, or the root form (one MCP path per gateway, so
    /// the root names no other resource).
    pub fn serves_metadata(&self, path: &str) -> bool {
        path == METADATA_PATH
            || path
                .strip_prefix(METADATA_PATH)
                .is_some_and(|rest| rest == self.resource_path)
    }

    /// The RFC 9728 document, for a request with these headers.
    pub fn metadata(&self, headers: &HeaderMap, cx: &RequestContext) -> Response<Body> {
        let resource = self.resource_for(headers, cx);
        let document = json!({
            "resource": resource,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
            "resource_name": "Tollgate MCP endpoint",
        });
        let mut response = Response::new(body::full(document.to_string()));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        response
    }

    /// This resource's URL as the request addresses it: the configured
    /// one, else `scheme://host` + the MCP path, where host and scheme are
    /// a trusted proxy's forwarded ones or the request's own (its `Host`
    /// passed the endpoint's allowed-hosts rule).
    fn resource_for(&self, headers: &HeaderMap, cx: &RequestContext) -> String {
        if let Some(r) = &self.resource {
            return r.clone();
        }
        let first = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty())
        };
        let forwarded = |name| cx.peer_trusted.then(|| first(name)).flatten();
        let scheme = forwarded(X_FORWARDED_PROTO)
            .filter(|s| s == "http" || s == "https")
            .unwrap_or_else(|| if cx.tls { "https" } else { "http" }.into());
        let host = forwarded(X_FORWARDED_HOST)
            .or_else(|| first(header::HOST))
            .unwrap_or_default();
        format!("{scheme}://{host}{}", self.resource_path)
    }

    /// Where a client finds the metadata of the resource it addressed.
    fn metadata_url(&self, resource: &str) -> String {
        let origin = match resource.find("://") {
            Some(i) => {
                let rest = &resource[i + 3..];
                let end = rest.find('/').map_or(resource.len(), |j| i + 3 + j);
                &resource[..end]
            }
            None => resource,
        };
        format!("{origin}{METADATA_PATH}{}", self.resource_path)
    }

    /// The 401 for a request without a usable token.
    fn challenge(&self, resource: &str, error: Option<&str>) -> Reject {
        let mut value = String::from("Bearer ");
        if let Some(detail) = error {
            value.push_str("error=\"invalid_token\", error_description=\"");
            value.push_str(&quoted(detail));
            value.push_str("\", ");
        }
        value.push_str(&format!(
            "resource_metadata=\"{}\"",
            quoted(&self.metadata_url(resource))
        ));
        if !self.initial_scopes.is_empty() {
            value.push_str(&format!(", scope=\"{}\"", quoted(&self.initial_scopes)));
        }
        let reject = match error {
            None => Reject::new(
                Code::Unauthenticated,
                "the MCP endpoint needs an OAuth access token for this resource \
                 (`Authorization: Bearer …`)",
            ),
            Some(detail) => Reject::new(Code::InvalidCredentials, detail.to_string()),
        };
        reject.with_header(WWW_AUTHENTICATE, value)
    }

    /// The scopes a call of `tool` needs that `grant` lacks; empty when it
    /// may call it.
    pub fn missing_scopes(&self, tool: &str, grant: &Grant) -> Vec<String> {
        self.tool_scopes
            .get(tool)
            .map(|needed| {
                needed
                    .iter()
                    .filter(|s| !grant.scopes.contains(s))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The 403 that lets a client step up: every scope it should hold to
    /// make the call (those it holds, and those it lacks).
    pub fn insufficient_scope(
        &self,
        tool: &str,
        grant: &Grant,
        headers: &HeaderMap,
        cx: &RequestContext,
    ) -> Reject {
        let mut every = grant.scopes.clone();
        for scope in self.tool_scopes.get(tool).into_iter().flatten() {
            if !every.contains(scope) {
                every.push(scope.clone());
            }
        }
        let missing = self.missing_scopes(tool, grant).join(" ");
        let resource = self.resource_for(headers, cx);
        let value = format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\", \
             error_description=\"the tool `{}` needs {}\"",
            quoted(&every.join(" ")),
            quoted(&self.metadata_url(&resource)),
            quoted(tool),
            quoted(&missing),
        );
        Reject::new(
            Code::InsufficientScope,
            format!("the tool `{tool}` needs the scopes `{missing}` beside those held"),
        )
        .with_header(WWW_AUTHENTICATE, value)
    }

    /// Judges the request's token; the caller and its scopes, or the 401.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        cx: &RequestContext,
    ) -> Result<(Client, Grant), Reject> {
        let resource = self.resource_for(headers, cx);
        let Some(token) = bearer(headers) else {
            return Err(self.challenge(&resource, None));
        };
        let now = self.clock.now();
        let claims = match (&self.tokens, &self.introspection) {
            (Some(tokens), _) if looks_like_jwt(token) => {
                if let Some(source) = tokens.jwks_to_fetch(token, now) {
                    source.fetch_for_unknown_kid().await;
                }
                tokens
                    .check_jwt_claims(token, now)
                    .map(|(_, claims)| claims)
            }
            (_, Some(introspection)) => introspection.check(token, now).await,
            (Some(_), None) => Err("the token is not a JWT".into()),
            (None, None) => Err("no token is accepted".into()),
        };
        let claims = claims.map_err(|detail| self.challenge(&resource, Some(&detail)))?;
        self.judge(&claims, &resource)
            .map_err(|detail| self.challenge(&resource, Some(detail)))
    }

    /// The rules every token's claims must meet, whatever checked them:
    /// `iss` this issuer, `aud` naming this resource, a usable `sub`.
    fn judge(
        &self,
        claims: &Map<String, Value>,
        resource: &str,
    ) -> Result<(Client, Grant), &'static str> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err("the token's `iss` is not this resource's authorization server");
        }
        let names_resource = match claims.get("aud") {
            Some(Value::String(aud)) => same_resource(aud, resource),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| same_resource(aud, resource)),
            _ => false,
        };
        if !names_resource {
            return Err("the token's audience (`aud`) is not this resource");
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| is_client_id(s))
            .ok_or("the token has no usable `sub`")?;
        let scopes: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) => s.split_whitespace().map(str::to_string).collect(),
            (_, Some(Value::Array(items))) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let roles = self
            .grants
            .iter()
            .filter(|(scope, _)| scopes.contains(scope))
            .flat_map(|(_, bits)| bits.iter().copied())
            .fold(RoleSet::EMPTY, RoleSet::with);
        let client = Client {
            id: Arc::from(sub),
            roles,
            key_id: None,
        };
        Ok((client, Grant { scopes }))
    }

    /// The endpoint's authentication stage, in front of `inner`: the
    /// token's caller becomes the context's client, its scopes a [`Grant`]
    /// in the extensions; a request without a good token is answered 401.
    pub fn guard(self: Arc<Self>, inner: OperationService) -> OperationService {
        OperationService::new(tower::service_fn(move |mut req: Request<Body>| {
            let (this, inner) = (self.clone(), inner.clone());
            async move {
                let Some(mut cx) = req.extensions_mut().remove::<RequestContext>() else {
                    return Ok(crate::policy::context_missing(
                        req.into_parts().0.extensions,
                    ));
                };
                match this.authenticate(req.headers(), &cx).await {
                    Ok((client, grant)) => {
                        cx.client = Some(client);
                        // The token is this resource's alone: it goes no further.
                        req.headers_mut().remove(header::AUTHORIZATION);
                        req.extensions_mut().insert(grant);
                        req.extensions_mut().insert(cx);
                        inner.oneshot(req).await
                    }
                    Err(reject) => {
                        let mut extensions = req.into_parts().0.extensions;
                        extensions.insert(cx);
                        Ok(reject.respond(extensions))
                    }
                }
            }
        }))
    }
}

/// `Authorization: Bearer <token>`, the only place a token is read from.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Two resource URLs name the same resource: equal once scheme and host
/// are lower-cased and a trailing `/` is dropped.
fn same_resource(a: &str, b: &str) -> bool {
    let canonical = |s: &str| {
        let s = s.trim_end_matches('/');
        match s.find("://") {
            Some(i) => {
                let rest = &s[i + 3..];
                let end = rest.find('/').map_or(s.len(), |j| i + 3 + j);
                format!("{}{}", s[..end].to_ascii_lowercase(), &s[end..])
            }
            None => s.to_string(),
        }
    };
    canonical(a) == canonical(b)
}

/// RFC 6749 §3.3 `scope-token`: printable ASCII but space, `"` and `\`.
fn valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// A value for a quoted-string auth-param (no `"` or `\` inside).
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_compare_by_lower_cased_origin_and_path() {
        assert!(same_resource(
            "https://MCP.example.com/mcp",
            "https://mcp.example.com/mcp/"
        ));
        assert!(!same_resource(
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/MCP"
        ));
        assert!(!same_resource(
            "https://mcp.example.com/mcp",
            "https://other.example.com/mcp"
        ));
    }

    #[test]
    fn scope_tokens_and_bearer_values_are_read_strictly() {
        assert!(valid_scope("directory:read"));
        assert!(!valid_scope("two words"));
        assert!(!valid_scope("quote\""));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
