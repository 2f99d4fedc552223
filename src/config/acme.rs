//! `acme:` — automatic certificates for tenants with `tls: {acme: true}`, checked at load
//! time. Used by `crate::acme` (a background service, never on the request path).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, Checker};

/// The file form of `acme:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// ACME directory URL (https).
    pub directory: String,
    /// Contact addresses (`mailto:` URLs) for the account.
    #[serde(default)]
    pub contact: Vec<String>,
    /// A PEM root to trust for the directory's HTTPS (test CAs such as Pebble).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `http-01` (answered on `listen.http`) or `tls-alpn-01` (on `listen.https`).
    #[serde(default)]
    pub challenge: Option<String>,
    /// Renew when the certificate expires within this duration (default 30d).
    #[serde(default)]
    pub renew_before: Option<String>,
}

/// The challenge Tessera answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `GET /.well-known/acme-challenge/{token}` on `listen.http`.
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on `listen.https` (`crate::acme::tls_alpn`).
    TlsAlpn01,
}

impl Challenge {
    /// The RFC 8555 name, as in the config and the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// Validated `acme:` section.
#[derive(Debug, Clone)]
pub struct AcmeConf {
    pub directory: String,
    pub contact: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub challenge: Challenge,
    pub renew_before: Duration,
}

/// Check `acme:`; `has_http` says whether `listen.http` is set.
pub(super) fn validate(raw: &RawAcme, has_http: bool, c: &mut Checker) -> Option<AcmeConf> {
    let before = c.problems.len();
    if !raw.directory.starts_with("https://") {
        c.bad(
            "acme.directory",
            format!(
                "{:?} is not an https URL; give the ACME directory, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
                raw.directory
            ),
        );
    }
    for (i, m) in raw.contact.iter().enumerate() {
        if !m.starts_with("mailto:") || m.len() <= "mailto:".len() {
            c.bad(
                format!("acme.contact[{i}]"),
                format!("{m:?} is not a mailto: URL; write e.g. \"mailto:ops@example.com\""),
            );
        }
    }
    let ca_file = raw.ca_file.as_ref().map(PathBuf::from);
    if let Some(p) = &ca_file {
        if let Err(e) = crate::tls::load_ca_ders(p) {
            c.bad("acme.ca_file", e);
        }
    }
    // Default tls-alpn-01: answered on the HTTPS listener every deployment has; http-01 also
    // needs port 80 (listen.http) reachable by the CA.
    let challenge = match raw.challenge.as_deref().unwrap_or("tls-alpn-01") {
        "http-01" => {
            if !has_http {
                c.bad(
                    "acme.challenge",
                    "\"http-01\" is answered on the plain HTTP listener; set listen.http (port 80 as the CA sees it)",
                );
            }
            Challenge::Http01
        }
        "tls-alpn-01" => Challenge::TlsAlpn01,
        other => {
            c.bad(
                "acme.challenge",
                format!("{other:?} is not a supported challenge; use \"tls-alpn-01\" (on listen.https) or \"http-01\" (needs listen.http)"),
            );
            Challenge::Http01
        }
    };
    let renew_before = match raw.renew_before.as_deref() {
        None => Duration::from_secs(30 * 86_400),
        Some(v) => match parse_duration(v) {
            Some(d) if !d.is_zero() => d,
            _ => {
                c.bad(
                    "acme.renew_before",
                    format!("{v:?} is not a positive duration; write e.g. \"30d\""),
                );
                Duration::ZERO
            }
        },
    };
    if c.problems.len() > before {
        return None;
    }
    Some(AcmeConf {
        directory: raw.directory.clone(),
        contact: raw.contact.clone(),
        ca_file,
        challenge,
        renew_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dir: &str, challenge: Option<&str>, renew: Option<&str>) -> RawAcme {
        RawAcme {
            directory: dir.into(),
            contact: vec!["mailto:ops@example.com".into()],
            ca_file: None,
            challenge: challenge.map(Into::into),
            renew_before: renew.map(Into::into),
        }
    }

    fn problems(r: &RawAcme, http: bool) -> Vec<(String, String)> {
        let mut c = Checker { problems: vec![] };
        validate(r, http, &mut c);
        c.problems.into_iter().map(|p| (p.key, p.message)).collect()
    }

    #[test]
    fn valid_section_with_defaults() {
        let mut c = Checker { problems: vec![] };
        let a = validate(&raw("https://ca.example/dir", None, None), true, &mut c).unwrap();
        assert_eq!(a.challenge, Challenge::TlsAlpn01);
        assert_eq!(a.renew_before, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn messages_name_key_value_and_fix() {
        let p = problems(&raw("http://ca.example/dir", None, None), true);
        assert_eq!(p[0].0, "acme.directory");
        assert!(p[0].1.contains("http://ca.example/dir") && p[0].1.contains("https"));
        let p = problems(&raw("https://ca/d", Some("http-01"), None), false);
        assert_eq!(p[0].0, "acme.challenge");
        assert!(p[0].1.contains("listen.http"));
        let p = problems(&raw("https://ca/d", Some("dns-01"), None), true);
        assert!(p[0].1.contains("dns-01") && p[0].1.contains("tls-alpn-01"));
        // tls-alpn-01 is answered on the HTTPS listener: no listen.http needed.
        assert!(problems(&raw("https://ca/d", Some("tls-alpn-01"), None), false).is_empty());
        let p = problems(&raw("https://ca/d", None, Some("soon")), true);
        assert_eq!(p[0].0, "acme.renew_before");
        let mut r = raw("https://ca/d", None, None);
        r.contact = vec!["ops@example.com".into()];
        r.ca_file = Some("/nonexistent/root.pem".into());
        let p = problems(&r, true);
        assert_eq!(p[0].0, "acme.contact[0]");
        assert_eq!(p[1].0, "acme.ca_file");
    }
}
