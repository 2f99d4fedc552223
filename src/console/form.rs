//! `application/x-www-form-urlencoded` bodies and query strings, decoded into wiped buffers
//! (a login form carries an admin token, a rotate form a Part A or upstream token). Runs on
//! console requests only. Never panics: bad escapes decode as themselves, invalid UTF-8 is
//! replaced (`form_urlencoded`'s rules).

use zeroize::Zeroizing;

/// Decoded `name=value` pairs, in order. Values are wiped on drop.
#[derive(Default)]
pub struct Form(Vec<(String, Zeroizing<String>)>);

impl Form {
    /// Decode with `form_urlencoded`, like the OAuth forms (`oauth::form`): each decoded value
    /// moves into its wiped buffer without a copy.
    pub fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
                .collect(),
        )
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, or "" when absent.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map_or("", str::trim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        let f = Form::parse(b"a=1+2&b=%41%zz%4&c&token=tsa_%2F&a=second");
        assert_eq!(f.get("a"), Some("1 2"));
        assert_eq!(f.get("b"), Some("A%zz%4"));
        assert_eq!(f.get("c"), Some(""));
        assert_eq!(f.get("token"), Some("tsa_/"));
        assert_eq!(f.get("missing"), None);
        assert_eq!(f.text("missing"), "");
        let f = Form::parse(b"x=%ff%fe");
        assert!(f.get("x").is_some());
        let _ = Form::parse(b"%");
        let _ = Form::parse(b"&&=&%2");
    }
}
