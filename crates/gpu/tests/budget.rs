//! The job's fuel as a budget inside the kernel: a run past it stops on
//! the device (lavapipe) and on the CPU path, with its fuel read back near
//! the budget instead of running to the end; a run that fits gives the
//! same bytes and fuel as without a budget; and a task one unit over its
//! fuel fails `out_of_fuel` the same way on both paths.

#[expect(dead_code, reason = "the example tests use the rest")]
mod kernels;

use std::time::Duration;

use idlegrid_gpu::meter::FLUSH_INTERVAL;
use idlegrid_gpu::{
    Class, Cpu, Executor, Gpu, Kernel, Metered, Program, Step, Stopped, TaskRun,
    execute_on_cpu_with_budget,
};
use idlegrid_types::gpu::{GpuBinding, GpuClass, GpuDispatch, GpuProgram};
use idlegrid_types::{Bounded, ErrorKind, ExecutionLimits, TaskInput, TaskOutcome};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Each invocation runs `steps[0]` rounds of a linear congruential step.
const SPIN: &str = "
@group(0) @binding(0) var<storage, read> steps: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var x = id.x;
    for (var i = 0u; i < steps[0]; i++) {
        x = x * 1664525u + 1013904223u;
    }
    out[id.x] = x;
}
";

/// Each round, every invocation of a workgroup takes its neighbour's value
/// through workgroup memory, between barriers.
const RING: &str = "
@group(0) @binding(0) var<storage, read> steps: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
var<workgroup> tile: array<u32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>,
        @builtin(local_invocation_index) i: u32) {
    var x = id.x;
    for (var round = 0u; round < steps[0]; round++) {
        tile[i] = x;
        workgroupBarrier();
        x = x * 1664525u + tile[(i + 1u) % 64u];
        workgroupBarrier();
    }
    out[id.x] = x;
}
";

fn spin_in_rust(invocations: u32, steps: u32) -> Vec<u32> {
    (0..invocations)
        .map(|id| {
            (0..steps).fold(id, |x, _| {
                x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223)
            })
        })
        .collect()
}

fn ring_in_rust(invocations: u32, steps: u32) -> Vec<u32> {
    let mut values: Vec<u32> = (0..invocations).collect();
    for group in values.chunks_mut(64) {
        for _ in 0..steps {
            let tile = group.to_vec();
            for (i, x) in group.iter_mut().enumerate() {
                *x = x.wrapping_mul(1_664_525).wrapping_add(tile[(i + 1) % 64]);
            }
        }
    }
    values
}

/// Fuel of a run of SPIN or RING: per invocation, one, plus one per entry
/// into the loop's body (the last entry is the one that breaks).
fn fuel(invocations: u32, steps: u32) -> u64 {
    u64::from(invocations) * (u64::from(steps) + 2)
}

/// The most a run stopped by its budget can have used: the fuel counted
/// up to the first unit past the budget, and a unit not yet counted, then,
/// for each invocation, a unit it had not counted yet, one more to its
/// next check, and its last entry into the loop and its return.
fn stopped_fuel_max(budget: u64, invocations: u32) -> u64 {
    let unit = u64::from(FLUSH_INTERVAL);
    budget + 2 * unit + u64::from(invocations) * (2 * unit + 2)
}

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs one dispatch of `kernel` over `steps` with `budget` on `executor`:
/// its output words and what the meter said.
fn run(
    executor: &dyn Executor,
    kernel: &Kernel,
    steps: u32,
    workgroups: u32,
    budget: u64,
) -> (Vec<u32>, Metered) {
    let mut buffers = vec![
        kernels::bytes(&[steps]),
        vec![0; workgroups as usize * 64 * 4],
    ];
    let step = Step {
        kernel,
        workgroups: [workgroups, 1, 1],
    };
    let metered = executor
        .execute_with_budget(&[step], &mut buffers, budget, TIMEOUT)
        .expect("runs");
    (kernels::words(&buffers[1]), metered)
}

#[test]
fn a_runaway_kernel_stops_near_its_budget_on_lavapipe_and_on_the_cpu() {
    let gpu = gpu();
    let (steps, workgroups) = (50_000, 16);
    let invocations = workgroups * 64;
    let budget = 200_000;
    // Unstopped, the run would use over 51 million fuel.
    assert!(fuel(invocations, steps) > 200 * budget);
    for source in [SPIN, RING] {
        let kernel = Kernel::compile(source, "main", Class::Exact, 100_000).expect("exact");
        for executor in [&gpu as &dyn Executor, &Cpu] {
            let (_, metered) = run(executor, &kernel, steps, workgroups, budget);
            assert_eq!(metered.stopped, Some(Stopped::Budget));
            assert!(metered.fuel > budget, "{}", metered.fuel);
            assert!(
                metered.fuel <= stopped_fuel_max(budget, invocations),
                "{} over the bound {}",
                metered.fuel,
                stopped_fuel_max(budget, invocations)
            );
        }
    }
}

#[test]
fn a_run_within_its_budget_gives_the_same_bytes_and_fuel_as_without_one() {
    let gpu = gpu();
    // Each invocation counts two units of its fuel before it returns.
    let (steps, workgroups) = (3_000, 2);
    let invocations = workgroups * 64;
    let exact = fuel(invocations, steps);
    for (source, reference) in [
        (SPIN, spin_in_rust(invocations, steps)),
        (RING, ring_in_rust(invocations, steps)),
    ] {
        let kernel = Kernel::compile(source, "main", Class::Exact, 100_000).expect("exact");
        for executor in [&gpu as &dyn Executor, &Cpu] {
            for budget in [exact, u64::MAX] {
                let (words, metered) = run(executor, &kernel, steps, workgroups, budget);
                assert_eq!(words, reference);
                assert_eq!(
                    metered,
                    Metered {
                        fuel: exact,
                        stopped: None
                    }
                );
            }
        }
    }

    // The Mandelbrot example, its fuel known to the unit, with exactly
    // the fuel it needs.
    let kernel =
        Kernel::compile(kernels::MANDELBROT, "main", Class::Exact, kernels::FUEL).expect("exact");
    let (width, height) = (200, 120);
    let params = kernels::mandelbrot_params(width, height, 300);
    let reference = kernels::mandelbrot(&params);
    let exact: u64 = reference.iter().map(|count| u64::from(*count) + 2).sum();
    let step = Step {
        kernel: &kernel,
        workgroups: [width.div_ceil(8), height.div_ceil(8), 1],
    };
    let mut on_gpu = vec![
        kernels::bytes(&params),
        vec![0; (width * height * 4) as usize],
    ];
    let mut on_cpu = on_gpu.clone();
    let metered = gpu
        .execute_with_budget(&[step], &mut on_gpu, exact, TIMEOUT)
        .expect("runs");
    assert_eq!((metered.fuel, metered.stopped), (exact, None));
    let metered = execute_on_cpu_with_budget(&[step], &mut on_cpu, exact, TIMEOUT).expect("runs");
    assert_eq!((metered.fuel, metered.stopped), (exact, None));
    assert_eq!(kernels::words(&on_gpu[1]), reference);
    assert_eq!(on_cpu, on_gpu);
}

#[test]
fn the_budget_holds_over_every_dispatch_of_a_program() {
    let gpu = gpu();
    let kernel = Kernel::compile(SPIN, "main", Class::Exact, 100_000).expect("exact");
    let (steps, workgroups) = (5_000, 4);
    let one = fuel(workgroups * 64, steps);
    let step = Step {
        kernel: &kernel,
        workgroups: [workgroups, 1, 1],
    };
    for executor in [&gpu as &dyn Executor, &Cpu] {
        // The first dispatch fits, the second goes past the budget.
        let budget = one + one / 2;
        let mut buffers = vec![kernels::bytes(&[steps]), vec![0; 256 * 4]];
        let metered = executor
            .execute_with_budget(&[step, step], &mut buffers, budget, TIMEOUT)
            .expect("runs");
        assert_eq!(metered.stopped, Some(Stopped::Budget));
        assert!(metered.fuel > budget && metered.fuel <= stopped_fuel_max(budget, 256));
        // Both fit exactly.
        let metered = executor
            .execute_with_budget(&[step, step], &mut buffers, 2 * one, TIMEOUT)
            .expect("runs");
        assert_eq!((metered.fuel, metered.stopped), (2 * one, None));
    }
}

/// A task running SPIN or RING over `steps` in `workgroups` workgroups.
fn task(source: &str, steps: u32, workgroups: u32) -> Program {
    Program::compile(GpuProgram {
        wgsl: Bounded::new(source.to_owned()).expect("short"),
        class: GpuClass::Exact,
        fuel_per_invocation: 100_000,
        bindings: Bounded::new(vec![
            GpuBinding::Shared(Bounded::new(kernels::bytes(&[steps])).expect("short")),
            GpuBinding::Output(u64::from(workgroups) * 64 * 4),
        ])
        .expect("two"),
        dispatches: Bounded::new(vec![GpuDispatch {
            entry_point: Bounded::new("main".to_owned()).expect("short"),
            workgroups: [workgroups, 1, 1],
        }])
        .expect("one"),
    })
    .expect("compiles")
}

/// What the task gives under `fuel`, the same on lavapipe and the CPU path.
fn on_both(gpu: &Gpu, program: &Program, fuel: u64) -> TaskRun {
    let limits = ExecutionLimits {
        fuel,
        memory_bytes: 1 << 20,
        output_bytes: 1 << 20,
    };
    let input = TaskInput::default();
    let on_gpu = program.run(gpu, &input, &limits, TIMEOUT).expect("runs");
    let on_cpu = program.run(&Cpu, &input, &limits, TIMEOUT).expect("runs");
    assert_eq!(on_gpu, on_cpu);
    on_gpu
}

fn out_of_fuel(fuel_used: u64) -> TaskRun {
    TaskRun {
        outcome: TaskOutcome::Failed(ErrorKind::OutOfFuel),
        fuel_used,
        output: Vec::new(),
    }
}

#[test]
fn a_task_one_unit_over_its_fuel_fails_out_of_fuel_on_both_paths() {
    let gpu = gpu();
    for source in [SPIN, RING] {
        let (steps, workgroups) = (3_000, 2);
        let exact = fuel(workgroups * 64, steps);
        let program = task(source, steps, workgroups);
        let fits = on_both(&gpu, &program, exact);
        assert!(matches!(fits.outcome, TaskOutcome::Completed { .. }));
        assert_eq!(fits.fuel_used, exact);
        assert_eq!(on_both(&gpu, &program, exact - 1), out_of_fuel(exact - 1));
        // A runaway: 51 million fuel against 100,000, stopped on the device.
        let runaway = task(source, 50_000, 16);
        assert_eq!(on_both(&gpu, &runaway, 100_000), out_of_fuel(100_000));
    }
}

#[test]
fn past_its_fuel_a_task_fails_out_of_fuel_even_where_a_loop_ran_too_long() {
    let gpu = gpu();
    // Only invocation 0 finds a step count (the others read zero past the
    // one-word buffer): it stops at the loop limit, 60,000 iterations,
    // then the entry that breaks, then its return.
    let lone = SPIN.replace("steps[0]", "steps[id.x]");
    let program = task(&lone, 70_000, 1);
    let used = 60_000 + 2 + 63 * 2;
    let trapped = on_both(&gpu, &program, used);
    assert_eq!(trapped.outcome, TaskOutcome::Failed(ErrorKind::Trap));
    assert_eq!(trapped.fuel_used, used);
    // Under less fuel, whether the loop reached its limit before the
    // budget stopped it could depend on the device: the task fails on its
    // fuel.
    assert_eq!(on_both(&gpu, &program, 50_000), out_of_fuel(50_000));
}
