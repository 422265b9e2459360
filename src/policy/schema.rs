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
//!   `pointer` is the JSON pointer of the offending value in the body.
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

use super::{CompiledPolicy, Phase, PolicyMeta, Saved, Stage, Step};
use crate::body::{self, Body, BodyError};
use crate::config::schema::{OperationConfig, ResponseValidation};
use crate::context::RequestContext;
use crate::problem::{Code, FieldError, Reject};

/// At most this many violations are listed in one answer: enough to fix a
/// body, not a way to make the gateway write megabytes of errors.
const MAX_ERRORS: usize = 20;

/// A compiled JSON Schema (2020-12).
#[derive(Clone)]
pub struct JsonSchema(Arc<jsonschema::Validator>);

/// An operation's compiled body schemas.
#[derive(Clone)]
pub struct SchemaValidation {
    pub request: Option<JsonSchema>,
    pub response: Option<JsonSchema>,
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
            .map(|v| JsonSchema(Arc::new(v)))
            .map_err(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    format!("not a valid JSON Schema: {e}")
                } else {
                    format!("not a valid JSON Schema (at `{at}`): {e}")
                }
            })
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

/// Buffers a request body (already bounded by `max_body`) and checks it;
/// the request comes back with the same bytes.
async fn check_request(
    schema: &JsonSchema,
    req: Request<Body>,
) -> Result<Request<Body>, (Reject, http::Extensions)> {
    let (parts, body) = req.into_parts();
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
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if body::is_body_too_large(&e) => {
            let reject = Reject::new(
                Code::BodyTooLarge,
                "the request body is larger than the gateway accepts",
            );
            return Err((reject, parts.extensions));
        }
        Err(_) => {
            let reject = Reject::new(Code::InvalidRequestBody, "the request body broke off");
            return Err((reject, parts.extensions));
        }
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
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
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
