//! Identities: an ed25519 key per account, shown as `did:key:z6Mk…`, and
//! signatures over canonical encodings with a domain tag per object type.
//!
//! Every validator must accept exactly the same signatures, checked one by
//! one or in batches, or they disagree on which transactions are valid.
//! Ed25519 as RFC 8032 leaves it does not fix that (implementations differ
//! on non-canonical encodings, small-order points and the cofactor, and
//! ed25519-dalek's batch check accepts signatures its strict single check
//! refuses), so verification follows ZIP-215 through `ed25519-zebra`,
//! whose single and batch checks agree on every input, and additionally
//! refuses non-canonical encodings of the key A and of the signature's R,
//! and keys of small order (see [`verify_raw`]). Signing stays on ed25519-dalek: the signatures are
//! the same bytes either way.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::Signer;

use crate::codec;

/// Multicodec prefix of an ed25519 public key (varint of 0xed).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];
const DID_KEY_PREFIX: &str = "did:key:z";

/// An account on the ledger and a peer on the overlay: an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct AccountId([u8; 32]);

impl AccountId {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first characters of the `did:key`, for humans.
    pub fn short(&self) -> String {
        let full = self.to_string();
        format!("{}…", &full[..full.len().min(20)])
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_MULTICODEC);
        bytes.extend_from_slice(&self.0);
        write!(f, "{DID_KEY_PREFIX}{}", bs58::encode(bytes).into_string())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

/// Why a string is not an account id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAccountIdError {
    #[error("an account id starts with `{DID_KEY_PREFIX}` (a did:key in base58btc)")]
    MissingPrefix,
    #[error("the did:key is not valid base58")]
    NotBase58,
    #[error("the did:key is not an ed25519 public key")]
    NotEd25519,
}

impl FromStr for AccountId {
    type Err = ParseAccountIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text
            .strip_prefix(DID_KEY_PREFIX)
            .ok_or(ParseAccountIdError::MissingPrefix)?;
        if encoded.len() > 64 {
            return Err(ParseAccountIdError::NotEd25519);
        }
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| ParseAccountIdError::NotBase58)?;
        match bytes.split_at_checked(2) {
            Some((prefix, key)) if prefix == ED25519_MULTICODEC && key.len() == 32 => {
                let mut id = [0u8; 32];
                id.copy_from_slice(key);
                Ok(Self(id))
            }
            _ => Err(ParseAccountIdError::NotEd25519),
        }
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signature([u8; 64]);

impl Signature {
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

/// A signing key. The account id is its public half. Cloning copies the
/// secret (each role of a node signs on its own thread).
#[derive(Clone)]
pub struct Keypair(ed25519_dalek::SigningKey);

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.account_id())
    }
}

impl Keypair {
    /// The key for a 32-byte secret seed (from the OS random source, or a
    /// test's fixed bytes).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The secret seed, to store in a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn account_id(&self) -> AccountId {
        AccountId(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` under `domain`.
    pub fn sign_raw(&self, domain: &str, message: &[u8]) -> Signature {
        Signature(self.0.sign(&tagged(domain, message)).to_bytes())
    }

    /// Signs the canonical encoding of `body`.
    pub fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        let encoded = codec::encode(&body).expect("signable bodies encode");
        let signature = self.sign_raw(T::DOMAIN, &encoded);
        Signed {
            body,
            signer: self.account_id(),
            signature,
        }
    }
}

fn tagged(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(domain.len() + 1 + message.len());
    bytes.extend_from_slice(domain.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(message);
    bytes
}

/// A signature that does not verify, or a key that is not a valid point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signature by {signer} does not verify")]
pub struct BadSignature {
    pub signer: AccountId,
}

/// Checks a signature made with [`Keypair::sign_raw`].
///
/// The rules are ZIP-215's (<https://zips.z.cash/zip-0215>): A and R are
/// any points on the curve, S is below the group order ℓ, and the equation
/// is the cofactored `[8][S]B = [8]R + [8][k]A`, the one a batch check
/// decides too, so [`verify_batch`] accepts exactly what this accepts. On
/// top of ZIP-215, A (the signer's account id) and R (the signature's
/// first 32 bytes) must be the canonical encodings of their points: y
/// below p = 2^255 − 19, and no sign bit where x = 0. ZIP-215 accepts the
/// other encodings, so without this rule one key would answer to several
/// account ids, and a signature could be re-encoded into other bytes (so
/// another transaction hash) that still verify. (S ≥ ℓ, the other
/// re-encoding, ZIP-215 itself refuses.)
///
/// ZIP-215 accepts keys of small order, for which anyone can sign anything
/// (`[8][k]A` vanishes whatever the message); this refuses them, as
/// ed25519-dalek's `verify_strict` did, so no account id is spendable by
/// everyone. Being canonical, such a key has one of eight encodings, which
/// are compared as bytes.
pub fn verify_raw(
    signer: &AccountId,
    domain: &str,
    message: &[u8],
    signature: &Signature,
) -> Result<(), BadSignature> {
    SignedMessage {
        signer,
        domain,
        message,
        signature,
    }
    .verify()
}

/// Checks many signatures at once, faster than one by one (see
/// `idlegrid-bench ledger`): true exactly when every one passes
/// [`verify_raw`]. On failure it does not say
/// which one is bad; check them singly to find out.
pub fn verify_batch(items: &[(AccountId, &'static str, Vec<u8>, Signature)]) -> bool {
    batch_verifies(
        items
            .iter()
            .map(|(signer, domain, message, signature)| SignedMessage {
                signer,
                domain,
                message,
                signature,
            }),
    )
}

/// The canonical encodings of the eight points of small order.
static SMALL_ORDER_POINTS: std::sync::LazyLock<[[u8; 32]; 8]> = std::sync::LazyLock::new(|| {
    curve25519_dalek::constants::EIGHT_TORSION.map(|point| point.compress().to_bytes())
});

/// Whether `encoding` is the one canonical encoding of an Edwards point, from
/// the bytes alone (no decompression, so it says nothing about whether the
/// point is on the curve). An encoding is y (the low 255 bits, little-endian)
/// and the sign of x (the top bit). It is non-canonical when y ≥ p = 2^255 − 19
/// (the same point as y − p), or when the sign bit is set where x = 0, which
/// is at y = 1 and y = p − 1 (−0 = 0).
fn is_canonical_point_encoding(encoding: &[u8; 32]) -> bool {
    /// p − 1 = 2^255 − 20, little-endian.
    const FIELD_MODULUS_MINUS_ONE: [u8; 32] = {
        let mut bytes = [0xff; 32];
        bytes[0] = 0xec;
        bytes[31] = 0x7f;
        bytes
    };
    const ONE: [u8; 32] = {
        let mut bytes = [0; 32];
        bytes[0] = 1;
        bytes
    };
    let mut y = *encoding;
    y[31] &= 0x7f;
    let sign_bit_set = encoding[31] & 0x80 != 0;
    // Most significant byte first: lexicographic order is numeric order.
    let y_at_least_modulus = y.iter().rev().gt(FIELD_MODULUS_MINUS_ONE.iter().rev());
    let x_is_zero = y == ONE || y == FIELD_MODULUS_MINUS_ONE;
    let non_canonical = y_at_least_modulus || (sign_bit_set && x_is_zero);
    !non_canonical
}

/// [`verify_raw`]'s arguments, for checking and remembering several at once.
#[derive(Debug, Clone, Copy)]
struct SignedMessage<'a> {
    signer: &'a AccountId,
    domain: &'a str,
    message: &'a [u8],
    signature: &'a Signature,
}

impl SignedMessage<'_> {
    fn r_encoding(&self) -> [u8; 32] {
        let mut r = [0; 32];
        r.copy_from_slice(&self.signature.0[..32]);
        r
    }

    /// Whether A and R are canonical and A is not of small order, the rules
    /// [`verify_raw`] adds to ZIP-215.
    fn has_canonical_points(&self) -> bool {
        is_canonical_point_encoding(&self.signer.0)
            && !SMALL_ORDER_POINTS.contains(&self.signer.0)
            && is_canonical_point_encoding(&self.r_encoding())
    }

    fn verify(&self) -> Result<(), BadSignature> {
        let bad = || BadSignature {
            signer: *self.signer,
        };
        if !self.has_canonical_points() {
            return Err(bad());
        }
        let key = ed25519_zebra::VerificationKey::try_from(self.signer.0).map_err(|_| bad())?;
        let signature = ed25519_zebra::Signature::from(self.signature.0);
        key.verify(&signature, &tagged(self.domain, self.message))
            .map_err(|_| bad())
    }

    /// What a [`SignatureCache`] remembers a success by: a hash of
    /// everything the answer depends on.
    fn cache_key(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.signer.0);
        hasher.update(&self.signature.0);
        hasher.update(self.domain.as_bytes());
        hasher.update(&[0]);
        hasher.update(self.message);
        *hasher.finalize().as_bytes()
    }
}

/// Whether every one of `items` passes [`verify_raw`], checked as one batch
/// (true for none).
fn batch_verifies<'a>(items: impl IntoIterator<Item = SignedMessage<'a>>) -> bool {
    let mut verifier = ed25519_zebra::batch::Verifier::new();
    for item in items {
        if !item.has_canonical_points() {
            return false;
        }
        let key = ed25519_zebra::VerificationKeyBytes::from(item.signer.0);
        let signature = ed25519_zebra::Signature::from(item.signature.0);
        verifier.queue((key, signature, &tagged(item.domain, item.message)));
    }
    // The batch equation weighs each signature by a random coefficient the
    // signers cannot predict; the answer does not depend on which.
    verifier
        .verify(getrandom_04::rand_core::UnwrapErr(getrandom_04::SysRng))
        .is_ok()
}

/// An object that can be signed: its domain tag keeps a signature over one
/// kind of object from being valid for another.
pub trait Signable: BorshSerialize {
    const DOMAIN: &'static str;
}

/// A body, who signed it, and the signature over its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signed<T> {
    pub body: T,
    pub signer: AccountId,
    pub signature: Signature,
}

impl<T: Signable> Signed<T> {
    /// The bytes the signature covers (without the domain tag).
    pub fn signed_bytes(&self) -> Vec<u8> {
        codec::encode(&self.body).expect("signable bodies encode")
    }

    pub fn verify(&self) -> Result<&T, BadSignature> {
        verify_raw(
            &self.signer,
            T::DOMAIN,
            &self.signed_bytes(),
            &self.signature,
        )?;
        Ok(&self.body)
    }
}

/// Signatures already checked, so a transaction verified when it entered
/// a node's pool is not verified again when its block is built, checked
/// and applied. A hit needs the same signer, domain, signed bytes and
/// signature, so it gives the answer verifying would. Bounded: two
/// generations of at most [`SIGNATURE_CACHE_GENERATION`] entries (or the
/// size given to [`SignatureCache::with_generation`]); when the current one
/// fills it becomes the previous one, and the previous one is forgotten.
#[derive(Debug)]
pub struct SignatureCache {
    generations: std::sync::Mutex<[std::collections::HashSet<[u8; 32]>; 2]>,
    generation: usize,
}

impl Default for SignatureCache {
    fn default() -> Self {
        Self::with_generation(SIGNATURE_CACHE_GENERATION)
    }
}

/// Entries of one generation of a [`SignatureCache`].
pub const SIGNATURE_CACHE_GENERATION: usize = 1 << 18;

impl SignatureCache {
    /// A cache whose generations hold `generation` entries each (at least
    /// one): a node that checks few signatures at a time (a requestor, one
    /// results batch) needs far fewer than a validator's block.
    pub fn with_generation(generation: usize) -> Self {
        Self {
            generations: std::sync::Mutex::default(),
            generation: generation.max(1),
        }
    }

    /// [`Signed::verify`], remembering successes.
    pub fn verify<'a, T: Signable>(&self, signed: &'a Signed<T>) -> Result<&'a T, BadSignature> {
        self.verify_raw(
            &signed.signer,
            T::DOMAIN,
            &signed.signed_bytes(),
            &signed.signature,
        )?;
        Ok(&signed.body)
    }

    /// [`verify_raw`], remembering successes.
    pub fn verify_raw(
        &self,
        signer: &AccountId,
        domain: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), BadSignature> {
        let item = SignedMessage {
            signer,
            domain,
            message,
            signature,
        };
        let key = item.cache_key();
        if self.remembers(&key) {
            return Ok(());
        }
        item.verify()?;
        self.remember([key]);
        Ok(())
    }

    /// [`Self::verify`] for each of `signed`, one answer per item in order:
    /// what is not remembered is checked as one batch, and only if the batch
    /// fails one by one, to tell the bad ones from the good.
    pub fn verify_many<T: Signable>(&self, signed: &[Signed<T>]) -> Vec<Result<(), BadSignature>> {
        let messages: Vec<Vec<u8>> = signed.iter().map(Signed::signed_bytes).collect();
        let items: Vec<SignedMessage<'_>> = signed
            .iter()
            .zip(&messages)
            .map(|(one, message)| SignedMessage {
                signer: &one.signer,
                domain: T::DOMAIN,
                message,
                signature: &one.signature,
            })
            .collect();
        let keys: Vec<[u8; 32]> = items.iter().map(SignedMessage::cache_key).collect();
        let unknown: Vec<usize> = (0..items.len())
            .filter(|&index| !self.remembers(&keys[index]))
            .collect();
        let mut answers = vec![Ok(()); items.len()];
        // A batch of one is no faster than checking it alone.
        let all_good =
            unknown.len() > 1 && batch_verifies(unknown.iter().map(|&index| items[index]));
        if !all_good {
            for &index in &unknown {
                answers[index] = items[index].verify();
            }
        }
        self.remember(
            unknown
                .iter()
                .filter(|&&index| answers[index].is_ok())
                .map(|&index| keys[index]),
        );
        answers
    }

    fn remembers(&self, key: &[u8; 32]) -> bool {
        self.generations
            .lock()
            .is_ok_and(|generations| generations.iter().any(|set| set.contains(key)))
    }

    fn remember(&self, keys: impl IntoIterator<Item = [u8; 32]>) {
        let Ok(mut generations) = self.generations.lock() else {
            return;
        };
        for key in keys {
            if generations[0].len() >= self.generation {
                let current = std::mem::take(&mut generations[0]);
                generations[1] = current;
            }
            generations[0].insert(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
    struct Note(u64);

    impl Signable for Note {
        const DOMAIN: &'static str = "idlegrid test note";
    }

    #[test]
    fn did_key_round_trips_and_has_the_ed25519_prefix() {
        let id = Keypair::from_seed([7; 32]).account_id();
        let text = id.to_string();
        assert!(text.starts_with("did:key:z6Mk"), "{text}");
        assert_eq!(text.parse::<AccountId>(), Ok(id));
    }

    #[test]
    fn rejects_malformed_did_keys() {
        assert_eq!(
            "z6Mkabc".parse::<AccountId>(),
            Err(ParseAccountIdError::MissingPrefix)
        );
        assert_eq!(
            "did:key:z0OIl".parse::<AccountId>(),
            Err(ParseAccountIdError::NotBase58)
        );
        assert_eq!(
            "did:key:z6Mk".parse::<AccountId>(),
            Err(ParseAccountIdError::NotEd25519)
        );
    }

    #[test]
    fn signatures_verify_and_bind_body_signer_and_domain() {
        let key = Keypair::from_seed([1; 32]);
        let signed = key.sign(Note(5));
        assert_eq!(signed.verify(), Ok(&Note(5)));

        let mut tampered = signed.clone();
        tampered.body = Note(6);
        assert!(tampered.verify().is_err());

        let mut other_signer = signed.clone();
        other_signer.signer = Keypair::from_seed([2; 32]).account_id();
        assert!(other_signer.verify().is_err());

        let raw = key.sign_raw("another domain", &signed.signed_bytes());
        assert!(verify_raw(&signed.signer, Note::DOMAIN, &signed.signed_bytes(), &raw).is_err());
    }

    #[test]
    fn the_signature_cache_answers_as_verifying_does() {
        let cache = SignatureCache::default();
        let key = Keypair::from_seed([3; 32]);
        let signed = key.sign(Note(7));
        assert!(cache.verify(&signed).is_ok());
        // A hit needs the very same bytes: another body, signer or
        // signature with the cached one still fails.
        let mut other_body = signed.clone();
        other_body.body = Note(8);
        assert!(cache.verify(&other_body).is_err());
        let mut other_signer = signed.clone();
        other_signer.signer = Keypair::from_seed([4; 32]).account_id();
        assert!(cache.verify(&other_signer).is_err());
        let mut forged = signed.clone();
        forged.signature.0[0] ^= 1;
        assert!(cache.verify(&forged).is_err());
        assert!(cache.verify(&signed).is_ok());
    }

    /// p = 2^255 − 19, little-endian.
    const FIELD_MODULUS: [u8; 32] = {
        let mut bytes = [0xff; 32];
        bytes[0] = 0xed;
        bytes[31] = 0x7f;
        bytes
    };

    /// ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
    const GROUP_ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// The encoding of the identity point: y = 1, x = 0.
    const IDENTITY: [u8; 32] = {
        let mut bytes = [0; 32];
        bytes[0] = 1;
        bytes
    };

    fn with_sign_bit(mut encoding: [u8; 32]) -> [u8; 32] {
        encoding[31] |= 0x80;
        encoding
    }

    fn signature_of(r: [u8; 32], s: [u8; 32]) -> Signature {
        let mut bytes = [0; 64];
        bytes[..32].copy_from_slice(&r);
        bytes[32..].copy_from_slice(&s);
        Signature(bytes)
    }

    /// S + ℓ: the same signature to the group, but S out of range.
    fn with_s_plus_group_order(signature: Signature) -> Signature {
        let mut bytes = signature.0;
        let mut carry = 0u16;
        for (byte, order) in bytes[32..].iter_mut().zip(GROUP_ORDER) {
            let sum = u16::from(*byte) + u16::from(order) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        Signature(bytes)
    }

    /// Whether curve25519-dalek decodes `encoding` to a point that encodes
    /// back to the same bytes; `None` when it is not a point at all.
    fn round_trips(encoding: [u8; 32]) -> Option<bool> {
        curve25519_dalek::edwards::CompressedEdwardsY(encoding)
            .decompress()
            .map(|point| point.compress().to_bytes() == encoding)
    }

    /// Whether ZIP-215 alone (ed25519-zebra, without the canonical
    /// encoding rule) accepts a signature.
    fn zip215_accepts(signer: [u8; 32], message: &[u8], signature: &Signature) -> bool {
        ed25519_zebra::VerificationKey::try_from(signer).is_ok_and(|key| {
            key.verify(&ed25519_zebra::Signature::from(signature.0), message)
                .is_ok()
        })
    }

    type RawItem = (AccountId, &'static str, Vec<u8>, Signature);

    /// Signed with a small-order key (the identity, A = [1, 0, …]): `[8][k]A`
    /// vanishes whatever the message, so ZIP-215's equation holds when
    /// `[8]R = [8][S]B`, with no secret needed.
    fn by_small_order_key(signer: [u8; 32], r: [u8; 32], s: [u8; 32]) -> RawItem {
        let signature = signature_of(r, s);
        (
            AccountId::from_bytes(signer),
            Note::DOMAIN,
            b"any".to_vec(),
            signature,
        )
    }

    /// Signatures ZIP-215 accepts whose A or R is not the canonical encoding
    /// of its point: the identity with the sign bit set, or as y = p + 1.
    fn re_encoded_point_cases() -> Vec<(&'static str, RawItem)> {
        let mut p_plus_one = FIELD_MODULUS;
        p_plus_one[0] += 1;
        let zero = [0; 32];
        vec![
            (
                "R with the sign bit at x = 0",
                by_small_order_key(IDENTITY, with_sign_bit(IDENTITY), zero),
            ),
            (
                "R as y = p + 1",
                by_small_order_key(IDENTITY, p_plus_one, zero),
            ),
            (
                "A with the sign bit at x = 0",
                by_small_order_key(with_sign_bit(IDENTITY), IDENTITY, zero),
            ),
            (
                "A as y = p + 1",
                by_small_order_key(p_plus_one, IDENTITY, zero),
            ),
        ]
    }

    /// Signatures, each named and with whether it should verify: honest
    /// ones, ones ZIP-215 accepts that a cofactorless check would not, and
    /// each way a signature can be bad.
    fn signature_cases() -> Vec<(&'static str, bool, RawItem)> {
        let honest = |seed: u8, message: &[u8]| -> RawItem {
            let key = Keypair::from_seed([seed; 32]);
            let signature = key.sign_raw(Note::DOMAIN, message);
            (key.account_id(), Note::DOMAIN, message.to_vec(), signature)
        };
        let (signer, domain, message, signature) = honest(1, b"pay 5");
        let with_signature = |signature: Signature| (signer, domain, message.clone(), signature);
        let mut flipped_r = signature;
        flipped_r.0[3] ^= 0x10;
        let mut flipped_s = signature;
        flipped_s.0[40] ^= 0x01;
        let mut s_all_ones = signature;
        s_all_ones.0[32..].fill(0xff);
        let mut not_a_point = [0; 32];
        not_a_point[0] = 2; // x² = 3 / (4d + 1) has no root.
        // R = [r]B + T with T of order 4 (y = 0), and S = r: only the
        // cofactor takes T out.
        let order_four = curve25519_dalek::edwards::CompressedEdwardsY([0; 32])
            .decompress()
            .expect("y = 0 is a point of order 4");
        let nonce = curve25519_dalek::Scalar::from(12_345u64);
        let mixed_order_r = (curve25519_dalek::EdwardsPoint::mul_base(&nonce) + order_four)
            .compress()
            .to_bytes();
        let mut cases = vec![
            ("honest", true, honest(1, b"pay 5")),
            ("honest, another signer", true, honest(2, b"pay 6")),
            ("honest, empty message", true, honest(3, b"")),
            (
                "small-order A, identity R, S = 0",
                false,
                by_small_order_key(IDENTITY, IDENTITY, [0; 32]),
            ),
            (
                "small-order A, mixed-order R",
                false,
                by_small_order_key(IDENTITY, mixed_order_r, nonce.to_bytes()),
            ),
            (
                "wrong message",
                false,
                (signer, domain, b"pay 6".to_vec(), signature),
            ),
            (
                "wrong signer",
                false,
                (honest(2, b"").0, domain, message.clone(), signature),
            ),
            ("flipped bit in R", false, with_signature(flipped_r)),
            ("flipped bit in S", false, with_signature(flipped_s)),
            (
                "S + ℓ",
                false,
                with_signature(with_s_plus_group_order(signature)),
            ),
            ("S all ones", false, with_signature(s_all_ones)),
            (
                "A not a point",
                false,
                (
                    AccountId::from_bytes(not_a_point),
                    domain,
                    message.clone(),
                    signature,
                ),
            ),
        ];
        cases.extend(
            re_encoded_point_cases()
                .into_iter()
                .map(|(name, item)| (name, false, item)),
        );
        cases
    }

    #[test]
    fn each_signature_case_verifies_or_not_as_named() {
        for (name, good, (signer, domain, message, signature)) in signature_cases() {
            assert_eq!(
                verify_raw(&signer, domain, &message, &signature).is_ok(),
                good,
                "{name}"
            );
            assert_eq!(
                verify_batch(&[(signer, domain, message, signature)]),
                good,
                "{name}"
            );
        }
    }

    #[test]
    fn s_at_or_above_the_group_order_is_refused_by_zip215_itself() {
        let key = Keypair::from_seed([5; 32]);
        let signature = key.sign_raw(Note::DOMAIN, b"pay 5");
        let message = tagged(Note::DOMAIN, b"pay 5");
        let signer = *key.account_id().as_bytes();
        assert!(zip215_accepts(signer, &message, &signature));
        let reduced_away = with_s_plus_group_order(signature);
        assert!(!zip215_accepts(signer, &message, &reduced_away));
    }

    #[test]
    fn only_the_canonical_encoding_rule_refuses_re_encoded_points() {
        for (name, (signer, domain, message, signature)) in re_encoded_point_cases() {
            assert!(
                zip215_accepts(*signer.as_bytes(), &tagged(domain, &message), &signature),
                "ZIP-215 alone accepts {name}"
            );
            assert!(
                verify_raw(&signer, domain, &message, &signature).is_err(),
                "{name}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn batch_and_single_verification_agree(
            picks in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..12),
        ) {
            let cases = signature_cases();
            let items: Vec<RawItem> = picks
                .iter()
                .map(|pick| cases[pick.index(cases.len())].2.clone())
                .collect();
            let all_good = items.iter().all(|(signer, domain, message, signature)| {
                verify_raw(signer, domain, message, signature).is_ok()
            });
            proptest::prop_assert_eq!(verify_batch(&items), all_good);
        }
    }

    fn signed_notes(bad: &[usize]) -> Vec<Signed<Note>> {
        (0..10u64)
            .map(|index| {
                let mut signed = Keypair::from_seed([index as u8; 32]).sign(Note(index));
                if bad.contains(&(index as usize)) {
                    signed.body = Note(index + 100);
                }
                signed
            })
            .collect()
    }

    fn is_remembered(cache: &SignatureCache, signed: &Signed<Note>) -> bool {
        let message = signed.signed_bytes();
        let item = SignedMessage {
            signer: &signed.signer,
            domain: Note::DOMAIN,
            message: &message,
            signature: &signed.signature,
        };
        cache.remembers(&item.cache_key())
    }

    #[test]
    fn verify_many_names_exactly_the_bad_signatures_and_remembers_the_good() {
        for bad in [
            &[][..],
            &[0],
            &[4],
            &[9],
            &[1, 2, 7],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ] {
            let cache = SignatureCache::default();
            let signed = signed_notes(bad);
            let answers = cache.verify_many(&signed);
            assert_eq!(answers.len(), signed.len());
            for (index, (answer, one)) in answers.iter().zip(&signed).enumerate() {
                let expected_bad = bad.contains(&index);
                assert_eq!(
                    answer,
                    &if expected_bad {
                        Err(BadSignature { signer: one.signer })
                    } else {
                        Ok(())
                    },
                    "item {index} of bad {bad:?}"
                );
                assert_eq!(is_remembered(&cache, one), !expected_bad, "item {index}");
                assert_eq!(cache.verify(one).is_ok(), !expected_bad, "item {index}");
            }
        }
        assert!(
            SignatureCache::default()
                .verify_many::<Note>(&[])
                .is_empty()
        );
    }

    #[test]
    fn verify_many_takes_remembered_signatures_as_checked() {
        let cache = SignatureCache::default();
        let signed = signed_notes(&[3]);
        // Only what verifying would answer gets remembered; planting a bad
        // one shows the hit is not checked again.
        let message = signed[3].signed_bytes();
        cache.remember([SignedMessage {
            signer: &signed[3].signer,
            domain: Note::DOMAIN,
            message: &message,
            signature: &signed[3].signature,
        }
        .cache_key()]);
        assert!(cache.verify_many(&signed).iter().all(Result::is_ok));
        assert!(signed.iter().all(|one| is_remembered(&cache, one)));
    }

    #[test]
    fn the_canonical_encoding_rule_agrees_with_decompressing() {
        let check = |encoding: [u8; 32]| {
            if let Some(round_trips) = round_trips(encoding) {
                assert_eq!(
                    is_canonical_point_encoding(&encoding),
                    round_trips,
                    "{}",
                    hex::encode(encoding)
                );
            }
        };
        let mut edges = Vec::new();
        // y = p … p + 18 (the only y ≥ p in 255 bits), and a few below p.
        for offset in -3i16..=18 {
            let mut y = FIELD_MODULUS;
            y[0] = (i16::from(y[0]) + offset) as u8;
            assert_eq!(is_canonical_point_encoding(&y), offset < 0, "p + {offset}");
            edges.push(y);
        }
        // Small y, where y + p are the non-canonical twins.
        for y in 0..20u8 {
            let mut encoding = [0; 32];
            encoding[0] = y;
            edges.push(encoding);
        }
        let mut p_minus_one = FIELD_MODULUS;
        p_minus_one[0] -= 1;
        // x = 0 at y = 1 and y = p − 1: the sign bit makes them non-canonical.
        for x_is_zero in [IDENTITY, p_minus_one] {
            assert!(is_canonical_point_encoding(&x_is_zero));
            assert!(!is_canonical_point_encoding(&with_sign_bit(x_is_zero)));
            assert_eq!(round_trips(with_sign_bit(x_is_zero)), Some(false));
        }
        for encoding in edges {
            check(encoding);
            check(with_sign_bit(encoding));
        }
        let mut decoded = 0;
        for seed in 0..64u8 {
            let point = Keypair::from_seed([seed; 32]).account_id();
            assert!(is_canonical_point_encoding(point.as_bytes()));
            decoded += usize::from(round_trips(*point.as_bytes()).is_some());
        }
        assert_eq!(decoded, 64);
    }

    proptest::proptest! {
        #[test]
        fn the_canonical_encoding_rule_agrees_with_decompressing_random_bytes(
            encoding in proptest::array::uniform32(0u8..),
        ) {
            if let Some(round_trips) = round_trips(encoding) {
                proptest::prop_assert_eq!(is_canonical_point_encoding(&encoding), round_trips);
            }
        }
    }
}
