//! The access log: one line per answered request (DESIGN §2), written off
//! the request's thread.
//!
//! ```yaml
//! access_log: { path: /var/log/tollgate/access.log, format: json, buffer: 1MiB }
//! ```
//!
//! The request path builds an [`AccessRecord`] of borrowed, typed fields and
//! calls [`AccessLog::record`], which formats the line (JSON or text, no
//! intermediate map, no `Debug`, no ANSI) into a reusable per-thread buffer
//! and appends the bytes to a bounded queue. One background thread owns the
//! destination (stderr or a file) and writes what accumulated as one batch.
//! A full queue drops the line and counts it in
//! `tollgate_access_log_dropped_total`: a request never waits for the log.
//! [`AccessLog::flush`] waits until every line recorded before it is written
//! (shutdown, tests); [`AccessLog::reopen`] reopens the file (SIGUSR1, after
//! a log rotation moved it).

use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime};

use crate::config::schema::AccessLogFormat;
use crate::config::{ConfigError, LoadedConfig};
use crate::telemetry::{self, LogFormat};

/// How long the writer lets a batch grow before writing it (unless the
/// queue is half full, or a flush, reopen or shutdown is asked for): under
/// load, many lines per write and no wake-up per request.
const LINGER: Duration = Duration::from_millis(10);

/// How long `tollgate serve` waits at exit for the access log to be
/// written out.
pub const EXIT_FLUSH: Duration = Duration::from_secs(5);

/// One answered request, as the access log writes it. Fields without a
/// value (`None`) are left out of the line.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    /// When the answer was ready.
    pub time: SystemTime,
    /// The request id the caller saw in `X-Request-Id`.
    pub request_id: &'a str,
    /// The client address the gateway judged (after trusted proxies).
    pub client_ip: IpAddr,
    /// The authenticated client's id; empty when anonymous.
    pub client: &'a str,
    /// The configured id of the key used (never the key).
    pub key_id: Option<&'a str>,
    /// Empty when no route matched.
    pub api: &'a str,
    /// The operation id; empty when no route matched.
    pub operation: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The path as received (no query).
    pub path: &'a str,
    /// The status the caller got.
    pub status: u16,
    /// Request to response head (`duration_ms`).
    pub duration: Duration,
    /// The upstream's share of it (`upstream_ms`), when it was called.
    pub upstream: Option<Duration>,
    /// Request body bytes read, when known.
    pub bytes_in: Option<u64>,
    /// Response body bytes sent, when known.
    pub bytes_out: Option<u64>,
    /// The problem `code` of a refusal.
    pub code: Option<&'a str>,
    /// What report-only policies would have refused (codes, comma-separated).
    pub would_reject: Option<&'a str>,
    /// Which report-only policies (names, comma-separated).
    pub would_reject_policy: Option<&'a str>,
    /// The W3C trace id, once tracing propagates one.
    pub trace_id: Option<&'a str>,
}

/// How a line looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, with `time`, `level` and `target` first.
    Json,
    /// `TIME  INFO tollgate::access: key=value ...` for people.
    Text,
}

/// Where lines go.
pub enum Destination {
    /// The process's standard error (the default).
    Stderr,
    /// Appended to; reopened by [`AccessLog::reopen`].
    File {
        /// Where the file is (reopened by this name after a rotation).
        path: PathBuf,
        /// The file open now.
        file: File,
    },
    /// Any writer (tests, benches).
    Writer(Box<dyn Write + Send>),
}

impl Destination {
    /// Opens (or creates) `path` for appending.
    pub fn file(path: &Path) -> std::io::Result<Destination> {
        Ok(Destination::File {
            path: path.to_path_buf(),
            file: open_append(path)?,
        })
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The access-log sink. Cheap to clone (all clones share one queue and one
/// writer thread); the writer ends once the last clone is dropped, after
/// writing what was queued.
#[derive(Clone)]
pub struct AccessLog {
    handle: Arc<Handle>,
}

/// Closes the queue when the last `AccessLog` clone goes.
struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    /// `false`: every call is a no-op (`access_log.enabled: false`).
    on: bool,
    format: Format,
    /// Bytes that may wait in the queue (one line always fits an empty one).
    capacity: usize,
    dropped: Counter,
    queue: Mutex<Queue>,
    /// The writer waits on it.
    wake: Condvar,
    /// Flushers wait on it.
    written: Condvar,
    start: Once,
    /// Until the writer thread takes it.
    destination: Mutex<Option<Destination>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<u8>,
    lines: u64,
    /// Flush tickets asked for and done (the writer has written everything
    /// queued before ticket `n` once `flushed >= n`).
    flush_asked: u64,
    flushed: u64,
    reopen_asked: bool,
    closed: bool,
    /// The writer waits with nothing queued: the next line wakes it.
    writer_idle: bool,
    /// The writer thread could not start: flushes return at once.
    no_writer: bool,
}

impl Queue {
    fn urgent(&self, capacity: usize) -> bool {
        self.closed
            || self.reopen_asked
            || self.flush_asked > self.flushed
            || self.pending.len() >= capacity / 2
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// A sink writing `format` lines to `destination`, holding at most
    /// `capacity` bytes of lines for the writer; `dropped` counts the lines
    /// it could not keep. The writer thread starts with the first line.
    pub fn new(
        destination: Destination,
        format: Format,
        capacity: usize,
        dropped: Counter,
    ) -> AccessLog {
        AccessLog::build(true, destination, format, capacity, dropped)
    }

    /// A sink that writes nothing.
    pub fn disabled() -> AccessLog {
        AccessLog::build(
            false,
            Destination::Stderr,
            Format::Text,
            0,
            Counter::default(),
        )
    }

    fn build(
        on: bool,
        destination: Destination,
        format: Format,
        capacity: usize,
        dropped: Counter,
    ) -> AccessLog {
        let shared = Arc::new(Shared {
            on,
            format,
            capacity,
            dropped,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            start: Once::new(),
            destination: Mutex::new(Some(destination)),
        });
        AccessLog {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// The sink the config's `access_log` describes: stderr unless `path`
    /// is set (relative to the config file), in its `format` or else the
    /// `--log-format` of the command line. A file that cannot be opened is
    /// an error at `access_log.path`.
    pub fn for_config(
        loaded: &LoadedConfig,
        dropped: Counter,
    ) -> Result<AccessLog, Vec<ConfigError>> {
        let config = &loaded.config.access_log;
        if !config.enabled {
            return Ok(AccessLog::disabled());
        }
        let format = match config.format {
            Some(AccessLogFormat::Json) => Format::Json,
            Some(AccessLogFormat::Text) => Format::Text,
            None => match telemetry::log_format() {
                LogFormat::Json => Format::Json,
                LogFormat::Text => Format::Text,
            },
        };
        let destination = match &config.path {
            None => Destination::Stderr,
            Some(path) => {
                let path = loaded.base_dir.join(path);
                Destination::file(&path).map_err(|e| {
                    vec![loaded.error_at(
                        &["access_log", "path"],
                        format!("cannot open the access log {}: {e}", path.display()),
                    )]
                })?
            }
        };
        let capacity = usize::try_from(config.buffer.0).unwrap_or(usize::MAX);
        // `RUST_LOG` is read once, here (after the destination, so a bad
        // path is reported whatever the filter): the process's subscriber
        // is set before any config is loaded and does not change. Asked
        // per request, tracing's per-callsite cache could answer for
        // another thread's scoped subscriber.
        if !tracing::enabled!(target: "tollgate::access", tracing::Level::INFO) {
            return Ok(AccessLog::disabled());
        }
        Ok(AccessLog::new(destination, format, capacity, dropped))
    }

    /// Whether a line would be written: the sink is on (`access_log.enabled`
    /// and `RUST_LOG` enabling `tollgate::access` at `info`, when it was
    /// built).
    pub fn enabled(&self) -> bool {
        self.handle.shared.on
    }

    /// Formats `record` and queues the line; drops (and counts) it if the
    /// queue is full. Never waits for the writer.
    pub fn record(&self, record: &AccessRecord<'_>) {
        let shared = &self.handle.shared;
        if !shared.on {
            return;
        }
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                write_line(shared.format, record, &mut line);
                self.push(&line);
            }
            // Only re-entrance (a record from inside a record) gets here.
            Err(_) => {
                let mut line = Vec::with_capacity(512);
                write_line(shared.format, record, &mut line);
                self.push(&line);
            }
        });
    }

    fn push(&self, line: &[u8]) {
        let shared = &self.handle.shared;
        shared.start.call_once(|| shared.spawn_writer());
        let mut queue = shared.queue.lock();
        if !queue.pending.is_empty() && queue.pending.len() + line.len() > shared.capacity {
            drop(queue);
            shared.dropped.inc();
            return;
        }
        queue.pending.extend_from_slice(line);
        queue.lines += 1;
        let wake = queue.writer_idle || queue.pending.len() >= shared.capacity / 2;
        drop(queue);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Waits until every line recorded before this call is written (and the
    /// destination flushed), for at most `within`; `false` if that time ran
    /// out first (a writer stuck on a full pipe or a hung disk).
    pub fn flush(&self, within: Duration) -> bool {
        let shared = &self.handle.shared;
        if !shared.on {
            return true;
        }
        shared.start.call_once(|| shared.spawn_writer());
        let deadline = crate::clock::monotonic() + within;
        let mut queue = shared.queue.lock();
        if queue.no_writer {
            return queue.pending.is_empty();
        }
        queue.flush_asked += 1;
        let ticket = queue.flush_asked;
        shared.wake.notify_one();
        while queue.flushed < ticket {
            if shared.written.wait_until(&mut queue, deadline).timed_out() {
                return queue.flushed >= ticket;
            }
        }
        true
    }

    /// Asks the writer to reopen its file (after the lines already queued
    /// are written to the old one); a no-op for stderr. Follow with
    /// [`flush`](Self::flush) to wait until it is done.
    pub fn reopen(&self) {
        let shared = &self.handle.shared;
        if !shared.on {
            return;
        }
        shared.queue.lock().reopen_asked = true;
        shared.wake.notify_one();
    }

    /// Lines dropped so far (full queue or failed writes).
    pub fn dropped(&self) -> u64 {
        self.handle.shared.dropped.get()
    }
}

/// Reopens `log`'s file on every SIGUSR1 (what `logrotate` sends after
/// moving the file), on a task of the current runtime.
#[cfg(unix)]
pub fn reopen_on_sigusr1(log: AccessLog) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            tracing::warn!("cannot listen for SIGUSR1; the access log is not reopened by signal");
            return;
        };
        while usr1.recv().await.is_some() {
            log.reopen();
        }
    });
}

#[cfg(not(unix))]
pub fn reopen_on_sigusr1(_: AccessLog) {}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

// === impl Shared (the writer) ===

impl Shared {
    fn spawn_writer(self: &Arc<Self>) {
        let Some(destination) = self.destination.lock().take() else {
            return;
        };
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("tollgate-access-log".into())
            .spawn(move || shared.write_until_closed(destination));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access-log writer; access-log lines are dropped");
            let mut queue = self.queue.lock();
            queue.no_writer = true;
            // Nothing will ever drain the queue: refuse every line.
            queue.pending.clear();
        }
    }

    fn write_until_closed(&self, mut destination: Destination) {
        let mut batch = Vec::new();
        let mut failing = false;
        loop {
            let (lines, ticket, reopen, closed) = {
                let mut queue = self.queue.lock();
                while queue.pending.is_empty() && !queue.urgent(self.capacity) {
                    queue.writer_idle = true;
                    self.wake.wait(&mut queue);
                    queue.writer_idle = false;
                }
                if !queue.urgent(self.capacity) {
                    // Let the batch grow a little; a flush, a reopen or a
                    // half-full queue cuts the wait short.
                    let until = crate::clock::monotonic() + LINGER;
                    while !queue.urgent(self.capacity) {
                        if self.wake.wait_until(&mut queue, until).timed_out() {
                            break;
                        }
                    }
                }
                std::mem::swap(&mut queue.pending, &mut batch);
                let lines = std::mem::take(&mut queue.lines);
                (
                    lines,
                    queue.flush_asked,
                    std::mem::take(&mut queue.reopen_asked),
                    queue.closed,
                )
            };
            if !batch.is_empty() {
                match destination.write_batch(&batch) {
                    Ok(()) => failing = false,
                    Err(e) => {
                        self.dropped.inc_by(lines);
                        if !failing {
                            tracing::warn!(error = %e, "cannot write the access log; lines are dropped");
                        }
                        failing = true;
                    }
                }
                batch.clear();
                // A burst's buffer is not kept forever.
                if batch.capacity() > self.capacity.max(1 << 16) {
                    batch = Vec::new();
                }
            }
            if reopen {
                destination.reopen();
            }
            let mut queue = self.queue.lock();
            queue.flushed = queue.flushed.max(ticket);
            let done = closed && queue.pending.is_empty();
            drop(queue);
            self.written.notify_all();
            if done {
                return;
            }
        }
    }
}

impl Destination {
    fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match self {
            Destination::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(batch)?;
                err.flush()
            }
            Destination::File { file, .. } => file.write_all(batch),
            Destination::Writer(w) => {
                w.write_all(batch)?;
                w.flush()
            }
        }
    }

    fn reopen(&mut self) {
        if let Destination::File { path, file } = self {
            match open_append(path) {
                Ok(new) => *file = new,
                Err(e) => tracing::warn!(
                    error = %e,
                    path = %path.display(),
                    "cannot reopen the access log; still writing to the old file"
                ),
            }
        }
    }
}

// === formatting ===

/// Appends one line (with its newline) for `record` in `format`.
pub fn write_line(format: Format, record: &AccessRecord<'_>, out: &mut Vec<u8>) {
    match format {
        Format::Json => write_json(record, out),
        Format::Text => write_text(record, out),
    }
}

/// The JSON line: `time`, `level`, `target`, then the record's fields.
pub fn write_json(r: &AccessRecord<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_time(r.time, out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"tollgate::access\"");
    write_fields(r, &mut JsonFields(out));
    out.extend_from_slice(b"}\n");
}

/// `value` as a JSON string: quotes, backslashes and control characters
/// escaped (RFC 8259 §7), everything else as it is (a `&str` is UTF-8).
fn json_string(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The text line: `TIME  INFO tollgate::access: key=value ...`, values
/// quoted (and escaped) only when they need it.
pub fn write_text(r: &AccessRecord<'_>, out: &mut Vec<u8>) {
    write_time(r.time, out);
    out.extend_from_slice(b"  INFO tollgate::access:");
    write_fields(r, &mut TextFields(out));
    out.push(b'\n');
}

/// How a format writes one field. The record's fields are listed once, in
/// [`write_fields`], for every format.
trait Fields {
    fn out(&mut self) -> &mut Vec<u8>;
    /// What comes before a value: the separator and the name.
    fn key(&mut self, name: &str);
    /// A string value, quoted and escaped as the format needs.
    fn string(&mut self, value: &str);
    /// An address value.
    fn ip(&mut self, ip: IpAddr);

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        self.string(value);
    }
    fn opt_str(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(name, value);
        }
    }
    fn u64(&mut self, name: &str, value: u64) {
        self.key(name);
        write_u64(value, self.out());
    }
    fn opt_u64(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.u64(name, value);
        }
    }
    fn ms(&mut self, name: &str, value: Duration) {
        self.key(name);
        write_ms(value, self.out());
    }
}

/// The record's fields after the line's head, in DESIGN §2's order;
/// fields with no value are left out.
fn write_fields(r: &AccessRecord<'_>, f: &mut impl Fields) {
    f.str("request_id", r.request_id);
    f.key("client_ip");
    f.ip(r.client_ip);
    f.str("client", r.client);
    f.opt_str("key_id", r.key_id);
    f.str("api", r.api);
    f.str("operation", r.operation);
    f.str("method", r.method);
    f.str("path", r.path);
    f.u64("status", u64::from(r.status));
    f.ms("duration_ms", r.duration);
    if let Some(upstream) = r.upstream {
        f.ms("upstream_ms", upstream);
    }
    f.opt_u64("bytes_in", r.bytes_in);
    f.opt_u64("bytes_out", r.bytes_out);
    f.opt_str("code", r.code);
    f.opt_str("would_reject", r.would_reject);
    f.opt_str("would_reject_policy", r.would_reject_policy);
    f.opt_str("trace_id", r.trace_id);
}

struct JsonFields<'o>(&'o mut Vec<u8>);

impl Fields for JsonFields<'_> {
    fn out(&mut self) -> &mut Vec<u8> {
        self.0
    }
    /// `,"name":` (names are plain ASCII, written as they are).
    fn key(&mut self, name: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }
    fn string(&mut self, value: &str) {
        json_string(value, self.0);
    }
    fn ip(&mut self, ip: IpAddr) {
        self.0.push(b'"');
        write_ip(ip, self.0);
        self.0.push(b'"');
    }
}

struct TextFields<'o>(&'o mut Vec<u8>);

impl Fields for TextFields<'_> {
    fn out(&mut self) -> &mut Vec<u8> {
        self.0
    }
    /// ` name=`.
    fn key(&mut self, name: &str) {
        self.0.push(b' ');
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'=');
    }
    fn string(&mut self, value: &str) {
        text_value(value, self.0);
    }
    fn ip(&mut self, ip: IpAddr) {
        write_ip(ip, self.0);
    }
}

/// A text value: bare when it is non-empty and has no space, quote,
/// backslash, `=` or control character; else quoted, with `\"`, `\\`,
/// `\n`, `\r`, `\t` and `\xNN` escapes, so one line stays one line.
fn text_value(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b > b' ' && b != 0x7f && !matches!(b, b'"' | b'\\' | b'='));
    if plain {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for &b in value.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\x");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn write_u64(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (microsecond resolution): `12.345`.
fn write_ms(d: Duration, out: &mut Vec<u8>) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    write_u64(micros / 1000, out);
    out.push(b'.');
    write_digits(micros % 1000, 3, out);
}

/// `n` in exactly `width` digits, zero-padded (`n` must fit).
fn write_digits(mut n: u64, width: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// RFC 3339 in UTC with microseconds: `2026-12-01T13:47:23.123456Z`.
fn write_time(time: SystemTime, out: &mut Vec<u8>) {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = crate::calendar::civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    write_digits(year.clamp(0, 9999) as u64, 4, out);
    out.push(b'-');
    write_digits(month as u64, 2, out);
    out.push(b'-');
    write_digits(day as u64, 2, out);
    out.push(b'T');
    write_digits(of_day / 3600, 2, out);
    out.push(b':');
    write_digits(of_day / 60 % 60, 2, out);
    out.push(b':');
    write_digits(of_day % 60, 2, out);
    out.push(b'.');
    write_digits(u64::from(since.subsec_micros()), 6, out);
    out.push(b'Z');
}

fn write_ip(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u64(u64::from(octet), out);
            }
        }
        // Rarer, and its shortest form takes the standard formatter.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> AccessRecord<'_> {
        AccessRecord {
            // 2026-12-01T13:47:23.000042Z
            time: SystemTime::UNIX_EPOCH + Duration::new(1_796_132_843, 42_000),
            request_id: "0123abcd",
            client_ip: IpAddr::from([203, 0, 113, 9]),
            client: "hr-portal",
            key_id: Some("hr-2027"),
            api: "directory",
            operation: "getEmployee",
            method: "GET",
            path,
            status: 200,
            duration: Duration::from_micros(12_345),
            upstream: Some(Duration::from_micros(7)),
            bytes_in: Some(0),
            bytes_out: Some(42),
            code: None,
            would_reject: Some("rate_limited"),
            would_reject_policy: Some("trial"),
            trace_id: None,
        }
    }

    fn json(r: &AccessRecord<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        write_json(r, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).expect("one JSON object")
    }

    #[test]
    fn a_json_line_has_typed_fields_and_leaves_out_absent_ones() {
        let line = json(&record("/employees/7"));
        assert_eq!(line["time"], "2026-12-01T13:47:23.000042Z");
        assert_eq!(line["target"], "tollgate::access");
        assert_eq!(line["client_ip"], "203.0.113.9");
        assert_eq!(line["status"], 200);
        assert_eq!(line["duration_ms"], 12.345);
        assert_eq!(line["upstream_ms"], 0.007);
        assert_eq!(line["bytes_out"], 42);
        assert_eq!(line["key_id"], "hr-2027");
        assert!(line.get("code").is_none() && line.get("trace_id").is_none());
    }

    #[test]
    fn quotes_backslashes_and_control_characters_are_escaped_in_json() {
        let path = "/a\"b\\c\nd\re\tf\u{1}g\u{7f}h/é";
        let line = json(&record(path));
        assert_eq!(line["path"], path);
        let mut out = Vec::new();
        write_json(&record(path), &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains(r#""/a\"b\\c\nd\re\tf\u0001g\u007fh/é""#),
            "{text}"
        );
    }

    #[test]
    fn a_text_line_quotes_only_values_that_need_it_and_stays_one_line() {
        let mut out = Vec::new();
        write_text(&record("/a b\"c\nd"), &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "2026-12-01T13:47:23.000042Z  INFO tollgate::access: request_id=0123abcd \
             client_ip=203.0.113.9 client=hr-portal key_id=hr-2027 api=directory \
             operation=getEmployee method=GET path=\"/a b\\\"c\\nd\" status=200 \
             duration_ms=12.345 upstream_ms=0.007 bytes_in=0 bytes_out=42 \
             would_reject=rate_limited would_reject_policy=trial\n"
        );
        let mut anonymous = Vec::new();
        let mut r = record("/x");
        r.client = "";
        r.client_ip = "2001:db8::1".parse().expect("ip");
        write_text(&r, &mut anonymous);
        let text = String::from_utf8(anonymous).expect("utf-8");
        assert!(
            text.contains(" client_ip=2001:db8::1 client=\"\" "),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no ANSI");
    }

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        let mut out = Vec::new();
        write_time(SystemTime::UNIX_EPOCH, &mut out);
        write_time(
            SystemTime::UNIX_EPOCH + Duration::new(951_782_400 + 86_399, 999_999_000),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "1970-01-01T00:00:00.000000Z2000-02-29T23:59:59.999999Z"
        );
    }

    /// A writer that appends to a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flush_waits_until_every_recorded_line_is_written() {
        let out = Captured::default();
        let log = AccessLog::new(
            Destination::Writer(Box::new(out.clone())),
            Format::Json,
            1 << 20,
            Counter::default(),
        );
        for _ in 0..100 {
            log.record(&record("/employees/7"));
        }
        assert!(log.flush(Duration::from_secs(10)));
        let text = String::from_utf8(out.0.lock().clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 100);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_disabled_sink_writes_nothing_and_flushes_at_once() {
        let log = AccessLog::disabled();
        log.record(&record("/"));
        assert!(log.flush(Duration::ZERO));
        assert_eq!(log.dropped(), 0);
    }
}
