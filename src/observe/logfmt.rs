//! Log line formats and logging set-up.
//!
//! Text lines imitate stone (`Nov 29 12:40:51.286076 2276 stone 3: accepted
//! TCP 5 from 127.0.0.1:56866 mode=0`) followed by `key=value` fields, so
//! existing grep patterns keep working. JSON gives one object per line with
//! every field at the top level.

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use super::batch::{Batched, Sink};
use super::time::Civil;
use crate::config::{LogFormat, WhenFull};

/// This process's ID, for the log lines; 0 until first read.
static PID: AtomicU32 = AtomicU32::new(0);

/// The process ID, read once: `getpid(2)` is a system call, and this would
/// otherwise be one per access record.
fn pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let id = std::process::id();
            PID.store(id, Ordering::Relaxed);
            id
        }
        id => id,
    }
}

/// Forgets the process ID read so far: stone's `-D` forks (daemon(3))
/// after logging is set up, and the child's lines carry its own ID.
pub fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

/// A `FormatEvent` for both formats.
pub struct LineFormat {
    format: LogFormat,
}

impl LineFormat {
    /// A formatter for `format`.
    pub fn new(format: LogFormat) -> LineFormat {
        LineFormat { format }
    }
}

enum Value {
    Str(String),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Str(s) if s.is_empty() || s.contains(' ') => format!("{s:?}"),
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Uint(u) => u.to_string(),
            Value::Float(f) => format!("{f:.3}"),
            Value::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.rest
                .push((field.name(), Value::Str(format!("{value:?}"))));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest
                .push((field.name(), Value::Str(value.to_string())));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.push((field.name(), Value::Int(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.push((field.name(), Value::Uint(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.rest.push((field.name(), Value::Float(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.push((field.name(), Value::Bool(value)));
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = Civil::now();
        let meta = event.metadata();
        match self.format {
            LogFormat::Syslog => {
                // Facility daemon; the syslog daemon adds the time and host.
                let severity = match *meta.level() {
                    tracing::Level::ERROR => 3,
                    tracing::Level::WARN => 4,
                    tracing::Level::INFO => 6,
                    _ => 7,
                };
                write!(
                    writer,
                    "<{}>ossrelay[{}]: {}",
                    3 * 8 + severity,
                    pid(),
                    fields.message
                )?;
                for (name, value) in &fields.rest {
                    if *name != "event" {
                        write!(writer, " {name}={}", value.text())?;
                    }
                }
                writeln!(writer)
            }
            LogFormat::Text => {
                write!(writer, "{} {} ", now.stone(), pid())?;
                if *meta.level() < tracing::Level::INFO || *meta.level() > tracing::Level::DEBUG {
                    // stone has no levels; only mark the unusual ones.
                    write!(writer, "{} ", meta.level())?;
                }
                writer.write_str(&fields.message)?;
                for (name, value) in &fields.rest {
                    if *name == "event" {
                        continue;
                    }
                    write!(writer, " {name}={}", value.text())?;
                }
                writeln!(writer)
            }
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("time".into(), now.rfc3339().into());
                obj.insert(
                    "level".into(),
                    meta.level().as_str().to_ascii_lowercase().into(),
                );
                obj.insert("target".into(), meta.target().into());
                obj.insert("message".into(), fields.message.into());
                for (name, value) in fields.rest {
                    let v = match value {
                        Value::Str(s) => serde_json::Value::from(s),
                        Value::Int(i) => i.into(),
                        Value::Uint(u) => u.into(),
                        Value::Float(f) => {
                            serde_json::Number::from_f64((f * 1000.0).round() / 1000.0)
                                .map(serde_json::Value::Number)
                                .unwrap_or(serde_json::Value::Null)
                        }
                        Value::Bool(b) => b.into(),
                    };
                    obj.insert(name.into(), v);
                }
                let line = serde_json::Value::Object(obj).to_string();
                writeln!(writer, "{line}")
            }
        }
    }
}

/// Installs a global subscriber that writes to `writer` (tests capture logs
/// this way). Returns false if a subscriber was already installed.
pub fn init_with_writer<W>(format: LogFormat, filter: &str, writer: W) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .event_format(LineFormat::new(format))
        .with_writer(writer)
        .try_init()
        .is_ok()
}

/// Installs the global subscriber with an explicit filter (stone's `-d`
/// levels), writing to `file` or stderr. `RUST_LOG` overrides the filter.
pub fn init_filter(format: LogFormat, filter: &str, file: Option<&Path>) -> io::Result<()> {
    let filter_text = filter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(LineFormat::new(format));
    let _ = match (format, file) {
        (LogFormat::Syslog, _) => match Syslog::connect(Path::new(SYSLOG_SOCKET)) {
            Ok(sys) => builder.with_writer(Arc::new(sys)).try_init(),
            Err(e) => {
                // stone loses its log silently here; say so and keep it.
                eprintln!("ossrelay: {e}; logging to stderr instead");
                tracing_subscriber::fmt()
                    .with_env_filter(
                        EnvFilter::try_from_default_env()
                            .unwrap_or_else(|_| EnvFilter::new(filter_text)),
                    )
                    .event_format(LineFormat::new(LogFormat::Text))
                    .with_writer(io::stderr)
                    .try_init()
            }
        },
        (_, Some(path)) => builder.with_writer(Arc::new(open_log(path)?)).try_init(),
        (_, None) => builder.with_writer(io::stderr).try_init(),
    };
    Ok(())
}

/// The local syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// One datagram per log line to a syslog socket.
#[derive(Debug)]
pub struct Syslog(std::os::unix::net::UnixDatagram);

impl Syslog {
    /// Connects to the syslog socket at `path`; errors name it.
    pub fn connect(path: &Path) -> io::Result<Syslog> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        sock.connect(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot log to syslog at {}: {e}", path.display()),
            )
        })?;
        Ok(Syslog(sock))
    }
}

impl io::Write for &Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = buf.strip_suffix(b"\n").unwrap_or(buf);
        // A full or missing syslog daemon must not stop the relay.
        let _ = self.0.send(line);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open_log(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open log file {}: {e}", path.display()),
            )
        })
}

/// Installs the global subscriber for `run` and `store`. `level` is a
/// default that `RUST_LOG` overrides. Lines are written by a writer thread
/// ([`super::batch`]), not by the threads that relay; [`super::batch::finish`]
/// writes out what is left. Errors name the log file that could not be
/// opened.
pub fn init(
    format: LogFormat,
    level: &str,
    file: Option<&Path>,
    when_full: WhenFull,
) -> io::Result<()> {
    let filter_text = format!("warn,ossrelay={level}");
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&filter_text));
    let (format, sink) = match (format, file) {
        (LogFormat::Syslog, _) => match Syslog::connect(Path::new(SYSLOG_SOCKET)) {
            Ok(sys) => (format, Sink::Syslog(sys.0)),
            Err(e) => {
                // stone loses its log silently here; say so and keep it.
                eprintln!("ossrelay: {e}; logging to stderr instead");
                (LogFormat::Text, Sink::Stderr)
            }
        },
        (_, Some(path)) => (format, Sink::File(open_log(path)?)),
        (_, None) => (format, Sink::Stderr),
    };
    // A second init (tests, the demo) keeps the first subscriber; that is
    // fine, and then no writer thread is started.
    if tracing::dispatcher::has_been_set() {
        return Ok(());
    }
    let log = Batched::start(sink, when_full)?;
    log.install();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .event_format(LineFormat::new(format))
        .with_writer(log)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_carry_priority_and_tag() {
        let dir = std::env::temp_dir().join(format!("ossrelay-syslog-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let server = std::os::unix::net::UnixDatagram::bind(&dir).unwrap();
        let sys = Arc::new(Syslog::connect(&dir).unwrap());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .event_format(LineFormat::new(LogFormat::Syslog))
            .with_writer(sys)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(relay = "r1", "stone 3: access denied: from 10.0.0.9:1234");
        });
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(
            line,
            format!(
                "<28>ossrelay[{}]: stone 3: access denied: from 10.0.0.9:1234 relay=r1",
                std::process::id()
            )
        );
        assert!(Syslog::connect(Path::new("/nonexistent/log"))
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/log"));
    }
}
