//! Kernels the tests run, with the same arithmetic in Rust.

/// Fuel per invocation the tests allow.
pub const FUEL: u32 = 1_000_000;

/// Mandelbrot escape counts in f32 using only `+ - *` and comparisons
/// (the example): params are width, height, the iteration cap, the bits of
/// the x and y steps, and the band (0 when absent).
pub const MANDELBROT: &str =
    include_str!("../../../../examples/mandelbrot-gpu/mandelbrot-gpu.wgsl");

/// C = A × B for int8 A and B packed four to a word, i32 C, tiled in
/// workgroup memory (the example): params are M, N and K.
pub const INT8_MATMUL: &str =
    include_str!("../../../../examples/int8-matmul-gpu/int8-matmul-gpu.wgsl");

/// A quantized MLP over a batch, 64 → 32 → 10, in two entry points
/// (`layer1`, `layer2`) over the same buffers (the example).
pub const MLP: &str = include_str!("../../../../examples/mlp-gpu/mlp-gpu.wgsl");

pub fn mandelbrot_params(width: u32, height: u32, iterations: u32) -> Vec<u32> {
    let x_step: f32 = 3.0 / width as f32;
    let y_step: f32 = 3.0 / height as f32;
    vec![
        width,
        height,
        iterations,
        x_step.to_bits(),
        y_step.to_bits(),
    ]
}

/// The same, in Rust (which never fuses or reorders float operations):
/// rows `band × height ..` of the view.
pub fn mandelbrot(params: &[u32]) -> Vec<u32> {
    let (width, height, iterations) = (params[0], params[1], params[2]);
    let (x_step, y_step) = (f32::from_bits(params[3]), f32::from_bits(params[4]));
    let band = params.get(5).copied().unwrap_or(0);
    let mut counts = Vec::new();
    for py in 0..height {
        for px in 0..width {
            let x0 = px as f32 * x_step - 2.25;
            let y0 = (band * height + py) as f32 * y_step - 1.5;
            let (mut x, mut y, mut i) = (0.0f32, 0.0f32, 0u32);
            while i < iterations {
                let x2 = x * x;
                let y2 = y * y;
                if x2 + y2 > 4.0 {
                    break;
                }
                let xt = x2 - y2 + x0;
                y = 2.0 * x * y + y0;
                x = xt;
                i += 1;
            }
            counts.push(i);
        }
    }
    counts
}

/// 64 rounds of xorshift and multiply over each input word.
pub const INT_HASH: &str = r#"
@group(0) @binding(0) var<storage, read> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> hashes: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= arrayLength(&words)) {
        return;
    }
    var h = words[id.x] ^ id.x;
    for (var round = 0u; round < 64u; round = round + 1u) {
        h = h ^ (h << 13u);
        h = h ^ (h >> 17u);
        h = h ^ (h << 5u);
        h = h * 2654435761u + round / 3u;
    }
    hashes[id.x] = h;
}
"#;

pub fn int_hash(words: &[u32]) -> Vec<u32> {
    words
        .iter()
        .enumerate()
        .map(|(index, word)| {
            let mut h = word ^ index as u32;
            for round in 0u32..64 {
                h ^= h << 13;
                h ^= h >> 17;
                h ^= h << 5;
                h = h.wrapping_mul(2_654_435_761).wrapping_add(round / 3);
            }
            h
        })
        .collect()
}

/// A hash chain of `steps` steps in one loop, by each invocation.
pub fn chain(steps: u32) -> String {
    format!(
        "@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n\
         @compute @workgroup_size(1)\n\
         fn main() {{\n\
             var x = 1u;\n\
             for (var i = 0u; i < {steps}u; i = i + 1u) {{\n\
                 x = (x ^ (x >> 7u)) * 2654435761u + i;\n\
             }}\n\
             o[0] = x;\n\
         }}"
    )
}

pub fn chain_in_rust(steps: u32) -> u32 {
    let mut x = 1u32;
    for i in 0..steps {
        x = (x ^ (x >> 7)).wrapping_mul(2_654_435_761).wrapping_add(i);
    }
    x
}

pub fn bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|word| word.to_le_bytes()).collect()
}

pub fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| u32::from_le_bytes(chunk.try_into().expect("four bytes")))
        .collect()
}
