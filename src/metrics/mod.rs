//! Prometheus metrics, served on `listen.metrics` at `/metrics`.
//!
//! All families are registered once in one registry. Per-tenant handles are resolved at load
//! time (`TenantMetrics`), so the request path (`logging`, `request_filter`) increments cached
//! counters (~7 ns) instead of hashing label values (~50 ns). Labels come from closed sets:
//! the tenant id from config (folded into `_other` beyond `metrics.tenant_label_cap`), fixed
//! reason/kind names. Never a token id, IP, path or header value.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::anomaly::AnomalyKind;
use crate::token::VerifyResult;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every metric family Tessera exports.
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    bytes_sent: IntCounterVec,
    bytes_received: IntCounterVec,
    verifications: IntCounterVec,
    anomalies: IntCounterVec,
    anomaly_score: GaugeVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_invalidations: IntCounter,
    pub cache_flushes: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_negative_hits: IntCounter,
    pub cache_negative_entries: IntGauge,
    pub store_up: IntGauge,
    pub tracking_up: IntGauge,
    pub store_errors: IntCounterVec,
    pub session_log_dropped: IntCounterVec,
    pub session_log_written: IntCounterVec,
    pub cert_reloads: IntCounterVec,
    /// `tessera_config_reloads_total{result}`: config file / tenant changes applied at runtime
    /// (`ok`), refused as invalid (`invalid`), or failed while building (`error`).
    pub config_reloads: IntCounterVec,
    /// `tessera_acme_orders_total{result}`: ACME orders finished (`ok`, `error`).
    pub acme_orders: IntCounterVec,
    /// `tessera_acme_challenges_total{challenge,result}`: validations answered by this
    /// instance (`tls-alpn-01`; result `answered`, `unknown` name, `error`).
    pub acme_challenges: IntCounterVec,
    /// `tessera_cert_expiry_seconds{tenant}`: seconds until the ACME tenant's certificate
    /// expires (earliest notAfter of its chain); bounded by the tenant table.
    pub cert_expiry: GaugeVec,
    pub tenant_label_overflow: IntCounter,
    pub bad_requests: IntCounterVec,
    /// `tessera_request_paths_total{path}`: HTTP requests by the code path that served them
    /// (`lean`: `proxy::lean`; `pingora_proxy`: Pingora's `HttpProxy`).
    pub request_paths: IntCounterVec,
    pub admin_requests: IntCounterVec,
    tracked_tokens: IntGaugeVec,
    pub session_log_trim_errors: IntCounter,
    /// Connection guard refusals by `reason` (closed set: `crate::guard::Reason`).
    pub guard_refusals: IntCounterVec,
    /// HTTP/2 streams reset by the client before Tessera contacted the upstream.
    pub guard_h2_resets: IntCounter,
    /// OAuth token endpoint answers by tenant, grant type (bounded set, `oauth::grant_type_label`)
    /// and result.
    pub oauth_token_responses: IntCounterVec,
    tenants_labelled: AtomicUsize,
    tenant_label_cap: AtomicUsize,
}

/// Cached handles for one tenant.
#[derive(Clone)]
pub struct TenantMetrics {
    pub label: String,
    requests: [prometheus::core::GenericCounter<prometheus::core::AtomicU64>; 5],
    pub duration: Histogram,
    pub upstream_duration: Histogram,
    pub bytes_sent: IntCounter,
    pub bytes_received: IntCounter,
    /// Indexed by `VerifyResult::index`.
    verifications: [IntCounter; VerifyResult::COUNT],
    /// Indexed by `AnomalyKind::index`.
    anomalies: [IntCounter; AnomalyKind::COUNT],
    pub anomaly_score: Gauge,
    /// Tokens with anomaly state held for this tenant (set by the sweeper).
    pub tracked_tokens: IntGauge,
}

impl TenantMetrics {
    /// Count a finished request by status class (0 = no response → counted as 5xx).
    pub fn request(&self, status: u16) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.requests[class].inc();
    }

    /// Count a verification outcome: one array index, no label lookup.
    pub fn verification(&self, result: VerifyResult) {
        self.verifications[result.index()].inc();
    }

    /// Count an anomaly: one array index, no label lookup.
    pub fn anomaly(&self, kind: AnomalyKind) {
        self.anomalies[kind.index()].inc();
    }

    /// Running totals for the console overview: requests, refused Part A verifications
    /// (every result but `ok`), anomalies. Read off the request path, once a minute.
    pub fn totals(&self) -> [u64; 3] {
        let requests = self.requests.iter().map(|c| c.get()).sum();
        let refused = VerifyResult::ALL
            .iter()
            .filter(|r| **r != VerifyResult::Ok)
            .map(|r| self.verifications[r.index()].get())
            .sum();
        let anomalies = self.anomalies.iter().map(|c| c.get()).sum();
        [requests, refused, anomalies]
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, Box::new(c.clone()));
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, Box::new(g.clone()));
    g
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, Box::new(h.clone()));
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, Box::new(g.clone()));
    g
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, Box::new(g.clone()));
    g
}

fn register(r: &Registry, c: Box<dyn prometheus::core::Collector>) {
    // Names are static and unique within this file; a clash is a programming error caught by
    // the metrics tests.
    if let Err(e) = r.register(c) {
        panic!("metric registration failed: {e}");
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Per-tenant families (`tenant` label; handles cached in `TenantMetrics`).
struct TenantFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    bytes_sent: IntCounterVec,
    bytes_received: IntCounterVec,
    verifications: IntCounterVec,
    anomalies: IntCounterVec,
    anomaly_score: GaugeVec,
    tracked_tokens: IntGaugeVec,
}

impl TenantFamilies {
    fn new(r: &Registry) -> TenantFamilies {
        TenantFamilies {
            requests: counter_vec(
                r,
                "tessera_requests_total",
                "Requests by tenant and status class.",
                &["tenant", "code_class"],
            ),
            duration: histogram_vec(
                r,
                "tessera_request_duration_seconds",
                "Time from request start to response end, by tenant.",
                &["tenant"],
            ),
            upstream_duration: histogram_vec(
                r,
                "tessera_upstream_duration_seconds",
                "Time spent waiting on the upstream, by tenant.",
                &["tenant"],
            ),
            bytes_sent: counter_vec(
                r,
                "tessera_bytes_sent_total",
                "Response body bytes sent to clients, by tenant.",
                &["tenant"],
            ),
            bytes_received: counter_vec(
                r,
                "tessera_bytes_received_total",
                "Request body bytes received from clients, by tenant.",
                &["tenant"],
            ),
            verifications: counter_vec(
                r,
                "tessera_token_verifications_total",
                "Part A verification outcomes.",
                &["tenant", "result"],
            ),
            anomalies: counter_vec(
                r,
                "tessera_anomalies_total",
                "Anomaly detections by tenant and kind.",
                &["tenant", "kind"],
            ),
            anomaly_score: gauge_vec(
                r,
                "tessera_anomaly_score",
                "Highest current anomaly z-score over the tenant's tokens.",
                &["tenant"],
            ),
            tracked_tokens: int_gauge_vec(
                r,
                "tessera_anomaly_tracked_tokens",
                "Tokens with anomaly state held in memory, by tenant (at most its anomaly.max_tracked_tokens).",
                &["tenant"],
            ),
        }
    }
}

/// Fragment store and cache families.
struct StoreFamilies {
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_invalidations: IntCounter,
    cache_flushes: IntCounter,
    cache_entries: IntGauge,
    cache_negative_hits: IntCounter,
    cache_negative_entries: IntGauge,
    store_up: IntGauge,
    tracking_up: IntGauge,
    store_errors: IntCounterVec,
}

impl StoreFamilies {
    fn new(r: &Registry) -> StoreFamilies {
        StoreFamilies {
            cache_hits: counter(
                r,
                "tessera_fragment_cache_hits_total",
                "Part B lookups answered by the local cache.",
            ),
            cache_misses: counter(
                r,
                "tessera_fragment_cache_misses_total",
                "Part B lookups that went to the store.",
            ),
            cache_invalidations: counter(
                r,
                "tessera_fragment_cache_invalidations_total",
                "Keys evicted by Redis tracking invalidations.",
            ),
            cache_flushes: counter(
                r,
                "tessera_fragment_cache_flushes_total",
                "Whole-cache clears (flush, disconnect, heartbeat failure).",
            ),
            cache_entries: gauge(r, "tessera_fragment_cache_entries", "Records held in the local cache."),
            cache_negative_hits: counter(
                r,
                "tessera_fragment_cache_negative_hits_total",
                "Part B lookups answered \"not found\" by the local cache (no store round trip).",
            ),
            cache_negative_entries: gauge(
                r,
                "tessera_fragment_cache_negative_entries",
                "Token ids the local cache remembers as absent from Redis.",
            ),
            store_up: gauge(
                r,
                "tessera_store_up",
                "1 if the fragment store answered its last check.",
            ),
            tracking_up: gauge(
                r,
                "tessera_tracking_up",
                "1 if Redis invalidation tracking is established (1 when not applicable).",
            ),
            store_errors: counter_vec(
                r,
                "tessera_store_errors_total",
                "Fragment store operations that failed.",
                &["op"],
            ),
        }
    }
}

/// Session log families.
struct SessionLogFamilies {
    dropped: IntCounterVec,
    written: IntCounterVec,
    trim_errors: IntCounter,
}

impl SessionLogFamilies {
    fn new(r: &Registry) -> SessionLogFamilies {
        SessionLogFamilies {
            dropped: counter_vec(
                r,
                "tessera_session_log_dropped_total",
                "Session records dropped (channel full or sink error).",
                &["sink"],
            ),
            written: counter_vec(
                r,
                "tessera_session_log_written_total",
                "Session records written.",
                &["sink"],
            ),
            trim_errors: counter(
                r,
                "tessera_session_log_trim_errors_total",
                "Failed XTRIM of a tenant's session stream by session_log.stream_max_age.",
            ),
        }
    }
}

/// Process-level families: build info, certificates, refusals before routing, the connection
/// guard, admin API.
struct ProcessFamilies {
    cert_reloads: IntCounterVec,
    config_reloads: IntCounterVec,
    acme_orders: IntCounterVec,
    acme_challenges: IntCounterVec,
    cert_expiry: GaugeVec,
    tenant_label_overflow: IntCounter,
    bad_requests: IntCounterVec,
    request_paths: IntCounterVec,
    guard_refusals: IntCounterVec,
    guard_h2_resets: IntCounter,
    admin_requests: IntCounterVec,
    oauth_token_responses: IntCounterVec,
}

impl ProcessFamilies {
    fn new(r: &Registry) -> ProcessFamilies {
        let build = int_gauge_vec(
            r,
            "tessera_build_info",
            "Build information; value is always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        ProcessFamilies {
            cert_reloads: counter_vec(
                r,
                "tessera_cert_reloads_total",
                "Certificate reload attempts.",
                &["result"],
            ),
            config_reloads: counter_vec(
                r,
                "tessera_config_reloads_total",
                "Config file reloads and tenant changes: ok (applied), invalid (refused, old config kept), error.",
                &["result"],
            ),
            acme_orders: counter_vec(
                r,
                "tessera_acme_orders_total",
                "ACME certificate orders by result (ok, error).",
                &["result"],
            ),
            acme_challenges: counter_vec(
                r,
                "tessera_acme_challenges_total",
                "ACME validations answered on this instance by challenge and result (answered, unknown, error).",
                &["challenge", "result"],
            ),
            cert_expiry: gauge_vec(
                r,
                "tessera_cert_expiry_seconds",
                "Seconds until the earliest notAfter of an ACME tenant's certificate chain.",
                &["tenant"],
            ),
            tenant_label_overflow: counter(
                r,
                "tessera_tenant_label_overflow_total",
                "Tenants folded into tenant=\"_other\" by metrics.tenant_label_cap.",
            ),
            bad_requests: counter_vec(
                r,
                "tessera_bad_requests_total",
                "Requests refused before tenant routing.",
                &["reason"],
            ),
            request_paths: counter_vec(
                r,
                "tessera_request_paths_total",
                "HTTP requests by the code path that served them (lean, pingora_proxy).",
                &["path"],
            ),
            guard_refusals: counter_vec(
                r,
                "tessera_guard_refusals_total",
                "Connections and requests refused by the connection guard, by reason.",
                &["reason"],
            ),
            guard_h2_resets: counter(
                r,
                "tessera_guard_h2_resets_total",
                "HTTP/2 streams reset by the client before the upstream request started.",
            ),
            admin_requests: counter_vec(
                r,
                "tessera_admin_requests_total",
                "Admin API requests by outcome.",
                &["outcome"],
            ),
            oauth_token_responses: counter_vec(
                r,
                "tessera_oauth_token_responses_total",
                "OAuth token and revocation endpoint answers through Tessera, by grant type and result.",
                &["tenant", "grant_type", "result"],
            ),
        }
    }
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let t = TenantFamilies::new(&r);
        let s = StoreFamilies::new(&r);
        let l = SessionLogFamilies::new(&r);
        let p = ProcessFamilies::new(&r);
        Metrics {
            requests: t.requests,
            duration: t.duration,
            upstream_duration: t.upstream_duration,
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
            verifications: t.verifications,
            anomalies: t.anomalies,
            anomaly_score: t.anomaly_score,
            tracked_tokens: t.tracked_tokens,
            cache_hits: s.cache_hits,
            cache_misses: s.cache_misses,
            cache_invalidations: s.cache_invalidations,
            cache_flushes: s.cache_flushes,
            cache_entries: s.cache_entries,
            cache_negative_hits: s.cache_negative_hits,
            cache_negative_entries: s.cache_negative_entries,
            store_up: s.store_up,
            tracking_up: s.tracking_up,
            store_errors: s.store_errors,
            session_log_dropped: l.dropped,
            session_log_written: l.written,
            session_log_trim_errors: l.trim_errors,
            cert_reloads: p.cert_reloads,
            config_reloads: p.config_reloads,
            acme_orders: p.acme_orders,
            acme_challenges: p.acme_challenges,
            cert_expiry: p.cert_expiry,
            tenant_label_overflow: p.tenant_label_overflow,
            bad_requests: p.bad_requests,
            request_paths: p.request_paths,
            guard_refusals: p.guard_refusals,
            guard_h2_resets: p.guard_h2_resets,
            admin_requests: p.admin_requests,
            oauth_token_responses: p.oauth_token_responses,
            tenants_labelled: AtomicUsize::new(0),
            tenant_label_cap: AtomicUsize::new(1000),
            registry: r,
        }
    }

    /// Set the cap on distinct tenant label values (from config, before tenants are built).
    pub fn set_tenant_label_cap(&self, cap: usize) {
        self.tenant_label_cap.store(cap, Ordering::Relaxed);
    }

    /// Handles for one tenant; tenants beyond the cap share `tenant="_other"`.
    pub fn tenant(&self, id: &str) -> TenantMetrics {
        let n = self.tenants_labelled.fetch_add(1, Ordering::Relaxed);
        let label = if n < self.tenant_label_cap.load(Ordering::Relaxed) {
            id.to_string()
        } else {
            self.tenant_label_overflow.inc();
            "_other".to_string()
        };
        let l = label.as_str();
        TenantMetrics {
            requests: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| self.requests.with_label_values(&[l, c])),
            duration: self.duration.with_label_values(&[l]),
            upstream_duration: self.upstream_duration.with_label_values(&[l]),
            bytes_sent: self.bytes_sent.with_label_values(&[l]),
            bytes_received: self.bytes_received.with_label_values(&[l]),
            verifications: VerifyResult::ALL.map(|r| self.verifications.with_label_values(&[l, r.label()])),
            anomalies: AnomalyKind::ALL.map(|k| self.anomalies.with_label_values(&[l, k.label()])),
            anomaly_score: self.anomaly_score.with_label_values(&[l]),
            tracked_tokens: self.tracked_tokens.with_label_values(&[l]),
            label,
        }
    }

    /// Render the text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on invalid metric families, which `register` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// `/metrics` HTTP endpoint.
pub struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, ctype, body) = if path == "/metrics" {
            (200, "text/plain; version=0.0.4; charset=utf-8", global().render())
        } else {
            (404, "text/plain", b"not found; try /metrics\n".to_vec())
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, ctype)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registration panics only on a programming error (duplicate or invalid name); this test
    /// makes such an error fail CI instead of start-up.
    #[test]
    fn registers_and_renders_every_family() {
        let m = global();
        let t = m.tenant("unit-test-tenant");
        t.request(204);
        t.verification(VerifyResult::Revoked);
        t.anomaly(AnomalyKind::RateSpike);
        let text = String::from_utf8(m.render()).unwrap();
        for family in [
            "tessera_requests_total",
            "tessera_request_duration_seconds",
            "tessera_token_verifications_total",
            "tessera_anomalies_total",
            "tessera_build_info",
            "tessera_fragment_cache_hits_total",
        ] {
            assert!(text.contains(family), "{family} missing");
        }
        assert!(text.contains("result=\"revoked\",tenant=\"unit-test-tenant\""));
        assert!(text.contains("kind=\"rate_spike\",tenant=\"unit-test-tenant\""));
    }

    /// Each outcome and kind counts under its own label: the array index and the label agree.
    #[test]
    fn handles_match_labels() {
        let m = global();
        let t = m.tenant("unit-test-handles");
        for (i, r) in VerifyResult::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            for _ in 0..=i {
                t.verification(r);
            }
        }
        for (i, k) in AnomalyKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            for _ in 0..=i {
                t.anomaly(k);
            }
        }
        for (i, r) in VerifyResult::ALL.into_iter().enumerate() {
            let v = m
                .verifications
                .with_label_values(&["unit-test-handles", r.label()])
                .get();
            assert_eq!(v, i as u64 + 1, "{r}");
        }
        for (i, k) in AnomalyKind::ALL.into_iter().enumerate() {
            let v = m.anomalies.with_label_values(&["unit-test-handles", k.label()]).get();
            assert_eq!(v, i as u64 + 1, "{}", k.label());
        }
    }
}
