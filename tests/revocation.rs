//! Instant revocation across several instances sharing one real Redis: warm caches, revoke by
//! API and by `redis-cli DEL`, Redis killed / frozen / connections killed (fail closed),
//! long-lived connections, and KEK rotation under load.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const HOST: &str = "saas.acme.example";

fn cluster(n: usize, persistent: bool) -> (Redis, Setup, Vec<Tessera>) {
    let redis = if persistent {
        Redis::start_persistent()
    } else {
        Redis::start()
    };
    let up = echo_upstream();
    let mut setup = Setup::new(vec![TenantSpec::new("acme", &[HOST], up)]);
    setup.redis_store(&redis, ", heartbeat_interval: 200ms, heartbeat_timeout: 200ms");
    let instances: Vec<Tessera> = (0..n).map(|i| setup.start(&format!("inst{i}"))).collect();
    for t in &instances {
        t.wait_ready();
    }
    (redis, setup, instances)
}

fn status(t: &Tessera, c: &reqwest::blocking::Client, part_a: &str) -> u16 {
    t.status_with(c, HOST, part_a)
}

#[test]
fn revoke_reaches_every_instance_with_warm_caches() {
    let (redis, _setup, inst) = cluster(3, false);
    let clients: Vec<_> = inst.iter().map(|t| t.client(&[HOST])).collect();

    for round in 0..2 {
        let (id, part_a) = inst[0].mint("acme", &format!("upstream-token-{round}"));
        // Warm every cache: the second request of each instance is a cache hit.
        for (t, c) in inst.iter().zip(&clients) {
            let hits = t.metric("tessera_fragment_cache_hits_total", &[]);
            assert_eq!(status(t, c, &part_a), 200);
            assert_eq!(status(t, c, &part_a), 200);
            assert!(
                t.metric("tessera_fragment_cache_hits_total", &[]) > hits,
                "cache not used"
            );
        }
        let revoked_at = Instant::now();
        if round == 0 {
            let (s, _) = inst[0].admin_call("DELETE", &format!("/v1/tenants/acme/tokens/{id}"), None);
            assert_eq!(s, 200);
        } else {
            assert_eq!(
                redis.cli(&["DEL", &format!("tessera:frag:acme:{id}")]).unwrap().trim(),
                "1"
            );
        }
        for (i, (t, c)) in inst.iter().zip(&clients).enumerate() {
            let took = eventually(Duration::from_millis(200), || status(t, c, &part_a) == 401);
            assert!(
                took.is_some(),
                "instance {i} still accepts a revoked token (round {round})"
            );
        }
        eprintln!(
            "round {round}: all 3 instances refused within {:?}",
            revoked_at.elapsed()
        );
        for t in &inst {
            assert!(t.metric("tessera_fragment_cache_invalidations_total", &[]) >= 1.0);
        }
    }
}

#[test]
fn keep_alive_and_h2_connections_are_rechecked_per_request() {
    let (_redis, setup, inst) = cluster(1, false);
    let t = &inst[0];
    let (id, part_a) = t.mint("acme", "tok");
    let h1 = t.client(&[HOST]);
    let h2 = client_for(&setup.ca_pem, t.ports.https, &[HOST], true);
    assert_eq!(status(t, &h1, &part_a), 200);
    let r = h2.get(t.url(HOST, "/r")).bearer_auth(&part_a).send().unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    t.admin_call("DELETE", &format!("/v1/tenants/acme/tokens/{id}"), None);
    // Same pooled connections, next request refused.
    assert!(eventually(Duration::from_millis(200), || status(t, &h1, &part_a) == 401).is_some());
    assert!(eventually(Duration::from_millis(200), || h2
        .get(t.url(HOST, "/r"))
        .bearer_auth(&part_a)
        .send()
        .unwrap()
        .status()
        == 401)
    .is_some());
}

#[test]
fn redis_frozen_killed_or_disconnected_fails_closed_then_recovers() {
    let (mut redis, _setup, inst) = cluster(3, true);
    let clients: Vec<_> = inst.iter().map(|t| t.client(&[HOST])).collect();
    let (id, part_a) = inst[0].mint("acme", "tok");
    for (t, c) in inst.iter().zip(&clients) {
        assert_eq!(status(t, c, &part_a), 200);
        assert_eq!(status(t, c, &part_a), 200);
    }

    // Frozen Redis (SIGSTOP): no disconnect arrives; the heartbeat (200 ms + 200 ms) must notice.
    redis.freeze();
    let frozen_at = Instant::now();
    for (i, (t, c)) in inst.iter().zip(&clients).enumerate() {
        let took = eventually(Duration::from_secs(3), || status(t, c, &part_a) == 503);
        assert!(
            took.is_some(),
            "instance {i} kept serving from cache while Redis was frozen"
        );
    }
    let bound = frozen_at.elapsed();
    eprintln!("frozen Redis: all instances refusing after {bound:?}");
    // And keeps refusing: nothing verified, nothing forwarded.
    for _ in 0..5 {
        for (t, c) in inst.iter().zip(&clients) {
            assert_eq!(status(t, c, &part_a), 503);
        }
    }
    assert!(inst.iter().all(|t| !t.ready()), "/readyz must be 503 while blind");
    redis.thaw();
    for (i, (t, c)) in inst.iter().zip(&clients).enumerate() {
        assert!(
            eventually(Duration::from_secs(10), || status(t, c, &part_a) == 200).is_some(),
            "instance {i} did not resume"
        );
    }

    // Every connection killed, then an immediate DEL: the stale cache must not answer.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    redis.cli(&["DEL", &format!("tessera:frag:acme:{id}")]);
    for (t, c) in inst.iter().zip(&clients) {
        for _ in 0..20 {
            let s = status(t, c, &part_a);
            assert!(s == 401 || s == 503, "revoked token answered {s} after a disconnect");
        }
    }

    // Killed and restarted Redis (data persisted): refuse while down, resume by itself. The
    // killed connections are re-established by the store's heartbeat; until then an instance
    // is blind and refuses (the loop above may finish first), so the mint waits for it.
    inst[0].wait_ready();
    let (_, part_b) = inst[0].mint("acme", "tok2");
    redis.stop();
    for (t, c) in inst.iter().zip(&clients) {
        assert!(eventually(Duration::from_secs(3), || status(t, c, &part_b) == 503).is_some());
    }
    redis.restart();
    for (i, (t, c)) in inst.iter().zip(&clients).enumerate() {
        assert!(
            eventually(Duration::from_secs(10), || status(t, c, &part_b) == 200).is_some(),
            "instance {i} did not resume after restart"
        );
        t.wait_ready();
    }
}

#[test]
fn kek_rotation_under_load_loses_no_request() {
    let (_redis, setup, inst) = cluster(2, false);
    let tokens: Vec<(String, String)> = (0..3).map(|i| inst[0].mint("acme", &format!("tok-{i}"))).collect();
    let old_kid = "k1";
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for t in &inst {
        let c = t.client(&[HOST]);
        let url = t.url(HOST, "/r");
        let parts: Vec<String> = tokens.iter().map(|(_, a)| a.clone()).collect();
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        load.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let s = c
                    .get(&url)
                    .bearer_auth(&parts[i % parts.len()])
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if s == 200 { &ok } else { &bad }.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let bin = env!("CARGO_BIN_EXE_tessera");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::thread::sleep(Duration::from_millis(300));
    let keyring = setup.keyring.to_str().unwrap().to_string();
    let added = run(&["keys", "add", "--file", &keyring]);
    let new_kid = added.split_whitespace().nth(3).unwrap().to_string();
    for t in &inst {
        assert!(eventually(Duration::from_secs(5), || t
            .log_text()
            .contains(&format!("active kid {new_kid}")))
        .is_some());
    }
    let (s, v) = inst[0].admin_call("POST", "/v1/keys/rotate", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["resealed"], 3);
    assert_eq!(v["failed"], 0);
    let (_, keys) = inst[1].admin_call("GET", "/v1/keys", None);
    assert_eq!(keys["records_by_kid"][&new_kid], 3, "{keys}");
    assert!(keys["records_by_kid"].get(old_kid).is_none());
    std::thread::sleep(Duration::from_millis(300));
    // Old key retired: everything still opens.
    run(&["keys", "retire", "--file", &keyring, "--kid", old_kid]);
    for t in &inst {
        assert!(eventually(Duration::from_secs(5), || t
            .log_text()
            .matches("keyring reloaded")
            .count()
            >= 2)
        .is_some());
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("rotation under load: {ok} ok, {bad} failed");
    assert!(ok > 50, "load did not run ({ok})");
    assert_eq!(bad, 0, "requests failed during key rotation");
    let v: Value = inst[0].admin_call("GET", "/v1/tenants/acme/tokens", None).1;
    assert!(v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["kid"] == new_kid.as_str()));
}
