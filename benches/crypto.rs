//! Micro-benchmarks of the per-request crypto (and the admin-path mint, for reference).
//!
//! Run:        cargo bench --bench crypto
//! Quick run:  cargo bench --bench crypto -- --warm-up-time 1 --measurement-time 2
//! Smoke (CI): cargo bench --bench crypto -- --test      (runs every routine once, no timing)
//!
//! Benchmarks:
//! - `parse_part_a`: `PartA::parse`: length/prefix checks, CRC32, base62 decode.
//! - `reconstruct`: `token::reconstruct`: open the KEK-sealed record, Shamir-combine the two
//!   shares, decrypt the upstream token, check expiry.
//! - `full_request_crypto`: what `request_filter` does per request between reading the
//!   `Authorization` header and having the credential: parse, tenant-tag check,
//!   embedded-store `get`, reconstruct. Target: < 5 µs.
//! - `mint`: admin path (fresh DK, Shamir split, two AEAD seals), for reference.
//! - `tenant_lookup/*`: `host::normalize_host` on a lower-case host (borrows, no
//!   allocation) vs a mixed-case one (allocates the lower-cased copy).
//!
//! The anomaly quarantine check and the keyring `ArcSwap` load that `authenticate` also does
//! are not included: they are a hash probe and an atomic load, not crypto.

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use tessera::fragments::{EmbeddedStore, FragmentStore};
use tessera::host::normalize_host;
use tessera::token::{self, Keyring, PartA, TokenMeta};

const TENANT: &str = "acme";
const UPSTREAM_TOKEN: &[u8] = b"upstream-secret-0123456789abcdefghijklmnopqrstuvwxyz";

fn keyring() -> Keyring {
    // A fixed test key; the cost does not depend on the key bytes.
    Keyring::parse("k1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        .expect("keyring literal parses")
}

fn meta() -> TokenMeta {
    TokenMeta {
        label: "bench".into(),
        created_at: 1_700_000_000,
        expires_at: None,
        header: "Authorization".into(),
        scheme: "Bearer".into(),
        replaces: None,
        kind: Default::default(),
        grant_id: None,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Drive a future that is expected to be ready on its first poll.
///
/// `EmbeddedStore::get` never awaits (it reads the in-memory mirror under an `RwLock`), so a
/// single poll with a no-op waker completes it. This measures exactly what the proxy pays on
/// its request path — the `async_trait` boxing plus the map probe — without adding the cost of
/// a runtime's `block_on` (thread-local context enter/exit, park/unpark bookkeeping), which the
/// proxy does not pay per request because it is already inside its runtime. No extra crate
/// (e.g. `futures::executor`) is needed for this.
fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("EmbeddedStore::get was expected to complete without awaiting"),
    }
}

fn bench_crypto(c: &mut Criterion) {
    let ring = keyring();
    let meta = meta();
    let minted = token::mint(&ring, TENANT, UPSTREAM_TOKEN, &meta).expect("mint");
    let part_a_str: String = minted.part_a.as_str().to_owned();
    let now = unix_now();

    // Sanity: the benchmarked paths succeed (a bench of an early-error path would be useless).
    let parsed = PartA::parse(&part_a_str).expect("parse");
    let cred = token::reconstruct(&ring, TENANT, &parsed, &minted.record, now).expect("reconstruct");
    assert_eq!(cred.header, "authorization");
    assert!(cred.value.starts_with(b"Bearer "));

    c.bench_function("parse_part_a", |b| {
        b.iter(|| PartA::parse(black_box(part_a_str.as_str())).expect("parse"))
    });

    c.bench_function("reconstruct", |b| {
        b.iter(|| {
            token::reconstruct(
                &ring,
                black_box(TENANT),
                black_box(&parsed),
                black_box(&minted.record),
                now,
            )
            .expect("reconstruct")
        })
    });

    // Embedded store in a temp dir with the record written beforehand (the write path needs a
    // runtime for its spawn_blocking; reads do not).
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("bench.redb")).expect("open embedded store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(store.put(TENANT, &minted.id, &minted.record)).expect("put");
    let tag = token::tenant_tag(TENANT);

    c.bench_function("full_request_crypto", |b| {
        b.iter(|| {
            let part_a = PartA::parse(black_box(part_a_str.as_str())).expect("parse");
            // As in `authenticate`: the tag is recomputed from the tenant id each request.
            assert!(part_a.tenant_tag == token::tenant_tag(black_box(TENANT)));
            let record = poll_ready(store.get(TENANT, &part_a.id))
                .expect("store get")
                .expect("record present");
            token::reconstruct(&ring, TENANT, &part_a, &record, now).expect("reconstruct")
        })
    });
    // Keep the precomputed tag honest (and the variable used).
    assert_eq!(tag, parsed.tenant_tag);

    c.bench_function("mint", |b| {
        b.iter(|| token::mint(&ring, black_box(TENANT), black_box(UPSTREAM_TOKEN), &meta).expect("mint"))
    });

    drop(store);
    drop(rt);
}

fn bench_tenant_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("tenant_lookup");
    g.bench_function("lowercase", |b| {
        b.iter(|| {
            let h = normalize_host(black_box("saas.acme.example:443"));
            debug_assert!(matches!(h, std::borrow::Cow::Borrowed(_)));
            h
        })
    });
    g.bench_function("mixed_case", |b| {
        b.iter(|| {
            let h = normalize_host(black_box("SaaS.Acme.Example:443"));
            debug_assert!(matches!(h, std::borrow::Cow::Owned(_)));
            h
        })
    });
    g.finish();
}

fn config() -> Criterion {
    // Short defaults so a plain `cargo bench --bench crypto` finishes in well under a minute;
    // command-line flags (`--warm-up-time`, `--measurement-time`, `--test`) still override.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_crypto, bench_tenant_lookup
}
criterion_main!(benches);
