//! `application/x-www-form-urlencoded` bodies of the token and revocation endpoints
//! (RFC 6749 §3.2, RFC 7009 §2.1). Runs in `request_filter` on the OAuth surface only.
//!
//! Values are kept in `Zeroizing` buffers: they hold codes, PKCE verifiers, client secrets and
//! refresh tokens. Names are public.

use zeroize::Zeroizing;

/// Largest form read from a client (token requests are a few hundred bytes).
pub(crate) const MAX_FORM: usize = 64 * 1024;
/// Most parameters a form may have. Token and revocation requests carry fewer than 15; the
/// cap also bounds the repeated-name check, which is quadratic (measured before the cap: a
/// 64 KiB form of 16,000 distinct names took 295 ms of one core in a release build).
pub(crate) const MAX_PARAMS: usize = 64;

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormError {
    /// RFC 6749 §3.2: "parameters MUST NOT be included more than once".
    #[error("parameter {0:?} is sent more than once")]
    Repeated(String),
    /// More than `MAX_PARAMS` parameters.
    #[error("the form has more than {MAX_PARAMS} parameters")]
    TooMany,
}

/// A parsed form, in the client's order.
pub(crate) struct Form {
    pairs: Vec<(String, Zeroizing<String>)>,
}

impl Form {
    /// Parse a form body. Repeated names are refused: the upstream might read the other copy.
    pub(crate) fn parse(body: &[u8]) -> Result<Form, FormError> {
        let mut pairs: Vec<(String, Zeroizing<String>)> = Vec::new();
        for (k, v) in form_urlencoded::parse(body) {
            if pairs.len() == MAX_PARAMS {
                return Err(FormError::TooMany);
            }
            if pairs.iter().any(|(n, _)| *n == k) {
                return Err(FormError::Repeated(crate::session_log::scrub_part_a(&k).into_owned()));
            }
            pairs.push((k.into_owned(), Zeroizing::new(v.into_owned())));
        }
        Ok(Form { pairs })
    }

    /// The pairs, in order (fuzzing compares two parses).
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Replace the value of `name` (which must be present; otherwise nothing changes).
    pub(crate) fn set(&mut self, name: &str, value: &[u8]) {
        if let Some((_, v)) = self.pairs.iter_mut().find(|(n, _)| n == name) {
            *v = Zeroizing::new(String::from_utf8_lossy(value).into_owned());
        }
    }

    /// The form as a body, in the original order.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            out.append_pair(k, v);
        }
        Zeroizing::new(out.finish().into_bytes())
    }
}

/// Whether a `Content-Type` value is a form (parameters such as `charset` allowed).
pub(crate) fn is_form(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|v| {
        let v = v.split(|&b| b == b';').next().unwrap_or_default();
        v.trim_ascii()
            .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    })
}

/// The client id of HTTP Basic client authentication (RFC 6749 §2.3.1: form-encoded, then
/// Base64). Only the id is decoded; the secret is never kept.
pub(crate) fn basic_client_id(authorization: Option<&[u8]>) -> Option<String> {
    use base64::Engine;
    let v = std::str::from_utf8(authorization?).ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?);
    let id = raw.split(|&b| b == b':').next()?;
    let id: String = form_urlencoded::parse(&[b"x=", id].concat())
        .next()
        .map(|(_, v)| v.into_owned())?;
    (!id.is_empty() && id.len() <= 256).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_replaces() {
        let mut f = Form::parse(b"grant_type=refresh_token&refresh_token=tsr_x&scope=a+b").unwrap();
        assert_eq!(f.get("scope"), Some("a b"));
        f.set("refresh_token", b"real/+=");
        assert_eq!(
            &f.encode()[..],
            b"grant_type=refresh_token&refresh_token=real%2F%2B%3D&scope=a+b"
        );
    }

    #[test]
    fn repeated_names_are_refused() {
        assert!(matches!(
            Form::parse(b"refresh_token=a&refresh_token=b"),
            Err(FormError::Repeated(n)) if n == "refresh_token"
        ));
    }

    #[test]
    fn parameter_count_is_capped() {
        let at_cap: String = (0..MAX_PARAMS).map(|i| format!("p{i}=v&")).collect();
        assert_eq!(Form::parse(at_cap.as_bytes()).map(|f| f.pairs.len()), Ok(MAX_PARAMS));
        let over = format!("{at_cap}one_more=v");
        assert_eq!(Form::parse(over.as_bytes()).err(), Some(FormError::TooMany));
    }

    #[test]
    fn content_types() {
        assert!(is_form(Some(b"application/x-www-form-urlencoded; charset=UTF-8")));
        assert!(is_form(Some(b"Application/X-WWW-Form-Urlencoded")));
        assert!(!is_form(Some(b"application/json")));
        assert!(!is_form(None));
    }

    #[test]
    fn basic_client_id_only() {
        // "my%20app:s3cret" in Base64.
        let h = b"Basic bXklMjBhcHA6czNjcmV0";
        assert_eq!(basic_client_id(Some(h)).as_deref(), Some("my app"));
        assert_eq!(basic_client_id(Some(b"Bearer abc")), None);
        assert_eq!(basic_client_id(Some(b"Basic !!!")), None);
    }
}
