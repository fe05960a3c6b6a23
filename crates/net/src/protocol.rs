//! The messages nodes exchange on the overlay, their bounds, and the
//! frames that carry them on a work stream, read with those bounds.
//!
//! One stream protocol carries the whole conversation between a requestor
//! and a provider. A node sends its requests to a peer on one long-lived
//! stream it opened, each framed with a request id, and reads the peer's
//! responses (in any order, named by the same ids) from that stream. Each
//! message is a Borsh-encoded [`Request`] or [`Response`] behind a 4-byte
//! little-endian length, decoded with [`MESSAGE_BYTES_MAX`] checked before
//! a byte of the body is read.

use std::io;

use borsh::{BorshDeserialize, BorshSerialize};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use idlegrid_types::codec::{self, Bounded};
use idlegrid_types::{
    AccountId, ContentId, ExecutionLimits, JobId, SignedOffer, SignedReceipt, SignedVoucher,
    TaskInput,
};
use libp2p::StreamProtocol;

/// The stream protocol for work between requestors and providers: each
/// node opens one long-lived stream to each peer it sends requests to.
pub const WORK_PROTOCOL: StreamProtocol = StreamProtocol::new("/idlegrid/work/3");

/// Largest request or response on the wire, bytes.
pub const MESSAGE_BYTES_MAX: usize = 8 << 20;
/// Most tasks in one batch, one result batch or one cancel.
pub const BATCH_TASKS_MAX: usize = 256;
/// Largest output a result carries inline, bytes. A larger one stays with
/// the provider that made it ([`TaskReturn::Kept`]) until fetched by id.
pub const OUTPUT_INLINE_BYTES_MAX: usize = 1 << 20;
/// Largest content chunk in one response, bytes: a whole number of the
/// 64 KiB groups a fetcher checks one by one.
pub const CONTENT_CHUNK_BYTES_MAX: usize = 1 << 20;
/// Most group values in one content tree response (2 GiB of content): a
/// larger tree comes in pages, each asked for from where the last ended.
pub const CONTENT_TREE_LEAVES_MAX: usize = CONTENT_CHUNK_BYTES_MAX / 32;
/// Largest content fetched over the overlay, bytes: a fetcher holds its
/// tree whole (32 bytes a 64 KiB group: 32 MiB at this bound) to check it
/// against the id before the first byte.
pub const CONTENT_BYTES_MAX: u64 = 64 << 30;
/// Most providers a batch names as holders of its module.
pub const MODULE_HOLDERS_MAX: usize = 4;
/// Longest refusal code and message, bytes.
pub const REASON_BYTES_MAX: usize = 512;
/// Largest signed offer on the gossip topic, bytes.
pub const OFFER_BYTES_MAX: usize = 1024;

/// One task of a batch: its index in the job and what it receives.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AssignedTask {
    pub index: u64,
    pub input: TaskInput,
}

/// Requestor → provider: run these tasks of a job.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct TaskBatch {
    pub job: JobId,
    /// Fetched by content id when the provider lacks it: from
    /// `module_holders` first, then from the requestor.
    pub module: ContentId,
    /// Providers the requestor knows to hold the module (they returned
    /// results of this job), which can serve it instead of the requestor.
    pub module_holders: Bounded<Vec<AccountId>, MODULE_HOLDERS_MAX>,
    pub limits: ExecutionLimits,
    /// The provider's wall-clock backstop per task, milliseconds.
    pub wall_time_ms: u64,
    pub price_per_million_fuel: u64,
    pub tasks: Bounded<Vec<AssignedTask>, BATCH_TASKS_MAX>,
}

/// What became of one task a provider was given.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum TaskReturn {
    /// It ran: the signed receipt and, when it completed, its stdout (whose
    /// content id the receipt names).
    Ran {
        receipt: SignedReceipt,
        stdout: Bounded<Vec<u8>, OUTPUT_INLINE_BYTES_MAX>,
    },
    /// It ran and completed with an output too large to carry inline
    /// (over [`OUTPUT_INLINE_BYTES_MAX`] or the provider's own threshold):
    /// the provider keeps it, under the content id the receipt names, and
    /// serves it by [`Request::ContentTree`] and [`Request::Content`] until
    /// the job is done. Replicas are compared by that id alone.
    Kept { receipt: SignedReceipt, bytes: u64 },
    /// The provider could not run it (the host failed, the module could not
    /// be fetched). Not a claim about the task.
    NotRun {
        index: u64,
        reason: Bounded<String, REASON_BYTES_MAX>,
    },
}

impl TaskReturn {
    pub fn index(&self) -> u64 {
        match self {
            TaskReturn::Ran { receipt, .. } | TaskReturn::Kept { receipt, .. } => {
                receipt.body.task_index
            }
            TaskReturn::NotRun { index, .. } => *index,
        }
    }

    /// Roughly what it takes on the wire, for packing batches.
    pub fn encoded_bytes_estimate(&self) -> usize {
        match self {
            TaskReturn::Ran { stdout, .. } => stdout.len() + 512,
            TaskReturn::Kept { .. } => 520,
            TaskReturn::NotRun { reason, .. } => reason.len() + 16,
        }
    }
}

/// Provider → requestor: results of one job's tasks.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ResultBatch {
    pub job: JobId,
    pub results: Bounded<Vec<TaskReturn>, BATCH_TASKS_MAX>,
}

/// Every request on the work protocol.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Request {
    /// Requestor → provider: run these tasks (answered at once; results
    /// follow as [`Request::Results`]).
    Tasks(TaskBatch),
    /// Requestor → provider: these tasks are no longer wanted.
    Cancel {
        job: JobId,
        tasks: Bounded<Vec<u64>, BATCH_TASKS_MAX>,
    },
    /// Provider → requestor: finished tasks.
    Results(ResultBatch),
    /// Requestor → provider: a newer cumulative voucher.
    Voucher(SignedVoucher),
    /// Requestor → provider: the job is over; redeem what it owes.
    JobDone { job: JobId },
    /// Anyone → anyone: a chunk of content the other side holds.
    Content { cid: ContentId, offset: u64 },
    /// Requestor → provider: your newest offer (asked once a connection
    /// opens, so a newcomer need not wait for the next one gossiped).
    Offer,
    /// Provider → requestor: the newest voucher you signed me in this job.
    /// A provider asks when results it delivered are not followed by a
    /// voucher (one pushed to it may have been lost with its connection),
    /// and again when it reconnects to the requestor. Answered with
    /// [`Response::Voucher`], or refused `no_voucher` while nothing is owed.
    NewestVoucher { job: JobId },
    /// Anyone → anyone: the length of content the other side holds and the
    /// BLAKE3 chaining values of its 64 KiB groups from group `from` on (at
    /// most [`CONTENT_TREE_LEAVES_MAX`] an answer), with which a fetcher
    /// checks each group as it arrives
    /// ([`idlegrid_types::blob_tree`]).
    ContentTree { cid: ContentId, from: u64 },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Tasks(_) => "tasks",
            Request::Cancel { .. } => "cancel",
            Request::Results(_) => "results",
            Request::Voucher(_) => "voucher",
            Request::JobDone { .. } => "job_done",
            Request::Content { .. } => "content",
            Request::Offer => "offer",
            Request::NewestVoucher { .. } => "newest_voucher",
            Request::ContentTree { .. } => "content_tree",
        }
    }
}

/// Every response on the work protocol.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Response {
    Ok,
    /// Not done; `code` is a snake_case word, `message` says why.
    Refused {
        code: Bounded<String, REASON_BYTES_MAX>,
        message: Bounded<String, REASON_BYTES_MAX>,
    },
    /// A chunk of `total_bytes` of content starting at the requested offset.
    Content {
        total_bytes: u64,
        bytes: Bounded<Vec<u8>, CONTENT_CHUNK_BYTES_MAX>,
    },
    /// The provider's newest signed offer, as it was gossiped.
    Offer(Box<SignedOffer>),
    /// The newest voucher the requestor signed for the asking provider in
    /// a job, and whether the job is over (the provider redeems it now, as
    /// after [`Request::JobDone`]).
    Voucher {
        voucher: Box<SignedVoucher>,
        job_done: bool,
    },
    /// Content's length and its groups' chaining values from the group
    /// asked for, as many as fit one answer.
    ContentTree {
        total_bytes: u64,
        leaves: Bounded<Vec<[u8; 32]>, CONTENT_TREE_LEAVES_MAX>,
    },
}

impl Response {
    /// A refusal, with the code and message cut to their bounds.
    pub fn refused(code: &str, message: impl Into<String>) -> Self {
        Response::Refused {
            code: bounded_text(code.to_owned()),
            message: bounded_text(message.into()),
        }
    }
}

/// Text cut (on a character boundary) to [`REASON_BYTES_MAX`].
pub fn bounded_text(mut text: String) -> Bounded<String, REASON_BYTES_MAX> {
    if text.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Bounded::new(text).expect("cut to the bound")
}

/// An offer is its author's: signed by it, and the signature holds.
pub fn check_offer(author: &AccountId, offer: &SignedOffer) -> Result<(), &'static str> {
    offer
        .verify()
        .map_err(|_| "an offer with a bad signature")?;
    if offer.signer != *author {
        return Err("an offer signed by someone other than its author");
    }
    Ok(())
}

/// Decodes a gossiped offer with its bound.
pub fn decode_offer(bytes: &[u8]) -> Result<SignedOffer, codec::DecodeError> {
    codec::decode(bytes, OFFER_BYTES_MAX)
}

/// A message read from a peer: decoded, or why it did not decode. Malformed
/// input is a value rather than an I/O error so that the overlay can tell
/// a peer that sent garbage (and is blocked) from a connection that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire<T> {
    Decoded(T),
    Malformed(String),
}

/// Reads one frame of a work stream: its request id (8 bytes, little
/// endian), then a Borsh message behind a 4-byte little-endian length that
/// is checked against [`MESSAGE_BYTES_MAX`] before a byte of the body is
/// read. After a malformed frame the stream is out of step and must close.
pub async fn read_frame<T: BorshDeserialize, R: AsyncRead + Unpin>(
    io: &mut R,
) -> io::Result<(u64, Wire<T>)> {
    let mut header = [0u8; 12];
    io.read_exact(&mut header).await?;
    let (id, length) = header.split_at(8);
    let id = u64::from_le_bytes(id.try_into().expect("8 bytes"));
    let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
    if length > MESSAGE_BYTES_MAX {
        // The body is not read: it is not held, whatever its size.
        return Ok((
            id,
            Wire::Malformed(format!(
                "a message of {length} bytes is over the limit of {MESSAGE_BYTES_MAX}"
            )),
        ));
    }
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await?;
    let message = match codec::decode(&body, MESSAGE_BYTES_MAX) {
        Ok(message) => Wire::Decoded(message),
        Err(error) => Wire::Malformed(format!("a message that does not decode: {error}")),
    };
    Ok((id, message))
}

/// Encodes one frame (id, length, body) as [`read_frame`] reads it; a
/// message over [`MESSAGE_BYTES_MAX`] is refused, never sent.
pub fn encode_frame<T: BorshSerialize>(id: u64, message: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 12];
    borsh::to_writer(&mut frame, message)?;
    let length = frame.len() - 12;
    if length > MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a message of {length} bytes is over the limit of {MESSAGE_BYTES_MAX}"),
        ));
    }
    frame[..8].copy_from_slice(&id.to_le_bytes());
    frame[8..12].copy_from_slice(&u32::try_from(length).expect("bounded").to_le_bytes());
    Ok(frame)
}

/// Writes one encoded frame in a single write and flushes it, so that it
/// leaves at once as one multiplexer frame.
pub async fn send_frame<W: AsyncWrite + Unpin>(io: &mut W, frame: &[u8]) -> io::Result<()> {
    io.write_all(frame).await?;
    io.flush().await
}

/// Decodes a request body (without its frame header) as [`read_frame`] does.
pub fn decode_request(bytes: &[u8]) -> Result<Request, codec::DecodeError> {
    codec::decode(bytes, MESSAGE_BYTES_MAX)
}

/// Decodes a response body (without its frame header) as [`read_frame`] does.
pub fn decode_response(bytes: &[u8]) -> Result<Response, codec::DecodeError> {
    codec::decode(bytes, MESSAGE_BYTES_MAX)
}
