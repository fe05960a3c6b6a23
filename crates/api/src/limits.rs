//! The API's bounds: request bodies, list lengths, and how long it waits.

use std::time::Duration;

/// The largest request body. The hex of a transaction is twice its bytes,
/// so this admits every transfer, stake and job transaction with room to
/// spare; a dispute carrying a module over ~500 KiB needs a binary upload
/// path, which is not built yet.
pub const REQUEST_BODY_BYTES_MAX: usize = 1 << 20;

/// How many jobs `GET /v1/jobs` lists when the request does not say.
pub const JOBS_LIMIT_DEFAULT: usize = 50;

/// The most jobs one `GET /v1/jobs` lists.
pub const JOBS_LIMIT_MAX: usize = 500;

/// A validator heard from within this long counts as connected in the
/// metrics (the relay sends at least one message a second, an empty one
/// when idle).
pub const PEER_SILENCE_MAX: Duration = Duration::from_secs(5);

/// How long a handler waits on the consensus engine's block store before
/// answering `unavailable` (the store lives on the engine's runtime).
pub(crate) const ENGINE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
