//! Test tenants, certificates from a test CA, and the YAML config an instance starts from;
//! the echo upstreams.

use std::net::SocketAddr;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tessera::demo::certs::{DemoCa, Leaf};

use super::*;

/// The echo upstream on 127.0.0.1:0 (its own thread and runtime).
pub fn echo_upstream() -> SocketAddr {
    tessera::demo::echo::spawn_thread("127.0.0.1:0".parse().unwrap(), None).unwrap()
}

/// An HTTPS echo upstream with a certificate for `names` from `ca`.
pub fn echo_upstream_tls(ca: &DemoCa, names: &[&str]) -> SocketAddr {
    let leaf = ca.issue(names).unwrap();
    let acc = tessera::demo::echo::tls_acceptor(&leaf.cert_pem, &leaf.key_pem).unwrap();
    tessera::demo::echo::spawn_thread("127.0.0.1:0".parse().unwrap(), Some(acc)).unwrap()
}

/// A tenant to put in the config.
#[derive(Clone)]
pub struct TenantSpec {
    pub id: String,
    pub hosts: Vec<String>,
    pub upstream: String,
    /// Extra YAML lines (already indented by 4 spaces), e.g. `    tenant_header: X-Amz-Tenant-Id`.
    pub extra: String,
    /// Names the certificate covers (default: `hosts`).
    pub cert_names: Option<Vec<String>>,
}

impl TenantSpec {
    pub fn new(id: &str, hosts: &[&str], upstream: SocketAddr) -> TenantSpec {
        TenantSpec {
            id: id.into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            upstream: format!("http://{upstream}"),
            extra: String::new(),
            cert_names: None,
        }
    }

    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }
}

/// Everything needed to write a config and start instances from it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub ca: DemoCa,
    pub ca_pem: String,
    pub tenants: Vec<TenantSpec>,
    /// `store:` YAML value.
    pub store: String,
    /// Extra top-level YAML.
    pub extra: String,
    /// `upstream:` YAML value.
    pub upstream: String,
    pub admin_token: String,
    pub tenant_admin_tokens: Vec<(String, String)>,
    pub keyring: PathBuf,
}

pub fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Setup {
    pub fn new(tenants: Vec<TenantSpec>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = DemoCa::new("test CA").unwrap();
        let ca_pem = ca.ca_pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        let keyring = dir.path().join("keyring");
        std::fs::write(&keyring, format!("k1 {}\n", hex::encode(rand_bytes::<32>()))).unwrap();
        let s = Setup {
            store: format!(
                "{{ kind: embedded, path: \"{}\" }}",
                dir.path().join("store.redb").display()
            ),
            dir,
            ca,
            ca_pem,
            tenants,
            extra: String::new(),
            upstream: "{ connect_timeout: 2s, read_timeout: 10s }".into(),
            admin_token: format!("tsa_{}", hex::encode(rand_bytes::<16>())),
            tenant_admin_tokens: vec![],
            keyring,
        };
        for t in &s.tenants {
            s.write_cert(t);
        }
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)write a tenant's certificate files.
    pub fn write_cert(&self, t: &TenantSpec) -> Leaf {
        let names: Vec<&str> = t
            .cert_names
            .as_ref()
            .unwrap_or(&t.hosts)
            .iter()
            .map(String::as_str)
            .collect();
        let leaf = self.ca.issue(&names).unwrap();
        std::fs::write(self.path(&format!("{}.pem", t.id)), &leaf.cert_pem).unwrap();
        std::fs::write(self.path(&format!("{}.key", t.id)), &leaf.key_pem).unwrap();
        leaf
    }

    pub fn redis_store(&mut self, redis: &Redis, extra: &str) {
        self.store = format!("{{ kind: redis, url: \"{}\"{extra} }}", redis.url());
    }

    /// Add an admin token scoped to one tenant; returns it.
    pub fn tenant_admin(&mut self, tenant: &str) -> String {
        let t = format!("tsa_{}", hex::encode(rand_bytes::<16>()));
        self.tenant_admin_tokens.push((tenant.into(), t.clone()));
        t
    }

    /// Render the YAML config for an instance on the given ports.
    pub fn yaml(&self, ports: &Ports, name: &str) -> String {
        let mut y = format!(
            "listen:\n  https: \"127.0.0.1:{}\"\n  http: \"127.0.0.1:{}\"\n  admin: \"127.0.0.1:{}\"\n  metrics: \"127.0.0.1:{}\"\nthreads: 2\ngrace_period: 5s\ntls: {{ reload_interval: 200ms }}\nupstream: {}\nstore: {}\nkeys: {{ file: \"{}\" }}\nsession_log: {{ file: \"{}\" }}\nadmin:\n  tokens:\n    - {{ name: ops, sha256: {}, scope: operator }}\n",
            ports.https,
            ports.http,
            ports.admin,
            ports.metrics,
            self.upstream,
            self.store,
            self.keyring.display(),
            self.path(&format!("{name}.sessions.jsonl")).display(),
            sha_hex(&self.admin_token),
        );
        for (i, (tenant, tok)) in self.tenant_admin_tokens.iter().enumerate() {
            y.push_str(&format!(
                "    - {{ name: secops{i}, sha256: {}, scope: \"tenant:{tenant}\" }}\n",
                sha_hex(tok)
            ));
        }
        y.push_str(&self.extra);
        if !y.ends_with('\n') {
            y.push('\n');
        }
        y.push_str("tenants:\n");
        for t in &self.tenants {
            y.push_str(&format!(
                "  - id: {}\n    hostnames: [{}]\n    cert: \"{}\"\n    key: \"{}\"\n    upstream: \"{}\"\n{}",
                t.id,
                t.hosts
                    .iter()
                    .map(|h| format!("\"{h}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.path(&format!("{}.pem", t.id)).display(),
                self.path(&format!("{}.key", t.id)).display(),
                t.upstream,
                t.extra
            ));
        }
        y
    }

    /// Start one instance.
    pub fn start(&self, name: &str) -> Tessera {
        self.start_with_env(name, &[])
    }

    pub fn start_with_env(&self, name: &str, env: &[(&str, &str)]) -> Tessera {
        let ports = Ports::new();
        let yaml = self.yaml(&ports, name);
        self.start_yaml(name, ports, &yaml, env)
    }

    /// Start one instance from YAML the test rendered (usually `yaml()` edited) on `ports`;
    /// logs and session records go to `<name>.log` and `<name>.sessions.jsonl`.
    pub fn start_yaml(&self, name: &str, ports: Ports, yaml: &str, env: &[(&str, &str)]) -> Tessera {
        let cfg = self.path(&format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        Tessera::spawn(
            cfg,
            ports,
            self.path(&format!("{name}.log")),
            self.path(&format!("{name}.sessions.jsonl")),
            self.ca_pem.clone(),
            self.admin_token.clone(),
            env,
        )
    }
}

pub fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// The four listeners of one instance.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
    pub metrics: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            https: free_port(),
            http: free_port(),
            admin: free_port(),
            metrics: free_port(),
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::new()
    }
}

/// An HTTPS upstream that speaks only HTTP/2 (ALPN `h2`), with a certificate for `names` from
/// `ca`. Answers every request `200` with JSON `{"method","path","headers","body_len","proto":"h2"}`.
pub fn echo_upstream_h2(ca: &DemoCa, names: &[&str]) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let leaf = ca.issue(names).unwrap();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    pingora::tls::install_default_crypto_provider();
    let mut cfg = pingora::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut conn) = h2::server::handshake(tls).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            let (parts, mut body) = req.into_parts();
                            let mut body_len = 0;
                            while let Some(Ok(chunk)) = body.data().await {
                                body_len += chunk.len();
                                let _ = body.flow_control().release_capacity(chunk.len());
                            }
                            let headers: serde_json::Map<String, serde_json::Value> = parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                                .collect();
                            let answer = serde_json::json!({
                                "method": parts.method.as_str(),
                                "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                                "authority": parts.uri.authority().map(|a| a.as_str()),
                                "headers": headers,
                                "body_len": body_len,
                                "proto": "h2",
                            });
                            let bytes = serde_json::to_vec(&answer).unwrap();
                            let resp = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/json")
                                .body(())
                                .unwrap();
                            if let Ok(mut send) = respond.send_response(resp, false) {
                                let _ = send.send_data(bytes.into(), true);
                            }
                        });
                    }
                });
            }
        });
    });
    addr
}
