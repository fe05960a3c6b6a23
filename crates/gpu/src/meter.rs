//! Deterministic metering, written into the kernel: every invocation counts
//! one unit of fuel plus one per loop iteration it runs, stops looping
//! once past its budget or once one loop has run [`LOOP_ITERATIONS_MAX`]
//! times, and adds its count and what stopped it to a meter buffer the
//! host reads back. The count depends only on the kernel and its inputs,
//! so every device charges the same.
//!
//! The loop bound is part of exactness, not only of safety: Mesa's
//! lavapipe silently ends any loop after 65,535 iterations (measured: a
//! hash chain of a million steps returned the value after 65,535), which a
//! real GPU does not. Stopping every loop, on every device, at the same
//! smaller count keeps them equal.

use std::num::NonZeroU32;

use naga::{
    AddressSpace, ArraySize, AtomicFunction, BinaryOperator, Block, Expression, Function,
    GlobalVariable, Handle, Literal, LocalVariable, MemoryDecorations, Module, ResourceBinding,
    Scalar, Span, Statement, StorageAccess, Type, TypeInner,
};

/// Iterations one execution of one loop may run; past it the invocation
/// stops looping and the task fails as [`crate::Stopped::LoopLimit`].
pub const LOOP_ITERATIONS_MAX: u32 = 60_000;

/// Words of the meter buffer: fuel (low, high) and the stop flags.
pub const METER_WORDS: u64 = 3;
/// Flag: a loop ran past [`LOOP_ITERATIONS_MAX`].
pub const FLAG_LOOP_LIMIT: u32 = 1;
/// Flag: an invocation ran past its fuel.
pub const FLAG_OUT_OF_FUEL: u32 = 2;

/// What the pass added, per function.
struct Meter {
    fuel: Handle<GlobalVariable>,
    flags: Handle<GlobalVariable>,
    buffer: Handle<GlobalVariable>,
    u32_ty: Handle<Type>,
    fuel_max: u32,
}

/// Instruments `module`'s entry point `index` and every function with the
/// meter, bound at `binding`; each invocation may use `fuel_max` fuel.
pub fn instrument(module: &mut Module, index: usize, binding: u32, fuel_max: u32) {
    let u32_ty = module.types.insert(
        Type {
            name: None,
            inner: TypeInner::Scalar(Scalar::U32),
        },
        Span::UNDEFINED,
    );
    let atomic = module.types.insert(
        Type {
            name: None,
            inner: TypeInner::Atomic(Scalar::U32),
        },
        Span::UNDEFINED,
    );
    let words = NonZeroU32::new(METER_WORDS as u32).expect("three");
    let array = module.types.insert(
        Type {
            name: None,
            inner: TypeInner::Array {
                base: atomic,
                size: ArraySize::Constant(words),
                stride: 4,
            },
        },
        Span::UNDEFINED,
    );
    let mut private = |name: &str| {
        module.global_variables.append(
            GlobalVariable {
                name: Some(name.to_owned()),
                space: AddressSpace::Private,
                binding: None,
                ty: u32_ty,
                init: None,
                memory_decorations: MemoryDecorations::empty(),
            },
            Span::UNDEFINED,
        )
    };
    let fuel = private("idlegrid_fuel");
    let flags = private("idlegrid_flags");
    let buffer = module.global_variables.append(
        GlobalVariable {
            name: Some("idlegrid_meter".to_owned()),
            space: AddressSpace::Storage {
                access: StorageAccess::LOAD | StorageAccess::STORE,
            },
            binding: Some(ResourceBinding { group: 0, binding }),
            ty: array,
            init: None,
            memory_decorations: MemoryDecorations::empty(),
        },
        Span::UNDEFINED,
    );
    let meter = Meter {
        fuel,
        flags,
        buffer,
        u32_ty,
        fuel_max,
    };
    for (_, function) in module.functions.iter_mut() {
        meter.loops(function);
    }
    let entry = &mut module.entry_points[index].function;
    meter.loops(entry);
    meter.flushes(entry);
}

/// Builds statements in one function: pre-emitted expressions (literals,
/// variables) go straight into the arena, the rest into `Emit` ranges.
struct Writer<'a> {
    function: &'a mut Function,
    statements: Vec<Statement>,
    /// Where the current run of emitted expressions starts.
    emitting: Option<usize>,
}

impl<'a> Writer<'a> {
    fn new(function: &'a mut Function) -> Self {
        Self {
            function,
            statements: Vec::new(),
            emitting: None,
        }
    }

    /// An expression that needs no `Emit` (a literal, a variable).
    fn fixed(&mut self, expression: Expression) -> Handle<Expression> {
        self.close();
        self.function
            .expressions
            .append(expression, Span::UNDEFINED)
    }

    fn literal(&mut self, value: u32) -> Handle<Expression> {
        self.fixed(Expression::Literal(Literal::U32(value)))
    }

    /// An expression evaluated here, in order.
    fn emit(&mut self, expression: Expression) -> Handle<Expression> {
        if self.emitting.is_none() {
            self.emitting = Some(self.function.expressions.len());
        }
        self.function
            .expressions
            .append(expression, Span::UNDEFINED)
    }

    /// Ends the current `Emit` range.
    fn close(&mut self) {
        if let Some(start) = self.emitting.take() {
            let range = self.function.expressions.range_from(start);
            self.statements.push(Statement::Emit(range));
        }
    }

    fn statement(&mut self, statement: Statement) {
        self.close();
        self.statements.push(statement);
    }

    fn binary(
        &mut self,
        op: BinaryOperator,
        left: Handle<Expression>,
        right: Handle<Expression>,
    ) -> Handle<Expression> {
        self.emit(Expression::Binary { op, left, right })
    }

    fn load(&mut self, pointer: Handle<Expression>) -> Handle<Expression> {
        self.emit(Expression::Load { pointer })
    }

    fn finish(mut self) -> Vec<Statement> {
        self.close();
        self.statements
    }
}

impl Meter {
    /// Counts every loop iteration in `function` and stops loops past the
    /// limits.
    fn loops(&self, function: &mut Function) {
        let body = std::mem::take(&mut function.body);
        function.body = self.block(function, body);
    }

    fn block(&self, function: &mut Function, block: Block) -> Block {
        let mut out = Vec::new();
        for (statement, _) in block.span_into_iter() {
            match statement {
                Statement::Loop {
                    body,
                    continuing,
                    break_if,
                } => {
                    let counter = function.local_variables.append(
                        LocalVariable {
                            name: None,
                            ty: self.u32_ty,
                            init: None,
                        },
                        Span::UNDEFINED,
                    );
                    let mut writer = Writer::new(function);
                    let pointer = writer.fixed(Expression::LocalVariable(counter));
                    let zero = writer.literal(0);
                    writer.statement(Statement::Store {
                        pointer,
                        value: zero,
                    });
                    out.extend(writer.finish());
                    let head = self.loop_head(function, counter);
                    let body = self.block(function, body);
                    let mut new_body = head;
                    new_body.extend(body.span_into_iter().map(|(statement, _)| statement));
                    let continuing = self.block(function, continuing);
                    out.push(Statement::Loop {
                        body: Block::from_vec(new_body),
                        continuing,
                        break_if,
                    });
                }
                other => out.push(map_blocks(other, &mut |inner| self.block(function, inner))),
            }
        }
        Block::from_vec(out)
    }

    /// `fuel += 1; counter += 1;` then a break, flagged, past either limit.
    fn loop_head(&self, function: &mut Function, counter: Handle<LocalVariable>) -> Vec<Statement> {
        let mut w = Writer::new(function);
        let fuel = w.fixed(Expression::GlobalVariable(self.fuel));
        let counter = w.fixed(Expression::LocalVariable(counter));
        let one = w.literal(1);
        let loaded = w.load(fuel);
        let fuel_now = w.binary(BinaryOperator::Add, loaded, one);
        w.statement(Statement::Store {
            pointer: fuel,
            value: fuel_now,
        });
        let loaded = w.load(counter);
        let count = w.binary(BinaryOperator::Add, loaded, one);
        w.statement(Statement::Store {
            pointer: counter,
            value: count,
        });
        for (value, limit, flag) in [
            (count, LOOP_ITERATIONS_MAX, FLAG_LOOP_LIMIT),
            (fuel_now, self.fuel_max, FLAG_OUT_OF_FUEL),
        ] {
            let limit = w.literal(limit);
            let over = w.binary(BinaryOperator::Greater, value, limit);
            w.close();
            let accept = self.raise(&mut *w.function, flag);
            w.statement(Statement::If {
                condition: over,
                accept,
                reject: Block::new(),
            });
        }
        w.finish()
    }

    /// `flags |= flag; break;`
    fn raise(&self, function: &mut Function, flag: u32) -> Block {
        let mut w = Writer::new(function);
        let flags = w.fixed(Expression::GlobalVariable(self.flags));
        let bit = w.literal(flag);
        let loaded = w.load(flags);
        let raised = w.binary(BinaryOperator::InclusiveOr, loaded, bit);
        w.statement(Statement::Store {
            pointer: flags,
            value: raised,
        });
        w.statement(Statement::Break);
        Block::from_vec(w.finish())
    }

    /// Adds the invocation's fuel and flags to the meter before every
    /// return of the entry point and at its end.
    fn flushes(&self, entry: &mut Function) {
        let body = std::mem::take(&mut entry.body);
        let mut body = self.flush_returns(entry, body);
        if !matches!(body.last(), Some(Statement::Return { .. })) {
            for statement in self.flush(entry) {
                body.push(statement, Span::UNDEFINED);
            }
        }
        entry.body = body;
    }

    fn flush_returns(&self, entry: &mut Function, block: Block) -> Block {
        let mut out = Vec::new();
        for (statement, _) in block.span_into_iter() {
            match statement {
                Statement::Return { value } => {
                    out.extend(self.flush(entry));
                    out.push(Statement::Return { value });
                }
                other => out.push(map_blocks(other, &mut |inner| {
                    self.flush_returns(entry, inner)
                })),
            }
        }
        Block::from_vec(out)
    }

    /// `meter.fuel += fuel + 1` as a 64-bit sum in two words (the carry
    /// counted exactly, so the order invocations finish in does not
    /// matter), then `meter.flags |= flags`.
    fn flush(&self, entry: &mut Function) -> Vec<Statement> {
        let mut w = Writer::new(entry);
        let fuel = w.fixed(Expression::GlobalVariable(self.fuel));
        let flags = w.fixed(Expression::GlobalVariable(self.flags));
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let one = w.literal(1);
        let loaded = w.load(fuel);
        let used = w.binary(BinaryOperator::Add, loaded, one);
        let low = w.emit(Expression::AccessIndex {
            base: buffer,
            index: 0,
        });
        let high = w.emit(Expression::AccessIndex {
            base: buffer,
            index: 1,
        });
        let word = w.emit(Expression::AccessIndex {
            base: buffer,
            index: 2,
        });
        let raised = w.load(flags);
        w.close();
        let before = w.fixed(Expression::AtomicResult {
            ty: self.u32_ty,
            comparison: false,
        });
        w.statement(Statement::Atomic {
            pointer: low,
            fun: AtomicFunction::Add,
            value: used,
            result: Some(before),
        });
        let after = w.binary(BinaryOperator::Add, before, used);
        let carried = w.binary(BinaryOperator::Less, after, before);
        w.close();
        let carry = vec![Statement::Atomic {
            pointer: high,
            fun: AtomicFunction::Add,
            value: one,
            result: None,
        }];
        w.statement(Statement::If {
            condition: carried,
            accept: Block::from_vec(carry),
            reject: Block::new(),
        });
        w.statement(Statement::Atomic {
            pointer: word,
            fun: AtomicFunction::InclusiveOr,
            value: raised,
            result: None,
        });
        w.finish()
    }
}

/// `statement` with every block nested in it rewritten by `rewrite`.
fn map_blocks(statement: Statement, rewrite: &mut dyn FnMut(Block) -> Block) -> Statement {
    match statement {
        Statement::Block(inner) => Statement::Block(rewrite(inner)),
        Statement::If {
            condition,
            accept,
            reject,
        } => Statement::If {
            condition,
            accept: rewrite(accept),
            reject: rewrite(reject),
        },
        Statement::Switch { selector, cases } => Statement::Switch {
            selector,
            cases: cases
                .into_iter()
                .map(|mut case| {
                    case.body = rewrite(std::mem::take(&mut case.body));
                    case
                })
                .collect(),
        },
        Statement::Loop {
            body,
            continuing,
            break_if,
        } => Statement::Loop {
            body: rewrite(body),
            continuing: rewrite(continuing),
            break_if,
        },
        other => other,
    }
}
