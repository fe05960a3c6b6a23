//! A kernel's module prepared for interpretation: where each global
//! lives, the value of every constant, and per function which expressions
//! a frame evaluates on entry and where its local variables go.

use naga::{
    AddressSpace, Expression, Function, Handle, Module, Statement, TypeInner,
    valid::{FunctionInfo, ModuleInfo},
};

use super::eval;
use super::unsupported;
use super::value::{self, Kind, Pointer, Space, Value, internal};
use crate::{GpuError, Kernel};

/// One function of the module, ready to run.
pub(super) struct Func<'a> {
    pub(super) function: &'a Function,
    pub(super) info: &'a FunctionInfo,
    /// Constant expressions and those no `Emit` covers (variables,
    /// arguments), evaluated when a frame starts, in arena order.
    pub(super) entry_expressions: Vec<Handle<Expression>>,
    /// The component kind of each numeric expression, by handle index.
    pub(super) kinds: Vec<Option<Kind>>,
    /// Each local variable's offset in the frame, in words.
    pub(super) local_offsets: Vec<u32>,
    pub(super) local_words: u32,
}

/// A kernel's module, ready to run.
pub(super) struct Program<'a> {
    pub(super) module: &'a Module,
    /// The module's functions by handle index, then the entry point.
    pub(super) funcs: Vec<Func<'a>>,
    /// A pointer to each global variable, by handle index.
    pub(super) globals: Vec<Pointer>,
    /// The value of every global (constant) expression, by handle index.
    pub(super) constants: Vec<Value>,
    /// Private variables as every invocation starts with them.
    pub(super) private: Vec<u32>,
    pub(super) workgroup_words: usize,
    /// Whether any function has a barrier, so invocations of a workgroup
    /// must be able to wait for each other.
    pub(super) barriers: bool,
    pub(super) workgroup_size: [u32; 3],
}

impl<'a> Program<'a> {
    pub(super) fn new(kernel: &'a Kernel) -> Result<Self, GpuError> {
        let ir = &*kernel.ir;
        let module = &ir.module;
        let info: &ModuleInfo = &ir.info;
        let mut constants = Vec::with_capacity(module.global_expressions.len());
        for (_, expression) in module.global_expressions.iter() {
            let value = constant(module, &constants, expression)?;
            constants.push(value);
        }
        let mut globals = Vec::with_capacity(module.global_variables.len());
        let mut private = Vec::new();
        let mut workgroup_words = 0;
        for (_, global) in module.global_variables.iter() {
            let inner = &module.types[global.ty].inner;
            let pointer = |space, offset: usize| Pointer {
                space,
                offset: offset as u32,
                in_bounds: true,
            };
            match global.space {
                AddressSpace::Storage { .. } => {
                    let binding = global
                        .binding
                        .as_ref()
                        .ok_or_else(|| internal("a storage buffer without a binding"))?;
                    let index = if binding.binding == kernel.meter_binding {
                        kernel.bindings.len()
                    } else {
                        kernel
                            .bindings
                            .iter()
                            .position(|known| known.binding == binding.binding)
                            .ok_or_else(|| internal("a binding the kernel does not list"))?
                    };
                    globals.push(pointer(Space::Buffer(index as u32), 0));
                }
                AddressSpace::Private => {
                    globals.push(pointer(Space::Private, private.len()));
                    let size = value::size_words(module, inner) as usize;
                    let start = private.len();
                    private.resize(start + size, 0);
                    if let Some(init) = global.init {
                        let words = constants[init.index()].layout_words()?.to_vec();
                        value::store(module, inner, &mut private, start as u32, &words);
                    }
                }
                AddressSpace::WorkGroup => {
                    globals.push(pointer(Space::Workgroup, workgroup_words));
                    workgroup_words += value::size_words(module, inner) as usize;
                }
                other => {
                    return Err(unsupported(&format!(
                        "globals in the {other:?} address space"
                    )));
                }
            }
        }
        let entry = &module.entry_points[ir.entry_index];
        let mut funcs = Vec::with_capacity(module.functions.len() + 1);
        for (handle, function) in module.functions.iter() {
            funcs.push(func(module, function, &info[handle]));
        }
        funcs.push(func(
            module,
            &entry.function,
            info.get_entry_point(ir.entry_index),
        ));
        let barriers = funcs.iter().any(|func| has_barrier(&func.function.body));
        let workgroup_bytes = workgroup_words as u64 * 4;
        if workgroup_bytes > super::CPU_WORKGROUP_MEMORY_BYTES_MAX {
            return Err(GpuError::Dispatch(format!(
                "{workgroup_bytes} bytes of workgroup memory, more than the {} allowed",
                super::CPU_WORKGROUP_MEMORY_BYTES_MAX
            )));
        }
        // No function recurses, so a stack never holds more than every
        // function's locals at once.
        let invocation_bytes = 4
            * (private.len() as u64
                + funcs
                    .iter()
                    .map(|func| u64::from(func.local_words))
                    .sum::<u64>());
        if invocation_bytes > super::CPU_INVOCATION_MEMORY_BYTES_MAX {
            return Err(unsupported(&format!(
                "{invocation_bytes} bytes of private and local variables per invocation \
                 (more than {})",
                super::CPU_INVOCATION_MEMORY_BYTES_MAX
            )));
        }
        Ok(Self {
            module,
            funcs,
            globals,
            constants,
            private,
            workgroup_words,
            barriers,
            workgroup_size: entry.workgroup_size,
        })
    }

    /// The entry point's index in `funcs`.
    pub(super) fn entry(&self) -> usize {
        self.funcs.len() - 1
    }
}

fn func<'a>(module: &Module, function: &'a Function, info: &'a FunctionInfo) -> Func<'a> {
    let mut emitted = vec![false; function.expressions.len()];
    mark_emitted(&function.body, &mut emitted);
    // Constant expressions are evaluated on entry even where an `Emit`
    // covers them, as naga's SPIR-V does: a local variable's initializer
    // may be one.
    let mut constant = vec![false; function.expressions.len()];
    for (handle, expression) in function.expressions.iter() {
        constant[handle.index()] = match expression {
            Expression::Literal(_) | Expression::ZeroValue(_) | Expression::Constant(_) => true,
            Expression::Compose { components, .. } => components
                .iter()
                .all(|component| constant[component.index()]),
            Expression::Splat { value, .. } => constant[value.index()],
            _ => false,
        };
    }
    let entry_expressions = function
        .expressions
        .iter()
        .filter(|(handle, expression)| {
            constant[handle.index()]
                || (!emitted[handle.index()]
                    && !matches!(
                        expression,
                        Expression::CallResult(_)
                            | Expression::AtomicResult { .. }
                            | Expression::WorkGroupUniformLoadResult { .. }
                            | Expression::SubgroupBallotResult
                            | Expression::SubgroupOperationResult { .. }
                            | Expression::RayQueryProceedResult
                    ))
        })
        .map(|(handle, _)| handle)
        .collect();
    let mut local_offsets = Vec::with_capacity(function.local_variables.len());
    let mut local_words = 0;
    for (_, local) in function.local_variables.iter() {
        local_offsets.push(local_words);
        local_words += value::size_words(module, &module.types[local.ty].inner);
    }
    let kinds = function
        .expressions
        .iter()
        .map(|(handle, _)| value::kind(info[handle].ty.inner_with(&module.types)).ok())
        .collect();
    Func {
        function,
        info,
        kinds,
        entry_expressions,
        local_offsets,
        local_words,
    }
}

fn mark_emitted(block: &naga::Block, emitted: &mut [bool]) {
    for statement in block.iter() {
        match statement {
            Statement::Emit(range) => {
                for handle in range.clone() {
                    emitted[handle.index()] = true;
                }
            }
            Statement::Block(inner) => mark_emitted(inner, emitted),
            Statement::If { accept, reject, .. } => {
                mark_emitted(accept, emitted);
                mark_emitted(reject, emitted);
            }
            Statement::Switch { cases, .. } => {
                for case in cases {
                    mark_emitted(&case.body, emitted);
                }
            }
            Statement::Loop {
                body, continuing, ..
            } => {
                mark_emitted(body, emitted);
                mark_emitted(continuing, emitted);
            }
            _ => {}
        }
    }
}

fn has_barrier(block: &naga::Block) -> bool {
    block.iter().any(|statement| match statement {
        Statement::ControlBarrier(_) | Statement::WorkGroupUniformLoad { .. } => true,
        Statement::Block(inner) => has_barrier(inner),
        Statement::If { accept, reject, .. } => has_barrier(accept) || has_barrier(reject),
        Statement::Switch { cases, .. } => cases.iter().any(|case| has_barrier(&case.body)),
        Statement::Loop {
            body, continuing, ..
        } => has_barrier(body) || has_barrier(continuing),
        _ => false,
    })
}

/// The value of a global expression; `before` holds the values of the
/// expressions before it.
fn constant(module: &Module, before: &[Value], expression: &Expression) -> Result<Value, GpuError> {
    let earlier = |handle: Handle<Expression>| {
        before
            .get(handle.index())
            .ok_or_else(|| internal("a constant that refers forward"))
    };
    Ok(match expression {
        Expression::Literal(literal) => eval::literal_value(literal)?,
        Expression::Constant(constant) => earlier(module.constants[*constant].init)?.clone(),
        Expression::ZeroValue(ty) => value::zero(module, &module.types[*ty].inner),
        Expression::Compose { ty, components } => {
            let components = components
                .iter()
                .map(|component| earlier(*component))
                .collect::<Result<Vec<_>, _>>()?;
            eval::compose(module, &module.types[*ty].inner, components.into_iter())?
        }
        Expression::Splat { size, value } => {
            let word = earlier(*value)?.word()?;
            Value::vector(&[word; 4][..*size as usize])
        }
        // Expressions a constant cannot be are never read: the arena may
        // hold them only for overrides, which the CPU path refuses where
        // used.
        _ => Value::Unset,
    })
}

/// The memories one invocation sees.
pub(super) struct Memory<'m> {
    /// The kernel's buffers in binding order, then the meter's.
    pub(super) buffers: &'m mut [Vec<u32>],
    pub(super) workgroup: &'m mut [u32],
    pub(super) private: &'m mut [u32],
    pub(super) stack: &'m mut Vec<u32>,
}

impl Memory<'_> {
    pub(super) fn words(&self, space: Space) -> &[u32] {
        match space {
            Space::Buffer(index) => self.buffers.get(index as usize).map_or(&[], |b| b),
            Space::Workgroup => self.workgroup,
            Space::Private => self.private,
            Space::Function => self.stack,
        }
    }

    pub(super) fn words_mut(&mut self, space: Space) -> &mut [u32] {
        match space {
            Space::Buffer(index) => self
                .buffers
                .get_mut(index as usize)
                .map_or(&mut [], |b| b.as_mut_slice()),
            Space::Workgroup => self.workgroup,
            Space::Private => self.private,
            Space::Function => self.stack.as_mut_slice(),
        }
    }

    /// Writes `value`, of type `inner`, at `pointer`; nothing when the
    /// pointer is out of bounds.
    pub(super) fn store(
        &mut self,
        module: &Module,
        inner: &TypeInner,
        pointer: Pointer,
        value: &Value,
    ) -> Result<(), GpuError> {
        if !pointer.in_bounds {
            return Ok(());
        }
        let words = value.layout_words()?;
        let memory = self.words_mut(pointer.space);
        if words.len() == 1 {
            if let Some(slot) = memory.get_mut(pointer.offset as usize) {
                *slot = words[0];
            }
            return Ok(());
        }
        value::store(module, inner, memory, pointer.offset, words);
        Ok(())
    }
}
