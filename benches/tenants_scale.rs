//! Tenants at scale (issue 10's figures): the handshake/tenant lookup against the number of
//! hostnames, memory with many API tenants, how fast a change made through one instance is
//! served by another, and request throughput during a burst of tenant changes.
//!
//! Run:        cargo bench --bench tenants_scale                 (N=10000 API tenants)
//! Fewer:      N=2000 cargo bench --bench tenants_scale
//! Smoke (CI): cargo bench --bench tenants_scale -- --test       (N=20, short phases)
//!
//! Setup (real parts, the integration-test harness in `tests/common`): one private
//! `redis-server`, two `tessera serve` children (`a`, `b`) sharing it, one echo upstream. YAML
//! tenant `acme` (`auth: none`) carries the load; the N API tenants are created through `a`'s
//! admin API, `t<i>.scale.example`, all with one wildcard certificate `*.scale.example` (so
//! the figures measure Tessera's tables, not N key generations).
//!
//! Phases, printed as they end:
//! 1. lookup: `HostMap::lookup` (what the SNI resolver and the tenant lookup do per handshake
//!    and request) with 10 … 100,000 names; ns per lookup, hit and miss.
//! 2. create: N tenants through `a`, sequentially; per-create latency p50/p99 and total.
//! 3. RSS of `a` and `b` before and after (`/proc/<pid>/status`, VmRSS).
//! 4. propagation: `PATCH` of one API tenant's header on `a` (after a pause of 0–250 ms, out of
//!    step with `b`'s sync ticks), polled through `b` every 2 ms until `b` forwards the new
//!    value; p50/p99 over ROUNDS (default 50) changes.
//! 5. burst: requests per second through `b` (8 client threads, keep-alive) for SECS without
//!    changes, then while `a` applies 100 tenant changes; both printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tessera::host::{HostMap, HostPattern};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mib(t: &Tessera) -> f64 {
    let pid = t.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn lookups(smoke: bool) {
    let iters = if smoke { 10_000 } else { 2_000_000 };
    for n in [10usize, 1_000, 10_000, 100_000] {
        let mut m = HostMap::default();
        for i in 0..n {
            let p = HostPattern::parse(&format!("t{i}.scale.example")).expect("pattern");
            m.insert(&p, i);
        }
        let names: Vec<String> = (0..1024)
            .map(|i| format!("T{}.Scale.Example", (i * 7919) % n))
            .collect();
        let misses: Vec<String> = (0..1024).map(|i| format!("x{i}.other.example")).collect();
        for (label, set) in [("hit", &names), ("miss", &misses)] {
            let start = Instant::now();
            let mut found = 0usize;
            for i in 0..iters {
                found += usize::from(m.lookup(&set[i & 1023]).is_some());
            }
            let ns = start.elapsed().as_nanos() as f64 / iters as f64;
            println!("lookup  {n:>6} names  {label:<4} {ns:>6.1} ns/lookup  (found {found})");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let env_n = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let n = if smoke { 20 } else { env_n("N", 10_000) };
    let rounds = if smoke { 3 } else { env_n("ROUNDS", 50) };
    let secs = if smoke { 1 } else { env_n("SECS", 5) as u64 };
    println!(
        "tenants_scale: N={n} ROUNDS={rounds} SECS={secs}{}",
        if smoke { " [smoke run]" } else { "" }
    );
    lookups(smoke);

    let redis = Redis::start();
    let up = echo_upstream();
    let mut setup = Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.example"], up).extra("    auth: none")
    ]);
    setup.redis_store(&redis, "");
    let (a, b) = (setup.start("scale-a"), setup.start("scale-b"));
    a.wait_ready();
    b.wait_ready();
    let (rss_a0, rss_b0) = (rss_mib(&a), rss_mib(&b));
    let leaf = setup.ca.issue(&["*.scale.example"]).expect("wildcard cert");
    let def = |i: usize, rev: usize| {
        json!({
            "id": format!("t{i}"),
            "hostnames": [format!("t{i}.scale.example")],
            "upstream": format!("http://{up}"),
            "auth": "none",
            "headers": {"X-Rev": rev.to_string()},
            "tls": {"cert_pem": leaf.cert_pem, "key_pem": leaf.key_pem},
        })
    };

    // 2. create
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let (s, v) = a.admin_call("POST", "/v1/tenants", Some(def(i, 0)));
        assert_eq!(s, 201, "tenant {i}: {v}");
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        if i > 0 && i % 1000 == 0 {
            println!("  … {i} created, last create {:.1} ms", lat[i]);
        }
    }
    let total = start.elapsed();
    println!(
        "create  {n} tenants through a: total {:.1} s, p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
        total.as_secs_f64(),
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat.clone(), 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    let synced = eventually(Duration::from_secs(300), || {
        b.admin_call("GET", "/v1/tenants", None).1["tenants"]
            .as_array()
            .is_some_and(|t| t.len() == n + 1)
    });
    assert!(synced.is_some(), "b never saw all {n} tenants");

    // 3. RSS
    println!(
        "rss     a {rss_a0:.1} → {:.1} MiB, b {rss_b0:.1} → {:.1} MiB (1 YAML tenant → +{n} API tenants)",
        rss_mib(&a),
        rss_mib(&b)
    );

    // 4. propagation
    let host = "t0.scale.example";
    let cb = b.client(&[host, "saas.acme.example"]);
    let mut prop = Vec::with_capacity(rounds);
    for r in 1..=rounds {
        // A pause of 0–250 ms first, so changes do not fall in step with b's sync ticks (the
        // previous round ended just after one).
        std::thread::sleep(Duration::from_millis((r as u64 * 7919) % 251));
        let t0 = Instant::now();
        let (s, v) = a.admin_call(
            "PATCH",
            "/v1/tenants/t0",
            Some(json!({"headers": {"X-Rev": r.to_string()}})),
        );
        assert_eq!(s, 200, "{v}");
        let want = r.to_string();
        loop {
            let got = cb
                .get(b.url(host, "/"))
                .send()
                .ok()
                .and_then(|resp| resp.json::<Value>().ok())
                .and_then(|v| v["headers"]["x-rev"].as_str().map(str::to_string));
            if got.as_deref() == Some(want.as_str()) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "round {r}: b never served rev {r}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        prop.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "propagation a→b ({rounds} PATCHes, {n} API tenants): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(&mut prop.clone(), 0.5),
        pct(&mut prop.clone(), 0.99),
        pct(&mut prop, 1.0)
    );

    // 5. burst
    let load = |dur: Duration, changes: usize| -> (f64, u64) {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
                let c = b.client(&["saas.acme.example"]);
                let url = b.url("saas.acme.example", "/small");
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match c.get(&url).send().map(|r| (r.status().as_u16(), r.bytes())) {
                            Ok((200, Ok(_))) => ok.fetch_add(1, Ordering::Relaxed),
                            _ => bad.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                });
            }
            for i in 0..changes {
                let (s, v) = a.admin_call(
                    "PATCH",
                    &format!("/v1/tenants/t{}", i % n),
                    Some(json!({"headers": {"X-Rev": format!("burst{i}")}})),
                );
                assert_eq!(s, 200, "{v}");
            }
            while start.elapsed() < dur {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
        });
        let el = start.elapsed().as_secs_f64();
        (ok.load(Ordering::Relaxed) as f64 / el, bad.load(Ordering::Relaxed))
    };
    let (quiet, bad_q) = load(Duration::from_secs(secs), 0);
    let (burst, bad_b) = load(Duration::from_secs(secs), 100);
    println!(
        "burst   through b: {quiet:.0} req/s without changes, {burst:.0} req/s during 100 tenant changes ({:.2}×); failed {bad_q} / {bad_b}",
        burst / quiet.max(1.0)
    );
    assert_eq!(bad_q + bad_b, 0, "requests failed during the burst");
}
