use super::*;

fn ring() -> Keyring {
    Keyring::parse(&format!("k2 {}\nk1 {}", "11".repeat(32), "22".repeat(32))).unwrap()
}

fn meta() -> TokenMeta {
    TokenMeta {
        label: "ci".into(),
        created_at: 1,
        expires_at: None,
        header: "Authorization".into(),
        scheme: "Bearer".into(),
        replaces: None,
        kind: Default::default(),
        grant_id: None,
    }
}

const TOKEN: &[u8] = b"ghp_realUpstreamSecret0123456789";

#[test]
fn round_trip() {
    let ring = ring();
    let m = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    assert_eq!(m.part_a.len(), PART_A_LEN);
    assert!(m.part_a.starts_with("tsr_"));
    let a = PartA::parse(&m.part_a).unwrap();
    assert_eq!(a.id, m.id);
    assert_eq!(a.tenant_tag, tenant_tag("acme"));
    let cred = reconstruct(&ring, "acme", &a, &m.record, 100).unwrap();
    assert_eq!(cred.header, "authorization");
    assert_eq!(&cred.value[..], b"Bearer ghp_realUpstreamSecret0123456789");
    assert_eq!(open_meta(&ring, "acme", &m.id, &m.record).unwrap(), meta());
    assert_eq!(&recover_token(&ring, "acme", &a, &m.record).unwrap()[..], TOKEN);
}

#[test]
fn custom_header_without_scheme() {
    let ring = ring();
    let mut md = meta();
    md.header = "X-Api-Key".into();
    md.scheme = String::new();
    let m = mint(&ring, "acme", TOKEN, &md).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    let cred = reconstruct(&ring, "acme", &a, &m.record, 100).unwrap();
    assert_eq!(cred.header, "x-api-key");
    assert_eq!(&cred.value[..], TOKEN);
}

#[test]
fn part_a_has_fixed_length_whatever_the_token() {
    let ring = ring();
    let long = vec![b'x'; 4000];
    let a = mint(&ring, "acme", b"x", &meta()).unwrap();
    let b = mint(&ring, "acme", &long, &meta()).unwrap();
    assert_eq!(a.part_a.len(), b.part_a.len());
}

#[test]
fn expired_token_refused() {
    let ring = ring();
    let mut md = meta();
    md.expires_at = Some(50);
    let m = mint(&ring, "acme", TOKEN, &md).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    assert!(reconstruct(&ring, "acme", &a, &m.record, 49).is_ok());
    assert_eq!(
        reconstruct(&ring, "acme", &a, &m.record, 50).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn bad_upstream_token_refused() {
    let ring = ring();
    for bad in [&b""[..], b"has space", b"new\nline", &[0xffu8][..]] {
        assert_eq!(
            mint(&ring, "acme", bad, &meta()).err().unwrap(),
            TokenError::BadUpstreamToken
        );
    }
}

#[test]
fn every_character_typo_is_caught_offline() {
    let m = mint(&ring(), "acme", TOKEN, &meta()).unwrap();
    let orig = m.part_a.as_bytes().to_vec();
    for i in 0..orig.len() {
        for repl in [b'0', b'Z', b'z', b'_'] {
            if orig[i] == repl {
                continue;
            }
            let mut t = orig.clone();
            t[i] = repl;
            let s = String::from_utf8(t).unwrap();
            assert!(PartA::parse(&s).is_err(), "typo at {i} accepted");
        }
    }
    // Truncated, extended, wrong prefix.
    assert!(PartA::parse(&m.part_a[..PART_A_LEN - 1]).is_err());
    assert!(PartA::parse(&format!("{}0", &*m.part_a)).is_err());
    assert!(PartA::parse(&m.part_a.replacen("tsr_", "tsx_", 1)).is_err());
    assert!(PartA::parse("").is_err());
    assert!(PartA::parse(&"é".repeat(41)).is_err());
}

/// Re-encode a Part A with one body byte flipped and a *valid* checksum, so the change gets
/// past the offline check and must be caught by the AEAD.
#[test]
fn tampered_part_a_bytes_fail_authentication() {
    let ring = ring();
    let m = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    for i in 0..32 {
        for bit in [0x01u8, 0x80] {
            let mut share = a.share.clone();
            share[i] ^= bit;
            let t = PartA {
                tenant_tag: a.tenant_tag,
                id: a.id,
                share,
            };
            let again = PartA::parse(&t.encode()).unwrap();
            assert_eq!(
                reconstruct(&ring, "acme", &again, &m.record, 0).unwrap_err(),
                TokenError::Tampered
            );
        }
    }
    for i in 0..16 {
        let mut id = a.id;
        id.0[i] ^= 1;
        let t = PartA {
            tenant_tag: a.tenant_tag,
            id,
            share: a.share.clone(),
        };
        assert_eq!(
            reconstruct(&ring, "acme", &t, &m.record, 0).unwrap_err(),
            TokenError::Tampered
        );
    }
}

#[test]
fn tampered_record_bytes_fail_authentication() {
    let ring = ring();
    let m = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    for i in 0..m.record.len() {
        let mut r = m.record.clone();
        r[i] ^= 0x01;
        assert!(reconstruct(&ring, "acme", &a, &r, 0).is_err(), "flip at {i} accepted");
    }
    assert!(reconstruct(&ring, "acme", &a, &m.record[..m.record.len() - 1], 0).is_err());
    assert!(reconstruct(&ring, "acme", &a, &[], 0).is_err());
}

#[test]
fn record_moved_to_other_tenant_or_id_is_useless() {
    let ring = ring();
    let m = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    assert_eq!(
        reconstruct(&ring, "globex", &a, &m.record, 0).unwrap_err(),
        TokenError::Tampered
    );
    let other = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    let b = PartA::parse(&other.part_a).unwrap();
    // b's Part A against a's record: the id is in the AAD.
    assert_eq!(
        reconstruct(&ring, "acme", &b, &m.record, 0).unwrap_err(),
        TokenError::Tampered
    );
}

#[test]
fn wrong_or_missing_kid() {
    let ring = ring();
    let m = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    let other = Keyring::parse(&format!("k9 {}", "33".repeat(32))).unwrap();
    assert_eq!(
        reconstruct(&other, "acme", &a, &m.record, 0).unwrap_err(),
        TokenError::UnknownKid
    );
    // Same kid name, different key.
    let same_name = Keyring::parse(&format!("k2 {}", "44".repeat(32))).unwrap();
    assert_eq!(
        reconstruct(&same_name, "acme", &a, &m.record, 0).unwrap_err(),
        TokenError::Tampered
    );
}

#[test]
fn reseal_moves_to_active_kid() {
    let old = Keyring::parse(&format!("k1 {}", "22".repeat(32))).unwrap();
    let m = mint(&old, "acme", TOKEN, &meta()).unwrap();
    assert_eq!(record_kid(&m.record), Some(&b"k1"[..]));
    let ring = ring(); // k2 active, k1 still readable
    let new = reseal(&ring, "acme", &m.id, &m.record).unwrap().unwrap();
    assert_eq!(record_kid(&new), Some(&b"k2"[..]));
    assert!(reseal(&ring, "acme", &m.id, &new).unwrap().is_none());
    let a = PartA::parse(&m.part_a).unwrap();
    let only_new = Keyring::parse(&format!("k2 {}", "11".repeat(32))).unwrap();
    assert!(reconstruct(&only_new, "acme", &a, &new, 0).is_ok());
}

#[test]
fn tombstone_reads_as_revoked() {
    let ring = ring();
    let m = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    let t = tombstone(1234);
    assert_eq!(is_tombstone(&t), Some(1234));
    assert_eq!(reconstruct(&ring, "acme", &a, &t, 0).unwrap_err(), TokenError::Revoked);
    assert!(is_tombstone(&m.record).is_none());
}

#[test]
fn debug_never_shows_secrets() {
    let ring = ring();
    let m = mint(&ring, "acme", TOKEN, &meta()).unwrap();
    let a = PartA::parse(&m.part_a).unwrap();
    let cred = reconstruct(&ring, "acme", &a, &m.record, 0).unwrap();
    let dbg = format!("{a:?} {cred:?} {ring:?}");
    assert!(!dbg.contains("realUpstream"));
    assert!(!dbg.contains(&m.part_a[4..20]));
    assert!(dbg.contains(&m.id.to_string()));
}

/// RUSTSEC-2024-0398: `sharks` 0.5 never drew a zero coefficient, so in 2-of-2 a share byte
/// never equalled the secret byte. Split one fixed secret many times and require share A's
/// bytes to be uniform, including the value equal to the secret byte.
#[test]
fn shares_are_uniform_bias_test() {
    const N: usize = 40_000;
    let dk = [0x5au8; 32];
    let mut hist = [0usize; 256];
    let mut equal_secret = 0usize;
    for _ in 0..N {
        let (a, b) = split_dk(&dk);
        hist[usize::from(a[0])] += 1;
        if a[0] == dk[0] {
            equal_secret += 1;
        }
        assert_eq!(*combine(&a, &b[..]).unwrap(), dk);
    }
    // Expected N/256 ≈ 156 for the secret's own value; sharks 0.5 gives exactly 0.
    assert!(
        equal_secret > 90 && equal_secret < 230,
        "share == secret {equal_secret} times"
    );
    let expected = N as f64 / 256.0;
    let chi2: f64 = hist.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    // df = 255: mean 255, sd 22.6; 370 is > 5 sd, so a fair split fails this ~1e-6 of runs.
    assert!(chi2 < 370.0, "share bytes not uniform: chi2 = {chi2}");
}

#[test]
fn shares_have_fixed_x_coordinates() {
    // A client cannot pick x: Part A carries no coordinate, and recombination at other
    // coordinates gives a different key.
    let dk = [7u8; 32];
    let (a, b) = split_dk(&dk);
    assert_eq!(*combine(&a, &b[..]).unwrap(), dk);
    let swapped = combine(&b, &a[..]).unwrap();
    assert_ne!(*swapped, dk);
}

/// The constant-time `combine` must give exactly what blahaj's reference `recover` gives, for
/// genuine share pairs and for arbitrary (tampered) ones.
#[test]
fn combine_matches_blahaj() {
    let recover = |a: &[u8; 32], b: &[u8; 32]| {
        let share = |x: u8, y: &[u8; 32]| {
            let mut v = vec![x];
            v.extend_from_slice(y);
            blahaj::Share::try_from(&v[..]).unwrap()
        };
        blahaj::Sharks(2)
            .recover(&[share(SHARE_A_X, a), share(SHARE_B_X, b)])
            .unwrap()
    };
    for i in 0..2000u32 {
        let mut dk = [0u8; 32];
        fill_random(&mut dk);
        let (a, b) = split_dk(&dk);
        assert_eq!(*combine(&a, &b[..]).unwrap(), dk);
        let mut rnd_a = [0u8; 32];
        let mut rnd_b = [0u8; 32];
        fill_random(&mut rnd_a);
        fill_random(&mut rnd_b);
        rnd_a[0] = i as u8; // cover every byte value in position 0
        assert_eq!(combine(&rnd_a, &rnd_b[..]).unwrap().to_vec(), recover(&rnd_a, &rnd_b));
    }
    assert!(combine(&[0u8; 32], &[0u8; 31]).is_err());
}

#[test]
fn gf_arithmetic_identities() {
    // Known answers in GF(2^8) mod 0x11d: a product without and one with reduction.
    assert_eq!(gf_mul(3, 7), 9);
    assert_eq!(gf_mul(0x80, 2), 0x1d);
    for v in 0..=255u8 {
        assert_eq!(gf_mul(v, 1), v);
        if v != 0 {
            assert_eq!(gf_mul(v, gf_inv(v)), 1);
        }
    }
}

/// Every refusal maps to one outcome, `ALL` is in index order and labels are distinct (they
/// are Prometheus label values and session record values).
#[test]
fn verify_results_are_a_closed_indexed_set() {
    for (i, r) in VerifyResult::ALL.into_iter().enumerate() {
        assert_eq!(r.index(), i);
        assert_eq!(serde_json::to_value(r).unwrap(), r.label());
        assert_eq!(serde_json::from_value::<VerifyResult>(r.label().into()).unwrap(), r);
    }
    let mut labels: Vec<_> = VerifyResult::ALL.iter().map(|r| r.label()).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), VerifyResult::COUNT);
    assert_eq!(VerifyResult::from(TokenError::UnknownKid), VerifyResult::Tampered);
    assert_eq!(
        VerifyResult::from(TokenError::Malformed("checksum")),
        VerifyResult::Malformed
    );
    assert_eq!(VerifyResult::from(TokenError::WrongTenant), VerifyResult::WrongTenant);
}

/// The console's Part A prefix is what every real Part A of the token starts with.
#[test]
fn part_a_prefix_matches_minted_part_a() {
    let ring = Keyring::parse(&format!("k1 {}", "22".repeat(32))).unwrap();
    for i in 0..20 {
        let m = mint(&ring, "acme", format!("upstream-{i}").as_bytes(), &meta()).unwrap();
        let prefix = part_a_prefix("acme", &m.id);
        assert_eq!(prefix.len(), PART_A_PREFIX_LEN);
        assert!(m.part_a.starts_with(&prefix), "{prefix}");
        assert_ne!(part_a_prefix("globex", &m.id), prefix);
    }
}
