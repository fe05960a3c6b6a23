//! The per-task host state and the deterministic pieces of WASI it is built from.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{ResourceLimiter, Result as WasmtimeResult};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::limits::TABLE_ELEMENTS_MAX;

/// Seconds since 1970 that every task's wall clock reads: 2024-01-01T00:00:00Z.
pub const FIXED_WALL_CLOCK_SECS: u64 = 1_704_067_200;
/// Nanoseconds every task's monotonic clock reads.
pub const FIXED_MONOTONIC_NANOS: u64 = 0;
/// Domain separation for the `random_get` stream.
const RANDOM_CONTEXT: &str = "idlegrid sandbox random_get v1";

/// What a store carries for one task.
pub(crate) struct TaskState {
    pub wasi: WasiP1Ctx,
    pub limiter: TaskLimiter,
    pub files: FileBudget,
    /// Inode numbers and the last directory listing the task was shown.
    pub files_seen: crate::files::FileView,
}

impl TaskState {
    pub fn new(
        wasi: WasiP1Ctx,
        memory_bytes_max: u64,
        output_bytes_max: u64,
        hits: &Arc<Mutex<LimitHits>>,
    ) -> Self {
        Self {
            wasi,
            limiter: TaskLimiter {
                memory_bytes_max,
                hits: Arc::clone(hits),
            },
            files: FileBudget {
                bytes_left: output_bytes_max,
                entries_left: crate::limits::OUTPUT_ENTRIES_MAX,
                hits: Arc::clone(hits),
            },
            files_seen: crate::files::FileView::default(),
        }
    }
}

/// Which limit a task ran into, recorded by the host side that noticed it so
/// the trap that follows can be classified without parsing messages.
#[derive(Debug, Default)]
pub(crate) struct LimitHits {
    pub memory: Option<String>,
    pub output: Option<String>,
}

/// Enforces the task's memory limit; exceeding it traps (instead of
/// `memory.grow` returning -1) so the failure is reported as `memory_limit`.
pub(crate) struct TaskLimiter {
    pub memory_bytes_max: u64,
    pub hits: Arc<Mutex<LimitHits>>,
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmtimeResult<bool> {
        if desired as u64 > self.memory_bytes_max {
            let message = format!(
                "the task asked for {} MiB of memory (it had {} MiB); the limit is {} MiB",
                desired >> 20,
                current >> 20,
                self.memory_bytes_max >> 20
            );
            record(&self.hits, |hits| hits.memory = Some(message.clone()));
            wasmtime::bail!("{message}");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmtimeResult<bool> {
        if desired > TABLE_ELEMENTS_MAX {
            let message = format!(
                "the task asked for a table of {desired} elements; the limit is {TABLE_ELEMENTS_MAX}"
            );
            record(&self.hits, |hits| hits.memory = Some(message.clone()));
            wasmtime::bail!("{message}");
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    /// The task's own and the metering's interrupt page (a task's module
    /// may define only one: it is validated without multi-memory).
    fn memories(&self) -> usize {
        2
    }
}

pub(crate) fn record(hits: &Mutex<LimitHits>, update: impl FnOnce(&mut LimitHits)) {
    // A poisoned lock only means another thread panicked while recording;
    // the data is still a plain record, so keep using it.
    let mut guard = hits.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    update(&mut guard);
}

/// Counts what the task writes into its output directory, so a task cannot
/// fill the host's disk before the run ends.
pub(crate) struct FileBudget {
    pub bytes_left: u64,
    pub entries_left: u32,
    pub hits: Arc<Mutex<LimitHits>>,
}

/// A clock that always reads the same instant.
pub(crate) struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_WALL_CLOCK_SECS)
    }
}

/// A monotonic clock that never advances.
pub(crate) struct FixedMonotonicClock;

impl HostMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        FIXED_MONOTONIC_NANOS
    }
}

/// `random_get` for a task: the BLAKE3 extendable output keyed by the task
/// seed. Replicas with the same seed read the same bytes; different seeds
/// give independent streams.
pub(crate) struct SeededRandom(blake3::OutputReader);

impl SeededRandom {
    pub fn new(seed: &[u8; 32]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(RANDOM_CONTEXT);
        hasher.update(seed);
        Self(hasher.finalize_xof())
    }
}

impl rand_core::TryRng for SeededRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.0.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.0.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, destination: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(destination);
        Ok(())
    }
}

/// What a [`CapturedPipe`] does when the task writes past its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Stop the task: its output would be incomplete (stdout).
    Trap,
    /// Keep the first bytes and drop the rest (stderr, which is diagnostics).
    Truncate,
}

/// An in-memory stdout or stderr with a hard capacity.
#[derive(Clone)]
pub(crate) struct CapturedPipe {
    buffer: Arc<Mutex<Vec<u8>>>,
    capacity_bytes: usize,
    overflow: Overflow,
    truncated: Arc<AtomicBool>,
    hits: Arc<Mutex<LimitHits>>,
}

impl CapturedPipe {
    pub fn new(capacity_bytes: u64, overflow: Overflow, hits: Arc<Mutex<LimitHits>>) -> Self {
        Self {
            buffer: Arc::default(),
            capacity_bytes: usize::try_from(capacity_bytes).unwrap_or(usize::MAX),
            overflow,
            truncated: Arc::default(),
            hits,
        }
    }

    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn was_truncated(&self) -> bool {
        self.truncated.load(Ordering::Relaxed)
    }

    fn append(&self, bytes: &[u8]) -> Result<usize, String> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity_bytes.saturating_sub(buffer.len());
        if bytes.len() <= room {
            buffer.extend_from_slice(bytes);
            return Ok(bytes.len());
        }
        match self.overflow {
            Overflow::Truncate => {
                buffer.extend_from_slice(&bytes[..room]);
                self.truncated.store(true, Ordering::Relaxed);
                Ok(bytes.len())
            }
            Overflow::Trap => {
                let message = format!(
                    "the task wrote more than {} bytes to stdout",
                    self.capacity_bytes
                );
                record(&self.hits, |hits| hits.output = Some(message.clone()));
                Err(message)
            }
        }
    }
}

impl IsTerminal for CapturedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes)
            .map(drop)
            .map_err(|message| StreamError::Trap(wasmtime::format_err!("{message}")))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always accept a full chunk; `write` decides what happens past capacity.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.append(bytes).map_err(std::io::Error::other))
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
