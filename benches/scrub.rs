//! Cost of scrubbing Part-A-shaped text from session records (runs in the session-log
//! writer, once per client-supplied field of every record; never on a proxy thread).
//!
//! Run:        cargo bench --bench scrub
//! Smoke (CI): cargo bench --bench scrub -- --test
//!
//! Compares the hand-written scanner `session_log::scrub_part_a` with the `regex` crate doing
//! the same replacement (`(?i:tsr)_[0-9A-Za-z]{78,}` → `tsr_[redacted]`), on:
//! - `clean_path`: a typical path with a query and no Part A (the common case: both borrow);
//! - `user_agent`: a typical user agent;
//! - `path_with_part_a`: a path that carries one Part A (both allocate the scrubbed copy).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use regex::Regex;

use tessera::session_log::{scrub_part_a, PART_A_REDACTED};

const CLEAN_PATH: &str = "/v1/customers/cus_8f3a9b2c/orders?status=open&page_size=50&cursor=eyJpZCI6MTIzfQ";
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

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_scrub
}
criterion_main!(benches);
