//! The OAuth token swap's own cost (criterion): what Tessera's token endpoint does with a
//! `200` token answer besides the exchange with the authorization server.
//!
//! Run:        cargo bench --bench oauth_swap
//! Quick run:  cargo bench --bench oauth_swap -- --warm-up-time 1 --measurement-time 3
//! Smoke (CI): cargo bench --bench oauth_swap -- --test      (runs every routine once, no timing)
//!
//! The steps are those of `oauth::swap` (`token_steps` after the exchange, `store_grant`), made
//! of the same public functions: `serde_json` parse of the answer, the two token members taken
//! out, `token::mint` for the access record (expiry from `expires_in`) and the refresh record,
//! the grant record (`token::grant::encode`), the answer re-serialised with the Part A values.
//! The answer is the shape oidc-provider sends for a code exchange (opaque 43-character access
//! and refresh tokens, an RS256 ID token, ~1 KiB).
//!
//! - `swap/parse_split`: parse + two mints + grant record + re-serialise (CPU only).
//! - `swap/parse_split_store_embedded`: the same plus the three writes of a new grant
//!   (access record, refresh record, grant record) to the embedded store (`redb`, one durable
//!   commit each, as `store: embedded` does), on a current-thread tokio runtime.
//! - `swap/open_refresh`: the refresh side before the exchange: `PartA::parse` + `open_token`
//!   of a refresh record (the store read is a map probe with the embedded store; see
//!   `benches/crypto.rs`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;

use tessera::fragments::{EmbeddedStore, FragmentStore};
use tessera::oauth::grants;
use tessera::token::grant::GrantMeta;
use tessera::token::{self, Keyring, PartA, TokenId, TokenKind, TokenMeta};

const TENANT: &str = "acme";
const NOW: i64 = 1_800_000_000;

/// An oidc-provider code exchange answer (values random-looking, same lengths).
fn answer() -> Vec<u8> {
    let id_token = format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InNId1A0TnMxdnlDeUpCSG51SWtpSlhkdmZTenVOcHpkNDB5V2g1OVUyRUUifQ.{}.{}",
        "e".repeat(240),
        "s".repeat(342)
    );
    serde_json::to_vec(&serde_json::json!({
        "access_token": "cJ9Yp3kQ_8mZxT2vLwR4nB6sD1fG7hJ0aE5uI-oPqW3",
        "expires_in": 3600,
        "id_token": id_token,
        "refresh_token": "Zr8TnYq2LmX4vB7cK1pW9sD3fG6hJ0aE5uI-oPqWxYz",
        "scope": "openid offline_access api",
        "token_type": "Bearer",
    }))
    .expect("literal serialises")
}

fn keyring() -> Keyring {
    Keyring::parse("k1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        .expect("keyring literal parses")
}

fn meta(kind: TokenKind, grant: &TokenId, expires_at: Option<i64>) -> TokenMeta {
    let access = kind == TokenKind::Access;
    TokenMeta {
        label: format!("oauth {} (integration)", kind.label()),
        created_at: NOW,
        expires_at,
        header: if access { "authorization" } else { "" }.into(),
        scheme: if access { "Bearer" } else { "" }.into(),
        replaces: None,
        kind,
        grant_id: Some(grant.to_string()),
    }
}

/// Split one token into a record of `grant`, as the token endpoint does.
fn mint(ring: &Keyring, value: &[u8], kind: TokenKind, grant: &TokenId, expires_at: Option<i64>) -> token::Minted {
    token::mint(ring, TENANT, value, &meta(kind, grant, expires_at)).expect("mint")
}

/// One swapped answer: the records to store (id, kind, record, expiry), the grant record, and
/// the answer the integration gets.
struct Swapped {
    records: Vec<(TokenId, TokenKind, Vec<u8>, Option<i64>)>,
    grant: (TokenId, GrantMeta),
    body: Vec<u8>,
}

/// Parse + split + grant record + re-serialise, as `oauth::swap` does after a `200`.
fn swap(ring: &Keyring, raw: &[u8]) -> Swapped {
    let mut doc: Value = serde_json::from_slice(raw).expect("a JSON answer");
    let obj = doc.as_object_mut().expect("an object");
    let take = |obj: &mut serde_json::Map<String, Value>, k: &str| match obj.get_mut(k) {
        Some(Value::String(s)) => zeroize::Zeroizing::new(std::mem::take(s)),
        _ => panic!("no {k}"),
    };
    let access = take(obj, "access_token");
    let refresh = take(obj, "refresh_token");
    let expires_at = obj.get("expires_in").and_then(Value::as_i64).map(|s| NOW + s);
    let grant = TokenId::random();
    let a = mint(ring, access.as_bytes(), TokenKind::Access, &grant, expires_at);
    let r = mint(ring, refresh.as_bytes(), TokenKind::Refresh, &grant, None);
    let gm = GrantMeta {
        created_at: NOW,
        grant_type: "authorization_code".into(),
        client_id: Some("integration".into()),
        last_refresh_at: None,
        refreshes: 0,
        revoked_at: None,
        members: vec![
            grants::member(&a.id, TokenKind::Access, NOW, expires_at),
            grants::member(&r.id, TokenKind::Refresh, NOW, None),
        ],
    };
    obj.insert("access_token".into(), Value::String(a.part_a.to_string()));
    obj.insert("refresh_token".into(), Value::String(r.part_a.to_string()));
    Swapped {
        records: vec![
            (a.id, TokenKind::Access, a.record, expires_at),
            (r.id, TokenKind::Refresh, r.record, None),
        ],
        grant: (grant, gm),
        body: serde_json::to_vec(&doc).expect("serialises"),
    }
}

async fn store(s: &EmbeddedStore, w: &Swapped) {
    for (id, _, record, expires_at) in &w.records {
        match expires_at {
            Some(e) => s.put_expiring(TENANT, id, record, (e - NOW) as u64).await,
            None => s.put(TENANT, id, record).await,
        }
        .expect("store write");
    }
    grants::create(s, TENANT, &w.grant.0, &w.grant.1)
        .await
        .expect("grant write");
}

fn bench_swap(c: &mut Criterion) {
    let ring = keyring();
    let raw = answer();
    // Sanity: the answer swaps into Part A values.
    let w = swap(&ring, &raw);
    let out: Value = serde_json::from_slice(&w.body).expect("JSON");
    assert!(out["access_token"].as_str().is_some_and(|a| a.starts_with("tsr_")));
    assert_eq!(
        out["id_token"],
        serde_json::from_slice::<Value>(&raw).expect("JSON")["id_token"]
    );

    let mut g = c.benchmark_group("swap");
    g.bench_function("parse_split", |b| b.iter(|| swap(&ring, black_box(&raw))));

    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = EmbeddedStore::open(&dir.path().join("swap.redb")).expect("embedded store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    g.bench_function("parse_split_store_embedded", |b| {
        b.iter(|| {
            let w = swap(&ring, black_box(&raw));
            rt.block_on(store(&embedded, &w));
            w.body
        })
    });

    // The refresh side: open the refresh Part A's record.
    let grant = TokenId::random();
    let r = mint(
        &ring,
        b"Zr8TnYq2LmX4vB7cK1pW9sD3fG6hJ0aE5uI-oPqWxYz",
        TokenKind::Refresh,
        &grant,
        None,
    );
    let part_a: String = r.part_a.to_string();
    g.bench_function("open_refresh", |b| {
        b.iter(|| {
            let p = PartA::parse(black_box(&part_a)).expect("parse");
            token::open_token(&ring, TENANT, &p, black_box(&r.record), NOW).expect("opens")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_swap);
criterion_main!(benches);
