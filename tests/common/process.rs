//! A running `tessera serve` child process and the clients that talk to it (admin API,
//! HTTPS with SNI, metrics), plus the check that no secret reached a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A running `tessera serve` child process.
pub struct Tessera {
    pub child: Option<Child>,
    pub ports: Ports,
    pub log: PathBuf,
    pub sessions: PathBuf,
    pub config: PathBuf,
    pub ca_pem: String,
    pub admin_token: String,
    pub admin: reqwest::blocking::Client,
}

impl Tessera {
    pub fn spawn(
        config: PathBuf,
        ports: Ports,
        log: PathBuf,
        sessions: PathBuf,
        ca_pem: String,
        admin_token: String,
        env: &[(&str, &str)],
    ) -> Tessera {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.arg("serve")
            .arg("-c")
            .arg(&config)
            .arg("--upgrade-sock")
            .arg(std::env::temp_dir().join(format!("tessera-test-{}-{n}.sock", std::process::id())))
            .env(
                "RUST_LOG",
                std::env::var("TESSERA_TEST_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tessera");
        let t = Tessera {
            child: Some(child),
            ports,
            log,
            sessions,
            config,
            ca_pem,
            admin_token,
            admin: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        t.wait_listening();
        t
    }

    /// Wait until the admin API answers and the HTTPS port accepts.
    pub fn wait_listening(&self) {
        let ok = eventually(Duration::from_secs(20), || {
            self.admin
                .get(self.admin_url("/healthz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
                && std::net::TcpStream::connect(("127.0.0.1", self.ports.https)).is_ok()
        });
        if ok.is_none() {
            panic!("tessera did not start; log:\n{}", self.log_text());
        }
    }

    /// Wait until `/readyz` says ready.
    pub fn wait_ready(&self) {
        let ok = eventually(Duration::from_secs(20), || self.ready());
        assert!(ok.is_some(), "tessera never became ready; log:\n{}", self.log_text());
    }

    pub fn ready(&self) -> bool {
        self.admin
            .get(self.admin_url("/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    /// Call the admin API with the operator token.
    pub fn admin_call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin_call_as(&self.admin_token.clone(), method, path, body)
    }

    pub fn admin_call_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .admin
            .request(method.parse().unwrap(), self.admin_url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().expect("admin request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Mint a token; returns (id, part_a).
    pub fn mint(&self, tenant: &str, upstream_token: &str) -> (String, String) {
        self.mint_labelled(tenant, upstream_token, "test")
    }

    /// Mint a token with a label; returns (id, part_a).
    pub fn mint_labelled(&self, tenant: &str, upstream_token: &str, label: &str) -> (String, String) {
        let (s, v) = self.admin_call(
            "POST",
            &format!("/v1/tenants/{tenant}/tokens"),
            Some(json!({"token": upstream_token, "label": label})),
        );
        assert_eq!(s, 201, "mint failed: {v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["part_a"].as_str().unwrap().to_string(),
        )
    }

    /// A client that resolves `hosts` to this instance's HTTPS port and trusts the test CA.
    pub fn client(&self, hosts: &[&str]) -> reqwest::blocking::Client {
        client_for(&self.ca_pem, self.ports.https, hosts, false)
    }

    /// Status of `GET https://host/r` with `part_a`, 0 if the request failed.
    pub fn status_with(&self, c: &reqwest::blocking::Client, host: &str, part_a: &str) -> u16 {
        c.get(self.url(host, "/r"))
            .bearer_auth(part_a)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.ports.https)
    }

    pub fn metrics(&self) -> String {
        self.admin
            .get(format!("http://127.0.0.1:{}/metrics", self.ports.metrics))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    /// Sum of a metric's samples whose label set contains every `labels` pair.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap()
    }

    /// SIGTERM and wait for exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        signal(c.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success() || st.code().is_none();
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tessera {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Parse the Prometheus text format just enough to sum matching samples.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, lbl) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| lbl.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// A blocking HTTPS client resolving `hosts` to 127.0.0.1:`port`, trusting `ca_pem`.
pub fn client_for(ca_pem: &str, port: u16, hosts: &[&str], http2_only: bool) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(15))
        .use_rustls_tls();
    for h in hosts {
        b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    // HTTP/1.1 unless asked: tests that override Host need it (h2 uses :authority).
    b = if http2_only {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().unwrap()
}

/// Check that none of `secrets` appears in any of `files`.
pub fn assert_not_in_files(files: &[&Path], secrets: &[&str]) {
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for s in secrets {
            assert!(!s.is_empty());
            if let Some(line) = text.lines().find(|l| l.contains(s)) {
                panic!(
                    "secret material found in {}: {}",
                    f.display(),
                    &line[..line.len().min(300)]
                );
            }
        }
    }
}

/// Raw TLS handshake with `sni`; returns the leaf certificate the server presented.
pub fn handshake(port: u16, sni: &str, ca_pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    pingora::tls::install_default_crypto_provider();
    let mut roots = pingora::tls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = pingora::tls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        Ok(conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default())
    })
}
