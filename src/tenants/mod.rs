//! Tenants and the hostname → tenant table.
//!
//! Looked up twice per connection/request: at the TLS handshake (SNI → tenant, see
//! `proxy::HandshakeHook`) and in `request_filter` (Host or `:authority` → tenant, which must be
//! the same tenant, else 421). Lookups are a hash probe for the exact name and one for the
//! parent domain (single-label wildcards): O(1) in the number of tenants, and allocation-free
//! for lower-case names.
//!
//! ## Changes at runtime (`Tenants`)
//!
//! A `TenantTable` is immutable. A change (YAML reload, tenants API: `crate::runtime`) builds a
//! new table and swaps it in atomically (`arc-swap`); nothing is edited in place.
//! - **One snapshot per request.** `request_filter` loads the table once (one atomic load,
//!   no lock, no allocation; `Tenants::load`) and keeps the guard in the proxy's `Ctx`, so
//!   every phase of a request sees the same tenant, headers and peer. A request in flight
//!   during a swap finishes on the table it started with.
//! - **Stable indices.** A tenant id keeps its `index` for the life of the process (the
//!   registry below never reuses one), so what is keyed by index (the handshake's `SniInfo`,
//!   the anomaly quarantine set) means the same tenant in every snapshot. A connection whose
//!   handshake named a tenant that is removed later gets `404` on its next request: the index
//!   is absent from the new table. Metric handles are also kept per id, so a re-added tenant
//!   counts into the same series and the label cap is not consumed twice.
//! - **Unchanged tenants are shared.** Each `Tenant` is an `Arc` with a fingerprint of the
//!   definition it was built from; a rebuild reuses the `Arc` of every tenant whose
//!   fingerprint did not change (with its DNS-refreshed peer and its anomaly history), so a
//!   change to one tenant among 10,000 re-resolves nothing and costs one map rebuild.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use sha2::{Digest, Sha256};

use crate::anomaly::TenantStates;
use crate::config::{AnomalyConf, AuthMode, TenantConf, UpstreamTimeouts};
use crate::host::HostMap;
use crate::metrics::TenantMetrics;

/// One tenant with everything the request path needs, prepared at load time.
pub struct Tenant {
    pub index: usize,
    pub id: Arc<str>,
    /// `token::tenant_tag(id)`, computed once: compared with every Part A.
    pub tag: [u8; 4],
    /// Template cloned for every request in `upstream_peer`; swapped by `DnsRefresher` when
    /// the upstream's address changes.
    pub peer: ArcSwap<HttpPeer>,
    /// Upstream host and port, for re-resolution.
    pub upstream_host_port: (String, u16),
    /// `Host` sent upstream.
    pub upstream_host: HeaderValue,
    pub upstream_url: String,
    pub tenant_header: HeaderName,
    pub tenant_value: HeaderValue,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `tenant_header` and `headers` prepared once for the upstream request (`UpstreamName`).
    pub tenant_header_wire: UpstreamName,
    pub headers_wire: Vec<(UpstreamName, HeaderValue)>,
    pub auth: AuthMode,
    pub anomaly: AnomalyConf,
    pub metrics: TenantMetrics,
    /// Per-token anomaly detector state (`crate::anomaly`), kept across swaps while
    /// `anomaly.max_tracked_tokens` stays the same.
    pub anomaly_state: Arc<TenantStates>,
    /// The OAuth token swap surface, if the tenant has an `oauth:` section.
    pub oauth: Option<OAuthSurface>,
    /// SHA-256 of the definition this tenant was built from (`fingerprint`).
    fingerprint: [u8; 32],
}

/// Which of a tenant's surfaces a hostname belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// API traffic: Part A required (`auth: split_token`).
    Api,
    /// The OAuth flow's hostnames (`oauth.hostnames`): proxied to the authorization server,
    /// token and revocation endpoints intercepted (`crate::oauth`).
    OAuth,
}

/// A tenant's OAuth surface, prepared at load time.
pub struct OAuthSurface {
    /// The authorization server; swapped by `DnsRefresher` like the API peer.
    pub peer: ArcSwap<HttpPeer>,
    pub upstream_host_port: (String, u16),
    /// `Host` sent to the authorization server.
    pub upstream_host: HeaderValue,
    pub upstream_url: String,
    /// Lower-case `scheme://authority` forms the authorization server writes in absolute URLs
    /// (with and without an explicit default port); rewritten to the vanity hostname in
    /// `Location` headers and discovery documents.
    pub upstream_origins: Vec<String>,
    pub token_path: String,
    pub revocation_path: Option<String>,
    pub discovery: bool,
    pub max_token_response_bytes: usize,
    pub refresh_token_ttl: Option<Duration>,
}

fn origins(u: &crate::config::UpstreamConf) -> Vec<String> {
    let scheme = if u.tls { "https" } else { "http" };
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    let mut v = vec![format!("{scheme}://{}", u.authority).to_ascii_lowercase()];
    let explicit = format!("{scheme}://{host}:{}", u.port).to_ascii_lowercase();
    if !v.contains(&explicit) {
        v.push(explicit);
    }
    v
}

/// The Pingora peer for an upstream: timeouts, ALPN, trust. `group_key` keeps pools apart
/// (Pingora's pool key ignores `options.ca`).
fn build_peer(
    addr: SocketAddr,
    up: &crate::config::UpstreamConf,
    ca: Option<&Vec<Vec<u8>>>,
    timeouts: &UpstreamTimeouts,
    group_key: u64,
) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.total_connection_timeout = Some(timeouts.connect * 2);
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.write);
    peer.options.idle_timeout = Some(timeouts.idle);
    if up.tls {
        peer.options.set_http_version(2, 1);
    }
    peer.group_key = group_key;
    if let Some(ders) = ca {
        let wrapped: Vec<pingora::utils::tls::WrappedX509> = ders
            .iter()
            .map(|d| pingora::utils::tls::WrappedX509::new(d.clone(), pingora::utils::tls::parse_x509))
            .collect();
        peer.options.ca = Some(Arc::from(wrapped.into_boxed_slice()));
    }
    peer
}

/// All tenants and their hostnames: one immutable snapshot (see the module doc).
pub struct TenantTable {
    /// By stable index; `None` for an index whose tenant is not in this snapshot.
    tenants: Vec<Option<Arc<Tenant>>>,
    hosts: HostMap<(usize, Surface)>,
    /// Removed from every request before Tessera sets its own headers: the tenant header
    /// names of all tenants and `strip_headers`.
    strip: Vec<HeaderName>,
    by_id: HashMap<Arc<str>, usize>,
    live: usize,
    /// The upstream timeouts the tenants were built with (a change rebuilds them all).
    timeouts: UpstreamTimeouts,
}

/// Why a tenant could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The tenant id cannot be a header value (config validation prevents this).
    #[error("tenant id {0:?} is not a valid header value")]
    BadId(String),
    /// The upstream host cannot be a header value.
    #[error("upstream authority {0:?} is not a valid Host header")]
    BadAuthority(String),
    /// The upstream host does not resolve.
    #[error("tenant {tenant}: upstream {url}: cannot resolve {host}: {reason}")]
    Resolve {
        tenant: String,
        url: String,
        host: String,
        reason: String,
    },
}

/// A header name Tessera sets on upstream requests, prepared once in the two forms the proxy
/// writes it through (`proxy::headers::Upstream`): the `HeaderName` for a plain header map (a
/// clone is a reference count), and the bytes Pingora's case-keeping `insert_header` takes (as
/// Pingora itself would spell the name: `insert_header(&HeaderName, ..)` copies and re-parses
/// the name on every request).
#[derive(Debug, Clone)]
pub struct UpstreamName {
    pub name: HeaderName,
    pub wire: Bytes,
}

impl UpstreamName {
    pub fn new(name: &HeaderName) -> UpstreamName {
        use pingora::http::IntoCaseHeaderName;
        UpstreamName {
            name: name.clone(),
            wire: Bytes::copy_from_slice(name.clone().into_case_header_name().as_slice()),
        }
    }

    /// A fixed name: `lower` is the lower-case name, `wire` how it is spelled on an HTTP/1
    /// upstream request that keeps header case.
    pub const fn from_static(lower: &'static str, wire: &'static str) -> UpstreamName {
        UpstreamName {
            name: HeaderName::from_static(lower),
            wire: Bytes::from_static(wire.as_bytes()),
        }
    }
}

/// First address of `host:port` (blocking DNS; start-up and the refresher only).
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())
}

fn oauth_surface(
    c: &TenantConf,
    o: &crate::config::OAuthConf,
    timeouts: &UpstreamTimeouts,
    group_key: u64,
    prev: Option<&OAuthSurface>,
) -> Result<OAuthSurface, TenantError> {
    let addr = upstream_addr(&c.id, &o.upstream, prev.map(|p| (&p.upstream_host_port, &p.peer)))?;
    let peer = build_peer(addr, &o.upstream, o.upstream_ca.as_ref(), timeouts, group_key);
    Ok(OAuthSurface {
        peer: ArcSwap::from_pointee(peer),
        upstream_host_port: (o.upstream.host.clone(), o.upstream.port),
        upstream_host: HeaderValue::from_str(&o.upstream.authority)
            .map_err(|_| TenantError::BadAuthority(o.upstream.authority.clone()))?,
        upstream_url: o.upstream.url.clone(),
        upstream_origins: origins(&o.upstream),
        token_path: o.token_path.clone(),
        revocation_path: o.revocation_path.clone(),
        discovery: o.discovery,
        max_token_response_bytes: o.max_token_response_bytes,
        refresh_token_ttl: o.refresh_token_ttl,
    })
}

impl TenantTable {
    /// A table for `confs` with a fresh registry (indices 0..n in order): start-up of tools,
    /// tests and benches. A server uses `Tenants`, which keeps indices across rebuilds.
    pub fn build(
        confs: &[TenantConf],
        timeouts: &UpstreamTimeouts,
        strip_headers: &[HeaderName],
    ) -> Result<TenantTable, TenantError> {
        let confs: Vec<_> = confs.iter().map(|c| (c, fingerprint(c))).collect();
        Self::build_with(&confs, timeouts, strip_headers, None, &mut Registry::default())
    }

    /// Prepare every tenant: peers, header values, metric handles, and the list of header
    /// names stripped from client requests (`strip_headers` plus every tenant header name).
    /// Tenants of `prev` whose fingerprint (given with each conf, see `fingerprint`) and
    /// upstream timeouts are unchanged are shared, not rebuilt.
    fn build_with(
        confs: &[(&TenantConf, [u8; 32])],
        timeouts: &UpstreamTimeouts,
        strip_headers: &[HeaderName],
        prev: Option<&TenantTable>,
        registry: &mut Registry,
    ) -> Result<TenantTable, TenantError> {
        let mut strip: Vec<HeaderName> = strip_headers.to_vec();
        for (c, _) in confs {
            if !strip.contains(&c.tenant_header) {
                strip.push(c.tenant_header.clone());
            }
        }
        let mut t = TenantTable {
            tenants: Vec::new(),
            hosts: HostMap::default(),
            strip,
            by_id: HashMap::with_capacity(confs.len()),
            live: 0,
            timeouts: *timeouts,
        };
        let same_timeouts = prev.is_some_and(|p| p.timeouts == *timeouts);
        for &(c, fingerprint) in confs {
            let (index, metrics) = registry.slot(&c.id);
            let old = prev.and_then(|p| p.by_id.get(&*c.id)).and_then(|&i| prev?.get_arc(i));
            let tenant = match old {
                Some(o) if same_timeouts && o.fingerprint == fingerprint => o.clone(),
                _ => Arc::new(Tenant::prepare(
                    c,
                    index,
                    metrics,
                    timeouts,
                    fingerprint,
                    old.map(|o| &**o),
                )?),
            };
            if t.tenants.len() <= index {
                t.tenants.resize(index + 1, None);
            }
            for h in &c.hostnames {
                t.hosts.insert(h, (index, Surface::Api));
            }
            for h in c.oauth.iter().flat_map(|o| o.hostnames.iter()) {
                t.hosts.insert(h, (index, Surface::OAuth));
            }
            t.by_id.insert(c.id.clone(), index);
            if t.tenants[index].replace(tenant).is_none() {
                t.live += 1;
            }
        }
        Ok(t)
    }

    /// Tenant index serving `host` (any case, optional port).
    pub fn lookup(&self, host: &str) -> Option<usize> {
        self.hosts.lookup(host).map(|r| r.0)
    }

    /// Tenant index and surface serving `host`.
    pub fn lookup_surface(&self, host: &str) -> Option<(usize, Surface)> {
        self.hosts.lookup(host).copied()
    }

    /// Header names removed from every client request (see `build`).
    pub fn stripped_headers(&self) -> &[HeaderName] {
        &self.strip
    }

    /// Why `name` cannot carry `tenant`'s credential, if it cannot: a name Tessera owns
    /// (`reserved`), a stripped name (every tenant header included), or one of the tenant's
    /// configured `headers`. Checked at mint/rotate and again for every reconstructed record,
    /// so a record stored before a config change cannot override Tessera's headers either.
    pub fn credential_conflict(&self, tenant: &Tenant, name: &HeaderName) -> Option<&'static str> {
        if let Some(r) = crate::reserved::reserved(name) {
            return Some(r.reason());
        }
        if self.strip.contains(name) {
            return Some("a tenant header or a header in strip_headers");
        }
        if tenant.headers.iter().any(|(n, _)| n == name) {
            return Some("one of the tenant's configured headers");
        }
        None
    }

    pub fn get(&self, index: usize) -> Option<&Tenant> {
        self.tenants.get(index)?.as_deref()
    }

    /// The shared handle of a tenant (kept by a rebuild that does not change it).
    pub fn get_arc(&self, index: usize) -> Option<&Arc<Tenant>> {
        self.tenants.get(index)?.as_ref()
    }

    pub fn by_id(&self, id: &str) -> Option<&Tenant> {
        self.by_id.get(id).and_then(|&i| self.get(i))
    }

    /// Every tenant of this snapshot, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.iter().flatten().map(|t| &**t)
    }

    /// Number of tenants in this snapshot.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// Stable index and metric handles per tenant id, for the life of the process. Grow-only:
/// bounded by the number of distinct tenant ids ever configured.
#[derive(Default)]
struct Registry {
    slots: HashMap<Arc<str>, (usize, TenantMetrics)>,
}

impl Registry {
    fn slot(&mut self, id: &Arc<str>) -> (usize, TenantMetrics) {
        let next = self.slots.len();
        self.slots
            .entry(id.clone())
            .or_insert_with(|| (next, crate::metrics::global().tenant(id)))
            .clone()
    }
}

/// What a table swap changed, for the log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swap {
    pub added: Vec<Arc<str>>,
    pub removed: Vec<Arc<str>>,
    pub changed: Vec<Arc<str>>,
}

impl Swap {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for Swap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[Arc<str>]| v.iter().map(|s| &**s).collect::<Vec<_>>().join(",");
        write!(
            f,
            "added [{}] removed [{}] changed [{}]",
            list(&self.added),
            list(&self.removed),
            list(&self.changed)
        )
    }
}

/// A loaded snapshot: keep it for the whole request (see the module doc).
pub type Snapshot = arc_swap::Guard<Arc<TenantTable>>;

/// The live tenant table, swapped whole on a change.
pub struct Tenants {
    current: ArcSwap<TenantTable>,
    /// Writers only, one change at a time; never touched by a request.
    registry: Mutex<Registry>,
}

impl Tenants {
    /// The live table for `confs`.
    pub fn new<C: Borrow<TenantConf>>(
        confs: &[C],
        timeouts: &UpstreamTimeouts,
        strip_headers: &[HeaderName],
    ) -> Result<Arc<Tenants>, TenantError> {
        let mut registry = Registry::default();
        let confs: Vec<_> = confs.iter().map(|c| (c.borrow(), fingerprint(c.borrow()))).collect();
        let table = TenantTable::build_with(&confs, timeouts, strip_headers, None, &mut registry)?;
        Ok(Arc::new(Tenants {
            current: ArcSwap::from_pointee(table),
            registry: Mutex::new(registry),
        }))
    }

    /// The current snapshot: one atomic load, no lock, no allocation.
    pub fn load(&self) -> Snapshot {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc` (background tasks that await while holding it).
    pub fn load_full(&self) -> Arc<TenantTable> {
        self.current.load_full()
    }

    /// Build a table for `confs` and swap it in. Unchanged tenants are shared; a new or
    /// changed one is prepared (its upstream resolved if its address is not already known:
    /// blocking DNS, so call this off the async threads). On error nothing changes.
    pub fn replace<C: Borrow<TenantConf>>(
        &self,
        confs: &[C],
        timeouts: &UpstreamTimeouts,
        strip_headers: &[HeaderName],
    ) -> Result<Swap, TenantError> {
        let confs: Vec<_> = confs.iter().map(|c| (c.borrow(), fingerprint(c.borrow()))).collect();
        self.replace_fingerprinted(&confs, timeouts, strip_headers)
    }

    /// `replace` with each conf's `fingerprint` already computed (the runtime keeps them with
    /// the stored tenants: hashing every tenant's definition on every change was a fifth of an
    /// instance's CPU during tenant changes at a few thousand tenants).
    pub fn replace_fingerprinted(
        &self,
        confs: &[(&TenantConf, [u8; 32])],
        timeouts: &UpstreamTimeouts,
        strip_headers: &[HeaderName],
    ) -> Result<Swap, TenantError> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.current.load_full();
        let next = TenantTable::build_with(confs, timeouts, strip_headers, Some(&prev), &mut registry)?;
        let mut swap = Swap::default();
        for t in next.tenants.iter().flatten() {
            match prev.get_arc(t.index) {
                None => swap.added.push(t.id.clone()),
                Some(p) if !Arc::ptr_eq(p, t) => swap.changed.push(t.id.clone()),
                Some(_) => {}
            }
        }
        for t in prev.iter() {
            if next.get(t.index).is_none() {
                swap.removed.push(t.id.clone());
            }
        }
        self.current.store(Arc::new(next));
        Ok(swap)
    }
}

/// SHA-256 of everything a `Tenant` is built from but the upstream timeouts (compared
/// separately). `Debug` of the validated config covers every field (certificates by path
/// only: their content is the certificate store's, see `crate::tls`); the hash never leaves
/// the process. A `TenantConf` is not changed after validation, so a fingerprint computed
/// once stays valid for it.
pub fn fingerprint(c: &TenantConf) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("{c:?}").as_bytes());
    h.finalize().into()
}

/// The address of `up`: the one `prev` (host and port, peer) already resolved if it is the
/// same host and port (kept fresh by `DnsRefresher`), else resolved now (blocking DNS).
fn upstream_addr(
    tenant: &str,
    up: &crate::config::UpstreamConf,
    prev: Option<(&(String, u16), &ArcSwap<HttpPeer>)>,
) -> Result<SocketAddr, TenantError> {
    let known = prev
        .filter(|(hp, _)| hp.0 == up.host && hp.1 == up.port)
        .and_then(|(_, peer)| peer.load()._address.as_inet().copied());
    match known {
        Some(a) => Ok(a),
        None => resolve(&up.host, up.port).map_err(|reason| TenantError::Resolve {
            tenant: tenant.to_string(),
            url: up.url.clone(),
            host: up.host.clone(),
            reason,
        }),
    }
}

impl Tenant {
    /// Prepare one tenant. `prev` (the same id in the previous table) lends its resolved
    /// addresses and its anomaly state when they still apply.
    fn prepare(
        c: &TenantConf,
        index: usize,
        metrics: TenantMetrics,
        timeouts: &UpstreamTimeouts,
        fingerprint: [u8; 32],
        prev: Option<&Tenant>,
    ) -> Result<Tenant, TenantError> {
        let addr = upstream_addr(&c.id, &c.upstream, prev.map(|p| (&p.upstream_host_port, &p.peer)))?;
        // Group keys keep upstream pools apart per tenant and per definition (Pingora's pool
        // key ignores `options.ca`, so a changed `upstream_ca` must not reuse old connections).
        let fp_key = |o: usize| u64::from_le_bytes(fingerprint[o..o + 8].try_into().unwrap_or([0; 8]));
        let peer = build_peer(
            addr,
            &c.upstream,
            c.upstream_ca.as_ref(),
            timeouts,
            fp_key(0) ^ index as u64,
        );
        let oauth = match &c.oauth {
            Some(o) => Some(oauth_surface(
                c,
                o,
                timeouts,
                fp_key(8) ^ index as u64,
                prev.and_then(|p| p.oauth.as_ref()),
            )?),
            None => None,
        };
        let anomaly_state = match prev {
            Some(p) if p.anomaly.max_tracked_tokens == c.anomaly.max_tracked_tokens => p.anomaly_state.clone(),
            _ => Arc::new(TenantStates::new(c.anomaly.max_tracked_tokens)),
        };
        Ok(Tenant {
            index,
            id: c.id.clone(),
            tag: crate::token::tenant_tag(&c.id),
            peer: ArcSwap::from_pointee(peer),
            upstream_host_port: (c.upstream.host.clone(), c.upstream.port),
            upstream_host: HeaderValue::from_str(&c.upstream.authority)
                .map_err(|_| TenantError::BadAuthority(c.upstream.authority.clone()))?,
            upstream_url: c.upstream.url.clone(),
            tenant_header: c.tenant_header.clone(),
            tenant_value: HeaderValue::from_str(&c.id).map_err(|_| TenantError::BadId(c.id.to_string()))?,
            headers: c.headers.clone(),
            tenant_header_wire: UpstreamName::new(&c.tenant_header),
            headers_wire: c
                .headers
                .iter()
                .map(|(n, v)| (UpstreamName::new(n), v.clone()))
                .collect(),
            auth: c.auth,
            anomaly: c.anomaly.clone(),
            metrics,
            anomaly_state,
            oauth,
            fingerprint,
        })
    }
}

/// Background service: re-resolve upstream hostnames every `interval` and swap the peer when
/// the address changed, so an upstream behind changing DNS keeps working without a restart.
pub struct DnsRefresher {
    pub tenants: Arc<Tenants>,
    pub interval: Duration,
}

#[async_trait]
impl BackgroundService for DnsRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let table = self.tenants.load_full();
            for t in table.iter() {
                refresh(&t.id, &t.upstream_url, &t.upstream_host_port, &t.peer).await;
                if let Some(o) = &t.oauth {
                    refresh(&t.id, &o.upstream_url, &o.upstream_host_port, &o.peer).await;
                }
            }
        }
    }
}

/// Re-resolve one upstream and swap its peer if the address changed.
async fn refresh(tenant: &str, url: &str, host_port: &(String, u16), peer: &ArcSwap<HttpPeer>) {
    let (host, port) = host_port.clone();
    if host.parse::<IpAddr>().is_ok() {
        return;
    }
    let res = tokio::task::spawn_blocking(move || resolve(&host, port)).await;
    match res {
        Ok(Ok(addr)) => {
            let cur = peer.load();
            if cur._address.as_inet() != Some(&addr) {
                let mut next = HttpPeer::new(addr, cur.is_tls(), cur.sni.clone());
                next.options = cur.options.clone();
                next.group_key = cur.group_key;
                log::info!("tenant={tenant} upstream {url} now resolves to {addr}");
                peer.store(Arc::new(next));
            }
        }
        Ok(Err(e)) => log::warn!("tenant={tenant} upstream {url}: DNS refresh failed, keeping the old address: {e}"),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A config with `tenants` (id, hostname, upstream port) sharing one certificate.
    fn config(dir: &std::path::Path, tenants: &[(&str, &str, u16)]) -> Config {
        let ca = crate::demo::certs::DemoCa::new("t").unwrap();
        let names: Vec<&str> = ["a.example", "b.example", "c.example"].to_vec();
        let (cert, key) = ca.issue(&names).unwrap().write(dir, "abc").unwrap();
        let mut yaml = format!(
            "listen: {{ https: \"127.0.0.1:0\" }}\nstore: {{ kind: embedded, path: \"{}\" }}\ntenants:\n",
            dir.join("s.redb").display()
        );
        for (id, host, port) in tenants {
            yaml.push_str(&format!(
                "  - {{ id: {id}, hostnames: [{host}], cert: \"{}\", key: \"{}\", upstream: \"http://127.0.0.1:{port}\" }}\n",
                cert.display(),
                key.display()
            ));
        }
        Config::from_yaml(&yaml, &dir.join("t.yaml")).unwrap()
    }

    #[test]
    fn indices_are_stable_unchanged_tenants_shared_removed_ones_gone() {
        let dir = tempfile::tempdir().unwrap();
        let one = config(dir.path(), &[("a", "a.example", 1), ("b", "b.example", 2)]);
        let live = Tenants::new(&one.tenants, &one.upstream, &one.strip_headers).unwrap();
        let before = live.load_full();
        let (a, b) = (before.lookup("a.example").unwrap(), before.lookup("b.example").unwrap());
        assert_ne!(a, b);

        // b removed, c added, a unchanged.
        let two = config(dir.path(), &[("c", "c.example", 3), ("a", "a.example", 1)]);
        let swap = live.replace(&two.tenants, &two.upstream, &two.strip_headers).unwrap();
        assert_eq!(swap.added, vec![Arc::from("c")]);
        assert_eq!(swap.removed, vec![Arc::from("b")]);
        assert!(swap.changed.is_empty(), "{swap}");
        let after = live.load_full();
        assert_eq!(after.len(), 2);
        assert_eq!(after.lookup("a.example"), Some(a), "a kept its index");
        assert!(
            Arc::ptr_eq(before.get_arc(a).unwrap(), after.get_arc(a).unwrap()),
            "a was rebuilt"
        );
        assert!(after.get(b).is_none() && after.lookup("b.example").is_none() && after.by_id("b").is_none());
        let c = after.lookup("c.example").unwrap();
        assert!(c != a && c != b, "c reused an index: {c}");
        // The old snapshot is untouched (requests in flight finish on it).
        assert_eq!(before.by_id("b").map(|t| t.index), Some(b));

        // b comes back with another upstream: its old index, a new definition; a changed.
        let three = config(dir.path(), &[("a", "a.example", 9), ("b", "b.example", 2)]);
        let swap = live
            .replace(&three.tenants, &three.upstream, &three.strip_headers)
            .unwrap();
        assert_eq!(
            (swap.added, swap.changed, swap.removed),
            (vec![Arc::from("b")], vec![Arc::from("a")], vec![Arc::from("c")])
        );
        let now = live.load();
        assert_eq!(now.lookup("b.example"), Some(b));
        let ta = now.by_id("a").unwrap();
        assert_eq!(ta.index, a);
        assert_eq!(ta.peer.load()._address.as_inet().map(|s| s.port()), Some(9));
        // Metric handles are the same series: a count through the old handle shows in the new.
        before.get(a).unwrap().metrics.bytes_sent.inc_by(5);
        assert_eq!(
            ta.metrics.bytes_sent.get(),
            before.get(a).unwrap().metrics.bytes_sent.get()
        );
        // Anomaly history survives a change that keeps the cap.
        assert!(Arc::ptr_eq(&ta.anomaly_state, &before.get(a).unwrap().anomaly_state));
    }

    #[test]
    fn a_change_of_upstream_timeouts_rebuilds_every_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let one = config(dir.path(), &[("a", "a.example", 1), ("b", "b.example", 2)]);
        let live = Tenants::new(&one.tenants, &one.upstream, &one.strip_headers).unwrap();
        let before = live.load_full();
        // Same tenants, same fingerprints: shared.
        let swap = live.replace(&one.tenants, &one.upstream, &one.strip_headers).unwrap();
        assert!(swap.is_empty(), "{swap}");
        // Only the timeouts change (they are not in the fingerprint): both rebuilt with them.
        let mut timeouts = one.upstream;
        timeouts.read = Duration::from_secs(7);
        let swap = live.replace(&one.tenants, &timeouts, &one.strip_headers).unwrap();
        assert_eq!(swap.changed.len(), 2, "{swap}");
        let after = live.load();
        for id in ["a", "b"] {
            let t = after.by_id(id).unwrap();
            assert_eq!(t.peer.load().options.read_timeout, Some(Duration::from_secs(7)));
            assert!(!Arc::ptr_eq(
                before.get_arc(t.index).unwrap(),
                after.get_arc(t.index).unwrap()
            ));
        }
    }
}
