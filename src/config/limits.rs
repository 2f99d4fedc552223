//! `limits:` — connection guard settings (slowloris and HTTP/2 rapid-reset defences), checked
//! at load time. The values are used by `crate::guard` on every accepted connection.

use std::time::Duration;

use super::raw::RawLimits;
use super::Checker;

/// Pingora's own HTTP/1 parser refuses more than 256 headers (`MAX_HEADERS`); a larger cap
/// here would never be reached.
const PINGORA_MAX_HEADERS: usize = 256;
/// Pingora's own HTTP/1 head limit (`MAX_HEADER_SIZE`, 1 MiB).
const PINGORA_MAX_HEAD_BYTES: usize = 1024 * 1024;
/// Smallest head cap that still fits an `Authorization: Bearer <Part A>` request with the usual
/// headers.
const MIN_HEAD_BYTES: usize = 1024;

/// Validated `limits:` section.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a complete request head (HTTP/1: from the connection start
    /// or the first byte of the next keep-alive request; HTTP/2: the connection preface).
    pub request_head_timeout: Duration,
    /// Largest HTTP/1 request head (request line + headers); bigger gets `431`.
    pub max_request_head_bytes: usize,
    /// Most header lines in an HTTP/1 request head; more gets `431`.
    pub max_headers: usize,
    /// Concurrent connections one client IP may hold; more are refused at accept.
    pub max_connections_per_ip: u32,
    /// HTTP/2 streams a client IP may reset before they reach the upstream, per window,
    /// across all its connections; past it the IP's connections are closed and new ones
    /// refused for one window.
    pub h2_max_resets_per_ip: u32,
    /// Window of `h2_max_resets_per_ip`.
    pub h2_reset_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_head_timeout: Duration::from_secs(10),
            max_request_head_bytes: 64 * 1024,
            max_headers: 100,
            max_connections_per_ip: 1024,
            h2_max_resets_per_ip: 200,
            h2_reset_window: Duration::from_secs(10),
        }
    }
}

/// Validate `limits:`; every problem is reported through `c` with key, value and fix.
pub(super) fn validate(raw: &RawLimits, c: &mut Checker) -> Limits {
    let d = Limits::default();
    let max_request_head_bytes = match raw.max_request_head_bytes {
        None => d.max_request_head_bytes,
        Some(n) if (MIN_HEAD_BYTES..=PINGORA_MAX_HEAD_BYTES).contains(&n) => n,
        Some(n) => {
            c.bad(
                "limits.max_request_head_bytes",
                format!(
                    "{n} is outside {MIN_HEAD_BYTES}..={PINGORA_MAX_HEAD_BYTES} bytes; use e.g. 65536 (the default, 64 KiB)"
                ),
            );
            d.max_request_head_bytes
        }
    };
    let max_headers = match raw.max_headers {
        None => d.max_headers,
        Some(n) if (1..=PINGORA_MAX_HEADERS).contains(&n) => n,
        Some(n) => {
            c.bad(
                "limits.max_headers",
                format!("{n} is outside 1..={PINGORA_MAX_HEADERS} (Pingora's own cap); use e.g. 100 (the default)"),
            );
            d.max_headers
        }
    };
    Limits {
        request_head_timeout: c.duration(
            "limits.request_head_timeout",
            raw.request_head_timeout.as_deref(),
            d.request_head_timeout,
        ),
        max_request_head_bytes,
        max_headers,
        max_connections_per_ip: positive(
            c,
            "limits.max_connections_per_ip",
            raw.max_connections_per_ip,
            d.max_connections_per_ip,
            "1 or more (default 1024); it bounds connections per client IP, 0 would refuse everyone",
        ),
        h2_max_resets_per_ip: positive(
            c,
            "limits.h2_max_resets_per_ip",
            raw.h2_max_resets_per_ip,
            d.h2_max_resets_per_ip,
            "1 or more (default 200); 0 would refuse an IP after its first cancelled HTTP/2 request",
        ),
        h2_reset_window: c.duration(
            "limits.h2_reset_window",
            raw.h2_reset_window.as_deref(),
            d.h2_reset_window,
        ),
    }
}

fn positive(c: &mut Checker, key: &str, v: Option<u32>, default: u32, fix: &str) -> u32 {
    match v {
        None => default,
        Some(0) => {
            c.bad(key, format!("0 is not allowed; use {fix}"));
            default
        }
        Some(n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (Limits, Vec<String>) {
        let raw: RawLimits = serde_yaml::from_str(yaml).unwrap();
        let mut c = Checker { problems: vec![] };
        let l = validate(&raw, &mut c);
        (
            l,
            c.problems
                .into_iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect(),
        )
    }

    #[test]
    fn defaults() {
        let (l, p) = check("{}");
        assert!(p.is_empty());
        assert_eq!(l.request_head_timeout, Duration::from_secs(10));
        assert_eq!(l.max_request_head_bytes, 65536);
        assert_eq!(l.max_headers, 100);
        assert_eq!(l.max_connections_per_ip, 1024);
    }

    #[test]
    fn zero_and_out_of_range_name_key_value_fix() {
        let (_, p) = check(
            "{request_head_timeout: 0s, max_request_head_bytes: 0, max_headers: 0, max_connections_per_ip: 0, h2_max_resets_per_ip: 0, h2_reset_window: 0s}",
        );
        assert_eq!(p.len(), 6, "{p:#?}");
        for key in [
            "limits.request_head_timeout",
            "limits.max_request_head_bytes",
            "limits.max_headers",
            "limits.max_connections_per_ip",
            "limits.h2_max_resets_per_ip",
            "limits.h2_reset_window",
        ] {
            let line = p
                .iter()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("{key} missing"));
            assert!(line.contains("0"), "{line}");
            assert!(line.contains("use") || line.contains("write"), "{line}");
        }
        let (_, p) = check("{max_headers: 1000, max_request_head_bytes: 4194304}");
        assert_eq!(p.len(), 2, "{p:#?}");
    }
}
