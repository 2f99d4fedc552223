//! Per-tenant request history for the console overview: requests, refusals and anomalies over
//! the last hour and a sparkline of the request rate. A background service (`Sampler`) reads
//! each tenant's running totals (`TenantMetrics::totals`, this instance's counters) once a
//! minute into a ring of 61 samples; the overview subtracts. Not on the request path.
//!
//! Tenants beyond `metrics.tenant_label_cap` share the `_other` counters; the overview says so.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::tenants::Tenants;

/// Minutes kept (one extra sample so a full hour can be subtracted).
const KEEP: usize = 61;
const EVERY: Duration = Duration::from_secs(60);

/// One tenant's numbers for the overview.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Over the last hour (or since start, if this instance is younger).
    pub requests: u64,
    pub refused: u64,
    pub anomalies: u64,
    /// Requests per minute, oldest first; the last point is the current, partial minute.
    pub per_minute: Vec<u64>,
}

/// Samples of every tenant, indexed like the tenant table.
pub struct History {
    tenants: Arc<Tenants>,
    rings: Mutex<Vec<VecDeque<[u64; 3]>>>,
}

impl History {
    pub fn new(tenants: Arc<Tenants>) -> History {
        let rings = vec![VecDeque::with_capacity(KEEP); tenants.load().len()];
        History {
            tenants,
            rings: Mutex::new(rings),
        }
    }

    /// Take one sample of every tenant.
    pub fn sample(&self) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.tenants.load();
        for t in table.iter() {
            // Tenants added at runtime get new (stable) indices.
            if rings.len() <= t.index {
                rings.resize(t.index + 1, VecDeque::new());
            }
            if let Some(r) = rings.get_mut(t.index) {
                if r.len() >= KEEP {
                    r.pop_front();
                }
                r.push_back(t.metrics.totals());
            }
        }
    }

    /// The overview numbers of tenant `index`, with its live totals as the newest point.
    pub fn summary(&self, index: usize) -> Summary {
        let table = self.tenants.load();
        let Some(t) = table.iter().find(|t| t.index == index) else {
            return Summary::default();
        };
        let now = t.metrics.totals();
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let ring = rings.get(index).cloned().unwrap_or_default();
        drop(rings);
        summarize(&ring, now)
    }
}

fn summarize(ring: &VecDeque<[u64; 3]>, now: [u64; 3]) -> Summary {
    let base = ring.front().copied().unwrap_or([0; 3]);
    let mut per_minute: Vec<u64> = ring
        .iter()
        .zip(ring.iter().skip(1))
        .map(|(a, b)| b[0].saturating_sub(a[0]))
        .collect();
    per_minute.push(now[0].saturating_sub(ring.back().map_or(0, |b| b[0])));
    Summary {
        requests: now[0].saturating_sub(base[0]),
        refused: now[1].saturating_sub(base[1]),
        anomalies: now[2].saturating_sub(base[2]),
        per_minute,
    }
}

/// Background service sampling every tenant once a minute (first sample at start).
pub struct Sampler(pub Arc<History>);

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.0.sample(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_subtracts_the_oldest_sample() {
        let ring: VecDeque<[u64; 3]> = [[10, 1, 0], [15, 1, 0], [40, 3, 2]].into_iter().collect();
        let s = summarize(&ring, [41, 3, 2]);
        assert_eq!(s.requests, 31);
        assert_eq!(s.refused, 2);
        assert_eq!(s.anomalies, 2);
        assert_eq!(s.per_minute, vec![5, 25, 1]);
        let s = summarize(&VecDeque::new(), [7, 0, 0]);
        assert_eq!((s.requests, s.per_minute), (7, vec![7]));
    }
}
