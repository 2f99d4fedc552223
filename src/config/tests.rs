use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
    assert_eq!(parse_duration("5 parsecs"), None);
    assert_eq!(parse_duration("-1s"), None);
}

/// A duration too large for `Duration` used to panic in `Duration::from_secs_f64`.
#[test]
fn durations_too_large_are_problems() {
    assert_eq!(parse_duration("99999999999999999999"), None);
    assert_eq!(parse_duration("300000000000000d"), None);
    let yaml = "listen: { https: \"127.0.0.1:8443\" }\ngrace_period: \"99999999999999999999\"\ntenants: []\n";
    let Err(ConfigError::Invalid { problems, .. }) = Config::from_yaml(yaml, Path::new("t.yaml")) else {
        panic!("a huge grace_period must be reported");
    };
    assert!(problems.iter().any(|p| p.key == "grace_period"), "{problems:?}");
}

#[test]
fn redis_url_errors_hide_passwords() {
    assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://***@h:1/0");
    let yaml = "listen: { https: \"127.0.0.1:1\" }\nstore: { kind: redis, url: \"ftp://u:hunter2@h\" }\ntenants: []\n";
    let e = Config::from_yaml(yaml, Path::new("t.yaml")).unwrap_err().to_string();
    assert!(e.contains("store.url") && !e.contains("hunter2"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "listen: { https: \"x\", admin: \"0.0.0.0:9\" }\nthreads: 0\ngrace_period: soon\ntenants:\n  - { id: \"A\", hostnames: [], cert: /no, key: /no, upstream: \"http://h/p\" }\n";
    let e = Config::from_yaml(yaml, Path::new("t.yaml")).unwrap_err().to_string();
    for key in [
        "listen.https",
        "listen.admin",
        "threads",
        "grace_period",
        "tenants[0].id",
        "tenants[0].hostnames",
        "tenants[0].cert",
        "tenants[0].upstream",
    ] {
        assert!(e.contains(key), "{key} missing from:\n{e}");
    }
}

/// A 0 used to be raised to 1 (or left to misbehave) in silence; now each is refused with its
/// key, the value and a fix.
#[test]
fn zero_settings_are_refused_not_raised() {
    let yaml = "listen: { https: \"127.0.0.1:1\" }\n\
        store: { kind: redis, url: \"redis://127.0.0.1:1\", cache: { capacity: 0 } }\n\
        session_log: { channel_capacity: 0, memory_per_tenant: 0, file_keep: 0, file_max_bytes: 0, stream_maxlen: 0 }\n\
        anomaly: { window: 0.5ms, max_tracked_tokens: 0, auth_failure_burst: 0, scan_distinct_404: 0 }\n\
        tenants:\n  - { id: acme, hostnames: [a.example], cert: /no, key: /no, upstream: \"http://127.0.0.1:9\", anomaly: { max_tracked_tokens: 0 } }\n";
    let e = Config::from_yaml(yaml, Path::new("t.yaml")).unwrap_err().to_string();
    for key in [
        "store.cache.capacity",
        "session_log.channel_capacity",
        "session_log.memory_per_tenant",
        "session_log.file_keep",
        "session_log.file_max_bytes",
        "session_log.stream_maxlen",
        "anomaly.window",
        "anomaly.max_tracked_tokens",
        "anomaly.auth_failure_burst",
        "anomaly.scan_distinct_404",
        "tenants[0].anomaly.max_tracked_tokens",
    ] {
        let line = e
            .lines()
            .find(|l| l.contains(&format!("- {key}:")))
            .unwrap_or_else(|| panic!("{key} missing from:\n{e}"));
        assert!(
            line.contains('0') && line.contains("use "),
            "{key}: no value or fix in {line:?}"
        );
    }
}

#[test]
fn admin_console_keys() {
    let base = "listen: { https: \"127.0.0.1:8443\" }\ntenants: []\n";
    let yaml = format!("{base}admin: {{ console: {{ idle_timeout: 9h, absolute_timeout: 1h }}, audit_capacity: 0 }}\n");
    let e = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap_err().to_string();
    assert!(e.contains("admin.console.idle_timeout"), "{e}");
    assert!(e.contains("admin.audit_capacity"), "{e}");
    let yaml = format!("{base}admin: {{ console: {{ idle: 1m }} }}\n");
    let e = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap_err().to_string();
    assert!(e.contains("idle"), "unknown key must be refused: {e}");
}

fn oauth_yaml(auth: &str, oauth: &str) -> String {
    format!(
        "listen: {{ https: \"127.0.0.1:1\" }}\ntenants:\n  - {{ id: acme, hostnames: [saas.acme.example], cert: certs/acme.pem, key: certs/acme.key, upstream: \"http://127.0.0.1:9\", auth: {auth}, oauth: {oauth} }}\n"
    )
}

#[test]
fn oauth_section_is_validated() {
    let ok = oauth_yaml(
        "split_token",
        "{ hostnames: [oauth.acme.example], upstream: \"http://127.0.0.1:10\", token_path: /token, revocation_path: /token/revocation, discovery: true, refresh_token_ttl: 30d }",
    );
    let c = Config::from_yaml(&ok, Path::new("t.yaml")).unwrap();
    let o = c.tenants[0].oauth.as_ref().unwrap();
    assert_eq!(o.token_path, "/token");
    assert_eq!(o.refresh_token_ttl, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(o.max_token_response_bytes, oauth::DEFAULT_MAX_TOKEN_RESPONSE);
    assert_eq!(c.tenants[0].all_hostnames().count(), 2);

    let bad = oauth_yaml(
        "none",
        "{ hostnames: [oauth.elsewhere.example, saas.acme.example], upstream: \"ftp://x\", upstream_ca: certs/example-ca.pem, token_path: token, revocation_path: token, max_token_response_bytes: 10 }",
    );
    let e = Config::from_yaml(&bad, Path::new("t.yaml")).unwrap_err().to_string();
    for key in [
        "tenants[0].oauth:",
        "tenants[0].oauth.upstream:",
        "tenants[0].oauth.token_path:",
        "tenants[0].oauth.revocation_path:",
        "tenants[0].oauth.max_token_response_bytes:",
    ] {
        assert!(e.contains(key), "{key} missing from:\n{e}");
    }
    // The certificate must cover the OAuth hostnames; one hostname belongs to one surface.
    let uncovered = oauth_yaml(
        "split_token",
        "{ hostnames: [oauth.elsewhere.example], upstream: \"http://127.0.0.1:10\", token_path: /token }",
    );
    let e = Config::from_yaml(&uncovered, Path::new("t.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tenants[0].cert") && e.contains("oauth.elsewhere.example"),
        "{e}"
    );
    let twice = oauth_yaml(
        "split_token",
        "{ hostnames: [saas.acme.example], upstream: \"http://127.0.0.1:10\", token_path: /token }",
    );
    let e = Config::from_yaml(&twice, Path::new("t.yaml")).unwrap_err().to_string();
    assert!(e.contains("already served"), "{e}");
}

#[test]
fn preserve_header_case_defaults_off_and_must_be_a_boolean() {
    let base = "listen: { https: \"127.0.0.1:1\" }\ntenants:\n  - { id: acme, hostnames: [saas.acme.example], cert: certs/acme.pem, key: certs/acme.key, upstream: \"http://127.0.0.1:9\" }\n";
    let cfg = Config::from_yaml(base, Path::new("t.yaml")).unwrap();
    assert!(!cfg.preserve_header_case);
    let on = format!("{base}upstream: {{ preserve_header_case: true }}\n");
    assert!(
        Config::from_yaml(&on, Path::new("t.yaml"))
            .unwrap()
            .preserve_header_case
    );
    let bad = format!("{base}upstream: {{ preserve_header_case: sometimes }}\n");
    let e = Config::from_yaml(&bad, Path::new("t.yaml")).unwrap_err().to_string();
    assert!(e.contains("preserve_header_case"), "{e}");
}
