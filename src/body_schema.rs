//! JSON-schema validation of an operation's bodies: `request_schema` on the
//! way in (phase `Validate`), `response_schema` on the way out.
//!
//! ```yaml
//! operations:
//!   - id: createEmployee
//!     method: POST
//!     path: /
//!     request_schema: { type: object, required: [name], properties: { name: { type: string } } }
//!     response_schema: { type: object, required: [id] }
//!     response_validation: enforce      # or log (default), off
//! ```
//!
//! Schemas are JSON Schema 2020-12 (the dialect OpenAPI 3.1 uses, so the
//! export carries them unchanged) and compile once, at load. A request
//! body is buffered (it is already bounded by `limits.max_body`),
//! validated, and forwarded as the same bytes:
//! - a content type that is not JSON: 415 `unsupported_media_type`;
//! - JSON that does not parse, or breaks the schema: 400
//!   `invalid_request_body` with `errors: [{pointer, message}]`, where
//!   `pointer` is the JSON pointer of the offending value in the body;
//! - JSON that parsers read differently, so the upstream could act on a
//!   value the schema never saw: a member name twice in one object, or a
//!   number written with more precision than the checked value holds
//!   (`100.00000000000000001`, integers past 64 bits) where the schema
//!   compares numbers (`maximum`, `minimum`, `multipleOf`, `const`,
//!   `enum`...): 400 `invalid_request_body`, pointing at it;
//! - a body the check cannot read as written: `Content-Encoding` other
//!   than `identity`, a `charset` other than UTF-8, two `Content-Type`s:
//!   415 `unsupported_media_type` (never forwarded unvalidated).
//!
//! A 2xx response is buffered up to `max_body` and checked: with `enforce`
//! a violation becomes 502 `invalid_upstream_response` (the caller never
//! sees data the contract does not promise); with `log` it is logged and
//! passed through. A response larger than `max_body` is passed through
//! unvalidated under `log` (buffering it would be unbounded) and refused
//! under `enforce` (it cannot be shown to comply).

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::body::{self, Body, BodyError};
use crate::config::schema::{OperationConfig, ResponseValidation};
use crate::context::RequestContext;
use crate::policy::{CompiledPolicy, Phase, PolicyMeta, Saved, Stage, Step};
use crate::problem::{Code, FieldError, Reject};

/// At most this many violations are listed in one answer: enough to fix a
/// body, not a way to make the gateway write megabytes of errors.
const MAX_ERRORS: usize = 20;

/// A compiled JSON Schema (2020-12).
#[derive(Clone)]
pub struct JsonSchema(Arc<jsonschema::Validator>, bool);

/// Keywords under which a schema compares numbers: only then can a number
/// written more precisely than a float holds be judged as another number.
const NUMERIC_KEYWORDS: [&str; 7] = [
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "multipleOf",
    "const",
    "enum",
];

/// Whether any part of `schema` compares numbers (see [`NUMERIC_KEYWORDS`]).
fn compares_numbers(schema: &serde_json::Value) -> bool {
    match schema {
        serde_json::Value::Object(members) => members
            .iter()
            .any(|(k, v)| NUMERIC_KEYWORDS.contains(&k.as_str()) || compares_numbers(v)),
        serde_json::Value::Array(items) => items.iter().any(compares_numbers),
        _ => false,
    }
}

/// An operation's compiled body schemas.
#[derive(Clone)]
pub struct SchemaValidation {
    /// The compiled `request_schema`, when the operation has one.
    pub request: Option<JsonSchema>,
    /// The compiled `response_schema`, when the operation has one.
    pub response: Option<JsonSchema>,
    /// What a response that breaks `response` gets (`response_validation`).
    pub response_mode: ResponseValidation,
    /// `limits.max_body`: the most of a response that is buffered.
    pub max_body: u64,
    /// The policy name refusals carry (`{operation}/schema`).
    pub name: Arc<str>,
}

/// Compiles an operation's `request_schema` / `response_schema` into the
/// policy that checks them (`None` when it has neither). Errors name the
/// field (`request_schema` or `response_schema`) and what is wrong.
pub fn compile_for(
    op: &OperationConfig,
    max_body: u64,
) -> Result<Option<CompiledPolicy>, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let mut compile = |field: &'static str, schema: &Option<serde_json::Value>| {
        schema.as_ref().and_then(|s| {
            JsonSchema::compile(s)
                .map_err(|e| errors.push((field, e)))
                .ok()
        })
    };
    let request = compile("request_schema", &op.request_schema);
    let response = compile("response_schema", &op.response_schema);
    if !errors.is_empty() {
        return Err(errors);
    }
    let name: Arc<str> = format!("{}/schema", op.id).into();
    let validation = SchemaValidation {
        request,
        response,
        response_mode: op.response_validation,
        max_body,
        name: name.clone(),
    };
    let meta = Arc::new(PolicyMeta {
        name,
        type_name: "schema",
        report_only: false,
    });
    Ok(validation.stage(&meta).map(|stage| CompiledPolicy {
        meta,
        stages: vec![stage],
    }))
}

// === impl JsonSchema ===

impl JsonSchema {
    /// Compiles `schema` as JSON Schema 2020-12 (unless it names another
    /// dialect in `$schema`), with `format` asserted (`email`, `date-time`,
    /// `uri`, ...: what a spec says of a value holds at the gateway;
    /// unknown formats are ignored). The error says what is wrong with it.
    pub fn compile(schema: &serde_json::Value) -> Result<JsonSchema, String> {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(schema)
            .map(|v| JsonSchema(Arc::new(v), compares_numbers(schema)))
            .map_err(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    format!("not a valid JSON Schema: {e}")
                } else {
                    format!("not a valid JSON Schema (at `{at}`): {e}")
                }
            })
    }

    /// Whether the schema compares numbers anywhere (`maximum`, `enum`...):
    /// then a number no float holds as written is refused, since the check
    /// would judge another number than the upstream reads. Elsewhere such
    /// a number is the upstream's business, as any other value the schema
    /// leaves free.
    pub fn compares_numbers(&self) -> bool {
        self.1
    }

    /// The violations of `instance`, each at the JSON pointer of the
    /// offending value (`""` is the whole document).
    pub fn violations(&self, instance: &serde_json::Value) -> Vec<FieldError> {
        self.0
            .iter_errors(instance)
            .take(MAX_ERRORS)
            .map(|e| FieldError {
                pointer: e.instance_path.to_string(),
                message: e.to_string(),
            })
            .collect()
    }
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonSchema")
    }
}

/// Whether a `Content-Type` is JSON: `application/json` or any `+json`
/// suffix, parameters ignored.
pub fn is_json(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(http::header::CONTENT_TYPE)?;
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(essence == "application/json" || essence.ends_with("+json"))
}

// === impl SchemaValidation ===

impl SchemaValidation {
    /// The stage, or `None` when there is nothing to check.
    pub fn stage(self, meta: &Arc<PolicyMeta>) -> Option<Stage> {
        if self.request.is_none() && !self.response_checked() {
            return None;
        }
        Some(Stage::new(
            Phase::Validate,
            meta,
            Step::Schema(Arc::new(self)),
        ))
    }

    fn response_checked(&self) -> bool {
        self.response.is_some() && self.response_mode != ResponseValidation::Off
    }

    /// The request half: the body is buffered and checked against the
    /// request schema, and comes back with the same bytes.
    pub(crate) async fn before(
        &self,
        parts: &mut http::request::Parts,
        body: &mut Body,
        saved: &mut Saved,
    ) -> Result<(), Reject> {
        if let Some(schema) = &self.request {
            let head = std::mem::replace(parts, Request::new(()).into_parts().0);
            let taken = std::mem::replace(body, body::empty());
            match check_request(schema, Request::from_parts(head, taken)).await {
                Ok(req) => (*parts, *body) = req.into_parts(),
                Err((reject, extensions)) => {
                    parts.extensions = extensions;
                    return Err(reject);
                }
            }
        }
        if self.response_checked() {
            *saved = Saved::CheckResponse;
        }
        Ok(())
    }

    /// The response half: a successful answer is checked against the
    /// response schema (refused, or only logged, per `response_validation`).
    pub(crate) async fn after(&self, response: &mut Response<Body>, cx: &RequestContext) {
        let Some(schema) = &self.response else {
            return;
        };
        if response.status().is_success() {
            let taken = std::mem::replace(response, Response::new(body::empty()));
            *response = self.check_response(schema, taken, cx).await;
        }
    }

    async fn check_response(
        &self,
        schema: &JsonSchema,
        response: Response<Body>,
        cx: &RequestContext,
    ) -> Response<Body> {
        let enforce = self.response_mode == ResponseValidation::Enforce;
        let (parts, body) = response.into_parts();
        let refuse = |detail: String| {
            tracing::warn!(detail, "upstream response breaks the response schema");
            Reject::new(Code::InvalidUpstreamResponse, detail).into_response(&cx.request_id)
        };
        let (bytes, rest) = match buffer_at_most(body, self.max_body).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "upstream response body failed");
                return Reject::new(Code::UpstreamUnavailable, "the upstream response broke off")
                    .into_response(&cx.request_id);
            }
        };
        if let Some(rest) = rest {
            if enforce {
                return refuse(format!(
                    "the response is larger than {} bytes and cannot be validated",
                    self.max_body
                ));
            }
            tracing::warn!(
                limit = self.max_body,
                "response larger than max_body passed through unvalidated"
            );
            return Response::from_parts(parts, rest);
        }
        let verdict = match is_json(&parts.headers) {
            Some(true) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(json) => {
                    let v = schema.violations(&json);
                    match v.first() {
                        None => Ok(()),
                        Some(first) => Err(format!(
                            "{} violation(s), first at `{}`: {}",
                            v.len(),
                            first.pointer,
                            first.message
                        )),
                    }
                }
                Err(e) => Err(format!("the response is not valid JSON: {e}")),
            },
            _ => Err("the response is not JSON".to_string()),
        };
        match verdict {
            Ok(()) => Response::from_parts(parts, body::full(bytes)),
            Err(detail) if enforce => refuse(detail),
            Err(detail) => {
                let operation = cx
                    .operation
                    .as_ref()
                    .map(|o| o.id.to_string())
                    .unwrap_or_default();
                tracing::warn!(operation, detail, "upstream response breaks the response schema (passed through: response_validation is log)");
                Response::from_parts(parts, body::full(bytes))
            }
        }
    }
}

/// Why a request body cannot be judged as the UTF-8 JSON the schema
/// speaks of, though it may claim to be JSON: it is encoded (`gzip`…), in
/// another charset, or says two different things about its type. Each is
/// an answer the upstream could read differently from the bytes checked.
fn undecodable(headers: &HeaderMap) -> Option<String> {
    use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().unwrap_or("?");
        let encoded = text
            .split(',')
            .map(str::trim)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        if encoded {
            return Some(format!(
                "this operation's body is checked as plain JSON; Content-Encoding `{text}` is not accepted"
            ));
        }
    }
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let (first, second) = (types.next(), types.next());
    if second.is_some() {
        return Some("the request has more than one Content-Type".into());
    }
    let value = first?.to_str().unwrap_or("");
    for param in value.split(';').skip(1) {
        let Some((name, charset)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let charset = charset.trim().trim_matches('"');
        if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")) {
            return Some(format!(
                "JSON bodies are UTF-8 (RFC 8259 §8.1); charset `{charset}` is not accepted"
            ));
        }
    }
    None
}

/// Buffers a request body (already bounded by `max_body`) and checks it;
/// the request comes back with the same bytes.
async fn check_request(
    schema: &JsonSchema,
    req: Request<Body>,
) -> Result<Request<Body>, (Reject, http::Extensions)> {
    let (parts, body) = req.into_parts();
    if let Some(detail) = undecodable(&parts.headers) {
        return Err((
            Reject::new(Code::UnsupportedMediaType, detail),
            parts.extensions,
        ));
    }
    let json = is_json(&parts.headers);
    if json == Some(false) {
        return Err((
            Reject::new(
                Code::UnsupportedMediaType,
                "this operation takes a JSON body (Content-Type: application/json)",
            ),
            parts.extensions,
        ));
    }
    let bytes = match body::collect_request(body).await {
        Ok(bytes) => bytes,
        Err(reject) => return Err((reject, parts.extensions)),
    };
    if json.is_none() {
        let detail = if bytes.is_empty() {
            "this operation takes a JSON body"
        } else {
            "this operation takes a JSON body (Content-Type: application/json)"
        };
        let code = if bytes.is_empty() {
            Code::InvalidRequestBody
        } else {
            Code::UnsupportedMediaType
        };
        return Err((Reject::new(code, detail), parts.extensions));
    }
    let value = match parse_strict_judging(&bytes, schema.compares_numbers()) {
        Ok(v) => v,
        Err(Unjudgeable::Syntax(e)) => {
            let reject = Reject::new(
                Code::InvalidRequestBody,
                "the request body is not valid JSON",
            )
            .with_errors(vec![FieldError {
                pointer: String::new(),
                message: e.to_string(),
            }]);
            return Err((reject, parts.extensions));
        }
        Err(Unjudgeable::Ambiguous(error)) => {
            let reject = Reject::new(
                Code::InvalidRequestBody,
                "the request body is JSON that parsers read differently",
            )
            .with_errors(vec![error]);
            return Err((reject, parts.extensions));
        }
    };
    let violations = schema.violations(&value);
    if !violations.is_empty() {
        let reject = Reject::new(
            Code::InvalidRequestBody,
            "the request body does not match the operation's schema",
        )
        .with_errors(violations);
        return Err((reject, parts.extensions));
    }
    Ok(Request::from_parts(parts, body::full(bytes)))
}

// === Strict JSON: the schema judges what every parser reads ===

/// Why a body was not judged.
#[derive(Debug)]
enum Unjudgeable {
    /// Not JSON at all.
    Syntax(serde_json::Error),
    /// JSON whose meaning depends on the parser: a member name twice (the
    /// check would see the last, a first-wins upstream the first), or a
    /// number with more precision than the checked value holds
    /// (`100.00000000000000001` is `100` as a float, and passes
    /// `maximum: 100`, while a decimal parser upstream reads more).
    Ambiguous(FieldError),
}

/// Parses a request body to the value the schema judges, refusing what
/// parsers disagree on (see [`Unjudgeable::Ambiguous`]). Numbers are kept
/// only when the value checked is the number written: integers within
/// 64 bits, and decimals whose digits a float holds exactly as written
/// (`0.1` yes — it reads back as `0.1` — but not 20 significant digits).
#[cfg(test)]
fn parse_strict(bytes: &[u8]) -> Result<serde_json::Value, Unjudgeable> {
    parse_strict_judging(bytes, true)
}

/// [`parse_strict`], with inexact numbers refused only when `numbers`.
fn parse_strict_judging(bytes: &[u8], numbers: bool) -> Result<serde_json::Value, Unjudgeable> {
    use serde::de::DeserializeSeed as _;
    let state = std::cell::RefCell::new(StrictState {
        path: Vec::new(),
        numbers: 0,
        inexact: if numbers {
            inexact_numbers(bytes)
        } else {
            Vec::new()
        },
        failure: None,
    });
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict(&state)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    let failure = state.into_inner().failure;
    match (parsed, failure) {
        (_, Some(error)) => Err(Unjudgeable::Ambiguous(error)),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(Unjudgeable::Syntax(e)),
    }
}

struct StrictState {
    /// Where the parse is: member names and array indexes.
    path: Vec<Segment>,
    /// Numbers seen so far, in document order.
    numbers: usize,
    /// The ordinals of the numbers written more precisely than parsed.
    inexact: Vec<usize>,
    failure: Option<FieldError>,
}

/// One step of a JSON pointer.
enum Segment {
    Index(usize),
    Member(String),
}

impl StrictState {
    /// The JSON pointer of the current place, plus member `last` if given.
    fn pointer(&self, last: Option<&str>) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let escape = |name: &str| name.replace('~', "~0").replace('/', "~1");
        for segment in &self.path {
            let _ = match segment {
                Segment::Index(i) => write!(out, "/{i}"),
                Segment::Member(name) => write!(out, "/{}", escape(name)),
            };
        }
        if let Some(name) = last {
            let _ = write!(out, "/{}", escape(name));
        }
        out
    }

    fn number<E: serde::de::Error>(&mut self) -> Result<(), E> {
        let ordinal = self.numbers;
        self.numbers += 1;
        if self.inexact.binary_search(&ordinal).is_ok() {
            let message = "this number has more digits than can be checked exactly \
                           (at most 17 significant digits, or a 64-bit integer)";
            self.failure = Some(FieldError {
                pointer: self.pointer(None),
                message: message.into(),
            });
            return Err(E::custom(message));
        }
        Ok(())
    }
}

/// The seed that parses one value under [`StrictState`].
#[derive(Clone, Copy)]
struct Strict<'s>(&'s std::cell::RefCell<StrictState>);

impl<'de> serde::de::DeserializeSeed<'de> for Strict<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.borrow_mut().number()?;
        Ok(v.into())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.borrow_mut().number()?;
        Ok(v.into())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.borrow_mut().number()?;
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.0.borrow_mut().path.push(Segment::Index(items.len()));
            let item = seq.next_element_seed(self);
            self.0.borrow_mut().path.pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(serde_json::Value::Array(items)),
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                let mut state = self.0.borrow_mut();
                let pointer = state.pointer(Some(&name));
                let message = format!("the member `{name}` appears more than once");
                state.failure = Some(FieldError {
                    pointer,
                    message: message.clone(),
                });
                return Err(serde::de::Error::custom(message));
            }
            self.0.borrow_mut().path.push(Segment::Member(name.clone()));
            let value = map.next_value_seed(self);
            self.0.borrow_mut().path.pop();
            members.insert(name, value?);
        }
        Ok(serde_json::Value::Object(members))
    }
}

/// The ordinals (in document order) of the number literals of `bytes`
/// that do not read back as written once parsed. A plain scan: strings
/// are skipped, everything else that starts like a number is one (the
/// parse proper rejects whatever is not JSON).
fn inexact_numbers(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut ordinal = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let literal = std::str::from_utf8(&bytes[start..i]).unwrap_or("");
                if !number_is_exact(literal) {
                    out.push(ordinal);
                }
                ordinal += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether the value parsed from a JSON number literal is the number
/// written: a 64-bit integer, or a decimal that reads back from its float
/// with the same digits.
fn number_is_exact(literal: &str) -> bool {
    if !literal.contains(['.', 'e', 'E'])
        && (literal.parse::<u64>().is_ok() || literal.parse::<i64>().is_ok())
    {
        return true;
    }
    match literal.parse::<f64>() {
        // Out of range: the parse proper refuses it.
        Ok(f) if !f.is_finite() => true,
        Ok(f) => decimal(literal) == decimal(&format!("{f:e}")),
        Err(_) => true,
    }
}

/// A decimal literal as (negative, significant digits, exponent of ten),
/// with no leading or trailing zero digits; every zero is `(false, "", 0)`.
fn decimal(literal: &str) -> (bool, String, i64) {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = rest.split_once(['e', 'E']).unwrap_or((rest, "0"));
    let exponent =
        exponent
            .trim_start_matches('+')
            .parse::<i64>()
            .unwrap_or(if exponent.starts_with('-') {
                i64::MIN / 2
            } else {
                i64::MAX / 2
            });
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut exponent = exponent.saturating_sub(frac.len() as i64);
    let all = format!("{int}{frac}");
    let digits = all.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    exponent = exponent.saturating_add((digits.len() - trimmed.len()) as i64);
    if trimmed.is_empty() {
        return (false, String::new(), 0);
    }
    (negative, trimmed.to_string(), exponent)
}

/// Reads `body` while it stays within `limit` bytes. `Ok((all, None))`:
/// the whole body. `Ok((_, Some(body)))`: it is larger; the returned body
/// replays what was read, then streams the rest.
async fn buffer_at_most(mut body: Body, limit: u64) -> Result<(Bytes, Option<Body>), BodyError> {
    if body.size_hint().lower() > limit {
        return Ok((Bytes::new(), Some(body)));
    }
    let mut read: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                total += data.len() as u64;
                read.push_back(data);
                if total > limit {
                    let replay = Replay { read, rest: body };
                    return Ok((Bytes::new(), Some(BodyExt::boxed_unsync(replay))));
                }
            }
            // Trailers of a validated response are dropped: the body is
            // re-sent whole, and JSON APIs do not use them.
            Err(_trailers) => {}
        }
    }
    let mut all = Vec::with_capacity(total as usize);
    for chunk in read {
        all.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(all), None))
}

/// The chunks already read, then the rest of the body.
struct Replay {
    read: VecDeque<Bytes>,
    rest: Body,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(chunk) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.read.iter().map(|c| c.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn violations_point_at_the_offending_value() {
        let schema = JsonSchema::compile(&json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "integer"}}
            }
        }))
        .expect("schema");
        let v = schema.violations(&json!({"name": 3, "tags": [1, "x"]}));
        let pointers: Vec<&str> = v.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/name"), "{pointers:?}");
        assert!(pointers.contains(&"/tags/1"), "{pointers:?}");
        assert!(schema.violations(&json!({"name": "Ada"})).is_empty());
    }

    #[test]
    fn a_broken_schema_is_refused_with_a_reason() {
        let err = JsonSchema::compile(&json!({"type": 12})).expect_err("invalid");
        assert!(err.contains("not a valid JSON Schema"), "{err}");
    }

    #[test]
    fn json_content_types_include_suffixes_and_parameters() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(v),
            );
            is_json(&m)
        };
        assert_eq!(h("application/json; charset=utf-8"), Some(true));
        assert_eq!(h("application/merge-patch+json"), Some(true));
        assert_eq!(h("text/plain"), Some(false));
        assert_eq!(is_json(&HeaderMap::new()), None);
    }

    fn ambiguity(body: &str) -> Option<FieldError> {
        match parse_strict(body.as_bytes()) {
            Err(Unjudgeable::Ambiguous(e)) => Some(e),
            _ => None,
        }
    }

    #[test]
    fn a_member_named_twice_is_pointed_at() {
        let e = ambiguity(r#"{"a": [{"b/c~": 1, "b/c~": 2}]}"#).expect("refused");
        assert_eq!(e.pointer, "/a/0/b~1c~0");
        assert!(ambiguity(r#"{"a": {"a": 1}, "b": {"a": 2}}"#).is_none());
        assert!(matches!(
            parse_strict(b"{\"a\": }"),
            Err(Unjudgeable::Syntax(_))
        ));
        assert!(matches!(parse_strict(b"{} x"), Err(Unjudgeable::Syntax(_))));
    }

    #[test]
    fn numbers_pass_only_when_the_value_checked_is_the_number_written() {
        for exact in [
            "0",
            "-0",
            "100",
            "0.1",
            "1e2",
            "1.5E-7",
            "-12.50",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "0.30000000000000004",
            "1e308",
        ] {
            assert!(number_is_exact(exact), "{exact}");
        }
        for inexact in [
            "100.00000000000000001",
            "18446744073709551616",
            "0.1000000000000000000001",
            "1e-400",
            "3.14159265358979323846",
        ] {
            assert!(!number_is_exact(inexact), "{inexact}");
        }
        let e = ambiguity(r#"{"s": "1.00000000000000000001", "n": [1, 2.00000000000000000001]}"#)
            .expect("refused");
        assert_eq!(e.pointer, "/n/1");
        assert_eq!(
            parse_strict(br#"{"a": 0.5, "b": "x\"1e999"}"#).ok(),
            Some(json!({"a": 0.5, "b": "x\"1e999"}))
        );
    }

    #[test]
    fn an_inexact_number_is_refused_only_where_the_schema_compares_numbers() {
        let free = JsonSchema::compile(&json!({"type": "object"})).expect("schema");
        let bounded = JsonSchema::compile(
            &json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"maximum": 100}}}),
        )
        .expect("schema");
        assert!(!free.compares_numbers());
        assert!(bounded.compares_numbers());
        let body = br#"{"a": 100.00000000000000001}"#;
        assert!(parse_strict_judging(body, free.compares_numbers()).is_ok());
        assert!(matches!(
            parse_strict_judging(body, bounded.compares_numbers()),
            Err(Unjudgeable::Ambiguous(_))
        ));
        // Duplicate member names are refused whatever the schema.
        assert!(parse_strict_judging(br#"{"a": 1, "a": 2}"#, false).is_err());
    }

    #[test]
    fn encoded_bodies_and_other_charsets_cannot_be_judged() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, http::HeaderValue::from_static(v));
            }
            undecodable(&m)
        };
        assert!(h(&[("content-type", "application/json")]).is_none());
        assert!(h(&[("content-type", "application/json; charset=\"UTF-8\"")]).is_none());
        assert!(h(&[("content-encoding", "identity")]).is_none());
        assert!(h(&[("content-encoding", "gzip")]).is_some());
        assert!(h(&[("content-type", "application/json;charset=latin1")]).is_some());
        assert!(h(&[
            ("content-type", "application/json"),
            ("content-type", "text/plain")
        ])
        .is_some());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_replayed_whole() {
        let (bytes, rest) = buffer_at_most(body::full(vec![b'x'; 10]), 4)
            .await
            .expect("read");
        assert!(bytes.is_empty());
        let all = rest
            .expect("over the limit")
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(all.len(), 10);
        let (bytes, rest) = buffer_at_most(body::full(&b"abc"[..]), 4)
            .await
            .expect("read");
        assert_eq!(bytes, "abc");
        assert!(rest.is_none());
    }
}
