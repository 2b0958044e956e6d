//! Logging set-up: a `tracing` subscriber with an env filter, plain or JSON, and the log hygiene
//! rules that go with it:
//! - Peer-driven lines of the WebRTC stack ([`PEER_DRIVEN_TARGETS`]: `sctp_proto` writes an
//!   ERROR line for every Peer that aborts its SCTP association) are Peer behaviour, never an
//!   operator error: they are hidden unless the filter enables `debug` by default or names their
//!   crate, and counted ([`peer_driven_lines`]) either way.
//! - [`Redact`] wraps Peer addresses in the gateway's own log lines; with `log.redact_ips` they
//!   print as `<redacted>`.
//!
//! Secrets never reach a log line: configuration secrets are [`crate::config::Secret`]s, whose
//! `Debug` hides them.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

/// Crates whose warnings and errors are caused by what Peers send (aborted associations, failed
/// handshakes, malformed packets).
pub const PEER_DRIVEN_TARGETS: &[&str] = &["sctp_proto", "str0m", "dimpl"];

static PEER_DRIVEN_LINES: AtomicU64 = AtomicU64::new(0);
static REDACT_IPS: AtomicBool = AtomicBool::new(false);

/// Warnings and errors the [`PEER_DRIVEN_TARGETS`] emitted since start, shown or not.
pub fn peer_driven_lines() -> u64 {
    PEER_DRIVEN_LINES.load(Ordering::Relaxed)
}

/// Whether [`Redact`] hides addresses (set by [`init`] from `log.redact_ips`).
pub fn set_redact_ips(on: bool) {
    REDACT_IPS.store(on, Ordering::Relaxed);
}

/// Displays a Peer address (or anything identifying a Peer), or `<redacted>` when
/// `log.redact_ips` is on. Use it in every log field that carries a Peer's address:
/// `tracing::debug!(remote = %Redact(addr), ...)`.
pub struct Redact<T>(pub T);

impl<T: fmt::Display> fmt::Display for Redact<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if REDACT_IPS.load(Ordering::Relaxed) {
            f.write_str("<redacted>")
        } else {
            self.0.fmt(f)
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Redact<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if REDACT_IPS.load(Ordering::Relaxed) {
            f.write_str("<redacted>")
        } else {
            self.0.fmt(f)
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.filter`. Calling it twice
/// is harmless (the second call does nothing).
pub fn init(cfg: &LogConfig) {
    set_redact_ips(cfg.redact_ips);
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| cfg.filter.clone());
    let _ = subscriber(&filter, cfg.format, std::io::stderr).try_init();
}

/// The filter directives in effect for `filter`: it, plus `<crate>=off` for every
/// [`PEER_DRIVEN_TARGETS`] crate it does not name, unless its default level is `debug` or more.
pub fn effective_filter(filter: &str) -> String {
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let default_level = directives
        .iter()
        .filter_map(|d| d.parse::<LevelFilter>().ok())
        .max()
        .unwrap_or(LevelFilter::OFF);
    if default_level >= LevelFilter::DEBUG {
        return filter.to_string();
    }
    let mut out = filter.to_string();
    for t in PEER_DRIVEN_TARGETS {
        let named = directives.iter().any(|d| {
            d.strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['=', ':', '[']))
        });
        if !named {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(t);
            out.push_str("=off");
        }
    }
    out
}

/// The subscriber [`init`] installs, writing to `writer` (tests give their own).
pub fn subscriber<W>(filter: &str, format: LogFormat, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let env =
        EnvFilter::try_new(effective_filter(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let out = match format {
        LogFormat::Plain => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed(),
    };
    let peer = PEER_DRIVEN_TARGETS
        .iter()
        .fold(Targets::new(), |t, c| t.with_target(*c, LevelFilter::WARN));
    tracing_subscriber::registry()
        .with(out.with_filter(env))
        .with(PeerLineCounter.with_filter(peer))
}

/// Counts the lines of [`PEER_DRIVEN_TARGETS`] at warn or above.
struct PeerLineCounter;

impl<S: Subscriber> Layer<S> for PeerLineCounter {
    fn on_event(&self, _event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        PEER_DRIVEN_LINES.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// What `filter` prints of an sctp_proto abort line and one of our own info lines.
    fn printed(filter: &str) -> String {
        let buf = Buf::default();
        let sub = subscriber(filter, LogFormat::Plain, buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::error!(target: "sctp_proto::association", "handle_inbound got err: abort chunk");
            tracing::info!(target: "switchboard_gateway::api", "our own line");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn peer_driven_errors_are_debug_lines_and_counted() {
        let before = peer_driven_lines();
        let out = printed("info");
        assert!(out.contains("our own line"), "{out}");
        assert!(!out.contains("abort chunk"), "hidden at info: {out}");
        assert!(peer_driven_lines() > before, "counted although hidden");
        for shown in ["debug", "info,sctp_proto=error", "warn,sctp_proto"] {
            assert!(printed(shown).contains("abort chunk"), "{shown} shows it");
        }
        assert_eq!(
            effective_filter("info"),
            "info,sctp_proto=off,str0m=off,dimpl=off"
        );
        assert_eq!(
            effective_filter("warn,str0m=info"),
            "warn,str0m=info,sctp_proto=off,dimpl=off"
        );
        assert_eq!(effective_filter("trace"), "trace");
    }

    #[test]
    fn redact_hides_addresses_when_asked() {
        let a: std::net::SocketAddr = "203.0.113.7:5000".parse().unwrap();
        set_redact_ips(false);
        assert_eq!(Redact(a).to_string(), "203.0.113.7:5000");
        set_redact_ips(true);
        assert_eq!(Redact(a).to_string(), "<redacted>");
        assert_eq!(format!("{:?}", Redact(a)), "<redacted>");
        set_redact_ips(false);
    }
}
