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
//!
//! The job's fuel is enforced inside the kernel too, so a runaway task
//! stops on the device instead of running on after the host gave up: every
//! [`FLUSH_INTERVAL`] iterations an invocation adds what it used to the
//! shared total and stops looping (flag [`FLAG_BUDGET`]) once the total is
//! past the budget. The total only ever holds fuel really used, so an
//! invocation can see it past the budget only in a run whose whole fuel is
//! past it: a run that fits is never touched.

use std::num::NonZeroU32;

use naga::{
    AddressSpace, ArraySize, AtomicFunction, BinaryOperator, Block, Expression, Function,
    GlobalVariable, Handle, Literal, LocalVariable, MemoryDecorations, Module, ResourceBinding,
    Scalar, Span, Statement, StorageAccess, Type, TypeInner,
};

/// Iterations one execution of one loop may run; past it the invocation
/// stops looping and the task fails as [`crate::Stopped::LoopLimit`].
pub const LOOP_ITERATIONS_MAX: u32 = 60_000;

/// Words of the meter buffer: fuel (low, high), the stop flags, then the
/// budget's words (see [`meter_words`]).
pub const METER_WORDS: u64 = 6;
/// Flag: a loop ran past [`LOOP_ITERATIONS_MAX`].
pub const FLAG_LOOP_LIMIT: u32 = 1;
/// Flag: an invocation ran past its fuel.
pub const FLAG_OUT_OF_FUEL: u32 = 2;
/// Flag: the fuel of the whole run went past the budget.
pub const FLAG_BUDGET: u32 = 4;
/// Loop iterations between an invocation's flushes of its fuel to the
/// shared total (a power of two).
pub const FLUSH_INTERVAL: u32 = 1024;

/// Meter word: the fuel used, low 32 bits.
const FUEL_LOW: u32 = 0;
/// Meter word: the fuel used, high 32 bits.
const FUEL_HIGH: u32 = 1;
/// Meter word: the stop flags.
const FLAGS: u32 = 2;
/// Meter word: the fuel used in budget units (`fuel >> UNIT_SHIFT`,
/// wrapping), one word so that a single atomic read gives a value the
/// total really passed; two words read one after the other could combine
/// an old high word with a new low one.
const UNITS: u32 = 3;
/// Meter word, written by the host: the budget unit as a shift (`1 <<
/// shift` fuel).
const UNIT_SHIFT: u32 = 4;
/// Meter word, written by the host: the budget in units; the run stops
/// once `UNITS` is past it. `u32::MAX` never stops.
const BUDGET_UNITS: u32 = 5;

/// The meter buffer's first contents for a run that may use `budget` fuel
/// (`u64::MAX`: no budget). The budget is held in units of `1 << shift`
/// fuel, the smallest unit of at least 1,024 fuel that keeps the count
/// under 2^31, so the 32-bit count of units wraps only far past the
/// budget. A run stops once it has used more units than the budget holds,
/// which is more than the budget.
pub fn meter_words(budget: u64) -> [u32; METER_WORDS as usize] {
    let bits = u64::BITS - budget.leading_zeros();
    let shift = bits.saturating_sub(31).clamp(FLUSH_INTERVAL.ilog2(), 31);
    let units = u32::try_from(budget >> shift).unwrap_or(u32::MAX);
    let mut words = [0; METER_WORDS as usize];
    words[UNIT_SHIFT as usize] = shift;
    words[BUDGET_UNITS as usize] = units;
    words
}

/// What the pass added, per function.
struct Meter {
    /// The invocation's fuel, less the one unit its return adds.
    fuel: Handle<GlobalVariable>,
    /// How much of `fuel` is already in the meter.
    flushed: Handle<GlobalVariable>,
    /// `FLUSH_INTERVAL - 1` while the invocation runs on; zero before its
    /// first check of the budget and once over it, so that every loop
    /// iteration then checks (and, once over, stops).
    due_mask: Handle<GlobalVariable>,
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
    let words = NonZeroU32::new(METER_WORDS as u32).expect("not zero");
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
    let flushed = private("idlegrid_flushed");
    let due_mask = private("idlegrid_due_mask");
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
        flushed,
        due_mask,
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

    /// `fuel += 1; counter += 1;` then a break, flagged, past either limit,
    /// and every [`FLUSH_INTERVAL`] iterations a flush and a check of the
    /// budget.
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
        let due_mask = w.fixed(Expression::GlobalVariable(self.due_mask));
        let zero = w.literal(0);
        let mask = w.load(due_mask);
        let masked = w.binary(BinaryOperator::And, fuel_now, mask);
        let due = w.binary(BinaryOperator::Equal, masked, zero);
        w.close();
        let accept = self.checkpoint(&mut *w.function, fuel_now, mask);
        w.statement(Statement::If {
            condition: due,
            accept,
            reject: Block::new(),
        });
        w.finish()
    }

    /// Flushes the fuel used since the last flush (unless this is the
    /// invocation's first check, or it is already over the budget), then
    /// stops the loop, flagged, if the run's total is past the budget. The
    /// stop holds: the mask stays zero, so every later iteration of any
    /// loop checks again and breaks.
    fn checkpoint(
        &self,
        function: &mut Function,
        fuel_now: Handle<Expression>,
        mask: Handle<Expression>,
    ) -> Block {
        let mut w = Writer::new(function);
        let zero = w.literal(0);
        let started = w.binary(BinaryOperator::NotEqual, mask, zero);
        w.close();
        let flush = {
            let mut inner = Writer::new(&mut *w.function);
            let flushed = inner.fixed(Expression::GlobalVariable(self.flushed));
            let loaded = inner.load(flushed);
            let used = inner.binary(BinaryOperator::Subtract, fuel_now, loaded);
            self.add_fuel(&mut inner, used);
            inner.statement(Statement::Store {
                pointer: flushed,
                value: fuel_now,
            });
            Block::from_vec(inner.finish())
        };
        w.statement(Statement::If {
            condition: started,
            accept: flush,
            reject: Block::new(),
        });
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let units = w.emit(Expression::AccessIndex {
            base: buffer,
            index: UNITS,
        });
        let budget = w.emit(Expression::AccessIndex {
            base: buffer,
            index: BUDGET_UNITS,
        });
        let used = w.load(units);
        let allowed = w.load(budget);
        let over = w.binary(BinaryOperator::Greater, used, allowed);
        w.close();
        let stop = {
            let mut inner = Writer::new(&mut *w.function);
            let due_mask = inner.fixed(Expression::GlobalVariable(self.due_mask));
            let zero = inner.literal(0);
            inner.statement(Statement::Store {
                pointer: due_mask,
                value: zero,
            });
            let mut statements = inner.finish();
            let raise = self.raise(&mut *w.function, FLAG_BUDGET);
            statements.extend(raise.span_into_iter().map(|(statement, _)| statement));
            Block::from_vec(statements)
        };
        w.statement(Statement::If {
            condition: over,
            accept: stop,
            reject: Block::new(),
        });
        let due_mask = w.fixed(Expression::GlobalVariable(self.due_mask));
        let interval = w.literal(FLUSH_INTERVAL - 1);
        w.statement(Statement::Store {
            pointer: due_mask,
            value: interval,
        });
        Block::from_vec(w.finish())
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

    /// `meter.fuel += fuel + 1 - flushed`, then `meter.flags |= flags`.
    fn flush(&self, entry: &mut Function) -> Vec<Statement> {
        let mut w = Writer::new(entry);
        let fuel = w.fixed(Expression::GlobalVariable(self.fuel));
        let flushed = w.fixed(Expression::GlobalVariable(self.flushed));
        let flags = w.fixed(Expression::GlobalVariable(self.flags));
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let one = w.literal(1);
        let loaded = w.load(fuel);
        let total = w.binary(BinaryOperator::Add, loaded, one);
        let loaded = w.load(flushed);
        let used = w.binary(BinaryOperator::Subtract, total, loaded);
        self.add_fuel(&mut w, used);
        let word = w.emit(Expression::AccessIndex {
            base: buffer,
            index: FLAGS,
        });
        let raised = w.load(flags);
        w.statement(Statement::Atomic {
            pointer: word,
            fun: AtomicFunction::InclusiveOr,
            value: raised,
            result: None,
        });
        w.finish()
    }

    /// Adds `used` to the meter's fuel as a 64-bit sum in two words (the
    /// carry counted exactly, so the order invocations flush in does not
    /// matter) and to its count of budget units: the number of unit
    /// boundaries this addition crossed, which sum over all additions to
    /// the total's units whatever their order.
    fn add_fuel(&self, w: &mut Writer<'_>, used: Handle<Expression>) {
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let one = w.literal(1);
        let all = w.literal(u32::MAX);
        let zero = w.literal(0);
        let [low, high, units, unit_shift] =
            [FUEL_LOW, FUEL_HIGH, UNITS, UNIT_SHIFT].map(|index| {
                w.emit(Expression::AccessIndex {
                    base: buffer,
                    index,
                })
            });
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
        // ((after >> shift) - (before >> shift)) modulo 2^(32 - shift):
        // exact for any `used` under 2^32, wrap or not.
        let shift = w.load(unit_shift);
        let units_after = w.binary(BinaryOperator::ShiftRight, after, shift);
        let units_before = w.binary(BinaryOperator::ShiftRight, before, shift);
        let difference = w.binary(BinaryOperator::Subtract, units_after, units_before);
        let span = w.binary(BinaryOperator::ShiftRight, all, shift);
        let crossed = w.binary(BinaryOperator::And, difference, span);
        let any = w.binary(BinaryOperator::NotEqual, crossed, zero);
        w.close();
        let count = vec![Statement::Atomic {
            pointer: units,
            fun: AtomicFunction::Add,
            value: crossed,
            result: None,
        }];
        w.statement(Statement::If {
            condition: any,
            accept: Block::from_vec(count),
            reject: Block::new(),
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget in units and the unit: `units << shift` is the budget
    /// rounded down to a unit, the count stays under 2^31 while the unit
    /// can grow, and no budget never stops.
    #[test]
    fn the_budget_is_held_in_units_that_round_it_down() {
        for budget in [
            0,
            1,
            1_023,
            1_024,
            200_000,
            1 << 40,
            (1 << 41) - 1,
            1 << 41,
            123_456_789_012_345,
            1 << 62,
        ] {
            let words = meter_words(budget);
            let (shift, units) = (
                words[UNIT_SHIFT as usize],
                u64::from(words[BUDGET_UNITS as usize]),
            );
            assert!((10..=31).contains(&shift), "{budget}: {shift}");
            assert!(units << shift <= budget, "{budget}");
            assert!(budget < (units + 1) << shift, "{budget}");
            assert!(units < 1 << 31 || shift == 31, "{budget}");
            assert_eq!(shift == 10, budget < 1 << 41, "{budget}");
            assert_eq!(words[..3], [0, 0, 0]);
        }
        assert_eq!(meter_words(u64::MAX)[BUDGET_UNITS as usize], u32::MAX);
    }
}
