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
fn host_patterns() {
    assert_eq!(
        parse_host_pattern("Saas.Acme.Example."),
        Ok(HostPattern::Exact("saas.acme.example".into()))
    );
    assert_eq!(
        parse_host_pattern("*.acme.example"),
        Ok(HostPattern::Wildcard("acme.example".into()))
    );
    assert!(parse_host_pattern("*.com").is_err());
    assert!(parse_host_pattern("a.*.example").is_err());
    assert!(parse_host_pattern("bad host").is_err());
    assert!(parse_host_pattern("-x.example").is_err());
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
