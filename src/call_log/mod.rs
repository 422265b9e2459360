//! The call log: recent calls of the APIs and operations that opt in with
//! `record:`, with their request and response metadata and (with
//! `bodies: true`) a bounded prefix of each body, kept in the state store
//! so every instance sharing it shows one log (`GET /admin/calls`).
//!
//! ```yaml
//! call_log: { max_bytes: 8MiB, max_entries: 1000, ttl: 1h, queue: 4MiB }
//! apis:
//!   - name: payments
//!     record:
//!       bodies: true
//!       max_body_bytes: 4KiB
//!       redact_headers: [X-Customer-Token]
//!       redact_json: [/password, /card/number, /items/*/iban]
//!     operations:
//!       - id: health
//!         record: { enabled: false }   # an operation's record: replaces its API's
//! ```
//!
//! It owns the compiled `record:` rules (one per operation), the per-call
//! [`Recording`] (the request head copied at the route step, each body
//! teed through [`Tee`] up to `max_body_bytes`), the redaction
//! ([`redact`]), and the [`CallLog`] sink: a queue bounded in bytes and
//! one writer task that appends batches to the store. A full queue drops
//! the entry and counts it (`tollgate_call_log_dropped_total`): a request
//! never waits for the log. Bounds in the store (total bytes and entries,
//! oldest evicted first, TTL) are the store's (`Store::calls_push`).
//!
//! **Never recorded:** the values of `Authorization`, `Proxy-Authorization`,
//! `Cookie`, `Set-Cookie`, `X-API-Key` and of every header and query
//! parameter an `auth` policy reads a key from, whatever `record:` says;
//! and the credential values the caller presented, wherever they appear in
//! the entry (a body, an upstream echoing them back).
//!
//! **Bodies:** the first `max_body_bytes` of each, as JSON (a complete
//! JSON body, `redact_json` applied), text (UTF-8) or base64, with `size`
//! (bytes that passed) and `truncated`. With `redact_json` set, a body that
//! is not complete JSON within the bound is omitted (`omitted` says why):
//! its pointers cannot be found in it, so nothing of it is shown.

pub mod config;
pub mod redact;

use http::{Request, Response};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

use crate::body::tee::{Tee, TeeEnd, TeeSink};
use crate::body::Body;
use crate::calendar::format_rfc3339;
use crate::clock::{Nanos, SharedClock};
use crate::config::schema::{PolicyDef, PolicyRef};
use crate::config::{ConfigError, LoadedConfig};
use crate::context::RequestContext;
use crate::policy::auth::AuthConfig;
use crate::problem::RejectedWith;
use crate::state::{AnyStore, CallLogBounds, CallRecord, CallSummary, Store};
use config::{CallLogConfig, RecordConfig};
use redact::Redaction;

/// The largest `max_body_bytes`.
const MAX_BODY_BYTES: u64 = 1 << 20;

/// The most `call_log.max_entries` may be: a page reads the summaries of
/// them all.
const MAX_ENTRIES: u64 = 100_000;

/// Entries the writer appends in one store call at most.
const BATCH: usize = 64;

/// How long an admin read waits for this instance's queue to be written.
pub const FLUSH_WITHIN: Duration = Duration::from_secs(2);

// === the sink ===

/// The call log's queue and writer. Cheap to clone; lives in `Deps`, so a
/// reload keeps it. The writer task starts with the first entry and ends
/// once the last clone is dropped.
#[derive(Clone)]
pub struct CallLog {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<(CallRecord, u64)>,
    /// Until the writer takes it.
    rx: Mutex<Option<mpsc::UnboundedReceiver<(CallRecord, u64)>>>,
    started: AtomicBool,
    store: AnyStore,
    clock: SharedClock,
    bounds: CallLogBounds,
    /// Bytes the queue may hold.
    capacity: u64,
    progress: Arc<Progress>,
    dropped: Counter,
}

/// What the writer has done, for the queue bound and [`CallLog::flush`].
#[derive(Default)]
struct Progress {
    queued_bytes: AtomicU64,
    /// Entries queued so far...
    submitted: AtomicU64,
    /// ...and of those, written or failed.
    settled: AtomicU64,
    settled_changed: Notify,
}

impl CallLog {
    /// The call log with `config`'s bounds, writing to `store` in the background; entries
    /// dropped past the queue bound are counted in `dropped`.
    pub fn new(
        config: &CallLogConfig,
        store: AnyStore,
        clock: SharedClock,
        dropped: Counter,
    ) -> CallLog {
        let (tx, rx) = mpsc::unbounded_channel();
        CallLog {
            inner: Arc::new(Inner {
                tx,
                rx: Mutex::new(Some(rx)),
                started: AtomicBool::new(false),
                store,
                clock,
                bounds: CallLogBounds {
                    max_entries: config.max_entries.max(1),
                    max_bytes: config.max_bytes.0.max(1),
                    ttl: u64::try_from(config.ttl.0.as_nanos())
                        .unwrap_or(u64::MAX)
                        .max(1),
                },
                capacity: config.queue.0,
                progress: Arc::default(),
                dropped,
            }),
        }
    }

    /// The store the log is kept in.
    pub fn store(&self) -> &AnyStore {
        &self.inner.store
    }

    fn now(&self) -> Nanos {
        self.inner.clock.now()
    }

    /// Queues an entry for the store, or drops and counts it when the
    /// queue is full (or there is no runtime to write from). Never waits.
    fn submit(&self, record: CallRecord) {
        let inner = &self.inner;
        let weight = record.summary.weight(&record.entry);
        let queued = inner
            .progress
            .queued_bytes
            .fetch_add(weight, Ordering::AcqRel);
        if queued + weight > inner.capacity || !self.ensure_writer() {
            inner
                .progress
                .queued_bytes
                .fetch_sub(weight, Ordering::AcqRel);
            inner.dropped.inc();
            return;
        }
        inner.progress.submitted.fetch_add(1, Ordering::AcqRel);
        if inner.tx.send((record, weight)).is_err() {
            inner.progress.settled.fetch_add(1, Ordering::AcqRel);
            inner.dropped.inc();
        }
    }

    /// Starts the writer on the current runtime the first time; false when
    /// there is none.
    fn ensure_writer(&self) -> bool {
        if self.inner.started.load(Ordering::Acquire) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let Some(rx) = self.inner.rx.lock().take() else {
            return true;
        };
        self.inner.started.store(true, Ordering::Release);
        runtime.spawn(write_forever(
            rx,
            self.inner.progress.clone(),
            self.inner.store.clone(),
            self.inner.clock.clone(),
            self.inner.bounds,
            self.inner.dropped.clone(),
        ));
        true
    }

    /// Waits until every entry queued before this call is written (or
    /// failed), for at most `within`; whether it was. An admin read calls
    /// it, so this instance's latest calls are in what it shows.
    pub async fn flush(&self, within: Duration) -> bool {
        let progress = &self.inner.progress;
        let target = progress.submitted.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = progress.settled_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if progress.settled.load(Ordering::Acquire) >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// The writer: appends what is queued, in batches, until the log goes.
async fn write_forever(
    mut rx: mpsc::UnboundedReceiver<(CallRecord, u64)>,
    progress: Arc<Progress>,
    store: AnyStore,
    clock: SharedClock,
    bounds: CallLogBounds,
    dropped: Counter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let weight: u64 = batch.iter().map(|(_, w)| w).sum();
        let records: Vec<CallRecord> = batch.drain(..).map(|(r, _)| r).collect();
        if let Err(error) = store.calls_push(&records, bounds, clock.now()).await {
            tracing::debug!(%error, entries = records.len(), "call-log entries not written");
            dropped.inc_by(records.len() as u64);
        }
        progress.queued_bytes.fetch_sub(weight, Ordering::AcqRel);
        progress
            .settled
            .fetch_add(records.len() as u64, Ordering::AcqRel);
        progress.settled_changed.notify_waiters();
    }
}

// === the rules ===

/// One operation's compiled `record:`.
#[derive(Debug)]
pub struct Rule {
    bodies: bool,
    max_body: usize,
    redaction: Redaction,
}

/// The `record:` rule of every operation (by its index in the gateway),
/// and the log they write to.
pub struct Recorder {
    rules: Vec<Option<Arc<Rule>>>,
    log: CallLog,
}

impl Recorder {
    /// Compiles every `record:` of the config (and checks `call_log:`);
    /// `operations` are the gateway's, as `(api, operation id)` in order.
    pub fn compile<'o>(
        loaded: &LoadedConfig,
        operations: impl Iterator<Item = (&'o str, &'o str)>,
        log: &CallLog,
    ) -> Result<Recorder, Vec<ConfigError>> {
        let config = &loaded.config;
        let mut errors = Vec::new();
        check_bounds(loaded, &mut errors);
        let (headers, query) = credential_slots(config);
        let mut compile = |record: &Option<RecordConfig>, at: Vec<String>| {
            let record = record.as_ref()?;
            let rule = Rule::compile(record, &headers, &query).map_err(|(field, message)| {
                let mut path = at.clone();
                path.extend(field);
                errors.push(loaded.error_at(&path, message));
            });
            Some(rule.ok().filter(|_| record.enabled).map(Arc::new))
        };
        let mut by_operation = std::collections::HashMap::new();
        for (a, api) in config.apis.iter().enumerate() {
            let api_at = vec!["apis".to_string(), a.to_string()];
            let mut record_at = api_at.clone();
            record_at.push("record".into());
            let api_rule = compile(&api.record, record_at).flatten();
            for (o, op) in api.operations.iter().enumerate() {
                let mut at = api_at.clone();
                at.extend(["operations".into(), o.to_string(), "record".into()]);
                let rule = match compile(&op.record, at) {
                    Some(own) => own,
                    None => api_rule.clone(),
                };
                by_operation.insert((api.name.as_str(), op.id.as_str()), rule);
            }
        }
        let rules = operations
            .map(|key| by_operation.get(&key).cloned().flatten())
            .collect();
        if errors.is_empty() {
            Ok(Recorder {
                rules,
                log: log.clone(),
            })
        } else {
            Err(errors)
        }
    }

    /// Step 4 of the entry, for a routed call: when its operation is
    /// recorded, the request head is copied (redacted) and, with `bodies`,
    /// its body teed. The request goes on unchanged.
    pub fn start(
        &self,
        index: usize,
        req: &mut Request<Body>,
        cx: &RequestContext,
    ) -> Option<Recording> {
        let rule = self.rules.get(index)?.as_ref()?;
        let redaction = &rule.redaction;
        let query = req.uri().query();
        let mut request = Map::new();
        request.insert("method".into(), req.method().as_str().into());
        request.insert("path".into(), req.uri().path().into());
        if let Some(q) = query {
            request.insert("query".into(), redaction.query(q).into());
        }
        request.insert("headers".into(), redaction.headers_json(req.headers()));
        let state = Arc::new(CallState {
            log: self.log.clone(),
            rule: rule.clone(),
            secrets: redaction.presented_secrets(req.headers(), query),
            request_id: cx.request_id.to_str().unwrap_or("").to_string(),
            client_ip: cx.client_ip.to_string(),
            started: self.log.now(),
            pending: Mutex::new(Pending {
                request: Value::Object(request),
                request_body: Captured::new(rule.max_body, req.headers()),
                ..Pending::default()
            }),
        });
        if rule.bodies {
            let body = std::mem::replace(req.body_mut(), crate::body::empty());
            let sink = Side {
                state: state.clone(),
                response: false,
            };
            *req.body_mut() = http_body_util::BodyExt::boxed_unsync(Tee::new(body, sink));
        }
        Some(Recording { state })
    }
}

impl Rule {
    fn compile(
        record: &RecordConfig,
        credential_headers: &[http::HeaderName],
        credential_query: &[String],
    ) -> Result<Rule, (Vec<String>, String)> {
        let at = |field: &str, i: Option<usize>| {
            let mut p = vec![field.to_string()];
            p.extend(i.map(|i| i.to_string()));
            p
        };
        if record.max_body_bytes.0 > MAX_BODY_BYTES {
            return Err((
                at("max_body_bytes", None),
                "at most 1MiB of a body is recorded".into(),
            ));
        }
        let mut headers = credential_headers.to_vec();
        for (i, name) in record.redact_headers.iter().enumerate() {
            match http::HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(name) => headers.push(name),
                Err(_) => {
                    return Err((
                        at("redact_headers", Some(i)),
                        format!("`{name}` is not a header name"),
                    ))
                }
            }
        }
        headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        let mut pointers = Vec::with_capacity(record.redact_json.len());
        for (i, pointer) in record.redact_json.iter().enumerate() {
            pointers
                .push(redact::parse_pointer(pointer).map_err(|m| (at("redact_json", Some(i)), m))?);
        }
        Ok(Rule {
            bodies: record.bodies,
            max_body: record.max_body_bytes.0 as usize,
            redaction: Redaction {
                headers,
                query: credential_query.to_vec(),
                pointers,
            },
        })
    }
}

/// `call_log:` within sense.
fn check_bounds(loaded: &LoadedConfig, errors: &mut Vec<ConfigError>) {
    let c = &loaded.config.call_log;
    if !(1..=MAX_ENTRIES).contains(&c.max_entries) {
        errors.push(loaded.error_at(&["call_log", "max_entries"], "1 to 100000"));
    }
    if c.max_bytes.0 < 1024 {
        errors.push(loaded.error_at(&["call_log", "max_bytes"], "at least 1KiB"));
    }
    if c.ttl.0 < Duration::from_secs(1) {
        errors.push(loaded.error_at(&["call_log", "ttl"], "at least 1s"));
    }
}

/// Every header and query parameter any `auth` policy reads a key from
/// (named, included or inline), beside the always-redacted headers.
fn credential_slots(
    config: &crate::config::schema::Config,
) -> (Vec<http::HeaderName>, Vec<String>) {
    let mut headers = redact::credential_headers();
    let mut query = Vec::new();
    let mut take = |def: &PolicyDef| {
        if let Some(auth) = def.config_of::<AuthConfig>() {
            if let Ok(name) = http::HeaderName::from_bytes(auth.api_key.header.trim().as_bytes()) {
                headers.push(name);
            }
            query.extend(auth.api_key.query.clone());
        }
    };
    for def in config.policies.values() {
        take(def);
    }
    let inline = config
        .apis
        .iter()
        .flat_map(|api| {
            api.apply
                .iter()
                .chain(api.operations.iter().flat_map(|op| op.apply.iter()))
        })
        .chain(config.apply.iter());
    for r in inline {
        if let PolicyRef::Inline(def) = r {
            take(def);
        }
    }
    (headers, query)
}

// === one call ===

/// A recorded call between its route step and its answer.
pub struct Recording {
    state: Arc<CallState>,
}

struct CallState {
    log: CallLog,
    rule: Arc<Rule>,
    /// Credential values the caller presented, scrubbed from the entry.
    secrets: Vec<String>,
    request_id: String,
    client_ip: String,
    started: Nanos,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// The request's head (JSON), then its body.
    request: Value,
    request_body: Captured,
    /// Known once the answer is: the summary and the rest of the entry.
    answered: Option<(CallSummary, Map<String, Value>)>,
    response_body: Captured,
    /// The entry went to the log.
    done: bool,
}

/// The first bytes of a body, and how much of it passed.
#[derive(Default)]
struct Captured {
    buf: Vec<u8>,
    max: usize,
    size: u64,
    ended: Option<TeeEnd>,
    json_type: bool,
}

impl Captured {
    fn new(max: usize, headers: &http::HeaderMap) -> Captured {
        let json_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let media = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                media == "application/json" || media.ends_with("+json")
            })
            .unwrap_or(false);
        Captured {
            max,
            json_type,
            ..Captured::default()
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        let room = self.max.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// One body's tee into the call's state.
struct Side {
    state: Arc<CallState>,
    response: bool,
}

impl TeeSink for Side {
    fn data(&mut self, data: &[u8]) {
        let mut pending = self.state.pending.lock();
        match self.response {
            true => pending.response_body.push(data),
            false => pending.request_body.push(data),
        }
    }

    fn end(self, how: TeeEnd) {
        let mut pending = self.state.pending.lock();
        match self.response {
            true => pending.response_body.ended = Some(how),
            false => pending.request_body.ended = Some(how),
        }
        if self.response {
            self.state.complete(&mut pending);
        }
    }
}

impl Recording {
    /// Step 6 of the entry: the answer's head is copied; the entry goes to
    /// the log now, or (with `bodies`) once the response body has passed.
    pub fn finish(self, response: Response<Body>, cx: &RequestContext) -> Response<Body> {
        let state = self.state;
        let now = state.log.now();
        let client = cx.client.as_ref();
        let operation = cx.operation.as_ref();
        let status = response.status().as_u16();
        let summary = CallSummary {
            id: state.request_id.clone(),
            time: now,
            expires: now.saturating_add(state.log.inner.bounds.ttl),
            client: client.map_or(String::new(), |c| c.id.to_string()),
            operation: operation.map_or(String::new(), |o| o.id.to_string()),
            status,
        };
        let mut entry = Map::new();
        entry.insert("request_id".into(), state.request_id.clone().into());
        entry.insert("time".into(), format_rfc3339(now).into());
        entry.insert("api".into(), operation.map(|o| &*o.api).into());
        entry.insert("operation".into(), summary.operation.clone().into());
        entry.insert("client".into(), client.map(|c| &*c.id).into());
        entry.insert(
            "key_id".into(),
            client.and_then(|c| c.key_id.as_deref()).into(),
        );
        entry.insert("client_ip".into(), state.client_ip.clone().into());
        entry.insert("status".into(), status.into());
        entry.insert(
            "code".into(),
            response
                .extensions()
                .get::<RejectedWith>()
                .map(|r| r.code.as_str())
                .into(),
        );
        let millis = now.saturating_sub(state.started) as f64 / 1e6;
        entry.insert(
            "duration_ms".into(),
            json!((millis * 1000.0).round() / 1000.0),
        );
        // Filled in when the entry is complete; here for the key order.
        entry.insert("request".into(), Value::Null);
        let mut head = Map::new();
        head.insert(
            "headers".into(),
            state.rule.redaction.headers_json(response.headers()),
        );
        entry.insert("response".into(), Value::Object(head));
        let bodies = state.rule.bodies;
        {
            let mut pending = state.pending.lock();
            pending.answered = Some((summary, entry));
            pending.response_body = Captured::new(state.rule.max_body, response.headers());
            if !bodies {
                state.complete(&mut pending);
                return response;
            }
        }
        let (head, body) = response.into_parts();
        let sink = Side {
            state,
            response: true,
        };
        let body = http_body_util::BodyExt::boxed_unsync(Tee::new(body, sink));
        Response::from_parts(head, body)
    }
}

/// The entry hook's step 6: finishes a recording, if the call has one.
pub fn finish(
    recording: Option<Recording>,
    response: Response<Body>,
    cx: &RequestContext,
) -> Response<Body> {
    match recording {
        Some(recording) => recording.finish(response, cx),
        None => response,
    }
}

impl CallState {
    /// Writes the entry out (once): the heads, the bodies as captured, the
    /// presented credentials scrubbed from all of it.
    fn complete(&self, pending: &mut Pending) {
        if pending.done {
            return;
        }
        let Some((summary, mut entry)) = pending.answered.take() else {
            return;
        };
        pending.done = true;
        let mut request = std::mem::take(&mut pending.request);
        if self.rule.bodies {
            if let Some(body) =
                body_json(&pending.request_body, &self.rule.redaction, &self.secrets)
            {
                request["body"] = body;
            }
            if let Some(body) =
                body_json(&pending.response_body, &self.rule.redaction, &self.secrets)
            {
                if let Some(response) = entry.get_mut("response") {
                    response["body"] = body;
                }
            }
        }
        entry.insert("request".into(), request);
        let text = Value::Object(entry).to_string();
        let text = redact::scrub_str(&text, &self.json_escaped_secrets());
        self.log.submit(CallRecord {
            summary,
            entry: text,
        });
    }

    /// The secrets as they appear inside a JSON string.
    fn json_escaped_secrets(&self) -> Vec<String> {
        self.secrets
            .iter()
            .map(|s| {
                let quoted = Value::from(s.as_str()).to_string();
                quoted[1..quoted.len() - 1].to_string()
            })
            .collect()
    }
}

/// A captured body as the entry shows it (`None`: no body).
fn body_json(captured: &Captured, redaction: &Redaction, secrets: &[String]) -> Option<Value> {
    let ended = captured.ended.unwrap_or(TeeEnd::Abandoned);
    // No bytes passed: no body (or one nobody read yet).
    if captured.size == 0 && ended != TeeEnd::Failed {
        return None;
    }
    let truncated = captured.size > captured.buf.len() as u64;
    let bytes = redact::scrub_bytes(&captured.buf, secrets);
    let mut out = Map::new();
    out.insert("size".into(), captured.size.into());
    out.insert("truncated".into(), truncated.into());
    match ended {
        TeeEnd::Complete => {}
        TeeEnd::Failed => {
            out.insert("ended".into(), "failed".into());
        }
        TeeEnd::Abandoned => {
            out.insert("ended".into(), "unread".into());
        }
    }
    let parsed = || {
        (!truncated && ended == TeeEnd::Complete)
            .then(|| serde_json::from_slice::<Value>(&bytes).ok())
            .flatten()
    };
    if !redaction.pointers.is_empty() {
        match parsed() {
            Some(mut value) => {
                redaction.json(&mut value);
                out.insert("json".into(), value);
            }
            None => {
                out.insert(
                    "omitted".into(),
                    "not complete JSON within max_body_bytes, and redact_json is set".into(),
                );
            }
        }
        return Some(Value::Object(out));
    }
    if let Some(value) = captured.json_type.then(parsed).flatten() {
        out.insert("json".into(), value);
        return Some(Value::Object(out));
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => {
            out.insert("text".into(), text.into());
        }
        // Cut inside a character at the bound: the whole ones are text.
        Err(e) if truncated && e.error_len().is_none() => {
            let text = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
            out.insert("text".into(), text.into_owned().into());
        }
        Err(_) => {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            out.insert("base64".into(), encoded.into());
        }
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(max: usize, chunks: &[&[u8]], json: bool) -> Captured {
        let mut c = Captured {
            max,
            json_type: json,
            ..Captured::default()
        };
        for chunk in chunks {
            c.push(chunk);
        }
        c.ended = Some(TeeEnd::Complete);
        c
    }

    #[test]
    fn a_capture_never_holds_more_than_its_bound() {
        let big = vec![b'a'; 10_000];
        let c = captured(16, &[&big, &big, b"tail"], false);
        assert_eq!((c.buf.len(), c.size), (16, 20_004));
        assert!(c.buf.capacity() < 10_000, "{}", c.buf.capacity());
    }

    #[test]
    fn bodies_are_shown_as_json_text_or_base64_and_cut_at_a_character() {
        let plain = Redaction::default();
        let json = body_json(&captured(64, &[br#"{"a":1}"#], true), &plain, &[]);
        assert_eq!(
            json,
            Some(json!({"size": 7, "truncated": false, "json": {"a": 1}}))
        );
        // "é" is two bytes: a bound of 3 keeps "aé"'s whole characters.
        let cut = body_json(&captured(4, &["aéé".as_bytes()], false), &plain, &[]);
        assert_eq!(
            cut,
            Some(json!({"size": 5, "truncated": true, "text": "aé"}))
        );
        let binary = body_json(&captured(8, &[&[0xff, 0x00, 0x01]], false), &plain, &[]);
        assert_eq!(
            binary,
            Some(json!({"size": 3, "truncated": false, "base64": "/wAB"}))
        );
        assert_eq!(body_json(&captured(8, &[], false), &plain, &[]), None);
    }

    #[test]
    fn with_pointers_only_complete_json_is_shown() {
        let pointers = Redaction {
            pointers: vec![redact::parse_pointer("/pw").expect("pointer")],
            ..Redaction::default()
        };
        let whole = body_json(
            &captured(64, &[br#"{"pw":"x","u":1}"#], false),
            &pointers,
            &[],
        );
        assert_eq!(
            whole.map(|v| v["json"].clone()),
            Some(json!({"pw": "[redacted]", "u": 1}))
        );
        let truncated = body_json(&captured(4, &[br#"{"pw":"x"}"#], true), &pointers, &[]);
        let truncated = truncated.expect("a body");
        assert_eq!(truncated["json"], Value::Null);
        assert_eq!(truncated["text"], Value::Null);
        assert!(truncated["omitted"].is_string(), "{truncated}");
    }

    #[test]
    fn presented_secrets_are_scrubbed_from_bodies_before_they_are_read() {
        let secrets = vec!["k-123456".to_string()];
        let body = body_json(
            &captured(64, &[br#"{"echo":"k-123456"}"#], true),
            &Redaction::default(),
            &secrets,
        );
        assert_eq!(
            body.map(|v| v["json"].clone()),
            Some(json!({"echo": "[redacted]"}))
        );
    }
}
