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

/// The rewrite a provider's sandbox gives a module when it prepares it:
/// NaNs canonical where observed, fuel and the wall clock metered in it.
pub fn provider_rewrite(bytes: &[u8]) -> Result<Vec<u8>, String> {
    prepare(bytes, Some(Rewrite::Observed), true)
}

pub fn rewrite(bytes: &[u8], mode: Rewrite) -> Result<Vec<u8>, String> {
    prepare(bytes, Some(mode), false)
}

/// The one rewrite a module gets when it is prepared: NaNs made canonical
/// where observed (with `nans`), and fuel and the wall-clock backstop
/// written in (with `meter`, see `crate::meter`).
pub(crate) fn prepare(bytes: &[u8], nans: Option<Rewrite>, meter: bool) -> Result<Vec<u8>, String> {
    let (stripped, start) = if meter {
        crate::meter::strip_start(bytes)?
    } else {
        (bytes.to_vec(), None)
    };
    let shape = Shape::of(&stripped)?;
    let layout = if meter {
        for name in [
            crate::meter::FUEL_EXPORT,
            crate::meter::STOPPED_EXPORT,
            crate::meter::INTERRUPT_EXPORT,
            crate::meter::START_EXPORT,
        ] {
            if shape.exports.iter().any(|export| export == name) {
                return Err(format!(
                    "the module exports `{name}`, a name the sandbox keeps"
                ));
            }
        }
        Some(crate::meter::Layout {
            fuel_global: shape.globals,
            stopped_global: shape.globals + 1,
            interrupt_memory: shape.memories,
            start,
        })
    } else {
        None
    };
    let mut rewriter = Rewriter {
        nans,
        layout,
        added: Added::default(),
        has: shape.has,
        params: shape.params,
        next: 0,
    };
    let mut module = wasm_encoder::Module::new();
    rewriter
        .parse_core_module(&mut module, Parser::new(0), &stripped)
        .map_err(|error| format!("the module could not be rewritten: {error}"))?;
    Ok(module.finish())
}

/// What the rewrite needs to know of a module before it starts.
#[derive(Default)]
struct Shape {
    /// How many parameters each function the module defines takes, in order.
    params: Vec<u32>,
    /// Globals and memories, imported and defined.
    globals: u32,
    memories: u32,
    exports: Vec<String>,
    has: Added,
}

impl Shape {
    fn of(bytes: &[u8]) -> Result<Self, String> {
        let malformed = |error: wasmparser::BinaryReaderError| error.to_string();
        let mut shape = Self::default();
        let mut types = Vec::new();
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
                Payload::ImportSection(reader) => {
                    for imports in reader {
                        for import in imports.map_err(malformed)? {
                            match import.map_err(malformed)?.1.ty {
                                wasmparser::TypeRef::Global(_) => shape.globals += 1,
                                wasmparser::TypeRef::Memory(_) => shape.memories += 1,
                                _ => {}
                            }
                        }
                    }
                }
                Payload::FunctionSection(reader) => {
                    for index in reader {
                        let index = index.map_err(malformed)? as usize;
                        let count = types.get(index).ok_or_else(|| {
                            format!("a function names type {index}, which is missing")
                        })?;
                        shape.params.push(*count);
                    }
                }
                Payload::MemorySection(reader) => {
                    shape.has.memory = true;
                    shape.memories += reader.count();
                }
                Payload::GlobalSection(reader) => {
                    shape.has.global = true;
                    shape.globals += reader.count();
                }
                Payload::ExportSection(reader) => {
                    shape.has.export = true;
                    for export in reader {
                        shape
                            .exports
                            .push(export.map_err(malformed)?.name.to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(shape)
    }
}

/// Sections (or, in `Shape`, sections present in the original).
#[derive(Debug, Default, Clone, Copy)]
struct Added {
    memory: bool,
    global: bool,
    export: bool,
}

struct Rewriter {
    /// How NaNs are rewritten; none leaves them as they are.
    nans: Option<Rewrite>,
    /// Where the metering's additions go; none for no metering.
    layout: Option<crate::meter::Layout>,
    /// The metering's sections added so far.
    added: Added,
    /// The sections the original has.
    has: Added,
    params: Vec<u32>,
    /// The next defined function's place in `params`.
    next: usize,
}

impl Rewriter {
    fn add_memory(&mut self, memories: &mut wasm_encoder::MemorySection) {
        if self.layout.is_some() && !self.added.memory {
            self.added.memory = true;
            memories.memory(wasm_encoder::MemoryType {
                minimum: 1,
                maximum: Some(1),
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
    }

    /// The fuel left and whether a check stopped the task.
    fn add_global(&mut self, globals: &mut wasm_encoder::GlobalSection) {
        if self.layout.is_some() && !self.added.global {
            self.added.global = true;
            let mutable = |val_type| wasm_encoder::GlobalType {
                val_type,
                mutable: true,
                shared: false,
            };
            globals.global(
                mutable(ValType::I64),
                &wasm_encoder::ConstExpr::i64_const(0),
            );
            globals.global(
                mutable(ValType::I32),
                &wasm_encoder::ConstExpr::i32_const(0),
            );
        }
    }

    fn add_exports(&mut self, exports: &mut wasm_encoder::ExportSection) {
        let Some(layout) = self.layout else { return };
        if self.added.export {
            return;
        }
        self.added.export = true;
        use wasm_encoder::ExportKind;
        exports.export(
            crate::meter::FUEL_EXPORT,
            ExportKind::Global,
            layout.fuel_global,
        );
        exports.export(
            crate::meter::STOPPED_EXPORT,
            ExportKind::Global,
            layout.stopped_global,
        );
        exports.export(
            crate::meter::INTERRUPT_EXPORT,
            ExportKind::Memory,
            layout.interrupt_memory,
        );
        if let Some(start) = layout.start {
            exports.export(crate::meter::START_EXPORT, ExportKind::Func, start);
        }
    }
}

/// A section's place in a module's order.
fn rank(section: wasm_encoder::SectionId) -> u8 {
    use wasm_encoder::SectionId as S;
    match section {
        S::Custom => 0,
        S::Type => 1,
        S::Import => 2,
        S::Function => 3,
        S::Table => 4,
        S::Memory => 5,
        S::Tag => 6,
        S::Global => 7,
        S::Export => 8,
        S::Start => 9,
        S::Element => 10,
        S::DataCount => 11,
        S::Code => 12,
        S::Data => 13,
    }
}

/// The scratch locals added to each function.
struct Scratch {
    f32: u32,
    f64: u32,
    v128: u32,
    /// A store's address; the metering's length of a bulk operator.
    address: u32,
}

/// What to do around one instruction.
#[derive(Clone, Copy)]
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

/// Replaces the f32 on top of the stack by its bits, canonical if it is a
/// NaN (as `i32.reinterpret_f32` would give them).
fn canonical_f32_bits(function: &mut Function, scratch: u32) {
    function
        .instruction(&Instruction::LocalTee(scratch))
        .instruction(&Instruction::I32ReinterpretF32)
        .instruction(&Instruction::I32Const(F32_CANONICAL_NAN as i32))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::F32Ge)
        .instruction(&Instruction::Select);
}

fn canonical_f64_bits(function: &mut Function, scratch: u32) {
    function
        .instruction(&Instruction::LocalTee(scratch))
        .instruction(&Instruction::I64ReinterpretF64)
        .instruction(&Instruction::I64Const(F64_CANONICAL_NAN as i64))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::LocalGet(scratch))
        .instruction(&Instruction::F64Ge)
        .instruction(&Instruction::Select);
}

/// Stores the float on top of the stack as it is, then, if it was a NaN,
/// stores the canonical NaN over it. Nothing runs between the two stores,
/// so the first is never seen; and the stored value waits on no check (a
/// select would put the check into every loop that carries a float
/// through memory).
///
/// The test is on the value's bits as an integer: a NaN is a float whose
/// bits, shifted left by one (dropping the sign), are above those of
/// infinity. A float compare would do, but its result reaches the branch
/// later: the branch cannot resolve before the stored value exists, and
/// in a loop whose stores wait on a division each waiting check holds a
/// place in the CPU's window, so the shorter one lets more of the loop run
/// ahead (nbody 9% faster than with `x >= x`, `docs/writing-modules.md`).
fn store_then_fix(
    function: &mut Function,
    scratch: &Scratch,
    memarg: wasm_encoder::MemArg,
    f64: bool,
) {
    use Instruction as I;
    // The value's local, the store, the canonical NaN, and the test that
    // it is not a NaN: its bits without the sign at most infinity's.
    let (value, store, canonical, not_nan) = if f64 {
        (
            scratch.f64,
            I::F64Store(memarg),
            I::F64Const(f64::from_bits(F64_CANONICAL_NAN).into()),
            [
                I::I64ReinterpretF64,
                I::I64Const(1),
                I::I64Shl,
                I::I64Const((F64_INFINITY << 1) as i64),
                I::I64LeU,
            ],
        )
    } else {
        (
            scratch.f32,
            I::F32Store(memarg),
            I::F32Const(f32::from_bits(F32_CANONICAL_NAN).into()),
            [
                I::I32ReinterpretF32,
                I::I32Const(1),
                I::I32Shl,
                I::I32Const((F32_INFINITY << 1) as i32),
                I::I32LeU,
            ],
        )
    };
    function
        .instruction(&I::LocalSet(value))
        .instruction(&I::LocalTee(scratch.address))
        .instruction(&I::LocalGet(value))
        .instruction(&store)
        .instruction(&I::Block(wasm_encoder::BlockType::Empty))
        .instruction(&I::LocalGet(value));
    for instruction in &not_nan {
        function.instruction(instruction);
    }
    function
        .instruction(&I::BrIf(0))
        .instruction(&I::LocalGet(scratch.address))
        .instruction(&canonical)
        .instruction(&store)
        .instruction(&I::End);
}

/// The bits of positive infinity: every NaN's bits without the sign are
/// above them.
const F32_INFINITY: u32 = 0x7f80_0000;
const F64_INFINITY: u64 = 0x7ff0_0000_0000_0000;

/// Whether `operator` leaves a float whose bits are the same on every CPU.
fn makes_exact_bits(operator: &Operator<'_>) -> bool {
    use Operator as O;
    matches!(
        operator,
        O::F32Load { .. }
            | O::F64Load { .. }
            | O::F32Const { .. }
            | O::F64Const { .. }
            | O::F32ConvertI32S
            | O::F32ConvertI32U
            | O::F32ConvertI64S
            | O::F32ConvertI64U
            | O::F64ConvertI32S
            | O::F64ConvertI32U
            | O::F64ConvertI64S
            | O::F64ConvertI64U
            | O::F32ReinterpretI32
            | O::F64ReinterpretI64
    )
}

/// The metering's part after an operator the NaN rewrite replaced.
fn continue_after(
    metering: &mut Option<crate::meter::Metering>,
    function: &mut Function,
    operator: &Operator<'_>,
) {
    if let Some(metering) = metering {
        metering.after(function, operator);
    }
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

    fn parse_memory_section(
        &mut self,
        memories: &mut wasm_encoder::MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        utils::parse_memory_section(self, memories, section)?;
        self.add_memory(memories);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        utils::parse_global_section(self, globals, section)?;
        self.add_global(globals);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        utils::parse_export_section(self, exports, section)?;
        self.add_exports(exports);
        Ok(())
    }

    /// Adds the metering's sections where the original has none.
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<wasm_encoder::SectionId>,
        before: Option<wasm_encoder::SectionId>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        if self.layout.is_none() {
            return Ok(());
        }
        use wasm_encoder::SectionId as S;
        let next = before.map_or(u8::MAX, rank);
        if !self.has.memory && !self.added.memory && next > rank(S::Memory) {
            let mut memories = wasm_encoder::MemorySection::new();
            self.add_memory(&mut memories);
            module.section(&memories);
        }
        if !self.has.global && !self.added.global && next > rank(S::Global) {
            let mut globals = wasm_encoder::GlobalSection::new();
            self.add_global(&mut globals);
            module.section(&globals);
        }
        if !self.has.export && !self.added.export && next > rank(S::Export) {
            let mut exports = wasm_encoder::ExportSection::new();
            self.add_exports(&mut exports);
            module.section(&exports);
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        body: wasmparser::FunctionBody<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        use wasm_encoder::reencode::Error as E;
        let params = self
            .params
            .get(self.next)
            .copied()
            .ok_or_else(|| E::UserError("more function bodies than functions".to_owned()))?;
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
            address: count.saturating_add(3),
        };
        locals.extend([
            (1, ValType::F32),
            (1, ValType::F64),
            (1, ValType::V128),
            (1, ValType::I32),
        ]);
        // Read once: the metering looks at the whole body first (its
        // calls, its counted loops), then each operator is rewritten.
        let mut operators = Vec::new();
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            operators.push(reader.read()?);
        }
        let mut metering = self.layout.map(|layout| {
            locals.push((1, ValType::I64));
            let fuel = count.saturating_add(4);
            crate::meter::Metering::new(layout, fuel, scratch.address, &operators, params)
        });
        let mut function = Function::new(locals);
        if let Some(metering) = &mut metering {
            metering.enter(&mut function);
        }
        let mut exact_on_top = false;
        for operator in &operators {
            if let Some(metering) = &mut metering {
                metering
                    .before(&mut function, operator)
                    .map_err(E::UserError)?;
            }
            let around = match self.nans {
                // A float whose bits were loaded, written as a constant,
                // converted from an integer or reinterpreted from one is
                // the same on every CPU: nothing to make canonical.
                Some(_) if !exact_on_top => around(operator),
                _ => Around::Nothing,
            };
            exact_on_top = makes_exact_bits(operator);
            match (around, operator) {
                // As integers: a select of integers is a conditional move,
                // of floats a branch.
                (Around::CanonicalF32First, Operator::F32Store { memarg }) => {
                    let memarg = self.mem_arg(*memarg)?;
                    store_then_fix(&mut function, &scratch, memarg, false);
                    continue_after(&mut metering, &mut function, operator);
                    continue;
                }
                (Around::CanonicalF64First, Operator::F64Store { memarg }) => {
                    let memarg = self.mem_arg(*memarg)?;
                    store_then_fix(&mut function, &scratch, memarg, true);
                    continue_after(&mut metering, &mut function, operator);
                    continue;
                }
                (Around::CanonicalF32First, Operator::I32ReinterpretF32) => {
                    canonical_f32_bits(&mut function, scratch.f32);
                    continue_after(&mut metering, &mut function, operator);
                    continue;
                }
                (Around::CanonicalF64First, Operator::I64ReinterpretF64) => {
                    canonical_f64_bits(&mut function, scratch.f64);
                    continue_after(&mut metering, &mut function, operator);
                    continue;
                }
                (Around::CanonicalF32First, _) => {
                    replace_f32_nan(&mut function, scratch.f32, F32_CANONICAL_NAN);
                }
                (Around::CanonicalF64First, _) => {
                    replace_f64_nan(&mut function, scratch.f64, F64_CANONICAL_NAN);
                }
                _ => {}
            }
            function.instruction(&utils::instruction(self, operator.clone())?);
            let elsewhere = match self.nans {
                Some(Rewrite::ObservedOnAnotherCpu { f32, f64 }) => Some((f32, f64)),
                _ => None,
            };
            match (around, elsewhere) {
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
                (Around::ArithmeticF32, Some((f32, _))) => {
                    replace_f32_nan(&mut function, scratch.f32, f32);
                }
                (Around::ArithmeticF64, Some((_, f64))) => {
                    replace_f64_nan(&mut function, scratch.f64, f64);
                }
                _ => {}
            }
            if let Some(metering) = &mut metering {
                metering.after(&mut function, operator);
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
pub(crate) const CHECK_FUEL: u64 = 200_000;

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
        match observe(
            &engine,
            &rewritten,
            Fuel::Wasmtime {
                seen: false,
                extra: 0,
            },
        ) {
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

/// How a run of [`observe`] meters fuel, and whether what it saw includes
/// the fuel left after each call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fuel {
    /// wasmtime's metering, with `extra` fuel beyond the check's budget;
    /// the start function runs in instantiation.
    Wasmtime { seen: bool, extra: u64 },
    /// Metered in the module (`crate::meter`); the host calls its start.
    Module,
}

/// What the host saw of one run, in order; none if the fuel ran out.
pub(crate) fn observe(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    fuel: Fuel,
) -> Result<Option<Vec<String>>, String> {
    use wasmtime::{Extern, Instance, Module, Store, Trap, Val};
    let module = Module::new(engine, bytes).map_err(|error| format!("invalid after: {error:#}"))?;
    let mut store = Store::new(engine, ());
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
    if let Fuel::Wasmtime { extra, .. } = fuel {
        store
            .set_fuel(CHECK_FUEL + extra)
            .map_err(|error| error.to_string())?;
    }
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
    let metered = match fuel {
        Fuel::Module => {
            let global = |store: &mut Store<()>, name| {
                instance
                    .get_global(&mut *store, name)
                    .ok_or_else(|| format!("the metered module has no `{name}`"))
            };
            let left = global(&mut store, crate::meter::FUEL_EXPORT)?;
            let stopped = global(&mut store, crate::meter::STOPPED_EXPORT)?;
            left.set(&mut store, Val::I64(CHECK_FUEL as i64))
                .map_err(|error| error.to_string())?;
            Some((left, stopped))
        }
        Fuel::Wasmtime { .. } => None,
    };
    // A trap at a check of the module's metering is its out-of-fuel.
    let out_of_fuel = |store: &mut Store<()>, error: &wasmtime::Error| match &metered {
        Some((_, stopped)) => stopped.get(&mut *store).i32() == Some(1),
        None => trap_of(error) == Some(Trap::OutOfFuel),
    };
    if metered.is_some()
        && let Some(start) = instance.get_func(&mut store, crate::meter::START_EXPORT)
        && let Err(error) = start.call(&mut store, &[], &mut [])
    {
        if out_of_fuel(&mut store, &error) {
            return Ok(None);
        }
        return Ok(Some(vec![format!(
            "not instantiated: {:?}",
            trap_of(&error)
        )]));
    }
    let fuel_left = |store: &mut Store<()>| match &metered {
        Some((left, _)) => left.get(&mut *store).i64().unwrap_or(i64::MIN),
        None => store.get_fuel().map_or(i64::MIN, |left| left as i64),
    };
    let fuel_seen = !matches!(fuel, Fuel::Wasmtime { seen: false, .. });
    let mut seen = Vec::new();
    let exports: Vec<(String, Extern)> = instance
        .exports(&mut store)
        .filter(|export| !export.name().starts_with("idlegrid:"))
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
                if fuel_seen {
                    seen.push(format!("fuel left {}", fuel_left(&mut store)));
                }
            }
            Err(error) if out_of_fuel(&mut store, &error) => return Ok(None),
            Err(error) => {
                seen.push(format!("{name} trapped: {:?}", trap_of(&error)));
                // Comparing meterings, a trap ends the run, as it ends a
                // task: wasmtime's own count after a trap is only near the
                // operators run. Where the stack overflows depends on how
                // large each metering makes a function's frame, and so does
                // what the run wrote before.
                if fuel_seen {
                    if trap_of(&error) == Some(Trap::StackOverflow) {
                        return Ok(Some(seen));
                    }
                    break;
                }
            }
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
