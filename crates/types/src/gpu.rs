//! GPU tasks: a WGSL program with its bindings and dispatches, carried as a
//! task's module, and what a provider offers to run them.
//!
//! A job's module is either a WebAssembly module or an encoded
//! [`GpuProgram`], told apart by their first bytes (`\0asm` or
//! [`GPU_PROGRAM_MAGIC`]). Everything that names, fetches or re-executes
//! a module therefore handles GPU tasks unchanged.

use borsh::{BorshDeserialize, BorshSerialize};

use crate::codec::{self, Bounded};
use crate::work::{Execution, ExecutionLimits, ReExecute, TaskInput};

/// The first bytes of an encoded [`GpuProgram`].
pub const GPU_PROGRAM_MAGIC: [u8; 8] = *b"\0igpu\x01\0\0";
/// Largest WGSL source in a program, bytes.
pub const GPU_SOURCE_BYTES_MAX: usize = 1 << 20;
/// Largest encoded program, bytes (its shared inputs travel inside it).
pub const GPU_PROGRAM_BYTES_MAX: usize = 8 << 20;
/// Most bindings a program declares (the meter takes one more).
pub const GPU_BINDINGS_MAX: usize = 7;
/// Most dispatches a program runs.
pub const GPU_DISPATCHES_MAX: usize = 64;
/// Longest entry point name, bytes.
pub const GPU_ENTRY_POINT_BYTES_MAX: usize = 128;
/// Longest adapter name or driver string an offer carries, bytes.
pub const GPU_NAME_BYTES_MAX: usize = 128;

/// How far a GPU task's results must agree across machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum GpuClass {
    /// The same bytes on every GPU and on the CPU: replicas compare across
    /// vendors and a dispute is settled on the CPU.
    Exact = 0,
    /// The same bytes only on the same GPU vendor, device and driver: any
    /// WGSL the device runs (float division, `sqrt`, transcendentals…),
    /// replicas of a task placed within one class, and a disagreement
    /// settled by no re-execution (no validator holds every class of GPU).
    Class = 1,
}

impl GpuClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            GpuClass::Exact => "exact",
            GpuClass::Class => "class",
        }
    }
}

/// Where one of the kernel's storage buffers comes from. A program lists
/// one per `@group(0) @binding(n)` buffer, in binding order.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum GpuBinding {
    /// The same bytes for every task (a file the job names), read only.
    Shared(Bounded<Vec<u8>, GPU_PROGRAM_BYTES_MAX>),
    /// The task's stdin, read only.
    Stdin,
    /// The task's arguments as 32-bit words, read only: an integer
    /// argument as an `i32` or `u32`, one with a decimal point or exponent
    /// as an `f32`.
    Params,
    /// Zeroed, `bytes` long, read back as part of the task's output.
    Output(u64),
    /// Zeroed, `bytes` long, for the kernel's own use; not read back.
    Scratch(u64),
}

impl GpuBinding {
    /// Whether the kernel must declare it `read_write`.
    pub const fn writable(&self) -> bool {
        matches!(self, GpuBinding::Output(_) | GpuBinding::Scratch(_))
    }
}

/// One dispatch: an entry point over a grid of workgroups.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct GpuDispatch {
    pub entry_point: Bounded<String, GPU_ENTRY_POINT_BYTES_MAX>,
    pub workgroups: [u32; 3],
}

/// A GPU task's module: the kernel, its buffers and the dispatches that
/// run it, in order, over the same buffers. A task's output is its
/// `Output` buffers, concatenated in binding order.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct GpuProgram {
    pub wgsl: Bounded<String, GPU_SOURCE_BYTES_MAX>,
    pub class: GpuClass,
    /// Fuel one invocation may use before the task fails `out_of_fuel`.
    pub fuel_per_invocation: u32,
    pub bindings: Bounded<Vec<GpuBinding>, GPU_BINDINGS_MAX>,
    pub dispatches: Bounded<Vec<GpuDispatch>, GPU_DISPATCHES_MAX>,
}

impl GpuProgram {
    /// The module bytes: the magic, then the canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = GPU_PROGRAM_MAGIC.to_vec();
        bytes.extend(codec::encode(self).expect("programs encode"));
        bytes
    }

    /// The program in module bytes; `None` when they do not start with
    /// [`GPU_PROGRAM_MAGIC`] (a WebAssembly module, say).
    pub fn decode(module: &[u8]) -> Option<Result<Self, codec::DecodeError>> {
        let body = module.strip_prefix(&GPU_PROGRAM_MAGIC)?;
        Some(codec::decode(body, GPU_PROGRAM_BYTES_MAX))
    }

    /// Whether module bytes are a GPU program rather than WebAssembly.
    pub fn is_program(module: &[u8]) -> bool {
        module.starts_with(&GPU_PROGRAM_MAGIC)
    }

    /// Bytes of every buffer the program binds for a task with `stdin`
    /// bytes of stdin and `params` arguments.
    pub fn buffer_bytes(&self, stdin: usize, params: usize) -> u64 {
        self.bindings
            .iter()
            .map(|binding| match binding {
                GpuBinding::Shared(bytes) => bytes.len() as u64,
                GpuBinding::Stdin => stdin as u64,
                GpuBinding::Params => 4 * params as u64,
                GpuBinding::Output(bytes) | GpuBinding::Scratch(bytes) => *bytes,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Bytes of the task's output.
    pub fn output_bytes(&self) -> u64 {
        self.bindings
            .iter()
            .map(|binding| match binding {
                GpuBinding::Output(bytes) => *bytes,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add)
    }
}

/// Why a task argument is not a parameter word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {index} (`{text}`) is not a 32-bit integer or float")]
pub struct BadParam {
    pub index: usize,
    pub text: String,
}

/// A task's arguments as the little-endian words of its `Params` binding:
/// integers (`-3`, `4000000000`, `0x1f`) as `i32`/`u32`, numbers with a
/// decimal point or exponent (`0.5`, `1e-3`) as `f32`.
pub fn param_words(args: &[String]) -> Result<Vec<u8>, BadParam> {
    let mut bytes = Vec::with_capacity(args.len() * 4);
    for (index, text) in args.iter().enumerate() {
        let bad = || BadParam {
            index,
            text: text.clone(),
        };
        let trimmed = text.trim();
        let word = if let Some(hex) = trimmed.strip_prefix("0x") {
            u32::from_str_radix(hex, 16).map_err(|_| bad())?
        } else if trimmed.contains(['.', 'e', 'E']) {
            let value: f32 = trimmed.parse().map_err(|_| bad())?;
            if !value.is_finite() {
                return Err(bad());
            }
            value.to_bits()
        } else if let Some(negative) = trimmed.strip_prefix('-') {
            let magnitude: u32 = negative.parse().map_err(|_| bad())?;
            i32::try_from(-i64::from(magnitude)).map_err(|_| bad())? as u32
        } else {
            trimmed.parse::<u32>().map_err(|_| bad())?
        };
        bytes.extend(word.to_le_bytes());
    }
    Ok(bytes)
}

/// Re-executes each module with what runs its kind: WebAssembly modules
/// with `wasi`, GPU programs with `gpu`.
#[derive(Debug)]
pub struct ByModuleKind<W, G> {
    pub wasi: W,
    pub gpu: G,
}

impl<W: ReExecute, G: ReExecute> ReExecute for ByModuleKind<W, G> {
    fn re_execute(
        &self,
        module: &[u8],
        input: &TaskInput,
        seed: [u8; 32],
        limits: &ExecutionLimits,
    ) -> Result<Execution, String> {
        if GpuProgram::is_program(module) {
            self.gpu.re_execute(module, input, seed, limits)
        } else {
            self.wasi.re_execute(module, input, seed, limits)
        }
    }

    fn run_challenge(&self, seed: [u8; 32], passes: u32) -> Result<crate::ContentId, String> {
        self.wasi.run_challenge(seed, passes)
    }
}

/// What a provider offers to run GPU tasks on: one adapter.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct GpuOffer {
    pub name: Bounded<String, GPU_NAME_BYTES_MAX>,
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel, 0x10005
    /// Mesa's software rasterizer).
    pub vendor: u32,
    pub device: u32,
    pub driver: Bounded<String, GPU_NAME_BYTES_MAX>,
    /// Fuel per second on the reference GPU kernel.
    pub fuel_per_second: u64,
    /// The lowest price it runs GPU tasks for, per million fuel.
    pub price_floor_per_million_fuel: u64,
}

impl GpuOffer {
    /// Whether `other` is the same class of GPU: the same vendor, device
    /// and driver, so `class` tasks give the same bytes on both.
    pub fn same_class(&self, other: &GpuOffer) -> bool {
        (self.vendor, self.device, self.driver.as_str())
            == (other.vendor, other.device, other.driver.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program() -> GpuProgram {
        GpuProgram {
            wgsl: Bounded::new("@compute @workgroup_size(1) fn main() {}".to_owned())
                .expect("short"),
            class: GpuClass::Exact,
            fuel_per_invocation: 1000,
            bindings: Bounded::new(vec![
                GpuBinding::Shared(Bounded::new(vec![1, 2, 3]).expect("short")),
                GpuBinding::Params,
                GpuBinding::Output(64),
            ])
            .expect("three"),
            dispatches: Bounded::new(vec![GpuDispatch {
                entry_point: Bounded::new("main".to_owned()).expect("short"),
                workgroups: [2, 1, 1],
            }])
            .expect("one"),
        }
    }

    #[test]
    fn a_program_round_trips_and_is_told_from_webassembly() {
        let bytes = program().encode();
        assert!(GpuProgram::is_program(&bytes));
        assert_eq!(
            GpuProgram::decode(&bytes)
                .expect("a program")
                .expect("valid"),
            program()
        );
        assert!(GpuProgram::decode(b"\0asm\x01\0\0\0").is_none());
        let mut truncated = bytes.clone();
        truncated.pop();
        assert!(GpuProgram::decode(&truncated).expect("a program").is_err());
        assert_eq!(program().buffer_bytes(10, 2), 3 + 8 + 64);
        assert_eq!(program().output_bytes(), 64);
    }

    #[test]
    fn arguments_become_words_or_a_clear_error() {
        let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
        let words = param_words(&args(&["7", "-2", "0.5", "0x10", "4000000000"])).expect("words");
        let expect: Vec<u8> = [7u32, (-2i32) as u32, 0.5f32.to_bits(), 16, 4_000_000_000]
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect();
        assert_eq!(words, expect);
        for bad in ["x", "5000000000", "-3000000000", "1e40", ""] {
            let error = param_words(&args(&["1", bad])).expect_err(bad);
            assert_eq!(error.index, 1);
        }
    }
}
