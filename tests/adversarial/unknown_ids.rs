//! Unknown token ids (review issue 8, finding 5): anyone can craft a Part A with a valid
//! checksum and the right tenant tag offline; repeating one must not cost a Redis round trip
//! each time, and the negative cache that prevents it must not keep a minted id out.
//!
//! Real parts: a private `redis-server` (its own `INFO commandstats` counts the GETs), real
//! `tessera serve` instances with `store: redis` and the tracked cache, real TLS requests.

use std::time::Duration;

use tessera::token::{forge_part_a, TokenId};

use crate::common::*;

const HOST: &str = "saas.acme.example";
const TENANT: &str = "acme";

/// `GET` calls the test's own Redis has served so far.
fn redis_gets(redis: &Redis) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]).expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn instances(redis: &Redis, n: usize, cache: &str) -> (Setup, Vec<Tessera>) {
    let up = echo_upstream();
    let mut setup = Setup::new(vec![TenantSpec::new(TENANT, &[HOST], up)]);
    // Default heartbeat (1s / 500ms): a loaded test machine must not lose tracking, which
    // would turn the cache off and hide what these tests check.
    setup.redis_store(redis, cache);
    let inst: Vec<Tessera> = (0..n).map(|i| setup.start(&format!("inst{i}"))).collect();
    for t in &inst {
        t.wait_ready();
    }
    (setup, inst)
}

#[test]
fn repeated_unknown_ids_cost_no_redis_get() {
    let redis = Redis::start();
    let (_setup, inst) = instances(&redis, 1, "");
    let t = &inst[0];
    let c = t.client(&[HOST]);
    // 40 unknown ids, 5 distinct Part As each (fresh random share every time): 200 requests.
    let ids: Vec<TokenId> = (0..40).map(|_| TokenId::random()).collect();
    let before = redis_gets(&redis);
    let unknown_before = t.metric("tessera_token_verifications_total", &[("result", "unknown")]);
    for _ in 0..5 {
        for id in &ids {
            let part_a = forge_part_a(TENANT, *id);
            assert_eq!(t.status_with(&c, HOST, &part_a), 401);
        }
    }
    let gets = redis_gets(&redis) - before;
    assert!(
        gets <= ids.len() as u64,
        "200 requests for {} distinct unknown ids cost {gets} Redis GETs",
        ids.len()
    );
    let m = t.metrics();
    assert_eq!(
        metric_value(&m, "tessera_token_verifications_total", &[("result", "unknown")]) - unknown_before,
        200.0,
        "every request refused as unknown"
    );
    assert!(metric_value(&m, "tessera_fragment_cache_negative_hits_total", &[]) >= 160.0);
}

#[test]
fn id_cached_as_unknown_works_once_minted() {
    let redis = Redis::start();
    // A negative TTL far longer than the test: only the invalidation can let the token in.
    let (_setup, inst) = instances(&redis, 2, ", cache: { negative_ttl: 1h }");
    let clients: Vec<_> = inst.iter().map(|t| t.client(&[HOST])).collect();

    // The admin API picks ids at random, so to have an id cached as unknown before its mint:
    // mint through the admin API, keep the record Redis got, delete it, let both instances
    // cache the id as unknown, then write the same record back — the same SET a mint sends.
    let (id, part_a) = inst[0].mint(TENANT, "upstream-token-negative-cache");
    let key = format!("tessera:frag:{TENANT}:{id}");
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("redis connection");
    let record: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).expect("GET record");
    assert!(!record.is_empty());
    let _: i64 = redis::cmd("DEL").arg(&key).query(&mut con).expect("DEL");
    for (t, c) in inst.iter().zip(&clients) {
        assert!(
            eventually(Duration::from_secs(10), || t.status_with(c, HOST, &part_a) == 401).is_some(),
            "DEL never reached an instance"
        );
        let neg = t.metric("tessera_fragment_cache_negative_hits_total", &[]);
        assert_eq!(t.status_with(c, HOST, &part_a), 401);
        assert!(
            t.metric("tessera_fragment_cache_negative_hits_total", &[]) > neg,
            "the id is not cached as unknown"
        );
    }

    let _: () = redis::cmd("SET").arg(&key).arg(&record).query(&mut con).expect("SET");
    for (t, c) in inst.iter().zip(&clients) {
        assert!(
            eventually(Duration::from_secs(10), || t.status_with(c, HOST, &part_a) == 200).is_some(),
            "a minted id stayed refused as unknown"
        );
    }

    // A fresh mint through the admin API works at once on the instance that minted it and on
    // the other one.
    let (_, fresh) = inst[1].mint(TENANT, "upstream-token-fresh");
    assert_eq!(inst[1].status_with(&clients[1], HOST, &fresh), 200);
    assert!(eventually(Duration::from_secs(10), || inst[0].status_with(
        &clients[0],
        HOST,
        &fresh
    ) == 200)
    .is_some());
}
