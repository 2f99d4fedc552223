//! Online anomaly detection per token, with bounded state.
//!
//! `observe` runs in the `logging` phase of every request (after the response is sent), and
//! `is_quarantined` in `request_filter` (an atomic load when nothing is quarantined). State is
//! one small struct per token in a bounded cache per tenant, sized by that tenant's
//! `anomaly.max_tracked_tokens` (least-recently-used tokens are forgotten), so memory stays
//! flat however many tokens are seen, and one busy tenant cannot evict another's history.
//! `tessera_anomaly_tracked_tokens{tenant}` shows each tenant's count.
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
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{AnomalyAction, AnomalyConf};
use crate::tenants::{Tenant, Tenants};
use crate::token::{TokenId, VerifyResult};

/// What a detector found. The discriminant is the bit in `Flags` and the index of the
/// per-tenant metric handle; `label` is the `kind` label and the session record value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    RateSpike,
    BytesSpike,
    NewIpPrefix,
    NewUserAgent,
    AuthFailureBurst,
    Scan,
    BadTokenUse,
    OffHours,
}

impl AnomalyKind {
    /// Every kind, in index order (`self as usize`).
    pub const ALL: [AnomalyKind; 8] = [
        AnomalyKind::RateSpike,
        AnomalyKind::BytesSpike,
        AnomalyKind::NewIpPrefix,
        AnomalyKind::NewUserAgent,
        AnomalyKind::AuthFailureBurst,
        AnomalyKind::Scan,
        AnomalyKind::BadTokenUse,
        AnomalyKind::OffHours,
    ];
    /// Number of kinds (size of per-tenant handle arrays).
    pub const COUNT: usize = AnomalyKind::ALL.len();

    /// The `kind` label of `tessera_anomalies_total`.
    pub const fn label(self) -> &'static str {
        match self {
            AnomalyKind::RateSpike => "rate_spike",
            AnomalyKind::BytesSpike => "bytes_spike",
            AnomalyKind::NewIpPrefix => "new_ip_prefix",
            AnomalyKind::NewUserAgent => "new_user_agent",
            AnomalyKind::AuthFailureBurst => "auth_failure_burst",
            AnomalyKind::Scan => "scan",
            AnomalyKind::BadTokenUse => "bad_token_use",
            AnomalyKind::OffHours => "off_hours",
        }
    }

    /// Index into per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of anomaly kinds (bit i = `AnomalyKind::ALL[i]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(pub u16);

impl Flags {
    /// The set holding exactly `kinds`.
    pub const fn of(kinds: &[AnomalyKind]) -> Flags {
        let mut bits = 0;
        let mut i = 0;
        while i < kinds.len() {
            bits |= kinds[i].bit();
            i += 1;
        }
        Flags(bits)
    }
    pub fn set(&mut self, kind: AnomalyKind) {
        self.0 |= kind.bit();
    }
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.0 & kind.bit() != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// The kinds in the set, in index order.
    pub fn kinds(self) -> impl Iterator<Item = AnomalyKind> {
        AnomalyKind::ALL.into_iter().filter(move |k| self.has(*k))
    }
    /// Kind names, for session records.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.kinds().map(AnomalyKind::label)
    }
    const fn and(self, other: Flags) -> Flags {
        Flags(self.0 & other.0)
    }
}

/// Kinds counted once per rate/bytes window.
const WINDOW_KINDS: Flags = Flags::of(&[AnomalyKind::RateSpike, AnomalyKind::BytesSpike]);
/// Kinds counted once per minute.
const MINUTE_KINDS: Flags = Flags::of(&[AnomalyKind::AuthFailureBurst, AnomalyKind::Scan, AnomalyKind::OffHours]);
/// Kinds reported on every request that shows them.
const REQUEST_KINDS: Flags = Flags::of(&[AnomalyKind::NewIpPrefix, AnomalyKind::NewUserAgent]);

/// What `logging` knows about a finished request.
pub struct Observation<'a> {
    pub tenant: &'a Tenant,
    pub token_id: Option<&'a TokenId>,
    pub verify: Option<VerifyResult>,
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
    /// Update with one request at time `now_ms` (Unix milliseconds); returns what fired, each
    /// kind at most once per window (rate/bytes) or minute (the others).
    fn observe(&mut self, c: &AnomalyConf, o: &Obs<'_>, now_ms: u64) -> Flags {
        let mut f = Flags::default();
        self.spikes(c, o, now_ms, &mut f);
        self.newcomers(c, o, &mut f);
        self.minute_bursts(c, o, now_ms, &mut f);
        self.off_hours(c, now_ms, &mut f);
        self.once(f)
    }

    /// `rate_spike`, `bytes_spike`: roll the window, compare it with the EWMA of past ones.
    fn spikes(&mut self, c: &AnomalyConf, o: &Obs<'_>, now_ms: u64, f: &mut Flags) {
        // Config refuses windows under 1 ms, so the division is safe.
        let window = now_ms / (c.window.as_millis() as u64).max(1);
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
                f.set(AnomalyKind::RateSpike);
            }
            let zb = self.bytes.z(self.win_bytes as f64, 1024.0);
            score = score.max(zb);
            if zb > c.z_threshold && self.win_bytes as f64 > c.bytes_floor {
                f.set(AnomalyKind::BytesSpike);
            }
        }
        self.last_score = score;
    }

    /// `new_ip_prefix`, `new_user_agent`, once the token has `min_history` requests.
    fn newcomers(&mut self, c: &AnomalyConf, o: &Obs<'_>, f: &mut Flags) {
        let seasoned = self.requests >= c.min_history;
        self.requests += 1;
        if let Some(ip) = o.ip {
            let h = ip_prefix(ip, c.ip_prefix_v4, c.ip_prefix_v6);
            if remember(&mut self.ips, h, KNOWN_IPS) && seasoned {
                f.set(AnomalyKind::NewIpPrefix);
            }
        }
        if let Some(ua) = o.user_agent {
            if remember(&mut self.uas, hash64(ua), KNOWN_UAS) && seasoned {
                f.set(AnomalyKind::NewUserAgent);
            }
        }
    }

    /// `auth_failure_burst`, `scan`: counters over the current minute.
    fn minute_bursts(&mut self, c: &AnomalyConf, o: &Obs<'_>, now_ms: u64, f: &mut Flags) {
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
                f.set(AnomalyKind::AuthFailureBurst);
            }
        }
        if o.status == 404 {
            let cap = c.scan_distinct_404 as usize + 1;
            if self.min_404_paths.len() < cap && !self.min_404_paths.contains(&o.path_hash) {
                self.min_404_paths.push(o.path_hash);
            }
            if self.min_404_paths.len() as u64 >= c.scan_distinct_404 {
                f.set(AnomalyKind::Scan);
            }
        }
    }

    /// `off_hours`: an hour of the week holding < 1 % of the token's history.
    fn off_hours(&mut self, c: &AnomalyConf, now_ms: u64, f: &mut Flags) {
        if self.hours.is_empty() {
            self.hours = vec![0u8; 168].into_boxed_slice();
        }
        let how = ((now_ms / 3_600_000 + 72) % 168) as usize;
        if u64::from(self.hours_total) >= c.off_hours_min_history {
            let share = f64::from(self.hours[how]) / f64::from(self.hours_total.max(1));
            if share < 0.01 {
                f.set(AnomalyKind::OffHours);
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
    }

    /// Drop kinds already reported in this window (rate/bytes) or minute (the others).
    fn once(&mut self, f: Flags) -> Flags {
        let window_kinds = f.and(WINDOW_KINDS);
        let minute_kinds = f.and(MINUTE_KINDS);
        let new_window = window_kinds.0 & !self.fired_window;
        let new_minute = minute_kinds.0 & !self.fired_minute;
        self.fired_window |= window_kinds.0;
        self.fired_minute |= minute_kinds.0;
        Flags(new_window | new_minute | f.and(REQUEST_KINDS).0)
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

/// One tenant's detector state, sized by that tenant's `anomaly.max_tracked_tokens`.
/// One tenant's per-token detector state, owned by its `Tenant` (`tenants`) so that it
/// follows the tenant across table swaps.
pub struct TenantStates {
    tokens: quick_cache::sync::Cache<TokenId, Arc<Mutex<TokenState>>>,
    /// Max score since the last sweep (f64 bits; scores ≥ 0).
    max_score: AtomicU64,
}

impl TenantStates {
    /// A bounded cache that never holds more than `cap` tokens. quick_cache splits its
    /// capacity over shards, rounding each shard up; pick the shard count here and round the
    /// capacity down to a multiple of it so the sum of the shard caps is at most `cap`.
    pub(crate) fn new(cap: usize) -> TenantStates {
        let cap = cap.max(1); // config refuses 0; a 0-capacity cache would track nothing
        let parallel = std::thread::available_parallelism().map_or(4, |n| n.get()) * 4;
        let mut shards = 1usize;
        while shards * 2 <= parallel && cap / (shards * 2) >= 32 {
            shards *= 2;
        }
        let items = cap - cap % shards;
        let tokens = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(items as u64)
            .shards(shards)
            .build()
            .map(|opts| {
                quick_cache::sync::Cache::with_options(
                    opts,
                    quick_cache::UnitWeighter,
                    Default::default(),
                    Default::default(),
                )
            })
            // The builder only fails when a capacity is unset; both are set above.
            .unwrap_or_else(|_| quick_cache::sync::Cache::new(items));
        TenantStates {
            tokens,
            max_score: AtomicU64::new(0),
        }
    }
}

/// Anomaly detector shared by all proxy threads. Per-token state lives in each tenant
/// (`Tenant::anomaly_state`); the quarantine set is keyed by the tenant's stable index.
pub struct Detector {
    tenants: Arc<Tenants>,
    quarantine: RwLock<HashSet<(usize, TokenId)>>,
    quarantined: AtomicUsize,
}

impl Detector {
    pub fn new(tenants: Arc<Tenants>) -> Arc<Detector> {
        Arc::new(Detector {
            tenants,
            quarantine: RwLock::new(HashSet::new()),
            quarantined: AtomicUsize::new(0),
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

    /// Tokens with detector state held for a tenant (at most its `max_tracked_tokens`).
    pub fn tracked(&self, tenant: usize) -> usize {
        self.tenants
            .load()
            .get(tenant)
            .map_or(0, |t| t.anomaly_state.tokens.len())
    }

    /// Feed one finished request; returns the anomalies it raised (already counted).
    pub fn observe(&self, o: &Observation<'_>) -> Flags {
        self.observe_at(o, crate::clock::unix_ms())
    }

    fn observe_at(&self, o: &Observation<'_>, now_ms: u64) -> Flags {
        let c = &o.tenant.anomaly;
        if !c.enabled {
            return Flags::default();
        }
        let mut flags = Flags::default();
        if o.verify.is_some_and(VerifyResult::is_bad_token_use) {
            flags.set(AnomalyKind::BadTokenUse);
        }
        // Only tokens that verified carry per-token history; failed ones would let anyone
        // grow the state table with random ids.
        if let (Some(id), Some(VerifyResult::Ok), ts) = (o.token_id, o.verify, &o.tenant.anomaly_state) {
            flags.0 |= Self::observe_token(ts, c, o, id, now_ms).0;
            if c.action == AnomalyAction::Block && !flags.and(Flags(!AnomalyKind::BadTokenUse.bit())).is_empty() {
                self.hold(o.tenant, id);
            }
        }
        for k in flags.kinds() {
            o.tenant.metrics.anomaly(k);
        }
        flags
    }

    /// Run the per-token detectors and fold the score into the tenant's maximum.
    fn observe_token(ts: &TenantStates, c: &AnomalyConf, o: &Observation<'_>, id: &TokenId, now_ms: u64) -> Flags {
        let state = ts
            .tokens
            .get_or_insert_with(id, || Ok::<_, ()>(Arc::default()))
            .unwrap_or_default();
        let obs = Obs {
            ip: o.ip,
            user_agent: o.user_agent,
            status: o.status,
            bytes_out: o.bytes_out,
            path_hash: if o.status == 404 { hash64(o.path) } else { 0 },
        };
        let Ok(mut st) = state.lock() else {
            return Flags::default();
        };
        let flags = st.observe(c, &obs, now_ms);
        ts.max_score
            .fetch_max(st.last_score.max(0.0).to_bits(), Ordering::Relaxed);
        flags
    }

    /// Quarantine a token (`action: block`).
    fn hold(&self, tenant: &Tenant, id: &TokenId) {
        if let Ok(mut q) = self.quarantine.write() {
            if q.insert((tenant.index, *id)) {
                log::warn!("tenant={} token_id={id} quarantined by anomaly detection", tenant.id);
            }
            self.quarantined.store(q.len(), Ordering::Release);
        }
    }

    /// Publish per-tenant max scores and tracked-token counts; reset the maxima.
    pub fn sweep(&self) {
        for t in self.tenants.load_full().iter() {
            let s = &t.anomaly_state;
            t.metrics
                .anomaly_score
                .set(f64::from_bits(s.max_score.swap(0, Ordering::Relaxed)));
            t.metrics.tracked_tokens.set(s.tokens.len() as i64);
        }
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
