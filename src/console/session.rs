//! Console sessions and CSRF tokens. Runs on every console request, before any view or action.
//!
//! A session id is 256 random bits (hex in the `tessera_console` cookie: `HttpOnly; Secure;
//! SameSite=Strict; Path=/console`). The server keeps only the SHA-256 of the id, mapped to the
//! matched `AdminToken` (name + scope; never the admin token itself), a per-session CSRF token
//! and two deadlines: idle (`admin.console.idle_timeout`) and absolute
//! (`admin.console.absolute_timeout`). Logout deletes the entry. The map is bounded
//! (`MAX_SESSIONS`); expired entries are swept at each login.
//!
//! CSRF: every form carries the session's CSRF token in a hidden field, compared in constant
//! time on every POST. The login form, which has no session yet, uses a double-submit token
//! (`tessera_login` cookie = hidden field). `SameSite=Strict` and the `Origin` check in
//! `super` are further layers, not the only one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminToken;

/// Name of the session cookie.
pub const COOKIE: &str = "tessera_console";
/// Name of the pre-login double-submit cookie.
pub const LOGIN_COOKIE: &str = "tessera_login";
/// Most live sessions at once; a login beyond it is refused until some expire or log out.
pub const MAX_SESSIONS: usize = 1024;

/// A 256-bit random value as 64 lowercase hex characters.
pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    crate::token::fill_random(&mut b);
    hex::encode(b)
}

/// Constant-time equality of two presented strings (lengths are not secret).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a request learns from a valid session.
#[derive(Clone)]
pub struct Current {
    pub caller: AdminToken,
    pub csrf: String,
    /// Hash of the session id (the map key), to end this session.
    key: [u8; 32],
}

impl Current {
    /// Whether `presented` is this session's CSRF token.
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| same(p, &self.csrf))
    }
}

struct Entry {
    caller: AdminToken,
    csrf: String,
    created: Instant,
    last: Instant,
}

/// Why a login could not open a session.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("too many console sessions are open ({MAX_SESSIONS}); log out elsewhere or wait for them to expire")]
    Full,
}

/// Server-side session map.
pub struct Sessions {
    idle: Duration,
    absolute: Duration,
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            idle,
            absolute,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.last) < self.idle && now.duration_since(e.created) < self.absolute
    }

    /// Open a session for `caller`; returns the cookie value (the id, shown once).
    pub fn create(&self, caller: &AdminToken) -> Result<String, SessionError> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| self.live(e, now));
        if map.len() >= MAX_SESSIONS {
            return Err(SessionError::Full);
        }
        let id = random_hex();
        map.insert(
            key_of(&id),
            Entry {
                caller: caller.clone(),
                csrf: random_hex(),
                created: now,
                last: now,
            },
        );
        Ok(id)
    }

    /// The session named by a cookie value, if it is live; refreshes its idle deadline.
    pub fn get(&self, id: &str) -> Option<Current> {
        self.lookup(id, true)
    }

    /// Like `get` without refreshing the idle deadline (the live tail checks its session every
    /// few seconds; an open tab must not keep a session alive forever).
    pub fn peek(&self, id: &str) -> Option<Current> {
        self.lookup(id, false)
    }

    fn lookup(&self, id: &str, touch: bool) -> Option<Current> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let key = key_of(id);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.get_mut(&key)?;
        if !self.live(e, now) {
            map.remove(&key);
            return None;
        }
        if touch {
            e.last = now;
        }
        Some(Current {
            caller: e.caller.clone(),
            csrf: e.csrf.clone(),
            key,
        })
    }

    /// Logout: the session is gone for every tab and stream that uses it.
    pub fn end(&self, cur: &Current) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&cur.key);
    }

    /// Whether the session is still live (for long-running streams; does not refresh it).
    pub fn still_live(&self, cur: &Current) -> bool {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&cur.key).is_some_and(|e| self.live(e, now))
    }
}

/// `Set-Cookie` value for a session id (or an empty, expired one to clear it).
pub fn session_cookie(id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/console"),
        None => format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age=0"),
    }
}

/// `Set-Cookie` value for the login form's double-submit token (10 minutes).
pub fn login_cookie(value: &str) -> String {
    format!("{LOGIN_COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/console/login; Max-Age=600")
}

/// The value of cookie `name` in a `Cookie` header, if present once or more (first wins).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scope;

    fn op() -> AdminToken {
        AdminToken {
            name: "ops".into(),
            sha256: [7; 32],
            scope: Scope::Operator,
        }
    }

    #[test]
    fn create_get_end() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(3600));
        let id = s.create(&op()).unwrap();
        assert_eq!(id.len(), 64);
        let cur = s.get(&id).unwrap();
        assert_eq!(cur.caller.name, "ops");
        assert!(cur.csrf_ok(Some(&cur.csrf.clone())));
        assert!(!cur.csrf_ok(Some("x")));
        assert!(!cur.csrf_ok(None));
        assert!(s.get(&random_hex()).is_none());
        assert!(s.get("not hex").is_none());
        s.end(&cur);
        assert!(s.get(&id).is_none());
        assert!(!s.still_live(&cur));
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let s = Sessions::new(Duration::from_millis(30), Duration::from_secs(3600));
        let id = s.create(&op()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.get(&id).is_none(), "idle expiry");
        let s = Sessions::new(Duration::from_secs(60), Duration::from_millis(30));
        let id = s.create(&op()).unwrap();
        std::thread::sleep(Duration::from_millis(15));
        assert!(s.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(25));
        assert!(s.get(&id).is_none(), "absolute expiry despite use");
    }

    #[test]
    fn bounded() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        for _ in 0..MAX_SESSIONS {
            s.create(&op()).unwrap();
        }
        assert_eq!(s.create(&op()), Err(SessionError::Full));
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie("a=1; tessera_console=abc; b=2", COOKIE), Some("abc"));
        assert_eq!(cookie("a=1", COOKIE), None);
        let c = session_cookie(Some("abc"));
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
            assert!(c.contains(flag), "{c}");
        }
    }
}
