//! GPU tasks as a provider runs them (`Program::run` on a GPU: lavapipe
//! here) and as a validator re-executes them (on the CPU path): the same
//! outcome, output and fuel on both, equal to the same arithmetic in Rust;
//! every limit a typed failure that both reach the same way; a runaway
//! kernel stopped by the wall clock, the provider still up after it.

#[expect(dead_code, reason = "the other GPU tests use the rest")]
mod kernels;
mod mlp;
mod programs;

use std::time::{Duration, Instant};

use idlegrid_gpu::{
    Class, Cpu, CpuReExecutor, Gpu, GpuError, Kernel, Program, Step, TaskRun, execute_on_cpu,
};
use idlegrid_types::{
    Bounded, ContentId, ErrorKind, Execution, ExecutionLimits, GpuBinding, GpuProgram, ReExecute,
    TaskInput, TaskOutcome,
};
use kernels::{bytes, words};
use programs::program;

const TIMEOUT: Duration = Duration::from_secs(60);

fn gpu() -> Gpu {
    Gpu::open(None).unwrap_or_else(|error| panic!("{error}"))
}

/// Limits no test task reaches.
fn roomy() -> ExecutionLimits {
    ExecutionLimits {
        fuel: 1 << 40,
        memory_bytes: 1 << 30,
        output_bytes: 1 << 30,
    }
}

fn input(args: &[&str], stdin: Vec<u8>) -> TaskInput {
    TaskInput::new(args.iter().map(|arg| (*arg).to_owned()).collect(), stdin).expect("small")
}

/// The program in `program`'s module bytes, as a provider reads them.
fn prepare(program: &GpuProgram) -> Program {
    Program::prepare(&program.encode()).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs the task on lavapipe and on the CPU path, asserts both give the
/// same, and gives it.
fn on_both(gpu: &Gpu, program: &Program, input: &TaskInput, limits: &ExecutionLimits) -> TaskRun {
    let on_gpu = program
        .run(gpu, input, limits, TIMEOUT)
        .expect("runs on the GPU");
    let on_cpu = program
        .run(&Cpu, input, limits, TIMEOUT)
        .expect("runs on the CPU");
    assert_eq!(on_cpu, on_gpu, "the CPU path differs from {:?}", gpu.info());
    on_gpu
}

/// Asserts that `run` completed with `output` after `fuel`.
fn assert_completed(run: &TaskRun, output: &[u8], fuel: u64) {
    assert_eq!(
        run.outcome,
        TaskOutcome::Completed {
            exit_code: 0,
            output: ContentId::of(output),
        }
    );
    assert_eq!(run.output, output);
    assert_eq!(run.fuel_used, fuel);
}

fn assert_failed(run: &TaskRun, kind: ErrorKind, fuel: u64) {
    assert_eq!(
        (run.outcome, run.fuel_used, run.output.as_slice()),
        (TaskOutcome::Failed(kind), fuel, &[][..])
    );
}

/// The Mandelbrot job's arguments for one band (width, band height,
/// iterations, x and y steps, band) and the params words they make.
fn mandelbrot_args(width: u32, height: u32, iterations: u32, step: &str, band: u32) -> Vec<String> {
    [width, height, iterations]
        .map(|n| n.to_string())
        .into_iter()
        .chain([step.to_owned(), step.to_owned(), band.to_string()])
        .collect()
}

/// Counts of the band in Rust and the fuel the meter gives for them: one
/// per pixel, one per loop entry (count + 1).
fn mandelbrot_reference(args: &[String]) -> (Vec<u8>, u64) {
    let words = idlegrid_types::gpu::param_words(args).expect("numbers");
    let counts = kernels::mandelbrot(&kernels::words(&words));
    let fuel = counts.iter().map(|count| u64::from(*count) + 2).sum();
    (bytes(&counts), fuel)
}

fn task(args: &[String]) -> TaskInput {
    TaskInput::new(args.to_vec(), Vec::new()).expect("small")
}

/// A task that runs one invocation of a hash chain `steps` long with
/// `fuel_per_invocation`.
fn chain(steps: u32, fuel_per_invocation: u32, workgroups: u32) -> Program {
    prepare(&program(
        &kernels::chain(steps),
        fuel_per_invocation,
        vec![GpuBinding::Output(4)],
        &[("main", [workgroups, 1, 1])],
    ))
}

#[test]
fn mandelbrot_bands_from_task_args_equal_rust_on_lavapipe_and_the_cpu() {
    let gpu = gpu();
    // The job's layout at a smaller size: 48 × 48 pixels in 6 bands of 8
    // rows, one task each, the band the task's last argument.
    let (width, height) = (48, 8);
    let program = prepare(&programs::mandelbrot(width, height));
    let mut bands = Vec::new();
    for band in [0, 2, 3, 5] {
        let args = mandelbrot_args(width, height, 100, "0.0625", band);
        let run = on_both(&gpu, &program, &task(&args), &roomy());
        let (counts, fuel) = mandelbrot_reference(&args);
        assert_completed(&run, &counts, fuel);
        bands.push(counts);
    }
    // The middle bands hold points of the set (the cap) and differ from
    // the top one, which escapes fast.
    let capped = |counts: &[u8]| words(counts).iter().filter(|c| **c == 100).count();
    assert_eq!(capped(&bands[0]), 0);
    assert!(capped(&bands[1]) > 20 && capped(&bands[2]) > 20);
    assert_ne!(bands[1], bands[2]);
    // Without the band argument, the band is 0.
    let args = mandelbrot_args(width, height, 100, "0.0625", 0);
    let run = on_both(&gpu, &program, &task(&args[..5]), &roomy());
    assert_eq!(run.output, bands[0]);
}

#[test]
fn the_mlp_program_runs_two_dispatches_over_shared_stdin_params_and_scratch() {
    let gpu = gpu();
    let mut random = mlp::Random(0x5eed_1234);
    let model = mlp::Model::generate(&mut random);
    for batch in [1, 37] {
        let [first, second] = mlp::workgroups(batch);
        // In the kernel's binding order: params, model, inputs, hidden,
        // results; only results are the task's output.
        let program = prepare(&program(
            kernels::MLP,
            kernels::FUEL,
            vec![
                GpuBinding::Params,
                GpuBinding::Shared(Bounded::new(model.bytes()).expect("small")),
                GpuBinding::Stdin,
                GpuBinding::Scratch((batch * mlp::HIDDEN) as u64),
                GpuBinding::Output((batch * (mlp::OUTPUTS + 1) * 4) as u64),
            ],
            &[("layer1", first), ("layer2", second)],
        ));
        let inputs = random.int8s(batch * mlp::INPUTS);
        let args = model.params(batch).map(|word| word.to_string());
        let task = TaskInput::new(args.to_vec(), mlp::int8_bytes(&inputs)).expect("small");
        let run = on_both(&gpu, &program, &task, &roomy());
        let (_, results) = model.infer(&inputs);
        assert_eq!(mlp::i32s(&run.output), results);
        assert_completed(&run, &mlp::i32_bytes(&results), mlp::fuel(batch as u64));
    }
}

#[test]
fn a_stdin_program_hashes_the_tasks_stdin_and_ignores_its_args() {
    let gpu = gpu();
    let program = prepare(&program(
        kernels::INT_HASH,
        kernels::FUEL,
        vec![GpuBinding::Stdin, GpuBinding::Output(4000)],
        &[("main", [16, 1, 1])],
    ));
    // Without a params binding, arguments need not be numbers.
    let args = ["not a number", "x"];
    let stdin: Vec<u32> = (0..1_000u32).map(|n| n.wrapping_mul(0x9e37_79b9)).collect();
    let run = on_both(&gpu, &program, &input(&args, bytes(&stdin)), &roomy());
    // 1,000 invocations enter the loop 65 times; 24 return at once.
    assert_completed(&run, &bytes(&kernels::int_hash(&stdin)), 1_000 * 66 + 24);
    // Ten bytes of stdin are three words, the last one zero-padded, on
    // both executors.
    let stdin: Vec<u8> = (1..=10).collect();
    let run = on_both(&gpu, &program, &input(&args, stdin.clone()), &roomy());
    let mut padded = stdin;
    padded.resize(12, 0);
    let mut hashes = bytes(&kernels::int_hash(&words(&padded)));
    hashes.resize(4000, 0);
    assert_completed(&run, &hashes, 3 * 66 + 1_021);
}

#[test]
fn each_limit_fails_the_task_the_same_way_on_both_executors() {
    let gpu = gpu();
    let (width, height) = (48, 8);
    let program = prepare(&programs::mandelbrot(width, height));
    let args = mandelbrot_args(width, height, 100, "0.0625", 2);
    let (counts, fuel) = mandelbrot_reference(&args);
    let task = task(&args);
    let run = |limits: ExecutionLimits| on_both(&gpu, &program, &task, &limits);
    // Buffers: 6 params words and the counts.
    let memory = 6 * 4 + counts.len() as u64;
    let memory_bytes = |memory_bytes| ExecutionLimits {
        memory_bytes,
        ..roomy()
    };
    assert_failed(&run(memory_bytes(memory - 1)), ErrorKind::MemoryLimit, 0);
    assert_completed(&run(memory_bytes(memory)), &counts, fuel);
    let output_bytes = |output_bytes| ExecutionLimits {
        output_bytes,
        ..roomy()
    };
    assert_failed(
        &run(output_bytes(counts.len() as u64 - 1)),
        ErrorKind::OutputLimit,
        0,
    );
    assert_completed(&run(output_bytes(counts.len() as u64)), &counts, fuel);
    // Fewer fuel than invocations fails before anything runs; less than
    // the metered total, after the run; the total itself is enough.
    let fuel_limit = |fuel| ExecutionLimits { fuel, ..roomy() };
    let invocations = u64::from(width * height);
    assert_eq!(program.invocations(), invocations);
    assert_failed(
        &run(fuel_limit(invocations - 1)),
        ErrorKind::OutOfFuel,
        invocations - 1,
    );
    assert_failed(&run(fuel_limit(fuel - 1)), ErrorKind::OutOfFuel, fuel - 1);
    assert_completed(&run(fuel_limit(fuel)), &counts, fuel);
    // Stdin counts against the memory limit.
    let hash = prepare(&programs::program(
        kernels::INT_HASH,
        kernels::FUEL,
        vec![GpuBinding::Stdin, GpuBinding::Output(64)],
        &[("main", [1, 1, 1])],
    ));
    let limits = memory_bytes(64 + 100);
    let fits = hash
        .run(&gpu, &input(&[], vec![7; 100]), &limits, TIMEOUT)
        .expect("runs");
    assert!(matches!(fits.outcome, TaskOutcome::Completed { .. }));
    let over = on_both(&gpu, &hash, &input(&[], vec![7; 101]), &limits);
    assert_failed(&over, ErrorKind::MemoryLimit, 0);
}

#[test]
fn huge_dispatches_and_oversized_buffers_fail_without_running() {
    let gpu = gpu();
    let unlimited = ExecutionLimits {
        fuel: u64::MAX,
        memory_bytes: u64::MAX,
        output_bytes: u64::MAX,
    };
    // 65,535³ workgroups of 64: more invocations than the fuel limit.
    let huge = prepare(&program(
        kernels::INT_HASH,
        kernels::FUEL,
        vec![GpuBinding::Stdin, GpuBinding::Output(4)],
        &[("main", [65_535; 3])],
    ));
    let limits = ExecutionLimits {
        fuel: 1 << 40,
        ..unlimited
    };
    let run = on_both(&gpu, &huge, &input(&[], vec![1; 4]), &limits);
    assert_failed(&run, ErrorKind::OutOfFuel, 1 << 40);
    // Buffers past what a device binds, even under limits that allow
    // them: refused before anything is allocated.
    for bytes in [idlegrid_gpu::BUFFER_BYTES_MAX + 1, 1 << 40, u64::MAX] {
        for binding in [GpuBinding::Output(bytes), GpuBinding::Scratch(bytes)] {
            let oversized = prepare(&program(
                "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
                 @group(0) @binding(1) var<storage, read_write> big: array<u32>;\n\
                 @compute @workgroup_size(1) fn main() { big[0] = 1u; o[0] = big[0]; }",
                kernels::FUEL,
                vec![GpuBinding::Output(4), binding],
                &[("main", [1, 1, 1])],
            ));
            let run = on_both(&gpu, &oversized, &input(&[], vec![]), &unlimited);
            assert_failed(&run, ErrorKind::MemoryLimit, 0);
        }
    }
}

#[test]
fn fuel_per_invocation_the_loop_limit_and_bad_args_fail_the_same_on_both() {
    let gpu = gpu();
    // 1,000 steps cost 1,002: past 500 per invocation, within 1,002.
    let run = on_both(&gpu, &chain(1_000, 500, 1), &input(&[], vec![]), &roomy());
    assert_eq!(run.outcome, TaskOutcome::Failed(ErrorKind::OutOfFuel));
    assert!(run.fuel_used > 500 && run.fuel_used < 1_002, "{run:?}");
    let run = on_both(&gpu, &chain(1_000, 1_002, 1), &input(&[], vec![]), &roomy());
    assert_completed(&run, &bytes(&[kernels::chain_in_rust(1_000)]), 1_002);
    // A loop with no end stops at the loop limit, a trap, after the same
    // fuel on both: per invocation one, and one per loop entry up to the
    // limit and the entry that stops it.
    let endless = prepare(&program(
        "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
         @compute @workgroup_size(2)\n\
         fn main(@builtin(local_invocation_index) i: u32) { loop { o[i] = o[i] + 1u; } }",
        u32::MAX,
        vec![GpuBinding::Output(8)],
        &[("main", [1, 1, 1])],
    ));
    let run = on_both(&gpu, &endless, &input(&[], vec![]), &roomy());
    assert_eq!(run.outcome, TaskOutcome::Failed(ErrorKind::Trap));
    let limit = u64::from(idlegrid_gpu::meter::LOOP_ITERATIONS_MAX);
    assert_eq!(run.fuel_used, 2 * (limit + 2));
    // An argument that is not a number, with a params binding: a trap
    // before anything runs.
    let mandelbrot = prepare(&programs::mandelbrot(8, 8));
    for bad in ["ten", "1e40", "5000000000", ""] {
        let args = ["8", "8", "10", "0.375", "0.375", bad];
        let run = on_both(&gpu, &mandelbrot, &input(&args, vec![]), &roomy());
        assert_failed(&run, ErrorKind::Trap, 0);
    }
}

#[test]
fn steps_whose_kernels_bind_different_buffers_are_refused_by_both_executors() {
    // Two entry points of one module always bind the module's buffers, so
    // a program cannot pair different ones; steps put together by hand
    // can, and both executors refuse them.
    let gpu = gpu();
    let one = Kernel::compile(kernels::INT_HASH, "main", Class::Exact, 100).expect("exact");
    let other = Kernel::compile(&kernels::chain(3), "main", Class::Exact, 100).expect("exact");
    let steps = [
        Step {
            kernel: &one,
            workgroups: [1, 1, 1],
        },
        Step {
            kernel: &other,
            workgroups: [1, 1, 1],
        },
    ];
    let mut buffers = vec![vec![0; 4], vec![0; 4]];
    let on_gpu = gpu.execute(&steps, &mut buffers, TIMEOUT);
    let on_cpu = execute_on_cpu(&steps, &mut buffers, TIMEOUT);
    assert!(matches!(on_gpu, Err(GpuError::Bindings(_))), "{on_gpu:?}");
    assert!(matches!(on_cpu, Err(GpuError::Bindings(_))), "{on_cpu:?}");
}

/// A program that runs past any short wall clock: 60,000 steps in each
/// of `workgroups` invocations (0.7 s on lavapipe for 2,000).
fn runaway(workgroups: u32) -> Program {
    chain(
        idlegrid_gpu::meter::LOOP_ITERATIONS_MAX - 10,
        u32::MAX,
        workgroups,
    )
}

#[test]
fn a_runaway_kernel_times_out_and_the_provider_still_runs_the_next_task() {
    let limit = Duration::from_millis(50);
    let empty = input(&[], vec![]);
    let started = Instant::now();
    let on_cpu = runaway(60_000).run(&Cpu, &empty, &roomy(), limit);
    assert!(
        matches!(on_cpu, Err(GpuError::WallTimeout(timeout)) if timeout == limit),
        "{on_cpu:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let (width, height) = (48, 8);
    let program = prepare(&programs::mandelbrot(width, height));
    let args = mandelbrot_args(width, height, 100, "0.0625", 3);
    let (counts, fuel) = mandelbrot_reference(&args);
    let run = program
        .run(&Cpu, &task(&args), &roomy(), TIMEOUT)
        .expect("runs");
    assert_completed(&run, &counts, fuel);

    let gpu = gpu();
    let started = Instant::now();
    let on_gpu = runaway(2_000).run(&gpu, &empty, &roomy(), limit);
    let waited = started.elapsed();
    assert!(
        matches!(on_gpu, Err(GpuError::WallTimeout(timeout)) if timeout == limit),
        "{on_gpu:?} after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // The same GPU then runs a task correctly. (The timed-out dispatch
    // is not cancelled: this task waits in the queue until it ends.)
    let run = program
        .run(&gpu, &task(&args), &roomy(), TIMEOUT)
        .expect("runs");
    assert_completed(&run, &counts, fuel);
}

#[test]
fn the_cpu_re_executor_settles_as_the_gpu_ran_and_refuses_what_providers_refuse() {
    let gpu = gpu();
    let validator = CpuReExecutor { wall_time: TIMEOUT };
    let (width, height) = (48, 8);
    let module = programs::mandelbrot(width, height).encode();
    let args = mandelbrot_args(width, height, 100, "0.0625", 4);
    let (counts, fuel) = mandelbrot_reference(&args);
    for limits in [
        roomy(),
        ExecutionLimits {
            fuel: fuel - 1,
            ..roomy()
        },
    ] {
        let provider = Program::prepare(&module)
            .expect("valid")
            .run(&gpu, &task(&args), &limits, TIMEOUT)
            .expect("runs");
        let (execution, output) = validator
            .re_execute_with_output(&module, &task(&args), &limits)
            .expect("a verdict");
        assert_eq!(
            execution,
            Execution {
                outcome: provider.outcome,
                fuel_used: provider.fuel_used,
            }
        );
        assert_eq!(output, provider.output);
        assert_eq!(
            validator.re_execute(&module, &task(&args), [7; 32], &limits),
            Ok(execution)
        );
    }
    let completed = validator
        .re_execute_with_output(&module, &task(&args), &roomy())
        .expect("a verdict");
    assert_eq!(completed.1, counts);

    // Modules every provider refuses: the task is `invalid_module`.
    let refused = Execution {
        outcome: TaskOutcome::Failed(ErrorKind::InvalidModule),
        fuel_used: 0,
    };
    let not_exact = program(
        "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n\
         @compute @workgroup_size(1) fn main() { o[0] = sqrt(o[1]); }",
        100,
        vec![GpuBinding::Output(8)],
        &[("main", [1, 1, 1])],
    );
    let mut garbage = idlegrid_types::gpu::GPU_PROGRAM_MAGIC.to_vec();
    garbage.extend([0xff; 40]);
    for module in [not_exact.encode(), garbage] {
        assert_eq!(
            validator.re_execute(&module, &task(&args), [0; 32], &roomy()),
            Ok(refused)
        );
    }

    // Past its wall clock the validator has no verdict.
    let impatient = CpuReExecutor {
        wall_time: Duration::from_millis(50),
    };
    let runaway = program(
        &kernels::chain(idlegrid_gpu::meter::LOOP_ITERATIONS_MAX - 10),
        u32::MAX,
        vec![GpuBinding::Output(4)],
        &[("main", [60_000, 1, 1])],
    );
    let answer = impatient.re_execute(&runaway.encode(), &input(&[], vec![]), [0; 32], &roomy());
    assert!(answer.is_err(), "{answer:?}");
}
