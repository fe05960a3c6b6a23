//! A WGSL compute kernel checked and compiled for bit-exact execution:
//! parsed and validated by naga, held to the exact class, its bindings
//! read, and written as SPIR-V whose every float operation is decorated
//! `NoContraction`.

use naga::back::spv;
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{
    AddressSpace, BinaryOperator, Expression, MathFunction, Module, ScalarKind, ShaderStage,
    StorageAccess, TypeInner,
};

use crate::GpuError;

/// Most storage buffers a kernel binds (the meter takes one more).
pub const BINDINGS_MAX: usize = 7;

/// How far a task's results must agree across machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The same bytes on every GPU and on the CPU: only operations that are
    /// exact across implementations, compiled so no driver fuses or
    /// reorders float arithmetic.
    Exact,
    /// The same bytes only on the same vendor, device and driver: any
    /// operation naga validates, still metered and compiled strict, with no
    /// exactness check and no canonical floats. The CPU path does not run
    /// these kernels.
    SameDevice,
}

/// One storage buffer of the kernel, `@group(0) @binding(n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding {
    pub binding: u32,
    /// `read_write`: an output, read back after the run. Otherwise an input.
    pub writable: bool,
}

/// A kernel ready to run.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub entry_point: String,
    pub workgroup_size: [u32; 3],
    /// The kernel's own buffers, by binding number.
    pub bindings: Vec<Binding>,
    /// The meter's buffer, after the kernel's own (see [`crate::meter`]).
    pub meter_binding: u32,
    /// Fuel each invocation may use.
    pub fuel_per_invocation: u32,
    /// The strict, metered SPIR-V.
    pub spirv: Vec<u32>,
    /// The module the SPIR-V was written from (metered, for the exact
    /// class), for running the kernel without a GPU.
    pub(crate) ir: std::sync::Arc<Ir>,
}

/// A kernel's naga module as compiled, with its validation info and its
/// entry point's index.
#[derive(Debug)]
pub(crate) struct Ir {
    pub(crate) module: Module,
    pub(crate) info: ModuleInfo,
    pub(crate) entry_index: usize,
}

impl Kernel {
    /// Checks `wgsl`'s compute entry point `entry_point` against `class` and
    /// compiles it metered, each invocation allowed `fuel_per_invocation`.
    pub fn compile(
        wgsl: &str,
        entry_point: &str,
        class: Class,
        fuel_per_invocation: u32,
    ) -> Result<Self, GpuError> {
        let Parsed {
            mut module,
            info,
            index,
            workgroup_size,
            bindings,
        } = parse(wgsl, entry_point)?;
        if class == Class::Exact {
            exact(&module, &info, index)?;
            crate::canonical::canonicalize(&mut module, &info)?;
        }
        let meter_binding = bindings.last().map_or(0, |binding| binding.binding + 1);
        crate::meter::instrument(&mut module, index, meter_binding, fuel_per_invocation);
        let info = validate(&module).map_err(|error| {
            GpuError::Invalid(format!("the metered kernel does not validate: {error:?}"))
        })?;
        let spirv = no_contraction(&spirv(&module, &info, entry_point)?)?;
        Ok(Self {
            entry_point: entry_point.to_owned(),
            workgroup_size,
            bindings,
            meter_binding,
            fuel_per_invocation,
            spirv,
            ir: std::sync::Arc::new(Ir {
                module,
                info,
                entry_index: index,
            }),
        })
    }

    /// The same kernel as plain wgpu would run it: no exactness check, no
    /// meter, no `NoContraction` (accesses still bounds-checked). Only for
    /// measuring what strictness costs: its results may differ between
    /// devices, and it reports no fuel.
    pub fn compile_plain(wgsl: &str, entry_point: &str) -> Result<Self, GpuError> {
        let Parsed {
            module,
            info,
            index,
            workgroup_size,
            bindings,
        } = parse(wgsl, entry_point)?;
        let spirv = spirv(&module, &info, entry_point)?;
        Ok(Self {
            entry_point: entry_point.to_owned(),
            workgroup_size,
            meter_binding: bindings.last().map_or(0, |binding| binding.binding + 1),
            bindings,
            fuel_per_invocation: 0,
            spirv,
            ir: std::sync::Arc::new(Ir {
                module,
                info,
                entry_index: index,
            }),
        })
    }

    /// The bindings that are inputs, in binding order.
    pub fn inputs(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(|binding| !binding.writable)
    }

    /// The bindings that are outputs, in binding order.
    pub fn outputs(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(|binding| binding.writable)
    }
}

/// A parsed, validated kernel and what compiling it needs.
struct Parsed {
    module: Module,
    info: ModuleInfo,
    /// The entry point's index.
    index: usize,
    workgroup_size: [u32; 3],
    bindings: Vec<Binding>,
}

fn validate(
    module: &Module,
) -> Result<ModuleInfo, Box<naga::WithSpan<naga::valid::ValidationError>>> {
    Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(module)
        .map_err(Box::new)
}

fn parse(wgsl: &str, entry_point: &str) -> Result<Parsed, GpuError> {
    let module = naga::front::wgsl::parse_str(wgsl)
        .map_err(|error| GpuError::Invalid(error.emit_to_string(wgsl)))?;
    let info = validate(&module).map_err(|error| GpuError::Invalid(error.emit_to_string(wgsl)))?;
    let (index, entry) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, entry)| entry.name == entry_point && entry.stage == ShaderStage::Compute)
        .ok_or_else(|| {
            GpuError::Invalid(format!("no compute entry point named `{entry_point}`"))
        })?;
    let workgroup_size = entry.workgroup_size;
    let bindings = bindings(&module)?;
    Ok(Parsed {
        module,
        info,
        index,
        workgroup_size,
        bindings,
    })
}

/// The kernel's storage buffers; anything else it binds (uniforms,
/// textures, samplers, other groups) is refused.
fn bindings(module: &Module) -> Result<Vec<Binding>, GpuError> {
    let mut bindings = Vec::new();
    for (_, global) in module.global_variables.iter() {
        let Some(resource) = &global.binding else {
            if matches!(
                global.space,
                AddressSpace::Private | AddressSpace::WorkGroup
            ) {
                continue;
            }
            return Err(GpuError::NotExact(format!(
                "`{}` is in the {:?} address space; kernels bind storage buffers only",
                global.name.as_deref().unwrap_or("a global"),
                global.space
            )));
        };
        let name = global.name.as_deref().unwrap_or("a binding");
        let AddressSpace::Storage { access } = global.space else {
            return Err(GpuError::NotExact(format!(
                "`{name}` is not a storage buffer; kernels bind storage buffers only"
            )));
        };
        if resource.group != 0 {
            return Err(GpuError::Invalid(format!(
                "`{name}` is in group {}; kernels use group 0 only",
                resource.group
            )));
        }
        bindings.push(Binding {
            binding: resource.binding,
            writable: access.contains(StorageAccess::STORE),
        });
    }
    if bindings.len() > BINDINGS_MAX {
        return Err(GpuError::Invalid(format!(
            "{} bindings, more than {BINDINGS_MAX}",
            bindings.len()
        )));
    }
    bindings.sort_by_key(|binding| binding.binding);
    if !bindings.iter().any(|binding| binding.writable) {
        return Err(GpuError::Invalid(
            "the kernel has no `read_write` storage buffer to write its output to".to_owned(),
        ));
    }
    Ok(bindings)
}

/// Float math builtins that round nowhere, so every implementation gives
/// the same bits.
const EXACT_FLOAT_MATH: [MathFunction; 4] = [
    MathFunction::Abs,
    MathFunction::Floor,
    MathFunction::Ceil,
    MathFunction::Trunc,
];

/// Holds the entry point `index` and every function to the exact class:
/// f32 `+ - *`, negation, comparisons, selects, conversions and the
/// builtins in [`EXACT_FLOAT_MATH`]; integers throughout. Measured on an
/// NVIDIA H200 against lavapipe, float division, square roots,
/// transcendentals, fused or dot products, float atomics and subgroup
/// operations differ between implementations. Matrix products (a sum of
/// products in an order the driver picks) are refused too; adding and
/// scaling matrices is exact.
fn exact(module: &Module, info: &ModuleInfo, index: usize) -> Result<(), GpuError> {
    let entry = &module.entry_points[index];
    let mut functions = vec![(&entry.function, info.get_entry_point(index))];
    for (handle, function) in module.functions.iter() {
        functions.push((function, &info[handle]));
    }
    for (function, function_info) in functions {
        for (handle, expression) in function.expressions.iter() {
            let inner = function_info[handle].ty.inner_with(&module.types);
            let float = float_width(inner);
            if float.is_some_and(|width| width != 4) {
                return Err(not_exact("floats other than f32"));
            }
            let operand_float = |operand: naga::Handle<Expression>| {
                float_width(function_info[operand].ty.inner_with(&module.types)).is_some()
            };
            let is_matrix = |operand: naga::Handle<Expression>| {
                matches!(
                    function_info[operand].ty.inner_with(&module.types),
                    TypeInner::Matrix { .. }
                )
            };
            let is_scalar = |operand: naga::Handle<Expression>| {
                matches!(
                    function_info[operand].ty.inner_with(&module.types),
                    TypeInner::Scalar(_)
                )
            };
            match expression {
                Expression::Binary {
                    op: BinaryOperator::Divide | BinaryOperator::Modulo,
                    left,
                    ..
                } if operand_float(*left) => {
                    return Err(not_exact(
                        "float division or remainder (implementations round it differently)",
                    ));
                }
                Expression::Binary {
                    op: BinaryOperator::Multiply,
                    left,
                    right,
                } if is_matrix(*left) && !is_scalar(*right)
                    || is_matrix(*right) && !is_scalar(*left) =>
                {
                    return Err(not_exact(
                        "a matrix product (a sum of products whose order the driver picks)",
                    ));
                }
                Expression::Math { fun, arg, .. }
                    if operand_float(*arg) && !EXACT_FLOAT_MATH.contains(fun) =>
                {
                    return Err(not_exact(&format!(
                        "the float builtin {fun:?} (allowed: abs, floor, ceil, trunc)"
                    )));
                }
                Expression::ImageSample { .. }
                | Expression::ImageLoad { .. }
                | Expression::ImageQuery { .. } => return Err(not_exact("textures")),
                Expression::Derivative { .. } => return Err(not_exact("derivatives")),
                Expression::AtomicResult { .. } if float.is_some() => {
                    return Err(not_exact("float atomics"));
                }
                Expression::SubgroupBallotResult | Expression::SubgroupOperationResult { .. } => {
                    return Err(not_exact("subgroup operations"));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn not_exact(what: &str) -> GpuError {
    GpuError::NotExact(format!("{what} is outside the exact class"))
}

/// The float width of a scalar, vector or matrix type, in bytes.
fn float_width(inner: &TypeInner) -> Option<u8> {
    let scalar = match inner {
        TypeInner::Scalar(scalar)
        | TypeInner::Vector { scalar, .. }
        | TypeInner::Matrix { scalar, .. }
        | TypeInner::Atomic(scalar) => scalar,
        _ => return None,
    };
    (scalar.kind == ScalarKind::Float).then_some(scalar.width)
}

/// SPIR-V for the entry point: out-of-bounds reads give zero and writes
/// are dropped, workgroup memory starts zeroed, and loops are bounded.
fn spirv(module: &Module, info: &ModuleInfo, entry_point: &str) -> Result<Vec<u32>, GpuError> {
    let policy = naga::proc::BoundsCheckPolicy::ReadZeroSkipWrite;
    let options = spv::Options {
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: policy,
            buffer: policy,
            image_load: policy,
            binding_array: policy,
        },
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::Polyfill,
        force_loop_bounding: true,
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry_point.to_owned(),
    };
    spv::write_vec(module, info, &options, Some(&pipeline))
        .map_err(|error| GpuError::Invalid(format!("cannot compile to SPIR-V: {error}")))
}

/// SPIR-V opcodes of float arithmetic a driver could fuse or reorder.
const FLOAT_ARITHMETIC: [u32; 14] = [
    127, // OpFNegate
    129, // OpFAdd
    131, // OpFSub
    133, // OpFMul
    136, // OpFDiv
    140, // OpFRem
    141, // OpFMod
    142, // OpVectorTimesScalar
    143, // OpMatrixTimesScalar
    144, // OpVectorTimesMatrix
    145, // OpMatrixTimesVector
    146, // OpMatrixTimesMatrix
    147, // OpOuterProduct
    148, // OpDot
];
const OP_DECORATE: u32 = 71;
const DECORATION_NO_CONTRACTION: u32 = 42;
/// Annotation instructions: new decorations go before the first of them.
const ANNOTATIONS: [u32; 6] = [OP_DECORATE, 72, 73, 74, 75, 332];
const HEADER_WORDS: usize = 5;

/// Decorates the result of every float arithmetic instruction in `words`
/// `NoContraction`, so no driver fuses it into an FMA or reassociates it.
pub fn no_contraction(words: &[u32]) -> Result<Vec<u32>, GpuError> {
    let malformed = || GpuError::Invalid("the SPIR-V does not parse".to_owned());
    let mut results = Vec::new();
    let mut first_annotation = None;
    let mut at = HEADER_WORDS;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        let opcode = words[at] & 0xffff;
        if count == 0 || at + count > words.len() {
            return Err(malformed());
        }
        if ANNOTATIONS.contains(&opcode) && first_annotation.is_none() {
            first_annotation = Some(at);
        }
        if FLOAT_ARITHMETIC.contains(&opcode) {
            results.push(*words.get(at + 2).ok_or_else(malformed)?);
        }
        at += count;
    }
    let Some(insert_at) = first_annotation else {
        // Every kernel binds a buffer, which is decorated.
        return Err(malformed());
    };
    let mut strict = Vec::with_capacity(words.len() + results.len() * 3);
    strict.extend_from_slice(&words[..insert_at]);
    for result in results {
        strict.extend([(3 << 16) | OP_DECORATE, result, DECORATION_NO_CONTRACTION]);
    }
    strict.extend_from_slice(&words[insert_at..]);
    Ok(strict)
}

/// How many results `words` decorates `NoContraction`, and how many float
/// arithmetic instructions it holds.
pub fn contraction_counts(words: &[u32]) -> (usize, usize) {
    let (mut decorated, mut arithmetic) = (0, 0);
    let mut at = HEADER_WORDS;
    while at < words.len() {
        let count = ((words[at] >> 16) as usize).max(1);
        let opcode = words[at] & 0xffff;
        if opcode == OP_DECORATE && words.get(at + 2) == Some(&DECORATION_NO_CONTRACTION) {
            decorated += 1;
        }
        if FLOAT_ARITHMETIC.contains(&opcode) {
            arithmetic += 1;
        }
        at += count;
    }
    (decorated, arithmetic)
}
