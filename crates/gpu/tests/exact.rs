//! The exact class, checked without a GPU: what compiles, what is refused
//! and why, and the strict SPIR-V.

#[expect(dead_code, reason = "the GPU tests use the rest")]
mod kernels;

use idlegrid_gpu::{Class, GpuError, Kernel, contraction_counts};
use kernels::FUEL;

fn refusal(wgsl: &str) -> GpuError {
    Kernel::compile(wgsl, "main", Class::Exact, FUEL).expect_err("refused")
}

/// A kernel whose one line of arithmetic is `expression` over `a` and `b`,
/// both f32.
fn float_kernel(expression: &str) -> String {
    format!(
        "@group(0) @binding(0) var<storage, read> input: array<f32>;\n\
         @group(0) @binding(1) var<storage, read_write> output: array<f32>;\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n\
             let a = input[id.x];\n\
             let b = input[id.x + 1u];\n\
             output[id.x] = {expression};\n\
         }}\n"
    )
}

#[test]
fn the_example_kernels_compile_with_their_bindings() {
    let kernel = Kernel::compile(kernels::MANDELBROT, "main", Class::Exact, FUEL).expect("exact");
    assert_eq!(kernel.workgroup_size, [8, 8, 1]);
    assert_eq!(kernel.inputs().count(), 1);
    assert_eq!(kernel.outputs().count(), 1);
    let kernel = Kernel::compile(kernels::INT_HASH, "main", Class::Exact, FUEL).expect("exact");
    assert_eq!(kernel.workgroup_size, [64, 1, 1]);
}

#[test]
fn every_float_operation_is_decorated_no_contraction() {
    let kernel = Kernel::compile(kernels::MANDELBROT, "main", Class::Exact, FUEL).expect("exact");
    let (decorated, arithmetic) = contraction_counts(&kernel.spirv);
    // x*step, -2.25 twice, x*x, y*y, x2+y2, x2-y2, +x0, 2*x, *y, +y0.
    assert!(arithmetic >= 11, "{arithmetic} float operations");
    assert_eq!(decorated, arithmetic);
    // The same pass over integer-only SPIR-V (the meter's counting too)
    // adds nothing.
    let kernel = Kernel::compile(kernels::INT_HASH, "main", Class::Exact, FUEL).expect("exact");
    assert_eq!(contraction_counts(&kernel.spirv), (0, 0));
    // The meter takes the binding after the kernel's own.
    assert_eq!(kernel.meter_binding, 2);
}

#[test]
fn f32_addition_multiplication_and_exact_builtins_are_in_the_class() {
    for expression in [
        "a * b + a - b",
        "-a * abs(b)",
        "floor(a) + ceil(b) - trunc(a * b)",
        "select(a, b, a < b)",
        "f32(u32(a) / 3u)",
    ] {
        Kernel::compile(&float_kernel(expression), "main", Class::Exact, FUEL)
            .unwrap_or_else(|error| panic!("{expression}: {error}"));
    }
}

#[test]
fn operations_that_differ_between_gpus_are_refused_saying_which() {
    for (expression, named) in [
        ("a / b", "float division"),
        ("a % b", "float division or remainder"),
        ("sqrt(a)", "Sqrt"),
        ("exp(a) + b", "Exp"),
        ("sin(a)", "Sin"),
        ("fma(a, b, a)", "Fma"),
        ("max(a, b)", "Max"),
        ("dot(vec2(a, b), vec2(b, a))", "Dot"),
    ] {
        match refusal(&float_kernel(expression)) {
            GpuError::NotExact(message) => {
                assert!(message.contains(named), "{expression}: {message}");
            }
            other => panic!("{expression}: {other}"),
        }
    }
}

#[test]
fn textures_uniforms_and_other_groups_are_refused() {
    let texture = "@group(0) @binding(0) var t: texture_2d<f32>;\n\
                   @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
                   @compute @workgroup_size(1) fn main() { o[0] = textureDimensions(t).x; }";
    assert!(matches!(refusal(texture), GpuError::NotExact(_)));
    let uniform = "@group(0) @binding(0) var<uniform> u: vec4<u32>;\n\
                   @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
                   @compute @workgroup_size(1) fn main() { o[0] = u.x; }";
    assert!(matches!(refusal(uniform), GpuError::NotExact(_)));
    let group = "@group(1) @binding(0) var<storage, read_write> o: array<u32>;\n\
                 @compute @workgroup_size(1) fn main() { o[0] = 1u; }";
    assert!(matches!(refusal(group), GpuError::Invalid(_)));
}

#[test]
fn bad_wgsl_and_missing_entry_points_are_invalid_with_where() {
    match refusal("@compute @workgroup_size(1) fn main() { let x = ; }") {
        GpuError::Invalid(message) => assert!(message.contains("1:"), "{message}"),
        other => panic!("{other}"),
    }
    let error =
        Kernel::compile(kernels::INT_HASH, "nope", Class::Exact, FUEL).expect_err("no entry");
    assert!(error.to_string().contains("`nope`"), "{error}");
    let no_output = "@group(0) @binding(0) var<storage, read> i: array<u32>;\n\
                     @compute @workgroup_size(1) fn main() { let x = i[0]; }";
    assert!(matches!(refusal(no_output), GpuError::Invalid(_)));
}
