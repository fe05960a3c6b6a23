//! Name, encode and sign the objects every idlegrid node exchanges.
//!
//! This crate has no I/O (batch signature checks draw their random
//! coefficients from the OS, which changes no verdict). It holds the
//! vocabulary the other crates speak: [`ContentId`] names bytes by their
//! BLAKE3 hash, [`codec`] is the one canonical binary encoding for
//! everything hashed or signed, [`identity`] is keys, account ids and
//! signatures, [`work`] is tasks, receipts and vouchers, and [`gpu`] is GPU
//! programs and offers.

pub mod blob_tree;
pub mod capacity;
pub mod cid;
pub mod codec;
pub mod gpu;
pub mod identity;
pub mod rng;
pub mod work;

pub use capacity::{ChallengeRules, ChallengeVerdict};
pub use cid::{ContentId, ParseContentIdError};
pub use codec::{Bounded, DecodeError, EncodeError, LengthExceeded};
pub use gpu::{ByModuleKind, GpuBinding, GpuClass, GpuDispatch, GpuOffer, GpuProgram};
pub use identity::{
    AccountId, BadSignature, Keypair, SIGNATURE_CACHE_GENERATION, Signable, Signature,
    SignatureCache, Signed,
};
pub use rng::SplitMix64;
pub use work::{
    ConsensusFault, ErrorKind, Execution, ExecutionLimits, InputFile, JobId, Offer, ProofStep,
    RECEIPT_BATCH_MAX, RECEIPT_PROOF_STEPS_MAX, ReExecute, Receipt, SignedOffer, SignedReceipt,
    SignedVoucher, TaskInput, TaskOutcome, Voucher, task_seed,
};
