//! The token endpoint (RFC 6749 §3.2, §4–6): refresh Part A in, Part A values out.
//!
//! Runs in `request_filter` for `POST token_path` on a tenant's OAuth surface (see `super`).
//! Every record born of one authorization shares a grant id: the first answer creates the
//! grant, each refresh adds to it. A refresh token the server rotates is tombstoned once its
//! successor is stored; one it keeps (same value back, or none) keeps its Part A valid.

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;
use serde_json::Value;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::grants::{self, Lookup};
use super::{exchange, form, parse_form, read_form, store_refused, Answer, Call, OAuth, Refused};
use crate::session_log::OAuthAudit;
use crate::token::grant::GrantMeta;
use crate::token::{self, PartA, TokenId, TokenKind, TokenMeta};

/// Extra life of an access record in Redis past its expiry, so a late use is still refused as
/// `expired` (then Redis drops it).
const EXPIRED_GRACE_SECS: u64 = 24 * 3600;
/// Redis refuses expiries that overflow in milliseconds; ten years is "no expiry" in practice.
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Live access records one grant keeps; a refresh beyond it revokes the oldest (superseded by
/// newer ones). Bounds the grant record, which every refresh reads and rewrites (measured:
/// +0.7 ms per refresh with ≤ 10 members, +1.9 ms averaged over 0–550).
pub const MAX_ACCESS_MEMBERS: usize = 32;

/// The refresh Part A a client presented, opened.
struct Presented {
    part_a: Zeroizing<String>,
    id: TokenId,
    real: Zeroizing<Vec<u8>>,
    grant: TokenId,
}

/// A record minted from a token answer, not yet stored.
struct NewRecord {
    id: TokenId,
    kind: TokenKind,
    record: Vec<u8>,
    expires_at: Option<i64>,
}

impl OAuth {
    pub(super) async fn token(
        &self,
        call: &Call<'_>,
        session: &mut Session,
        audit: &mut OAuthAudit,
        upstream_status: &mut Option<u16>,
    ) -> (Answer, &'static str) {
        match self.token_steps(call, session, audit, upstream_status).await {
            Ok(a) => a,
            Err(r) => r,
        }
    }

    async fn token_steps(
        &self,
        call: &Call<'_>,
        session: &mut Session,
        audit: &mut OAuthAudit,
        upstream_status: &mut Option<u16>,
    ) -> Result<(Answer, &'static str), Refused> {
        let body = read_form(session).await?;
        let mut form = parse_form(&body)?;
        let grant_type = form.get("grant_type").unwrap_or_default().to_string();
        // A bounded label, never the client's raw text, in records and metrics.
        audit.grant_type = super::grant_type_label(&grant_type).to_string();
        // Kept in the grant record and token labels: a public identifier, capped and scrubbed.
        let client_id = form
            .get("client_id")
            .map(str::to_string)
            .or_else(|| {
                let auth = session.req_header().headers.get(http::header::AUTHORIZATION);
                form::basic_client_id(auth.map(|v| v.as_bytes()))
            })
            .filter(|c| !c.is_empty() && c.len() <= 256)
            .map(|c| crate::session_log::scrub_part_a(&c).into_owned());
        let now = crate::clock::unix_secs();
        let presented = if grant_type == "refresh_token" {
            let p = self.open_refresh(call, &form, now, audit).await?;
            form.set("refresh_token", &p.real);
            Some(p)
        } else {
            None
        };
        // The client's own bytes unless a Part A was replaced.
        let out: Zeroizing<Vec<u8>> = if presented.is_some() { form.encode() } else { body };
        drop(form);
        let peer = call.surface.peer.load();
        let reply = exchange::send(
            &self.connector,
            &peer,
            call.upstream.clone(),
            &out,
            call.surface.max_token_response_bytes,
        )
        .await
        .map_err(|e| {
            log::warn!("tenant={} oauth token endpoint: {e}", call.tenant.id);
            (Answer::upstream_failed(&e), "upstream_unavailable")
        })?;
        drop(out);
        *upstream_status = Some(reply.header.status.as_u16());
        if reply.too_large {
            log::warn!(
                "tenant={} oauth token answer larger than max_token_response_bytes ({}); dropped",
                call.tenant.id,
                call.surface.max_token_response_bytes
            );
            return Err((
                Answer::error(
                    502,
                    "server_error",
                    "the authorization server's answer was too large and was dropped; authorize again",
                ),
                "too_large",
            ));
        }
        if reply.header.status != 200 {
            // invalid_grant, invalid_client…: the server's own words, untouched.
            let body = Bytes::copy_from_slice(&reply.body);
            return Ok((
                Answer::Upstream {
                    header: reply.header,
                    body,
                },
                "upstream_error",
            ));
        }
        let not_json = || {
            (
                Answer::error(
                    502,
                    "server_error",
                    "the authorization server's token answer is not a JSON object; dropped",
                ),
                "not_json",
            )
        };
        let mut doc: Value = serde_json::from_slice(&reply.body).map_err(|_| not_json())?;
        let Some(obj) = doc.as_object_mut() else {
            return Err(not_json());
        };
        let access = take_token(obj, "access_token").map_err(|()| not_json())?;
        let refresh = take_token(obj, "refresh_token").map_err(|()| not_json())?;
        if access.is_none() && refresh.is_none() {
            // Nothing to swap (not a token answer after all): passed through.
            let body = Bytes::copy_from_slice(&reply.body);
            return Ok((
                Answer::Upstream {
                    header: reply.header,
                    body,
                },
                "no_tokens",
            ));
        }
        let expires_in = obj
            .get("expires_in")
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
        let scheme = match obj.get("token_type").and_then(Value::as_str) {
            Some(t) if !t.eq_ignore_ascii_case("bearer") && valid_scheme(t) => t.to_string(),
            _ => "Bearer".to_string(),
        };
        let grant = presented.as_ref().map_or_else(TokenId::random, |p| p.grant);
        let tid = &call.tenant.id;
        let label = |kind: TokenKind| match &client_id {
            Some(c) => format!("oauth {} ({c})", kind.label()),
            None => format!("oauth {}", kind.label()),
        };
        let mint = |kind: TokenKind, value: &[u8], expires_at: Option<i64>, header: &str, scheme: &str| {
            let meta = TokenMeta {
                label: label(kind),
                created_at: now,
                expires_at,
                header: header.into(),
                scheme: scheme.into(),
                replaces: None,
                kind,
                grant_id: Some(grant.to_string()),
            };
            token::mint(call.keyring, tid, value, &meta).map(|m| (m, expires_at))
        };
        let unusable = |_| {
            (
                Answer::error(
                    502,
                    "server_error",
                    "the authorization server issued a token Tessera cannot carry; dropped",
                ),
                "unusable_token",
            )
        };
        let mut new_records = Vec::new();
        let mut access_a = None;
        if let Some(a) = &access {
            let exp = expires_in.filter(|s| *s > 0).map(|s| now.saturating_add(s));
            let (m, exp) = mint(TokenKind::Access, a.as_bytes(), exp, "authorization", &scheme).map_err(unusable)?;
            new_records.push(NewRecord {
                id: m.id,
                kind: TokenKind::Access,
                record: m.record,
                expires_at: exp,
            });
            access_a = Some(m.part_a);
        }
        let mut refresh_a = None;
        let mut rotated_out = None;
        if let Some(r) = &refresh {
            let kept = presented
                .as_ref()
                .filter(|p| bool::from(p.real.as_slice().ct_eq(r.as_bytes())));
            match kept {
                Some(p) => refresh_a = Some(p.part_a.clone()),
                None => {
                    let ttl = call.surface.refresh_token_ttl;
                    let exp = ttl.map(|d| now.saturating_add(d.as_secs() as i64));
                    // No header: a refresh record is refused as an API credential (`WrongKind`).
                    let (m, exp) = mint(TokenKind::Refresh, r.as_bytes(), exp, "", "").map_err(unusable)?;
                    new_records.push(NewRecord {
                        id: m.id,
                        kind: TokenKind::Refresh,
                        record: m.record,
                        expires_at: exp,
                    });
                    refresh_a = Some(m.part_a);
                    rotated_out = presented.as_ref().map(|p| p.id);
                }
            }
        }
        drop((access, refresh));
        self.store_grant(
            call,
            grant,
            presented.is_none(),
            &grant_type,
            client_id,
            &new_records,
            rotated_out,
            now,
        )
        .await?;
        audit.grant_id = Some(grant.to_string());
        audit.issued = new_records.iter().map(|r| r.id.to_string()).collect();
        if let Some(a) = access_a {
            obj.insert("access_token".into(), Value::String(a.to_string()));
        }
        if let Some(r) = refresh_a {
            obj.insert("refresh_token".into(), Value::String(r.to_string()));
        }
        let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        let mut header = reply.header;
        header.insert_header(http::header::CACHE_CONTROL, "no-store").ok();
        header.insert_header(http::header::PRAGMA, "no-cache").ok();
        log::info!(
            "tenant={tid} oauth grant={grant} grant_type={} issued={:?}",
            super::grant_type_label(&grant_type),
            audit.issued
        );
        Ok((Answer::Upstream { header, body }, "ok"))
    }

    /// Open the refresh Part A of a `grant_type=refresh_token` request. Every refusal is the
    /// same `400 invalid_grant` (no upstream call); the reason goes to the debug log with the
    /// token id only. The audit gets the presented token id as soon as the Part A is this
    /// tenant's, and its grant once known, refused or not: a rotated-out or revoked refresh
    /// token presented again is what a stolen one looks like.
    async fn open_refresh(
        &self,
        call: &Call<'_>,
        form: &form::Form,
        now: i64,
        audit: &mut OAuthAudit,
    ) -> Result<Presented, Refused> {
        let tid = &call.tenant.id;
        let invalid = |why: &str, id: Option<&TokenId>| {
            match id {
                Some(id) => log::debug!("tenant={tid} oauth refresh refused: {why} (token_id={id})"),
                None => log::debug!("tenant={tid} oauth refresh refused: {why}"),
            }
            (
                Answer::error(400, "invalid_grant", "the refresh token is invalid, expired or revoked"),
                "invalid_grant",
            )
        };
        let Some(raw) = form.get("refresh_token") else {
            return Err((
                Answer::error(400, "invalid_request", "refresh_token is missing"),
                "invalid_request",
            ));
        };
        let part_a = PartA::parse(raw).map_err(|_| invalid("not a Part A", None))?;
        if part_a.tenant_tag != call.tenant.tag {
            return Err(invalid("Part A of another tenant", Some(&part_a.id)));
        }
        audit.used = Some(part_a.id.to_string());
        if (call.quarantined)(&part_a.id) {
            return Err(invalid("quarantined", Some(&part_a.id)));
        }
        let record = match call.store.get(tid, &part_a.id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(invalid("unknown token id", Some(&part_a.id))),
            Err(e) => return Err(store_refused(tid, &e)),
        };
        // A tombstone (rotated out, revoked) still names its grant; `open_token` refuses it.
        if let Some(t) = token::tombstone_info(&record) {
            audit.grant_id = t.grant.map(|g| g.to_string());
        }
        let (real, meta) = token::open_token(call.keyring, tid, &part_a, &record, now)
            .map_err(|e| invalid(&e.to_string(), Some(&part_a.id)))?;
        if meta.kind != TokenKind::Refresh {
            return Err(invalid("not a refresh token", Some(&part_a.id)));
        }
        let Some(grant) = meta.grant_id.as_deref().and_then(TokenId::parse) else {
            return Err(invalid("no grant", Some(&part_a.id)));
        };
        audit.grant_id = Some(grant.to_string());
        match grants::lookup(call.store, tid, &grant).await {
            Ok(Lookup::Live(..)) => {}
            Ok(Lookup::Gone) => return Err(invalid("grant revoked", Some(&part_a.id))),
            Err(e) => return Err(store_refused(tid, &e)),
        }
        Ok(Presented {
            part_a: Zeroizing::new(raw.to_string()),
            id: part_a.id,
            real,
            grant,
        })
    }

    /// Store the new records and the grant. A new grant's record is written last; a refresh
    /// adds its records to the live grant by CAS (see `grants`), and a rotated-out refresh
    /// record is tombstoned after. On failure, records already written are tombstoned (best
    /// effort) and the real tokens are dropped.
    #[allow(clippy::too_many_arguments)]
    async fn store_grant(
        &self,
        call: &Call<'_>,
        grant: TokenId,
        is_new: bool,
        grant_type: &str,
        client_id: Option<String>,
        records: &[NewRecord],
        rotated_out: Option<TokenId>,
        now: i64,
    ) -> Result<(), Refused> {
        let tid: &str = &call.tenant.id;
        let store = call.store;
        let mut written: Vec<&NewRecord> = Vec::new();
        let res: Result<bool, crate::fragments::StoreError> = async {
            for r in records {
                match r.expires_at {
                    Some(e) => {
                        let ttl = u64::try_from(e.saturating_sub(now))
                            .unwrap_or(0)
                            .saturating_add(EXPIRED_GRACE_SECS)
                            .min(MAX_TTL_SECS);
                        store.put_expiring(tid, &r.id, &r.record, ttl).await?
                    }
                    None => store.put(tid, &r.id, &r.record).await?,
                }
                written.push(r);
            }
            let members: Vec<_> = records
                .iter()
                .map(|r| grants::member(&r.id, r.kind, now, r.expires_at))
                .collect();
            if is_new {
                let meta = GrantMeta {
                    created_at: now,
                    grant_type: super::grant_type_label(grant_type).to_string(),
                    client_id: client_id.clone(),
                    last_refresh_at: None,
                    refreshes: 0,
                    revoked_at: None,
                    members,
                };
                grants::create(store, tid, &grant, &meta).await?;
                return Ok(true);
            }
            let gone: Vec<String> = rotated_out.iter().map(|i| i.to_string()).collect();
            let mut superseded = Vec::new();
            let live = grants::update(store, tid, &grant, |m| {
                m.prune(now, &gone);
                m.members.extend(members.iter().cloned());
                superseded = m.cap_access(MAX_ACCESS_MEMBERS);
                m.last_refresh_at = Some(now);
                m.refreshes += 1;
            })
            .await?;
            if live {
                if let Some(old) = rotated_out {
                    grants::tombstone_member(store, tid, &old, TokenKind::Refresh, Some(&grant), now).await?;
                }
                // Access records pushed out of the grant's list are revoked, so the list (read
                // and rewritten by every refresh) stays bounded and a grant revoke still
                // reaches every live record.
                for m in &superseded {
                    if let Some(id) = TokenId::parse(&m.id) {
                        grants::tombstone_member(store, tid, &id, m.kind, Some(&grant), now).await?;
                    }
                }
            }
            Ok(live)
        }
        .await;
        match res {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Revoked while the upstream answered: the new tokens must not live.
                cleanup(call, &written, &grant, now).await;
                log::info!("tenant={tid} oauth grant={grant} revoked during a refresh; new tokens dropped");
                Err((
                    Answer::error(400, "invalid_grant", "the refresh token is invalid, expired or revoked"),
                    "invalid_grant",
                ))
            }
            Err(e) => {
                cleanup(call, &written, &grant, now).await;
                Err(store_refused(tid, &e))
            }
        }
    }
}

/// Tombstone records written before a failure (best effort: they are useless without the
/// Part A values, which are dropped with the answer).
async fn cleanup(call: &Call<'_>, written: &[&NewRecord], grant: &TokenId, now: i64) {
    let tid: &str = &call.tenant.id;
    for r in written {
        if let Err(e) = grants::tombstone_member(call.store, tid, &r.id, r.kind, Some(grant), now).await {
            log::warn!(
                "tenant={tid} oauth: could not tombstone token_id={} after a failure: {e}",
                r.id
            );
        }
    }
}

/// Take a token member out of the answer into a wiped buffer (`Ok(None)` when absent; `Err`
/// when present but not a usable string).
fn take_token(obj: &mut serde_json::Map<String, Value>, name: &str) -> Result<Option<Zeroizing<String>>, ()> {
    match obj.get_mut(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(Zeroizing::new(std::mem::take(s)))),
        Some(_) => Err(()),
    }
}

/// A `token_type` usable as an `Authorization` scheme (RFC 9110 token, short).
fn valid_scheme(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
