//! The messages nodes exchange on the overlay, their bounds, and the
//! request-response codec that reads them with those bounds.
//!
//! One request-response protocol carries the whole conversation between a
//! requestor and a provider; each message is a Borsh-encoded [`Request`] or
//! [`Response`] behind a 4-byte little-endian length, decoded with
//! [`MESSAGE_BYTES_MAX`] checked before a byte of the body is read.

use std::io;

use borsh::{BorshDeserialize, BorshSerialize};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use idlegrid_types::codec::{self, Bounded};
use idlegrid_types::{
    ContentId, ExecutionLimits, JobId, SignedOffer, SignedReceipt, SignedVoucher, TaskInput,
};
use libp2p::StreamProtocol;

/// The request-response protocol for work between requestors and providers.
pub const WORK_PROTOCOL: StreamProtocol = StreamProtocol::new("/idlegrid/work/1");

/// Largest request or response on the wire, bytes.
pub const MESSAGE_BYTES_MAX: usize = 8 << 20;
/// Most tasks in one batch, one result batch or one cancel.
pub const BATCH_TASKS_MAX: usize = 256;
/// Largest stdout a result carries inline, bytes.
pub const OUTPUT_INLINE_BYTES_MAX: usize = 1 << 20;
/// Largest content chunk in one response, bytes.
pub const CONTENT_CHUNK_BYTES_MAX: usize = 1 << 20;
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
    /// Fetched from the requestor by content id when the provider lacks it.
    pub module: ContentId,
    pub limits: ExecutionLimits,
    /// The provider's wall-clock backstop per task, milliseconds.
    pub wall_time_ms: u64,
    pub price_per_million_fuel: u64,
    pub tasks: Bounded<Vec<AssignedTask>, BATCH_TASKS_MAX>,
}

/// What became of one task a provider was given.
#[expect(
    clippy::large_enum_variant,
    reason = "almost every return is `Ran`; boxing it would allocate once more per task"
)]
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum TaskReturn {
    /// It ran: the signed receipt and, when it completed, its stdout (whose
    /// content id the receipt names).
    Ran {
        receipt: SignedReceipt,
        stdout: Bounded<Vec<u8>, OUTPUT_INLINE_BYTES_MAX>,
    },
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
            TaskReturn::Ran { receipt, .. } => receipt.body.task_index,
            TaskReturn::NotRun { index, .. } => *index,
        }
    }

    /// Roughly what it takes on the wire, for packing batches.
    pub fn encoded_bytes_estimate(&self) -> usize {
        match self {
            TaskReturn::Ran { stdout, .. } => stdout.len() + 512,
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

/// Decodes a gossiped offer with its bound.
pub fn decode_offer(bytes: &[u8]) -> Result<SignedOffer, codec::DecodeError> {
    codec::decode(bytes, OFFER_BYTES_MAX)
}

/// A message read from a peer: decoded, or why it did not decode. The codec
/// hands malformed input up as a value rather than an I/O error, because
/// libp2p does not say which peer a failed read came from, and the overlay
/// must know whom to block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire<T> {
    Decoded(T),
    Malformed(String),
}

/// The work protocol's codec: length-prefixed, bounded Borsh.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkCodec;

async fn read_message<T: BorshDeserialize, R: AsyncRead + Unpin + Send>(
    io: &mut R,
) -> io::Result<Wire<T>> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MESSAGE_BYTES_MAX {
        // The body is not read: it is not held, whatever its size.
        return Ok(Wire::Malformed(format!(
            "a message of {length} bytes is over the limit of {MESSAGE_BYTES_MAX}"
        )));
    }
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await?;
    Ok(match codec::decode(&body, MESSAGE_BYTES_MAX) {
        Ok(message) => Wire::Decoded(message),
        Err(error) => Wire::Malformed(format!("a message that does not decode: {error}")),
    })
}

async fn write_message<T: BorshSerialize, W: AsyncWrite + Unpin + Send>(
    io: &mut W,
    message: Wire<T>,
) -> io::Result<()> {
    let Wire::Decoded(message) = message else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a malformed message is never sent",
        ));
    };
    let body = codec::encode(&message)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))?;
    if body.len() > MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message of {} bytes is over the limit of {MESSAGE_BYTES_MAX}",
                body.len()
            ),
        ));
    }
    let length = u32::try_from(body.len()).expect("bounded by MESSAGE_BYTES_MAX");
    io.write_all(&length.to_le_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

impl libp2p::request_response::Codec for WorkCodec {
    type Protocol = StreamProtocol;
    type Request = Wire<Request>;
    type Response = Wire<Response>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Wire<Request>> {
        read_message(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Wire<Response>> {
        read_message(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Wire<Request>,
    ) -> io::Result<()> {
        write_message(io, request).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Wire<Response>,
    ) -> io::Result<()> {
        write_message(io, response).await
    }
}

/// Decodes a request body (without its length prefix) as the codec does.
pub fn decode_request(bytes: &[u8]) -> Result<Request, codec::DecodeError> {
    codec::decode(bytes, MESSAGE_BYTES_MAX)
}

/// Decodes a response body (without its length prefix) as the codec does.
pub fn decode_response(bytes: &[u8]) -> Result<Response, codec::DecodeError> {
    codec::decode(bytes, MESSAGE_BYTES_MAX)
}
