//! Evaluating one expression of a function's arena into a value, reading
//! memory through bounds-checked pointers.

use naga::{BinaryOperator, Expression, Handle, Literal, Module, TypeInner};

use super::ops;
use super::program::{Func, Memory, Program};
use super::unsupported;
use super::value::{self, Element, Kind, Pointer, Space, Value, internal};
use crate::GpuError;

/// The interpreter's view of one frame while it evaluates expressions.
pub(super) struct Frame<'v> {
    pub(super) func: &'v Func<'v>,
    pub(super) values: &'v [Value],
    /// Where the frame's local variables start in the function stack.
    pub(super) stack_base: u32,
    pub(super) arguments: &'v [Value],
}

impl Frame<'_> {
    fn value(&self, handle: Handle<Expression>) -> &Value {
        // Validated modules refer only to earlier expressions.
        self.values.get(handle.index()).unwrap_or(&Value::Unset)
    }

    /// The component kind of a numeric expression.
    fn kind(&self, handle: Handle<Expression>) -> Result<Kind, GpuError> {
        self.func.kinds[handle.index()].ok_or_else(|| internal("a numeric expression was expected"))
    }

    fn inner<'m>(&self, module: &'m Module, handle: Handle<Expression>) -> &'m TypeInner
    where
        Self: 'm,
    {
        self.func.info[handle].ty.inner_with(&module.types)
    }
}

/// Evaluates expression `handle` of `func` into `values[handle]`; the
/// expressions before it hold their values. Scalars and pointers, the
/// common results, are written into the slot in place: moving whole
/// values costs more than computing most of them.
pub(super) fn expression_into(
    program: &Program<'_>,
    func: &Func<'_>,
    values: &mut [Value],
    stack_base: u32,
    arguments: &[Value],
    memory: &Memory<'_>,
    handle: Handle<Expression>,
) -> Result<(), GpuError> {
    // Operands always come before the expression in the arena.
    let (before, rest) = values.split_at_mut(handle.index());
    let slot = rest
        .first_mut()
        .ok_or_else(|| internal("an expression past the arena"))?;
    let frame = Frame {
        func,
        values: before,
        stack_base,
        arguments,
    };
    let module = program.module;
    match &func.function.expressions[handle] {
        // Set by the statement that computes them.
        Expression::CallResult(_)
        | Expression::AtomicResult { .. }
        | Expression::WorkGroupUniformLoadResult { .. } => {}
        Expression::Binary { op, left, right } => match (frame.value(*left), frame.value(*right)) {
            (Value::Words { len: 1, words: a }, Value::Words { len: 1, words: b }) => {
                let word = ops::binary_word(*op, frame.kind(*left)?, a[0], b[0])?;
                put_scalar(slot, word);
            }
            _ => *slot = expression(program, &frame, memory, handle)?,
        },
        Expression::Load { pointer } => {
            let pointer = frame.value(*pointer).pointer()?;
            match frame.inner(module, handle) {
                TypeInner::Scalar(_) | TypeInner::Atomic(_) => {
                    let word = memory.words(pointer.space).get(pointer.offset as usize);
                    let word = match word {
                        Some(word) if pointer.in_bounds => *word,
                        _ => 0,
                    };
                    put_scalar(slot, word);
                }
                inner => *slot = memory.load(module, inner, pointer),
            }
        }
        Expression::AccessIndex { base, index } => match frame.value(*base) {
            Value::Pointer(pointer) => {
                let inner = frame.inner(module, *base);
                let pointer = element_pointer(module, inner, memory, *pointer, *index)?;
                put_pointer(slot, pointer);
            }
            _ => *slot = expression(program, &frame, memory, handle)?,
        },
        Expression::Access { base, index } => match frame.value(*base) {
            Value::Pointer(pointer) => {
                let inner = frame.inner(module, *base);
                let index = frame.value(*index).word()?;
                let pointer = element_pointer(module, inner, memory, *pointer, index)?;
                put_pointer(slot, pointer);
            }
            _ => *slot = expression(program, &frame, memory, handle)?,
        },
        _ => *slot = expression(program, &frame, memory, handle)?,
    }
    Ok(())
}

fn put_scalar(slot: &mut Value, word: u32) {
    match slot {
        Value::Words { len, words } => {
            *len = 1;
            words[0] = word;
        }
        other => *other = Value::scalar(word),
    }
}

fn put_pointer(slot: &mut Value, pointer: Pointer) {
    match slot {
        Value::Pointer(old) => *old = pointer,
        other => *other = Value::Pointer(pointer),
    }
}

/// The value of expression `handle` of the frame's function.
fn expression(
    program: &Program<'_>,
    frame: &Frame<'_>,
    memory: &Memory<'_>,
    handle: Handle<Expression>,
) -> Result<Value, GpuError> {
    let module = program.module;
    Ok(match &frame.func.function.expressions[handle] {
        Expression::Literal(literal) => literal_value(literal)?,
        Expression::Constant(constant) => {
            program.constants[module.constants[*constant].init.index()].clone()
        }
        Expression::ZeroValue(ty) => value::zero(module, &module.types[*ty].inner),
        Expression::Compose { ty, components } => compose(
            module,
            &module.types[*ty].inner,
            components.iter().map(|component| frame.value(*component)),
        )?,
        Expression::Access { base, index } => {
            let index = frame.value(*index).word()?;
            access(program, frame, memory, *base, index)?
        }
        Expression::AccessIndex { base, index } => access(program, frame, memory, *base, *index)?,
        Expression::Splat { size, value } => {
            let word = frame.value(*value).word()?;
            Value::vector(&[word; 4][..*size as usize])
        }
        Expression::Swizzle {
            size,
            vector,
            pattern,
        } => {
            let words = frame.value(*vector).words()?;
            let mut picked = [0; 4];
            for (slot, component) in picked.iter_mut().zip(&pattern[..*size as usize]) {
                *slot = *words
                    .get(*component as usize)
                    .ok_or_else(|| internal("a swizzle past the vector"))?;
            }
            Value::vector(&picked[..*size as usize])
        }
        Expression::FunctionArgument(index) => frame
            .arguments
            .get(*index as usize)
            .cloned()
            .ok_or_else(|| internal("an argument past the last"))?,
        Expression::GlobalVariable(global) => Value::Pointer(program.globals[global.index()]),
        Expression::LocalVariable(local) => Value::Pointer(Pointer {
            space: Space::Function,
            offset: frame.stack_base + frame.func.local_offsets[local.index()],
            in_bounds: true,
        }),
        Expression::Load { pointer } => {
            let pointer = frame.value(*pointer).pointer()?;
            memory.load(module, frame.inner(module, handle), pointer)
        }
        Expression::Unary { op, expr } => match frame.value(*expr) {
            Value::Composite(words) => {
                let inner = frame.inner(module, *expr);
                matrix(inner, words, |_, x| {
                    ops::unary(*op, Kind::Float, &[x])?.word()
                })?
            }
            value => ops::unary(*op, frame.kind(*expr)?, value.words()?)?,
        },
        Expression::Binary { op, left, right } => {
            let (left_value, right_value) = (frame.value(*left), frame.value(*right));
            match (left_value, right_value) {
                (Value::Words { .. }, Value::Words { .. }) => {
                    let kind = frame.kind(*left)?;
                    ops::binary(*op, kind, left_value.words()?, right_value.words()?)?
                }
                (Value::Composite(matrix_words), Value::Composite(other))
                    if matches!(op, BinaryOperator::Add | BinaryOperator::Subtract) =>
                {
                    let inner = frame.inner(module, *left);
                    matrix(inner, matrix_words, |at, x| {
                        let y = other.get(at).copied().unwrap_or(0);
                        ops::binary(*op, Kind::Float, &[x], &[y])?.word()
                    })?
                }
                (Value::Composite(matrix_words), Value::Words { len: 1, words })
                | (Value::Words { len: 1, words }, Value::Composite(matrix_words))
                    if *op == BinaryOperator::Multiply =>
                {
                    let inner = match left_value {
                        Value::Composite(_) => frame.inner(module, *left),
                        _ => frame.inner(module, *right),
                    };
                    let scalar = words[0];
                    matrix(inner, matrix_words, |_, x| {
                        ops::binary(*op, Kind::Float, &[x], &[scalar])?.word()
                    })?
                }
                _ => {
                    return Err(unsupported(
                        "matrix products (matrix × vector, vector × matrix, matrix × matrix)",
                    ));
                }
            }
        }
        Expression::Select {
            condition,
            accept,
            reject,
        } => {
            let conditions = frame.value(*condition).words()?;
            let (accept, reject) = (frame.value(*accept), frame.value(*reject));
            if conditions.len() == 1 {
                if conditions[0] != 0 {
                    accept.clone()
                } else {
                    reject.clone()
                }
            } else {
                let (accept, reject) = (accept.words()?, reject.words()?);
                let mut words = [0; 4];
                for (at, word) in words.iter_mut().enumerate().take(conditions.len()) {
                    *word = if conditions[at] != 0 {
                        accept[at]
                    } else {
                        reject[at]
                    };
                }
                Value::vector(&words[..conditions.len()])
            }
        }
        Expression::Relational { fun, argument } => {
            let words = frame.value(*argument).words()?;
            relational(*fun, words)?
        }
        Expression::Math {
            fun,
            arg,
            arg1,
            arg2,
            arg3,
        } => {
            let kind = frame.kind(*arg)?;
            let mut args: [&[u32]; 4] = [&[]; 4];
            let mut count = 0;
            for operand in [Some(*arg), *arg1, *arg2, *arg3].into_iter().flatten() {
                args[count] = frame.value(operand).words()?;
                count += 1;
            }
            ops::math(*fun, kind, &args[..count])?
        }
        Expression::As {
            expr,
            kind,
            convert,
        } => {
            let from = frame.kind(*expr)?;
            let to = match kind {
                naga::ScalarKind::Bool => Kind::Bool,
                naga::ScalarKind::Sint => Kind::Sint,
                naga::ScalarKind::Uint => Kind::Uint,
                naga::ScalarKind::Float => Kind::Float,
                _ => return Err(unsupported("abstract numbers")),
            };
            if convert.is_some_and(|width| width != 4 && to != Kind::Bool) {
                return Err(unsupported("conversions to types other than 32-bit ones"));
            }
            let words = frame.value(*expr).words()?;
            let mut converted = [0; 4];
            for (slot, word) in converted.iter_mut().zip(words) {
                *slot = ops::convert(from, to, convert.is_some(), *word);
            }
            Value::vector(&converted[..words.len()])
        }
        Expression::ArrayLength(array) => {
            let pointer = frame.value(*array).pointer()?;
            let TypeInner::Pointer { base, .. } = frame.inner(module, *array) else {
                return Err(internal("arrayLength of something not a pointer"));
            };
            Value::scalar(runtime_length(memory, &module.types[*base].inner, pointer))
        }
        Expression::CallResult(_)
        | Expression::AtomicResult { .. }
        | Expression::WorkGroupUniformLoadResult { .. } => {
            return Err(internal("a statement's result evaluated as an expression"));
        }
        Expression::Override(_) => return Err(unsupported("pipeline overrides")),
        other => return Err(unsupported(&format!("the expression {other:?}"))),
    })
}

/// The matrix `inner` held in `words` with `operation` applied to each
/// element and its word offset (padding skipped).
fn matrix(
    inner: &TypeInner,
    words: &[u32],
    mut operation: impl FnMut(usize, u32) -> Result<u32, GpuError>,
) -> Result<Value, GpuError> {
    let TypeInner::Matrix { columns, rows, .. } = inner else {
        return Err(unsupported("arithmetic on structs and arrays"));
    };
    let stride = value::column_stride(*rows) as usize;
    let mut result = vec![0; words.len()];
    for column in 0..*columns as usize {
        for row in 0..*rows as usize {
            let at = column * stride + row;
            let (Some(word), Some(slot)) = (words.get(at), result.get_mut(at)) else {
                return Err(internal("a matrix shorter than its type"));
            };
            *slot = operation(at, *word)?;
        }
    }
    Ok(Value::Composite(result))
}

/// The element count of the runtime-sized array `inner` that `pointer`
/// points at: what fits in the rest of its buffer.
pub(super) fn runtime_length(memory: &Memory<'_>, inner: &TypeInner, pointer: Pointer) -> u32 {
    let TypeInner::Array { stride, .. } = inner else {
        return 0;
    };
    let words = memory.words(pointer.space).len() as u32;
    words.saturating_sub(pointer.offset) * 4 / stride
}

/// A pointer to element `index` of what `pointer`, of type `inner`,
/// points at; out of bounds, a pointer that reads zero.
fn element_pointer(
    module: &Module,
    inner: &TypeInner,
    memory: &Memory<'_>,
    pointer: Pointer,
    index: u32,
) -> Result<Pointer, GpuError> {
    let pointee = match inner {
        TypeInner::Pointer { base, .. } => &module.types[*base].inner,
        other @ TypeInner::ValuePointer { .. } => other,
        _ => return Err(internal("a pointer without a pointer type")),
    };
    let runtime = match pointee {
        TypeInner::Array {
            size: naga::ArraySize::Dynamic,
            ..
        } => Some(runtime_length(memory, pointee, pointer)),
        _ => None,
    };
    let (offset, _, in_bounds) = value::element(module, pointee, index, runtime)?;
    Ok(Pointer {
        space: pointer.space,
        offset: pointer.offset.wrapping_add(offset),
        in_bounds: pointer.in_bounds && in_bounds,
    })
}

/// Element `index` of `base`: a pointer to it when `base` is a pointer,
/// its value otherwise; out of bounds, a pointer that reads zero or a zero
/// value.
fn access(
    program: &Program<'_>,
    frame: &Frame<'_>,
    memory: &Memory<'_>,
    base: Handle<Expression>,
    index: u32,
) -> Result<Value, GpuError> {
    let module = program.module;
    let base_inner = frame.inner(module, base);
    match frame.value(base) {
        Value::Pointer(pointer) => Ok(Value::Pointer(element_pointer(
            module, base_inner, memory, *pointer, index,
        )?)),
        Value::Words { len, words } => Ok(Value::scalar(if index < *len {
            words[index as usize]
        } else {
            0
        })),
        Value::Composite(words) => {
            let (offset, element, in_bounds) = value::element(module, base_inner, index, None)?;
            if !in_bounds {
                return Ok(match element {
                    Element::Type(inner) => value::zero(module, inner),
                    other => other.value_of(&[0; 4]),
                });
            }
            let size = element.size_words(module) as usize;
            let start = offset as usize;
            let slice = words
                .get(start..start + size)
                .ok_or_else(|| internal("an element past its composite"))?;
            Ok(element.value_of(slice))
        }
        _ => Err(internal("indexing an unset value")),
    }
}

/// A struct, array, matrix or vector built from `components`.
pub(super) fn compose<'c>(
    module: &Module,
    inner: &TypeInner,
    components: impl Iterator<Item = &'c Value>,
) -> Result<Value, GpuError> {
    if let TypeInner::Vector { size, .. } = inner {
        let mut words = [0; 4];
        let mut len = 0;
        for component in components {
            for word in component.words()? {
                *words
                    .get_mut(len)
                    .ok_or_else(|| internal("too many vector components"))? = *word;
                len += 1;
            }
        }
        if len != *size as usize {
            return Err(internal("a vector with the wrong number of components"));
        }
        return Ok(Value::vector(&words[..len]));
    }
    let mut words = vec![0; value::size_words(module, inner) as usize];
    for (index, component) in components.enumerate() {
        let (offset, element, _) = value::element(module, inner, index as u32, None)?;
        let part = component.layout_words()?;
        let size = (element.size_words(module) as usize).min(part.len());
        let start = offset as usize;
        words
            .get_mut(start..start + size)
            .ok_or_else(|| internal("a component past its composite"))?
            .copy_from_slice(&part[..size]);
    }
    Ok(Value::Composite(words))
}

pub(super) fn literal_value(literal: &Literal) -> Result<Value, GpuError> {
    Ok(Value::scalar(match literal {
        Literal::F32(value) => value.to_bits(),
        Literal::U32(value) => *value,
        Literal::I32(value) => *value as u32,
        Literal::Bool(value) => u32::from(*value),
        other => return Err(unsupported(&format!("the literal {other:?}"))),
    }))
}

fn relational(fun: naga::RelationalFunction, words: &[u32]) -> Result<Value, GpuError> {
    use naga::RelationalFunction as Rf;
    Ok(match fun {
        Rf::All => Value::scalar(u32::from(words.iter().all(|word| *word != 0))),
        Rf::Any => Value::scalar(u32::from(words.iter().any(|word| *word != 0))),
        Rf::IsNan | Rf::IsInf => {
            let mut tested = [0; 4];
            for (slot, word) in tested.iter_mut().zip(words) {
                let x = f32::from_bits(*word);
                *slot = u32::from(if fun == Rf::IsNan {
                    x.is_nan()
                } else {
                    x.is_infinite()
                });
            }
            Value::vector(&tested[..words.len()])
        }
    })
}

impl Memory<'_> {
    /// The value of `inner` at `pointer`; zero when the pointer is out of
    /// bounds.
    pub(super) fn load(&self, module: &Module, inner: &TypeInner, pointer: Pointer) -> Value {
        if !pointer.in_bounds {
            return value::zero(module, inner);
        }
        let words = self.words(pointer.space);
        let start = pointer.offset as usize;
        match inner {
            TypeInner::Scalar(_) | TypeInner::Atomic(_) => {
                Value::scalar(words.get(start).copied().unwrap_or(0))
            }
            _ => {
                let size = value::size_words(module, inner) as usize;
                match words.get(start..start + size) {
                    Some(slice) => value::from_words(inner, slice),
                    None => value::zero(module, inner),
                }
            }
        }
    }
}
