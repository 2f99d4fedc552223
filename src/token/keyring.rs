//! Key-encryption keys (KEKs) that seal Part B records at rest.
//!
//! A keyring is a text file (or environment variable) with one key per line:
//! `<kid> <64 hex chars>`. The **first** key is active: new and re-sealed records use it.
//! Every key in the ring can open records, so a rotation is: add a new first line everywhere,
//! run `tessera keys rotate`, then retire the old line. Blank lines and `#` comments are ignored.
//! Loaded at start-up and re-read by the reloader when the file changes; never on the request path.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

/// Why a keyring could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read.
    #[error("cannot read keyring file {path}: {source}; create one with `tessera keys generate --out {path}`")]
    Read { path: String, source: std::io::Error },
    /// The environment variable named in `keys.env` is not set.
    #[error("environment variable {0} (keys.env) is not set; export it with the keyring contents")]
    EnvMissing(String),
    /// A line is not `<kid> <64 hex chars>`.
    #[error("keyring line {line}: {reason}; expected `<kid> <64 hex characters>`")]
    BadLine { line: usize, reason: &'static str },
    /// The same kid appears twice.
    #[error("keyring line {line}: kid {kid:?} appears twice; kids must be unique")]
    DuplicateKid { line: usize, kid: String },
    /// No key at all.
    #[error("keyring is empty; add a key with `tessera keys generate`")]
    Empty,
}

/// One key-encryption key.
pub struct Kek {
    pub kid: String,
    pub key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("kid", &self.kid)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// An ordered set of KEKs; the first is active.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Kek>,
}

impl Keyring {
    /// Parse the text form; see the module docs.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<Kek> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let mut parts = line.split_whitespace();
            let (Some(kid), Some(hexkey), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(KeyringError::BadLine {
                    line: n,
                    reason: "wrong number of fields",
                });
            };
            if kid.len() > 64 || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(KeyringError::BadLine {
                    line: n,
                    reason: "kid must be 1-64 characters of [A-Za-z0-9_-]",
                });
            }
            let mut key = Zeroizing::new([0u8; 32]);
            if hex::decode_to_slice(hexkey, key.as_mut()).is_err() {
                return Err(KeyringError::BadLine {
                    line: n,
                    reason: "key is not 64 hex characters",
                });
            }
            if keys.iter().any(|k| k.kid == kid) {
                return Err(KeyringError::DuplicateKid {
                    line: n,
                    kid: kid.to_string(),
                });
            }
            keys.push(Kek {
                kid: kid.to_string(),
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// Read a keyring file.
    pub fn load_file(path: &Path) -> Result<Self, KeyringError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| KeyringError::Read {
            path: path.display().to_string(),
            source,
        })?);
        Self::parse(&text)
    }

    /// Read a keyring from an environment variable.
    pub fn load_env(var: &str) -> Result<Self, KeyringError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|_| KeyringError::EnvMissing(var.to_string()))?);
        Self::parse(&text)
    }

    /// The key new records are sealed with.
    pub fn active(&self) -> &Kek {
        // Invariant: `parse` refuses an empty ring.
        &self.keys[0]
    }

    /// The key with this kid, if the ring has it.
    pub fn get(&self, kid: &[u8]) -> Option<&Kek> {
        self.keys.iter().find(|k| k.kid.as_bytes() == kid)
    }

    /// All kids, active first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// A new random key line `<kid> <hex>`, kid derived from the current time.
    pub fn generate_line() -> Zeroizing<String> {
        let mut key = Zeroizing::new([0u8; 32]);
        super::fill_random(key.as_mut());
        let mut tag = [0u8; 3];
        super::fill_random(&mut tag);
        let now = time::OffsetDateTime::now_utc();
        let kid = format!(
            "k{:04}{:02}{:02}-{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            hex::encode(tag)
        );
        Zeroizing::new(format!("{kid} {}", hex::encode(key.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        let ring = Keyring::parse(&format!("# comment\nnew {a}\n\nold {b}\n")).unwrap();
        assert_eq!(ring.active().kid, "new");
        assert_eq!(ring.get(b"old").unwrap().key[0], 0xbb);
        assert!(ring.get(b"zzz").is_none());
        assert!(!format!("{ring:?}").contains(&a));
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(matches!(Keyring::parse(""), Err(KeyringError::Empty)));
        assert!(matches!(
            Keyring::parse("k1 abcd"),
            Err(KeyringError::BadLine { line: 1, .. })
        ));
        let a = "aa".repeat(32);
        assert!(matches!(
            Keyring::parse(&format!("k1 {a}\nk1 {a}")),
            Err(KeyringError::DuplicateKid { line: 2, .. })
        ));
        assert!(Keyring::parse(&format!("bad/kid {a}")).is_err());
    }

    #[test]
    fn generated_line_parses() {
        let line = Keyring::generate_line();
        Keyring::parse(&line).unwrap();
    }
}
