//! Identities: an ed25519 key per account, shown as `did:key:z6Mk…`, and
//! signatures over canonical encodings with a domain tag per object type.

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
pub fn verify_raw(
    signer: &AccountId,
    domain: &str,
    message: &[u8],
    signature: &Signature,
) -> Result<(), BadSignature> {
    let bad = || BadSignature { signer: *signer };
    let key = ed25519_dalek::VerifyingKey::from_bytes(&signer.0).map_err(|_| bad())?;
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(&tagged(domain, message), &signature)
        .map_err(|_| bad())
}

/// Checks many signatures at once (faster than one by one). On failure it
/// does not say which one is bad; check them singly to find out.
pub fn verify_batch(items: &[(AccountId, &'static str, Vec<u8>, Signature)]) -> bool {
    let messages: Vec<Vec<u8>> = items
        .iter()
        .map(|(_, domain, message, _)| tagged(domain, message))
        .collect();
    let mut keys = Vec::with_capacity(items.len());
    for (signer, ..) in items {
        match ed25519_dalek::VerifyingKey::from_bytes(&signer.0) {
            Ok(key) => keys.push(key),
            Err(_) => return false,
        }
    }
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(.., signature)| ed25519_dalek::Signature::from_bytes(&signature.0))
        .collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_ok()
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
/// generations of at most [`SIGNATURE_CACHE_GENERATION`] entries; when the
/// current one fills it becomes the previous one, and the previous one is
/// forgotten.
#[derive(Debug, Default)]
pub struct SignatureCache {
    generations: std::sync::Mutex<[std::collections::HashSet<[u8; 32]>; 2]>,
}

/// Entries of one generation of a [`SignatureCache`].
pub const SIGNATURE_CACHE_GENERATION: usize = 1 << 18;

impl SignatureCache {
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
        let mut hasher = blake3::Hasher::new();
        hasher.update(&signer.0);
        hasher.update(&signature.0);
        hasher.update(domain.as_bytes());
        hasher.update(&[0]);
        hasher.update(message);
        let key = *hasher.finalize().as_bytes();
        if let Ok(generations) = self.generations.lock()
            && generations.iter().any(|set| set.contains(&key))
        {
            return Ok(());
        }
        verify_raw(signer, domain, message, signature)?;
        if let Ok(mut generations) = self.generations.lock() {
            if generations[0].len() >= SIGNATURE_CACHE_GENERATION {
                let current = std::mem::take(&mut generations[0]);
                generations[1] = current;
            }
            generations[0].insert(key);
        }
        Ok(())
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

    #[test]
    fn batch_verification_agrees_with_single() {
        let items: Vec<_> = (0..8u8)
            .map(|index| {
                let key = Keypair::from_seed([index; 32]);
                let message = vec![index; 10];
                let signature = key.sign_raw(Note::DOMAIN, &message);
                (key.account_id(), Note::DOMAIN, message, signature)
            })
            .collect();
        assert!(verify_batch(&items));
        let mut broken = items.clone();
        broken[3].2[0] ^= 1;
        assert!(!verify_batch(&broken));
    }
}
