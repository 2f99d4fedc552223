//! Cost of scrubbing Part-A-shaped text from session records (runs in the session-log
//! writer, once per client-supplied field of every record; never on a proxy thread).
//!
//! Run:        cargo bench --bench scrub
//! Smoke (CI): cargo bench --bench scrub -- --test
//!
//! Compares the hand-written scanner `session_log::scrub_part_a` with the `regex` crate doing
//! the same replacement (`(?i:tsr)_[0-9A-Za-z]{78,}` → `tsr_[redacted]`), on:
//! - `clean_path`: a 140-byte path with a query, underscores and no Part A (the common case:
//!   both borrow);
//! - `user_agent`: a typical user agent (shorter than a Part A: the scanner returns at once);
//! - `path_with_part_a`: a path that carries one Part A (both allocate the scrubbed copy).
//!
//! And where the record work now runs: `record/capture` is what the `logging` phase pays on
//! the proxy thread (`RecordDraft::capture`: clones of header values and the URI), and
//! `record/finish` what the writer pays per record (`RecordDraft::finish`: strings, query
//! redaction, scrubbing of path, host, user agent, request id) — before this split the proxy
//! thread built the strings itself (the cost of `finish` without the scrub).
//!
//! Measured on the 2-core VM (shared with other builds, so ±15 %), `cargo bench --bench scrub
//! -- --warm-up-time 1 --measurement-time 2`: clean_path scanner 4.1 ns / regex 68 ns;
//! user_agent 3.8 ns / 22 ns; path_with_part_a 307 ns / 599 ns; record/capture 217 ns,
//! record/finish 513 ns.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use regex::Regex;

use pingora::http::RequestHeader;
use tessera::anomaly::Flags;
use tessera::config::Config;
use tessera::demo::certs::DemoCa;
use tessera::session_log::{scrub_part_a, RecordDraft, PART_A_REDACTED};
use tessera::tenants::TenantTable;
use tessera::token::{TokenId, VerifyResult};

/// Longer than a Part A (82 bytes), with underscores, so the scanner does its full walk.
const CLEAN_PATH: &str =
    "/v1/customers/cus_8f3a9b2c7d/subscription_items/si_4e5f6a7b?status=open&page_size=50&starting_after=sub_sched_1a2b3c&cursor=eyJpZCI6MTIzfQ";
const USER_AGENT: &str = "zapier-platform-core/15.5.1 node/18.19.0 (linux; x64) axios/1.6.8";

fn bench_scrub(c: &mut Criterion) {
    let part_a = format!("tsr_{}", "Ab3".repeat(26));
    let with_part_a = format!("/v1/hooks/{part_a}/deliveries?since=2026-11-01");
    let re = Regex::new(r"(?i:tsr)_[0-9A-Za-z]{78,}").expect("literal regex compiles");
    // Both give the same answer on every input.
    for input in [CLEAN_PATH, USER_AGENT, with_part_a.as_str()] {
        assert_eq!(scrub_part_a(input), re.replace_all(input, PART_A_REDACTED));
    }
    let mut g = c.benchmark_group("scrub");
    for (name, input) in [
        ("clean_path", CLEAN_PATH),
        ("user_agent", USER_AGENT),
        ("path_with_part_a", with_part_a.as_str()),
    ] {
        g.bench_function(format!("scanner/{name}"), |b| b.iter(|| scrub_part_a(black_box(input))));
        g.bench_function(format!("regex/{name}"), |b| {
            b.iter(|| re.replace_all(black_box(input), PART_A_REDACTED))
        });
    }
    g.finish();
}

fn bench_record(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = DemoCa::new("x")
        .and_then(|ca| ca.issue(&["a.example"]))
        .and_then(|leaf| leaf.write(dir.path(), "a"))
        .expect("demo certificate");
    let yaml = format!(
        "listen: {{ https: \"127.0.0.1:0\" }}\nstore: {{ kind: embedded, path: \"{}\" }}\ntenants:\n  - {{ id: acme, hostnames: [a.example], cert: \"{}\", key: \"{}\", upstream: \"http://127.0.0.1:9\" }}\n",
        dir.path().join("s.redb").display(),
        cert.display(),
        key.display(),
    );
    let cfg = Config::from_yaml(&yaml, &dir.path().join("t.yaml")).expect("config");
    let table = TenantTable::build(&cfg.tenants, &cfg.upstream, &cfg.strip_headers).expect("tenant table");
    let tenant = table.get(0).expect("one tenant");
    let mut req = RequestHeader::build("GET", CLEAN_PATH.as_bytes(), None).expect("request");
    req.insert_header("host", "a.example").expect("host");
    req.insert_header("user-agent", USER_AGENT).expect("user agent");
    let rid = http::HeaderValue::from_static("5f1e2d3c4b5a6978-1f");
    let id = TokenId::random();
    let capture = || {
        RecordDraft::capture(
            tenant,
            Some(id),
            Some([10, 1, 2, 3].into()),
            &req,
            200,
            Some(200),
            0,
            1234,
            Duration::from_micros(850),
            Some(&rid),
            Some(VerifyResult::Ok),
            None,
            Flags::default(),
        )
    };
    let mut g = c.benchmark_group("record");
    g.bench_function("capture", |b| b.iter(|| black_box(capture())));
    g.bench_function("finish", |b| {
        b.iter_batched(capture, |d| black_box(d.finish()), criterion::BatchSize::SmallInput)
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_scrub, bench_record
}
criterion_main!(benches);
