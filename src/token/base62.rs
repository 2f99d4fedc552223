//! Fixed-width base62 for Part A bodies and checksums.
//!
//! The body is a 53-byte big-endian integer held in seven 64-bit limbs, so encoding and
//! decoding cost ~500 word operations instead of the byte-at-a-time long division a naive
//! bignum would do (this runs on every request, see `benches/crypto.rs`).

use zeroize::Zeroize;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const LIMBS: usize = 7;

/// Value of one base62 digit, or `None` for a byte outside the alphabet.
fn digit(c: u8) -> Option<u64> {
    match c {
        b'0'..=b'9' => Some(u64::from(c - b'0')),
        b'A'..=b'Z' => Some(u64::from(c - b'A') + 10),
        b'a'..=b'z' => Some(u64::from(c - b'a') + 36),
        _ => None,
    }
}

/// Number of base62 digits needed for `n` bytes (ceil(8n / log2 62)).
pub const fn encoded_len(n: usize) -> usize {
    // log2(62) = 5.954196...; multiply by 1e6 to stay in integers.
    (n * 8 * 1_000_000).div_ceil(5_954_196)
}

/// Encode `bytes` (at most 56) as exactly `encoded_len(bytes.len())` digits into `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    debug_assert!(bytes.len() <= LIMBS * 8);
    let mut limbs = to_limbs(bytes);
    let n = encoded_len(bytes.len());
    let mut digits = [0u8; 80];
    for d in digits[..n].iter_mut().rev() {
        let mut rem: u128 = 0;
        for limb in limbs.iter_mut().rev() {
            let cur = (rem << 64) | u128::from(*limb);
            *limb = (cur / 62) as u64;
            rem = cur % 62;
        }
        *d = ALPHABET[rem as usize];
    }
    limbs.zeroize();
    // digits are ASCII from ALPHABET, so this push is byte-for-byte.
    out.extend(digits[..n].iter().map(|&b| b as char));
    digits.zeroize();
}

/// Decode exactly `out.len()` bytes from `s`; fails on a foreign character or overflow.
pub fn decode_into(s: &[u8], out: &mut [u8]) -> Result<(), ()> {
    debug_assert!(out.len() <= LIMBS * 8);
    if s.len() != encoded_len(out.len()) {
        return Err(());
    }
    let mut limbs = [0u64; LIMBS];
    let mut result = Ok(());
    // Up to CHUNK digits at a time (62^10 < 2^60): the limbs are multiplied once per chunk,
    // not once per digit. Prefix values only grow, so checking for overflow at the end of each
    // chunk finds exactly what a per-digit check would.
    const CHUNK: usize = 10;
    'chunks: for chunk in s.chunks(CHUNK) {
        let (mut value, mut scale) = (0u64, 1u64);
        for &c in chunk {
            let Some(d) = digit(c) else {
                result = Err(());
                break 'chunks;
            };
            value = value * 62 + d;
            scale *= 62;
        }
        let mut carry: u128 = u128::from(value);
        for limb in limbs.iter_mut() {
            let cur = u128::from(*limb) * u128::from(scale) + carry;
            *limb = cur as u64;
            carry = cur >> 64;
        }
        if carry != 0 {
            result = Err(());
            break;
        }
    }
    if result.is_ok() {
        result = from_limbs(&limbs, out);
    }
    limbs.zeroize();
    result
}

fn to_limbs(bytes: &[u8]) -> [u64; LIMBS] {
    let mut padded = [0u8; LIMBS * 8];
    padded[LIMBS * 8 - bytes.len()..].copy_from_slice(bytes);
    let mut limbs = [0u64; LIMBS];
    for (i, chunk) in padded.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        limbs[LIMBS - 1 - i] = u64::from_be_bytes(b);
    }
    padded.zeroize();
    limbs
}

fn from_limbs(limbs: &[u64; LIMBS], out: &mut [u8]) -> Result<(), ()> {
    let mut padded = [0u8; LIMBS * 8];
    for (i, chunk) in padded.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&limbs[LIMBS - 1 - i].to_be_bytes());
    }
    let skip = LIMBS * 8 - out.len();
    let overflow = padded[..skip].iter().any(|&b| b != 0);
    out.copy_from_slice(&padded[skip..]);
    padded.zeroize();
    if overflow {
        Err(())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(53), 72);
        assert_eq!(encoded_len(4), 6);
    }

    #[test]
    fn round_trip_edges() {
        for bytes in [[0u8; 53], [0xff; 53], {
            let mut b = [0u8; 53];
            b[0] = 1;
            b[52] = 7;
            b
        }] {
            let mut s = String::new();
            encode_into(&bytes, &mut s);
            assert_eq!(s.len(), 72);
            let mut back = [0u8; 53];
            decode_into(s.as_bytes(), &mut back).unwrap();
            assert_eq!(back, bytes);
        }
    }

    /// Digit-at-a-time reference: big-endian bytes of the value, or `None` if it does not fit.
    fn naive(s: &[u8], n: usize) -> Option<Vec<u8>> {
        let mut v = vec![0u32; n];
        for &c in s {
            let mut carry = u32::try_from(digit(c)?).ok()?;
            for b in v.iter_mut().rev() {
                let cur = *b * 62 + carry;
                *b = cur & 0xff;
                carry = cur >> 8;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(v.into_iter().map(|b| b as u8).collect())
    }

    #[test]
    fn chunked_decode_matches_digit_at_a_time() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [1usize, 4, 7, 8, 16, 32, 53] {
            for _ in 0..200 {
                // Random digit strings of the right length: many overflow near the top.
                let s: Vec<u8> = (0..encoded_len(n)).map(|_| ALPHABET[(next() % 62) as usize]).collect();
                let mut out = vec![0u8; n];
                let got = decode_into(&s, &mut out).ok().map(|()| out);
                assert_eq!(got, naive(&s, n), "n={n} s={}", String::from_utf8_lossy(&s));
            }
        }
    }

    #[test]
    fn rejects_overflow_and_bad_chars() {
        let max = "z".repeat(72);
        let mut out = [0u8; 53];
        assert!(decode_into(max.as_bytes(), &mut out).is_err());
        let bad = "-".repeat(72);
        assert!(decode_into(bad.as_bytes(), &mut out).is_err());
        assert!(decode_into(b"abc", &mut out).is_err());
    }
}
