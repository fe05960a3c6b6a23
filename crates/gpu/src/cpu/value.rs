//! Values the interpreter computes with: scalars and vectors as 32-bit
//! words, structs, arrays and matrices as the words of their memory layout,
//! and pointers into one of the memories an invocation sees.

use naga::{Module, ScalarKind, TypeInner, VectorSize};

use super::unsupported;
use crate::GpuError;

/// Which memory a pointer points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Space {
    /// A storage buffer, by its index among the kernel's bindings (the
    /// meter's buffer last).
    Buffer(u32),
    /// The workgroup's shared variables.
    Workgroup,
    /// The invocation's private variables.
    Private,
    /// The invocation's function-local variables, every frame's in one
    /// stack.
    Function,
}

/// A place in memory, in 32-bit words (every type a kernel may use is made
/// of 32-bit scalars). A pointer built with an out-of-bounds index reads
/// zero and drops writes, as the SPIR-V's bounds checks do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pointer {
    pub(super) space: Space,
    pub(super) offset: u32,
    pub(super) in_bounds: bool,
}

/// One expression's value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// Not evaluated (yet) in this frame.
    Unset,
    /// A scalar (`len` 1) or vector: each component's bits; bools are 0 or 1.
    Words {
        len: u32,
        words: [u32; 4],
    },
    /// A struct, array or matrix: its words as laid out in memory.
    Composite(Vec<u32>),
    Pointer(Pointer),
}

impl Value {
    pub(super) fn scalar(word: u32) -> Self {
        Value::Words {
            len: 1,
            words: [word, 0, 0, 0],
        }
    }

    pub(super) fn vector(components: &[u32]) -> Self {
        let mut words = [0; 4];
        words[..components.len()].copy_from_slice(components);
        Value::Words {
            len: components.len() as u32,
            words,
        }
    }

    /// The components of a scalar or vector.
    pub(super) fn words(&self) -> Result<&[u32], GpuError> {
        match self {
            Value::Words { len, words } => Ok(&words[..*len as usize]),
            _ => Err(internal("a scalar or vector was expected")),
        }
    }

    pub(super) fn word(&self) -> Result<u32, GpuError> {
        match self {
            Value::Words { words, .. } => Ok(words[0]),
            _ => Err(internal("a scalar was expected")),
        }
    }

    pub(super) fn pointer(&self) -> Result<Pointer, GpuError> {
        match self {
            Value::Pointer(pointer) => Ok(*pointer),
            _ => Err(internal("a pointer was expected")),
        }
    }

    /// The words this value occupies in memory, as laid out there.
    pub(super) fn layout_words(&self) -> Result<&[u32], GpuError> {
        match self {
            Value::Words { len, words } => Ok(&words[..*len as usize]),
            Value::Composite(words) => Ok(words),
            _ => Err(internal("a value with a memory layout was expected")),
        }
    }
}

/// An interpreter bug or IR it does not expect from a validated module.
pub(super) fn internal(what: &str) -> GpuError {
    GpuError::Invalid(format!("the CPU path met unexpected IR: {what}"))
}

/// The kind of a scalar, vector or matrix's components, for choosing
/// operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Sint,
    Uint,
    Float,
}

/// The component kind of `inner`, refusing anything but 32-bit scalars
/// and bools.
pub(super) fn kind(inner: &TypeInner) -> Result<Kind, GpuError> {
    let scalar = match inner {
        TypeInner::Scalar(scalar)
        | TypeInner::Vector { scalar, .. }
        | TypeInner::Matrix { scalar, .. }
        | TypeInner::Atomic(scalar)
        | TypeInner::ValuePointer { scalar, .. } => *scalar,
        _ => return Err(internal("a numeric type was expected")),
    };
    match (scalar.kind, scalar.width) {
        (ScalarKind::Bool, _) => Ok(Kind::Bool),
        (ScalarKind::Sint, 4) => Ok(Kind::Sint),
        (ScalarKind::Uint, 4) => Ok(Kind::Uint),
        (ScalarKind::Float, 4) => Ok(Kind::Float),
        _ => Err(unsupported("scalars other than 32-bit ones and bools")),
    }
}

/// Words between the columns of a matrix whose columns have `rows`
/// components (a `vec3` column is aligned like a `vec4`).
pub(super) fn column_stride(rows: VectorSize) -> u32 {
    match rows {
        VectorSize::Bi => 2,
        VectorSize::Tri | VectorSize::Quad => 4,
    }
}

/// Words a value of `inner` takes in memory.
pub(super) fn size_words(module: &Module, inner: &TypeInner) -> u32 {
    inner.size(module.to_ctx()).div_ceil(4)
}

/// The zero value of `inner`.
pub(super) fn zero(module: &Module, inner: &TypeInner) -> Value {
    match inner {
        TypeInner::Scalar(_) | TypeInner::Atomic(_) => Value::scalar(0),
        TypeInner::Vector { size, .. } => Value::Words {
            len: *size as u32,
            words: [0; 4],
        },
        _ => Value::Composite(vec![0; size_words(module, inner) as usize]),
    }
}

/// The value of `inner` held in `words` (its memory layout).
pub(super) fn from_words(inner: &TypeInner, words: &[u32]) -> Value {
    match inner {
        TypeInner::Scalar(_) | TypeInner::Atomic(_) => {
            Value::scalar(words.first().copied().unwrap_or(0))
        }
        TypeInner::Vector { size, .. }
        | TypeInner::ValuePointer {
            size: Some(size), ..
        } => {
            let mut components = [0; 4];
            for (component, word) in components.iter_mut().zip(words).take(*size as usize) {
                *component = *word;
            }
            Value::Words {
                len: *size as u32,
                words: components,
            }
        }
        _ => Value::Composite(words.to_vec()),
    }
}

/// Where the element, member or component `index` of `inner` starts, in
/// words from its start, its type, and whether it is in bounds.
/// `runtime_length` is the element count of a runtime-sized array.
pub(super) fn element<'a>(
    module: &'a Module,
    inner: &'a TypeInner,
    index: u32,
    runtime_length: Option<u32>,
) -> Result<(u32, Element<'a>, bool), GpuError> {
    Ok(match inner {
        TypeInner::Vector { size, .. } => (index, Element::Scalar, index < *size as u32),
        TypeInner::ValuePointer {
            size: Some(size), ..
        } => (index, Element::Scalar, index < *size as u32),
        TypeInner::Matrix {
            columns,
            rows,
            scalar,
        } => (
            index.wrapping_mul(column_stride(*rows)),
            Element::Column(*rows, *scalar),
            index < *columns as u32,
        ),
        TypeInner::Array { base, size, stride } => {
            let length = match size {
                naga::ArraySize::Constant(length) => length.get(),
                naga::ArraySize::Dynamic => runtime_length.unwrap_or(0),
                naga::ArraySize::Pending(_) => return Err(unsupported("override-sized arrays")),
            };
            (
                index.wrapping_mul(stride / 4),
                Element::Type(&module.types[*base].inner),
                index < length,
            )
        }
        TypeInner::Struct { members, .. } => {
            let member = members
                .get(index as usize)
                .ok_or_else(|| internal("a struct member past the last"))?;
            (
                member.offset / 4,
                Element::Type(&module.types[member.ty].inner),
                true,
            )
        }
        _ => return Err(internal("indexing a type that has no elements")),
    })
}

/// The type of an element, member or component.
#[derive(Debug, Clone, Copy)]
pub(super) enum Element<'a> {
    Type(&'a TypeInner),
    Scalar,
    Column(VectorSize, naga::Scalar),
}

impl Element<'_> {
    pub(super) fn value_of(self, words: &[u32]) -> Value {
        match self {
            Element::Type(inner) => from_words(inner, words),
            Element::Scalar => Value::scalar(words.first().copied().unwrap_or(0)),
            Element::Column(rows, scalar) => {
                from_words(&TypeInner::Vector { size: rows, scalar }, words)
            }
        }
    }

    pub(super) fn size_words(self, module: &Module) -> u32 {
        match self {
            Element::Type(inner) => size_words(module, inner),
            Element::Scalar => 1,
            Element::Column(rows, _) => rows as u32,
        }
    }
}

/// Writes `value`, of type `inner`, into `memory` at `offset`, member by
/// member: padding between members is left as it was, as a GPU leaves it.
/// Words past the end of `memory` are dropped.
pub(super) fn store(
    module: &Module,
    inner: &TypeInner,
    memory: &mut [u32],
    offset: u32,
    words: &[u32],
) {
    match inner {
        TypeInner::Struct { members, .. } => {
            for member in members {
                let start = (member.offset / 4) as usize;
                let member_inner = &module.types[member.ty].inner;
                let size = size_words(module, member_inner) as usize;
                if let Some(member_words) = words.get(start..start + size) {
                    store(
                        module,
                        member_inner,
                        memory,
                        offset + member.offset / 4,
                        member_words,
                    );
                }
            }
        }
        TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(length),
            stride,
        } => {
            let base_inner = &module.types[*base].inner;
            let size = size_words(module, base_inner) as usize;
            for index in 0..length.get() {
                let start = (index * stride / 4) as usize;
                if let Some(element_words) = words.get(start..start + size) {
                    store(
                        module,
                        base_inner,
                        memory,
                        offset + index * stride / 4,
                        element_words,
                    );
                }
            }
        }
        TypeInner::Matrix { columns, rows, .. } => {
            let stride = column_stride(*rows);
            for column in 0..*columns as u32 {
                for row in 0..*rows as u32 {
                    let at = (column * stride + row) as usize;
                    if let (Some(word), Some(slot)) = (
                        words.get(at),
                        memory.get_mut((offset + column * stride + row) as usize),
                    ) {
                        *slot = *word;
                    }
                }
            }
        }
        _ => {
            for (at, word) in words.iter().enumerate() {
                if let Some(slot) = memory.get_mut(offset as usize + at) {
                    *slot = *word;
                }
            }
        }
    }
}
