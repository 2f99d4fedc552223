//! The revocation endpoint (RFC 7009): `POST revocation_path` with `token=<Part A>`.
//!
//! Runs in `request_filter` on a tenant's OAuth surface (see `super`). The Part A is opened,
//! the real token forwarded to the authorization server's revocation endpoint, and the record
//! tombstoned whatever the server answers — a refresh token takes its whole grant with it.
//! Anything that is not a live Part A of this tenant gets `200` without an upstream call
//! (RFC 7009 §2.2: an invalid token is not an error), so a real token sent here never reaches
//! the server through Tessera.

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;

use super::grants;
use super::{exchange, parse_form, read_form, store_refused, Answer, Call, OAuth, Refused};
use crate::session_log::OAuthAudit;
use crate::token::{self, PartA, TokenId, TokenKind};

impl OAuth {
    pub(super) async fn revocation(
        &self,
        call: &Call<'_>,
        session: &mut Session,
        audit: &mut OAuthAudit,
        upstream_status: &mut Option<u16>,
    ) -> (Answer, &'static str) {
        match self.revocation_steps(call, session, audit, upstream_status).await {
            Ok(a) | Err(a) => a,
        }
    }

    async fn revocation_steps(
        &self,
        call: &Call<'_>,
        session: &mut Session,
        audit: &mut OAuthAudit,
        upstream_status: &mut Option<u16>,
    ) -> Result<(Answer, &'static str), Refused> {
        let tid: &str = &call.tenant.id;
        let body = read_form(session).await?;
        let mut form = parse_form(&body)?;
        drop(body);
        let Some(raw) = form.get("token") else {
            return Err((
                Answer::error(400, "invalid_request", "token is missing"),
                "invalid_request",
            ));
        };
        let nothing = |result: &'static str| {
            Ok((
                Answer::Own {
                    status: 200,
                    body: serde_json::json!({}),
                    retry_after: false,
                },
                result,
            ))
        };
        let Ok(part_a) = PartA::parse(raw) else {
            return nothing("not_part_a");
        };
        if part_a.tenant_tag != call.tenant.tag {
            return nothing("not_part_a");
        }
        audit.used = Some(part_a.id.to_string());
        let record = match call.store.get(tid, &part_a.id).await {
            Ok(Some(r)) => r,
            Ok(None) => return nothing("unknown"),
            Err(e) => return Err(store_refused(tid, &e)),
        };
        if token::is_tombstone(&record).is_some() {
            return nothing("already_revoked");
        }
        // Expiry does not matter here: an expired token is still revoked (and not forwarded).
        let opened = token::open_token(call.keyring, tid, &part_a, &record, i64::MIN + 1);
        let (real, meta) = match opened {
            Ok(x) => x,
            Err(_) => return nothing("invalid"),
        };
        let now = crate::clock::unix_secs();
        let grant = meta.grant_id.as_deref().and_then(TokenId::parse);
        audit.grant_id = grant.map(|g| g.to_string());
        // Forward only tokens the authorization server issued (not minted ones).
        let answer = if meta.kind == TokenKind::Minted {
            None
        } else {
            form.set("token", &real);
            let out = form.encode();
            drop(real);
            let peer = call.surface.peer.load();
            Some(exchange::send(&self.connector, &peer, call.upstream.clone(), &out, 64 * 1024).await)
        };
        drop(form);
        // Tombstone whatever the server answered.
        // The record itself always (its grant record may be gone already), and for a refresh
        // token every other record of its grant.
        let mut revoked = grants::tombstone_member(call.store, tid, &part_a.id, meta.kind, grant.as_ref(), now).await;
        if let (Ok(()), TokenKind::Refresh, Some(g)) = (&revoked, meta.kind, grant) {
            revoked = grants::revoke(call.store, tid, &g, now).await.map(|_| ());
        }
        if let Err(e) = revoked {
            return Err(store_refused(tid, &e));
        }
        log::info!(
            "tenant={tid} oauth revocation token_id={} kind={} grant={}",
            part_a.id,
            meta.kind.label(),
            audit.grant_id.as_deref().unwrap_or("-")
        );
        match answer {
            None => nothing("revoked"),
            Some(Ok(reply)) => {
                *upstream_status = Some(reply.header.status.as_u16());
                let body = Bytes::copy_from_slice(&reply.body);
                Ok((
                    Answer::Upstream {
                        header: reply.header,
                        body,
                    },
                    "revoked",
                ))
            }
            Some(Err(e)) => {
                log::warn!("tenant={tid} oauth revocation endpoint: {e} (the record is revoked in Tessera)");
                Ok((Answer::upstream_failed(&e), "revoked_upstream_failed"))
            }
        }
    }
}
