//! Process logs via `tracing` (text or JSON), with Pingora's `log` records bridged in.
//!
//! Pingora reports failed downstream TLS handshakes only as log records; a small layer
//! counts them into `portcullis_tls_handshake_failures_total`.

use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};
use crate::metrics::Metrics;

/// Installs the global subscriber. Safe to call once per process; later calls are no-ops.
pub fn init(log: &Log, metrics: Option<Arc<Metrics>>) {
    let filter =
        EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Pingora logs through `log`; records above the configured level are dropped at the
    // `log` macro instead of being bridged and filtered afterwards (on the hot path).
    let max = match filter.max_level_hint().and_then(|l| l.into_level()) {
        Some(tracing::Level::ERROR) => log::LevelFilter::Error,
        Some(tracing::Level::WARN) => log::LevelFilter::Warn,
        Some(tracing::Level::INFO) => log::LevelFilter::Info,
        Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
        Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
        None => log::LevelFilter::Off,
    };
    // The handshake-failure counter needs pingora's ERROR records whatever the level.
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(max.max(log::LevelFilter::Error))
        .init();
    let counter = metrics.map(|metrics| HandshakeFailureCounter { metrics });
    let registry = tracing_subscriber::registry().with(counter).with(filter);
    // Colour only for people: journald, files and pipes get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = match log.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("logging was already initialised");
    }
}

struct HandshakeFailureCounter {
    metrics: Arc<Metrics>,
}

impl<S: Subscriber> Layer<S> for HandshakeFailureCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Only bridged `log` records from pingora-core's listener are of interest (their real
        // target is in the normalised metadata); the cheap check keeps every other event free
        // of formatting work.
        let from_listener = event
            .normalized_metadata()
            .is_some_and(|m| m.target().starts_with("pingora_core::services::listening"));
        if !from_listener {
            return;
        }
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        if visitor.message.starts_with("Downstream handshake") {
            self.metrics.tls_handshake_failures.inc();
        }
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_handshake_errors_are_counted() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        init(
            &Log {
                format: LogFormat::Text,
                level: "warn".into(),
            },
            Some(metrics.clone()),
        );
        log::error!(target: "pingora_core::services::listening", "Downstream handshake error from 1.2.3.4:5: TLSHandshakeFailure");
        log::error!(target: "pingora_core::services::listening", "something else");
        log::error!(target: "elsewhere", "Downstream handshake error");
        assert_eq!(metrics.tls_handshake_failures.get(), 1);
    }
}
