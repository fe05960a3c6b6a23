//! Running an exact-class kernel without a GPU: an interpreter of the
//! kernel's metered naga module, the same module its SPIR-V is written
//! from, so outputs, fuel and stop flags come out as a GPU gives them.
//! Validators settle disputes over GPU tasks with it.
//!
//! A workgroup's invocations run one at a time in index order; a barrier
//! suspends an invocation (its frames and control blocks are explicit
//! data, not the host's stack) until every invocation of the workgroup
//! has reached it or ended.

mod eval;
mod exec;
mod ops;
mod program;
mod value;

use std::time::Duration;

use naga::{Binding, BuiltIn, TypeInner};

use crate::meter::meter_words;
use crate::{BUFFER_BYTES_MAX, GpuError, GpuRun, Kernel, Metered, Step};
use exec::{Clock, Invocation, Status};
use program::Program;
use value::Value;

/// Workgroups per dimension of one dispatch (WebGPU's default limit).
pub const CPU_WORKGROUPS_PER_DIMENSION_MAX: u32 = 65_535;
/// Invocations in one workgroup (WebGPU's default limit).
pub const CPU_INVOCATIONS_PER_WORKGROUP_MAX: u32 = 256;
/// Workgroup size per dimension (WebGPU's default limits).
pub const CPU_WORKGROUP_SIZE_MAX: [u32; 3] = [256, 256, 64];
/// Bytes of workgroup memory a kernel may declare (WebGPU's default limit).
pub const CPU_WORKGROUP_MEMORY_BYTES_MAX: u64 = 16 << 10;
/// Bytes of private and function-local memory one invocation may use, all
/// of its functions' variables counted at once.
pub const CPU_INVOCATION_MEMORY_BYTES_MAX: u64 = 1 << 20;

fn unsupported(what: &str) -> GpuError {
    GpuError::Invalid(format!("{what} is not supported on the CPU path"))
}

/// Runs a program's dispatches in order on the CPU, as a GPU would:
/// `buffers[i]` holds the bytes of binding `i` of every step's kernel;
/// writable ones are updated in place and carry over from one step to the
/// next. The meter is shared by all steps, and every step runs even after
/// one stopped.
pub fn execute_on_cpu(
    steps: &[Step<'_>],
    buffers: &mut [Vec<u8>],
    timeout: Duration,
) -> Result<Metered, GpuError> {
    execute_on_cpu_with_budget(steps, buffers, u64::MAX, timeout)
}

/// [`execute_on_cpu`] that stops once the fuel of all its steps together
/// is past `budget`, as [`crate::Gpu::execute_with_budget`] does.
pub fn execute_on_cpu_with_budget(
    steps: &[Step<'_>],
    buffers: &mut [Vec<u8>],
    budget: u64,
    timeout: Duration,
) -> Result<Metered, GpuError> {
    let Some(first) = steps.first() else {
        return Ok(Metered {
            fuel: 0,
            stopped: None,
        });
    };
    let bindings = &first.kernel.bindings;
    if let Some(step) = steps.iter().find(|step| step.kernel.bindings != *bindings) {
        return Err(GpuError::Bindings(format!(
            "the dispatches of `{}` and `{}` bind different buffers",
            first.kernel.entry_point, step.kernel.entry_point
        )));
    }
    if buffers.len() != bindings.len() {
        return Err(GpuError::Bindings(format!(
            "the kernel binds {} buffers; {} were given",
            bindings.len(),
            buffers.len()
        )));
    }
    if let Some(buffer) = buffers
        .iter()
        .find(|buffer| buffer.len() as u64 > BUFFER_BYTES_MAX)
    {
        return Err(GpuError::Bindings(format!(
            "a buffer of {} bytes, over the limit of {BUFFER_BYTES_MAX}",
            buffer.len()
        )));
    }
    for step in steps {
        check_dispatch(step.kernel, step.workgroups)?;
    }
    // Storage is whole words, at least one, as the GPU path allocates it.
    let mut memory: Vec<Vec<u32>> = buffers
        .iter()
        .map(|bytes| {
            let mut words: Vec<u32> = bytes
                .chunks(4)
                .map(|chunk| {
                    let mut word = [0; 4];
                    word[..chunk.len()].copy_from_slice(chunk);
                    u32::from_le_bytes(word)
                })
                .collect();
            if words.is_empty() {
                words.push(0);
            }
            words
        })
        .collect();
    memory.push(meter_words(budget).to_vec());
    let mut clock = Clock::new(timeout);
    for step in steps {
        let program = Program::new(step.kernel)?;
        dispatch(&program, &mut memory, step.workgroups, &mut clock)?;
    }
    for ((bytes, words), binding) in buffers.iter_mut().zip(&memory).zip(bindings) {
        if binding.writable {
            let length = bytes.len();
            bytes.clear();
            bytes.extend(words.iter().flat_map(|word| word.to_le_bytes()));
            bytes.truncate(length);
        }
    }
    Ok(Metered::from_meter(&memory[bindings.len()]))
}

/// [`crate::Gpu::run`] on the CPU: `kernel` over `workgroups` with
/// `inputs` bound to its input bindings in order and zeroed outputs of
/// `output_bytes` to its output bindings.
pub fn run_on_cpu(
    kernel: &Kernel,
    inputs: &[&[u8]],
    output_bytes: &[u64],
    workgroups: [u32; 3],
    timeout: Duration,
) -> Result<GpuRun, GpuError> {
    check_dispatch(kernel, workgroups)?;
    let mut buffers = crate::run::buffers_for(kernel, inputs, output_bytes)?;
    let metered = execute_on_cpu(&[Step { kernel, workgroups }], &mut buffers, timeout)?;
    Ok(GpuRun::from_buffers(kernel, buffers, metered))
}

/// Refuses dispatches and workgroups beyond WebGPU's default limits.
fn check_dispatch(kernel: &Kernel, workgroups: [u32; 3]) -> Result<(), GpuError> {
    if workgroups
        .iter()
        .any(|count| *count > CPU_WORKGROUPS_PER_DIMENSION_MAX)
    {
        return Err(GpuError::Dispatch(format!(
            "{workgroups:?} workgroups; at most {CPU_WORKGROUPS_PER_DIMENSION_MAX} per dimension"
        )));
    }
    let size = kernel.workgroup_size;
    let invocations: u64 = size.iter().map(|n| u64::from(*n)).product();
    if invocations > u64::from(CPU_INVOCATIONS_PER_WORKGROUP_MAX)
        || size
            .iter()
            .zip(CPU_WORKGROUP_SIZE_MAX)
            .any(|(size, max)| *size > max)
    {
        return Err(GpuError::Dispatch(format!(
            "a workgroup of {size:?} is larger than the limits allow"
        )));
    }
    Ok(())
}

/// Runs every workgroup of one dispatch, in order.
fn dispatch(
    program: &Program<'_>,
    buffers: &mut [Vec<u32>],
    workgroups: [u32; 3],
    clock: &mut Clock,
) -> Result<(), GpuError> {
    let size = program.workgroup_size;
    let invocations = (size[0] * size[1] * size[2]) as usize;
    let mut workgroup = vec![0u32; program.workgroup_words];
    let mut group = Vec::new();
    group.resize_with(
        if program.barriers { invocations } else { 1 },
        Invocation::default,
    );
    for z in 0..workgroups[2] {
        for y in 0..workgroups[1] {
            for x in 0..workgroups[0] {
                let id = [x, y, z];
                workgroup.fill(0);
                if program.barriers {
                    for (index, invocation) in group.iter_mut().enumerate() {
                        invocation.start(program, builtins(program, workgroups, id, index)?)?;
                    }
                    // Round after round, each invocation runs to its next
                    // barrier or its end.
                    while group.iter().any(|invocation| !invocation.done) {
                        for invocation in group.iter_mut().filter(|invocation| !invocation.done) {
                            invocation.run(program, buffers, &mut workgroup, clock)?;
                        }
                    }
                } else {
                    let invocation = &mut group[0];
                    for index in 0..invocations {
                        invocation.start(program, builtins(program, workgroups, id, index)?)?;
                        if invocation.run(program, buffers, &mut workgroup, clock)? != Status::Done
                        {
                            return Err(value::internal("a barrier in a kernel without one"));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The entry point's arguments for invocation `index` of workgroup `id`.
fn builtins(
    program: &Program<'_>,
    workgroups: [u32; 3],
    id: [u32; 3],
    index: usize,
) -> Result<Vec<Value>, GpuError> {
    let size = program.workgroup_size;
    let index = index as u32;
    let local = [
        index % size[0],
        index / size[0] % size[1],
        index / (size[0] * size[1]),
    ];
    let builtin = |builtin: &BuiltIn| -> Result<Value, GpuError> {
        Ok(match builtin {
            BuiltIn::GlobalInvocationId => Value::vector(&[
                id[0] * size[0] + local[0],
                id[1] * size[1] + local[1],
                id[2] * size[2] + local[2],
            ]),
            BuiltIn::LocalInvocationId => Value::vector(&local),
            BuiltIn::LocalInvocationIndex => Value::scalar(index),
            BuiltIn::WorkGroupId => Value::vector(&id),
            BuiltIn::NumWorkGroups => Value::vector(&workgroups),
            BuiltIn::WorkGroupSize => Value::vector(&size),
            other => return Err(unsupported(&format!("the built-in {other:?}"))),
        })
    };
    let module = program.module;
    let entry = &program.funcs[program.entry()].function;
    let mut arguments = Vec::with_capacity(entry.arguments.len());
    for argument in &entry.arguments {
        let value = match (&argument.binding, &module.types[argument.ty].inner) {
            (Some(Binding::BuiltIn(which)), _) => builtin(which)?,
            (None, inner @ TypeInner::Struct { members, .. }) => {
                let mut words = vec![0; value::size_words(module, inner) as usize];
                for member in members {
                    let Some(Binding::BuiltIn(which)) = &member.binding else {
                        return Err(unsupported("entry point inputs other than built-ins"));
                    };
                    let member_value = builtin(which)?;
                    let member_inner = &module.types[member.ty].inner;
                    value::store(
                        module,
                        member_inner,
                        &mut words,
                        member.offset / 4,
                        member_value.layout_words()?,
                    );
                }
                Value::Composite(words)
            }
            _ => return Err(unsupported("entry point inputs other than built-ins")),
        };
        arguments.push(value);
    }
    Ok(arguments)
}
