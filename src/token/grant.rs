//! Grant records: one per OAuth authorization, stored in the fragment store beside the token
//! records under the grant id (`<prefix>frag:<tenant>:<grant id>`).
//!
//! Written at the OAuth token endpoint (`crate::oauth`) when a grant starts and on every
//! refresh; read there before a refresh is forwarded and after its records are stored, and by
//! the admin API (grants list, revoke). Never read on the API request path: a grant revoke
//! tombstones every record of the grant, which the request path already refuses.
//!
//! Format: `0x02 ‖ JSON(GrantMeta)`. It holds no secret (no token, no code, no client secret),
//! so it is not sealed; a forged or changed grant record can only make a refresh fail. A Part A
//! naming a grant id is refused like any tampered record (its first byte is not a token
//! record's version).

use serde::{Deserialize, Serialize};

/// First byte of a grant record.
const GRANT_RECORD: u8 = 2;

/// Public facts about one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantMeta {
    /// Unix seconds of the first token answer.
    pub created_at: i64,
    /// The grant type of the first token answer (`authorization_code`, `client_credentials`…).
    pub grant_type: String,
    /// The OAuth client that obtained it (a public identifier), when Tessera could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Unix seconds of the last refresh through Tessera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<i64>,
    /// Refreshes through Tessera so far.
    #[serde(default)]
    pub refreshes: u64,
    /// Set when the grant was revoked; the record is then kept (with a TTL) so the grant
    /// still shows what it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// The records of the grant that may still be live: every access and refresh record it
    /// issued, minus those that expired or were rotated out (pruned on each update). A grant
    /// revoke tombstones exactly these.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// One record of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Token id (hex).
    pub id: String,
    pub kind: super::TokenKind,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl GrantMeta {
    /// Keep at most `max` access members (the newest); returns the ones dropped, oldest first.
    pub fn cap_access(&mut self, max: usize) -> Vec<Member> {
        let access = self
            .members
            .iter()
            .filter(|m| m.kind == super::TokenKind::Access)
            .count();
        let mut excess = access.saturating_sub(max);
        let mut dropped = Vec::new();
        // Members are appended in issue order: the first access members are the oldest.
        self.members.retain(|m| {
            if excess > 0 && m.kind == super::TokenKind::Access {
                excess -= 1;
                dropped.push(m.clone());
                false
            } else {
                true
            }
        });
        dropped
    }

    /// Drop members that can no longer be used at `now` (expired) and those in `gone`
    /// (rotated-out refresh records, already tombstoned).
    pub fn prune(&mut self, now: i64, gone: &[String]) {
        self.members
            .retain(|m| m.expires_at.is_none_or(|e| e > now) && !gone.contains(&m.id));
    }
}

/// The stored form of a grant record.
pub fn encode(meta: &GrantMeta) -> Vec<u8> {
    let mut v = vec![GRANT_RECORD];
    // Serialising plain strings and integers cannot fail.
    v.extend_from_slice(&serde_json::to_vec(meta).unwrap_or_default());
    v
}

/// `Some` if `stored` is a grant record (tombstones and token records are not).
pub fn decode(stored: &[u8]) -> Option<GrantMeta> {
    match stored {
        [GRANT_RECORD, json @ ..] => serde_json::from_slice(json).ok(),
        _ => None,
    }
}

/// Whether `stored` is a grant record, without parsing it.
pub fn is_grant(stored: &[u8]) -> bool {
    stored.first() == Some(&GRANT_RECORD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_not_a_token_record() {
        let m = GrantMeta {
            created_at: 5,
            grant_type: "authorization_code".into(),
            client_id: Some("app".into()),
            last_refresh_at: None,
            refreshes: 0,
            revoked_at: None,
            members: vec![Member {
                id: "00".repeat(16),
                kind: crate::token::TokenKind::Access,
                created_at: 5,
                expires_at: Some(10),
            }],
        };
        let s = encode(&m);
        assert!(is_grant(&s));
        assert_eq!(decode(&s).as_ref(), Some(&m));
        assert!(crate::token::is_tombstone(&s).is_none());
        assert!(crate::token::record_kid(&s).is_none());
        assert_eq!(decode(&crate::token::tombstone(1)), None);
        let mut m = m;
        m.prune(9, &[]);
        assert_eq!(m.members.len(), 1);
        m.prune(10, &[]);
        assert!(m.members.is_empty());
        for i in 0..5 {
            m.members.push(Member {
                id: format!("{i:032x}"),
                kind: if i == 2 {
                    crate::token::TokenKind::Refresh
                } else {
                    crate::token::TokenKind::Access
                },
                created_at: i,
                expires_at: None,
            });
        }
        let dropped = m.cap_access(2);
        assert_eq!(dropped.iter().map(|d| d.created_at).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(
            m.members.iter().map(|d| d.created_at).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }
}
