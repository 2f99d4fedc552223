use super::*;

fn conf() -> AnomalyConf {
    AnomalyConf {
        min_history: 10,
        rate_floor: 5.0,
        bytes_floor: 10_000.0,
        auth_failure_burst: 5,
        scan_distinct_404: 8,
        off_hours_min_history: 100,
        ..AnomalyConf::default()
    }
}

fn obs(status: u16, bytes: u64, path: &str, ip: [u8; 4], ua: &'static [u8]) -> Obs<'static> {
    Obs {
        ip: Some(IpAddr::from(ip)),
        user_agent: Some(ua),
        status,
        bytes_out: bytes,
        path_hash: if status == 404 { hash64(path) } else { 0 },
    }
}

const T0: u64 = 1_700_000_000_000;

/// Steady traffic: 2 requests per second for 5 minutes, same IP and UA.
fn steady(st: &mut TokenState, c: &AnomalyConf, secs: u64) -> Flags {
    let mut all = Flags::default();
    for s in 0..secs {
        for k in 0..2 {
            let f = st.observe(c, &obs(200, 500, "/", [10, 0, 0, 1], b"ua"), T0 + s * 1000 + k * 300);
            all.0 |= f.0;
        }
    }
    all
}

#[test]
fn steady_traffic_raises_nothing() {
    let c = conf();
    let mut st = TokenState::default();
    assert!(steady(&mut st, &c, 300).is_empty());
}

#[test]
fn rate_spike_fires_once_per_window() {
    let c = conf();
    let mut st = TokenState::default();
    steady(&mut st, &c, 60);
    let t = T0 + 61_000;
    let mut fired = 0;
    for k in 0..50 {
        let f = st.observe(&c, &obs(200, 500, "/", [10, 0, 0, 1], b"ua"), t + k);
        if f.has(AnomalyKind::RateSpike) {
            fired += 1;
        }
    }
    assert_eq!(fired, 1);
}

#[test]
fn bytes_spike_fires() {
    let c = conf();
    let mut st = TokenState::default();
    steady(&mut st, &c, 60);
    let f = st.observe(&c, &obs(200, 5_000_000, "/", [10, 0, 0, 1], b"ua"), T0 + 61_000);
    assert!(f.has(AnomalyKind::BytesSpike));
    assert!(!f.has(AnomalyKind::RateSpike));
}

#[test]
fn new_ip_prefix_and_user_agent() {
    let c = conf();
    let mut st = TokenState::default();
    steady(&mut st, &c, 30);
    // Same /24: nothing.
    let f = st.observe(&c, &obs(200, 500, "/", [10, 0, 0, 77], b"ua"), T0 + 31_000);
    assert!(f.is_empty());
    let f = st.observe(&c, &obs(200, 500, "/", [192, 0, 2, 1], b"ua"), T0 + 31_100);
    assert!(f.has(AnomalyKind::NewIpPrefix));
    let f = st.observe(&c, &obs(200, 500, "/", [10, 0, 0, 1], b"curl/8"), T0 + 31_200);
    assert!(f.has(AnomalyKind::NewUserAgent));
}

#[test]
fn auth_failure_burst_and_scan() {
    let c = conf();
    let mut st = TokenState::default();
    let mut auth = false;
    for k in 0..6 {
        auth |= st
            .observe(&c, &obs(401, 10, "/", [10, 0, 0, 1], b"ua"), T0 + k)
            .has(AnomalyKind::AuthFailureBurst);
    }
    assert!(auth);
    let mut st = TokenState::default();
    let mut scan = false;
    for k in 0..8 {
        scan |= st
            .observe(&c, &obs(404, 10, &format!("/p{k}"), [10, 0, 0, 1], b"ua"), T0 + k)
            .has(AnomalyKind::Scan);
    }
    assert!(scan);
    // The same 404 path repeated is not a scan.
    let mut st = TokenState::default();
    for k in 0..20 {
        assert!(!st
            .observe(&c, &obs(404, 10, "/same", [10, 0, 0, 1], b"ua"), T0 + k)
            .has(AnomalyKind::Scan));
    }
}

#[test]
fn off_hours() {
    let c = conf();
    let mut st = TokenState::default();
    // 150 requests during one hour of the week, then one 12 hours later.
    for k in 0..150 {
        assert!(!st
            .observe(&c, &obs(200, 10, "/", [10, 0, 0, 1], b"ua"), T0 + k * 10_000)
            .has(AnomalyKind::OffHours));
    }
    let f = st.observe(&c, &obs(200, 10, "/", [10, 0, 0, 1], b"ua"), T0 + 12 * 3_600_000);
    assert!(f.has(AnomalyKind::OffHours));
}

#[test]
fn state_is_small() {
    // Bounded per-token memory is what keeps millions of tokens flat.
    assert!(
        std::mem::size_of::<TokenState>() < 256,
        "{}",
        std::mem::size_of::<TokenState>()
    );
}

/// Two tenants with their own `max_tracked_tokens`: the small one holds at most its cap, the
/// large one keeps everything although the small one is flooded.
#[test]
fn each_tenant_honours_its_own_cap() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::demo::certs::DemoCa::new("t").unwrap();
    let (cert, key) = ca
        .issue(&["a.example", "b.example"])
        .unwrap()
        .write(dir.path(), "ab")
        .unwrap();
    let yaml = format!(
        "listen: {{ https: \"127.0.0.1:0\" }}\nstore: {{ kind: embedded, path: \"{}\" }}\ntenants:\n  \
         - {{ id: small, hostnames: [a.example], cert: \"{c}\", key: \"{k}\", upstream: \"http://127.0.0.1:9\", anomaly: {{ max_tracked_tokens: 40 }} }}\n  \
         - {{ id: large, hostnames: [b.example], cert: \"{c}\", key: \"{k}\", upstream: \"http://127.0.0.1:9\", anomaly: {{ max_tracked_tokens: 1000 }} }}\n",
        dir.path().join("s.redb").display(),
        c = cert.display(),
        k = key.display(),
    );
    let cfg = crate::config::Config::from_yaml(&yaml, &dir.path().join("t.yaml")).unwrap();
    let tenants = Tenants::new(&cfg.tenants, &cfg.upstream, &cfg.strip_headers).unwrap();
    let table = tenants.load_full();
    let d = Detector::new(tenants);
    let see = |tenant: usize, n: u8, k: u8| {
        let id = TokenId([n, k, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
        d.observe_at(
            &Observation {
                tenant: table.get(tenant).unwrap(),
                token_id: Some(&id),
                verify: Some(VerifyResult::Ok),
                ip: None,
                user_agent: None,
                status: 200,
                bytes_out: 1,
                path: "/",
            },
            T0,
        );
    };
    for n in 0..=255u8 {
        see(1, n, 1);
    }
    for k in 2..10u8 {
        for n in 0..=255u8 {
            see(0, n, k);
        }
    }
    assert!(d.tracked(0) <= 40, "small tenant holds {} tokens", d.tracked(0));
    assert!(d.tracked(0) >= 20, "small tenant holds only {} tokens", d.tracked(0));
    assert_eq!(
        d.tracked(1),
        256,
        "the small tenant's flood evicted the large tenant's tokens"
    );
    d.sweep();
    assert_eq!(table.get(0).unwrap().metrics.tracked_tokens.get(), d.tracked(0) as i64);
    assert_eq!(table.get(1).unwrap().metrics.tracked_tokens.get(), 256);
}

#[test]
fn bad_token_use_triggers() {
    for r in VerifyResult::ALL {
        let expected = matches!(
            r.label(),
            "revoked" | "unknown" | "expired" | "tampered" | "wrong_tenant" | "quarantined" | "wrong_kind"
        );
        assert_eq!(r.is_bad_token_use(), expected, "{r}");
    }
}
