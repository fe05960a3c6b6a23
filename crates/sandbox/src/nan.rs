//! Canonical NaNs where a task can see their bits, not after every float
//! operation.
//!
//! CPUs disagree on the NaN an arithmetic operation returns (x86's default
//! NaN is negative, Arm's positive; which input's payload survives
//! differs). A NaN's bits are invisible inside the float domain: arithmetic
//! on a NaN gives a NaN, every comparison with one gives the same answer,
//! and the conversions to integers trap or saturate whatever its payload.
//! They become visible only where they leave it:
//!
//! - stored to memory (`f32.store`, `f64.store`);
//! - reinterpreted as an integer (`i32.reinterpret_f32`,
//!   `i64.reinterpret_f64`);
//! - as the sign source of `copysign` (the only float operation that reads
//!   a NaN's sign bit into a non-NaN result);
//! - moved into a vector (`f32x4.splat`, `f32x4.replace_lane` and their f64
//!   forms), whose lanes integer and bitwise vector operations read as
//!   bits;
//! - the result of a vector float operation, for the same reason: vector
//!   values are untyped, so those results are made canonical at once
//!   (what wasmtime did for every operation before);
//! - handed to the host: only WASI imports link and none takes a float;
//!   the sandbox calls only `_start`, which returns nothing.
//!
//! `abs`, `neg` and the vector `pmin`/`pmax` move bits without making new
//! ones, so they keep a canonical input canonical; loads read what stores
//! (or the module's own data) put there.
//!
//! [`canonicalize_observed`] rewrites a module once, at preparation, so
//! that at each of those points a NaN is replaced by the canonical one
//! (positive, quiet, no payload: `0x7fc00000` and `0x7ff8000000000000`),
//! and the engine runs without per-operation canonicalization. Fuel counts
//! the added instructions, the same on every machine.

use wasm_encoder::reencode::{Reencode, utils};
use wasm_encoder::{Function, Instruction, ValType};
use wasmtime::wasmparser::{self, Operator, Parser, Payload};

/// The canonical NaNs.
pub const F32_CANONICAL_NAN: u32 = 0x7fc0_0000;
pub const F64_CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// What the rewrite does to the NaNs a module makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Canonical wherever they can be observed.
    Observed,
    /// As `Observed`, and every arithmetic result that is a NaN (or vector
    /// lane that is) is first replaced by the given bits: a CPU that makes
    /// different NaNs than this one. A module's behaviour must not change
    /// (tests only).
    ObservedOnAnotherCpu { f32: u32, f64: u64 },
}

/// Rewrites `bytes` so that every NaN a task can observe is canonical.
pub fn canonicalize_observed(bytes: &[u8]) -> Result<Vec<u8>, String> {
    rewrite(bytes, Rewrite::Observed)
}

pub fn rewrite(bytes: &[u8], mode: Rewrite) -> Result<Vec<u8>, String> {
    let params = defined_function_params(bytes)?;
    let mut rewriter = Rewriter {
        mode,
        params,
        next: 0,
    };
    let mut module = wasm_encoder::Module::new();
    rewriter
        .parse_core_module(&mut module, Parser::new(0), bytes)
        .map_err(|error| format!("the module could not be rewritten: {error}"))?;
    Ok(module.finish())
}

/// How many parameters each function the module defines takes, in order.
fn defined_function_params(bytes: &[u8]) -> Result<Vec<u32>, String> {
    let malformed = |error: wasmparser::BinaryReaderError| error.to_string();
    let mut types = Vec::new();
    let mut params = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(malformed)?.into_types() {
                        types.push(match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(func) => {
                                u32::try_from(func.params().len()).unwrap_or(u32::MAX)
                            }
                            _ => 0,
                        });
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for index in reader {
                    let index = index.map_err(malformed)? as usize;
                    let count = types.get(index).ok_or_else(|| {
                        format!("a function names type {index}, which is missing")
                    })?;
                    params.push(*count);
                }
            }
            _ => {}
        }
    }
    Ok(params)
}

struct Rewriter {
    mode: Rewrite,
    params: Vec<u32>,
    /// The next defined function's place in `params`.
    next: usize,
}

/// The scratch locals added to each function.
struct Scratch {
    f32: u32,
    f64: u32,
    v128: u32,
}

/// What to do around one instruction.
enum Around {
    Nothing,
    /// Make the f32 (f64) on top of the stack canonical first.
    CanonicalF32First,
    CanonicalF64First,
    /// Make the vector result canonical after, as f32 (f64) lanes.
    CanonicalF32x4After,
    CanonicalF64x2After,
    /// A scalar arithmetic result (replaced when imitating another CPU).
    ArithmeticF32,
    ArithmeticF64,
}

fn around(operator: &Operator<'_>) -> Around {
    use Operator as O;
    match operator {
        O::F32Store { .. }
        | O::I32ReinterpretF32
        | O::F32Copysign
        | O::F32x4Splat
        | O::F32x4ReplaceLane { .. } => Around::CanonicalF32First,
        O::F64Store { .. }
        | O::I64ReinterpretF64
        | O::F64Copysign
        | O::F64x2Splat
        | O::F64x2ReplaceLane { .. } => Around::CanonicalF64First,
        O::F32x4Add
        | O::F32x4Sub
        | O::F32x4Mul
        | O::F32x4Div
        | O::F32x4Min
        | O::F32x4Max
        | O::F32x4Sqrt
        | O::F32x4Ceil
        | O::F32x4Floor
        | O::F32x4Trunc
        | O::F32x4Nearest
        | O::F32x4DemoteF64x2Zero => Around::CanonicalF32x4After,
        O::F64x2Add
        | O::F64x2Sub
        | O::F64x2Mul
        | O::F64x2Div
        | O::F64x2Min
        | O::F64x2Max
        | O::F64x2Sqrt
        | O::F64x2Ceil
        | O::F64x2Floor
        | O::F64x2Trunc
        | O::F64x2Nearest
        | O::F64x2PromoteLowF32x4 => Around::CanonicalF64x2After,
        O::F32Add
        | O::F32Sub
        | O::F32Mul
        | O::F32Div
        | O::F32Min
        | O::F32Max
        | O::F32Sqrt
        | O::F32Ceil
        | O::F32Floor
        | O::F32Trunc
        | O::F32Nearest
        | O::F32DemoteF64 => Around::ArithmeticF32,
        O::F64Add
        | O::F64Sub
        | O::F64Mul
        | O::F64Div
        | O::F64Min
        | O::F64Max
        | O::F64Sqrt
        | O::F64Ceil
        | O::F64Floor
        | O::F64Trunc
        | O::F64Nearest
        | O::F64PromoteF32 => Around::ArithmeticF64,
        _ => Around::Nothing,
    }
}

/// Replaces the f32 on top of the stack by `bits` if it is a NaN.
fn replace_f32_nan(function: &mut Function, scratch: u32, bits: u32) {
    function
        .instruction(&Instruction::LocalTee(scratch))
        .instruction(&Instruction::F32Const(f32::from_bits(bits).into()))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::F32Eq)
        .instruction(&Instruction::Select);
}

fn replace_f64_nan(function: &mut Function, scratch: u32, bits: u64) {
    function
        .instruction(&Instruction::LocalTee(scratch))
        .instruction(&Instruction::F64Const(f64::from_bits(bits).into()))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::F64Eq)
        .instruction(&Instruction::Select);
}

/// Replaces every NaN lane of the vector on top of the stack by `bits`,
/// its lanes f64 or f32.
fn replace_lane_nans(function: &mut Function, scratch: u32, f64_lanes: bool, bits: u64) {
    let (lanes, equal) = if f64_lanes {
        let lane = u128::from(bits);
        (lane | lane << 64, Instruction::F64x2Eq)
    } else {
        let lane = u128::from(bits as u32);
        (
            lane | lane << 32 | lane << 64 | lane << 96,
            Instruction::F32x4Eq,
        )
    };
    function
        .instruction(&Instruction::LocalTee(scratch))
        .instruction(&Instruction::V128Const(lanes as i128))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&equal)
        .instruction(&Instruction::V128Bitselect);
}

impl Reencode for Rewriter {
    type Error = String;

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        body: wasmparser::FunctionBody<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        let params = self.params.get(self.next).copied().ok_or_else(|| {
            wasm_encoder::reencode::Error::UserError(
                "more function bodies than functions".to_owned(),
            )
        })?;
        self.next += 1;
        let mut locals = Vec::new();
        let mut count = params;
        for pair in body.get_locals_reader()? {
            let (n, kind) = pair?;
            count = count.saturating_add(n);
            locals.push((n, self.val_type(kind)?));
        }
        let scratch = Scratch {
            f32: count,
            f64: count.saturating_add(1),
            v128: count.saturating_add(2),
        };
        locals.extend([(1, ValType::F32), (1, ValType::F64), (1, ValType::V128)]);
        let mut function = Function::new(locals);
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            let operator = reader.read()?;
            let around = around(&operator);
            match around {
                Around::CanonicalF32First => {
                    replace_f32_nan(&mut function, scratch.f32, F32_CANONICAL_NAN);
                }
                Around::CanonicalF64First => {
                    replace_f64_nan(&mut function, scratch.f64, F64_CANONICAL_NAN);
                }
                _ => {}
            }
            function.instruction(&utils::instruction(self, operator)?);
            let elsewhere = match self.mode {
                Rewrite::ObservedOnAnotherCpu { f32, f64 } => Some((f32, f64)),
                Rewrite::Observed => None,
            };
            match (around, self.mode) {
                (Around::CanonicalF32x4After, _) => {
                    if let Some((f32, _)) = elsewhere {
                        replace_lane_nans(&mut function, scratch.v128, false, f32.into());
                    }
                    let canonical = F32_CANONICAL_NAN.into();
                    replace_lane_nans(&mut function, scratch.v128, false, canonical);
                }
                (Around::CanonicalF64x2After, _) => {
                    if let Some((_, f64)) = elsewhere {
                        replace_lane_nans(&mut function, scratch.v128, true, f64);
                    }
                    replace_lane_nans(&mut function, scratch.v128, true, F64_CANONICAL_NAN);
                }
                (Around::ArithmeticF32, Rewrite::ObservedOnAnotherCpu { f32, .. }) => {
                    replace_f32_nan(&mut function, scratch.f32, f32);
                }
                (Around::ArithmeticF64, Rewrite::ObservedOnAnotherCpu { f64, .. }) => {
                    replace_f64_nan(&mut function, scratch.f64, f64);
                }
                _ => {}
            }
        }
        code.function(&function);
        Ok(())
    }
}

/// A CPU whose NaNs are negative and carry a payload, unlike any the
/// canonical rule gives: what [`same_on_another_cpu`] compares against.
pub const ANOTHER_CPU: Rewrite = Rewrite::ObservedOnAnotherCpu {
    f32: 0xffe5_a5a5,
    f64: 0xfffd_a5a5_a5a5_a5a5,
};

/// Fuel for each run of [`same_on_another_cpu`].
const CHECK_FUEL: u64 = 200_000;

/// What [`same_on_another_cpu`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything observable was the same.
    Same,
    /// One of the runs ran out of fuel (the two rewrites add different
    /// instructions, so they stop at different places): nothing to compare.
    RanOutOfFuel,
    /// The original does not compile in the sandbox's profile.
    Unusable(String),
    /// A bug: the rewrite failed on a valid module, made it invalid, or
    /// let a NaN's bits through.
    Broken(String),
}

/// Rewrites a module for this CPU and for [`ANOTHER_CPU`], runs each
/// (instantiation, then every exported function once with zero
/// arguments), and compares what the host sees: results, traps, every
/// exported memory and global. Float results and globals count only as
/// "NaN" or their bits: the sandbox never hands either to anyone, so only
/// a leak into memory or integers is a difference. For tests and fuzzing.
pub fn same_on_another_cpu(original: &[u8]) -> Verdict {
    let mut config = wasmtime::Config::new();
    config
        .cranelift_nan_canonicalization(false)
        .wasm_relaxed_simd(false)
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .consume_fuel(true);
    let engine = match wasmtime::Engine::new(&config) {
        Ok(engine) => engine,
        Err(error) => return Verdict::Broken(format!("no engine: {error}")),
    };
    if let Err(error) = wasmtime::Module::validate(&engine, original) {
        return Verdict::Unusable(format!("{error:#}"));
    }
    let mut seen = Vec::new();
    for mode in [Rewrite::Observed, ANOTHER_CPU] {
        let rewritten = match rewrite(original, mode) {
            Ok(rewritten) => rewritten,
            Err(error) => return Verdict::Broken(error),
        };
        match observe(&engine, &rewritten) {
            Ok(Some(observed)) => seen.push(observed),
            Ok(None) => return Verdict::RanOutOfFuel,
            Err(error) => return Verdict::Broken(error),
        }
    }
    if seen[0] == seen[1] {
        Verdict::Same
    } else {
        Verdict::Broken(format!(
            "the module behaves differently on another CPU:\n{:?}\n{:?}",
            seen[0], seen[1]
        ))
    }
}

/// What the host saw of one run, in order; none if the fuel ran out.
fn observe(engine: &wasmtime::Engine, bytes: &[u8]) -> Result<Option<Vec<String>>, String> {
    use wasmtime::{Extern, Instance, Module, Store, Trap, Val};
    let module = Module::new(engine, bytes).map_err(|error| format!("invalid after: {error:#}"))?;
    let mut store = Store::new(engine, ());
    store
        .set_fuel(CHECK_FUEL)
        .map_err(|error| error.to_string())?;
    let trap_of = |error: &wasmtime::Error| error.downcast_ref::<Trap>().copied();
    let shown = |value: &Val| match value {
        Val::F32(bits) if f32::from_bits(*bits).is_nan() => "f32 NaN".to_owned(),
        Val::F64(bits) if f64::from_bits(*bits).is_nan() => "f64 NaN".to_owned(),
        Val::F32(bits) => format!("f32 {bits:#x}"),
        Val::F64(bits) => format!("f64 {bits:#x}"),
        Val::I32(value) => format!("i32 {value}"),
        Val::I64(value) => format!("i64 {value}"),
        Val::V128(value) => format!("v128 {:#x}", value.as_u128()),
        _ => "a reference".to_owned(),
    };
    let instance = match Instance::new(&mut store, &module, &[]) {
        Ok(instance) => instance,
        Err(error) if trap_of(&error) == Some(Trap::OutOfFuel) => return Ok(None),
        Err(error) => {
            return Ok(Some(vec![format!(
                "not instantiated: {:?}",
                trap_of(&error)
            )]));
        }
    };
    let mut seen = Vec::new();
    let exports: Vec<(String, Extern)> = instance
        .exports(&mut store)
        .map(|export| (export.name().to_owned(), export.into_extern()))
        .collect();
    for (name, export) in &exports {
        let Extern::Func(func) = export else { continue };
        let ty = func.ty(&store);
        let Some(params) = ty
            .params()
            .map(|param| Val::default_for_ty(&param))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let mut results: Vec<Val> = ty
            .results()
            .map(|result| Val::default_for_ty(&result).unwrap_or(Val::I32(0)))
            .collect();
        match func.call(&mut store, &params, &mut results) {
            Ok(()) => {
                let shown: Vec<String> = results.iter().map(shown).collect();
                seen.push(format!("{name} returned {shown:?}"));
            }
            Err(error) if trap_of(&error) == Some(Trap::OutOfFuel) => return Ok(None),
            Err(error) => seen.push(format!("{name} trapped: {:?}", trap_of(&error))),
        }
    }
    for (name, export) in &exports {
        match export {
            Extern::Memory(memory) => {
                let hash = blake3::hash(memory.data(&store));
                seen.push(format!("memory {name}: {hash}"));
            }
            Extern::Global(global) => {
                let value = global.get(&mut store);
                seen.push(format!("global {name}: {}", shown(&value)));
            }
            _ => {}
        }
    }
    Ok(Some(seen))
}
