//! Prometheus metrics. Label values are bounded: app ids from the config, status codes,
//! and the closed `policy::Reason` set.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use strum::IntoEnumIterator;

use crate::identity::AuthMethod;

/// All of Portcullis's metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    /// `portcullis_requests_total{app,status,decision}`
    pub requests: IntCounterVec,
    /// `portcullis_denied_total{app,reason}`
    pub denied: IntCounterVec,
    /// `portcullis_request_duration_seconds{app}` (to response end)
    pub duration: HistogramVec,
    /// `portcullis_audit_queue_depth`
    pub audit_queue_depth: IntGauge,
    /// `portcullis_audit_dropped_total`
    pub audit_dropped: IntCounter,
    /// `portcullis_tls_handshake_failures_total`
    pub tls_handshake_failures: IntCounter,
    /// `portcullis_audit_write_errors_total`
    pub audit_write_errors: IntCounter,
    /// `portcullis_audit_rotations_total`
    pub audit_rotations: IntCounter,
    /// `portcullis_audit_retention_held_total`: sweeps that kept an expired file for a sink.
    pub audit_retention_held: IntCounter,
    /// `portcullis_audit_writer_up`: 1 while records reach the file; `/readyz` fails at 0.
    pub audit_writer_up: IntGauge,
    /// `portcullis_rate_limited_total{app,key}`: requests refused by a rate limit.
    pub rate_limited: IntCounterVec,
    /// `portcullis_ip_allowlist_reported_total{app}`: misses of a report-mode allowlist.
    pub ip_reported: IntCounterVec,
    /// `portcullis_audit_sink_delivered_total{sink}`
    pub audit_sink_delivered: IntCounterVec,
    /// `portcullis_audit_sink_errors_total{sink}`: failed deliveries (each retried).
    pub audit_sink_errors: IntCounterVec,
    /// `portcullis_audit_sink_lag_records{sink}`: records written and not yet delivered.
    pub audit_sink_lag: IntGaugeVec,
    /// `portcullis_audit_sink_skipped_total{sink}`: records deleted before delivery.
    pub audit_sink_skipped: IntCounterVec,
    /// `portcullis_auth_failures_total{idp,reason}`: failed sign-ins (alert on spikes).
    pub auth_failures: IntCounterVec,
    /// `portcullis_rate_limit_buckets`: keys held by every rate limiter after the last sweep.
    pub rate_limit_buckets: IntGauge,
    /// Clients that went away before their response was complete (a closed chat tab), by app.
    pub downstream_closed_early: IntCounterVec,
    /// `portcullis_store_up`: 1 while the shared store (Redis) answers; stays 1 in memory.
    pub store_up: IntGauge,
    /// `portcullis_store_errors_total{op}`: shared-store operations that failed.
    pub store_errors: IntCounterVec,
    /// `portcullis_store_op_seconds{op}`: how long shared-store operations took.
    pub store_latency: HistogramVec,
    /// `portcullis_streams_open`: signed-in responses running now (swept for revocations).
    pub streams_open: IntGauge,
    /// `portcullis_config_reloads_total{result}`: in-place reloads, `applied` or `refused`.
    pub config_reloads: IntCounterVec,
    /// `portcullis_config_info{sha256}`: 1 for the configuration file in force.
    pub config_info: IntGaugeVec,
    /// `portcullis_credentials_total{method,result}`: machine credentials accepted
    /// (`method` = auth method, `result` = checked or cached) and refused (`method` = bearer
    /// or api-key, `result` = the refusal).
    pub credentials: IntCounterVec,
    /// `portcullis_authenticated_requests_total{method}`, resolved once per auth method
    /// (indexed by [`AuthMethod::index`]): the hot path does no label lookup.
    authenticated: Vec<IntCounter>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests by app, status and decision",
            ),
            &["app", "status", "decision"],
        )?;
        let denied = IntCounterVec::new(
            Opts::new(
                "portcullis_denied_total",
                "Refused requests by app and reason",
            ),
            &["app", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from request to end of response, by app",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ]),
            &["app"],
        )?;
        let audit_queue_depth = IntGauge::new(
            "portcullis_audit_queue_depth",
            "Audit records waiting for the writer",
        )?;
        let audit_dropped = IntCounter::new(
            "portcullis_audit_dropped_total",
            "Audit records lost because the queue was full (on_queue_full: drop) or the writer stopped",
        )?;
        let tls_handshake_failures = IntCounter::new(
            "portcullis_tls_handshake_failures_total",
            "Downstream TLS handshakes that failed or timed out",
        )?;
        let audit_write_errors = IntCounter::new(
            "portcullis_audit_write_errors_total",
            "Failed writes, flushes or fsyncs of the audit file",
        )?;
        let audit_rotations = IntCounter::new(
            "portcullis_audit_rotations_total",
            "Audit files sealed and rotated (by size, age or SIGUSR1)",
        )?;
        let audit_retention_held = IntCounter::new(
            "portcullis_audit_retention_held_total",
            "Retention sweeps that kept an expired audit file because a sink has not delivered it",
        )?;
        let audit_writer_up = IntGauge::new(
            "portcullis_audit_writer_up",
            "1 while the audit writer is writing to its file, 0 when it cannot",
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "portcullis_rate_limited_total",
                "Requests refused by a rate limit, by app and what the limit counts by",
            ),
            &["app", "key"],
        )?;
        let audit_sink_delivered = IntCounterVec::new(
            Opts::new(
                "portcullis_audit_sink_delivered_total",
                "Audit records delivered to a sink (at least once: a retry may deliver again)",
            ),
            &["sink"],
        )?;
        let audit_sink_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_audit_sink_errors_total",
                "Failed deliveries to an audit sink (each is retried; nothing is skipped)",
            ),
            &["sink"],
        )?;
        let audit_sink_skipped = IntCounterVec::new(
            Opts::new(
                "portcullis_audit_sink_skipped_total",
                "Audit records a sink never got: retention deleted them first (on_full: drop-oldest)",
            ),
            &["sink"],
        )?;
        let audit_sink_lag = IntGaugeVec::new(
            Opts::new(
                "portcullis_audit_sink_lag_records",
                "Audit records written and not yet delivered to a sink",
            ),
            &["sink"],
        )?;
        let ip_reported = IntCounterVec::new(
            Opts::new(
                "portcullis_ip_allowlist_reported_total",
                "Requests from addresses outside a report-mode IP allowlist (forwarded)",
            ),
            &["app"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "portcullis_auth_failures_total",
                "Failed sign-ins by identity provider and reason",
            ),
            &["idp", "reason"],
        )?;
        let rate_limit_buckets = IntGauge::new(
            "portcullis_rate_limit_buckets",
            "Keys held by every rate limiter after the last periodic sweep",
        )?;
        let downstream_closed_early = IntCounterVec::new(
            Opts::new(
                "portcullis_downstream_closed_early_total",
                "Clients that closed their connection before the response was complete, by app",
            ),
            &["app"],
        )?;
        let store_up = IntGauge::new(
            "portcullis_store_up",
            "1 while the shared store answers (always 1 with the in-memory store)",
        )?;
        store_up.set(1);
        let store_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_store_errors_total",
                "Shared-store operations that failed, by operation",
            ),
            &["op"],
        )?;
        let store_latency = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_store_op_seconds",
                "Shared-store (Redis) operations by operation, in seconds, failures included",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
            ]),
            &["op"],
        )?;
        registry.register(Box::new(store_latency.clone()))?;
        let streams_open = IntGauge::new(
            "portcullis_streams_open",
            "Signed-in requests whose upstream connection is open (checked for revocations)",
        )?;
        registry.register(Box::new(streams_open.clone()))?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_config_reloads_total",
                "In-place configuration reloads, by result (applied, refused)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(config_reloads.clone()))?;
        let config_info = IntGaugeVec::new(
            Opts::new(
                "portcullis_config_info",
                "1 for the SHA-256 of the configuration file in force",
            ),
            &["sha256"],
        )?;
        registry.register(Box::new(config_info.clone()))?;
        registry.register(Box::new(store_up.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(downstream_closed_early.clone()))?;
        registry.register(Box::new(rate_limit_buckets.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(ip_reported.clone()))?;
        registry.register(Box::new(audit_sink_delivered.clone()))?;
        registry.register(Box::new(audit_sink_errors.clone()))?;
        registry.register(Box::new(audit_sink_lag.clone()))?;
        registry.register(Box::new(audit_sink_skipped.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(audit_write_errors.clone()))?;
        registry.register(Box::new(audit_rotations.clone()))?;
        registry.register(Box::new(audit_retention_held.clone()))?;
        registry.register(Box::new(audit_writer_up.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(denied.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(audit_queue_depth.clone()))?;
        registry.register(Box::new(audit_dropped.clone()))?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        let credentials = IntCounterVec::new(
            Opts::new(
                "portcullis_credentials_total",
                "Machine credentials (bearer tokens, API keys) accepted or refused, by method and result",
            ),
            &["method", "result"],
        )?;
        registry.register(Box::new(credentials.clone()))?;
        let authenticated_vec = IntCounterVec::new(
            Opts::new(
                "portcullis_authenticated_requests_total",
                "Requests that carried a valid session or machine credential, by auth method",
            ),
            &["method"],
        )?;
        registry.register(Box::new(authenticated_vec.clone()))?;
        let authenticated = AuthMethod::iter()
            .map(|m| authenticated_vec.with_label_values(&[m.as_str()]))
            .collect();
        Ok(Metrics {
            registry,
            requests,
            denied,
            duration,
            audit_queue_depth,
            audit_dropped,
            tls_handshake_failures,
            audit_write_errors,
            audit_rotations,
            audit_retention_held,
            audit_writer_up,
            rate_limited,
            ip_reported,
            audit_sink_delivered,
            audit_sink_errors,
            audit_sink_lag,
            audit_sink_skipped,
            auth_failures,
            rate_limit_buckets,
            downstream_closed_early,
            store_up,
            store_errors,
            store_latency,
            streams_open,
            config_reloads,
            config_info,
            credentials,
            authenticated,
        })
    }

    /// Counts an authenticated request.
    pub fn authenticated(&self, method: AuthMethod) {
        if let Some(counter) = self.authenticated.get(method.index()) {
            counter.inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}
