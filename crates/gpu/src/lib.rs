//! GPU tasks that give the same bytes on every machine: a WGSL compute
//! kernel is checked with naga against the *exact* class (integer and f32
//! `+ - *` arithmetic, comparisons and a few rounding-free builtins, the
//! operations measured bit-identical on an NVIDIA H200, Mesa's lavapipe and
//! the CPU), compiled to SPIR-V with every float operation decorated
//! `NoContraction` and bounds-checked accesses, every float made canonical
//! (no denormals, one zero, one NaN), and run through wgpu's Vulkan backend with
//! bounded buffers and dispatches, or on the CPU alone by an interpreter of
//! the same compiled module (for validators, which have no GPU).
//! [`LIBRARY_WGSL`] offers division, square roots and transcendentals built
//! from exact operations.
//!
//! This is the only crate that imports naga and wgpu.

pub mod canonical;
pub mod challenge;
mod cpu;
mod kernel;
mod library;
pub mod meter;
mod run;
mod task;

pub use cpu::{
    CPU_INVOCATION_MEMORY_BYTES_MAX, CPU_INVOCATIONS_PER_WORKGROUP_MAX,
    CPU_WORKGROUP_MEMORY_BYTES_MAX, CPU_WORKGROUP_SIZE_MAX, CPU_WORKGROUPS_PER_DIMENSION_MAX,
    execute_on_cpu, execute_on_cpu_with_budget, run_on_cpu,
};
pub use kernel::{BINDINGS_MAX, Binding, Class, Kernel, contraction_counts, no_contraction};
pub use library::{LIBRARY_WGSL, with_library};
pub use run::{
    AdapterInfo, BUFFER_BYTES_MAX, Gpu, GpuRun, Metered, PIPELINES_CACHED_MAX, Step, Stopped,
};
pub use task::{Cpu, CpuReExecutor, Executor, Program, TaskRun, WORKGROUPS_PER_DIMENSION_MAX};

use std::time::Duration;

/// Why a kernel could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The WGSL does not parse or validate, or has no such entry point.
    #[error("invalid kernel: {0}")]
    Invalid(String),
    /// The kernel uses an operation whose result differs between GPUs.
    #[error("not exact: {0}")]
    NotExact(String),
    /// The buffers given do not match the kernel, or exceed a bound.
    #[error("bad bindings: {0}")]
    Bindings(String),
    /// The dispatch or workgroup size exceeds a bound.
    #[error("bad dispatch: {0}")]
    Dispatch(String),
    /// The run outlasted its wall-clock limit.
    #[error("the kernel ran past its wall-clock limit of {0:?}")]
    WallTimeout(Duration),
    /// No usable GPU.
    #[error("no GPU: {0}")]
    NoAdapter(String),
    /// The device failed while running.
    #[error("the GPU failed: {0}")]
    Device(String),
}
