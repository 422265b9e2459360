//! Logging: a `RUST_LOG` filter and two formats. `text` for people; `json`
//! writes one object per event. The access log (target `tollgate::access`)
//! is not a tracing event: `crate::access_log` writes it off the request's
//! thread, in the `--log-format` given here unless the config says
//! otherwise; `RUST_LOG` still decides whether it is written.

use std::fmt;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How the gateway's own log lines (and the access log) look: `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The `--log-format` of the command line, once `init` has run.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The `--log-format` given to [`init`] (`text` if it never ran): the
/// access log's format when the config does not choose one.
pub fn log_format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Installs the global subscriber. Logs go to stderr; stdout is for the
/// commands' own output.
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
    };
    // Already installed (tests, or a second call): keep the first.
    let _ = result;
}

/// One JSON object per event: `time`, `level`, `target`, then the event's
/// fields at the top level (`message` included).
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _cx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = serde_json::Map::new();
        fields.insert("time".into(), time.into());
        fields.insert("level".into(), event.metadata().level().as_str().into());
        fields.insert("target".into(), event.metadata().target().into());
        event.record(&mut JsonFields(&mut fields));
        let line = serde_json::Value::Object(fields).to_string();
        writeln!(writer, "{line}")
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}
