//! XChaCha20-Poly1305 open for the request path (`reconstruct` opens two records per request).
//!
//! The construction is draft-irtf-cfrg-xchacha §2: HChaCha20 derives a subkey from the key and
//! the first 16 nonce bytes, then ChaCha20-Poly1305 (RFC 8439) runs under that subkey with the
//! nonce `0⁴ ‖ nonce[16..24]`. `chacha20poly1305::XChaCha20Poly1305` (which seals, on the
//! admin path) is the same construction, so records sealed by either open with either; the
//! unit tests check this both ways and against the draft's test vector.
//!
//! Why not `chacha20poly1305` here too: on records of a few hundred bytes its runtime-selected
//! AVX2 Poly1305 spends most of its time setting up and finishing (about 9 k instructions per
//! open under callgrind, 5.7 k of them in Poly1305); ring's assembly does the whole open in a
//! fraction of that. The tag is checked in constant time by ring.
//!
//! Wiping: the subkey is zeroized; ring's key object has no `Drop` that wipes, so it lives in
//! a `MaybeUninit` slot that is zeroized after use (never dropped: it owns no heap memory).

use std::mem::MaybeUninit;

use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, Zeroizing};

/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// Authentication failed, or the nonce or ciphertext has the wrong shape. Deliberately says
/// nothing more.
#[derive(Debug, PartialEq, Eq)]
pub struct OpenError;

/// Open `ct` (ciphertext ‖ tag) sealed under `key` with `nonce` and `aad`.
pub fn open(key: &[u8; 32], aad: &[u8], nonce: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    if nonce.len() != NONCE_LEN || ct.len() < TAG_LEN {
        return Err(OpenError);
    }
    let mut subkey = chacha20::hchacha::<U10>(key.into(), GenericArray::from_slice(&nonce[..16]));
    let mut slot = MaybeUninit::<LessSafeKey>::uninit();
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice());
    subkey.as_mut_slice().zeroize();
    // A 32-byte key is what CHACHA20_POLY1305 takes; this cannot fail.
    let cipher = slot.write(LessSafeKey::new(unbound.map_err(|_| OpenError)?));
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(&nonce[16..]);
    let mut buf = Zeroizing::new(ct.to_vec());
    let opened = cipher
        .open_in_place(Nonce::assume_unique_for_key(short), Aad::from(aad), buf.as_mut_slice())
        .map(|plain| plain.len());
    slot.zeroize();
    let len = opened.map_err(|_| OpenError)?;
    // The tag's bytes are dropped; what remains is the plaintext, wiped on drop.
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).expect("test vector is hex")
    }

    /// draft-irtf-cfrg-xchacha-03, Appendix A.3.1 (AEAD_XChaCha20_Poly1305).
    #[test]
    fn opens_the_drafts_test_vector() {
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] = unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .expect("32 bytes");
        let nonce = unhex("404142434445464748494a4b4c4d4e4f5051525354555657");
        let ct = unhex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
             21f9664c97637da9768812f615c68b13b52e
             c0875924c1c7987947deafd8780acf49",
        );
        let plain = open(&key, &aad, &nonce, &ct).expect("the draft's vector opens");
        assert_eq!(plain.as_slice(), plaintext.as_slice());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(open(&key, &aad, &nonce, &bad), Err(OpenError));
    }

    /// What `chacha20poly1305` seals, this opens (and only that): every length from empty to
    /// several blocks, with tampering of each part refused.
    #[test]
    fn agrees_with_chacha20poly1305_and_refuses_tampering() {
        let key = [7u8; 32];
        let nonce = [9u8; NONCE_LEN];
        let aad = b"tessera/v1/frag\0acme";
        let cipher = XChaCha20Poly1305::new((&key).into());
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 200, 511, 1000] {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let ct = cipher
                .encrypt(XNonce::from_slice(&nonce), Payload { msg: &msg, aad })
                .expect("seal");
            assert_eq!(open(&key, aad, &nonce, &ct).expect("opens").as_slice(), msg.as_slice());
            // And the other way: what RustCrypto opens is what we open.
            let back = cipher
                .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad })
                .expect("RustCrypto opens its own");
            assert_eq!(back, msg);
            let mut wrong_key = key;
            wrong_key[31] ^= 0x80;
            assert_eq!(open(&wrong_key, aad, &nonce, &ct), Err(OpenError));
            let mut wrong_nonce = nonce;
            wrong_nonce[0] ^= 1; // the HChaCha20 half
            assert_eq!(open(&key, aad, &wrong_nonce, &ct), Err(OpenError));
            let mut wrong_nonce = nonce;
            wrong_nonce[23] ^= 1; // the ChaCha20 half
            assert_eq!(open(&key, aad, &wrong_nonce, &ct), Err(OpenError));
            assert_eq!(open(&key, b"tessera/v1/frag\0acmf", &nonce, &ct), Err(OpenError));
            let mut flipped = ct.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert_eq!(open(&key, aad, &nonce, &flipped), Err(OpenError));
            if len > 0 {
                let mut flipped = ct.clone();
                flipped[len / 2] ^= 0x10;
                assert_eq!(open(&key, aad, &nonce, &flipped), Err(OpenError));
            }
        }
    }

    #[test]
    fn refuses_malformed_input_without_panicking() {
        let key = [1u8; 32];
        assert_eq!(open(&key, b"", &[0u8; 23], &[0u8; 32]), Err(OpenError));
        assert_eq!(open(&key, b"", &[0u8; 25], &[0u8; 32]), Err(OpenError));
        assert_eq!(open(&key, b"", &[0u8; NONCE_LEN], &[0u8; TAG_LEN - 1]), Err(OpenError));
        assert_eq!(open(&key, b"", &[0u8; NONCE_LEN], &[]), Err(OpenError));
        assert_eq!(open(&key, b"", &[0u8; NONCE_LEN], &[0u8; TAG_LEN]), Err(OpenError));
    }
}
