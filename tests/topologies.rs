//! Redis Sentinel and Redis Cluster deployments, with real servers: tokens work, revocation by
//! `DEL` reaches the cache whichever node holds the key, and a Sentinel failover is followed.

mod common;

use std::time::Duration;

use common::*;

const HOST: &str = "saas.acme.example";

fn status(t: &Tessera, c: &reqwest::blocking::Client, part_a: &str) -> u16 {
    t.status_with(c, HOST, part_a)
}

fn setup_with(url: &str) -> Setup {
    let mut setup = Setup::new(vec![TenantSpec::new("acme", &[HOST], echo_upstream())]);
    setup.store = format!("{{ kind: redis, url: \"{url}\", heartbeat_interval: 200ms, heartbeat_timeout: 300ms }}");
    setup
}

#[test]
fn redis_cluster_tracks_every_primary() {
    let cluster = RedisCluster::start();
    let setup = setup_with(&cluster.url());
    let instances = [setup.start("c1"), setup.start("c2")];
    for t in &instances {
        t.wait_ready();
        assert!(eventually(Duration::from_secs(5), || t
            .log_text()
            .contains("tracking established on 3 primary"))
        .is_some());
    }
    // Enough tokens that every primary holds some of them.
    let tokens: Vec<(String, String)> = (0..12)
        .map(|i| instances[0].mint("acme", &format!("tok-{i}")))
        .collect();
    let clients: Vec<_> = instances.iter().map(|t| t.client(&[HOST])).collect();
    for (t, c) in instances.iter().zip(&clients) {
        for (_, a) in &tokens {
            assert_eq!(status(t, c, a), 200);
            assert_eq!(status(t, c, a), 200);
        }
    }
    let (_, list) = instances[1].admin_call("GET", "/v1/tenants/acme/tokens", None);
    assert_eq!(
        list["tokens"].as_array().unwrap().len(),
        12,
        "listing scans every primary"
    );
    for (id, a) in &tokens {
        assert_eq!(
            cluster
                .cli(&["DEL", &format!("tessera:frag:acme:{id}")])
                .unwrap()
                .trim(),
            "1"
        );
        for (t, c) in instances.iter().zip(&clients) {
            assert!(
                eventually(Duration::from_millis(300), || status(t, c, a) == 401).is_some(),
                "revoked token still served from a cache"
            );
        }
    }
    // A primary going away: fail closed everywhere until tracking is whole again.
    let (_, fresh) = instances[0].mint("acme", "fresh");
    let mut nodes = cluster.nodes;
    nodes[2].stop();
    for (t, c) in instances.iter().zip(&clients) {
        assert!(eventually(Duration::from_secs(5), || status(t, c, &fresh) == 503).is_some());
        assert!(!t.ready());
    }
}

#[test]
fn redis_sentinel_follows_failover() {
    let s = RedisSentinel::start();
    let setup = setup_with(&s.url());
    let t = setup.start("sentinel");
    t.wait_ready();
    let c = t.client(&[HOST]);
    let (_, a) = t.mint("acme", "tok-a");
    let (id_b, b) = t.mint("acme", "tok-b");
    assert_eq!(status(&t, &c, &a), 200);
    // Make sure the replica has the records before promoting it.
    s.primary.cli(&["WAIT", "1", "2000"]).unwrap();

    let before = s.master_addr().unwrap();
    // FAILOVER answers OK once sentinel has a promotable replica; retry until it does.
    let accepted = eventually(Duration::from_secs(15), || {
        s.sentinel_cli(&["SENTINEL", "FAILOVER", "mymaster"])
            .is_some_and(|o| o.trim() == "OK")
    });
    assert!(accepted.is_some(), "sentinel refused to fail over");
    let moved = eventually(Duration::from_secs(20), || s.master_addr().is_some_and(|m| m != before));
    assert!(moved.is_some(), "sentinel did not fail over");
    let new_port = s.replica.port.to_string();
    assert!(s.master_addr().unwrap().contains(&new_port));
    // Tessera follows the new primary by itself.
    assert!(
        eventually(Duration::from_secs(15), || t
            .log_text()
            .contains(&format!("primary of \"mymaster\" is 127.0.0.1:{new_port}")))
        .is_some(),
        "tessera did not follow the failover:\n{}",
        t.log_text()
    );
    assert!(eventually(Duration::from_secs(10), || status(&t, &c, &a) == 200).is_some());
    // Revocation on the new primary works.
    assert_eq!(
        s.replica
            .cli(&["DEL", &format!("tessera:frag:acme:{id_b}")])
            .unwrap()
            .trim(),
        "1"
    );
    assert!(eventually(Duration::from_millis(300), || status(&t, &c, &b) == 401).is_some());
    // Minting goes to the new primary.
    let (_, c2) = t.mint("acme", "after-failover");
    assert_eq!(status(&t, &c, &c2), 200);
}
