//! The canonical binary encoding for everything idlegrid hashes or signs.
//!
//! It is [Borsh](https://borsh.io): every value has exactly one encoding
//! (fixed-width little-endian integers, `u32` length prefixes, one-byte enum
//! tags, `bool` only as 0 or 1, no floats in signed objects), so the hash of
//! an encoding names the value. Decoding is strict and bounded here: input
//! longer than the caller's limit is refused before any work, trailing bytes
//! are an error, and [`Bounded`] collections refuse a length prefix above
//! their limit before reading a single element.

use std::io::{self, Read, Write};
use std::ops::Deref;

use borsh::{BorshDeserialize, BorshSerialize};

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("failed to encode {type_name}: {source}")]
pub struct EncodeError {
    type_name: &'static str,
    #[source]
    source: io::Error,
}

/// Why some bytes are not a valid encoding of the expected value.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{type_name} encoding is {len} bytes, above the limit of {max_len}")]
    TooLong {
        type_name: &'static str,
        len: usize,
        max_len: usize,
    },
    #[error("{type_name} encoding has {count} unread trailing bytes")]
    TrailingBytes {
        type_name: &'static str,
        count: usize,
    },
    #[error("malformed {type_name}: {source}")]
    Malformed {
        type_name: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Encodes `value` canonically.
pub fn encode<T: BorshSerialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    borsh::to_vec(value).map_err(|source| EncodeError {
        type_name: std::any::type_name::<T>(),
        source,
    })
}

/// Decodes exactly one `T` from `bytes`, refusing input above `max_len` bytes
/// and input with bytes left over.
pub fn decode<T: BorshDeserialize>(bytes: &[u8], max_len: usize) -> Result<T, DecodeError> {
    let type_name = std::any::type_name::<T>();
    if bytes.len() > max_len {
        return Err(DecodeError::TooLong {
            type_name,
            len: bytes.len(),
            max_len,
        });
    }
    let mut rest = bytes;
    let value =
        T::deserialize(&mut rest).map_err(|source| DecodeError::Malformed { type_name, source })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            type_name,
            count: rest.len(),
        });
    }
    Ok(value)
}

/// A collection whose length (elements, or bytes for a string) never exceeds
/// `MAX`, checked when it is built and before decoding reads any element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Bounded<T, const MAX: usize>(T);

/// What [`Bounded`] can hold: something with a length.
pub trait HasLength {
    fn length(&self) -> usize;
}

impl<E> HasLength for Vec<E> {
    fn length(&self) -> usize {
        self.len()
    }
}

impl HasLength for String {
    fn length(&self) -> usize {
        self.len()
    }
}

/// A value longer than its [`Bounded`] limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("length {len} is above the limit of {max}")]
pub struct LengthExceeded {
    pub len: usize,
    pub max: usize,
}

impl<T: HasLength, const MAX: usize> Bounded<T, MAX> {
    pub fn new(value: T) -> Result<Self, LengthExceeded> {
        let len = value.length();
        if len > MAX {
            return Err(LengthExceeded { len, max: MAX });
        }
        Ok(Self(value))
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T, const MAX: usize> Deref for Bounded<T, MAX> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: BorshSerialize, const MAX: usize> BorshSerialize for Bounded<T, MAX> {
    fn serialize<W: Write>(&self, writer: &mut W) -> io::Result<()> {
        self.0.serialize(writer)
    }
}

fn read_bounded_length<R: Read>(reader: &mut R, max: usize) -> io::Result<usize> {
    let len = u32::deserialize_reader(reader)? as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            LengthExceeded { len, max },
        ));
    }
    Ok(len)
}

impl<E: BorshDeserialize, const MAX: usize> BorshDeserialize for Bounded<Vec<E>, MAX> {
    fn deserialize_reader<R: Read>(reader: &mut R) -> io::Result<Self> {
        let len = read_bounded_length(reader, MAX)?;
        let mut items = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            items.push(E::deserialize_reader(reader)?);
        }
        Ok(Self(items))
    }
}

impl<const MAX: usize> BorshDeserialize for Bounded<String, MAX> {
    fn deserialize_reader<R: Read>(reader: &mut R) -> io::Result<Self> {
        let len = read_bounded_length(reader, MAX)?;
        let mut bytes = vec![0u8; len];
        reader.read_exact(&mut bytes)?;
        let text = String::from_utf8(bytes)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        Ok(Self(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContentId;

    #[derive(Debug, PartialEq, BorshSerialize, BorshDeserialize)]
    struct Sample {
        module: ContentId,
        args: Bounded<Vec<Bounded<String, 16>>, 4>,
        fuel: u64,
        exit: Option<i32>,
    }

    fn sample() -> Sample {
        let args = vec![
            Bounded::new("pi".to_owned()).unwrap(),
            Bounded::new("1000".to_owned()).unwrap(),
        ];
        Sample {
            module: ContentId::of(b"module"),
            args: Bounded::new(args).unwrap(),
            fuel: 7,
            exit: Some(0),
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode::<Sample>(&bytes, 1024).unwrap(), sample());
    }

    #[test]
    fn refuses_oversize_trailing_and_truncated_input() {
        let bytes = encode(&sample()).unwrap();
        assert!(matches!(
            decode::<Sample>(&bytes, bytes.len() - 1),
            Err(DecodeError::TooLong { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Sample>(&trailing, 1024),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
        assert!(matches!(
            decode::<Sample>(&bytes[..bytes.len() - 1], 1024),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn refuses_a_length_prefix_above_the_bound_before_reading_elements() {
        let mut bytes = ContentId::of(b"module").as_bytes().to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = decode::<Sample>(&bytes, 1024).unwrap_err();
        assert!(
            error.to_string().contains("above the limit of 4"),
            "{error}"
        );
    }

    #[test]
    fn builder_refuses_oversize_values() {
        assert_eq!(
            Bounded::<String, 2>::new("abc".to_owned()),
            Err(LengthExceeded { len: 3, max: 2 })
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..256)) {
            let _ = decode::<Sample>(&bytes, 1024);
        }

        #[test]
        fn encoding_is_canonical(bytes in proptest::collection::vec(0u8.., 0..256)) {
            // Any accepted input re-encodes to exactly itself: one value, one encoding.
            if let Ok(value) = decode::<Sample>(&bytes, 1024) {
                proptest::prop_assert_eq!(encode(&value).unwrap(), bytes);
            }
        }
    }
}
