//! Canonical floats, written into the kernel: every f32 value an operation
//! creates is replaced by its canonical form, so a device that flushes
//! denormals to zero and one that keeps them, or two that make different
//! NaNs, give the same bits.
//!
//! The rule, applied to the bits `b` of each f32 (each component of a
//! vector or matrix), in the integer domain so no device can flush it
//! again:
//!
//! - a denormal or a zero (exponent field zero) becomes `+0.0`: a
//!   flushing device turns a denormal into a zero, and drivers disagree on
//!   the sign of zeros (lavapipe folds `x * 0.0` to `+0.0` for negative
//!   `x` and `-0.0 + 0.0` to `-0.0`, against IEEE), so only one zero is
//!   kept;
//! - a NaN becomes `0x7fc00000`;
//! - anything else is kept.
//!
//! It is applied after every expression that can make a new float: `+ - *`
//! and negation, float builtins, conversions and bitcasts to f32, loads of
//! f32 from memory (inputs may hold denormals or odd NaNs), and component
//! reads out of loaded arrays and structs. Float literals and constants are
//! rewritten in place. What remains (selects, swizzles, splats, composes,
//! function arguments and results) only moves values that are already
//! canonical, so every float any operation sees is canonical too.

use naga::valid::{FunctionInfo, ModuleInfo};
use naga::{
    Arena, BinaryOperator, Block, Expression, Function, Handle, Literal, Module, Range, ScalarKind,
    Span, Statement, Type, TypeInner, UniqueArena, VectorSize,
};

use crate::GpuError;

/// The canonical NaN.
pub const NAN_BITS: u32 = 0x7fc0_0000;
const EXPONENT: u32 = 0x7f80_0000;
const MAGNITUDE: u32 = 0x7fff_ffff;

/// The canonical form of `bits`, an f32's bits.
pub fn canonical_bits(bits: u32) -> u32 {
    if bits & EXPONENT == 0 {
        0
    } else if bits & MAGNITUDE > EXPONENT {
        NAN_BITS
    } else {
        bits
    }
}

/// The canonical form of `value`.
pub fn canonical(value: f32) -> f32 {
    f32::from_bits(canonical_bits(value.to_bits()))
}

/// Makes every float in `module` canonical (see the module's doc).
/// `info` is `module`'s validation info.
pub fn canonicalize(module: &mut Module, info: &ModuleInfo) -> Result<(), GpuError> {
    for (_, expression) in module.global_expressions.iter_mut() {
        canonical_literal(expression);
    }
    for (handle, function) in module.functions.iter_mut() {
        rewrite(function, &info[handle], &mut module.types)?;
    }
    for (index, entry) in module.entry_points.iter_mut().enumerate() {
        rewrite(
            &mut entry.function,
            info.get_entry_point(index),
            &mut module.types,
        )?;
    }
    Ok(())
}

fn canonical_literal(expression: &mut Expression) {
    if let Expression::Literal(Literal::F32(value)) = expression {
        *value = canonical(*value);
    }
}

/// The float shape of a value: a scalar, a vector or a matrix of f32.
#[derive(Clone, Copy)]
enum Shape {
    Scalar,
    Vector(VectorSize),
    Matrix {
        columns: VectorSize,
        rows: VectorSize,
    },
}

fn float_shape(inner: &TypeInner) -> Option<Shape> {
    match *inner {
        TypeInner::Scalar(scalar) if scalar.kind == ScalarKind::Float => Some(Shape::Scalar),
        TypeInner::Vector { size, scalar } if scalar.kind == ScalarKind::Float => {
            Some(Shape::Vector(size))
        }
        TypeInner::Matrix { columns, rows, .. } => Some(Shape::Matrix { columns, rows }),
        _ => None,
    }
}

/// Whether `expression`, of a float shape, can hold a float no canonical
/// operand gave it. `is_composite(base)` says whether `base` is an array
/// or struct value.
fn creates_float(
    expression: &Expression,
    is_composite: &dyn Fn(Handle<Expression>) -> bool,
) -> bool {
    match *expression {
        Expression::Binary { .. }
        | Expression::Unary { .. }
        | Expression::Math { .. }
        | Expression::As { .. }
        | Expression::Load { .. } => true,
        Expression::Access { base, .. } | Expression::AccessIndex { base, .. } => {
            is_composite(base)
        }
        _ => false,
    }
}

/// Rebuilds `function`'s expressions in order, each float-creating one
/// followed by its canonical form, and points every use at the canonical
/// form. Emit ranges grow to cover what was inserted.
fn rewrite(
    function: &mut Function,
    info: &FunctionInfo,
    types: &mut UniqueArena<Type>,
) -> Result<(), GpuError> {
    let is_composite = |handle: Handle<Expression>| {
        matches!(
            info[handle].ty.inner_with(types),
            TypeInner::Array { .. } | TypeInner::Struct { .. }
        )
    };
    let creating: Vec<Option<Shape>> = function
        .expressions
        .iter()
        .map(|(handle, expression)| {
            float_shape(info[handle].ty.inner_with(types))
                .filter(|_| creates_float(expression, &is_composite))
        })
        .collect();
    for (_, expression) in function.expressions.iter_mut() {
        canonical_literal(expression);
    }
    if creating.iter().all(Option::is_none) {
        return Ok(());
    }

    let mut old = std::mem::take(&mut function.expressions);
    // The masks the rule needs come first: literals are never emitted, so
    // they cannot sit inside an `Emit` range.
    let mut expressions = Arena::new();
    let literals = [0, EXPONENT, MAGNITUDE, NAN_BITS]
        .map(|value| expressions.append(Expression::Literal(Literal::U32(value)), Span::UNDEFINED));
    let mut builder = Builder {
        expressions,
        literals,
    };
    // For each old expression: its copy, and the handle its uses now take
    // (its canonical form, the last expression appended for it).
    let mut copies = Vec::with_capacity(old.len());
    let mut uses: Vec<Handle<Expression>> = Vec::with_capacity(old.len());
    for (handle, expression, span) in old.drain() {
        let copy = remap_expression(expression, &|operand| uses[operand.index()])?;
        let copy = builder.expressions.append(copy, span);
        let canonical = match creating[handle.index()] {
            Some(shape) => {
                let ty = match shape {
                    Shape::Matrix { .. } => Some(match info[handle].ty {
                        naga::proc::TypeResolution::Handle(ty) => ty,
                        naga::proc::TypeResolution::Value(ref value) => types.insert(
                            Type {
                                name: None,
                                inner: value.clone(),
                            },
                            Span::UNDEFINED,
                        ),
                    }),
                    _ => None,
                };
                builder.canonical(copy, shape, ty)
            }
            None => copy,
        };
        copies.push(copy);
        uses.push(canonical);
    }
    function.expressions = builder.expressions;
    let map = |handle: Handle<Expression>| uses[handle.index()];
    let result_map = |handle: Handle<Expression>| copies[handle.index()];
    for (_, variable) in function.local_variables.iter_mut() {
        variable.init = variable.init.map(map);
    }
    function.named_expressions = std::mem::take(&mut function.named_expressions)
        .into_iter()
        .map(|(handle, name)| (map(handle), name))
        .collect();
    let body = std::mem::take(&mut function.body);
    let remap = Remap {
        uses: &map,
        results: &result_map,
        copies: &copies,
        lasts: &uses,
    };
    function.body = remap.block(body)?;
    Ok(())
}

/// Appends the canonicalizing expressions.
struct Builder {
    expressions: Arena<Expression>,
    /// Literals 0, the exponent mask, the magnitude mask and the canonical
    /// NaN, as u32.
    literals: [Handle<Expression>; 4],
}

impl Builder {
    fn emit(&mut self, expression: Expression) -> Handle<Expression> {
        self.expressions.append(expression, Span::UNDEFINED)
    }

    fn binary(
        &mut self,
        op: BinaryOperator,
        left: Handle<Expression>,
        right: Handle<Expression>,
    ) -> Handle<Expression> {
        self.emit(Expression::Binary { op, left, right })
    }

    /// The canonical form of `value`; `ty` is its type when a matrix.
    fn canonical(
        &mut self,
        value: Handle<Expression>,
        shape: Shape,
        ty: Option<Handle<Type>>,
    ) -> Handle<Expression> {
        match shape {
            Shape::Scalar => self.canonical_vector(value, None),
            Shape::Vector(size) => self.canonical_vector(value, Some(size)),
            Shape::Matrix { columns, rows } => {
                let components = (0..columns as u32)
                    .map(|index| {
                        let column = self.emit(Expression::AccessIndex { base: value, index });
                        self.canonical_vector(column, Some(rows))
                    })
                    .collect();
                self.emit(Expression::Compose {
                    ty: ty.expect("a matrix's type"),
                    components,
                })
            }
        }
    }

    /// The rule on a scalar (`size` none) or a vector, component-wise.
    fn canonical_vector(
        &mut self,
        value: Handle<Expression>,
        size: Option<VectorSize>,
    ) -> Handle<Expression> {
        let [zero, exponent, magnitude, nan] = self.literals.map(|literal| match size {
            None => literal,
            Some(size) => self.emit(Expression::Splat {
                size,
                value: literal,
            }),
        });
        let bits = self.emit(Expression::As {
            expr: value,
            kind: ScalarKind::Uint,
            convert: None,
        });
        let exponent_bits = self.binary(BinaryOperator::And, bits, exponent);
        let tiny = self.binary(BinaryOperator::Equal, exponent_bits, zero);
        let magnitude_bits = self.binary(BinaryOperator::And, bits, magnitude);
        let is_nan = self.binary(BinaryOperator::Greater, magnitude_bits, exponent);
        let kept = self.emit(Expression::Select {
            condition: is_nan,
            accept: nan,
            reject: bits,
        });
        let chosen = self.emit(Expression::Select {
            condition: tiny,
            accept: zero,
            reject: kept,
        });
        self.emit(Expression::As {
            expr: chosen,
            kind: ScalarKind::Float,
            convert: None,
        })
    }
}

/// Refused by the exact class before this pass runs.
fn unsupported(what: &str) -> GpuError {
    GpuError::NotExact(format!("{what} cannot be made canonical"))
}

/// `expression` with every operand `map`ped.
fn remap_expression(
    expression: Expression,
    map: &dyn Fn(Handle<Expression>) -> Handle<Expression>,
) -> Result<Expression, GpuError> {
    let option = |handle: Option<Handle<Expression>>| handle.map(map);
    Ok(match expression {
        Expression::Compose { ty, components } => Expression::Compose {
            ty,
            components: components.into_iter().map(map).collect(),
        },
        Expression::Access { base, index } => Expression::Access {
            base: map(base),
            index: map(index),
        },
        Expression::AccessIndex { base, index } => Expression::AccessIndex {
            base: map(base),
            index,
        },
        Expression::Splat { size, value } => Expression::Splat {
            size,
            value: map(value),
        },
        Expression::Swizzle {
            size,
            vector,
            pattern,
        } => Expression::Swizzle {
            size,
            vector: map(vector),
            pattern,
        },
        Expression::Load { pointer } => Expression::Load {
            pointer: map(pointer),
        },
        Expression::Unary { op, expr } => Expression::Unary {
            op,
            expr: map(expr),
        },
        Expression::Binary { op, left, right } => Expression::Binary {
            op,
            left: map(left),
            right: map(right),
        },
        Expression::Select {
            condition,
            accept,
            reject,
        } => Expression::Select {
            condition: map(condition),
            accept: map(accept),
            reject: map(reject),
        },
        Expression::Relational { fun, argument } => Expression::Relational {
            fun,
            argument: map(argument),
        },
        Expression::Math {
            fun,
            arg,
            arg1,
            arg2,
            arg3,
        } => Expression::Math {
            fun,
            arg: map(arg),
            arg1: option(arg1),
            arg2: option(arg2),
            arg3: option(arg3),
        },
        Expression::As {
            expr,
            kind,
            convert,
        } => Expression::As {
            expr: map(expr),
            kind,
            convert,
        },
        Expression::ArrayLength(array) => Expression::ArrayLength(map(array)),
        Expression::Derivative { axis, ctrl, expr } => Expression::Derivative {
            axis,
            ctrl,
            expr: map(expr),
        },
        Expression::ImageSample { .. }
        | Expression::ImageLoad { .. }
        | Expression::ImageQuery { .. } => return Err(unsupported("a texture")),
        Expression::RayQueryVertexPositions { .. } | Expression::RayQueryGetIntersection { .. } => {
            return Err(unsupported("a ray query"));
        }
        Expression::CooperativeLoad { .. } | Expression::CooperativeMultiplyAdd { .. } => {
            return Err(unsupported("a cooperative matrix"));
        }
        // No operands.
        other @ (Expression::Literal(_)
        | Expression::Constant(_)
        | Expression::Override(_)
        | Expression::ZeroValue(_)
        | Expression::FunctionArgument(_)
        | Expression::GlobalVariable(_)
        | Expression::LocalVariable(_)
        | Expression::CallResult(_)
        | Expression::AtomicResult { .. }
        | Expression::WorkGroupUniformLoadResult { .. }
        | Expression::RayQueryProceedResult
        | Expression::SubgroupBallotResult
        | Expression::SubgroupOperationResult { .. }) => other,
    })
}

/// Points a function's statements at the rebuilt expressions.
struct Remap<'a> {
    /// Where a use of an old expression now points: its canonical form.
    uses: &'a dyn Fn(Handle<Expression>) -> Handle<Expression>,
    /// Where a statement's result slot now points: the copy itself.
    results: &'a dyn Fn(Handle<Expression>) -> Handle<Expression>,
    copies: &'a [Handle<Expression>],
    /// The last expression appended for each old one (its use).
    lasts: &'a [Handle<Expression>],
}

impl Remap<'_> {
    fn block(&self, block: Block) -> Result<Block, GpuError> {
        let mut out = Block::with_capacity(block.len());
        for (statement, span) in block.span_into_iter() {
            out.push(self.statement(statement)?, span);
        }
        Ok(out)
    }

    fn statement(&self, statement: Statement) -> Result<Statement, GpuError> {
        let map = self.uses;
        Ok(match statement {
            Statement::Emit(range) => match range.first_and_last() {
                Some((first, last)) => Statement::Emit(Range::new_from_bounds(
                    self.copies[first.index()],
                    self.lasts[last.index()],
                )),
                None => Statement::Emit(range),
            },
            Statement::Block(block) => Statement::Block(self.block(block)?),
            Statement::If {
                condition,
                accept,
                reject,
            } => Statement::If {
                condition: map(condition),
                accept: self.block(accept)?,
                reject: self.block(reject)?,
            },
            Statement::Switch { selector, cases } => Statement::Switch {
                selector: map(selector),
                cases: cases
                    .into_iter()
                    .map(|mut case| {
                        case.body = self.block(std::mem::take(&mut case.body))?;
                        Ok(case)
                    })
                    .collect::<Result<_, GpuError>>()?,
            },
            Statement::Loop {
                body,
                continuing,
                break_if,
            } => Statement::Loop {
                body: self.block(body)?,
                continuing: self.block(continuing)?,
                break_if: break_if.map(map),
            },
            Statement::Return { value } => Statement::Return {
                value: value.map(map),
            },
            Statement::Store { pointer, value } => Statement::Store {
                pointer: map(pointer),
                value: map(value),
            },
            Statement::Atomic {
                pointer,
                fun,
                value,
                result,
            } => Statement::Atomic {
                pointer: map(pointer),
                fun: match fun {
                    naga::AtomicFunction::Exchange {
                        compare: Some(compare),
                    } => naga::AtomicFunction::Exchange {
                        compare: Some(map(compare)),
                    },
                    other => other,
                },
                value: map(value),
                result: result.map(self.results),
            },
            Statement::WorkGroupUniformLoad { pointer, result } => {
                Statement::WorkGroupUniformLoad {
                    pointer: map(pointer),
                    result: (self.results)(result),
                }
            }
            Statement::Call {
                function,
                arguments,
                result,
            } => Statement::Call {
                function,
                arguments: arguments.into_iter().map(map).collect(),
                result: result.map(self.results),
            },
            Statement::ImageStore { .. } | Statement::ImageAtomic { .. } => {
                return Err(unsupported("a texture"));
            }
            Statement::RayQuery { .. } | Statement::RayPipelineFunction(_) => {
                return Err(unsupported("a ray query"));
            }
            Statement::SubgroupBallot { .. }
            | Statement::SubgroupGather { .. }
            | Statement::SubgroupCollectiveOperation { .. } => {
                return Err(unsupported("a subgroup operation"));
            }
            Statement::CooperativeStore { .. } => return Err(unsupported("a cooperative matrix")),
            other @ (Statement::Break
            | Statement::Continue
            | Statement::Kill
            | Statement::ControlBarrier(_)
            | Statement::MemoryBarrier(_)) => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every handle `function` uses as an operand, with whether the user
    /// is a bitcast to u32 (the rule's first step).
    fn uses(function: &Function) -> Vec<(Handle<Expression>, bool)> {
        let found = std::cell::RefCell::new(Vec::new());
        for (_, expression) in function.expressions.iter() {
            let into_rule = matches!(
                expression,
                Expression::As {
                    kind: ScalarKind::Uint,
                    convert: None,
                    ..
                } | Expression::AccessIndex { .. }
            );
            remap_expression(expression.clone(), &|operand| {
                found.borrow_mut().push((operand, into_rule));
                operand
            })
            .expect("supported");
        }
        let record = |handle| {
            found.borrow_mut().push((handle, false));
            handle
        };
        let keep = |handle| handle;
        let copies: Vec<_> = function.expressions.iter().map(|(h, _)| h).collect();
        Remap {
            uses: &record,
            results: &keep,
            copies: &copies,
            lasts: &copies,
        }
        .block(function.body.clone())
        .expect("supported");
        found.into_inner()
    }

    fn validate(module: &Module) -> ModuleInfo {
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(module)
        .unwrap_or_else(|error| panic!("{error:?}"))
    }

    #[test]
    fn every_float_an_operation_creates_is_used_only_by_the_rule() {
        let wgsl = "struct Pair { a: f32, b: f32 }\n\
            @group(0) @binding(0) var<storage, read> xs: array<f32>;\n\
            @group(0) @binding(1) var<storage, read> vs: array<vec4<f32>>;\n\
            @group(0) @binding(2) var<storage, read> ps: array<Pair>;\n\
            @group(0) @binding(3) var<storage, read_write> out: array<f32>;\n\
            var<workgroup> shared_value: f32;\n\
            fn helper(x: f32) -> f32 { return floor(x * 3.0) - abs(x); }\n\
            @compute @workgroup_size(1)\n\
            fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                let x = xs[id.x];\n\
                let v = vs[id.x] * x + vec4(1e-40);\n\
                let p = ps[id.x];\n\
                shared_value = -x;\n\
                let w = shared_value + f32(id.x) + bitcast<f32>(id.y);\n\
                out[id.x] = helper(v.y + p.a * p.b + w);\n\
            }";
        let mut module = naga::front::wgsl::parse_str(wgsl).expect("parses");
        let info = validate(&module);
        canonicalize(&mut module, &info).expect("canonical");
        let info = validate(&module);
        let functions = module
            .functions
            .iter()
            .map(|(handle, function)| (function, &info[handle]))
            .chain([(&module.entry_points[0].function, info.get_entry_point(0))]);
        let mut checked = 0;
        for (function, function_info) in functions {
            let is_composite = |handle: Handle<Expression>| {
                matches!(
                    function_info[handle].ty.inner_with(&module.types),
                    TypeInner::Array { .. } | TypeInner::Struct { .. }
                )
            };
            let all_uses = uses(function);
            for (handle, expression) in function.expressions.iter() {
                let float = float_shape(function_info[handle].ty.inner_with(&module.types));
                let rule_output = matches!(
                    expression,
                    Expression::As {
                        kind: ScalarKind::Float,
                        convert: None,
                        ..
                    }
                );
                if float.is_none() || rule_output || !creates_float(expression, &is_composite) {
                    continue;
                }
                checked += 1;
                for (used, into_rule) in &all_uses {
                    assert!(
                        *used != handle || *into_rule,
                        "{expression:?} is used before it is made canonical"
                    );
                }
            }
            // No literal is denormal any more.
            for (_, expression) in function.expressions.iter() {
                if let Expression::Literal(Literal::F32(value)) = expression {
                    assert_eq!(canonical(*value).to_bits(), value.to_bits());
                }
            }
        }
        // Loads of f32, vectors and a struct's fields, `* + -`, negation,
        // floor, abs, conversions and bitcasts.
        assert!(checked >= 14, "{checked} expressions checked");
    }
}
