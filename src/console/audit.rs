//! Audit log of admin actions: who (the admin token's `name`), what, which target, when,
//! through which door (`api` or `console`), and how it ended. Not on the request path: the admin
//! API and the console append after each state-changing call (mint, revoke, rotate, unblock,
//! key rotation, tenant-wide revoke).
//!
//! Kept in a bounded in-memory ring (`admin.audit_capacity`, oldest dropped first) read by
//! `GET /v1/audit` and the console's audit view, and written as one JSON line per entry to the
//! process log (target `tessera::audit`) for shipping. Entries never hold a token, a Part A or
//! an upstream credential: only ids, tenant names and admin token names.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::{AdminToken, Scope};

/// Which door an action came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Api,
    Console,
}

/// One admin action.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    /// Increasing per process, so readers can tell order within one second.
    pub seq: u64,
    /// Unix seconds.
    pub ts: i64,
    /// RFC 3339 of `ts`.
    pub at: String,
    /// The admin token's configured name.
    pub who: String,
    /// `operator` or `tenant:<id>`.
    pub scope: String,
    pub source: Source,
    /// `mint`, `revoke`, `rotate`, `unblock`, `rotate_keys`, `revoke_tenant`, …
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Token (or grant) id acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// HTTP status of the outcome (2xx = done).
    pub status: u16,
    /// Extra facts: the new id of a mint or rotation, the error code of a failure, counts.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What an action was, before it is stamped.
pub struct Action<'a> {
    pub action: &'static str,
    pub tenant: Option<&'a str>,
    pub target: Option<String>,
    pub status: u16,
    pub detail: String,
}

/// Bounded ring of audit entries.
pub struct AuditLog {
    cap: usize,
    inner: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    next_seq: u64,
    entries: VecDeque<AuditEntry>,
}

pub(crate) fn scope_label(scope: &Scope) -> String {
    match scope {
        Scope::Operator => "operator".into(),
        Scope::Tenant(t) => format!("tenant:{t}"),
    }
}

impl AuditLog {
    pub fn new(cap: usize) -> AuditLog {
        AuditLog {
            cap: cap.max(1),
            inner: Mutex::new(Ring::default()),
        }
    }

    /// Append one entry (and log it as a JSON line). Returns it.
    pub fn record(&self, who: &AdminToken, source: Source, a: Action<'_>) -> AuditEntry {
        let ts = crate::clock::unix_secs();
        let mut e = AuditEntry {
            seq: 0,
            ts,
            at: crate::admin::rfc3339(ts),
            who: who.name.clone(),
            scope: scope_label(&who.scope),
            source,
            action: a.action,
            tenant: a.tenant.map(str::to_string),
            target: a.target,
            status: a.status,
            detail: a.detail,
        };
        // A poisoned lock only means another thread panicked while appending; the ring is
        // still a valid VecDeque, so keep recording.
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.next_seq += 1;
        e.seq = ring.next_seq;
        if ring.entries.len() >= self.cap {
            ring.entries.pop_front();
        }
        ring.entries.push_back(e.clone());
        drop(ring);
        match serde_json::to_string(&e) {
            Ok(line) => log::info!(target: "tessera::audit", "{line}"),
            Err(err) => log::error!("audit entry not serialisable: {err}"),
        }
        e
    }

    /// Newest first, at most `limit`, only `tenant`'s entries when given (entries without a
    /// tenant, such as key rotation, are then left out).
    pub fn list(&self, tenant: Option<&str>, limit: usize) -> Vec<AuditEntry> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.entries
            .iter()
            .rev()
            .filter(|e| tenant.is_none_or(|t| e.tenant.as_deref() == Some(t)))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, scope: Scope) -> AdminToken {
        AdminToken {
            name: name.into(),
            sha256: [0; 32],
            scope,
        }
    }

    #[test]
    fn ring_is_bounded_and_filtered() {
        let log = AuditLog::new(3);
        let op = who("ops", Scope::Operator);
        for (i, t) in ["acme", "globex", "acme", "acme"].iter().enumerate() {
            log.record(
                &op,
                Source::Api,
                Action {
                    action: "revoke",
                    tenant: Some(t),
                    target: Some(format!("id{i}")),
                    status: 200,
                    detail: String::new(),
                },
            );
        }
        log.record(
            &op,
            Source::Console,
            Action {
                action: "rotate_keys",
                tenant: None,
                target: None,
                status: 200,
                detail: String::new(),
            },
        );
        let all = log.list(None, 100);
        assert_eq!(all.len(), 3, "capacity 3");
        assert_eq!(all[0].action, "rotate_keys");
        assert!(all[0].seq > all[1].seq);
        let acme = log.list(Some("acme"), 100);
        assert_eq!(acme.len(), 2);
        assert!(acme.iter().all(|e| e.tenant.as_deref() == Some("acme")));
        assert!(log.list(Some("globex"), 100).is_empty(), "evicted");
        let json = serde_json::to_string(&all[0]).unwrap();
        assert!(
            json.contains("\"source\":\"console\"") && json.contains("\"who\":\"ops\""),
            "{json}"
        );
    }
}
