//! Fuel and the wall-clock backstop, written into the module.
//!
//! wasmtime can meter fuel and interrupt at epochs itself, but each of its
//! checks ends in a call into the runtime on the slow path, and a call
//! clobbers every vector register: Cranelift then keeps a float loop's
//! values on the stack across every iteration. Mandelbrot ran 1.9× its
//! native time with either check and 1.02× with neither. Here the same
//! checks end in a trap instead, so nothing is spilled:
//!
//! - **Fuel** is an `i64` the module keeps in a local of each function
//!   (a register), counting down. Every operator costs what wasmtime's
//!   default table says (1, or 0 for `nop`, `drop`, `block`, `loop`,
//!   `unreachable`, `return`, `else` and `end`), and entering a function 1,
//!   charged at the same points
//!   as wasmtime's: the cost of a straight run of operators is subtracted
//!   at its end (before a branch, `if`, `else`, `end`, `loop` or call), so
//!   a run that finishes uses exactly the fuel it did under wasmtime's
//!   metering. A bulk operator (`memory.copy`, `memory.fill`,
//!   `memory.init`, `table.copy`, `table.fill`, `table.init`,
//!   `table.grow`) also costs its length, a unit per byte or element, and
//!   is checked before it runs unless its length is a constant costing at
//!   most 128 (wasmtime's rule). The instructions the rewrite adds are free. Calls and
//!   returns pass the count through a global (`idlegrid:fuel`) that the
//!   host sets before the task and reads after.
//! - **Checks** at each function's entry and each loop's head (wasmtime's
//!   places, which bound the time between checks by the longest straight
//!   run of code) trap with `unreachable`, after setting the global
//!   `idlegrid:stopped`, when the count is at or below a floor (at the
//!   entry of a function that calls none, 0: see `Metering::enter`). The
//!   floor is read from an internal one-page memory (`idlegrid:interrupt`,
//!   never addressed by the task's own code): 0 while the task may run,
//!   and raised past every count by the host's deadline thread once the
//!   task's wall-clock deadline passes. A check's trap is a wall timeout if
//!   the deadline passed, else out of fuel. Every 8-byte word of the page
//!   holds the floor, and a check reads the word its count's low bits
//!   name: an address that changes with the count, so that Cranelift
//!   cannot take one load before a loop for every load in it. A loop
//!   counted to a constant (see `bounded_loops`) ends within a bounded
//!   number of operators whatever the task does, so its head checks only
//!   the fuel (against 0); the loop or function around it reads the floor.
//! - A **start function** would run inside instantiation, before the host
//!   can set the fuel or watch the clock, so its section is removed and the
//!   function exported as `idlegrid:start`; the host calls it first.
//!
//! A trap other than these (out of bounds, division by zero) leaves the
//! count where the last call, return or check saved it, as wasmtime's own
//! metering does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use wasm_encoder::{BlockType, Function, Instruction, MemArg};
use wasmtime::wasmparser::{self, Operator, Parser, Payload};

use crate::limits::EPOCH_TICK;

/// The export holding the fuel left.
pub const FUEL_EXPORT: &str = "idlegrid:fuel";
/// The export of an `i32` a check sets to 1 before it traps.
pub const STOPPED_EXPORT: &str = "idlegrid:stopped";
/// The export of the memory holding the floor.
pub const INTERRUPT_EXPORT: &str = "idlegrid:interrupt";
/// The export of the module's start function, if it had one.
pub const START_EXPORT: &str = "idlegrid:start";

/// The interrupt memory: one wasm page, every 8-byte word of it the floor.
const FLOOR_PAGE_BYTES: usize = 1 << 16;
/// A check reads the word at the count's low bits under this mask.
const FLOOR_ADDRESS_MASK: i32 = (FLOOR_PAGE_BYTES - 8) as i32;
/// What the floor is raised to at the deadline: no count is above it.
const RAISED_FLOOR: i64 = i64::MAX;

/// Where the rewrite put what it added.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub fuel_global: u32,
    pub stopped_global: u32,
    pub interrupt_memory: u32,
    /// The start function the module named, now exported instead.
    pub start: Option<u32>,
}

/// The module with its start section removed, and the function it named.
pub fn strip_start(bytes: &[u8]) -> Result<(Vec<u8>, Option<u32>), String> {
    let mut parser = Parser::new(0);
    let mut offset = 0usize;
    loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        let chunk = parser
            .parse(rest, true)
            .map_err(|error| format!("the module could not be read: {error}"))?;
        let wasmparser::Chunk::Parsed { consumed, payload } = chunk else {
            return Err("the module ends in the middle of a section".to_owned());
        };
        match payload {
            Payload::StartSection { func, .. } => {
                let mut stripped = Vec::with_capacity(bytes.len());
                stripped.extend_from_slice(&bytes[..offset]);
                stripped.extend_from_slice(&bytes[offset + consumed..]);
                return Ok((stripped, Some(func)));
            }
            Payload::End(_) => return Ok((bytes.to_vec(), None)),
            // The code section's entries come after the start section.
            Payload::CodeSectionStart { .. } => return Ok((bytes.to_vec(), None)),
            _ => {}
        }
        offset += consumed;
    }
}

/// Whether an operator calls a function (directly, indirectly or as a
/// tail call, which is how a function can repeat without a loop).
fn is_call(operator: &Operator<'_>) -> bool {
    use Operator as O;
    matches!(
        operator,
        O::Call { .. }
            | O::CallIndirect { .. }
            | O::CallRef { .. }
            | O::ReturnCall { .. }
            | O::ReturnCallIndirect { .. }
            | O::ReturnCallRef { .. }
    )
}

/// The most iterations of a loop that [`bounded_loops`] lets run without
/// a look at the wall clock.
const BOUNDED_ITERATIONS: u32 = 1 << 16;
/// The most operators such a loop may run in all its iterations: a few
/// milliseconds of work between two looks at the wall clock.
const BOUNDED_OPERATORS: u64 = 1 << 22;
/// The longest body looked at (one read of the floor an iteration is
/// nothing beside a longer one), and the most counters tried in it: the
/// look stays linear in the function's length whatever the module holds.
const COUNTED_BODY_MAX: usize = 4096;
const COUNTERS_TRIED: usize = 4;

/// For each loop of a function body, in order, whether it is a counted
/// loop that ends within [`BOUNDED_ITERATIONS`] iterations whatever the
/// task does: its head then checks only the fuel, not the wall clock (the
/// fuel is checked exactly as at every loop head, so a task's fuel is the
/// same either way; the loops around it and the function's entry still
/// read the floor, so the time between two looks at the clock stays
/// bounded). A counted loop, as compilers emit them for `for (i = a; i !=
/// b; i += s)` with constants:
///
/// - its body holds no loop, call or `br_table`, at most
///   [`COUNTED_BODY_MAX`] operators, and at most [`BOUNDED_OPERATORS`] in
///   all its iterations;
/// - one local is written in it exactly once, at the body's top level, by
///   `local.get i; i32.const s; i32.add; local.set i` (or `local.tee i`);
///   every branch back to the loop's head comes after that, so each
///   iteration adds `s` once;
/// - the local holds a known constant when the loop is entered: an
///   `i32.const` set into it before the loop with nothing between but
///   straight code that does not write it (or the function's start, for a
///   local that is not a parameter: 0);
/// - a `br_if` at the body's top level leaves the loop once the local
///   equals a constant: `local.get i` (or the increment's `local.tee i`),
///   `i32.const c`, `i32.eq` and a branch out of the loop, or `i32.ne` and
///   the body's only branch back to its head, as its last operator.
fn bounded_loops(operators: &[Operator<'_>], params: u32) -> Vec<bool> {
    use Operator as O;
    operators
        .iter()
        .enumerate()
        .filter(|(_, operator)| matches!(operator, O::Loop { .. }))
        .map(|(at, _)| counted_loop(operators, at, params).is_some())
        .collect()
}

/// The iterations of the counted loop whose `loop` is at `head`, if it is
/// one (see [`bounded_loops`]).
fn counted_loop(operators: &[Operator<'_>], head: usize, params: u32) -> Option<u32> {
    use Operator as O;
    // The body, and each operator's depth inside it (0: the top level).
    let mut depth = 0u32;
    let mut end = None;
    let mut depths = Vec::new();
    for (at, operator) in operators
        .iter()
        .enumerate()
        .skip(head + 1)
        .take(COUNTED_BODY_MAX + 1)
    {
        match operator {
            O::Block { .. } | O::If { .. } => {
                depths.push(depth);
                depth += 1;
                continue;
            }
            O::End if depth == 0 => {
                end = Some(at);
                break;
            }
            O::End => depth -= 1,
            O::Loop { .. } | O::BrTable { .. } | O::BrOnNull { .. } | O::BrOnNonNull { .. } => {
                return None;
            }
            operator if is_call(operator) => return None,
            _ => {}
        }
        depths.push(depth);
    }
    let end = end?;
    let body = &operators[head + 1..end];
    // The branches back to the loop's head.
    let backs: Vec<usize> = (0..body.len())
        .filter(|&at| match body[at] {
            O::Br { relative_depth } | O::BrIf { relative_depth } => relative_depth == depths[at],
            _ => false,
        })
        .collect();
    // The one write to the counter: `local.get i; i32.const s; i32.add;
    // local.set i` at the top level.
    let increments = (3..body.len()).filter_map(|at| {
        let counter = written(&body[at])?;
        match (&body[at - 3], &body[at - 2], &body[at - 1]) {
            (O::LocalGet { local_index }, O::I32Const { value }, O::I32Add)
                if *local_index == counter && depths[at] == 0 && *value != 0 =>
            {
                Some((at, counter, *value))
            }
            _ => None,
        }
    });
    increments
        .take(COUNTERS_TRIED)
        .filter_map(|(increment, counter, step)| {
            let start = counter_at_entry(&operators[..head], counter, params)?;
            counted_by(body, &depths, &backs, (increment, counter, step), start)
        })
        .next()
}

/// The local an operator writes, if it writes one.
fn written(operator: &Operator<'_>) -> Option<u32> {
    match operator {
        Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
            Some(*local_index)
        }
        _ => None,
    }
}

/// The iterations of a loop whose body is `body` (`depths` deep, its
/// branches back to its head at `backs`) if the local that `increment`
/// steps (from `start`) counts it (see [`bounded_loops`]).
fn counted_by(
    body: &[Operator<'_>],
    depths: &[u32],
    backs: &[usize],
    (increment, counter, step): (usize, u32, i32),
    start: i32,
) -> Option<u32> {
    use Operator as O;
    let writes = body
        .iter()
        .filter(|operator| written(operator) == Some(counter))
        .count();
    // The first branch back comes after the increment (and, below, after
    // the test): each iteration makes both.
    let first_back = backs.first().copied().unwrap_or(usize::MAX);
    if writes != 1 || first_back < increment {
        return None;
    }
    // The exit: the counter compared with a constant by a top-level
    // `br_if`; after the increment, the counter is one step further.
    let exit = (3..body.len()).find_map(|at| {
        let O::BrIf { relative_depth } = body[at] else {
            return None;
        };
        if depths[at] != 0 {
            return None;
        }
        let O::I32Const { value: last } = body[at - 2] else {
            return None;
        };
        let tested = match body[at - 3..at - 2] {
            [O::LocalGet { local_index }] if local_index == counter => at > increment,
            [O::LocalTee { local_index }] if local_index == counter && at - 3 == increment => true,
            _ => return None,
        };
        let leaves = match body[at - 1] {
            O::I32Eq => relative_depth > 0,
            O::I32Ne => relative_depth == 0 && backs.len() == 1 && at == body.len() - 1,
            _ => false,
        };
        (leaves && first_back >= at).then_some((tested, last))
    });
    let (after_increment, last) = exit?;
    let mut value = start;
    if after_increment {
        value = value.wrapping_add(step);
    }
    let iterations = (1..=BOUNDED_ITERATIONS).find(|_| {
        let reached = value == last;
        value = value.wrapping_add(step);
        reached
    })?;
    let operators_run = u64::from(iterations) * body.len() as u64;
    (operators_run <= BOUNDED_OPERATORS).then_some(iterations)
}

/// The constant a local holds where the code `before` ends, if straight
/// code before that point last set it to one (or it is a local that is
/// not a parameter, never written since the function began: 0).
fn counter_at_entry(before: &[Operator<'_>], counter: u32, params: u32) -> Option<i32> {
    use Operator as O;
    for (at, operator) in before.iter().enumerate().rev() {
        match operator {
            operator if written(operator) == Some(counter) => {
                return match at.checked_sub(1).map(|at| &before[at]) {
                    Some(O::I32Const { value }) => Some(*value),
                    _ => None,
                };
            }
            // Entering a block goes on in a straight line; anything else
            // that changes the flow may bring other values.
            O::Block { .. } => {}
            O::Loop { .. }
            | O::If { .. }
            | O::Else
            | O::End
            | O::Br { .. }
            | O::BrIf { .. }
            | O::BrTable { .. }
            | O::Return
            | O::Unreachable => return None,
            operator if refused(operator).is_some() => return None,
            _ => {}
        }
    }
    (counter >= params).then_some(0)
}

/// Fuel an operator costs: wasmtime's default table.
fn cost(operator: &Operator<'_>) -> i64 {
    use Operator as O;
    match operator {
        O::Nop
        | O::Drop
        | O::Block { .. }
        | O::Loop { .. }
        | O::Unreachable
        | O::Return
        | O::Else
        | O::End => 0,
        _ => 1,
    }
}

/// For a bulk operator, whether it costs a unit of fuel for each unit of
/// its length (a byte or table element), as in wasmtime's default table;
/// `memory.grow` costs nothing a page but is still a bulk operator.
fn bulk_charges_length(operator: &Operator<'_>) -> Option<bool> {
    use Operator as O;
    match operator {
        O::MemoryCopy { .. }
        | O::MemoryFill { .. }
        | O::MemoryInit { .. }
        | O::TableCopy { .. }
        | O::TableFill { .. }
        | O::TableInit { .. }
        | O::TableGrow { .. } => Some(true),
        O::MemoryGrow { .. } => Some(false),
        _ => None,
    }
}

/// A bulk operator whose length is a constant costing at most this is
/// not checked before it runs (wasmtime's rule).
const SMALL_BULK_COST: i64 = 128;

/// How the metering treats one operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// Ends a straight run: subtract what it cost before it.
    Settle,
    /// Leaves the function or calls another: settle and save.
    Leave,
    /// A call that returns here: settle and save, then load after.
    Call,
    /// A loop: settle before, check at its head.
    Loop,
}

fn kind(operator: &Operator<'_>) -> Kind {
    use Operator as O;
    match operator {
        O::Call { .. } | O::CallIndirect { .. } | O::CallRef { .. } => Kind::Call,
        O::Unreachable
        | O::Return
        | O::ReturnCall { .. }
        | O::ReturnCallIndirect { .. }
        | O::ReturnCallRef { .. } => Kind::Leave,
        O::Loop { .. } => Kind::Loop,
        O::If { .. }
        | O::Else
        | O::End
        | O::Br { .. }
        | O::BrIf { .. }
        | O::BrTable { .. }
        | O::BrOnNull { .. }
        | O::BrOnNonNull { .. } => Kind::Settle,
        _ => Kind::Plain,
    }
}

/// Operators the metering cannot follow: control that leaves a function
/// other than by returning.
fn refused(operator: &Operator<'_>) -> Option<&'static str> {
    use Operator as O;
    match operator {
        O::TryTable { .. }
        | O::Throw { .. }
        | O::ThrowRef
        | O::Try { .. }
        | O::Catch { .. }
        | O::CatchAll
        | O::Delegate { .. }
        | O::Rethrow { .. } => Some("exception handling"),
        O::BrOnCast { .. } | O::BrOnCastFail { .. } => Some("garbage-collected types"),
        _ => None,
    }
}

/// Instruments one function body, operator by operator.
pub(crate) struct Metering {
    layout: Layout,
    /// The local holding the count.
    fuel: u32,
    /// An `i32` scratch local (the NaN rewrite's, free between
    /// operators) holding the length of a bulk operator.
    length: u32,
    /// Cost of the operators since the last settlement.
    pending: i64,
    /// The value of the operator before, if it was an `i32.const`.
    constant_before: Option<u32>,
    /// Blocks open inside the function's own.
    depth: u32,
    /// Whether the function calls another.
    calls: bool,
    /// For each of the function's loops, whether it is counted and short
    /// ([`bounded_loops`]): its head checks only the fuel.
    bounded: Vec<bool>,
    /// Loops met so far.
    loops: usize,
}

impl Metering {
    /// For a function of `params` parameters whose body is `operators`.
    pub(crate) fn new(
        layout: Layout,
        fuel_local: u32,
        length_local: u32,
        operators: &[Operator<'_>],
        params: u32,
    ) -> Self {
        Self {
            layout,
            fuel: fuel_local,
            length: length_local,
            constant_before: None,
            // Entering a function costs 1, as under wasmtime's metering.
            pending: 1,
            depth: 0,
            calls: operators.iter().any(is_call),
            bounded: bounded_loops(operators, params),
            loops: 0,
        }
    }

    /// At the function's entry: load the count, charge the entry, check.
    /// A function that calls no other checks only the fuel there: the
    /// floor is read at its loop heads, and the time it runs between them
    /// is bounded by its length, so every stretch of a run without a floor
    /// check is bounded (by a function's length times the stack's depth).
    pub(crate) fn enter(&mut self, function: &mut Function) {
        function
            .instruction(&Instruction::GlobalGet(self.layout.fuel_global))
            .instruction(&Instruction::LocalSet(self.fuel));
        self.settle(function);
        if self.calls {
            self.check(function);
        } else {
            self.check_fuel(function);
        }
    }

    /// What goes before `operator`.
    pub(crate) fn before(
        &mut self,
        function: &mut Function,
        operator: &Operator<'_>,
    ) -> Result<(), String> {
        if let Some(feature) = refused(operator) {
            return Err(format!(
                "the module uses {feature}, which the sandbox does not run"
            ));
        }
        self.pending += cost(operator);
        let constant_before = std::mem::replace(
            &mut self.constant_before,
            match operator {
                Operator::I32Const { value } => Some(*value as u32),
                _ => None,
            },
        );
        if let Some(charges_length) = bulk_charges_length(operator) {
            self.charge_bulk(function, charges_length, constant_before);
        }
        match kind(operator) {
            Kind::Plain => {}
            Kind::Settle | Kind::Loop => {
                self.settle(function);
                if self.leaves_function(operator) {
                    self.save(function);
                }
            }
            Kind::Leave | Kind::Call => {
                self.settle(function);
                self.save(function);
            }
        }
        Ok(())
    }

    /// What goes after `operator`.
    pub(crate) fn after(&mut self, function: &mut Function, operator: &Operator<'_>) {
        use Operator as O;
        match operator {
            O::Block { .. } | O::If { .. } => self.depth += 1,
            O::Loop { .. } => {
                self.depth += 1;
                let bounded = self.bounded.get(self.loops).copied().unwrap_or(false);
                self.loops += 1;
                if bounded {
                    self.check_fuel(function);
                } else {
                    self.check(function);
                }
            }
            O::End => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if kind(operator) == Kind::Call {
            function
                .instruction(&Instruction::GlobalGet(self.layout.fuel_global))
                .instruction(&Instruction::LocalSet(self.fuel));
        }
    }

    /// Whether `operator` can end the function: its final `end`, or a
    /// branch to the function's own label.
    fn leaves_function(&self, operator: &Operator<'_>) -> bool {
        use Operator as O;
        match operator {
            O::End => self.depth == 0,
            O::Br { relative_depth } | O::BrIf { relative_depth } => *relative_depth == self.depth,
            O::BrOnNull { relative_depth } | O::BrOnNonNull { relative_depth } => {
                *relative_depth == self.depth
            }
            O::BrTable { targets } => {
                targets.default() == self.depth
                    || targets
                        .targets()
                        .any(|target| target.is_ok_and(|target| target == self.depth))
            }
            _ => false,
        }
    }

    /// Before a bulk operator, its length on top of the stack: charges a
    /// unit for each unit of it (if `charges_length`), and checks unless
    /// the length is a constant costing at most `SMALL_BULK_COST`, as
    /// wasmtime's metering does (a constant length is added to what is
    /// pending; another is subtracted from the count). The check is a loop
    /// head's, so a long copy also answers to the wall clock.
    fn charge_bulk(
        &mut self,
        function: &mut Function,
        charges_length: bool,
        constant: Option<u32>,
    ) {
        match constant {
            Some(units) => {
                let cost = if charges_length { i64::from(units) } else { 0 };
                self.pending += cost;
                if cost <= SMALL_BULK_COST {
                    return;
                }
            }
            None if charges_length => {
                function
                    .instruction(&Instruction::LocalTee(self.length))
                    .instruction(&Instruction::LocalGet(self.fuel))
                    .instruction(&Instruction::LocalGet(self.length))
                    .instruction(&Instruction::I64ExtendI32U)
                    .instruction(&Instruction::I64Sub)
                    .instruction(&Instruction::LocalSet(self.fuel));
            }
            None => {}
        }
        self.settle(function);
        self.check(function);
    }

    fn settle(&mut self, function: &mut Function) {
        let pending = std::mem::take(&mut self.pending);
        if pending == 0 {
            return;
        }
        function
            .instruction(&Instruction::LocalGet(self.fuel))
            .instruction(&Instruction::I64Const(pending))
            .instruction(&Instruction::I64Sub)
            .instruction(&Instruction::LocalSet(self.fuel));
    }

    fn save(&self, function: &mut Function) {
        function
            .instruction(&Instruction::LocalGet(self.fuel))
            .instruction(&Instruction::GlobalSet(self.layout.fuel_global));
    }

    /// Traps, with the count saved and `stopped` set, if the count is at
    /// or below the floor.
    fn check(&self, function: &mut Function) {
        let floor = MemArg {
            offset: 0,
            align: 3,
            memory_index: self.layout.interrupt_memory,
        };
        function
            .instruction(&Instruction::LocalGet(self.fuel))
            // The floor's address: any of the page's 8-byte words, taken
            // from the count (every word holds the floor).
            .instruction(&Instruction::LocalGet(self.fuel))
            .instruction(&Instruction::I32WrapI64)
            .instruction(&Instruction::I32Const(FLOOR_ADDRESS_MASK))
            .instruction(&Instruction::I32And)
            .instruction(&Instruction::I64Load(floor));
        self.trap_if_at_or_below(function);
    }

    /// Traps, as [`Self::check`], if the count is at or below 0.
    fn check_fuel(&self, function: &mut Function) {
        function
            .instruction(&Instruction::LocalGet(self.fuel))
            .instruction(&Instruction::I64Const(0));
        self.trap_if_at_or_below(function);
    }

    /// With the count and a floor on the stack.
    fn trap_if_at_or_below(&self, function: &mut Function) {
        function
            .instruction(&Instruction::I64LeS)
            .instruction(&Instruction::If(BlockType::Empty));
        self.save(function);
        function
            .instruction(&Instruction::I32Const(1))
            .instruction(&Instruction::GlobalSet(self.layout.stopped_global))
            .instruction(&Instruction::Unreachable)
            .instruction(&Instruction::End);
    }
}

/// Raises the floor of running tasks whose deadline has passed. One thread
/// per sandbox; stops when dropped.
pub(crate) struct Interrupts {
    shared: Arc<Mutex<Watched>>,
    _stop: mpsc::Sender<()>,
}

#[derive(Default)]
struct Watched {
    next_id: u64,
    tasks: HashMap<u64, Watch>,
}

struct Watch {
    /// None for a wall-clock limit past what the clock can count to.
    deadline: Option<Instant>,
    floor: FloorPtr,
    fired: bool,
}

/// The interrupt memory's first 16 bytes, in a live instance.
struct FloorPtr(*mut u8);

#[expect(
    unsafe_code,
    reason = "a raw pointer is not Send; this one moves to the ticker thread inside the registry"
)]
// SAFETY: the pointer is written only by the ticker thread, with atomic
// stores, and only while the task's `Watching` guard (which the task thread
// drops before its store) keeps it registered.
unsafe impl Send for FloorPtr {}

impl Interrupts {
    pub(crate) fn start() -> Self {
        let shared = Arc::new(Mutex::new(Watched::default()));
        let (stop, stopped) = mpsc::channel::<()>();
        let watched = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("idlegrid-deadlines".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    let now = Instant::now();
                    let mut watched = watched.lock().unwrap_or_else(|p| p.into_inner());
                    for watch in watched.tasks.values_mut() {
                        if !watch.fired && watch.deadline.is_some_and(|deadline| now >= deadline) {
                            watch.fired = true;
                            raise(&watch.floor);
                        }
                    }
                }
            })
            .expect("spawning the deadline thread");
        Self {
            shared,
            _stop: stop,
        }
    }

    /// Watches a task's floor until the guard is dropped.
    ///
    /// # Safety
    ///
    /// `floor` must point at the start of the task's interrupt memory and
    /// stay valid until the returned guard is dropped.
    #[expect(
        unsafe_code,
        reason = "the ticker thread writes through `floor` while the guard lives"
    )]
    pub(crate) unsafe fn watch(&self, floor: *mut u8, deadline: Option<Instant>) -> Watching {
        let mut watched = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let id = watched.next_id;
        watched.next_id += 1;
        watched.tasks.insert(
            id,
            Watch {
                deadline,
                floor: FloorPtr(floor),
                fired: false,
            },
        );
        Watching {
            shared: Arc::clone(&self.shared),
            id,
        }
    }
}

/// Raises a registered floor, every word of it; called with the registry
/// locked.
fn raise(floor: &FloorPtr) {
    let word = RAISED_FLOOR as u64;
    for index in 0..FLOOR_PAGE_BYTES / 8 {
        #[expect(
            unsafe_code,
            reason = "writing the floor of a running task from the ticker thread"
        )]
        // SAFETY: registered floors point at a live 64 KiB, page-aligned
        // interrupt memory (`Interrupts::watch`'s contract, and the guard
        // unregisters under the same lock before the memory goes), so every
        // word is in bounds and aligned. Wasm code only reads them.
        let atomic = unsafe { AtomicU64::from_ptr(floor.0.cast::<u64>().add(index)) };
        atomic.store(word, Ordering::Relaxed);
    }
}

/// A task being watched. Dropping it stops the watch.
pub(crate) struct Watching {
    shared: Arc<Mutex<Watched>>,
    id: u64,
}

impl Watching {
    /// Whether the deadline passed and the floor was raised.
    pub(crate) fn fired(&self) -> bool {
        let watched = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        watched.tasks.get(&self.id).is_some_and(|watch| watch.fired)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut watched = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        watched.tasks.remove(&self.id);
    }
}

/// Runs a module under wasmtime's metering and, rewritten, under this
/// one (instantiation and its start function, then every exported
/// function once with zero arguments), and compares what the host sees:
/// results, traps, every exported memory and global, and the fuel left
/// after each call. Both run out of fuel at the same check or neither
/// does. For tests and fuzzing.
pub fn metered_like_wasmtime(original: &[u8]) -> crate::nan::Verdict {
    use crate::nan::{Fuel, Verdict, observe};
    let engine = |in_module: bool| {
        let mut config = wasmtime::Config::new();
        config
            .cranelift_nan_canonicalization(false)
            .wasm_relaxed_simd(false)
            .wasm_memory64(false)
            .wasm_multi_memory(in_module)
            .consume_fuel(!in_module);
        wasmtime::Engine::new(&config)
    };
    let (wasmtime_engine, module_engine) = match (engine(false), engine(true)) {
        (Ok(wasmtime_engine), Ok(module_engine)) => (wasmtime_engine, module_engine),
        (Err(error), _) | (_, Err(error)) => return Verdict::Broken(format!("no engine: {error}")),
    };
    if let Err(error) = wasmtime::Module::validate(&wasmtime_engine, original) {
        return Verdict::Unusable(format!("{error:#}"));
    }
    let rewritten = match crate::nan::prepare(original, None, true) {
        Ok(rewritten) => rewritten,
        Err(error) => return Verdict::Broken(error),
    };
    // wasmtime meters the global initializers it compiles and the wrapper
    // it calls a start function through; this metering leaves
    // instantiation free. The wasmtime run gets that much more fuel, so
    // that both have the same left when the first export is called.
    let extra = match (
        instantiation_fuel(&wasmtime_engine, original, false),
        instantiation_fuel(&module_engine, &rewritten, true),
    ) {
        (Some(theirs), Some(ours)) => theirs.saturating_sub(ours),
        _ => 0,
    };
    let runs = [
        observe(
            &wasmtime_engine,
            original,
            Fuel::Wasmtime { seen: true, extra },
        ),
        observe(&module_engine, &rewritten, Fuel::Module),
    ];
    // How deep a recursion goes before the stack overflows depends on the
    // frames each metering compiles to, so one may run out of fuel first
    // (in an export, or in a start function while instantiating).
    let overflowed = |seen: &[String]| {
        seen.last()
            .is_some_and(|last| last.ends_with(": Some(StackOverflow)"))
    };
    match runs {
        [Ok(Some(theirs)), Ok(Some(ours))] if theirs == ours => Verdict::Same,
        [Ok(None), Ok(None)] => Verdict::RanOutOfFuel,
        [Ok(Some(seen)), Ok(None)] | [Ok(None), Ok(Some(seen))] if overflowed(&seen) => {
            Verdict::RanOutOfFuel
        }
        [Err(error), _] | [_, Err(error)] => Verdict::Broken(error),
        [theirs, ours] => Verdict::Broken(format!(
            "metered in the module, the run differs:\nwasmtime: {theirs:?}\nmodule:   {ours:?}"
        )),
    }
}

/// The fuel a module spends being instantiated, its start function
/// included: under wasmtime's metering, or (`in_module`) this one's, where
/// the host calls the start function. None if it does not finish.
fn instantiation_fuel(engine: &wasmtime::Engine, bytes: &[u8], in_module: bool) -> Option<u64> {
    use wasmtime::{Instance, Module, Store, Val};
    let budget = crate::nan::CHECK_FUEL;
    let module = Module::new(engine, bytes).ok()?;
    let mut store = Store::new(engine, ());
    if !in_module {
        store.set_fuel(budget).ok()?;
        Instance::new(&mut store, &module, &[]).ok()?;
        return Some(budget - store.get_fuel().ok()?);
    }
    let instance = Instance::new(&mut store, &module, &[]).ok()?;
    let fuel = instance.get_global(&mut store, FUEL_EXPORT)?;
    fuel.set(&mut store, Val::I64(budget as i64)).ok()?;
    if let Some(start) = instance.get_func(&mut store, START_EXPORT) {
        start.call(&mut store, &[], &mut []).ok()?;
    }
    let left = fuel.get(&mut store).i64()?;
    u64::try_from(left).ok().map(|left| budget - left)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which loops of the module's first function are counted and short.
    fn bounded(body: &str) -> Vec<bool> {
        let bytes = wat::parse_str(format!(
            "(module (func (param i32) (local i32 i32) {body}))"
        ))
        .expect("valid text");
        for payload in Parser::new(0).parse_all(&bytes) {
            if let Ok(Payload::CodeSectionEntry(body)) = payload {
                let mut reader = body.get_operators_reader().expect("operators");
                let mut operators = Vec::new();
                while !reader.eof() {
                    operators.push(reader.read().expect("an operator"));
                }
                return bounded_loops(&operators, 1);
            }
        }
        panic!("no function");
    }

    /// `for (i = 0; i != 192; i += 4)`, the test at the bottom.
    const COUNTED: &str = "
        i32.const 0 local.set 1
        loop
          local.get 2 i32.const 1 i32.add local.set 2
          local.get 1 i32.const 4 i32.add local.tee 1
          i32.const 192 i32.ne br_if 0
        end";

    #[test]
    fn a_loop_counted_to_a_constant_is_bounded() {
        assert_eq!(bounded(COUNTED), [true]);
        // The test at the top, leaving the block around the loop; the
        // local starts at 0 without being set.
        assert_eq!(
            bounded(
                "block loop
                   local.get 1 i32.const 252 i32.eq br_if 1
                   local.get 1 i32.const 4 i32.add local.set 1
                   br 0
                 end end"
            ),
            [true]
        );
        // Counting down.
        assert_eq!(
            bounded(
                "i32.const 100 local.set 1 block
                 loop local.get 1 i32.const -1 i32.add local.tee 1 i32.const 0 i32.ne br_if 0 end
                 end"
            ),
            [true]
        );
    }

    #[test]
    fn a_loop_whose_end_the_rewrite_cannot_see_is_not_bounded() {
        for (why, body) in [
            (
                "the counter is a parameter",
                "loop local.get 0 i32.const 4 i32.add local.tee 0 i32.const 192 i32.ne br_if 0 end",
            ),
            (
                "the step skips the bound",
                "i32.const 1 local.set 1
                 loop local.get 1 i32.const 4 i32.add local.tee 1 i32.const 192 i32.ne br_if 0 end",
            ),
            (
                "more iterations than allowed",
                "loop local.get 1 i32.const 1 i32.add local.tee 1 i32.const 1000000 i32.ne br_if 0 end",
            ),
            (
                "a call in the body",
                "loop call 0 local.get 1 i32.const 4 i32.add local.tee 1 i32.const 192 i32.ne br_if 0 end",
            ),
            (
                "a second write to the counter",
                "loop
                   local.get 2 if i32.const 0 local.set 1 end
                   local.get 1 i32.const 4 i32.add local.tee 1 i32.const 192 i32.ne br_if 0
                 end",
            ),
            (
                "a branch back before the increment",
                "loop
                   local.get 2 br_if 0
                   local.get 1 i32.const 4 i32.add local.tee 1 i32.const 192 i32.ne br_if 0
                 end",
            ),
            (
                "a branch back before the test",
                "block loop
                   local.get 1 i32.const 4 i32.add local.set 1
                   local.get 2 br_if 0
                   local.get 1 i32.const 192 i32.eq br_if 1
                   br 0
                 end end",
            ),
            (
                "a branch back between the test and the increment",
                "block loop
                   local.get 1 i32.const 192 i32.eq br_if 1
                   local.get 2 br_if 0
                   local.get 1 i32.const 4 i32.add local.set 1
                   br 0
                 end end",
            ),
            (
                "the test inside a block",
                "block loop
                   local.get 1 i32.const 4 i32.add local.set 1
                   block local.get 1 i32.const 192 i32.eq br_if 2 end
                   br 0
                 end end",
            ),
            (
                "the counter set after a branch",
                "block local.get 2 br_if 0 i32.const 5 local.set 1 end
                 loop local.get 1 i32.const 4 i32.add local.tee 1 i32.const 192 i32.ne br_if 0 end",
            ),
            (
                "a loop inside",
                "loop
                   loop local.get 2 br_if 0 end
                   local.get 1 i32.const 4 i32.add local.tee 1 i32.const 192 i32.ne br_if 0
                 end",
            ),
        ] {
            assert!(
                !bounded(body)[0],
                "{why}: the loop was taken for a counted one"
            );
        }
    }
}
