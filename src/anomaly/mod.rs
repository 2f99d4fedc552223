//! Online anomaly detection per token, with bounded state.
//!
//! `observe` runs in the `logging` phase of every request (after the response is sent), and
//! `is_quarantined` in `request_filter` (an atomic load when nothing is quarantined). State is
//! one small struct per (tenant, token id) in a bounded cache (`anomaly.max_tracked_tokens`,
//! least-recently-used tokens are forgotten), so memory stays flat however many tokens are seen.
//!
//! Detectors (names are the `kind` label of `tessera_anomalies_total`):
//! - `rate_spike`, `bytes_spike`: requests / response bytes in the current window against an
//!   EWMA mean and variance of past windows; fires when the z-score exceeds `z_threshold`,
//!   after `min_history` windows, and above the absolute floors (`rate_floor`, `bytes_floor`).
//! - `new_ip_prefix`, `new_user_agent`: a client /24 (/48 for IPv6) or user agent not seen for
//!   this token before, once the token has `min_history` requests.
//! - `auth_failure_burst`: ≥ `auth_failure_burst` upstream 401/403 in a minute, making up more
//!   than half the token's responses in that minute.
//! - `scan`: ≥ `scan_distinct_404` distinct paths answered 404 within a minute.
//! - `bad_token_use`: a revoked, unknown, expired, tampered, quarantined or other-tenant
//!   Part A was presented.
//! - `off_hours`: a request in an hour of the week that holds < 1 % of the token's history,
//!   once it has `off_hours_min_history` requests.
//!
//! Action `block` quarantines the token in this instance until an admin clears it
//! (`POST /v1/tenants/{t}/tokens/{id}/unblock`); `alert` only counts and marks.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{AnomalyAction, AnomalyConf};
use crate::metrics::ANOMALY_KINDS;
use crate::tenants::{Tenant, TenantTable};
use crate::token::TokenId;

pub const RATE_SPIKE: usize = 0;
pub const BYTES_SPIKE: usize = 1;
pub const NEW_IP_PREFIX: usize = 2;
pub const NEW_USER_AGENT: usize = 3;
pub const AUTH_FAILURE_BURST: usize = 4;
pub const SCAN: usize = 5;
pub const BAD_TOKEN_USE: usize = 6;
pub const OFF_HOURS: usize = 7;

/// A set of anomaly kinds (bit i = `ANOMALY_KINDS[i]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(pub u16);

impl Flags {
    pub fn set(&mut self, kind: usize) {
        self.0 |= 1 << kind;
    }
    pub fn has(&self, kind: usize) -> bool {
        self.0 & (1 << kind) != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// Kind names, for session records.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        ANOMALY_KINDS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.has(*i))
            .map(|(_, n)| *n)
    }
}

/// What `logging` knows about a finished request.
pub struct Observation<'a> {
    pub tenant: &'a Tenant,
    pub token_id: Option<&'a TokenId>,
    pub verify: Option<&'static str>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a [u8]>,
    pub status: u16,
    pub bytes_out: u64,
    pub path: &'a str,
}

const EWMA_ALPHA: f64 = 0.1;
const KNOWN_IPS: usize = 16;
const KNOWN_UAS: usize = 8;

#[derive(Default, Clone, Copy)]
struct Ewma {
    mean: f64,
    var: f64,
    n: u64,
}

impl Ewma {
    fn push(&mut self, x: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += EWMA_ALPHA * d;
            self.var = (1.0 - EWMA_ALPHA) * (self.var + EWMA_ALPHA * d * d);
        }
        self.n += 1;
    }

    fn z(&self, x: f64, sd_floor: f64) -> f64 {
        (x - self.mean) / self.var.sqrt().max(sd_floor)
    }
}

/// Per-token detector state: ~600 bytes with its heap parts (measured by benches/anomaly_memory.rs).
#[derive(Default)]
struct TokenState {
    window: u64,
    win_count: u64,
    win_bytes: u64,
    rate: Ewma,
    bytes: Ewma,
    fired_window: u16,
    requests: u64,
    ips: Vec<u64>,
    uas: Vec<u64>,
    minute: u64,
    min_responses: u32,
    min_auth_fail: u32,
    min_404_paths: Vec<u64>,
    fired_minute: u16,
    hours: Box<[u8]>,
    hours_total: u32,
    /// Highest of the rate/bytes z-scores at the last request.
    last_score: f64,
}

fn hash64<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn ip_prefix(ip: IpAddr, v4: u8, v6: u8) -> u64 {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if v4 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(v4.min(32)))
            };
            hash64(&(4u8, bits & mask))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if v6 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(v6.min(128)))
            };
            hash64(&(6u8, bits & mask))
        }
    }
}

/// Remember `h` in a small set; true if it was new. Oldest entries are dropped when full.
fn remember(set: &mut Vec<u64>, h: u64, cap: usize) -> bool {
    if set.contains(&h) {
        return false;
    }
    if set.len() >= cap {
        set.remove(0);
    }
    set.push(h);
    true
}

impl TokenState {
    /// Update with one request at time `now_ms` (Unix milliseconds); returns what fired.
    fn observe(&mut self, c: &AnomalyConf, o: &Obs<'_>, now_ms: u64) -> Flags {
        let mut f = Flags::default();
        let window_ms = (c.window.as_millis() as u64).max(1);
        let window = now_ms / window_ms;
        if window != self.window {
            if self.window != 0 {
                self.rate.push(self.win_count as f64);
                self.bytes.push(self.win_bytes as f64);
                // Idle windows in between count as zeros (bounded, so a long pause costs O(1)).
                let gap = window.saturating_sub(self.window + 1).min(60);
                for _ in 0..gap {
                    self.rate.push(0.0);
                    self.bytes.push(0.0);
                }
            }
            self.window = window;
            self.win_count = 0;
            self.win_bytes = 0;
            self.fired_window = 0;
        }
        self.win_count += 1;
        self.win_bytes += o.bytes_out;
        let mut score = 0.0f64;
        if self.rate.n >= c.min_history {
            let z = self.rate.z(self.win_count as f64, 1.0);
            score = score.max(z);
            if z > c.z_threshold && self.win_count as f64 > c.rate_floor {
                f.set(RATE_SPIKE);
            }
            let zb = self.bytes.z(self.win_bytes as f64, 1024.0);
            score = score.max(zb);
            if zb > c.z_threshold && self.win_bytes as f64 > c.bytes_floor {
                f.set(BYTES_SPIKE);
            }
        }
        self.last_score = score;

        let seasoned = self.requests >= c.min_history;
        self.requests += 1;
        if let Some(ip) = o.ip {
            let h = ip_prefix(ip, c.ip_prefix_v4, c.ip_prefix_v6);
            if remember(&mut self.ips, h, KNOWN_IPS) && seasoned {
                f.set(NEW_IP_PREFIX);
            }
        }
        if let Some(ua) = o.user_agent {
            if remember(&mut self.uas, hash64(ua), KNOWN_UAS) && seasoned {
                f.set(NEW_USER_AGENT);
            }
        }

        let minute = now_ms / 60_000;
        if minute != self.minute {
            self.minute = minute;
            self.min_responses = 0;
            self.min_auth_fail = 0;
            self.min_404_paths.clear();
            self.fired_minute = 0;
        }
        self.min_responses += 1;
        if matches!(o.status, 401 | 403) {
            self.min_auth_fail += 1;
            if u64::from(self.min_auth_fail) >= c.auth_failure_burst && self.min_auth_fail * 2 > self.min_responses {
                f.set(AUTH_FAILURE_BURST);
            }
        }
        if o.status == 404 {
            let cap = c.scan_distinct_404 as usize + 1;
            if self.min_404_paths.len() < cap && !self.min_404_paths.contains(&o.path_hash) {
                self.min_404_paths.push(o.path_hash);
            }
            if self.min_404_paths.len() as u64 >= c.scan_distinct_404 {
                f.set(SCAN);
            }
        }

        if self.hours.is_empty() {
            self.hours = vec![0u8; 168].into_boxed_slice();
        }
        let how = ((now_ms / 3_600_000 + 72) % 168) as usize;
        if u64::from(self.hours_total) >= c.off_hours_min_history {
            let share = f64::from(self.hours[how]) / f64::from(self.hours_total.max(1));
            if share < 0.01 {
                f.set(OFF_HOURS);
            }
        }
        if self.hours[how] == u8::MAX {
            // Halve the histogram: keeps proportions, bounds the counters.
            let mut total = 0u32;
            for h in self.hours.iter_mut() {
                *h /= 2;
                total += u32::from(*h);
            }
            self.hours_total = total;
        }
        self.hours[how] += 1;
        self.hours_total += 1;

        // Count each kind once per window (rate/bytes) or minute (the others).
        let window_kinds = Flags(f.0 & ((1 << RATE_SPIKE) | (1 << BYTES_SPIKE)));
        let minute_kinds = Flags(f.0 & ((1 << AUTH_FAILURE_BURST) | (1 << SCAN) | (1 << OFF_HOURS)));
        let new_window = Flags(window_kinds.0 & !self.fired_window);
        let new_minute = Flags(minute_kinds.0 & !self.fired_minute);
        self.fired_window |= window_kinds.0;
        self.fired_minute |= minute_kinds.0;
        let per_request = f.0 & ((1 << NEW_IP_PREFIX) | (1 << NEW_USER_AGENT));
        Flags(new_window.0 | new_minute.0 | per_request)
    }
}

/// The parts of an observation the state machine needs (testable without a tenant).
struct Obs<'a> {
    ip: Option<IpAddr>,
    user_agent: Option<&'a [u8]>,
    status: u16,
    bytes_out: u64,
    path_hash: u64,
}

/// Anomaly detector shared by all proxy threads.
pub struct Detector {
    tenants: Arc<TenantTable>,
    states: quick_cache::sync::Cache<(u32, TokenId), Arc<Mutex<TokenState>>>,
    quarantine: RwLock<HashSet<(usize, TokenId)>>,
    quarantined: AtomicUsize,
    /// Per-tenant max score since the last sweep (f64 bits; scores ≥ 0).
    max_score: Vec<AtomicU64>,
}

impl Detector {
    pub fn new(tenants: Arc<TenantTable>) -> Arc<Detector> {
        let cap = tenants
            .iter()
            .map(|t| t.anomaly.max_tracked_tokens)
            .max()
            .unwrap_or(100_000)
            .max(16);
        let n = tenants.len();
        Arc::new(Detector {
            tenants,
            states: quick_cache::sync::Cache::new(cap),
            quarantine: RwLock::new(HashSet::new()),
            quarantined: AtomicUsize::new(0),
            max_score: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Is this token quarantined by a `block` action? One atomic load in the common case.
    pub fn is_quarantined(&self, tenant: usize, id: &TokenId) -> bool {
        if self.quarantined.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.quarantine.read().is_ok_and(|q| q.contains(&(tenant, *id)))
    }

    /// Lift a quarantine; true if the token was quarantined.
    pub fn unblock(&self, tenant: usize, id: &TokenId) -> bool {
        let Ok(mut q) = self.quarantine.write() else {
            return false;
        };
        let removed = q.remove(&(tenant, *id));
        self.quarantined.store(q.len(), Ordering::Release);
        removed
    }

    /// Quarantined token ids of a tenant.
    pub fn quarantined(&self, tenant: usize) -> Vec<TokenId> {
        self.quarantine
            .read()
            .map(|q| q.iter().filter(|(t, _)| *t == tenant).map(|(_, id)| *id).collect())
            .unwrap_or_default()
    }

    /// Feed one finished request; returns the anomalies it raised (already counted).
    pub fn observe(&self, o: &Observation<'_>) -> Flags {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.observe_at(o, now_ms)
    }

    fn observe_at(&self, o: &Observation<'_>, now_ms: u64) -> Flags {
        let c = &o.tenant.anomaly;
        if !c.enabled {
            return Flags::default();
        }
        let mut flags = Flags::default();
        if matches!(
            o.verify,
            Some("revoked" | "unknown" | "expired" | "tampered" | "wrong_tenant" | "quarantined")
        ) {
            flags.set(BAD_TOKEN_USE);
        }
        // Only tokens that verified carry per-token history; failed ones would let anyone
        // grow the state table with random ids.
        if let (Some(id), Some("ok")) = (o.token_id, o.verify) {
            let key = (o.tenant.index as u32, *id);
            let state = self
                .states
                .get_or_insert_with(&key, || Ok::<_, ()>(Arc::default()))
                .unwrap_or_default();
            let obs = Obs {
                ip: o.ip,
                user_agent: o.user_agent,
                status: o.status,
                bytes_out: o.bytes_out,
                path_hash: if o.status == 404 { hash64(o.path) } else { 0 },
            };
            if let Ok(mut st) = state.lock() {
                flags.0 |= st.observe(c, &obs, now_ms).0;
                if let Some(m) = self.max_score.get(o.tenant.index) {
                    m.fetch_max(st.last_score.max(0.0).to_bits(), Ordering::Relaxed);
                }
            }
            if c.action == AnomalyAction::Block && !Flags(flags.0 & !(1 << BAD_TOKEN_USE)).is_empty() {
                if let Ok(mut q) = self.quarantine.write() {
                    if q.insert((o.tenant.index, *id)) {
                        log::warn!("tenant={} token_id={id} quarantined by anomaly detection", o.tenant.id);
                    }
                    self.quarantined.store(q.len(), Ordering::Release);
                }
            }
        }
        for k in 0..ANOMALY_KINDS.len() {
            if flags.has(k) {
                o.tenant.metrics.anomaly(k);
            }
        }
        flags
    }

    /// Publish per-tenant max scores and the tracked-token count; reset the maxima.
    pub fn sweep(&self) {
        for t in self.tenants.iter() {
            if let Some(m) = self.max_score.get(t.index) {
                let v = f64::from_bits(m.swap(0, Ordering::Relaxed));
                t.metrics.anomaly_score.set(v);
            }
        }
        crate::metrics::global()
            .tracked_tokens
            .with_label_values(&["all"])
            .set(self.states.len() as i64);
    }
}

/// Background service publishing scores every 10 s.
pub struct Sweeper(pub Arc<Detector>);

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.0.sweep(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
