//! Split tokens: mint, parse, reconstruct, re-seal.
//!
//! Runs in two places: on the admin path (`mint`, `reseal`, `open_meta`) and on the request
//! path in `request_filter` (`PartA::parse` then `reconstruct`), before any upstream work.
//!
//! Construction (see README "How a token is split"):
//! 1. A fresh 256-bit data key DK encrypts the upstream token and its policy (header name,
//!    scheme, expiry) with XChaCha20-Poly1305; AAD = version ‖ tenant ‖ token id.
//! 2. DK is split 2-of-2 with Shamir over GF(256) (`blahaj`, the bias-fixed `sharks` fork);
//!    recombination on the request path is a constant-time interpolation at x = 0 (`combine`).
//!    Share x = 1 goes into Part A, x = 2 into the record. The x coordinates are constants here;
//!    nothing a client sends can choose them.
//! 3. The record (share B, the encrypted token, public metadata) is sealed again with
//!    XChaCha20-Poly1305 under the keyring's active KEK; AAD = version ‖ tenant ‖ id ‖ kid.
//!
//! Part A alone is a uniformly random share; a record alone needs the KEK and then still only
//! yields share B. A tampered Part A yields a wrong DK and the AEAD tag fails before anything
//! is sent upstream.

pub(crate) mod base62;
mod decoy;
pub mod grant;
pub mod keyring;
mod xchacha;

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use decoy::{equalize_refusal, prepare_refusal_decoy};
pub use keyring::{Keyring, KeyringError};

/// Prefix of every Part A; secret scanners match `tsr_[0-9A-Za-z]{78}`.
pub const PART_A_PREFIX: &str = "tsr_";
/// Regex for secret scanners (documented in the README).
pub const PART_A_REGEX: &str = r"\btsr_[0-9A-Za-z]{78}\b";

const FORMAT_VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 4 + 16 + 32;
const BODY_CHARS: usize = base62::encoded_len(BODY_LEN);
const CHECK_CHARS: usize = base62::encoded_len(4);
/// Total length of a Part A string.
pub const PART_A_LEN: usize = PART_A_PREFIX.len() + BODY_CHARS + CHECK_CHARS;

const RECORD_VERSION: u8 = 1;
const TOMBSTONE: u8 = 0;
const NONCE_LEN: usize = xchacha::NONCE_LEN;
const SHARE_A_X: u8 = 1;
const SHARE_B_X: u8 = 2;

/// Fill `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // The OS RNG failing is unrecoverable for a security proxy; getrandom documents that it
    // only fails on exotic platforms or a broken kernel.
    if let Err(e) = getrandom::fill(buf) {
        panic!("operating system random number generator failed: {e}");
    }
}

/// Why a Part A or record was refused. Each maps to a `result` label of
/// `tessera_token_verifications_total`; clients only ever see one generic 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a well-formed Part A: prefix, length, alphabet, checksum or version.
    #[error("malformed Part A ({0})")]
    Malformed(&'static str),
    /// Well formed but minted for another tenant.
    #[error("Part A belongs to another tenant")]
    WrongTenant,
    /// No record under this tenant and id.
    #[error("unknown token id")]
    Unknown,
    /// The record was revoked through the admin API (tombstone).
    #[error("token revoked")]
    Revoked,
    /// The token's policy expiry has passed.
    #[error("token expired")]
    Expired,
    /// An AEAD check failed: a changed Part A, a changed or moved record.
    #[error("token or record failed authentication")]
    Tampered,
    /// The record names a kid this keyring does not have.
    #[error("record sealed under unknown key id")]
    UnknownKid,
    /// The upstream token is not a valid header value.
    #[error("upstream token must be 1-8192 visible ASCII characters")]
    BadUpstreamToken,
    /// A refresh-token Part A presented where an API credential is expected (or the
    /// reverse at the token endpoint).
    #[error("Part A of another kind of token")]
    WrongKind,
}

impl TokenError {
    /// The verification outcome this refusal is counted and logged as.
    pub fn verify_result(&self) -> VerifyResult {
        match self {
            TokenError::Malformed(_) | TokenError::BadUpstreamToken => VerifyResult::Malformed,
            TokenError::WrongTenant => VerifyResult::WrongTenant,
            TokenError::Unknown => VerifyResult::Unknown,
            TokenError::Revoked => VerifyResult::Revoked,
            TokenError::Expired => VerifyResult::Expired,
            TokenError::Tampered | TokenError::UnknownKid => VerifyResult::Tampered,
            TokenError::WrongKind => VerifyResult::WrongKind,
        }
    }
}

impl From<TokenError> for VerifyResult {
    fn from(e: TokenError) -> VerifyResult {
        e.verify_result()
    }
}

/// Outcome of checking a request's Part A in `request_filter`. Set once per request; it picks
/// the metric handle (`TenantMetrics::verification`, an array index), the anomaly trigger
/// (`is_bad_token_use`) and the session record's `verify` field (`label`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyResult {
    /// Part A verified and the token was reconstructed.
    Ok,
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not a well-formed Part A (prefix, length, alphabet, checksum, version).
    Malformed,
    /// No record under this tenant and id.
    Unknown,
    /// Revoked through the admin API (tombstone).
    Revoked,
    /// The token's policy expiry has passed.
    Expired,
    /// An AEAD check failed or the record names an unknown kid.
    Tampered,
    /// Part A minted for another tenant.
    WrongTenant,
    /// The fragment store could not answer (fail closed).
    StoreUnavailable,
    /// The token is held by an anomaly `block` action.
    Quarantined,
    /// The record's credential header is one Tessera sets or strips (see
    /// `TenantTable::credential_conflict`); the record is refused rather than sent.
    HeaderConflict,
    /// An OAuth refresh-token Part A sent to the API: it is only usable at the token endpoint.
    WrongKind,
}

impl VerifyResult {
    /// Every outcome, in index order (`self as usize`).
    pub const ALL: [VerifyResult; 12] = [
        VerifyResult::Ok,
        VerifyResult::Missing,
        VerifyResult::Malformed,
        VerifyResult::Unknown,
        VerifyResult::Revoked,
        VerifyResult::Expired,
        VerifyResult::Tampered,
        VerifyResult::WrongTenant,
        VerifyResult::StoreUnavailable,
        VerifyResult::Quarantined,
        VerifyResult::HeaderConflict,
        VerifyResult::WrongKind,
    ];
    /// Number of outcomes (size of per-tenant handle arrays).
    pub const COUNT: usize = VerifyResult::ALL.len();

    /// The `result` label of `tessera_token_verifications_total` and the session record value.
    pub const fn label(self) -> &'static str {
        match self {
            VerifyResult::Ok => "ok",
            VerifyResult::Missing => "missing",
            VerifyResult::Malformed => "malformed",
            VerifyResult::Unknown => "unknown",
            VerifyResult::Revoked => "revoked",
            VerifyResult::Expired => "expired",
            VerifyResult::Tampered => "tampered",
            VerifyResult::WrongTenant => "wrong_tenant",
            VerifyResult::StoreUnavailable => "store_unavailable",
            VerifyResult::Quarantined => "quarantined",
            VerifyResult::HeaderConflict => "header_conflict",
            VerifyResult::WrongKind => "wrong_kind",
        }
    }

    /// Index into per-outcome arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A Part A that parsed but must not be used: the `bad_token_use` anomaly trigger.
    /// `missing`, `malformed` (typos, noise), `store_unavailable` (our outage) and
    /// `header_conflict` (a record the operator's config now refuses) are not.
    pub const fn is_bad_token_use(self) -> bool {
        matches!(
            self,
            VerifyResult::Unknown
                | VerifyResult::Revoked
                | VerifyResult::Expired
                | VerifyResult::Tampered
                | VerifyResult::WrongTenant
                | VerifyResult::Quarantined
                | VerifyResult::WrongKind
        )
    }
}

impl fmt::Display for VerifyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// 128-bit random token id: safe to log, used as the store key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub [u8; 16]);

impl TokenId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        fill_random(&mut b);
        TokenId(b)
    }

    /// Parse the 32-hex-character form.
    pub fn parse(s: &str) -> Option<Self> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(TokenId(b))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        // Infallible: the buffer is exactly twice the input length.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        f.write_str(std::str::from_utf8(&buf).unwrap_or("?"))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// Four bytes that tie a Part A to its tenant, so a Part A shown at another tenant's hostname
/// is refused offline and counted as `wrong_tenant`. Not secret.
pub fn tenant_tag(tenant: &str) -> [u8; 4] {
    let d = Sha256::new()
        .chain_update(b"tessera/tenant-tag\0")
        .chain_update(tenant.as_bytes())
        .finalize();
    [d[0], d[1], d[2], d[3]]
}

/// What an integration holds. `Debug` never shows the share.
pub struct PartA {
    pub tenant_tag: [u8; 4],
    pub id: TokenId,
    share: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for PartA {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartA")
            .field("id", &self.id)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl PartA {
    /// The string form: `tsr_` + base62(version ‖ tag ‖ id ‖ share) + base62(CRC32).
    pub fn encode(&self) -> Zeroizing<String> {
        let mut body = Zeroizing::new([0u8; BODY_LEN]);
        body[0] = FORMAT_VERSION;
        body[1..5].copy_from_slice(&self.tenant_tag);
        body[5..21].copy_from_slice(&self.id.0);
        body[21..].copy_from_slice(self.share.as_ref());
        let mut s = Zeroizing::new(String::with_capacity(PART_A_LEN));
        s.push_str(PART_A_PREFIX);
        base62::encode_into(body.as_ref(), &mut s);
        let crc = crc32fast::hash(s.as_bytes());
        base62::encode_into(&crc.to_be_bytes(), &mut s);
        s
    }

    /// Parse and checksum-verify a Part A. Never touches the store; cheap enough to run on
    /// every request before any lookup.
    pub fn parse(s: &str) -> Result<PartA, TokenError> {
        let b = s.as_bytes();
        if b.len() != PART_A_LEN {
            return Err(TokenError::Malformed("length"));
        }
        if !b.starts_with(PART_A_PREFIX.as_bytes()) {
            return Err(TokenError::Malformed("prefix"));
        }
        let (signed, check) = b.split_at(PART_A_PREFIX.len() + BODY_CHARS);
        let mut crc = [0u8; 4];
        base62::decode_into(check, &mut crc).map_err(|_| TokenError::Malformed("checksum"))?;
        if u32::from_be_bytes(crc) != crc32fast::hash(signed) {
            return Err(TokenError::Malformed("checksum"));
        }
        let mut body = Zeroizing::new([0u8; BODY_LEN]);
        base62::decode_into(&signed[PART_A_PREFIX.len()..], body.as_mut())
            .map_err(|_| TokenError::Malformed("encoding"))?;
        if body[0] != FORMAT_VERSION {
            return Err(TokenError::Malformed("version"));
        }
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&body[1..5]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[5..21]);
        let mut share = Zeroizing::new([0u8; 32]);
        share.copy_from_slice(&body[21..]);
        Ok(PartA {
            tenant_tag: tag,
            id: TokenId(id),
            share,
        })
    }
}

/// Test and bench helper: a well-formed Part A for `id` under `tenant` (valid checksum, the
/// tenant's tag, current version) with a random share, as anyone can craft offline. It opens
/// no record: the share matches nothing.
#[doc(hidden)]
pub fn forge_part_a(tenant: &str, id: TokenId) -> Zeroizing<String> {
    let mut share = Zeroizing::new([0u8; 32]);
    fill_random(share.as_mut());
    PartA {
        tenant_tag: tenant_tag(tenant),
        id,
        share,
    }
    .encode()
}

/// Characters of `part_a_prefix`: `tsr_` + 12 base62 digits.
pub const PART_A_PREFIX_LEN: usize = 16;

/// The first `PART_A_PREFIX_LEN` characters every Part A of this token starts with, computed
/// from public fields only (version, tenant tag, token id): the share is the low 32 bytes of
/// the encoded integer, so it cannot reach the leading 12 of 72 digits (62^60 > 2^357 ≫
/// 2^256; a carry into them has probability < 2^-100). Shown by the console so a leaked
/// Part A found in a log can be matched to its token; never the Part A itself.
pub fn part_a_prefix(tenant: &str, id: &TokenId) -> String {
    let zero = PartA {
        tenant_tag: tenant_tag(tenant),
        id: *id,
        share: Zeroizing::new([0u8; 32]),
    };
    zero.encode()[..PART_A_PREFIX_LEN].to_string()
}

/// Public, non-secret facts about a token, stored inside the sealed record so that `list`
/// works without Part A.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenMeta {
    pub label: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` = no expiry.
    pub expires_at: Option<i64>,
    /// Header the upstream credential is sent in.
    pub header: String,
    /// Scheme placed before the token (`Bearer`); empty = the raw token.
    pub scheme: String,
    /// The token id this one replaced through `rotate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// How the token came to Tessera (records written before OAuth existed are `minted`).
    #[serde(default)]
    pub kind: TokenKind,
    /// The OAuth grant the token belongs to (`access` and `refresh` records), as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
}

/// How a record was born.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Handed to the admin API (`POST /v1/tenants/{t}/tokens`) by a person.
    #[default]
    Minted,
    /// An access token swapped at the OAuth token endpoint.
    Access,
    /// A refresh token swapped at the OAuth token endpoint; only usable there.
    Refresh,
}

impl TokenKind {
    pub const fn label(self) -> &'static str {
        match self {
            TokenKind::Minted => "minted",
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    const fn byte(self) -> u8 {
        match self {
            TokenKind::Minted => 0,
            TokenKind::Access => 1,
            TokenKind::Refresh => 2,
        }
    }

    const fn from_byte(b: u8) -> Option<TokenKind> {
        match b {
            0 => Some(TokenKind::Minted),
            1 => Some(TokenKind::Access),
            2 => Some(TokenKind::Refresh),
            _ => None,
        }
    }
}

/// The reconstructed upstream credential. Wiped on drop; `Debug` is redacted.
pub struct Credential {
    /// Lower-case header name, e.g. `authorization`.
    pub header: String,
    /// Full header value, e.g. `Bearer <token>`.
    pub value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Result of `mint`: the record for the store and the Part A shown once to the operator.
pub struct Minted {
    pub id: TokenId,
    pub part_a: Zeroizing<String>,
    pub record: Vec<u8>,
}

fn inner_aad(tenant: &str, id: &TokenId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + tenant.len() + 16);
    aad.extend_from_slice(b"tessera/v1/token\0");
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&id.0);
    aad
}

fn outer_aad(tenant: &str, id: &TokenId, kid: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + tenant.len() + 16 + kid.len());
    aad.extend_from_slice(b"tessera/v1/frag\0");
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&id.0);
    aad.push(0);
    aad.extend_from_slice(kid);
    aad
}

fn seal(key: &[u8; 32], aad: &[u8], msg: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    // Encryption with a valid key and in-memory buffers cannot fail (only on > 256 GiB input).
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .unwrap_or_default();
    (nonce, ct)
}

/// The open side of `seal`: the same XChaCha20-Poly1305, through ring (`xchacha`).
fn open(key: &[u8; 32], aad: &[u8], nonce: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    xchacha::open(key, aad, nonce, ct).map_err(|_| TokenError::Tampered)
}

fn split_dk(dk: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut a = Zeroizing::new([0u8; 32]);
    let mut b = Zeroizing::new([0u8; 32]);
    // blahaj's dealer evaluates at x = 1, 2, …; we take exactly those two. A share's byte
    // form is x ‖ y.
    for share in blahaj::Sharks(2).dealer(dk).take(2) {
        let bytes = Zeroizing::new(Vec::<u8>::from(&share));
        let target = if bytes[0] == SHARE_A_X { &mut a } else { &mut b };
        target.copy_from_slice(&bytes[1..]);
    }
    (a, b)
}

/// GF(2^8) multiplication modulo x^8 + x^4 + x^3 + x^2 + 1 (0x11d, the field `blahaj` uses),
/// without branches or table lookups on the operands: constant time in `a` and `b`.
const fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    let mut i = 0;
    while i < 8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1d & carry);
        b >>= 1;
        i += 1;
    }
    p
}

/// Multiplicative inverse (a^254); compile-time use only.
const fn gf_inv(a: u8) -> u8 {
    let mut r = 1u8;
    let mut i = 0;
    while i < 254 {
        r = gf_mul(r, a);
        i += 1;
    }
    r
}

/// Lagrange coefficients at x = 0 for the fixed points x = 1 (share A) and x = 2 (share B):
/// L1 = 2 / (2 - 1), L2 = 1 / (1 - 2); subtraction is XOR in GF(2^8).
const L1: u8 = gf_mul(SHARE_B_X, gf_inv(SHARE_B_X ^ SHARE_A_X));
const L2: u8 = gf_mul(SHARE_A_X, gf_inv(SHARE_A_X ^ SHARE_B_X));

/// Recombine DK from the two shares: Shamir interpolation at x = 0 for the fixed
/// coordinates, in constant time. (`blahaj::Sharks::recover` computes the same value with
/// log/exp tables indexed by secret bytes and allocates; on the request path we use this.
/// `combine_matches_blahaj` checks both agree.)
fn combine(share_a: &[u8; 32], share_b: &[u8]) -> Result<Zeroizing<[u8; 32]>, TokenError> {
    if share_b.len() != 32 {
        return Err(TokenError::Tampered);
    }
    let mut dk = Zeroizing::new([0u8; 32]);
    for ((d, &a), &b) in dk.iter_mut().zip(share_a.iter()).zip(share_b.iter()) {
        *d = gf_mul(a, L1) ^ gf_mul(b, L2);
    }
    Ok(dk)
}

/// Is `token` acceptable as (part of) an HTTP header value?
fn valid_token(token: &[u8]) -> bool {
    !token.is_empty() && token.len() <= 8192 && token.iter().all(|&c| (0x21..=0x7e).contains(&c))
}

/// Split `token` for `tenant`. The returned record goes to the store, the Part A to the caller.
pub fn mint(keyring: &Keyring, tenant: &str, token: &[u8], meta: &TokenMeta) -> Result<Minted, TokenError> {
    mint_with_id(keyring, tenant, TokenId::random(), token, meta)
}

fn mint_with_id(
    keyring: &Keyring,
    tenant: &str,
    id: TokenId,
    token: &[u8],
    meta: &TokenMeta,
) -> Result<Minted, TokenError> {
    if !valid_token(token) {
        return Err(TokenError::BadUpstreamToken);
    }
    let mut dk = Zeroizing::new([0u8; 32]);
    fill_random(dk.as_mut());

    // Inner plaintext: expiry ‖ header ‖ scheme ‖ token.
    let mut inner = Zeroizing::new(Vec::with_capacity(16 + token.len() + meta.header.len()));
    inner.extend_from_slice(&meta.expires_at.unwrap_or(i64::MAX).to_be_bytes());
    push_str8(&mut inner, &meta.header);
    push_str8(&mut inner, &meta.scheme);
    inner.extend_from_slice(token);
    let (inner_nonce, inner_ct) = seal(&dk, &inner_aad(tenant, &id), &inner);

    let (share_a, share_b) = split_dk(&dk);
    let meta_json = serde_json::to_vec(meta).unwrap_or_default();
    let mut plain = Zeroizing::new(Vec::with_capacity(64 + inner_ct.len() + meta_json.len()));
    plain.extend_from_slice(share_b.as_ref());
    plain.extend_from_slice(&inner_nonce);
    plain.extend_from_slice(&(inner_ct.len() as u32).to_be_bytes());
    plain.extend_from_slice(&inner_ct);
    plain.extend_from_slice(&meta_json);
    let record = seal_record(keyring, tenant, &id, &plain);

    let part_a = PartA {
        tenant_tag: tenant_tag(tenant),
        id,
        share: share_a,
    };
    Ok(Minted {
        id,
        part_a: part_a.encode(),
        record,
    })
}

fn push_str8(buf: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    buf.push(b.len() as u8);
    buf.extend_from_slice(b);
}

fn take_str8<'a>(buf: &mut &'a [u8]) -> Result<&'a str, TokenError> {
    let (&len, rest) = buf.split_first().ok_or(TokenError::Tampered)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(TokenError::Tampered);
    }
    let (s, rest) = rest.split_at(len);
    *buf = rest;
    std::str::from_utf8(s).map_err(|_| TokenError::Tampered)
}

fn seal_record(keyring: &Keyring, tenant: &str, id: &TokenId, plain: &[u8]) -> Vec<u8> {
    seal_under_kek(keyring, plain, |kid| outer_aad(tenant, id, kid))
}

/// `version ‖ kid length ‖ kid ‖ nonce ‖ ciphertext` under the active KEK; `aad(kid)`.
fn seal_under_kek(keyring: &Keyring, plain: &[u8], aad: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let kek = keyring.active();
    let kid = kek.kid.as_bytes();
    let (nonce, ct) = seal(&kek.key, &aad(kid), plain);
    let mut out = Vec::with_capacity(2 + kid.len() + NONCE_LEN + ct.len());
    out.push(RECORD_VERSION);
    out.push(kid.len() as u8);
    out.extend_from_slice(kid);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// A tombstone: what `revoke` leaves behind so refusals can say "revoked" rather than
/// "unknown". Holds no secret.
pub fn tombstone(revoked_at: i64) -> Vec<u8> {
    let mut v = vec![TOMBSTONE];
    v.extend_from_slice(&revoked_at.to_be_bytes());
    v
}

/// A tombstone that still says what the record was (kind and grant), so a revoked OAuth
/// record stays visible in its grant. Holds no secret.
pub fn tombstone_of(revoked_at: i64, kind: TokenKind, grant: Option<&TokenId>) -> Vec<u8> {
    let mut v = tombstone(revoked_at);
    v.push(kind.byte());
    v.extend_from_slice(&grant.map_or([0u8; 16], |g| g.0));
    v
}

/// What a tombstone says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    pub revoked_at: i64,
    /// `None` for tombstones written by `tombstone` (kind unknown).
    pub kind: Option<TokenKind>,
    pub grant: Option<TokenId>,
}

/// The tombstone `stored` is, if it is one.
pub fn tombstone_info(stored: &[u8]) -> Option<Tombstone> {
    let [TOMBSTONE, rest @ ..] = stored else {
        return None;
    };
    let (at, extra) = match rest.len() {
        8 => (rest, &[][..]),
        25 => rest.split_at(8),
        _ => return None,
    };
    let mut b = [0u8; 8];
    b.copy_from_slice(at);
    let mut t = Tombstone {
        revoked_at: i64::from_be_bytes(b),
        kind: None,
        grant: None,
    };
    if let [kind, grant @ ..] = extra {
        t.kind = TokenKind::from_byte(*kind);
        let mut g = [0u8; 16];
        g.copy_from_slice(grant);
        t.grant = (g != [0u8; 16]).then_some(TokenId(g));
    }
    Some(t)
}

/// `Some(revoked_at)` if `stored` is a tombstone.
pub fn is_tombstone(stored: &[u8]) -> Option<i64> {
    tombstone_info(stored).map(|t| t.revoked_at)
}

/// The kid a stored record is sealed under.
pub fn record_kid(stored: &[u8]) -> Option<&[u8]> {
    match stored {
        [RECORD_VERSION, len, rest @ ..] if rest.len() >= usize::from(*len) => Some(&rest[..usize::from(*len)]),
        _ => None,
    }
}

/// Open the KEK layer of a stored record.
fn open_record(keyring: &Keyring, tenant: &str, id: &TokenId, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    if is_tombstone(stored).is_some() {
        return Err(TokenError::Revoked);
    }
    open_under_kek(keyring, stored, |kid| outer_aad(tenant, id, kid))
}

/// A secret of a tenant's definition (an API tenant's TLS private key) sealed under the active
/// KEK, bound to `purpose` and `tenant` (the AAD): a sealed value copied to another tenant or
/// purpose does not open. Same layout as a record.
pub fn seal_secret(keyring: &Keyring, purpose: &str, tenant: &str, plain: &[u8]) -> Vec<u8> {
    seal_under_kek(keyring, plain, |kid| secret_aad(purpose, tenant, kid))
}

/// Open what `seal_secret` sealed (any kid still in the keyring).
pub fn open_secret(
    keyring: &Keyring,
    purpose: &str,
    tenant: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    open_under_kek(keyring, sealed, |kid| secret_aad(purpose, tenant, kid))
}

fn secret_aad(purpose: &str, tenant: &str, kid: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + purpose.len() + tenant.len() + kid.len());
    aad.extend_from_slice(b"tessera/v1/secret\0");
    for part in [purpose.as_bytes(), tenant.as_bytes(), kid] {
        aad.extend_from_slice(part);
        aad.push(0);
    }
    aad
}

fn open_under_kek(
    keyring: &Keyring,
    stored: &[u8],
    aad: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let kid = record_kid(stored).ok_or(TokenError::Tampered)?;
    let kek = keyring.get(kid).ok_or(TokenError::UnknownKid)?;
    let rest = &stored[2 + kid.len()..];
    if rest.len() < NONCE_LEN + 16 {
        return Err(TokenError::Tampered);
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    open(&kek.key, &aad(kid), nonce, ct)
}

struct RecordParts<'a> {
    share_b: &'a [u8],
    inner_nonce: &'a [u8],
    inner_ct: &'a [u8],
    meta: &'a [u8],
}

fn split_record(plain: &[u8]) -> Result<RecordParts<'_>, TokenError> {
    if plain.len() < 32 + NONCE_LEN + 4 {
        return Err(TokenError::Tampered);
    }
    let (share_b, rest) = plain.split_at(32);
    let (inner_nonce, rest) = rest.split_at(NONCE_LEN);
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        return Err(TokenError::Tampered);
    }
    let (inner_ct, meta) = rest.split_at(len);
    Ok(RecordParts {
        share_b,
        inner_nonce,
        inner_ct,
        meta,
    })
}

/// Per-request reconstruction: open the record, combine the shares, decrypt the token and
/// check its expiry. `now` is Unix seconds.
pub fn reconstruct(
    keyring: &Keyring,
    tenant: &str,
    part_a: &PartA,
    stored: &[u8],
    now: i64,
) -> Result<Credential, TokenError> {
    let plain = match open_record(keyring, tenant, &part_a.id, stored) {
        Ok(p) => p,
        Err(e) => {
            // Revoked (tombstone), unknown kid, moved record: the record was not opened, so
            // do that work on the decoy; a revoked id answers like a wrong Part A.
            equalize_refusal(Some(part_a));
            return Err(e);
        }
    };
    reconstruct_opened(tenant, part_a, &plain, now)
}

/// The rest of `reconstruct` once the record layer is open.
fn reconstruct_opened(tenant: &str, part_a: &PartA, plain: &[u8], now: i64) -> Result<Credential, TokenError> {
    let parts = split_record(plain)?;
    let dk = combine(&part_a.share, parts.share_b)?;
    let inner = open(&dk, &inner_aad(tenant, &part_a.id), parts.inner_nonce, parts.inner_ct)?;
    decode_inner(&inner, now)
}

fn decode_inner(inner: &[u8], now: i64) -> Result<Credential, TokenError> {
    if inner.len() < 8 {
        return Err(TokenError::Tampered);
    }
    let (exp, mut rest) = inner.split_at(8);
    let exp = i64::from_be_bytes([exp[0], exp[1], exp[2], exp[3], exp[4], exp[5], exp[6], exp[7]]);
    if now >= exp {
        return Err(TokenError::Expired);
    }
    let header = take_str8(&mut rest)?.to_ascii_lowercase();
    // Refresh records carry no header: they are never sent as a request credential.
    if header.is_empty() {
        return Err(TokenError::WrongKind);
    }
    let scheme = take_str8(&mut rest)?;
    let mut value = Zeroizing::new(Vec::with_capacity(scheme.len() + 1 + rest.len()));
    if !scheme.is_empty() {
        value.extend_from_slice(scheme.as_bytes());
        value.push(b' ');
    }
    value.extend_from_slice(rest);
    Ok(Credential { header, value })
}

/// Admin path: the public metadata of a record (no Part A needed).
pub fn open_meta(keyring: &Keyring, tenant: &str, id: &TokenId, stored: &[u8]) -> Result<TokenMeta, TokenError> {
    let plain = open_record(keyring, tenant, id, stored)?;
    let parts = split_record(&plain)?;
    serde_json::from_slice(parts.meta).map_err(|_| TokenError::Tampered)
}

/// Admin path: re-seal a record under the active KEK. `Ok(None)` if it already is (or is a
/// tombstone, which holds nothing to re-seal).
pub fn reseal(keyring: &Keyring, tenant: &str, id: &TokenId, stored: &[u8]) -> Result<Option<Vec<u8>>, TokenError> {
    // Tombstones and grant records hold nothing sealed.
    if is_tombstone(stored).is_some() || grant::is_grant(stored) {
        return Ok(None);
    }
    if record_kid(stored) == Some(keyring.active().kid.as_bytes()) {
        return Ok(None);
    }
    let plain = open_record(keyring, tenant, id, stored)?;
    Ok(Some(seal_record(keyring, tenant, id, &plain)))
}

/// OAuth token endpoint: open a refresh record with its Part A. Returns the raw upstream
/// token (wiped on drop) and the record's metadata; expiry is checked like on the request path.
pub fn open_token(
    keyring: &Keyring,
    tenant: &str,
    part_a: &PartA,
    stored: &[u8],
    now: i64,
) -> Result<(Zeroizing<Vec<u8>>, TokenMeta), TokenError> {
    let plain = match open_record(keyring, tenant, &part_a.id, stored) {
        Ok(p) => p,
        Err(e) => {
            equalize_refusal(Some(part_a));
            return Err(e);
        }
    };
    let parts = split_record(&plain)?;
    let dk = combine(&part_a.share, parts.share_b)?;
    let inner = open(&dk, &inner_aad(tenant, &part_a.id), parts.inner_nonce, parts.inner_ct)?;
    let exp = inner.get(..8).ok_or(TokenError::Tampered)?;
    let exp = i64::from_be_bytes([exp[0], exp[1], exp[2], exp[3], exp[4], exp[5], exp[6], exp[7]]);
    if now >= exp {
        return Err(TokenError::Expired);
    }
    let mut rest = &inner[8..];
    take_str8(&mut rest)?;
    take_str8(&mut rest)?;
    let meta: TokenMeta = serde_json::from_slice(parts.meta).map_err(|_| TokenError::Tampered)?;
    Ok((Zeroizing::new(rest.to_vec()), meta))
}

/// Admin path: recover the upstream token from a valid Part A, for `rotate`. Wiped on drop.
pub fn recover_token(
    keyring: &Keyring,
    tenant: &str,
    part_a: &PartA,
    stored: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let plain = open_record(keyring, tenant, &part_a.id, stored)?;
    let parts = split_record(&plain)?;
    let dk = combine(&part_a.share, parts.share_b)?;
    let inner = open(&dk, &inner_aad(tenant, &part_a.id), parts.inner_nonce, parts.inner_ct)?;
    let mut rest = inner.get(8..).ok_or(TokenError::Tampered)?;
    take_str8(&mut rest)?;
    take_str8(&mut rest)?;
    Ok(Zeroizing::new(rest.to_vec()))
}

#[cfg(test)]
mod tests;
