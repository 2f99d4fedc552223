//! Hostnames: the validated pattern type, normalisation, and the one map from hostname to
//! value that both the TLS resolver (SNI → certificate) and the tenant table (SNI/Host →
//! tenant) use.
//!
//! A leaf module: it depends on nothing else in the crate. Patterns are validated when config
//! is loaded; on the request path only `normalize_host` and `HostMap::get` run (one hash
//! probe for the exact name, one for the parent domain).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// A hostname a tenant answers on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// `*.acme.example` is stored as `acme.example` and matches exactly one more label.
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(h) => write!(f, "*.{h}"),
        }
    }
}

impl HostPattern {
    /// Validate a hostname pattern from config; the result is lower-cased. The error says
    /// what to write instead.
    pub fn parse(h: &str) -> Result<HostPattern, String> {
        let lower = h.trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!("{h:?} is not a DNS hostname; use e.g. \"saas.acme.example\" or \"*.acme.example\" (one wildcard label, leftmost)"));
        }
        if wild && !name.contains('.') {
            return Err(format!(
                "{h:?} wildcards a top-level domain; use a wildcard under a registered domain, e.g. \"*.acme.example\""
            ));
        }
        Ok(if wild {
            HostPattern::Wildcard(name)
        } else {
            HostPattern::Exact(name)
        })
    }
}

/// Lower-case `host`, strip a `:port` and a trailing dot. Borrows when nothing changes.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = if host.starts_with('[') {
        // IPv6 literal: keep up to the closing bracket.
        host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The authority a request names: the URI's (HTTP/2 `:authority`, or an absolute-form HTTP/1
/// target) or else the `Host` header. Raw bytes; callers decide how to treat non-UTF-8.
pub fn request_authority<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a [u8]> {
    match uri.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => headers.get(http::header::HOST).map(|h| h.as_bytes()),
    }
}

/// Hostname patterns → values. Exact names win over wildcards; a wildcard matches exactly
/// one label more than its domain.
#[derive(Debug, Clone)]
pub struct HostMap<V> {
    exact: HashMap<String, V>,
    wildcard: HashMap<String, V>,
}

impl<V> Default for HostMap<V> {
    fn default() -> Self {
        HostMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<V> HostMap<V> {
    /// Add a pattern; returns the value it replaced, if any.
    pub fn insert(&mut self, pattern: &HostPattern, value: V) -> Option<V> {
        match pattern {
            HostPattern::Exact(n) => self.exact.insert(n.clone(), value),
            HostPattern::Wildcard(n) => self.wildcard.insert(n.clone(), value),
        }
    }

    /// The value for an already normalised (lower-case, no port) name.
    pub fn get(&self, name: &str) -> Option<&V> {
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// The value for a raw `Host`/`:authority` (any case, optional port).
    pub fn lookup(&self, host: &str) -> Option<&V> {
        self.get(&normalize_host(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("Saas.Acme.Example:8443"), "saas.acme.example");
        assert_eq!(normalize_host("saas.acme.example."), "saas.acme.example");
        assert!(matches!(normalize_host("saas.acme.example"), Cow::Borrowed(_)));
        assert_eq!(normalize_host("[::1]:443"), "[::1]");
    }

    #[test]
    fn patterns() {
        assert_eq!(
            HostPattern::parse("Saas.Acme.Example."),
            Ok(HostPattern::Exact("saas.acme.example".into()))
        );
        assert_eq!(
            HostPattern::parse("*.acme.example"),
            Ok(HostPattern::Wildcard("acme.example".into()))
        );
        for bad in ["*.com", "a.*.example", "bad host", "-x.example", ""] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn map_exact_beats_wildcard_and_wildcard_is_one_label() {
        let mut m = HostMap::default();
        m.insert(&HostPattern::parse("*.acme.example").unwrap(), 1);
        m.insert(&HostPattern::parse("api.acme.example").unwrap(), 2);
        assert_eq!(m.lookup("API.acme.example:443"), Some(&2));
        assert_eq!(m.lookup("x.acme.example"), Some(&1));
        assert_eq!(m.lookup("a.b.acme.example"), None);
        assert_eq!(m.lookup("acme.example"), None);
    }
}
