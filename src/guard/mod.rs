//! Connection guard: slowloris and HTTP/2 rapid-reset defences around Pingora's HTTP server.
//!
//! Where it runs, per connection:
//!
//! ```text
//! accept ─ TLS handshake (Pingora) ─▶ GuardApp::process_new
//!     │   client IP's slot taken (limits.max_connections_per_ip; an IP over its HTTP/2 reset
//!     │   budget is refused) ─ refused: connection closed, counted
//!     ▼
//! GuardedStream wraps the connection; every read Pingora makes goes through it:
//!     │   h1: request-head deadline, head size cap and header-count cap (431 written by the
//!     │   guard); h2: deadline for the connection preface; any: cut when the IP is blocked
//!     ▼
//! GuardHttp::process_new_http ─ before each HTTP/1 request head is read: re-arm the head
//!     │                          checks, then `proxy::Lean` (the lean path or Pingora's
//!     │                          HttpProxy; both run the `proxy` phases)
//!     ▼
//! proxy request_filter ─ `Guard::h2_stream_reset`, before routing and again after the store
//!                        lookup: a stream the client already reset goes no further (no store
//!                        lookup, no upstream request); resets are counted per client IP
//! ```
//!
//! When a stream reports a terminal phase (deadline passed, 431 sent, IP blocked),
//! `GuardApp` drops the connection future: the socket closes and Pingora logs nothing.
//! Tessera's own lines for these causes are rate-limited (`logging::RateLimited`).
//!
//! Limits that stay Pingora's: the TLS handshake timeout (60 s, hard-coded in
//! `pingora-core` `services/listening.rs`) runs before the guard sees the connection, and
//! HTTP/2 header-list size (64 KiB) and concurrent streams (100) are Pingora's h2 defaults.

mod stream;

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use prometheus::IntCounter;

use crate::config::Limits;
use crate::logging::RateLimited;
use crate::metrics;

pub use stream::{GuardedStream, HeadLimits, HeadScan, Scan};

/// Client IPs tracked at once (connections open or resets counted). A new IP beyond this is
/// refused (`ip_table_full`) after idle entries are pruned.
const MAX_TRACKED_IPS: usize = 65_536;
const SHARDS: usize = 16;
/// Idle HTTP/2 connections (no open stream) are closed after this, like Pingora's HTTP/1
/// keep-alive default.
const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the guard refused or closed a connection or a stream. Metric label values (closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client IP already holds `max_connections_per_ip` connections.
    PerIpLimit,
    /// `MAX_TRACKED_IPS` distinct IPs are tracked and none could be pruned.
    IpTableFull,
    /// No complete request head within `request_head_timeout`.
    HeadTimeout,
    /// Request head over `max_request_head_bytes` (431).
    HeadTooLarge,
    /// More than `max_headers` header lines (431).
    TooManyHeaders,
    /// The IP reset more HTTP/2 streams than `h2_max_resets_per_ip` in one window.
    H2ResetBudget,
    /// An HTTP/2 stream was reset by the client before the upstream request started.
    H2StreamReset,
}

impl Reason {
    const ALL: [Reason; 7] = [
        Reason::PerIpLimit,
        Reason::IpTableFull,
        Reason::HeadTimeout,
        Reason::HeadTooLarge,
        Reason::TooManyHeaders,
        Reason::H2ResetBudget,
        Reason::H2StreamReset,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::PerIpLimit => "per_ip_limit",
            Reason::IpTableFull => "ip_table_full",
            Reason::HeadTimeout => "head_timeout",
            Reason::HeadTooLarge => "head_too_large",
            Reason::TooManyHeaders => "too_many_headers",
            Reason::H2ResetBudget => "h2_reset_budget",
            Reason::H2StreamReset => "h2_stream_reset",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn log_line(self) -> &'static RateLimited {
        static LINES: [RateLimited; 7] = [const { RateLimited::new() }; 7];
        &LINES[self.index()]
    }
}

/// Per-IP state: open connections and the HTTP/2 reset budget.
#[derive(Debug, Default)]
struct IpEntry {
    conns: AtomicU32,
    /// Milliseconds since `epoch()`.
    window_start: AtomicU64,
    resets: AtomicU32,
    /// Blocked while `now < blocked_until`; 0 = never blocked.
    blocked_until: AtomicU64,
}

impl IpEntry {
    fn blocked(&self, now: u64) -> bool {
        now < self.blocked_until.load(Ordering::Relaxed)
    }

    /// Still worth keeping without connections: resets counted in a live window, or blocked.
    fn active(&self, now: u64, window: u64) -> bool {
        self.blocked(now)
            || (self.resets.load(Ordering::Relaxed) > 0
                && now.saturating_sub(self.window_start.load(Ordering::Relaxed)) < window)
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The key an IP is tracked under: IPv4 as is, IPv6 by its /64 (one client usually holds a
/// whole /64).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A connection's hold on its IP entry; released on drop.
pub struct Slot {
    guard: Arc<Guard>,
    key: IpAddr,
    entry: Arc<IpEntry>,
}

impl Slot {
    /// The IP spent its HTTP/2 reset budget: its connections are to be closed.
    fn blocked(&self) -> bool {
        let until = self.entry.blocked_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.release(self.key, &self.entry);
    }
}

/// The guard: limits prepared at load time, the per-IP table and cached metric handles.
pub struct Guard {
    limits: Limits,
    head: HeadLimits,
    window_ms: u64,
    shards: Vec<Mutex<HashMap<IpAddr, Arc<IpEntry>>>>,
    hasher: std::collections::hash_map::RandomState,
    refusals: Vec<IntCounter>,
    resets: IntCounter,
}

impl Guard {
    pub fn new(limits: Limits) -> Arc<Guard> {
        let m = metrics::global();
        Arc::new(Guard {
            limits,
            head: HeadLimits {
                timeout: limits.request_head_timeout,
                max_bytes: limits.max_request_head_bytes,
                max_headers: limits.max_headers,
            },
            window_ms: u64::try_from(limits.h2_reset_window.as_millis()).unwrap_or(u64::MAX),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            refusals: Reason::ALL
                .iter()
                .map(|r| m.guard_refusals.with_label_values(&[r.label()]))
                .collect(),
            resets: m.guard_h2_resets.clone(),
        })
    }

    fn shard(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Arc<IpEntry>>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard only means another thread panicked while holding it; the map
        // itself is still consistent (every update is a single insert/remove).
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a connection slot for `ip`, or say why not.
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Reason> {
        let key = ip_key(ip);
        let now = now_ms();
        let mut map = self.shard(&key);
        let entry = match map.get(&key) {
            Some(e) => e.clone(),
            None => {
                if map.len() >= MAX_TRACKED_IPS / SHARDS {
                    map.retain(|_, e| e.conns.load(Ordering::Relaxed) > 0 || e.active(now, self.window_ms));
                    if map.len() >= MAX_TRACKED_IPS / SHARDS {
                        return Err(Reason::IpTableFull);
                    }
                }
                let e = Arc::new(IpEntry::default());
                map.insert(key, e.clone());
                e
            }
        };
        if entry.blocked(now) {
            return Err(Reason::H2ResetBudget);
        }
        if entry.conns.load(Ordering::Relaxed) >= self.limits.max_connections_per_ip {
            return Err(Reason::PerIpLimit);
        }
        entry.conns.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            guard: self.clone(),
            key,
            entry,
        })
    }

    fn release(&self, key: IpAddr, entry: &Arc<IpEntry>) {
        let mut map = self.shard(&key);
        let left = entry.conns.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        if left == 0 && !entry.active(now_ms(), self.window_ms) {
            map.remove(&key);
        }
    }

    /// Count one HTTP/2 stream reset by `ip`; past the budget the IP is blocked for a window.
    fn record_reset(&self, ip: IpAddr) {
        self.resets.inc();
        let key = ip_key(ip);
        let now = now_ms();
        let map = self.shard(&key);
        // The IP has an entry: the connection that carried the reset holds a slot.
        let Some(e) = map.get(&key) else { return };
        if now.saturating_sub(e.window_start.load(Ordering::Relaxed)) >= self.window_ms {
            e.window_start.store(now, Ordering::Relaxed);
            e.resets.store(0, Ordering::Relaxed);
        }
        let n = e.resets.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.limits.h2_max_resets_per_ip && !e.blocked(now) {
            e.blocked_until
                .store(now.saturating_add(self.window_ms), Ordering::Relaxed);
            self.refused(Reason::H2ResetBudget);
        }
    }

    /// Count a refusal and write its (rate-limited) log line. Only the cause is logged.
    pub fn refused(&self, reason: Reason) {
        if let Some(c) = self.refusals.get(reason.index()) {
            c.inc();
        }
        if let Some(n) = reason.log_line().hit() {
            log::warn!(
                "connection guard: {} ({n} since the last line for this cause)",
                reason.label()
            );
        }
    }

    /// For the proxy, before anything costly (store lookup, upstream connection): true when
    /// the client has already reset this HTTP/2 stream (or its connection is gone); a reset is
    /// counted against the client IP. The caller ends the request without a response.
    pub fn h2_stream_reset(&self, session: &mut ServerSession) -> bool {
        let ServerSession::H2(h2) = session else {
            return false;
        };
        let mut idle = h2.idle();
        let mut cx = Context::from_waker(Waker::noop());
        let reset = match std::pin::Pin::new(&mut idle).poll(&mut cx) {
            Poll::Pending => return false,
            Poll::Ready(r) => r.is_ok(),
        };
        if reset {
            if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) {
                self.record_reset(ip);
            }
            self.refused(Reason::H2StreamReset);
        }
        true
    }

    /// The server options the guard needs on Pingora's HTTP proxy app (idle HTTP/2
    /// connections closed after `H2_IDLE_TIMEOUT`); call before wrapping.
    pub fn prepare<H>(http: &mut pingora::proxy::HttpProxy<H>) {
        let mut opts = http.server_options.take().unwrap_or_default();
        opts.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
        http.server_options = Some(opts);
    }

    /// Wrap the HTTP app (`proxy::Lean` around Pingora's `HttpProxy`): the result is the app of
    /// the proxy `Service`.
    pub fn wrap<H: HttpServerApp + Send + Sync + 'static>(self: &Arc<Self>, http: H) -> GuardApp<H> {
        GuardApp {
            http: Arc::new(GuardHttp(Arc::new(http))),
            guard: self.clone(),
        }
    }
}

/// The proxy service's app: admits the connection, wraps it, and closes it when the
/// [`GuardedStream`] says so.
pub struct GuardApp<H> {
    http: Arc<GuardHttp<H>>,
    guard: Arc<Guard>,
}

#[async_trait]
impl<H: HttpServerApp + Send + Sync + 'static> ServerApp for GuardApp<H> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let slot = match ip.map(|ip| self.guard.acquire(ip)) {
            Some(Ok(slot)) => Some(slot),
            Some(Err(reason)) => {
                self.guard.refused(reason);
                return None;
            }
            // Not an IP socket (Unix socket): nothing to count per IP.
            None => None,
        };
        let guarded = GuardedStream::new(stream, slot, self.guard.head);
        let shared = guarded.shared();
        tokio::select! {
            _ = ServerApp::process_new(&self.http, Box::new(guarded), shutdown) => {}
            reason = shared.closed() => self.guard.refused(reason),
        }
        None
    }

    async fn cleanup(&self) {
        self.http.0.http_cleanup().await
    }
}

/// Pingora's HTTP app with one addition: before each HTTP/1 request head is read, the
/// connection's head checks are re-armed.
pub struct GuardHttp<H>(Arc<H>);

#[async_trait]
impl<H: HttpServerApp + Send + Sync + 'static> HttpServerApp for GuardHttp<H> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if let Some(g) = session
            .stream()
            .and_then(|s| (**s).as_any().downcast_ref::<GuardedStream>())
        {
            g.arm();
        }
        self.0.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.0.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.0.server_options()
    }

    async fn http_cleanup(&self) {
        self.0.http_cleanup().await
    }
}
