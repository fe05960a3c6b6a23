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
//! stops on the device instead of running on after the host gave up: an
//! invocation counts each unit ([`FLUSH_INTERVAL`] or more) of fuel it
//! uses into one shared word, and what is left when it returns, and stops
//! looping (flag [`FLAG_BUDGET`]) once the count is past the budget. The
//! count only ever holds fuel really used, so an invocation can see it
//! past the budget only in a run whose whole fuel is past it: a run that
//! fits is never touched.

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
pub const METER_WORDS: u64 = 7;
/// Flag: a loop ran past [`LOOP_ITERATIONS_MAX`].
pub const FLAG_LOOP_LIMIT: u32 = 1;
/// Flag: an invocation ran past its fuel.
pub const FLAG_OUT_OF_FUEL: u32 = 2;
/// Flag: the fuel of the whole run went past the budget.
pub const FLAG_BUDGET: u32 = 4;
/// The smallest budget unit: an invocation counts a unit every this many
/// loop iterations (more for budgets of 2^41 fuel and up).
pub const FLUSH_INTERVAL: u32 = 1024;

/// Meter word: the fuel used, low 32 bits.
const FUEL_LOW: u32 = 0;
/// Meter word: the fuel used, high 32 bits.
const FUEL_HIGH: u32 = 1;
/// Meter word: the stop flags.
const FLAGS: u32 = 2;
/// Meter word: budget units of fuel used, counted as invocations run (one
/// per unit an invocation used, and the units its remainders add up to
/// when they return). One word, so that a single atomic operation gives a
/// count the run really reached; the two words of the total, read one
/// after the other, could combine an old high word with a new low one.
const UNITS: u32 = 3;
/// Meter word: the sum of what returning invocations used past their
/// last whole unit (wrapping).
const REMAINDERS: u32 = 4;
/// Meter word, written by the host: the budget unit as a shift (`1 <<
/// shift` fuel).
const UNIT_SHIFT: u32 = 5;
/// Meter word, written by the host: the budget in units; the run stops
/// once `UNITS` is past it. `u32::MAX` never stops.
const BUDGET_UNITS: u32 = 6;

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
    /// How much of `fuel` is already counted in the meter's units.
    flushed: Handle<GlobalVariable>,
    /// The unit less one while the invocation runs on; zero once the run is
    /// over its budget, so that every later loop iteration stops.
    due_mask: Handle<GlobalVariable>,
    /// The unit's shift and the budget in units, read from the meter once.
    unit_shift: Handle<GlobalVariable>,
    budget_units: Handle<GlobalVariable>,
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
    let unit_shift = private("idlegrid_unit_shift");
    let budget_units = private("idlegrid_budget_units");
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
        unit_shift,
        budget_units,
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
    meter.prologue(entry);
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
    /// and at every whole unit of fuel a count and a check of the budget.
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

    /// Counts a unit of the invocation's fuel, then stops the loop,
    /// flagged, if the run's count is past the budget. The stop holds: the
    /// mask stays zero, so every later iteration of any loop comes here
    /// and breaks. One atomic operation, as lavapipe runs this block for
    /// every iteration with its lanes masked off.
    fn checkpoint(
        &self,
        function: &mut Function,
        fuel_now: Handle<Expression>,
        mask: Handle<Expression>,
    ) -> Block {
        let mut w = Writer::new(function);
        let zero = w.literal(0);
        let one = w.literal(1);
        let stopped = w.binary(BinaryOperator::Equal, mask, zero);
        w.close();
        w.statement(Statement::If {
            condition: stopped,
            accept: Block::from_vec(vec![Statement::Break]),
            reject: Block::new(),
        });
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let units = w.emit(Expression::AccessIndex {
            base: buffer,
            index: UNITS,
        });
        let before = self.atomic_add(&mut w, units, one);
        let flushed = w.fixed(Expression::GlobalVariable(self.flushed));
        w.statement(Statement::Store {
            pointer: flushed,
            value: fuel_now,
        });
        let budget_units = w.fixed(Expression::GlobalVariable(self.budget_units));
        let after = w.binary(BinaryOperator::Add, before, one);
        let allowed = w.load(budget_units);
        let over = w.binary(BinaryOperator::Greater, after, allowed);
        w.close();
        let stop = self.stop(&mut *w.function, Statement::Break);
        w.statement(Statement::If {
            condition: over,
            accept: stop,
            reject: Block::new(),
        });
        Block::from_vec(w.finish())
    }

    /// `due_mask = 0; flags |= FLAG_BUDGET;` then `last`.
    fn stop(&self, function: &mut Function, last: Statement) -> Block {
        let mut w = Writer::new(function);
        let due_mask = w.fixed(Expression::GlobalVariable(self.due_mask));
        let zero = w.literal(0);
        w.statement(Statement::Store {
            pointer: due_mask,
            value: zero,
        });
        let flags = w.fixed(Expression::GlobalVariable(self.flags));
        let bit = w.literal(FLAG_BUDGET);
        let loaded = w.load(flags);
        let raised = w.binary(BinaryOperator::InclusiveOr, loaded, bit);
        w.statement(Statement::Store {
            pointer: flags,
            value: raised,
        });
        w.statement(last);
        Block::from_vec(w.finish())
    }

    /// At the start of the entry point: reads the unit and the budget,
    /// and returns at once if the run is already past the budget.
    fn prologue(&self, entry: &mut Function) {
        let body = std::mem::take(&mut entry.body);
        let mut w = Writer::new(entry);
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let unit_shift = w.fixed(Expression::GlobalVariable(self.unit_shift));
        let budget_units = w.fixed(Expression::GlobalVariable(self.budget_units));
        let due_mask = w.fixed(Expression::GlobalVariable(self.due_mask));
        let one = w.literal(1);
        let [shift_word, budget_word, units_word] =
            [UNIT_SHIFT, BUDGET_UNITS, UNITS].map(|index| {
                w.emit(Expression::AccessIndex {
                    base: buffer,
                    index,
                })
            });
        let shift = w.load(shift_word);
        let budget = w.load(budget_word);
        let unit = w.binary(BinaryOperator::ShiftLeft, one, shift);
        let mask = w.binary(BinaryOperator::Subtract, unit, one);
        let used = w.load(units_word);
        let over = w.binary(BinaryOperator::Greater, used, budget);
        w.statement(Statement::Store {
            pointer: unit_shift,
            value: shift,
        });
        w.statement(Statement::Store {
            pointer: budget_units,
            value: budget,
        });
        w.statement(Statement::Store {
            pointer: due_mask,
            value: mask,
        });
        let stop = self.stop(&mut *w.function, Statement::Return { value: None });
        w.statement(Statement::If {
            condition: over,
            accept: stop,
            reject: Block::new(),
        });
        let mut statements = w.finish();
        statements.extend(body.span_into_iter().map(|(statement, _)| statement));
        entry.body = Block::from_vec(statements);
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
    /// matter), the part not yet counted in units to the units, then
    /// `meter.flags |= flags`.
    fn flush(&self, entry: &mut Function) -> Vec<Statement> {
        let mut w = Writer::new(entry);
        let fuel = w.fixed(Expression::GlobalVariable(self.fuel));
        let flushed = w.fixed(Expression::GlobalVariable(self.flushed));
        let flags = w.fixed(Expression::GlobalVariable(self.flags));
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let one = w.literal(1);
        let loaded = w.load(fuel);
        let used = w.binary(BinaryOperator::Add, loaded, one);
        let [low, high, word] = [FUEL_LOW, FUEL_HIGH, FLAGS].map(|index| {
            w.emit(Expression::AccessIndex {
                base: buffer,
                index,
            })
        });
        let raised = w.load(flags);
        let before = self.atomic_add(&mut w, low, used);
        let after = w.binary(BinaryOperator::Add, before, used);
        let carried = w.binary(BinaryOperator::Less, after, before);
        w.close();
        w.statement(Statement::If {
            condition: carried,
            accept: Block::from_vec(vec![Statement::Atomic {
                pointer: high,
                fun: AtomicFunction::Add,
                value: one,
                result: None,
            }]),
            reject: Block::new(),
        });
        let counted = w.load(flushed);
        let remainder = w.binary(BinaryOperator::Subtract, used, counted);
        self.add_remainder(&mut w, remainder);
        w.statement(Statement::Atomic {
            pointer: word,
            fun: AtomicFunction::InclusiveOr,
            value: raised,
            result: None,
        });
        w.finish()
    }

    /// Atomically adds `value` at `pointer` (a meter word) and gives the
    /// word as it was before.
    fn atomic_add(
        &self,
        w: &mut Writer<'_>,
        pointer: Handle<Expression>,
        value: Handle<Expression>,
    ) -> Handle<Expression> {
        w.close();
        let before = w.fixed(Expression::AtomicResult {
            ty: self.u32_ty,
            comparison: false,
        });
        w.statement(Statement::Atomic {
            pointer,
            fun: AtomicFunction::Add,
            value,
            result: Some(before),
        });
        before
    }

    /// Adds `remainder` to the meter's sum of remainders and, to its
    /// units, the number of unit boundaries that addition crossed: over
    /// all invocations these sum to the whole units of the remainders,
    /// whatever the order they return in.
    fn add_remainder(&self, w: &mut Writer<'_>, remainder: Handle<Expression>) {
        let buffer = w.fixed(Expression::GlobalVariable(self.buffer));
        let unit_shift = w.fixed(Expression::GlobalVariable(self.unit_shift));
        let all = w.literal(u32::MAX);
        let zero = w.literal(0);
        let [remainders, units] = [REMAINDERS, UNITS].map(|index| {
            w.emit(Expression::AccessIndex {
                base: buffer,
                index,
            })
        });
        let before = self.atomic_add(w, remainders, remainder);
        // ((after >> shift) - (before >> shift)) modulo 2^(32 - shift):
        // exact for any remainder under 2^32, wrap or not.
        let after = w.binary(BinaryOperator::Add, before, remainder);
        let shift = w.load(unit_shift);
        let units_after = w.binary(BinaryOperator::ShiftRight, after, shift);
        let units_before = w.binary(BinaryOperator::ShiftRight, before, shift);
        let difference = w.binary(BinaryOperator::Subtract, units_after, units_before);
        let span = w.binary(BinaryOperator::ShiftRight, all, shift);
        let crossed = w.binary(BinaryOperator::And, difference, span);
        let any = w.binary(BinaryOperator::NotEqual, crossed, zero);
        w.close();
        w.statement(Statement::If {
            condition: any,
            accept: Block::from_vec(vec![Statement::Atomic {
                pointer: units,
                fun: AtomicFunction::Add,
                value: crossed,
                result: None,
            }]),
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
