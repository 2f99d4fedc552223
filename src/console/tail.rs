//! Live tail of a tenant's sessions as server-sent events (`GET /console/t/{t}/tail/events`).
//! Not on the proxy's request path: the stream polls the session log (`SessionStore::query`,
//! Redis stream or memory ring, so it shows every instance's requests when the log is in
//! Redis) once a second for records newer than the last one sent, and sends each as one
//! `record` event whose data is the record's JSON (already scrubbed: token ids, never tokens).
//!
//! The stream ends when the session ends (logout, expiry: checked every poll without
//! refreshing the idle deadline), on shutdown, after `MAX_AGE` (the browser's `EventSource`
//! reconnects), or when the client goes away. At most `MAX_STREAMS` streams are open at once.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use super::session::Current;
use super::{head, views, write};
use crate::admin::AdminState;
use crate::session_log::{Query, SessionRecord};

const POLL: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies and the browser from timing the stream out.
const KEEPALIVE: u32 = 15;
/// Longest one stream stays open; `EventSource` reconnects on its own.
const MAX_AGE: Duration = Duration::from_secs(600);

/// The `data:` lines of one event (`\n` in the payload would start a new field).
fn event(rec: &SessionRecord) -> Option<Bytes> {
    let json = serde_json::to_string(rec).ok()?;
    Some(Bytes::from(format!("event: record\ndata: {json}\n\n")))
}

pub(super) async fn stream(
    state: &AdminState,
    http: &mut ServerSession,
    cur: &Current,
    tenant: &str,
    shutdown: &ShutdownWatch,
) {
    let Ok(_permit) = state.console.streams.clone().try_acquire_owned() else {
        let p = views::error(
            Some(cur),
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many live tails are open; close one and retry.",
        );
        return write(http, p).await;
    };
    let Some(mut h) = head(StatusCode::OK, "text/event-stream") else {
        return;
    };
    let _ = h.insert_header("transfer-encoding", "chunked");
    http.set_keepalive(None);
    if http.write_response_header(Box::new(h)).await.is_err() {
        return;
    }
    // Start from now: the page already shows the recent records.
    let mut since = crate::clock::unix_ms();
    // Request ids already sent with timestamp == `since` (the query is inclusive).
    let mut sent_at_since: Vec<String> = Vec::new();
    let started = tokio::time::Instant::now();
    let mut shutdown = shutdown.clone();
    let mut tick = tokio::time::interval(POLL);
    let mut idle_ticks = 0u32;
    if http
        .write_response_body(Bytes::from_static(b"retry: 3000\n: tail open\n\n"), false)
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        if started.elapsed() > MAX_AGE || !state.console.sessions.still_live(cur) {
            break;
        }
        let q = Query {
            since: Some(since),
            limit: 200,
            ..Default::default()
        };
        let mut records = match state.sessions.query(tenant, &q).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("console tail: session log query failed: {e}");
                Vec::new()
            }
        };
        // Oldest first on the wire.
        records.reverse();
        let mut out = Vec::new();
        for r in &records {
            if r.ts == since && sent_at_since.contains(&r.request_id) {
                continue;
            }
            if r.ts > since {
                since = r.ts;
                sent_at_since.clear();
            }
            sent_at_since.push(r.request_id.clone());
            if let Some(ev) = event(r) {
                out.extend_from_slice(&ev);
            }
        }
        if out.is_empty() {
            idle_ticks += 1;
            if idle_ticks < KEEPALIVE {
                continue;
            }
            out.extend_from_slice(b": keepalive\n\n");
        }
        idle_ticks = 0;
        if http.write_response_body(Bytes::from(out), false).await.is_err() {
            return;
        }
    }
    let _ = http.write_response_body(Bytes::new(), true).await;
}
