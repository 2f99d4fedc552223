//! Heap allocations per proxied request: bare Pingora vs Tessera (issue 11).
//!
//! Run:        cargo bench --bench allocations              (N = 2000 requests per case)
//! Smoke (CI): cargo bench --bench allocations -- --test    (N = 20; prints, asserts nothing)
//!
//! The proxy under test runs in a child process (this binary with `--child`) whose global
//! allocator counts every `alloc` and `realloc` (calls and bytes), across all its threads:
//! Pingora's worker, the session-log writer, background services. The parent holds the rest
//! (the echo upstream, the certificates, the client), so nothing of theirs is counted. Per
//! case: the child starts, the parent warms it up (connection, upstream pool, caches), reads
//! the child's counters, sends N keep-alive requests on one connection, waits for the session
//! log writer to flush, reads the counters again, and divides. The same wait with no requests
//! is reported as `idle` (timers and background services), so it can be told apart.
//!
//! Cases (HTTP/1.1 and HTTP/2 over TLS, GET /small):
//! - `bare`: examples/bare_proxy/ (proxy.rs) (tenant header set, `Authorization` replaced);
//! - `lean`: the same binary with `--lean` (lean.rs): the same work on pingora-core alone;
//! - `tessera none`: a tenant with `auth: none`, session log (file) and anomaly on;
//! - `tessera split`: split token, embedded store, session log (file) and anomaly on;
//! - `tessera split nolog`: as above with session log and anomaly detection off.
//!
//! Figures are recorded in README "Performance"; they depend only on the code (not on machine
//! load), so before/after comparisons are exact.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "../examples/bare_proxy/proxy.rs"]
#[allow(dead_code)]
mod bare_proxy;

#[path = "../examples/bare_proxy/lean.rs"]
mod lean;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use common::{client_for, echo_upstream, eventually, Ports, Setup, TenantSpec};
use serde_json::json;

// === counting allocator ===

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const HOST: &str = "saas.bench.example";
const TENANT: &str = "bench";
/// Time for the session-log writer to pick up and flush the last records (its linger is
/// shorter); the same wait without requests gives the idle figure.
const SETTLE: Duration = Duration::from_millis(300);

// === child: the proxy under test ===

/// `--child tessera <config> <upgrade sock>` or `--child bare <bare_proxy args>`: run the
/// proxy on a thread; answer `count` on stdin with `ALLOCS <calls> <bytes>` on stdout.
fn child(args: &[String]) -> ! {
    match args.first().map(String::as_str) {
        Some("tessera") => {
            let argv = ["tessera", "serve", "-c", &args[1], "--upgrade-sock", &args[2]];
            let cli = tessera::cli::Cli::parse_from(argv);
            std::thread::spawn(move || {
                if let Err(e) = tessera::cli::run(cli) {
                    eprintln!("tessera: {e}");
                    std::process::exit(1);
                }
            });
        }
        Some("bare") => {
            let a =
                bare_proxy::Args::parse_from(std::iter::once("bare_proxy").chain(args[1..].iter().map(String::as_str)));
            std::thread::spawn(move || {
                if let Err(e) = bare_proxy::run(a) {
                    eprintln!("bare_proxy: {e}");
                    std::process::exit(1);
                }
            });
        }
        other => {
            eprintln!("unknown child kind {other:?}");
            std::process::exit(2);
        }
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) => {
                let (a, b) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "ALLOCS {a} {b}");
                let _ = out.flush();
            }
        }
    }
}

// === parent: drive one child ===

struct Proxy {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proxy {
    fn spawn(args: &[String]) -> Proxy {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("--child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child proxy");
        let stdin = child.stdin.take().expect("child stdin");
        let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        Proxy { child, stdin, stdout }
    }

    /// (allocation calls, bytes) so far.
    fn count(&mut self) -> (u64, u64) {
        writeln!(self.stdin, "count").expect("child alive");
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).expect("child output") == 0 {
                panic!("child exited");
            }
            if let Some(rest) = line.trim().strip_prefix("ALLOCS ") {
                let mut it = rest.split(' ').map(|n| n.parse::<u64>().expect("number"));
                return (it.next().expect("calls"), it.next().expect("bytes"));
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    case: String,
    allocs: f64,
    bytes: f64,
    idle: u64,
}

/// Warm up, then count allocations over `n` requests of `send`.
fn measure(case: &str, proxy: &mut Proxy, n: usize, send: &dyn Fn() -> u16) -> Row {
    for _ in 0..50 {
        assert_eq!(send(), 200, "{case}: warm-up request failed");
    }
    std::thread::sleep(SETTLE);
    let idle0 = proxy.count();
    std::thread::sleep(SETTLE);
    let c0 = proxy.count();
    for _ in 0..n {
        assert_eq!(send(), 200, "{case}: request failed");
    }
    std::thread::sleep(SETTLE);
    let c1 = proxy.count();
    Row {
        case: case.to_string(),
        allocs: (c1.0 - c0.0) as f64 / n as f64,
        bytes: (c1.1 - c0.1) as f64 / n as f64,
        idle: c0.0 - idle0.0,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
    }
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let n = if full { 2000 } else { 20 };

    let up = echo_upstream();
    let setup = Setup::new(vec![TenantSpec::new(TENANT, &[HOST], up)]);
    let mut rows = Vec::new();

    // bare Pingora, then the same work on pingora-core alone (`--lean`)
    for (case, extra) in [("bare", None), ("lean", Some("--lean"))] {
        let port = common::free_port();
        let mut bare_args: Vec<String> = [
            "bare".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--upstream".into(),
            up.to_string(),
            "--cert".into(),
            setup.path(&format!("{TENANT}.pem")).display().to_string(),
            "--key".into(),
            setup.path(&format!("{TENANT}.key")).display().to_string(),
            "--upgrade-sock".into(),
            setup.path(&format!("{case}.sock")).display().to_string(),
        ]
        .to_vec();
        bare_args.extend(extra.map(str::to_string));
        let mut proxy = Proxy::spawn(&bare_args);
        let url = format!("https://{HOST}:{port}/small");
        for http2 in [false, true] {
            let c = client_for(&setup.ca_pem, port, &[HOST], http2);
            let send = || c.get(&url).send().map(|r| r.status().as_u16()).unwrap_or(0);
            assert!(
                eventually(Duration::from_secs(20), || send() == 200).is_some(),
                "{case} proxy not answering"
            );
            let proto = if http2 { "h2" } else { "h1" };
            rows.push(measure(&format!("{case} {proto}"), &mut proxy, n, &send));
        }
    }

    // Tessera: (case, extra YAML)
    let nolog = "session_log: { enabled: false }\nanomaly: { enabled: false }\n";
    for (case, auth, extra) in [
        ("tessera none", "none", ""),
        ("tessera split", "split_token", ""),
        ("tessera split nolog", "split_token", nolog),
    ] {
        let ports = Ports::new();
        let name = case.replace(' ', "-");
        let mut yaml = setup
            .yaml(&ports, &name)
            .replace("threads: 2", "threads: 1")
            .replace("tls: { reload_interval: 200ms }\n", "")
            .replace("session_log: { file:", "session_log: { stdout: false, file:");
        if !extra.is_empty() {
            yaml = yaml.replace(
                &format!(
                    "session_log: {{ stdout: false, file: \"{}\" }}\n",
                    setup.path(&format!("{name}.sessions.jsonl")).display()
                ),
                extra,
            );
        }
        yaml = yaml.replace(
            &format!("upstream: \"http://{up}\"\n"),
            &format!("upstream: \"http://{up}\"\n    auth: {auth}\n"),
        );
        let cfg = setup.path(&format!("{name}.yaml"));
        std::fs::write(&cfg, &yaml).expect("write config");
        let mut proxy = Proxy::spawn(&[
            "tessera".into(),
            cfg.display().to_string(),
            setup.path(&format!("{name}.sock")).display().to_string(),
        ]);
        let admin = reqwest::blocking::Client::new();
        let ready = format!("http://127.0.0.1:{}/readyz", ports.admin);
        assert!(
            eventually(Duration::from_secs(30), || admin
                .get(&ready)
                .send()
                .is_ok_and(|r| r.status().is_success()))
            .is_some(),
            "{case}: not ready"
        );
        let part_a = if auth == "split_token" {
            let v: serde_json::Value = admin
                .post(format!("http://127.0.0.1:{}/v1/tenants/{TENANT}/tokens", ports.admin))
                .bearer_auth(&setup.admin_token)
                .json(&json!({"token": "upstream-secret-123", "label": "bench"}))
                .send()
                .and_then(|r| r.json())
                .expect("mint");
            v["part_a"].as_str().expect("part_a in mint answer").to_string()
        } else {
            String::new()
        };
        let url = format!("https://{HOST}:{}/small", ports.https);
        for http2 in [false, true] {
            let c = client_for(&setup.ca_pem, ports.https, &[HOST], http2);
            let send = || {
                let mut r = c.get(&url);
                if !part_a.is_empty() {
                    r = r.bearer_auth(&part_a);
                }
                r.send().map(|r| r.status().as_u16()).unwrap_or(0)
            };
            let proto = if http2 { "h2" } else { "h1" };
            rows.push(measure(&format!("{case} {proto}"), &mut proxy, n, &send));
        }
    }

    println!("\nHeap allocations per request (alloc + realloc calls in the proxy process, all threads), N = {n}");
    println!(
        "{:<26} {:>12} {:>12} {:>12}",
        "case", "allocs/req", "bytes/req", "idle allocs"
    );
    for r in &rows {
        println!("{:<26} {:>12.1} {:>12.0} {:>12}", r.case, r.allocs, r.bytes, r.idle);
    }
    println!("(idle = allocations in {SETTLE:?} without requests, the settle time included once per case)");
}
