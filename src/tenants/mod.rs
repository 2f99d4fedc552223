//! Tenants and the hostname → tenant table.
//!
//! Built once at start-up from the config. Looked up twice per connection/request: at the TLS
//! handshake (SNI → tenant, see `proxy::HandshakeHook`) and in `request_filter` (Host or
//! `:authority` → tenant, which must be the same tenant, else 421). Lookups are a hash probe
//! for the exact name and one for the parent domain (single-label wildcards): O(1) in the
//! number of tenants, and allocation-free for lower-case names.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;

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
    /// `tenant_header` and `headers` with their names as Pingora writes them, prepared once:
    /// `insert_header(&HeaderName, ..)` copies the name on every request.
    pub tenant_header_wire: Bytes,
    pub headers_wire: Vec<(Bytes, HeaderValue)>,
    pub auth: AuthMode,
    pub anomaly: AnomalyConf,
    pub metrics: TenantMetrics,
}

/// All tenants and their hostnames.
pub struct TenantTable {
    tenants: Vec<Tenant>,
    hosts: HostMap<usize>,
    /// Removed from every request before Tessera sets its own headers: the tenant header
    /// names of all tenants and `strip_headers`.
    strip: Vec<HeaderName>,
    by_id: HashMap<Arc<str>, usize>,
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

/// A header name as Pingora's `insert_header` would write it (its own case rules).
fn wire_name(name: &HeaderName) -> Bytes {
    use pingora::http::IntoCaseHeaderName;
    Bytes::copy_from_slice(name.clone().into_case_header_name().as_slice())
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

impl TenantTable {
    /// Prepare every tenant: peers, header values, metric handles, and the list of header
    /// names stripped from client requests (`strip_headers` plus every tenant header name).
    pub fn build(
        confs: &[TenantConf],
        timeouts: &UpstreamTimeouts,
        strip_headers: &[HeaderName],
    ) -> Result<TenantTable, TenantError> {
        let mut strip: Vec<HeaderName> = strip_headers.to_vec();
        for c in confs {
            if !strip.contains(&c.tenant_header) {
                strip.push(c.tenant_header.clone());
            }
        }
        let mut t = TenantTable {
            tenants: Vec::with_capacity(confs.len()),
            hosts: HostMap::default(),
            strip,
            by_id: HashMap::new(),
        };
        for (index, c) in confs.iter().enumerate() {
            let addr = resolve(&c.upstream.host, c.upstream.port).map_err(|reason| TenantError::Resolve {
                tenant: c.id.to_string(),
                url: c.upstream.url.clone(),
                host: c.upstream.host.clone(),
                reason,
            })?;
            let mut peer = HttpPeer::new(addr, c.upstream.tls, c.upstream.host.clone());
            peer.options.connection_timeout = Some(timeouts.connect);
            peer.options.total_connection_timeout = Some(timeouts.connect * 2);
            peer.options.read_timeout = Some(timeouts.read);
            peer.options.write_timeout = Some(timeouts.write);
            peer.options.idle_timeout = Some(timeouts.idle);
            if c.upstream.tls {
                peer.options.set_http_version(2, 1);
            }
            // Pingora's pool key ignores `options.ca`; the group key keeps two tenants that
            // share an upstream address but trust different CAs in separate pools.
            peer.group_key = index as u64 + 1;
            if let Some(ders) = &c.upstream_ca {
                let wrapped: Vec<pingora::utils::tls::WrappedX509> = ders
                    .iter()
                    .map(|d| pingora::utils::tls::WrappedX509::new(d.clone(), pingora::utils::tls::parse_x509))
                    .collect();
                peer.options.ca = Some(Arc::from(wrapped.into_boxed_slice()));
            }
            let tenant = Tenant {
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
                tenant_header_wire: wire_name(&c.tenant_header),
                headers_wire: c.headers.iter().map(|(n, v)| (wire_name(n), v.clone())).collect(),
                auth: c.auth,
                anomaly: c.anomaly.clone(),
                metrics: crate::metrics::global().tenant(&c.id),
            };
            for h in &c.hostnames {
                t.hosts.insert(h, index);
            }
            t.by_id.insert(c.id.clone(), index);
            t.tenants.push(tenant);
        }
        Ok(t)
    }

    /// Tenant index serving `host` (any case, optional port).
    pub fn lookup(&self, host: &str) -> Option<usize> {
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
        self.tenants.get(index)
    }

    pub fn by_id(&self, id: &str) -> Option<&Tenant> {
        self.by_id.get(id).and_then(|&i| self.tenants.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.iter()
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

/// Background service: re-resolve upstream hostnames every `interval` and swap the peer when
/// the address changed, so an upstream behind changing DNS keeps working without a restart.
pub struct DnsRefresher {
    pub tenants: Arc<TenantTable>,
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
            for t in self.tenants.iter() {
                let (host, port) = t.upstream_host_port.clone();
                if host.parse::<IpAddr>().is_ok() {
                    continue;
                }
                let res = tokio::task::spawn_blocking(move || resolve(&host, port)).await;
                match res {
                    Ok(Ok(addr)) => {
                        let cur = t.peer.load();
                        if cur._address.as_inet() != Some(&addr) {
                            let mut next = HttpPeer::new(addr, cur.is_tls(), cur.sni.clone());
                            next.options = cur.options.clone();
                            next.group_key = cur.group_key;
                            log::info!("tenant={} upstream {} now resolves to {addr}", t.id, t.upstream_url);
                            t.peer.store(Arc::new(next));
                        }
                    }
                    Ok(Err(e)) => log::warn!(
                        "tenant={} upstream {}: DNS refresh failed, keeping the old address: {e}",
                        t.id,
                        t.upstream_url
                    ),
                    Err(_) => {}
                }
            }
        }
    }
}
