//! Header rules: required, matched and forbidden headers; request and response rewrites.
//!
//! ```yaml
//! policies:
//!   strip-internal-headers:
//!     type: headers
//!     require: [X-Tenant]                      # 400 header_required if absent
//!     match: { X-Tenant: "[a-z0-9-]{1,32}" }   # whole value; 400 header_invalid
//!     forbid: [X-Debug]                        # 400 header_forbidden if present
//!     request:                                 # just before forwarding
//!       remove: [Cookie]
//!       set:
//!         X-Caller: "${client.id}"
//!         X-Workflow-Token: "${env.WORKFLOW_TOKEN}"   # read once at load
//!     response:                                # on the way back
//!       remove: [Server, X-Powered-By]
//!       set: { X-Served-By: tollgate }
//! ```
//!
//! The checks run in the `Authorize` phase (a `Check`); the rewrites in the
//! `Rewrite` phase, innermost, with their own small service since they touch
//! the response. Everything is parsed here, once: header names, regexes and
//! value templates (`${client.id}`, `${request.id}`, `${client.ip}`,
//! `${env.NAME}`).

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{Check, CompileCx, Phase, PolicyMeta, RequestHead, Stage, Step};
use crate::context::RequestContext;
use crate::problem::{Code, Reject};

/// `type: headers` — required, matched and forbidden request headers (400 `header_required`,
/// `header_invalid`, `header_forbidden`), and header rewrites of the request and the response.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Headers every request must carry, e.g. `[X-Tenant]`; a missing one gets 400
    /// `header_required`.
    #[serde(default)]
    pub require: Vec<String>,
    /// Header -> regex its whole value must match, e.g. `{ X-Tenant: "[a-z0-9-]{1,32}" }`; else 400
    /// `header_invalid`.
    #[serde(default, rename = "match")]
    pub match_: std::collections::BTreeMap<String, String>,
    /// Headers a request may not carry, e.g. `[X-Debug]`; one present gets 400 `header_forbidden`.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// Rewrites of the request just before it is forwarded.
    #[serde(default)]
    pub request: HeaderRewrite,
    /// Rewrites of the answer on its way back to the caller.
    #[serde(default)]
    pub response: HeaderRewrite,
}

/// Headers to set (values may use `${client.id}`, `${request.id}`,
/// `${client.ip}`, `${env.NAME}`) and headers to remove.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRewrite {
    /// Header -> value to set (replacing any), e.g. `{ X-Caller: "${client.id}" }`.
    pub set: std::collections::BTreeMap<String, String>,
    /// Headers to remove, e.g. `[Cookie]`.
    pub remove: Vec<String>,
}

/// The checks of a `headers` policy.
#[derive(Debug)]
pub struct HeaderChecks {
    require: Vec<HeaderName>,
    /// Each value of the header must match the whole pattern.
    matches: Vec<(HeaderName, Regex)>,
    forbid: Vec<HeaderName>,
}

/// The rewrites of a `headers` policy.
#[derive(Debug, Default)]
pub struct Rewrites {
    pub(crate) request: RewriteSet,
    pub(crate) response: RewriteSet,
}

#[derive(Debug, Default)]
pub(crate) struct RewriteSet {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Template)>,
}

impl RewriteSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }
}

/// A `set` value, parsed at load.
#[derive(Debug)]
pub(crate) enum Template {
    /// No per-request placeholder: the value is built once.
    Fixed(HeaderValue),
    Parts(Vec<Part>),
}

#[derive(Debug)]
pub(crate) enum Part {
    /// Literal text (and `${env.NAME}` values, resolved at load).
    Text(String),
    ClientId,
    RequestId,
    ClientIp,
}

impl PolicyKind for HeadersConfig {
    const TYPE: &'static str = "headers";
    const SCHEMA_NAME: &'static str = "HeadersPolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }

    fn refusals(&self) -> &'static [Code] {
        if self.require.is_empty() && self.match_.is_empty() && self.forbid.is_empty() {
            &[]
        } else {
            &[
                Code::HeaderRequired,
                Code::HeaderInvalid,
                Code::HeaderForbidden,
            ]
        }
    }
}

fn compile(
    config: &HeadersConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    let names = |cx: &mut CompileCx<'_>, field: &str, list: &[String]| -> Vec<HeaderName> {
        let mut out = Vec::with_capacity(list.len());
        for (i, name) in list.iter().enumerate() {
            match header_name(name) {
                Ok(n) => out.push(n),
                Err(message) => cx.error(&[field, &i.to_string()], message),
            }
        }
        out
    };
    let require = names(cx, "require", &config.require);
    let forbid = names(cx, "forbid", &config.forbid);
    let mut matches = Vec::with_capacity(config.match_.len());
    for (name, pattern) in &config.match_ {
        let header = match header_name(name) {
            Ok(h) => h,
            Err(message) => {
                cx.error(&["match", name], message);
                continue;
            }
        };
        // Anchored: the pattern describes the whole value, so `[a-z]+`
        // cannot be satisfied by one letter somewhere in it.
        match Regex::new(&format!("^(?:{pattern})$")) {
            Ok(re) => matches.push((header, re)),
            Err(e) => cx.error(&["match", name], format!("not a valid regex: {e}")),
        }
    }
    let rewrites = Rewrites {
        request: rewrite_set(cx, "request", &config.request),
        response: rewrite_set(cx, "response", &config.response),
    };

    let mut stages = Vec::new();
    if !(require.is_empty() && matches.is_empty() && forbid.is_empty()) {
        let checks = HeaderChecks {
            require,
            matches,
            forbid,
        };
        stages.push(Stage::check(Phase::Authorize, meta, checks));
    }
    if !(rewrites.request.is_empty() && rewrites.response.is_empty()) {
        stages.push(Stage::new(
            Phase::Rewrite,
            meta,
            Step::Rewrite(Arc::new(rewrites)),
        ));
    }
    let nothing = config.require.is_empty()
        && config.match_.is_empty()
        && config.forbid.is_empty()
        && config.request.set.is_empty()
        && config.request.remove.is_empty()
        && config.response.set.is_empty()
        && config.response.remove.is_empty();
    if nothing {
        cx.error(
            &[],
            "give at least one of `require`, `match`, `forbid`, `request`, `response`",
        );
    }
    Some(stages)
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{name}` is not a header name"))
}

fn rewrite_set(cx: &mut CompileCx<'_>, side: &str, config: &HeaderRewrite) -> RewriteSet {
    let mut out = RewriteSet::default();
    for (i, name) in config.remove.iter().enumerate() {
        match header_name(name) {
            Ok(n) => out.remove.push(n),
            Err(message) => cx.error(&[side, "remove", &i.to_string()], message),
        }
    }
    for (name, value) in &config.set {
        let at = [side, "set", name.as_str()];
        let header = match header_name(name) {
            Ok(h) => h,
            Err(message) => {
                cx.error(&at, message);
                continue;
            }
        };
        match Template::parse(value) {
            Ok(t) => out.set.push((header, t)),
            Err(message) => cx.error(&at, message),
        }
    }
    out
}

// === impl Template ===

impl Template {
    /// Parses `${...}` placeholders; `${env.NAME}` is read now. The error
    /// never contains an environment value.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut secret = false;
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
            let name = after[..end].trim();
            let part = match name {
                "client.id" => Part::ClientId,
                "request.id" => Part::RequestId,
                "client.ip" => Part::ClientIp,
                _ => match name.strip_prefix("env.") {
                    Some(var) => {
                        let value = std::env::var(var)
                            .map_err(|_| format!("environment variable `{var}` is not set"))?;
                        secret = true;
                        literal.push_str(&value);
                        rest = &after[end + 1..];
                        continue;
                    }
                    None => {
                        return Err(format!(
                            "unknown placeholder `${{{name}}}`: use ${{client.id}}, \
                             ${{request.id}}, ${{client.ip}} or ${{env.NAME}}"
                        ))
                    }
                },
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        let invalid = |secret: bool| {
            if secret {
                "the value (with its environment variables) is not a valid header value".to_string()
            } else {
                format!("`{text}` is not a valid header value")
            }
        };
        if parts.is_empty() {
            let mut value = HeaderValue::try_from(literal).map_err(|_| invalid(secret))?;
            value.set_sensitive(secret);
            return Ok(Template::Fixed(value));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        let all_text: String = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        HeaderValue::try_from(all_text).map_err(|_| invalid(secret))?;
        Ok(Template::Parts(parts))
    }

    /// The value for this request; `None` when it refers to something the
    /// call lacks (an anonymous `${client.id}`) or renders invalid.
    pub(crate) fn render(&self, cx: Option<&RequestContext>) -> Option<HeaderValue> {
        let parts = match self {
            Template::Fixed(value) => return Some(value.clone()),
            Template::Parts(parts) => parts,
        };
        let cx = cx?;
        // Sized exactly (an address is at most 39 characters), so the value
        // keeps the string's one allocation.
        let client_id = || cx.client.as_ref().map(|c| &*c.id);
        let size: usize = parts
            .iter()
            .map(|part| match part {
                Part::Text(t) => t.len(),
                Part::ClientId => client_id().map_or(0, str::len),
                Part::RequestId => cx.request_id.len(),
                Part::ClientIp => 39,
            })
            .sum();
        let mut out = String::with_capacity(size);
        for part in parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::ClientId => out.push_str(&cx.client.as_ref()?.id),
                Part::RequestId => out.push_str(cx.request_id.to_str().ok()?),
                Part::ClientIp => {
                    let _ = write!(out, "{}", cx.client_ip);
                }
            }
        }
        HeaderValue::try_from(out).ok()
    }
}

// === impl HeaderChecks ===

impl Check for HeaderChecks {
    fn check(&self, req: &mut RequestHead<'_>, _cx: &mut RequestContext) -> Result<(), Reject> {
        let headers = &*req.headers;
        for name in &self.require {
            if !headers.contains_key(name) {
                return Err(required(name));
            }
        }
        for (name, pattern) in &self.matches {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                return Err(required(name));
            }
            let all_match = values.all(|v| v.to_str().is_ok_and(|s| pattern.is_match(s)));
            if !all_match {
                return Err(Reject::new(
                    Code::HeaderInvalid,
                    format!("the value of header `{name}` is not in the accepted form"),
                ));
            }
        }
        for name in &self.forbid {
            if headers.contains_key(name) {
                return Err(Reject::new(
                    Code::HeaderForbidden,
                    format!("header `{name}` is not allowed on this operation"),
                ));
            }
        }
        Ok(())
    }
}

fn required(name: &HeaderName) -> Reject {
    Reject::new(
        Code::HeaderRequired,
        format!("header `{name}` is required on this operation"),
    )
}

// === impl Rewrites ===

impl RewriteSet {
    /// Removes, then sets: a header both removed and set ends with the set
    /// value. A value that cannot be rendered removes the header, so a
    /// caller's own header of that name never passes for the gateway's.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, cx: Option<&RequestContext>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, template) in &self.set {
            match template.render(cx) {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RequestContext {
        let mut cx = RequestContext::new(
            HeaderValue::from_static("req-1"),
            "127.0.0.1:1".parse().expect("addr"),
            "2001:db8::1".parse().expect("ip"),
        );
        cx.client = Some(crate::context::Client {
            id: "hr-portal".into(),
            roles: Default::default(),
            key_id: None,
        });
        cx
    }

    #[test]
    fn templates_render_placeholders_and_read_env_once() {
        std::env::set_var("TOLLGATE_HEADERS_UNIT_SECRET", "s3cret");
        let t = Template::parse(
            "${client.id}/${request.id}@${client.ip};${env.TOLLGATE_HEADERS_UNIT_SECRET}",
        )
        .expect("template");
        std::env::remove_var("TOLLGATE_HEADERS_UNIT_SECRET");
        let v = t.render(Some(&context())).expect("value");
        assert_eq!(v, "hr-portal/req-1@2001:db8::1;s3cret");

        let fixed = Template::parse("Bearer ${env.PATH}").expect("env present");
        assert!(matches!(&fixed, Template::Fixed(v) if v.is_sensitive()));
    }

    #[test]
    fn an_anonymous_client_id_renders_nothing() {
        let t = Template::parse("${client.id}").expect("template");
        let mut cx = context();
        cx.client = None;
        assert!(t.render(Some(&cx)).is_none());
    }

    #[test]
    fn bad_templates_are_config_errors_without_the_secret() {
        std::env::set_var("TOLLGATE_HEADERS_UNIT_BAD", "line\nbreak");
        let err = Template::parse("x ${env.TOLLGATE_HEADERS_UNIT_BAD}").expect_err("newline");
        std::env::remove_var("TOLLGATE_HEADERS_UNIT_BAD");
        assert!(!err.contains("line"), "{err}");
        assert!(Template::parse("${env.TOLLGATE_SURELY_UNSET_VAR_42}").is_err());
        assert!(Template::parse("${client.name}").is_err());
        assert!(Template::parse("${client.id").is_err());
        assert!(Template::parse("a\nb").is_err());
        assert!(matches!(
            Template::parse("cost: $5").expect("plain"),
            Template::Fixed(_)
        ));
    }

    #[test]
    fn a_header_both_removed_and_set_ends_with_the_set_value() {
        let set = RewriteSet {
            remove: vec![
                HeaderName::from_static("x-a"),
                HeaderName::from_static("x-b"),
            ],
            set: vec![(
                HeaderName::from_static("x-a"),
                Template::parse("new").expect("t"),
            )],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("old"));
        headers.insert("x-b", HeaderValue::from_static("old"));
        set.apply(&mut headers, None);
        assert_eq!(headers.get("x-a").map(|v| v.as_bytes()), Some(&b"new"[..]));
        assert!(!headers.contains_key("x-b"));
    }
}
