//! Name content and encode signed objects the same way on every idlegrid node.
//!
//! This crate has no I/O. It holds the vocabulary the other crates speak:
//! [`ContentId`] names bytes (modules, inputs, outputs) by their BLAKE3 hash,
//! and [`codec`] is the one canonical binary encoding used for everything that
//! is hashed or signed.

pub mod cid;
pub mod codec;

pub use cid::{ContentId, ParseContentIdError};
pub use codec::{Bounded, DecodeError, EncodeError, LengthExceeded};
