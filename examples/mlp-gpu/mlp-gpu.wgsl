// A small quantized MLP over a batch of inputs, exact on any GPU: int8
// weights and activations, i32 biases and sums, integer arithmetic only,
// so every device (and the CPU) gives the same logits.
//
//   64 int8 inputs → 32 hidden units (ReLU, requantized to int8) → 10 logits
//
// Two entry points over the same buffers, run as two dispatches in order:
// `layer1` writes the hidden activations to `hidden`, `layer2` reads them
// and writes `results`.
//
// params: batch, multiplier, shift (u32). The hidden layer's sums are
//     requantized as round(sum · multiplier / 2^shift), rounding halves
//     up, then clamped to 0 … 127 (ReLU). 1 ≤ multiplier < 2^31 and
//     32 ≤ shift ≤ 62: a scale below one half, as for any real layer.
// model: w1 (32 × 64 int8, hidden unit j's weights in bytes 64j …),
//     b1 (32 i32), w2 (10 × 32 int8, logit o's weights in bytes 32o …),
//     b2 (10 i32); int8 packed four to a word, byte 0 lowest.
// inputs: batch × 64 int8, one input per row.
// hidden: batch × 32 int8, written by layer1.
// results: batch rows of 11 i32: the 10 logits, then the class (the index
//     of the largest logit, the first one on a tie), written by layer2.
//
// Dispatch layer1 over ceil(batch / 8) workgroups and layer2 over
// ceil(batch / 64).

@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> model: array<u32>;
@group(0) @binding(2) var<storage, read> inputs: array<u32>;
@group(0) @binding(3) var<storage, read_write> hidden: array<u32>;
@group(0) @binding(4) var<storage, read_write> results: array<i32>;

const INPUTS: u32 = 64u;
const HIDDEN: u32 = 32u;
const OUTPUTS: u32 = 10u;
// Words of a row: of inputs and w1, of hidden and w2.
const INPUT_WORDS: u32 = 16u;
const HIDDEN_WORDS: u32 = 8u;
// Where each part of the model starts, in words.
const W1: u32 = 0u;
const B1: u32 = 512u;
const W2: u32 = 544u;
const B2: u32 = 624u;

// w1, shared by the workgroup: every row of the batch uses all of it.
var<workgroup> w1: array<u32, 512>;

// Four int8 packed in a word, sign-extended: byte 0 in x.
fn unpack(word: u32) -> vec4<i32> {
    let shifted = vec4<u32>(word << 24u, word << 16u, word << 8u, word);
    return bitcast<vec4<i32>>(shifted) >> vec4<u32>(24u);
}

fn dot4(x: vec4<i32>, y: vec4<i32>) -> i32 {
    let products = x * y;
    return products.x + products.y + products.z + products.w;
}

// The hidden unit's value from its sum: clamp(round(sum · multiplier /
// 2^shift), 0, 127). A sum at or below zero gives zero (the rounding adds
// less than one half), so only positive sums are scaled, and their
// product, below 2^62, is formed exactly as a 64-bit (high, low) pair
// from 16-bit halves.
fn requantize(sum: i32, multiplier: u32, shift: u32) -> u32 {
    let x = u32(max(sum, 0));
    let x_low = x & 0xffffu;
    let x_high = x >> 16u;
    let m_low = multiplier & 0xffffu;
    let m_high = multiplier >> 16u;
    let cross1 = x_low * m_high;
    let cross2 = x_high * m_low;
    let middle = ((x_low * m_low) >> 16u) + (cross1 & 0xffffu) + (cross2 & 0xffffu);
    var high = x_high * m_high + (cross1 >> 16u) + (cross2 >> 16u) + (middle >> 16u);
    let low = x * multiplier;
    // + 2^(shift - 1): bit 31 of the low word when shift is 32, else a bit
    // of the high word.
    if (shift == 32u) {
        high = high + select(0u, 1u, low >= 0x80000000u);
    } else {
        high = high + (1u << (shift - 33u));
    }
    return min(high >> (shift - 32u), 127u);
}

// One invocation per row of the batch and group of four hidden units,
// eight to a row: each packs its four int8 into one word of `hidden`.
@compute @workgroup_size(64)
fn layer1(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
) {
    for (var word = index; word < HIDDEN * INPUT_WORDS; word = word + 64u) {
        w1[word] = model[W1 + word];
    }
    workgroupBarrier();
    let row = id.x / 8u;
    let unit = (id.x % 8u) * 4u;
    if (row < params[0]) {
        var sums = vec4<i32>(
            bitcast<i32>(model[B1 + unit]),
            bitcast<i32>(model[B1 + unit + 1u]),
            bitcast<i32>(model[B1 + unit + 2u]),
            bitcast<i32>(model[B1 + unit + 3u]),
        );
        for (var word = 0u; word < INPUT_WORDS; word = word + 1u) {
            let x = unpack(inputs[row * INPUT_WORDS + word]);
            sums.x = sums.x + dot4(x, unpack(w1[unit * INPUT_WORDS + word]));
            sums.y = sums.y + dot4(x, unpack(w1[(unit + 1u) * INPUT_WORDS + word]));
            sums.z = sums.z + dot4(x, unpack(w1[(unit + 2u) * INPUT_WORDS + word]));
            sums.w = sums.w + dot4(x, unpack(w1[(unit + 3u) * INPUT_WORDS + word]));
        }
        let multiplier = params[1];
        let shift = params[2];
        hidden[row * HIDDEN_WORDS + unit / 4u] = requantize(sums.x, multiplier, shift)
            | (requantize(sums.y, multiplier, shift) << 8u)
            | (requantize(sums.z, multiplier, shift) << 16u)
            | (requantize(sums.w, multiplier, shift) << 24u);
    }
}

// One invocation per row of the batch: its 10 logits and its class.
@compute @workgroup_size(64)
fn layer2(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.x;
    if (row >= params[0]) {
        return;
    }
    let start = row * (OUTPUTS + 1u);
    var best = 0u;
    var best_logit = 0;
    for (var output = 0u; output < OUTPUTS; output = output + 1u) {
        var logit = bitcast<i32>(model[B2 + output]);
        for (var word = 0u; word < HIDDEN_WORDS; word = word + 1u) {
            let h = unpack(hidden[row * HIDDEN_WORDS + word]);
            logit = logit + dot4(h, unpack(model[W2 + output * HIDDEN_WORDS + word]));
        }
        results[start + output] = logit;
        if (output == 0u || logit > best_logit) {
            best = output;
            best_logit = logit;
        }
    }
    results[start + OUTPUTS] = i32(best);
}
