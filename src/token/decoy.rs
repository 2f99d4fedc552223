//! Even refusals: the work a refusal does should not tell a client which check failed.
//!
//! Runs on the request path in `request_filter` (`Proxy::authenticate`), only when a request is
//! about to be refused with `401`. The most expensive refusal a client can cause is a known
//! token id with a wrong Part A: the record is opened under the KEK, the shares are combined
//! and the token's AEAD tag fails. Without this, an unknown id (no record), a revoked id
//! (tombstone), a quarantined id, a wrong tenant tag or a malformed Part A were answered
//! without any of that work, so their response time said "this id exists" or "this id was
//! revoked". `equalize_refusal` does that same work against a fixed decoy record, sealed once
//! at start-up under a throw-away key, so every 401 costs one record open, one combine and one
//! failing token open.
//!
//! What it cannot hide: whether a record was in this instance's cache (a first lookup of any
//! id, known or not, costs a store round trip; the negative cache makes repeats of unknown
//! ids as cheap as cached known ones).

use std::sync::LazyLock;

use zeroize::Zeroizing;

use super::{mint_with_id, open_record, reconstruct_opened, Keyring, PartA, TokenId, TokenMeta};

/// Not a valid tenant id (`[a-z0-9_-]`), so the decoy's AAD can never match a real record.
const DECOY_TENANT: &str = "\0decoy";
const DECOY_ID: TokenId = TokenId([0; 16]);
/// A typical upstream token length, so the AEAD work matches a real record's.
const DECOY_TOKEN: &[u8] = b"decoy-upstream-token-0123456789abcdef0123456789";

struct Decoy {
    keyring: Keyring,
    record: Vec<u8>,
}

static DECOY: LazyLock<Option<Decoy>> = LazyLock::new(|| {
    let keyring = Keyring::parse(&Keyring::generate_line()).ok()?;
    let meta = TokenMeta {
        label: "decoy".into(),
        created_at: 0,
        expires_at: None,
        header: "authorization".into(),
        scheme: "Bearer".into(),
        replaces: None,
        kind: Default::default(),
        grant_id: None,
    };
    let minted = mint_with_id(&keyring, DECOY_TENANT, DECOY_ID, DECOY_TOKEN, &meta).ok()?;
    Some(Decoy {
        keyring,
        record: minted.record,
    })
});

/// Seal the decoy record now (start-up) rather than on the first refusal.
pub fn prepare_refusal_decoy() {
    LazyLock::force(&DECOY);
}

/// Do the work of refusing a known id with a wrong Part A, against the decoy record: open it
/// under its key, combine its share with `part_a`'s (zeros if the Part A did not parse), fail
/// the token's AEAD tag. Call on a refusal path that did not open a record itself. Returns
/// nothing and touches no secret of a real token.
pub fn equalize_refusal(part_a: Option<&PartA>) {
    let Some(d) = DECOY.as_ref() else { return };
    let share = part_a.map_or_else(|| Zeroizing::new([0u8; 32]), |p| p.share.clone());
    let probe = PartA {
        tenant_tag: [0; 4],
        id: DECOY_ID,
        share,
    };
    // The same steps as `reconstruct`, without its own call back here on a failed open. The
    // result is an error (the shares do not match); keep the compiler from dropping the work.
    let r = open_record(&d.keyring, DECOY_TENANT, &DECOY_ID, &d.record)
        .and_then(|plain| reconstruct_opened(DECOY_TENANT, &probe, &plain, 0));
    std::hint::black_box(r.is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{reconstruct, TokenError};

    #[test]
    fn decoy_record_opens_and_a_wrong_share_fails_like_a_real_one() {
        let d = DECOY.as_ref().expect("decoy built");
        // The record layer opens (the same work as a known id)…
        assert!(open_record(&d.keyring, DECOY_TENANT, &DECOY_ID, &d.record).is_ok());
        // …and a random share fails at the token's tag, like a wrong Part A.
        let mut share = Zeroizing::new([0u8; 32]);
        crate::token::fill_random(share.as_mut());
        let probe = PartA {
            tenant_tag: [0; 4],
            id: DECOY_ID,
            share,
        };
        assert_eq!(
            reconstruct(&d.keyring, DECOY_TENANT, &probe, &d.record, 0).unwrap_err(),
            TokenError::Tampered
        );
        equalize_refusal(None);
        equalize_refusal(Some(&probe));
    }
}
