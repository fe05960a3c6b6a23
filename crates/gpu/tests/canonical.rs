//! Canonical floats: denormals and zeros become +0.0 and NaNs become
//! one NaN, on the device as in Rust, whatever the device does with them.

#[expect(dead_code, reason = "these tests use a few of the helpers")]
mod kernels;

use std::collections::HashMap;
use std::time::Duration;

use idlegrid_gpu::canonical::{NAN_BITS, canonical};
use idlegrid_gpu::{Class, Gpu, Kernel};
use kernels::FUEL;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Eight results per input pair: the inputs as read, then values made by
/// `* - +`, negation, repeated halving, vectors and a struct.
const EDGES: &str = r#"
struct Pair { first: f32, second: f32 }

@group(0) @binding(0) var<storage, read> xs: array<u32>;
@group(0) @binding(1) var<storage, read> ys: array<f32>;
@group(0) @binding(2) var<storage, read> pairs: array<Pair>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&xs)) {
        return;
    }
    let x = bitcast<f32>(xs[i]);
    let y = ys[i];
    var halved = x;
    for (var k = 0u; k < 40u; k = k + 1u) {
        halved = halved * 0.25;
    }
    let v = vec2(x, y) * vec2(y, 0.5);
    let pair = pairs[i];
    out[i * 8u] = bitcast<u32>(x);
    out[i * 8u + 1u] = bitcast<u32>(y);
    out[i * 8u + 2u] = bitcast<u32>(x * y);
    out[i * 8u + 3u] = bitcast<u32>(x - y);
    out[i * 8u + 4u] = bitcast<u32>(-x);
    out[i * 8u + 5u] = bitcast<u32>(halved);
    out[i * 8u + 6u] = bitcast<u32>(v.x + v.y);
    out[i * 8u + 7u] = bitcast<u32>(pair.first * 1e-20 + pair.second);
}
"#;

/// The same in Rust, canonical after every operation as the pass makes it.
fn edges(x_bits: u32, y_bits: u32, pair: (u32, u32)) -> [u32; 8] {
    let c = canonical;
    let x = c(f32::from_bits(x_bits));
    let y = c(f32::from_bits(y_bits));
    let mut halved = x;
    for _ in 0..40 {
        halved = c(halved * 0.25);
    }
    let v = (c(x * y), c(y * 0.5));
    let (first, second) = (c(f32::from_bits(pair.0)), c(f32::from_bits(pair.1)));
    [
        x,
        y,
        c(x * y),
        c(x - y),
        c(-x),
        halved,
        c(v.0 + v.1),
        c(c(first * 1e-20) + second),
    ]
    .map(f32::to_bits)
}

/// Bit patterns that stress the rule: zeros, denormals, the smallest
/// normals, NaNs with payloads, infinities, and ordinary numbers.
fn edge_bits() -> Vec<u32> {
    let mut bits = vec![
        0,
        0x8000_0000,
        1,
        0x8000_0001,
        0x0040_0000,
        0x007f_ffff,
        0x807f_ffff,
        0x0080_0000,
        0x8080_0000,
        0x0080_0001,
        0x3f7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0xffc0_0000,
        0x7f80_0001,
        0x7fbf_ffff,
        0xff80_1234,
        0x7fff_ffff,
        0x3f80_0000,
        0x1e3c_e508, // 1e-20
        0x2000_0000,
        0x2080_0001,
        0x7f7f_ffff,
    ];
    // Pseudo-random words, many of them with small exponents.
    let mut state = 0x1234_5678u32;
    for n in 0..2_000u32 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let word = if n % 2 == 0 {
            state & 0x81ff_ffff
        } else {
            state
        };
        bits.push(word);
    }
    bits
}

#[test]
fn denormals_and_nans_from_inputs_and_operations_are_canonical_on_the_device() {
    let gpu = Gpu::open(None).unwrap_or_else(|error| panic!("{error}"));
    let kernel = Kernel::compile(EDGES, "main", Class::Exact, FUEL).expect("exact");
    let singles = edge_bits();
    // Every edge against every edge, then the random words in pairs.
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for x in &singles[..24] {
        for y in &singles[..24] {
            xs.push(*x);
            ys.push(*y);
        }
    }
    xs.extend(&singles);
    ys.extend(singles.iter().rev());
    // The product of 0x3f7fffff and the smallest normal is exactly halfway
    // between the largest denormal and the smallest normal; it rounds to
    // the smallest normal, which a flushing device must also give.
    assert!(
        xs.iter()
            .zip(&ys)
            .any(|pair| pair == (&0x3f7f_ffff, &0x0080_0000))
    );
    let pairs: Vec<(u32, u32)> = ys
        .iter()
        .zip(xs.iter().rev())
        .map(|(a, b)| (*a, *b))
        .collect();
    let pair_words: Vec<u32> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let count = xs.len() as u32;
    let run = gpu
        .run(
            &kernel,
            &[
                &kernels::bytes(&xs),
                &kernels::bytes(&ys),
                &kernels::bytes(&pair_words),
            ],
            &[u64::from(count) * 32],
            [count.div_ceil(64), 1, 1],
            TIMEOUT,
        )
        .expect("runs");
    let out = kernels::words(&run.outputs[0]);
    let mut differing = Vec::new();
    for (index, ((x, y), pair)) in xs.iter().zip(&ys).zip(&pairs).enumerate() {
        let want = edges(*x, *y, *pair);
        let got = &out[index * 8..index * 8 + 8];
        for slot in 0..8 {
            if got[slot] != want[slot] {
                differing.push((index, slot, *x, *y, got[slot], want[slot]));
            }
        }
        // Nothing that leaves the kernel is a denormal or an odd NaN.
        for word in got {
            assert_eq!(canonical(f32::from_bits(*word)).to_bits(), *word);
        }
    }
    assert!(
        differing.is_empty(),
        "{} differ on {:?}, first (index, slot, x, y, device, rust): {:x?}",
        differing.len(),
        gpu.info(),
        &differing[..differing.len().min(8)]
    );
    // The edges did make denormals and NaNs that needed canonicalizing,
    // and only one zero leaves the kernel.
    assert!(out.contains(&NAN_BITS));
    assert!(out.contains(&0));
    assert!(!out.contains(&0x8000_0000));
}

/// SPIR-V opcodes.
const OP_FUNCTION: u32 = 54;
const OP_BITCAST: u32 = 124;
const OP_DECORATE: u32 = 71;
/// OpStore, OpBranchConditional, OpSwitch, OpReturnValue.
const NO_RESULT: [u32; 4] = [62, 250, 251, 254];
/// OpFNegate, OpFAdd, OpFSub, OpFMul, OpVectorTimesScalar.
const FLOAT_ARITHMETIC: [u32; 5] = [127, 129, 131, 133, 142];

/// For each float arithmetic result in `words`, the opcodes of the
/// instructions that use it (decorations and names aside).
fn float_result_users(words: &[u32]) -> HashMap<u32, Vec<u32>> {
    let mut instructions = Vec::new();
    let mut at = 5;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        instructions.push((words[at] & 0xffff, &words[at + 1..at + count]));
        at += count;
    }
    let first_function = instructions
        .iter()
        .position(|(opcode, _)| *opcode == OP_FUNCTION)
        .expect("a function");
    let mut users: HashMap<u32, Vec<u32>> = instructions
        .iter()
        .filter(|(opcode, _)| FLOAT_ARITHMETIC.contains(opcode))
        .map(|(_, operands)| (operands[1], Vec::new()))
        .collect();
    for (opcode, operands) in &instructions[first_function..] {
        if *opcode == OP_DECORATE {
            continue;
        }
        // Result type and result id come first, except in the
        // instructions that have no result.
        let first_operand = if NO_RESULT.contains(opcode) { 0 } else { 2 };
        for operand in operands.iter().skip(first_operand) {
            if let Some(list) = users.get_mut(operand) {
                list.push(*opcode);
            }
        }
    }
    users
}

#[test]
fn every_float_operation_result_goes_through_the_integer_rule_before_use() {
    for wgsl in [kernels::MANDELBROT, EDGES] {
        let kernel = Kernel::compile(wgsl, "main", Class::Exact, FUEL).expect("exact");
        let users = float_result_users(&kernel.spirv);
        assert!(users.len() >= 8, "{} float operations", users.len());
        for (result, opcodes) in users {
            assert!(
                !opcodes.is_empty() && opcodes.iter().all(|opcode| *opcode == OP_BITCAST),
                "%{result} is used by opcodes {opcodes:?}"
            );
        }
    }
}

#[test]
fn matrices_and_called_functions_are_canonicalized_and_still_validate() {
    let wgsl = "@group(0) @binding(0) var<storage, read> ms: array<mat2x2<f32>>;\n\
                @group(0) @binding(1) var<storage, read_write> out: array<f32>;\n\
                fn twice(m: mat2x2<f32>) -> mat2x2<f32> { return m + m; }\n\
                @compute @workgroup_size(1)\n\
                fn main() {\n\
                    let m = twice(ms[0]) * 0.5;\n\
                    out[0] = m[0].x - m[1].y;\n\
                }";
    Kernel::compile(wgsl, "main", Class::Exact, FUEL).expect("compiles canonicalized");
}
