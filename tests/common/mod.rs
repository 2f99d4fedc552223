//! Test harness: real parts only. Starts a real `redis-server` on a free loopback port, the
//! real `tessera` binary as a child process, and the echo upstream on `127.0.0.1:0`; clients do
//! real TLS handshakes with SNI.
#![allow(dead_code)]

pub mod raw;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tessera::demo::certs::{DemoCa, Leaf};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().unwrap().port()
}

/// Retry `f` until it returns true or `timeout` passes; returns the time it took.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// === Redis ===

/// A private redis-server, stopped by pid on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Keep data across restarts (append-only file in the temp dir).
    persistent: bool,
    /// Extra server arguments (cluster mode, replicaof, …).
    extra: Vec<String>,
    /// Extra `redis-cli` flags (TLS).
    cli_flags: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(false)
    }

    /// A Redis whose data survives `restart` (appendonly, fsync always).
    pub fn start_persistent() -> Redis {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Redis {
        Self::start_on(free_port(), persistent, &[])
    }

    /// Start on `port` with extra server arguments.
    pub fn start_on(port: u16, persistent: bool, extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Redis {
            port,
            child: None,
            dir,
            persistent,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cli_flags: vec![],
        };
        r.restart();
        r
    }

    /// A TLS-only server (`rediss://localhost:<port>`) with the given certificate files.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Redis {
        let port = free_port();
        let path = |p: &Path| p.display().to_string();
        let mut r = Redis {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            persistent: false,
            extra: [
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-auth-clients",
                "no",
                "--tls-cert-file",
                &path(cert),
                "--tls-key-file",
                &path(key),
                "--tls-ca-cert-file",
                &path(ca),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            cli_flags: ["--tls", "--cacert", &path(ca), "--sni", "localhost"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn bin() -> String {
        std::env::var("TESSERA_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
    }

    /// (Re)start on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(Self::bin())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let ok = eventually(Duration::from_secs(10), || {
            self.cli(&["PING"]).is_some_and(|o| o.contains("PONG"))
        });
        assert!(ok.is_some(), "redis-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("redis running")
    }

    /// SIGSTOP / SIGCONT: a frozen Redis sends nothing, not even a disconnect.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }

    /// Run `redis-cli` against this server, as a security team would.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let flags: Vec<&str> = self.cli_flags.iter().map(String::as_str).collect();
        redis_cli(self.port, &flags, args)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "CONT");
        }
        self.stop();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// A port `p` with `p` and `p + 10000` (the cluster bus) both free.
pub fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// A three-primary Redis Cluster on loopback.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                Redis::start_on(
                    free_cluster_port(),
                    false,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            let ok = eventually(Duration::from_secs(15), || {
                n.cli(&["CLUSTER", "INFO"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            });
            assert!(ok.is_some(), "cluster did not converge");
        }
        RedisCluster { nodes }
    }

    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// `redis-cli -c` (follows MOVED redirects) against the first node.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.nodes[0].port, &["-c"], args)
    }
}

/// `redis-cli [flags] -h 127.0.0.1 -p <port> <args>`; stdout if it exited 0.
pub fn redis_cli(port: u16, flags: &[&str], args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(flags)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A primary, one replica and one sentinel watching them as `mymaster`.
pub struct RedisSentinel {
    pub primary: Redis,
    pub replica: Redis,
    pub sentinel_port: u16,
    sentinel: Option<Child>,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let primary = Redis::start();
        let pp = primary.port.to_string();
        let replica = Redis::start_on(free_port(), false, &["--replicaof", "127.0.0.1", &pp]);
        let ok = eventually(Duration::from_secs(10), || {
            replica
                .cli(&["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        assert!(ok.is_some(), "replica did not sync");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {pp} 1\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(Redis::bin())
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = RedisSentinel {
            primary,
            replica,
            sentinel_port: port,
            sentinel: Some(child),
            _dir: dir,
        };
        let ok = eventually(Duration::from_secs(10), || {
            s.master_addr().is_some_and(|a| a.contains(&pp))
        });
        assert!(ok.is_some(), "sentinel did not start");
        s
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster/0", self.sentinel_port)
    }

    pub fn sentinel_cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.sentinel_port, &[], args)
    }

    pub fn master_addr(&self) -> Option<String> {
        self.sentinel_cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.sentinel.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// === Upstream ===

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

// === PKI and config ===

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
        let cfg = self.path(&format!("{name}.yaml"));
        std::fs::write(&cfg, self.yaml(&ports, name)).unwrap();
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
        let (s, v) = self.admin_call(
            "POST",
            &format!("/v1/tenants/{tenant}/tokens"),
            Some(json!({"token": upstream_token, "label": "test"})),
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
