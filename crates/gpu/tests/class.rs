//! The `class` class: kernels outside the exact class run on a GPU, the
//! same on the same vendor, device and driver, and the CPU path declines
//! to judge them rather than guess.

use std::time::Duration;

use idlegrid_gpu::{CpuReExecutor, Gpu, Program};
use idlegrid_types::gpu::{GpuBinding, GpuClass, GpuDispatch, GpuProgram};
use idlegrid_types::{Bounded, ExecutionLimits, TaskInput, TaskOutcome};

const ROOTS: &str = "
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x] = sqrt(f32(id.x)) / 3.0;
}
";

fn program(class: GpuClass) -> GpuProgram {
    GpuProgram {
        wgsl: Bounded::new(ROOTS.to_owned()).expect("short"),
        class,
        fuel_per_invocation: 100,
        bindings: Bounded::new(vec![GpuBinding::Output(256 * 4)]).expect("one"),
        dispatches: Bounded::new(vec![GpuDispatch {
            entry_point: Bounded::new("main".to_owned()).expect("short"),
            workgroups: [4, 1, 1],
        }])
        .expect("one"),
    }
}

const LIMITS: ExecutionLimits = ExecutionLimits {
    fuel: 1_000_000,
    memory_bytes: 1 << 20,
    output_bytes: 1 << 20,
};

#[test]
fn a_class_program_runs_what_the_exact_class_refuses_and_the_cpu_path_declines_it() {
    let refused = Program::compile(program(GpuClass::Exact)).expect_err("not exact");
    assert!(refused.to_string().contains("not exact"), "{refused}");

    let gpu = Gpu::open(None).expect("a Vulkan adapter (lavapipe)");
    let class = Program::compile(program(GpuClass::Class)).expect("compiles");
    let run = class
        .run(
            &gpu,
            &TaskInput::default(),
            &LIMITS,
            Duration::from_secs(60),
        )
        .expect("runs");
    assert!(matches!(run.outcome, TaskOutcome::Completed { .. }));
    // Metered as an exact kernel is: one fuel per invocation.
    assert_eq!(run.fuel_used, 256);
    let values: Vec<f32> = run
        .output
        .chunks_exact(4)
        .map(|word| f32::from_le_bytes(word.try_into().expect("a word")))
        .collect();
    for (index, value) in values.iter().enumerate() {
        let expected = (index as f64).sqrt() / 3.0;
        assert!(
            (f64::from(*value) - expected).abs() < 1e-5,
            "{index}: {value}"
        );
    }
    // The same device gives the same bytes again.
    let again = class
        .run(
            &gpu,
            &TaskInput::default(),
            &LIMITS,
            Duration::from_secs(60),
        )
        .expect("runs");
    assert_eq!(again, run);

    let cpu = CpuReExecutor {
        wall_time: Duration::from_secs(60),
    };
    let declined = cpu
        .re_execute_with_output(
            &program(GpuClass::Class).encode(),
            &TaskInput::default(),
            &LIMITS,
        )
        .expect_err("not a verdict");
    assert!(declined.contains("cannot judge"), "{declined}");
}
