//! Private Redis servers for tests: standalone (plain or TLS), cluster, sentinel; each on free
//! loopback ports, stopped by pid when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

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
