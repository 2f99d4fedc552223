//! Session logs, anomaly detection and Prometheus metrics, driven through a real Tessera with a
//! real Redis and a real upstream.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

const HOST: &str = "saas.acme.example";

/// Detector settings small enough to build history in about a second.
const FAST_ANOMALY: &str = "    anomaly: { window: 100ms, min_history: 5, z_threshold: 4, rate_floor: 5, bytes_floor: 10000, auth_failure_burst: 5, scan_distinct_404: 5 }";

fn client_from(t: &Tessera, ca: &str, local: Option<IpAddr>) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(HOST, std::net::SocketAddr::from(([127, 0, 0, 1], t.ports.https)))
        .http1_only()
        .use_rustls_tls();
    if let Some(ip) = local {
        b = b.local_address(ip);
    }
    b.build().unwrap()
}

/// Status of one request; the body is read in full, as a real client would (dropping it early
/// cuts the response and changes what Tessera counts as bytes sent).
fn req(c: &reqwest::blocking::Client, t: &Tessera, part_a: &str, path: &str, ua: &str) -> u16 {
    let r = c
        .get(t.url(HOST, path))
        .bearer_auth(part_a)
        .header("user-agent", ua)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes();
    status
}

/// One request per 100 ms window for `windows` windows.
fn steady(c: &reqwest::blocking::Client, t: &Tessera, part_a: &str, windows: usize) {
    for _ in 0..windows {
        assert_eq!(req(c, t, part_a, "/steady", "integration/1.0"), 200);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn anomalies(t: &Tessera, kind: &str) -> f64 {
    t.metric("tessera_anomalies_total", &[("tenant", "acme"), ("kind", kind)])
}

/// Anomalies are counted in the `logging` phase, which runs after the client has the response:
/// wait for the count instead of racing it.
fn fired(t: &Tessera, kind: &str) -> bool {
    eventually(Duration::from_secs(2), || anomalies(t, kind) >= 1.0).is_some()
}

#[test]
fn anomalies_fire_on_crafted_patterns_and_not_on_steady_traffic() {
    let redis = Redis::start();
    let up = echo_upstream();
    let mut setup = Setup::new(vec![TenantSpec::new("acme", &[HOST], up).extra(FAST_ANOMALY)]);
    setup.redis_store(&redis, "");
    let t = setup.start("anomaly");
    t.wait_ready();
    let c = client_from(&t, &setup.ca_pem, None);

    // Steady traffic from one IP and UA: nothing fires.
    let (_, steady_a) = t.mint("acme", "steady");
    steady(&c, &t, &steady_a, 15);
    // Give the last logging phases time to run, so a late detection would show.
    std::thread::sleep(Duration::from_millis(300));
    for kind in tessera::anomaly::AnomalyKind::ALL.map(|k| k.label()) {
        assert_eq!(anomalies(&t, kind), 0.0, "{kind} fired on steady traffic");
    }

    // Rate spike: a burst after steady history.
    let (_, a) = t.mint("acme", "rate");
    steady(&c, &t, &a, 8);
    for _ in 0..40 {
        req(&c, &t, &a, "/burst", "integration/1.0");
    }
    assert!(fired(&t, "rate_spike"), "rate_spike did not fire");

    // Bytes spike: one large response after steady history.
    let (_, a) = t.mint("acme", "bytes");
    steady(&c, &t, &a, 8);
    assert_eq!(req(&c, &t, &a, "/bytes/500000", "integration/1.0"), 200);
    assert!(fired(&t, "bytes_spike"), "bytes_spike did not fire");

    // New user agent and new client /24 for a seasoned token.
    let (_, a) = t.mint("acme", "newcomers");
    steady(&c, &t, &a, 6);
    req(&c, &t, &a, "/ua", "curl/8.0");
    assert!(fired(&t, "new_user_agent"));
    let other_net = client_from(&t, &setup.ca_pem, Some("127.0.9.9".parse().unwrap()));
    req(&other_net, &t, &a, "/ip", "integration/1.0");
    assert!(fired(&t, "new_ip_prefix"));

    // Auth-failure burst from the upstream, and a 404 scan over distinct paths.
    let (_, a) = t.mint("acme", "auth");
    for _ in 0..6 {
        assert_eq!(req(&c, &t, &a, "/status/401", "integration/1.0"), 401);
    }
    assert!(fired(&t, "auth_failure_burst"));
    let (_, a) = t.mint("acme", "scan");
    for i in 0..6 {
        assert_eq!(req(&c, &t, &a, &format!("/status/404/p{i}"), "integration/1.0"), 404);
    }
    assert!(fired(&t, "scan"));

    // Use of a revoked Part A.
    let (id, a) = t.mint("acme", "revoked");
    t.admin_call("DELETE", &format!("/v1/tenants/acme/tokens/{id}"), None);
    assert_eq!(req(&c, &t, &a, "/x", "integration/1.0"), 401);
    assert!(fired(&t, "bad_token_use"));

    // The session records carry the flags.
    let marked = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&t.sessions)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| {
                r["anomalies"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|k| k == "rate_spike"))
            })
    });
    assert!(marked.is_some(), "no session record marked rate_spike");
    // Scores are published by the sweeper; the anomaly score family exists per tenant.
    assert!(t.metrics().contains("tessera_anomaly_score{tenant=\"acme\"}"));
}

#[test]
fn block_action_quarantines_until_unblocked() {
    let up = echo_upstream();
    let setup = Setup::new(vec![
        TenantSpec::new("acme", &[HOST], up).extra(&FAST_ANOMALY.replace("{ window", "{ action: block, window"))
    ]);
    let t = setup.start("block");
    let c = client_from(&t, &setup.ca_pem, None);
    let (id, a) = t.mint("acme", "tok");
    steady(&c, &t, &a, 6);
    // A new user agent on a seasoned token trips the detector; with `block` the token is held.
    req(&c, &t, &a, "/ua", "stolen-token-tool/0.1");
    // Detection runs in the logging phase, just after that response went out.
    assert!(
        eventually(Duration::from_secs(2), || req(&c, &t, &a, "/next", "integration/1.0")
            == 401)
        .is_some()
    );
    assert!(t.metric("tessera_token_verifications_total", &[("result", "quarantined")]) >= 1.0);
    let (_, list) = t.admin_call("GET", "/v1/tenants/acme/tokens", None);
    assert_eq!(list["tokens"][0]["status"], "quarantined");
    let (s, v) = t.admin_call("POST", &format!("/v1/tenants/acme/tokens/{id}/unblock"), None);
    assert_eq!((s, v["was_quarantined"].as_bool()), (200, Some(true)));
    assert_eq!(req(&c, &t, &a, "/again", "integration/1.0"), 200);
}

#[test]
fn session_records_in_file_stream_and_api() {
    let redis = Redis::start();
    let up = echo_upstream();
    let mut setup = Setup::new(vec![
        TenantSpec::new("acme", &[HOST], up),
        TenantSpec::new("globex", &["api.globex.example"], up),
    ]);
    let acme_secops = setup.tenant_admin("acme");
    setup.redis_store(&redis, "");
    let t = setup.start("sessions");
    t.wait_ready();
    let (id, a) = t.mint("acme", "upstream-secret-for-sessions");
    let c = client_from(&t, &setup.ca_pem, None);
    let r = c
        .post(t.url(HOST, "/v1/orders?customer=alice&page=2"))
        .bearer_auth(&a)
        .header("user-agent", "zapier/2.0")
        .body("0123456789")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();

    let record = |text: &str| -> Option<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["request_id"] == rid.as_str())
    };
    let mut rec = None;
    eventually(Duration::from_secs(5), || {
        rec = record(&std::fs::read_to_string(&t.sessions).unwrap_or_default());
        rec.is_some()
    });
    let rec = rec.expect("record in the JSON lines file");
    assert_eq!(rec["tenant"], "acme");
    assert_eq!(rec["token_id"], id.as_str());
    assert_eq!(rec["client_ip"], "127.0.0.1");
    assert_eq!(rec["user_agent"], "zapier/2.0");
    assert_eq!(rec["method"], "POST");
    assert_eq!(rec["host"], format!("{HOST}:{}", t.ports.https));
    assert_eq!(rec["path"], "/v1/orders?customer=*&page=*");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["upstream_status"], 200);
    assert_eq!(rec["bytes_in"], 10);
    assert!(rec["bytes_out"].as_u64().unwrap() > 100);
    assert!(rec["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(rec["verify"], "ok");
    assert!(rec["ts"].as_u64().unwrap() > 1_700_000_000_000);
    let text = rec.to_string();
    assert!(!text.contains(&a) && !text.contains("upstream-secret-for-sessions") && !text.contains("alice"));

    // Same record in the tenant's Redis stream.
    let stream = redis.cli(&["XRANGE", "tessera:log:acme", "-", "+"]).unwrap();
    assert!(stream.contains(&rid), "record missing from Redis stream");
    // Through the admin API, filtered by token, and scoped.
    let (s, v) = t.admin_call_as(
        &acme_secops,
        "GET",
        &format!("/v1/tenants/acme/sessions?token_id={id}&limit=10"),
        None,
    );
    assert_eq!(s, 200);
    let recs = v["records"].as_array().unwrap();
    assert!(!recs.is_empty() && recs.iter().all(|r| r["token_id"] == id.as_str()));
    let (s, _) = t.admin_call_as(&acme_secops, "GET", "/v1/tenants/globex/sessions", None);
    assert_eq!(s, 403);
    let (s, _) = t.admin_call("GET", "/v1/tenants/acme/sessions?limit=abc", None);
    assert_eq!(s, 400);
    // The CLI wraps the API.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["sessions", "--tenant", "acme", "--token", &id, "--limit", "5"])
        .env("TESSERA_ADMIN_URL", t.admin_url(""))
        .env("TESSERA_ADMIN_TOKEN", &t.admin_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&rid));

    // --follow prints records that arrive after it started.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["sessions", "--tenant", "acme", "--follow", "--limit", "50"])
        .env("TESSERA_ADMIN_URL", t.admin_url(""))
        .env("TESSERA_ADMIN_TOKEN", &t.admin_token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let later = c.get(t.url(HOST, "/later")).bearer_auth(&a).send().unwrap();
    let later_id = later.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen = eventually(Duration::from_secs(10), || rx.try_iter().any(|l| l.contains(&later_id)));
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen.is_some(), "--follow did not print the new record");
}

#[test]
fn metrics_parse_and_carry_no_identifiers() {
    let up = echo_upstream();
    let mut setup = Setup::new(vec![
        TenantSpec::new("acme", &[HOST], up),
        TenantSpec::new("globex", &["api.globex.example"], up),
    ]);
    setup.extra = "metrics: { tenant_label_cap: 1 }\n".into();
    let t = setup.start("metrics");
    let (id, a) = t.mint("acme", "tok");
    let (_, g) = t.mint("globex", "tok2");
    let c = t.client(&[HOST, "api.globex.example"]);
    for _ in 0..3 {
        assert_eq!(
            c.get(t.url(HOST, "/m?secret=1"))
                .bearer_auth(&a)
                .send()
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            c.get(t.url("api.globex.example", "/m"))
                .bearer_auth(&g)
                .send()
                .unwrap()
                .status(),
            200
        );
    }
    let text = t.metrics();
    assert_eq!(
        metric_value(
            &text,
            "tessera_requests_total",
            &[("tenant", "acme"), ("code_class", "2xx")]
        ),
        3.0
    );
    // Beyond the label cap the second tenant folds into _other, and that is counted.
    assert_eq!(
        metric_value(
            &text,
            "tessera_requests_total",
            &[("tenant", "_other"), ("code_class", "2xx")]
        ),
        3.0
    );
    assert_eq!(metric_value(&text, "tessera_tenant_label_overflow_total", &[]), 1.0);
    assert_eq!(
        metric_value(&text, "tessera_request_duration_seconds_count", &[("tenant", "acme")]),
        3.0
    );
    assert!(metric_value(&text, "tessera_bytes_sent_total", &[("tenant", "acme")]) > 0.0);
    assert_eq!(metric_value(&text, "tessera_store_up", &[]), 1.0);
    assert_eq!(metric_value(&text, "tessera_build_info", &[]), 1.0);
    for needle in [id.as_str(), "127.0.0.1", "/m", "secret", &a[4..20]] {
        assert!(!text.contains(needle), "{needle:?} leaked into /metrics");
    }
    // A real Prometheus parser accepts the exposition (scripts/test installs promtool).
    {
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool must be installed (scripts/test installs it with the prometheus package)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let msg = String::from_utf8_lossy(&out.stderr);
        // promtool exits 0 when clean, 3 for lint advice (e.g. naming), 1 when it cannot parse.
        assert_ne!(out.status.code(), Some(1), "promtool could not parse /metrics: {msg}");
    }
}

#[test]
fn full_log_channel_drops_and_counts_but_requests_succeed() {
    let up = echo_upstream();
    let mut setup = Setup::new(vec![TenantSpec::new("acme", &[HOST], up)]);
    // A FIFO nobody reads: the writer blocks opening it, so the channel fills up.
    let fifo = setup.path("blocked.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    setup.extra = format!("session_log: {{ file: \"{}\", channel_capacity: 4 }}\n", fifo.display());
    let ports = Ports::new();
    // Drop the harness' own session_log line so ours is the only one.
    let yaml = setup.yaml(&ports, "drops");
    let yaml = yaml
        .lines()
        .filter(|l| !l.starts_with("session_log: { file: \"") || l.contains("blocked.fifo"))
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = setup.path("drops.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let t = Tessera::spawn(
        cfg,
        ports,
        setup.path("drops.log"),
        fifo.clone(),
        setup.ca_pem.clone(),
        setup.admin_token.clone(),
        &[],
    );
    let (_, a) = t.mint("acme", "tok");
    let c = t.client(&[HOST]);
    for _ in 0..40 {
        assert_eq!(c.get(t.url(HOST, "/d")).bearer_auth(&a).send().unwrap().status(), 200);
    }
    let counted = eventually(Duration::from_secs(2), || {
        t.metric("tessera_session_log_dropped_total", &[("sink", "channel")]) >= 30.0
    });
    let dropped = t.metric("tessera_session_log_dropped_total", &[("sink", "channel")]);
    assert!(counted.is_some(), "only {dropped} drops counted");
    // Unblock the writer so the process can exit cleanly.
    let _ = std::fs::File::open(&fifo);
}

/// Start an instance whose `session_log` line gets `extra` settings (the harness writes its
/// own `session_log: { file: … }` line; a second one would be a duplicate key).
fn start_with_session_log(setup: &Setup, name: &str, extra: &str) -> Tessera {
    let ports = Ports::new();
    let yaml = setup
        .yaml(&ports, name)
        .replace("session_log: { file: \"", &format!("session_log: {{ {extra}, file: \""));
    setup.start_yaml(name, ports, &yaml, &[])
}

/// `stream_max_age` applies to every configured tenant's stream, including a tenant that has
/// not logged anything since start-up; a failing XTRIM is counted and its warning rate-limited.
#[test]
fn idle_tenant_streams_are_trimmed_and_trim_errors_counted() {
    let redis = Redis::start();
    let up = echo_upstream();
    let mut setup = Setup::new(vec![
        TenantSpec::new("acme", &[HOST], up),
        TenantSpec::new("globex", &["api.globex.example"], up),
        TenantSpec::new("initech", &["api.initech.example"], up),
    ]);
    setup.redis_store(&redis, "");
    // globex's stream holds 250 entries from 1970 (a previous run); it gets no traffic now.
    redis
        .cli(&[
            "EVAL",
            "for i = 1, 250 do redis.call('XADD', KEYS[1], '1-' .. i, 'r', '{}') end",
            "1",
            "tessera:log:globex",
        ])
        .unwrap();
    assert_eq!(redis.cli(&["XLEN", "tessera:log:globex"]).unwrap().trim(), "250");
    // initech's stream key holds a string: every XTRIM on it fails with WRONGTYPE.
    redis.cli(&["SET", "tessera:log:initech", "not a stream"]).unwrap();

    // stream_max_age 10s: trimmed every second.
    let t = start_with_session_log(&setup, "trim", "stream_max_age: 10s");
    t.wait_ready();
    let c = t.client(&[HOST]);
    let (_, a) = t.mint("acme", "tok");
    assert_eq!(
        c.get(t.url(HOST, "/fresh")).bearer_auth(&a).send().unwrap().status(),
        200
    );

    // XTRIM MINID ~ drops whole stream nodes (100 entries each): 250 → at most 50 left.
    let trimmed = eventually(Duration::from_secs(10), || {
        redis
            .cli(&["XLEN", "tessera:log:globex"])
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n < 250)
    });
    assert!(trimmed.is_some(), "the idle tenant's stream was never trimmed");
    // Fresh records are kept.
    let acme_len = eventually(Duration::from_secs(5), || {
        redis
            .cli(&["XLEN", "tessera:log:acme"])
            .is_some_and(|n| n.trim() != "0")
    });
    assert!(acme_len.is_some(), "acme's fresh record is missing");

    // Three failing passes are three counted errors, and one warning.
    let counted = eventually(Duration::from_secs(10), || {
        t.metric("tessera_session_log_trim_errors_total", &[]) >= 3.0
    });
    assert!(counted.is_some(), "failed XTRIMs are not counted");
    let warnings = t.log_text().matches("XTRIM by stream_max_age failed").count();
    assert_eq!(warnings, 1, "trim failures must be logged at most once a minute");
}

/// Finding 7: a client that puts something Part-A-shaped in the path, the query, the user agent
/// or X-Request-Id must not get it written to session records (file sink, stdout, admin API)
/// or to Pingora's own error lines.
#[test]
fn part_a_shaped_client_text_is_scrubbed_from_records_and_logs() {
    let up = echo_upstream();
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let setup = Setup::new(vec![
        TenantSpec::new("acme", &[HOST], up),
        TenantSpec::new("deadco", &["api.deadco.example"], dead),
    ]);
    let t = setup.start("scrub");
    let (_, a) = t.mint("acme", "upstream-secret-for-scrub");
    // A second, real Part A that the client leaks in its own request text.
    let (_, leaked) = t.mint("acme", "other-upstream-secret");
    let (_, dead_a) = t.mint("deadco", "dead-upstream-secret");
    let secret = &leaked[4..];
    let c = t.client(&[HOST, "api.deadco.example"]);
    let r = c
        .get(t.url(HOST, &format!("/v1/items/{leaked}/x?token={leaked}&{leaked}")))
        .bearer_auth(&a)
        .header("user-agent", format!("bot/1.0 ({leaked})"))
        .header("x-request-id", leaked.as_str())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // The leaked Part A used as the path of a failing upstream request: Pingora logs an error
    // line with the request summary.
    let r = c
        .get(t.url("api.deadco.example", &format!("/{leaked}")))
        .bearer_auth(&dead_a)
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);

    let mut rec = None;
    eventually(Duration::from_secs(5), || {
        rec = std::fs::read_to_string(&t.sessions)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["tenant"] == "acme" && r["path"].as_str().is_some_and(|p| p.starts_with("/v1/items/")));
        rec.is_some()
    });
    let rec = rec.expect("session record for the request");
    assert_eq!(rec["path"], "/v1/items/tsr_[redacted]/x?token=*&tsr_[redacted]");
    assert_eq!(rec["user_agent"], "bot/1.0 (tsr_[redacted])");
    // A Part-A-shaped X-Request-Id is not even accepted (too long for a request id): Tessera
    // generated its own.
    let rid = rec["request_id"].as_str().unwrap_or("");
    assert!(!rid.is_empty() && !rid.contains("tsr_"), "{rid}");
    let (s, v) = t.admin_call("GET", "/v1/tenants/acme/sessions?limit=100", None);
    assert_eq!(s, 200);
    let api = v.to_string();
    assert!(api.contains("/v1/items/tsr_[redacted]/x"), "{api}");
    assert!(!api.contains(secret), "Part A leaked through the admin API: {api}");
    // The failing request's error line was written (so the check below means something).
    assert!(
        eventually(Duration::from_secs(5), || t.log_text().contains("Fail to proxy")).is_some(),
        "no Pingora error line for the failed upstream"
    );
    assert!(t.log_text().contains("/tsr_[redacted]"));
    assert_not_in_files(&[t.sessions.as_path(), t.log.as_path()], &[secret]);
}
