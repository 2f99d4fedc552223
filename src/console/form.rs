//! `application/x-www-form-urlencoded` bodies and query strings, decoded into wiped buffers
//! (a login form carries an admin token, a rotate form a Part A or upstream token). Runs on
//! console requests only. Never panics: bad escapes decode as themselves, invalid UTF-8 is
//! replaced.

use zeroize::Zeroizing;

/// Decoded `name=value` pairs, in order. Values are wiped on drop.
#[derive(Default)]
pub struct Form(Vec<(String, Zeroizing<String>)>);

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode one component (`+` is a space).
fn decode(s: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len()));
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                s.get(i + 1).copied().and_then(hex_val),
                s.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    match std::str::from_utf8(&out) {
        Ok(s) => Zeroizing::new(s.to_string()),
        Err(_) => Zeroizing::new(String::from_utf8_lossy(&out).into_owned()),
    }
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            body.split(|&b| b == b'&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = match pair.iter().position(|&b| b == b'=') {
                        Some(i) => (&pair[..i], &pair[i + 1..]),
                        None => (pair, &b""[..]),
                    };
                    (decode(k).to_string(), decode(v))
                })
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
