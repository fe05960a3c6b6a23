//! Running one invocation's statements with an explicit stack of frames
//! and control blocks, so the invocation can stop at a barrier and resume
//! there once the rest of its workgroup has arrived.

use std::time::{Duration, Instant};

use naga::{AtomicFunction, Block, Expression, Handle, Statement, SwitchValue, TypeInner};

use super::eval;
use super::program::{Memory, Program};
use super::unsupported;
use super::value::{self, Kind, Value, internal};
use crate::GpuError;

/// Where an invocation's run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// At a workgroup barrier: run it again once every invocation of the
    /// workgroup is at the barrier or done.
    Barrier,
    Done,
}

/// Statements between two looks at the wall clock.
const STATEMENTS_PER_CLOCK_CHECK: u32 = 4096;

/// The wall-clock limit of a whole program.
pub(super) struct Clock {
    start: Instant,
    timeout: Duration,
    countdown: u32,
}

impl Clock {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            start: Instant::now(),
            timeout,
            countdown: STATEMENTS_PER_CLOCK_CHECK,
        }
    }

    fn tick(&mut self) -> Result<(), GpuError> {
        self.countdown -= 1;
        if self.countdown == 0 {
            self.countdown = STATEMENTS_PER_CLOCK_CHECK;
            if self.start.elapsed() > self.timeout {
                return Err(GpuError::WallTimeout(self.timeout));
            }
        }
        Ok(())
    }
}

/// A block being run, or a construct waiting for its block to end.
enum Control<'a> {
    Block {
        statements: &'a [Statement],
        next: usize,
    },
    Loop {
        body: &'a Block,
        continuing: &'a Block,
        break_if: Option<Handle<Expression>>,
        in_continuing: bool,
    },
    Switch {
        cases: &'a [naga::SwitchCase],
        case: usize,
    },
}

/// One function call in progress.
struct Frame<'a> {
    func: usize,
    values: Vec<Value>,
    arguments: Vec<Value>,
    controls: Vec<Control<'a>>,
    stack_base: u32,
    /// The caller's expression that receives the returned value.
    result: Option<Handle<Expression>>,
}

/// One invocation: its private variables, function stack and frames.
#[derive(Default)]
pub(super) struct Invocation<'a> {
    private: Vec<u32>,
    stack: Vec<u32>,
    frames: Vec<Frame<'a>>,
    /// Value arenas of returned frames, for reuse.
    spare: Vec<Vec<Value>>,
    /// A `workgroupUniformLoad` between its two barriers: the pointer, the
    /// result and whether the load is done.
    uniform_load: Option<(Handle<Expression>, Handle<Expression>, bool)>,
    pub(super) done: bool,
}

impl<'a> Invocation<'a> {
    /// Starts the entry point afresh with its arguments (the built-ins).
    pub(super) fn start(
        &mut self,
        program: &Program<'a>,
        arguments: Vec<Value>,
    ) -> Result<(), GpuError> {
        self.private.clear();
        self.private.extend_from_slice(&program.private);
        self.stack.clear();
        while let Some(frame) = self.frames.pop() {
            self.spare.push(frame.values);
        }
        self.uniform_load = None;
        self.done = false;
        self.call(program, &mut [], &mut [], program.entry(), arguments, None)
    }

    /// Pushes a frame for `funcs[func]`.
    fn call(
        &mut self,
        program: &Program<'a>,
        buffers: &mut [Vec<u32>],
        workgroup: &mut [u32],
        func: usize,
        arguments: Vec<Value>,
        result: Option<Handle<Expression>>,
    ) -> Result<(), GpuError> {
        let plan = &program.funcs[func];
        let stack_base = self.stack.len() as u32;
        self.stack
            .resize(self.stack.len() + plan.local_words as usize, 0);
        let mut values = self.spare.pop().unwrap_or_default();
        values.clear();
        values.resize(plan.function.expressions.len(), Value::Unset);
        let mut memory = Memory {
            buffers,
            workgroup,
            private: &mut self.private,
            stack: &mut self.stack,
        };
        for handle in &plan.entry_expressions {
            eval::expression_into(
                program,
                plan,
                &mut values,
                stack_base,
                &arguments,
                &memory,
                *handle,
            )?;
        }
        let module = program.module;
        for ((_, local), offset) in plan
            .function
            .local_variables
            .iter()
            .zip(&plan.local_offsets)
        {
            if let Some(init) = local.init {
                let pointer = value::Pointer {
                    space: value::Space::Function,
                    offset: stack_base + offset,
                    in_bounds: true,
                };
                let inner = &module.types[local.ty].inner;
                memory.store(module, inner, pointer, &values[init.index()])?;
            }
        }
        self.frames.push(Frame {
            func,
            values,
            arguments,
            controls: vec![Control::Block {
                statements: &plan.function.body,
                next: 0,
            }],
            stack_base,
            result,
        });
        Ok(())
    }

    /// Runs until the invocation ends or reaches a barrier.
    pub(super) fn run(
        &mut self,
        program: &Program<'a>,
        buffers: &mut [Vec<u32>],
        workgroup: &mut [u32],
        clock: &mut Clock,
    ) -> Result<Status, GpuError> {
        if let Some((pointer_expression, result, false)) = self.uniform_load.take() {
            // Every invocation is at the first barrier: load, then meet
            // again before anyone writes.
            let frame = self.frames.last_mut().ok_or_else(|| internal("no frame"))?;
            let memory = Memory {
                buffers: &mut *buffers,
                workgroup: &mut *workgroup,
                private: &mut self.private,
                stack: &mut self.stack,
            };
            let plan = &program.funcs[frame.func];
            let inner = plan.info[result].ty.inner_with(&program.module.types);
            let pointer = frame.values[pointer_expression.index()].pointer()?;
            frame.values[result.index()] = memory.load(program.module, inner, pointer);
            self.uniform_load = Some((pointer_expression, result, true));
            return Ok(Status::Barrier);
        }
        loop {
            clock.tick()?;
            let Some(frame) = self.frames.last_mut() else {
                self.done = true;
                return Ok(Status::Done);
            };
            let Some(control) = frame.controls.last_mut() else {
                self.return_from(None);
                continue;
            };
            match control {
                Control::Block { statements, next } => {
                    let statements: &'a [Statement] = statements;
                    let Some(statement) = statements.get(*next) else {
                        frame.controls.pop();
                        continue;
                    };
                    *next += 1;
                    if let Some(status) = self.statement(program, buffers, workgroup, statement)? {
                        return Ok(status);
                    }
                }
                Control::Loop {
                    body,
                    continuing,
                    break_if,
                    in_continuing,
                } => {
                    if !*in_continuing {
                        *in_continuing = true;
                        let statements: &'a [Statement] = continuing;
                        frame.controls.push(Control::Block {
                            statements,
                            next: 0,
                        });
                    } else {
                        let stop = match break_if {
                            Some(condition) => frame.values[condition.index()].word()? != 0,
                            None => false,
                        };
                        if stop {
                            frame.controls.pop();
                        } else {
                            *in_continuing = false;
                            let statements: &'a [Statement] = body;
                            frame.controls.push(Control::Block {
                                statements,
                                next: 0,
                            });
                        }
                    }
                }
                Control::Switch { cases, case } => {
                    let cases: &'a [naga::SwitchCase] = cases;
                    if cases[*case].fall_through && *case + 1 < cases.len() {
                        *case += 1;
                        let statements: &'a [Statement] = &cases[*case].body;
                        frame.controls.push(Control::Block {
                            statements,
                            next: 0,
                        });
                    } else {
                        frame.controls.pop();
                    }
                }
            }
        }
    }

    /// Pops the current frame, handing `value` to the caller.
    fn return_from(&mut self, value: Option<Value>) {
        let Some(frame) = self.frames.pop() else {
            return;
        };
        self.stack.truncate(frame.stack_base as usize);
        self.spare.push(frame.values);
        if let (Some(caller), Some(result), Some(value)) =
            (self.frames.last_mut(), frame.result, value)
        {
            caller.values[result.index()] = value;
        }
    }

    /// Runs one statement; a status when the invocation must stop.
    fn statement(
        &mut self,
        program: &Program<'a>,
        buffers: &mut [Vec<u32>],
        workgroup: &mut [u32],
        statement: &'a Statement,
    ) -> Result<Option<Status>, GpuError> {
        let module = program.module;
        let frame = self.frames.last_mut().ok_or_else(|| internal("no frame"))?;
        if let Statement::Call {
            function,
            arguments,
            result,
        } = statement
        {
            let arguments = arguments
                .iter()
                .map(|argument| frame.values[argument.index()].clone())
                .collect();
            self.call(
                program,
                buffers,
                workgroup,
                function.index(),
                arguments,
                *result,
            )?;
            return Ok(None);
        }
        let plan = &program.funcs[frame.func];
        let mut memory = Memory {
            buffers,
            workgroup,
            private: &mut self.private,
            stack: &mut self.stack,
        };
        let push = |frame: &mut Frame<'a>, block: &'a Block| {
            if !block.is_empty() {
                frame.controls.push(Control::Block {
                    statements: block,
                    next: 0,
                });
            }
        };
        match statement {
            Statement::Emit(range) => {
                for handle in range.clone() {
                    eval::expression_into(
                        program,
                        plan,
                        &mut frame.values,
                        frame.stack_base,
                        &frame.arguments,
                        &memory,
                        handle,
                    )?;
                }
            }
            Statement::Block(block) => push(frame, block),
            Statement::If {
                condition,
                accept,
                reject,
            } => {
                let taken = frame.values[condition.index()].word()? != 0;
                push(frame, if taken { accept } else { reject });
            }
            Statement::Switch { selector, cases } => {
                let selector = frame.values[selector.index()].word()?;
                let case = cases
                    .iter()
                    .position(|case| match case.value {
                        SwitchValue::I32(value) => value as u32 == selector,
                        SwitchValue::U32(value) => value == selector,
                        SwitchValue::Default => false,
                    })
                    .or_else(|| {
                        cases
                            .iter()
                            .position(|case| case.value == SwitchValue::Default)
                    });
                if let Some(case) = case {
                    frame.controls.push(Control::Switch { cases, case });
                    frame.controls.push(Control::Block {
                        statements: &cases[case].body,
                        next: 0,
                    });
                }
            }
            Statement::Loop {
                body,
                continuing,
                break_if,
            } => {
                frame.controls.push(Control::Loop {
                    body,
                    continuing,
                    break_if: *break_if,
                    in_continuing: false,
                });
                frame.controls.push(Control::Block {
                    statements: body,
                    next: 0,
                });
            }
            Statement::Break => loop {
                match frame.controls.pop() {
                    Some(Control::Loop { .. } | Control::Switch { .. }) => break,
                    Some(Control::Block { .. }) => {}
                    None => return Err(internal("a break outside a loop or switch")),
                }
            },
            Statement::Continue => {
                while !matches!(frame.controls.last(), Some(Control::Loop { .. })) {
                    if frame.controls.pop().is_none() {
                        return Err(internal("a continue outside a loop"));
                    }
                }
                if let Some(Control::Loop {
                    continuing,
                    in_continuing,
                    ..
                }) = frame.controls.last_mut()
                {
                    *in_continuing = true;
                    let statements: &'a [Statement] = continuing;
                    frame.controls.push(Control::Block {
                        statements,
                        next: 0,
                    });
                }
            }
            Statement::Return { value } => {
                let value = value.map(|handle| frame.values[handle.index()].clone());
                self.return_from(value);
            }
            Statement::ControlBarrier(_) => return Ok(Some(Status::Barrier)),
            // One invocation runs at a time, so memory is always coherent.
            Statement::MemoryBarrier(_) => {}
            Statement::Store { pointer, value } => {
                let inner = pointee(module, plan.info[*pointer].ty.inner_with(&module.types))?;
                let target = frame.values[pointer.index()].pointer()?;
                memory.store(module, inner, target, &frame.values[value.index()])?;
            }
            Statement::Atomic {
                pointer,
                fun,
                value,
                result,
            } => {
                let kind = value::kind(plan.info[*value].ty.inner_with(&module.types))?;
                let target = frame.values[pointer.index()].pointer()?;
                let operand = frame.values[value.index()].word()?;
                let compare = match fun {
                    AtomicFunction::Exchange {
                        compare: Some(compare),
                    } => Some(frame.values[compare.index()].word()?),
                    _ => None,
                };
                let old = if target.in_bounds {
                    memory
                        .words(target.space)
                        .get(target.offset as usize)
                        .copied()
                        .unwrap_or(0)
                } else {
                    0
                };
                let new = atomic(fun, kind, old, operand, compare);
                if target.in_bounds
                    && let Some(slot) = memory
                        .words_mut(target.space)
                        .get_mut(target.offset as usize)
                {
                    *slot = new;
                }
                if let Some(result) = result {
                    frame.values[result.index()] = match compare {
                        Some(expected) => Value::Composite(vec![old, u32::from(old == expected)]),
                        None => Value::scalar(old),
                    };
                }
            }
            Statement::WorkGroupUniformLoad { pointer, result } => {
                self.uniform_load = Some((*pointer, *result, false));
                return Ok(Some(Status::Barrier));
            }
            Statement::Kill => return Err(unsupported("`discard`")),
            other => return Err(unsupported(&format!("the statement {other:?}"))),
        }
        Ok(None)
    }
}

/// The type a pointer of type `inner` points at.
fn pointee<'m>(module: &'m naga::Module, inner: &'m TypeInner) -> Result<&'m TypeInner, GpuError> {
    match inner {
        TypeInner::Pointer { base, .. } => Ok(&module.types[*base].inner),
        other @ TypeInner::ValuePointer { .. } => Ok(other),
        _ => Err(internal("a store through something not a pointer")),
    }
}

/// The new value of an atomic word holding `old`.
fn atomic(fun: &AtomicFunction, kind: Kind, old: u32, operand: u32, compare: Option<u32>) -> u32 {
    let signed = kind == Kind::Sint;
    match fun {
        AtomicFunction::Add => old.wrapping_add(operand),
        AtomicFunction::Subtract => old.wrapping_sub(operand),
        AtomicFunction::And => old & operand,
        AtomicFunction::ExclusiveOr => old ^ operand,
        AtomicFunction::InclusiveOr => old | operand,
        AtomicFunction::Min if signed => (old as i32).min(operand as i32) as u32,
        AtomicFunction::Min => old.min(operand),
        AtomicFunction::Max if signed => (old as i32).max(operand as i32) as u32,
        AtomicFunction::Max => old.max(operand),
        AtomicFunction::Exchange { .. } => match compare {
            Some(expected) if old != expected => old,
            _ => operand,
        },
    }
}
