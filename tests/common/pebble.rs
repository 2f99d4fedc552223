//! A real ACME CA for tests: Debian's `pebble` (installed by `scripts/test`) with
//! `pebble-challtestsrv` as its DNS server, so validation really connects to Tessera.
//! Every name resolves to 127.0.0.1 unless a test points it elsewhere (`add_a`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tessera::demo::certs::DemoCa;

use super::*;

/// A running Pebble and its DNS server; both stopped on drop.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    /// The ACME directory URL.
    pub directory: String,
    /// Pebble's management interface (HTTPS, same certificate).
    pub management: String,
    /// challtestsrv's management interface (plain HTTP).
    pub dns_management: String,
    /// PEM of the CA that signed Pebble's HTTPS certificate (`acme.ca_file`).
    pub https_ca_pem: String,
    pub log: std::path::PathBuf,
}

impl Pebble {
    /// Start Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of
    /// 127.0.0.1. `validity`: certificate lifetime in seconds (`None`: Pebble's default).
    pub fn start(dir: &Path, http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let ca = DemoCa::new("pebble https CA").unwrap();
        let leaf = ca.issue(&["localhost"]).unwrap();
        let (cert, key) = (dir.join("pebble.pem"), dir.join("pebble.key"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let (listen, mgmt, dns_port, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let mut conf = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity {
            conf["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let conf_path = dir.join("pebble.json");
        std::fs::write(&conf_path, conf.to_string()).unwrap();
        let log = dir.join("pebble.log");
        let out = std::fs::File::create(&log).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(out.try_clone().unwrap())
            .stderr(out.try_clone().unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&conf_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let p = Pebble {
            pebble,
            dns,
            directory: format!("https://localhost:{listen}/dir"),
            management: format!("https://localhost:{mgmt}"),
            dns_management: format!("http://127.0.0.1:{dns_mgmt}"),
            https_ca_pem: ca.ca_pem(),
            log,
        };
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", dns_mgmt)).is_ok()
        });
        assert!(up.is_some(), "pebble did not start: {}", p.log_text());
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.https_ca_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// The root that signs the certificates Pebble issues (PEM).
    pub fn root_pem(&self) -> String {
        self.client()
            .get(format!("{}/roots/0", self.management))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Point `host`'s A record at `addr` (e.g. an address nothing listens on).
    pub fn add_a(&self, host: &str, addr: &str) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/add-a", self.dns_management))
            .json(&serde_json::json!({"host": host, "addresses": [addr]}))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}
