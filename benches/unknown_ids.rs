//! Unknown token ids: Redis round trips and refusal timing (review issue 8, finding 5).
//!
//! Run:        cargo bench --bench unknown_ids          (release build; N = 2000 per class)
//! Debug:      cargo test --bench unknown_ids -- --bench    (debug build, same N)
//! Smoke (CI): cargo bench --bench unknown_ids -- --test  (N = 20; prints, asserts nothing)
//!
//! Setup (real parts only, the harness in `tests/common`): one private `redis-server`, the echo
//! upstream and one real `tessera serve` (2 worker threads, `store: redis`, tracked cache on).
//!
//! 1. GETs: 200 distinct well-formed Part As (valid checksum, right tenant tag, random unknown
//!    ids) are sent once each, then the same 200 again; `cmdstat_get` calls of the test's own
//!    Redis are read from `INFO commandstats` before and after each round.
//! 2. Timing: one keep-alive HTTPS client sends, interleaved, N requests of each class and
//!    records the client-side round trip of each 401:
//!    - `unknown (fresh id)`: a new random id every time (always a store miss);
//!    - `unknown (repeated id)`: ids from a pool of 20, after one warm-up round;
//!    - `known id, wrong Part A`: a minted id with a forged share (record found, AEAD fails);
//!    - `revoked id`: a minted then revoked id (tombstone found).
//!
//!    The numbers are round trips seen by the client (TLS, HTTP, Tessera, the 401), so the
//!    differences between classes are what Tessera does differently.
//!
//! Measured 2026-11-22 on the 2-core VM (shared, release build, p50 / p99 in µs, three runs
//! alternating the binary before and after the negative cache and even refusals; ranges are
//! over the runs):
//!
//! | class                  | before p50 | before p99 | after p50 | after p99  |
//! |------------------------|------------|------------|-----------|------------|
//! | unknown (fresh id)     | 249–273    | 810–1027   | 258–294   | 991–1173   |
//! | unknown (repeated id)  | 249–265    | 724–782    | 182–208   | 407–709    |
//! | known id, wrong Part A | 191–195    | 553–608    | 181–204   | 469–668    |
//! | revoked id             | 180–184    | 465–667    | 179–201   | 532–630    |
//!
//! GETs for 200 distinct unknown ids sent a second time: 200 before, 0 after. Before, an
//! unknown id answered ~60–70 µs (p50) later than a known id with a wrong Part A and a
//! revoked id ~10 µs sooner; after, repeated unknown and revoked ids are within ~4 µs of it.
//! A never-seen id still pays one Redis round trip (as does a known id not yet in the cache).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{echo_upstream, Redis, Setup, TenantSpec};
use tessera::token::{forge_part_a, TokenId};

const HOST: &str = "saas.acme.example";
const TENANT: &str = "acme";

fn gets(redis: &Redis) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]).unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test");
    let n = if full { 2000 } else { 20 };
    if std::env::var_os("TESSERA_TEST_LOG").is_none() {
        std::env::set_var("TESSERA_TEST_LOG", "warn");
    }

    let redis = Redis::start();
    let up = echo_upstream();
    let mut setup = Setup::new(vec![TenantSpec::new(TENANT, &[HOST], up)]);
    setup.redis_store(&redis, "");
    let t = setup.start("bench");
    t.wait_ready();
    let c = t.client(&[HOST]);
    let url = t.url(HOST, "/r");
    let send = |part_a: &str| -> (u16, Duration) {
        let start = Instant::now();
        let s = c
            .get(&url)
            .bearer_auth(part_a)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        (s, start.elapsed())
    };

    // 1. GETs for 200 distinct unknown ids, twice.
    let unknown: Vec<String> = (0..200)
        .map(|_| forge_part_a(TENANT, TokenId::random()).to_string())
        .collect();
    for round in 1..=2 {
        let before = gets(&redis);
        for a in &unknown {
            assert_eq!(send(a).0, 401);
        }
        println!(
            "round {round}: 200 distinct unknown ids -> {} Redis GETs",
            gets(&redis) - before
        );
    }

    // 2. Timing.
    let (known_id, _) = t.mint(TENANT, "bench-upstream-token-0123456789abcdef");
    let known_wrong = forge_part_a(TENANT, TokenId::parse(&known_id).unwrap()).to_string();
    let (revoked_id, revoked_a) = t.mint(TENANT, "bench-upstream-token-revoked");
    let (s, _) = t.admin_call("DELETE", &format!("/v1/tenants/{TENANT}/tokens/{revoked_id}"), None);
    assert_eq!(s, 200);
    let pool: Vec<String> = (0..20)
        .map(|_| forge_part_a(TENANT, TokenId::random()).to_string())
        .collect();
    for a in pool.iter().chain([&known_wrong, &revoked_a]) {
        assert_eq!(send(a).0, 401);
    }
    let names = [
        "unknown (fresh id)",
        "unknown (repeated id)",
        "known id, wrong Part A",
        "revoked id",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); names.len()];
    for i in 0..n {
        let fresh = forge_part_a(TENANT, TokenId::random()).to_string();
        let parts = [fresh.as_str(), &pool[i % pool.len()], &known_wrong, &revoked_a];
        // Rotate the order so no class always follows the same one.
        for k in 0..parts.len() {
            let j = (i + k) % parts.len();
            let (s, d) = send(parts[j]);
            assert_eq!(s, 401, "{}", names[j]);
            samples[j].push(d);
        }
    }
    println!("refusal round trip, {n} requests per class (client side, keep-alive HTTPS):");
    for (name, mut v) in names.iter().zip(samples) {
        v.sort();
        println!(
            "  {name:<24} p50 {:>7.1} us   p99 {:>7.1} us",
            pct(&v, 0.50).as_secs_f64() * 1e6,
            pct(&v, 0.99).as_secs_f64() * 1e6
        );
    }
}
