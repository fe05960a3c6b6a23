//! Content ids: the BLAKE3 hash of some bytes, shown as `b3:` + 64 hex digits.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};

/// The prefix every printed content id starts with; it names the hash function
/// so another one can be introduced without ambiguity.
pub const CONTENT_ID_PREFIX: &str = "b3:";

/// Number of hex digits [`ContentId::short`] keeps: 48 bits, enough to tell
/// apart the objects a person looks at side by side.
pub const SHORT_HEX_DIGITS: usize = 12;

/// The BLAKE3 hash of a blob. Two blobs with the same id are the same bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct ContentId([u8; 32]);

impl ContentId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The id of a stream of parts hashed as one blob (their concatenation).
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part);
        }
        Self(*hasher.finalize().as_bytes())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `b3:` and the first [`SHORT_HEX_DIGITS`] hex digits, for humans.
    pub fn short(&self) -> String {
        let full = hex::encode(self.0);
        format!("{CONTENT_ID_PREFIX}{}", &full[..SHORT_HEX_DIGITS])
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CONTENT_ID_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

/// Why a string is not a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseContentIdError {
    #[error("content id must start with `{CONTENT_ID_PREFIX}`")]
    MissingPrefix,
    #[error("content id must have 64 hex digits after `{CONTENT_ID_PREFIX}`, found {found}")]
    WrongLength { found: usize },
    #[error("content id contains a character that is not a hex digit")]
    NotHex,
}

impl FromStr for ContentId {
    type Err = ParseContentIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text
            .strip_prefix(CONTENT_ID_PREFIX)
            .ok_or(ParseContentIdError::MissingPrefix)?;
        if digits.len() != 64 {
            return Err(ParseContentIdError::WrongLength {
                found: digits.len(),
            });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| ParseContentIdError::NotHex)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_prints_with_prefix() {
        // BLAKE3 of the empty input, from the reference test vectors.
        let id = ContentId::of(b"");
        assert_eq!(
            id.to_string(),
            "b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(id.short(), "b3:af1349b9f5f9");
    }

    #[test]
    fn parts_hash_like_their_concatenation() {
        assert_eq!(
            ContentId::of_parts([b"ab".as_slice(), b"cd".as_slice()]),
            ContentId::of(b"abcd")
        );
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(
            "af13".parse::<ContentId>(),
            Err(ParseContentIdError::MissingPrefix)
        );
        assert_eq!(
            "b3:af13".parse::<ContentId>(),
            Err(ParseContentIdError::WrongLength { found: 4 })
        );
        let not_hex = format!("b3:{}", "zz".repeat(32));
        assert_eq!(
            not_hex.parse::<ContentId>(),
            Err(ParseContentIdError::NotHex)
        );
    }

    proptest::proptest! {
        #[test]
        fn display_parses_back(bytes in proptest::array::uniform32(0u8..)) {
            let id = ContentId::from_bytes(bytes);
            proptest::prop_assert_eq!(id.to_string().parse::<ContentId>(), Ok(id));
        }
    }
}
