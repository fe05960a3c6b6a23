//! Hostile task modules are refused when a provider reads them
//! (`Program::prepare`, `Program::compile`) with a typed error, never a
//! panic: every provider refuses them the same way, so the task fails
//! `invalid_module`. No GPU is needed.

#[expect(dead_code, reason = "the other GPU tests use the rest")]
mod kernels;
mod programs;

use idlegrid_gpu::{GpuError, Program, WORKGROUPS_PER_DIMENSION_MAX};
use idlegrid_types::gpu::GPU_PROGRAM_MAGIC;
use idlegrid_types::{GpuBinding, GpuProgram};
use programs::program;

/// One buffer read, one written.
const COPY: &str = "@group(0) @binding(0) var<storage, read> i: array<u32>;\n\
                    @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
                    @compute @workgroup_size(64)\n\
                    fn main(@builtin(global_invocation_id) id: vec3<u32>) { o[id.x] = i[id.x]; }";

fn copy(bindings: Vec<GpuBinding>, dispatches: &[(&str, [u32; 3])]) -> GpuProgram {
    program(COPY, 100, bindings, dispatches)
}

fn io() -> Vec<GpuBinding> {
    vec![GpuBinding::Stdin, GpuBinding::Output(64)]
}

/// Asserts that `program` is refused, compiled directly and read from its
/// module bytes, with the error `expected` accepts.
fn check(program: GpuProgram, expected: fn(&GpuError) -> bool) {
    let compiled = Program::compile(program.clone()).expect_err("refused");
    assert!(expected(&compiled), "{compiled}");
    let prepared = Program::prepare(&program.encode()).expect_err("refused");
    assert!(expected(&prepared), "{prepared}");
}

#[test]
fn a_valid_program_is_accepted() {
    let accepted = Program::prepare(&copy(io(), &[("main", [1, 1, 1])]).encode()).expect("valid");
    assert_eq!(accepted.invocations(), 64);
    let largest = [WORKGROUPS_PER_DIMENSION_MAX; 3];
    let accepted = Program::compile(copy(io(), &[("main", largest)])).expect("valid");
    assert_eq!(
        accepted.invocations(),
        64 * u64::from(WORKGROUPS_PER_DIMENSION_MAX).pow(3)
    );
}

#[test]
fn kernels_that_do_not_compile_or_are_not_exact_are_refused() {
    let one_output = vec![GpuBinding::Output(4)];
    let with = |wgsl: &str| program(wgsl, 100, one_output.clone(), &[("main", [1, 1, 1])]);
    let invalid = |error: &GpuError| matches!(error, GpuError::Invalid(_));
    let not_exact = |error: &GpuError| matches!(error, GpuError::NotExact(_));
    check(with("this is not WGSL"), invalid);
    check(
        with("@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }"),
        invalid,
    );
    check(copy(io(), &[("absent", [1, 1, 1])]), invalid);
    // Rounding differs between GPUs: square roots and float division.
    let out = "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n";
    check(
        with(&format!(
            "{out}@compute @workgroup_size(1) fn main() {{ o[0] = sqrt(o[1]); }}"
        )),
        not_exact,
    );
    check(
        with(&format!(
            "{out}@compute @workgroup_size(1) fn main() {{ o[0] = o[1] / o[2]; }}"
        )),
        not_exact,
    );
    // Uniforms are not storage buffers.
    check(
        with(
            "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
             @group(0) @binding(1) var<uniform> u: vec4<u32>;\n\
             @compute @workgroup_size(1) fn main() { o[0] = u.x; }",
        ),
        not_exact,
    );
    // More storage buffers than a kernel may bind.
    let many: String = (0..8)
        .map(|n| format!("@group(0) @binding({n}) var<storage, read_write> b{n}: array<u32>;\n"))
        .chain(["@compute @workgroup_size(1) fn main() { b0[0] = 1u; }".to_owned()])
        .collect();
    check(with(&many), invalid);
}

#[test]
fn bindings_that_do_not_match_the_kernel_are_refused() {
    let bindings = |error: &GpuError| matches!(error, GpuError::Bindings(_));
    let once = &[("main", [1, 1, 1])];
    // Too few, too many.
    check(copy(vec![GpuBinding::Output(64)], once), bindings);
    check(
        copy(
            vec![
                GpuBinding::Stdin,
                GpuBinding::Output(64),
                GpuBinding::Params,
            ],
            once,
        ),
        bindings,
    );
    // A read-only buffer given as an output, a writable one as stdin or
    // params.
    check(
        copy(vec![GpuBinding::Output(4), GpuBinding::Output(64)], once),
        bindings,
    );
    check(
        copy(vec![GpuBinding::Stdin, GpuBinding::Stdin], once),
        bindings,
    );
    check(
        copy(vec![GpuBinding::Stdin, GpuBinding::Params], once),
        bindings,
    );
    // No output: the task would have nothing to show.
    check(
        copy(vec![GpuBinding::Stdin, GpuBinding::Scratch(64)], once),
        bindings,
    );
}

#[test]
fn dispatches_out_of_bounds_are_refused() {
    let dispatch = |error: &GpuError| matches!(error, GpuError::Dispatch(_));
    check(copy(io(), &[]), dispatch);
    let over = WORKGROUPS_PER_DIMENSION_MAX + 1;
    for workgroups in [[over, 1, 1], [1, over, 1], [1, 1, u32::MAX]] {
        check(
            copy(io(), &[("main", [1, 1, 1]), ("main", workgroups)]),
            dispatch,
        );
    }
}

#[test]
fn module_bytes_that_are_not_a_program_are_refused() {
    let invalid = |bytes: &[u8]| {
        let error = Program::prepare(bytes).expect_err("refused");
        assert!(matches!(error, GpuError::Invalid(_)), "{error}");
    };
    invalid(b"");
    invalid(b"\0asm\x01\0\0\0");
    invalid(&GPU_PROGRAM_MAGIC);
    // Every truncation of a valid program, and one byte too many.
    let valid = programs::mandelbrot(16, 16).encode();
    for length in 0..valid.len() {
        invalid(&valid[..length]);
    }
    let mut longer = valid.clone();
    longer.push(0);
    invalid(&longer);
    // A length prefix past its bound.
    let mut huge = GPU_PROGRAM_MAGIC.to_vec();
    huge.extend(u32::MAX.to_le_bytes());
    invalid(&huge);
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            with_magic in any::<bool>(),
        ) {
            let mut module = if with_magic { GPU_PROGRAM_MAGIC.to_vec() } else { Vec::new() };
            module.extend(bytes);
            let _ = Program::prepare(&module);
        }

        #[test]
        fn mutations_of_a_valid_program_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut module = copy(io(), &[("main", [3, 1, 1])]).encode();
            for (at, byte) in edits {
                let at = at.index(module.len());
                module[at] = byte;
            }
            // Whatever it reads as is compiled or refused; what is
            // accepted is exactly what the bytes say.
            if let Ok(program) = Program::prepare(&module) {
                prop_assert_eq!(program.program().encode(), module);
            }
        }
    }
}
