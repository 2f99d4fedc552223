//! Split tokens end to end against the embedded store and a real Redis: mint, reconstruct,
//! revoke (API and `redis-cli DEL`), rotate, fail closed, admin scopes, and no secret in logs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const UPSTREAM_TOKEN: &str = "ghp_UpstreamSecretForTests0123456789ab";

fn setup_one(extra: &str) -> Setup {
    let up = echo_upstream();
    Setup::new(vec![
        TenantSpec::new("acme", &["saas.acme.example"], up).extra(extra),
        TenantSpec::new("globex", &["api.globex.example"], up),
    ])
}

fn get(t: &Tessera, host: &str, part_a: Option<&str>) -> reqwest::blocking::Response {
    let mut r = t.client(&[host]).get(t.url(host, "/v1/data"));
    if let Some(a) = part_a {
        r = r.bearer_auth(a);
    }
    r.send().unwrap()
}

fn assert_401(r: reqwest::blocking::Response) {
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(www.starts_with("Bearer"), "{www}");
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"], "invalid_token");
}

#[test]
fn refusals_are_401_and_counted_by_reason() {
    let setup = setup_one("");
    let t = setup.start("refuse");
    let (_, part_a) = t.mint("acme", UPSTREAM_TOKEN);

    // Missing: RFC 6750 says no error code without credentials.
    let r = get(&t, "saas.acme.example", None);
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"tessera\"");
    // Malformed: a typo is caught by the checksum.
    let mut typo = part_a.clone().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    assert_401(get(&t, "saas.acme.example", Some(std::str::from_utf8(&typo).unwrap())));
    assert_401(get(&t, "saas.acme.example", Some("not-a-part-a")));
    // Unknown: well formed, right tenant, but no record.
    let ring = tessera::token::Keyring::parse(&format!("k1 {}", "11".repeat(32))).unwrap();
    let meta = tessera::token::TokenMeta {
        label: String::new(),
        created_at: 0,
        expires_at: None,
        header: "Authorization".into(),
        scheme: "Bearer".into(),
        replaces: None,
        kind: Default::default(),
        grant_id: None,
    };
    let stranger = tessera::token::mint(&ring, "acme", b"x", &meta).unwrap();
    assert_401(get(&t, "saas.acme.example", Some(&stranger.part_a)));
    // Other tenant's hostname.
    assert_401(get(&t, "api.globex.example", Some(&part_a)));
    // Expired.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let exp = soon.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (s, v) = t.admin_call(
        "POST",
        "/v1/tenants/acme/tokens",
        Some(json!({"token": "short-lived", "expires_at": exp})),
    );
    assert_eq!(s, 201);
    let short = v["part_a"].as_str().unwrap().to_string();
    assert_eq!(get(&t, "saas.acme.example", Some(&short)).status(), 200);
    std::thread::sleep(Duration::from_millis(2100));
    assert_401(get(&t, "saas.acme.example", Some(&short)));

    for (result, tenant) in [
        ("missing", "acme"),
        ("malformed", "acme"),
        ("unknown", "acme"),
        ("wrong_tenant", "globex"),
        ("expired", "acme"),
        ("ok", "acme"),
    ] {
        assert!(
            t.metric(
                "tessera_token_verifications_total",
                &[("tenant", tenant), ("result", result)]
            ) >= 1.0,
            "no {result} counted"
        );
    }
    assert!(t.metric("tessera_token_verifications_total", &[("result", "malformed")]) >= 2.0);
}

#[test]
fn mint_forward_revoke_rotate_embedded() {
    let setup = setup_one("");
    let mut t = setup.start("embedded");
    let (id, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    assert!(part_a.starts_with("tsr_") && part_a.len() == tessera::token::PART_A_LEN);

    let r = get(&t, "saas.acme.example", Some(&part_a));
    assert_eq!(r.status(), 200);
    let body = r.text().unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["authorization"], format!("Bearer {UPSTREAM_TOKEN}"));
    assert_eq!(v["headers"]["x-tenant-id"], "acme");
    assert!(!body.contains(&part_a), "Part A reached the upstream");

    // List shows metadata only.
    let (s, list) = t.admin_call("GET", "/v1/tenants/acme/tokens", None);
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(text.contains(&id) && !text.contains(&part_a) && !text.contains(UPSTREAM_TOKEN));
    assert_eq!(list["tokens"][0]["status"], "active");

    // Survives a restart (crash-safe embedded store).
    assert!(t.terminate());
    let t2 = setup.start("embedded");
    assert_eq!(get(&t2, "saas.acme.example", Some(&part_a)).status(), 200);

    // Rotate with the current Part A: new works, old refused.
    let (s, v) = t2.admin_call(
        "POST",
        &format!("/v1/tenants/acme/tokens/{id}/rotate"),
        Some(json!({"part_a": part_a})),
    );
    assert_eq!(s, 201, "{v}");
    let new_a = v["part_a"].as_str().unwrap().to_string();
    let new_id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["replaces"], id.as_str());
    assert_ne!(new_id, id);
    let r = get(&t2, "saas.acme.example", Some(&new_a));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["headers"]["authorization"],
        format!("Bearer {UPSTREAM_TOKEN}")
    );
    assert_401(get(&t2, "saas.acme.example", Some(&part_a)));
    // Rotating with a wrong Part A is refused.
    let (s, _) = t2.admin_call(
        "POST",
        &format!("/v1/tenants/acme/tokens/{new_id}/rotate"),
        Some(json!({"part_a": part_a})),
    );
    assert_eq!(s, 400);

    // Revoke: next request refused, counted as revoked.
    let (s, _) = t2.admin_call("DELETE", &format!("/v1/tenants/acme/tokens/{new_id}"), None);
    assert_eq!(s, 200);
    assert_401(get(&t2, "saas.acme.example", Some(&new_a)));
    assert!(t2.metric("tessera_token_verifications_total", &[("result", "revoked")]) >= 1.0);
    let (s, _) = t2.admin_call("DELETE", &format!("/v1/tenants/acme/tokens/{new_id}"), None);
    assert_eq!(s, 404, "second revoke says it is gone");
}

#[test]
fn custom_header_form() {
    let setup = setup_one("");
    let t = setup.start("hdrform");
    let (s, v) = t.admin_call(
        "POST",
        "/v1/tenants/acme/tokens",
        Some(json!({"token": "key-123", "header": "X-Api-Key"})),
    );
    assert_eq!(s, 201, "{v}");
    let r = get(&t, "saas.acme.example", Some(v["part_a"].as_str().unwrap()));
    let body: Value = r.json().unwrap();
    assert_eq!(body["headers"]["x-api-key"], "key-123");
    assert!(body["headers"].get("authorization").is_none());
    // Bad mint input is a clear 400.
    for bad in [
        json!({"token": "has space"}),
        json!({"label": "no token"}),
        json!({"token": "x", "header": "Host"}),
        json!({"token": "x", "expires_at": "yesterday"}),
    ] {
        let (s, v) = t.admin_call("POST", "/v1/tenants/acme/tokens", Some(bad.clone()));
        assert_eq!(s, 400, "{bad} → {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn admin_scopes() {
    let mut setup = setup_one("");
    let acme_secops = setup.tenant_admin("acme");
    let t = setup.start("scopes");
    let (id, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    let (gid, _) = t.mint("globex", "globex-secret");
    // No or wrong token → 401.
    let r = t.admin.get(t.admin_url("/v1/tenants/acme/tokens")).send().unwrap();
    assert_eq!(r.status(), 401);
    let (s, _) = t.admin_call_as("tsa_wrong", "GET", "/v1/tenants/acme/tokens", None);
    assert_eq!(s, 401);
    // Tenant scope: own tenant yes, other tenant and key rotation no.
    let (s, _) = t.admin_call_as(&acme_secops, "GET", "/v1/tenants/acme/tokens", None);
    assert_eq!(s, 200);
    let (s, _) = t.admin_call_as(
        &acme_secops,
        "DELETE",
        &format!("/v1/tenants/globex/tokens/{gid}"),
        None,
    );
    assert_eq!(s, 403);
    let (s, _) = t.admin_call_as(&acme_secops, "POST", "/v1/keys/rotate", None);
    assert_eq!(s, 403);
    let (s, _) = t.admin_call_as(&acme_secops, "GET", "/v1/tenants/nosuch/tokens", None);
    assert_eq!(s, 403, "tenant-scoped callers learn nothing about other tenants");
    // The tenant's own security team revokes its integration.
    let (s, _) = t.admin_call_as(&acme_secops, "DELETE", &format!("/v1/tenants/acme/tokens/{id}"), None);
    assert_eq!(s, 200);
    assert_401(get(&t, "saas.acme.example", Some(&part_a)));
    let (s, _) = t.admin_call("GET", "/v1/tenants/nosuch/tokens", None);
    assert_eq!(s, 404);
}

#[test]
fn redis_store_revoke_by_redis_cli_del_and_fail_closed() {
    let mut redis = Redis::start_persistent();
    let mut setup = setup_one("");
    setup.redis_store(&redis, "");
    let t = setup.start("redis");
    t.wait_ready();
    let (id, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    let key = format!("tessera:frag:acme:{id}");
    assert_eq!(
        redis.cli(&["EXISTS", &key]).unwrap().trim(),
        "1",
        "documented key layout"
    );
    assert_eq!(get(&t, "saas.acme.example", Some(&part_a)).status(), 200);

    // Tampering with the stored record is detected before anything goes upstream.
    let (id2, part_a2) = t.mint("acme", "second-token");
    let key2 = format!("tessera:frag:acme:{id2}");
    redis.cli(&["SETRANGE", &key2, "40", "XXXX"]).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || get(&t, "saas.acme.example", Some(&part_a2))
            .status()
            == 401)
        .is_some()
    );
    assert!(t.metric("tessera_token_verifications_total", &[("result", "tampered")]) >= 1.0);

    // Redis down: fail closed with 503 + Retry-After, never forwarded.
    redis.stop();
    let refused = eventually(Duration::from_secs(5), || {
        let r = get(&t, "saas.acme.example", Some(&part_a));
        r.status() == 503 && r.headers().get("retry-after").is_some()
    });
    assert!(refused.is_some(), "no 503 while Redis is down");
    assert!(!t.ready(), "/readyz must report the blind instance");
    assert!(t.metric("tessera_token_verifications_total", &[("result", "store_unavailable")]) >= 1.0);
    assert_eq!(t.metric("tessera_store_up", &[]), 0.0);
    // Redis back: works again by itself.
    redis.restart();
    let back = eventually(Duration::from_secs(10), || {
        get(&t, "saas.acme.example", Some(&part_a)).status() == 200
    });
    assert!(back.is_some(), "service did not resume after Redis came back");
    t.wait_ready();

    // A security team revokes with a plain redis-cli DEL.
    assert_eq!(redis.cli(&["DEL", &key]).unwrap().trim(), "1");
    let gone = eventually(Duration::from_millis(500), || {
        get(&t, "saas.acme.example", Some(&part_a)).status() == 401
    });
    assert!(gone.is_some(), "DEL did not revoke");
}

/// Run a mixed workload with the most verbose logging, then search every byte Tessera wrote
/// (logs, session log) for the upstream tokens and Part A values.
#[test]
fn secrets_never_logged() {
    let redis = Redis::start();
    let mut setup = setup_one("");
    setup.redis_store(&redis, "");
    let t = setup.start_with_env("secrets", &[("RUST_LOG", "trace")]);
    t.wait_ready();
    let (id, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    let (_, part_a_other) = t.mint("globex", "globex-upstream-secret-42");
    let c = t.client(&["saas.acme.example", "api.globex.example"]);
    for _ in 0..3 {
        assert_eq!(
            c.get(t.url("saas.acme.example", "/x?api_key=querysecret"))
                .bearer_auth(&part_a)
                .send()
                .unwrap()
                .status(),
            200
        );
        let _ = c
            .get(t.url("api.globex.example", "/x"))
            .bearer_auth(&part_a)
            .send()
            .unwrap();
        let _ = c
            .post(t.url("saas.acme.example", "/y"))
            .bearer_auth(&part_a_other)
            .body("b")
            .send()
            .unwrap();
    }
    let h2 = client_for(&setup.ca_pem, t.ports.https, &["saas.acme.example"], true);
    assert_eq!(
        h2.get(t.url("saas.acme.example", "/h2"))
            .bearer_auth(&part_a)
            .send()
            .unwrap()
            .status(),
        200
    );
    let (s, v) = t.admin_call(
        "POST",
        &format!("/v1/tenants/acme/tokens/{id}/rotate"),
        Some(json!({"part_a": part_a})),
    );
    assert_eq!(s, 201);
    let rotated = v["part_a"].as_str().unwrap().to_string();
    assert_eq!(
        c.get(t.url("saas.acme.example", "/z"))
            .bearer_auth(&rotated)
            .send()
            .unwrap()
            .status(),
        200
    );
    let _ = c
        .get(t.url("saas.acme.example", "/z"))
        .bearer_auth(&part_a)
        .send()
        .unwrap();
    // Session records are written asynchronously; wait for them, then stop to flush logs.
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&t.sessions)
            .unwrap_or_default()
            .lines()
            .count()
            >= 12)
        .is_some()
    );
    let log = t.log_text();
    assert!(log.contains(&id), "token ids are what gets logged");
    let sessions = std::fs::read_to_string(&t.sessions).unwrap();
    assert!(sessions.contains("api_key=*"), "query values are redacted");
    assert!(!sessions.contains("querysecret"));
    let body_a = &part_a[4..40];
    assert_not_in_files(
        &[&t.log, &t.sessions],
        &[
            UPSTREAM_TOKEN,
            "globex-upstream-secret-42",
            &part_a,
            body_a,
            &part_a_other,
            &rotated,
            &rotated[4..40],
        ],
    );
    // The Redis stream holds the same records: no secret there either.
    let stream = redis.cli(&["XRANGE", "tessera:log:acme", "-", "+"]).unwrap();
    assert!(stream.contains(&id));
    for s in [UPSTREAM_TOKEN, part_a.as_str(), rotated.as_str()] {
        assert!(!stream.contains(s));
    }
}

#[test]
fn cli_mints_from_stdin_lists_and_revokes() {
    let setup = setup_one("");
    let t = setup.start("cli");
    let bin = env!("CARGO_BIN_EXE_tessera");
    let cli = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = std::process::Command::new(bin)
            .args(args)
            .env("TESSERA_ADMIN_URL", t.admin_url(""))
            .env("TESSERA_ADMIN_TOKEN", &t.admin_token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // The upstream token comes from stdin, never argv.
    let out = cli(
        &["token", "mint", "--tenant", "acme", "--label", "from-cli"],
        Some("cli-upstream-secret\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, part_a) = (v["id"].as_str().unwrap(), v["part_a"].as_str().unwrap());
    let r = get(&t, "saas.acme.example", Some(part_a));
    assert_eq!(
        r.json::<Value>().unwrap()["headers"]["authorization"],
        "Bearer cli-upstream-secret"
    );
    let out = cli(&["token", "list", "--tenant", "acme"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-cli"));
    let out = cli(&["token", "revoke", "--tenant", "acme", "--id", id], None);
    assert!(out.status.success());
    assert_401(get(&t, "saas.acme.example", Some(part_a)));
    // Empty stdin is a clear usage error (exit 2).
    let out = cli(&["token", "mint", "--tenant", "acme"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    // A wrong admin token is reported, not a panic.
    let out = std::process::Command::new(bin)
        .args(["token", "list", "--tenant", "acme"])
        .env("TESSERA_ADMIN_URL", t.admin_url(""))
        .env("TESSERA_ADMIN_TOKEN", "tsa_nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn rediss_store_with_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tessera::demo::certs::DemoCa::new("redis CA").unwrap();
    let (cert, key) = ca.issue(&["localhost"]).unwrap().write(dir.path(), "redis").unwrap();
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    // Stopped by pid when dropped, even if an assertion below fails.
    let server = Redis::start_tls(&cert, &key, &ca_file);
    let port = server.port;
    let cli = |args: &[&str]| server.cli(args);

    let mut setup = setup_one("");
    setup.store = format!(
        "{{ kind: redis, url: \"rediss://localhost:{port}/0\", tls_ca: \"{}\" }}",
        ca_file.display()
    );
    let t = setup.start("rediss");
    t.wait_ready();
    let (id, part_a) = t.mint("acme", UPSTREAM_TOKEN);
    assert_eq!(get(&t, "saas.acme.example", Some(&part_a)).status(), 200);
    assert_eq!(get(&t, "saas.acme.example", Some(&part_a)).status(), 200);
    assert_eq!(cli(&["DEL", &format!("tessera:frag:acme:{id}")]).unwrap().trim(), "1");
    assert!(eventually(Duration::from_millis(300), || get(
        &t,
        "saas.acme.example",
        Some(&part_a)
    )
    .status()
        == 401)
    .is_some());
}
