//! Kernels the CPU-path tests run on both lavapipe and the interpreter,
//! with the same arithmetic in Rust.

/// Out-of-bounds reads and writes through a runtime-sized array in a
/// struct, a local array and a vector, `arrayLength` of a buffer whose
/// size is not whole words, and a write to its last, partial word.
pub const OUT_OF_BOUNDS: &str = r#"
struct Tail { count: u32, items: array<u32> }
@group(0) @binding(0) var<storage, read> tail: Tail;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    var local = array<u32, 4>(1u, 2u, 3u, 4u);
    local[i * 3u] = 9u;
    let v = vec3<u32>(5u, 6u, 7u);
    out[i * 6u] = tail.items[i * 2u];
    out[i * 6u + 1u] = arrayLength(&tail.items);
    out[i * 6u + 2u] = local[i] + local[i + 2u];
    out[i * 6u + 3u] = v[i];
    out[i * 6u + 4u] = tail.count;
    out[i * 6u + 5u] = arrayLength(&out);
    out[i * 6u + 100u] = 1u;
    if (i == 3u) {
        out[30] = 0xaabbccddu;
    }
}
"#;

/// C = A × B (M×K by K×N, row-major) in 8×8 tiles staged through
/// workgroup memory, for scalar type `ty` whose zero is `zero`.
pub fn tiled_matmul(ty: &str, zero: &str) -> String {
    format!(
        r#"
@group(0) @binding(0) var<storage, read> dims: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<{ty}>;
@group(0) @binding(2) var<storage, read> b: array<{ty}>;
@group(0) @binding(3) var<storage, read_write> c: array<{ty}>;
var<workgroup> tile_a: array<array<{ty}, 8>, 8>;
var<workgroup> tile_b: array<array<{ty}, 8>, 8>;

@compute @workgroup_size(8, 8)
fn main(@builtin(local_invocation_id) local: vec3<u32>,
        @builtin(workgroup_id) group: vec3<u32>) {{
    let m = dims[0];
    let n = dims[1];
    let k = dims[2];
    let row = group.y * 8u + local.y;
    let col = group.x * 8u + local.x;
    var sum = {zero};
    let tiles = (k + 7u) / 8u;
    for (var t = 0u; t < tiles; t = t + 1u) {{
        let ak = t * 8u + local.x;
        let bk = t * 8u + local.y;
        tile_a[local.y][local.x] = select({zero}, a[row * k + ak], row < m && ak < k);
        tile_b[local.y][local.x] = select({zero}, b[bk * n + col], bk < k && col < n);
        workgroupBarrier();
        for (var i = 0u; i < 8u; i = i + 1u) {{
            sum = sum + tile_a[local.y][i] * tile_b[i][local.x];
        }}
        workgroupBarrier();
    }}
    if (row < m && col < n) {{
        c[row * n + col] = sum;
    }}
}}
"#
    )
}

/// The f32 tiled product in Rust: each sum runs over whole tiles, the
/// padding adding `0 * 0`.
pub fn tiled_matmul_f32(a: &[f32], b: &[f32], m: u32, n: u32, k: u32) -> Vec<f32> {
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let mut c = Vec::with_capacity(m * n);
    for row in 0..m {
        for col in 0..n {
            let mut sum = 0.0f32;
            for kk in 0..k.div_ceil(8) * 8 {
                let term = if kk < k {
                    a[row * k + kk] * b[kk * n + col]
                } else {
                    0.0 * 0.0
                };
                sum += term;
            }
            c.push(sum);
        }
    }
    c
}

/// The integer product, wrapping.
pub fn matmul_wrapping(a: &[u32], b: &[u32], m: u32, n: u32, k: u32) -> Vec<u32> {
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let mut c = Vec::with_capacity(m * n);
    for row in 0..m {
        for col in 0..n {
            c.push((0..k).fold(0u32, |sum, kk| {
                sum.wrapping_add(a[row * k + kk].wrapping_mul(b[kk * n + col]))
            }));
        }
    }
    c
}

/// Words of the histogram's unsigned output.
pub const HISTOGRAM_WORDS: u64 = 9;

/// A histogram of the low two bits of each value, counted in workgroup
/// memory and added to the output, plus max, xor, subtract and
/// compare-exchange over all values in storage, and signed min and max.
/// Every atomic index is a constant: naga's SPIR-V writer cannot
/// bounds-check an atomic at a computed index ("Atomics out-of-bounds
/// handling" is unimplemented), so such kernels do not compile.
pub const HISTOGRAM: &str = r#"
@group(0) @binding(0) var<storage, read> values: array<u32>;
@group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>, 9>;
@group(0) @binding(2) var<storage, read_write> signed: array<atomic<i32>, 2>;
var<workgroup> local_bins: array<atomic<u32>, 4>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>,
        @builtin(local_invocation_index) index: u32) {
    if (id.x < arrayLength(&values)) {
        let v = values[id.x];
        switch v & 3u {
            case 0u: { atomicAdd(&local_bins[0], 1u); }
            case 1u: { atomicAdd(&local_bins[1], 1u); }
            case 2u: { atomicAdd(&local_bins[2], 1u); }
            default: { atomicAdd(&local_bins[3], 1u); }
        }
        atomicMax(&bins[4], v);
        atomicXor(&bins[5], v);
        atomicSub(&bins[6], v);
        let swapped = atomicCompareExchangeWeak(&bins[7], 0u, 1u);
        if (swapped.exchanged) {
            atomicAdd(&bins[8], 1u);
        }
        let s = bitcast<i32>(v * 2654435761u);
        atomicMin(&signed[0], s);
        atomicMax(&signed[1], s);
    }
    workgroupBarrier();
    if (index == 0u) {
        atomicAdd(&bins[0], atomicLoad(&local_bins[0]));
        atomicAdd(&bins[1], atomicLoad(&local_bins[1]));
        atomicAdd(&bins[2], atomicLoad(&local_bins[2]));
        atomicAdd(&bins[3], atomicLoad(&local_bins[3]));
    }
}
"#;

/// The histogram's outputs: the unsigned words and the signed min and max.
pub fn histogram(values: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut bins = vec![0u32; HISTOGRAM_WORDS as usize];
    let (mut low, mut high) = (0i32, 0i32);
    for v in values {
        bins[(v & 3) as usize] += 1;
        bins[4] = bins[4].max(*v);
        bins[5] ^= v;
        bins[6] = bins[6].wrapping_sub(*v);
        let s = v.wrapping_mul(2_654_435_761) as i32;
        low = low.min(s);
        high = high.max(s);
    }
    bins[7] = 1;
    bins[8] = 1;
    (bins, vec![low as u32, high as u32])
}

/// A switch with shared and default cases, nested loops with `break`,
/// `continue` and `break if`, and functions taking and returning a
/// struct.
pub const CONTROL_FLOW: &str = r#"
struct Pair { a: u32, b: i32, v: vec2<u32> }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;

fn mix(p: Pair, k: u32) -> Pair {
    var q = p;
    q.a = p.a * 3u + k;
    q.b = p.b - i32(k);
    q.v = p.v.yx + vec2<u32>(k, 1u);
    return q;
}

fn classify(x: u32) -> u32 {
    switch x % 7u {
        case 0u: { return 100u; }
        case 1u, 2u: { return 200u + x; }
        case 3u, default: { return 300u; }
        case 5u: { }
    }
    return 400u;
}

@compute @workgroup_size(16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let x = input[id.x];
    var total = 0u;
    for (var i = 0u; i < 10u; i = i + 1u) {
        if (i == x % 5u) {
            continue;
        }
        var j = 0u;
        loop {
            j = j + 1u;
            if (j > 6u) {
                break;
            }
            if ((i + j) % 3u == 0u) {
                continue;
            }
            total = total * 31u + i * j + x;
            continuing {
                break if j >= (x % 4u) + 3u;
            }
        }
        if (total % 11u == 7u) {
            break;
        }
    }
    var p = Pair(x, i32(x) - 50, vec2<u32>(x, x ^ 5u));
    for (var k = 0u; k < 3u; k = k + 1u) {
        p = mix(p, k);
    }
    output[id.x * 4u] = total;
    output[id.x * 4u + 1u] = classify(x);
    output[id.x * 4u + 2u] = p.a + u32(p.b);
    output[id.x * 4u + 3u] = p.v.x * 7u + p.v.y;
}
"#;

pub fn control_flow(input: &[u32]) -> Vec<u32> {
    let mut output = Vec::new();
    for x in input.iter().copied() {
        let mut total = 0u32;
        for i in 0..10u32 {
            if i == x % 5 {
                continue;
            }
            let mut j = 0u32;
            loop {
                j += 1;
                if j > 6 {
                    break;
                }
                if !(i + j).is_multiple_of(3) {
                    total = total.wrapping_mul(31).wrapping_add(i * j).wrapping_add(x);
                }
                if j >= x % 4 + 3 {
                    break;
                }
            }
            if total % 11 == 7 {
                break;
            }
        }
        let classify = match x % 7 {
            0 => 100,
            1 | 2 => 200 + x,
            5 => 400,
            _ => 300,
        };
        let (mut a, mut b, mut v) = (x, x as i32 - 50, [x, x ^ 5]);
        for k in 0..3u32 {
            a = a.wrapping_mul(3).wrapping_add(k);
            b = b.wrapping_sub(k as i32);
            v = [v[1].wrapping_add(k), v[0].wrapping_add(1)];
        }
        output.extend([
            total,
            classify,
            a.wrapping_add(b as u32),
            v[0].wrapping_mul(7).wrapping_add(v[1]),
        ]);
    }
    output
}

/// Results per pair of the edge-case kernel.
pub const EDGE_RESULTS: u64 = 32;

/// Integer division by zero and `i32::MIN / -1`, shifts by 32 and more,
/// float-to-integer conversion of huge, infinite and NaN values, the bit
/// builtins, comparisons with NaN, packed bytes: one pair of words in,
/// [`EDGE_RESULTS`] words out.
pub const EDGES: &str = r#"
@group(0) @binding(0) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read_write> results: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= arrayLength(&pairs)) {
        return;
    }
    let a = pairs[id.x].x;
    let b = pairs[id.x].y;
    let sa = bitcast<i32>(a);
    let sb = bitcast<i32>(b);
    let f = bitcast<f32>(a);
    let g = bitcast<f32>(b);
    let at = id.x * 32u;
    results[at] = a / b;
    results[at + 1u] = a % b;
    results[at + 2u] = bitcast<u32>(sa / sb);
    results[at + 3u] = bitcast<u32>(sa % sb);
    results[at + 4u] = a << b;
    results[at + 5u] = a >> b;
    results[at + 6u] = bitcast<u32>(sa >> b);
    results[at + 7u] = bitcast<u32>(sa << b);
    results[at + 8u] = bitcast<u32>(i32(f));
    results[at + 9u] = u32(f);
    results[at + 10u] = countLeadingZeros(a);
    results[at + 11u] = countTrailingZeros(a);
    results[at + 12u] = bitcast<u32>(firstLeadingBit(sa));
    results[at + 13u] = firstLeadingBit(a);
    results[at + 14u] = firstTrailingBit(a);
    results[at + 15u] = extractBits(a, b & 63u, (b >> 8u) & 63u);
    results[at + 16u] = bitcast<u32>(extractBits(sa, b & 63u, (b >> 8u) & 63u));
    results[at + 17u] = insertBits(a, b, (b >> 16u) & 63u, (b >> 24u) & 63u);
    results[at + 18u] = reverseBits(a) ^ countOneBits(b);
    results[at + 19u] = bitcast<u32>(abs(sa));
    results[at + 20u] = bitcast<u32>(clamp(sa, sb, 1000));
    results[at + 21u] = min(a, b) ^ (max(a, b) << 1u);
    results[at + 22u] = bitcast<u32>(min(sa, sb)) + bitcast<u32>(max(sa, sb)) * 3u;
    results[at + 23u] = dot(vec3<u32>(a, b, 7u), vec3<u32>(b, 3u, a));
    results[at + 24u] = bitcast<u32>(f32(sa));
    results[at + 25u] = bitcast<u32>(f32(a));
    results[at + 26u] = bitcast<u32>(sign(sa)) + u32(a < b) * 4u + u32(sa < sb) * 8u
        + u32(f < g) * 16u + u32(f == g) * 32u + u32(f != g) * 64u + u32(f >= g) * 128u;
    results[at + 27u] = u32(bool(a)) + u32(bool(f)) * 2u + bitcast<u32>(-sa) * 4u;
    results[at + 28u] = bitcast<u32>(dot4I8Packed(a, b));
    results[at + 29u] = dot4U8Packed(a, b);
    results[at + 30u] = pack4xI8Clamp(vec4<i32>(sa, sb, sa >> 8u, -sb)) ^ pack4xU8(vec4<u32>(a, b, 3u, a >> 4u));
    let u = unpack4xI8(a);
    results[at + 31u] = bitcast<u32>(u.x + u.y * 3 + u.z * 5 + u.w * 7) ^ dot(unpack4xU8(b), vec4<u32>(1u, 2u, 3u, 4u));
}
"#;

/// WGSL's rule for extractBits' and insertBits' bit range.
fn bit_range(offset: u32, count: u32) -> (u32, u32) {
    let offset = offset.min(32);
    (offset, count.min(32 - offset))
}

fn first_leading_bit(value: u32) -> u32 {
    if value == 0 {
        u32::MAX
    } else {
        31 - value.leading_zeros()
    }
}

fn bytes_of(word: u32, signed: bool) -> [u32; 4] {
    [0, 1, 2, 3].map(|byte| {
        let value = (word >> (8 * byte)) & 0xff;
        if signed {
            value as u8 as i8 as i32 as u32
        } else {
            value
        }
    })
}

/// The edge-case kernel in Rust, following WGSL's definitions (a zero or
/// overflowing divisor divides by one, shift amounts are taken modulo 32,
/// float-to-integer conversion saturates and takes NaN to the lowest
/// value) and naga's SPIR-V (every float comparison with NaN is false,
/// `!=` included).
pub fn edges(pairs: &[u32]) -> Vec<u32> {
    let mut results = Vec::new();
    for pair in pairs.chunks_exact(2) {
        let (a, b) = (pair[0], pair[1]);
        let (sa, sb) = (a as i32, b as i32);
        // The exact class makes every float canonical as it is made, the
        // bitcasts of the inputs included: denormals become zeros.
        let (f, g) = (
            idlegrid_gpu::canonical::canonical(f32::from_bits(a)),
            idlegrid_gpu::canonical::canonical(f32::from_bits(b)),
        );
        let divisor = if b == 0 { 1 } else { b };
        let signed_divisor = if sb == 0 || (sa == i32::MIN && sb == -1) {
            1
        } else {
            sb
        };
        // naga clamps to the floats each type holds before converting.
        let to_i32 = if f.is_nan() {
            i32::MIN
        } else {
            f.clamp(-2_147_483_648.0, 2_147_483_520.0) as i32
        };
        let to_u32 = f.clamp(0.0, 4_294_967_040.0) as u32;
        let (offset, count) = bit_range(b & 63, (b >> 8) & 63);
        let extract = if count == 0 {
            (0, 0)
        } else {
            (
                (a >> offset) & (u32::MAX >> (32 - count)),
                (((a << (32 - offset - count)) as i32) >> (32 - count)) as u32,
            )
        };
        let (offset, count) = bit_range((b >> 16) & 63, (b >> 24) & 63);
        let insert = if count == 0 {
            a
        } else {
            let mask = (u32::MAX >> (32 - count)) << offset;
            (a & !mask) | ((b << offset) & mask)
        };
        let signed_leading = first_leading_bit(if sa < 0 { !a } else { a });
        let trailing = if a == 0 { u32::MAX } else { a.trailing_zeros() };
        let truth = |value: bool| u32::from(value);
        let compared = (sa.signum() as u32)
            .wrapping_add(truth(a < b) * 4)
            .wrapping_add(truth(sa < sb) * 8)
            .wrapping_add(truth(f < g) * 16)
            .wrapping_add(truth(f == g) * 32)
            .wrapping_add(truth(!f.is_nan() && !g.is_nan() && f != g) * 64)
            .wrapping_add(truth(f >= g) * 128);
        let (xa, xb) = (bytes_of(a, true), bytes_of(b, true));
        let (ua, ub) = (bytes_of(a, false), bytes_of(b, false));
        let dot_signed = (0..4).fold(0u32, |sum, i| sum.wrapping_add(xa[i].wrapping_mul(xb[i])));
        let dot_unsigned = (0..4).fold(0u32, |sum, i| sum + ua[i] * ub[i]);
        let clamp_bytes = [sa, sb, sa >> 8, sb.wrapping_neg()]
            .iter()
            .enumerate()
            .fold(0u32, |packed, (i, v)| {
                packed | ((*v).clamp(-128, 127) as u32 & 0xff) << (8 * i)
            });
        let plain_bytes = [a, b, 3, a >> 4]
            .iter()
            .enumerate()
            .fold(0u32, |packed, (i, v)| packed | (v & 0xff) << (8 * i));
        let unpacked = xa[0]
            .wrapping_add(xa[1].wrapping_mul(3))
            .wrapping_add(xa[2].wrapping_mul(5))
            .wrapping_add(xa[3].wrapping_mul(7));
        let unpacked_dot = ub[0] + ub[1] * 2 + ub[2] * 3 + ub[3] * 4;
        results.extend([
            a / divisor,
            a % divisor,
            sa.wrapping_div(signed_divisor) as u32,
            sa.wrapping_rem(signed_divisor) as u32,
            a << (b & 31),
            a >> (b & 31),
            (sa >> (b & 31)) as u32,
            (sa << (b & 31)) as u32,
            to_i32 as u32,
            to_u32,
            a.leading_zeros(),
            a.trailing_zeros(),
            signed_leading,
            first_leading_bit(a),
            trailing,
            extract.0,
            extract.1,
            insert,
            a.reverse_bits() ^ b.count_ones(),
            sa.wrapping_abs() as u32,
            sa.max(sb).min(1000) as u32,
            a.min(b) ^ (a.max(b) << 1),
            (sa.min(sb) as u32).wrapping_add((sa.max(sb) as u32).wrapping_mul(3)),
            a.wrapping_mul(b)
                .wrapping_add(b.wrapping_mul(3))
                .wrapping_add(7u32.wrapping_mul(a)),
            (sa as f32).to_bits(),
            (a as f32).to_bits(),
            compared,
            truth(a != 0) + truth(f != 0.0) * 2 + sa.wrapping_neg().wrapping_mul(4) as u32,
            dot_signed,
            dot_unsigned,
            clamp_bytes ^ plain_bytes,
            unpacked ^ unpacked_dot,
        ]);
    }
    results
}

/// Two entry points over the same buffers: `square` writes each input
/// squared plus five, `pairs` sums a few of those squares.
pub const TWO_STEPS: &str = r#"
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> squares: array<u32>;
@group(0) @binding(2) var<storage, read_write> sums: array<u32>;

@compute @workgroup_size(64)
fn square(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&input)) {
        squares[id.x] = input[id.x] * input[id.x] + 5u;
    }
}

@compute @workgroup_size(64)
fn pairs(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = arrayLength(&squares);
    if (id.x >= n) {
        return;
    }
    var sum = 0u;
    for (var j = 0u; j <= id.x % 4u; j = j + 1u) {
        sum = sum + squares[(id.x + j) % n];
    }
    sums[id.x] = sum;
}
"#;

/// f32 and integer arithmetic feeding each other in a loop whose length
/// depends on the data.
pub const MIXED: &str = r#"
@group(0) @binding(0) var<storage, read> rows: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> results: array<vec2<u32>>;

@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= arrayLength(&rows)) {
        return;
    }
    let row = rows[id.x];
    var f = bitcast<f32>(row.x);
    let g = bitcast<f32>(row.y);
    var n = row.z;
    let m = bitcast<i32>(row.w);
    for (var i = 0u; i < (n & 7u) + 1u; i = i + 1u) {
        f = f * g - f32(m >> 24u) * 0.125 + f32(i);
        f = f - floor(f * 0.001) * 1000.0;
        let t = i32(f * 3.0);
        n = (n ^ u32(t)) * 1664525u + 1013904223u;
        n = n + select(0u, 17u, f > 100.0 && (n & 1u) == 1u);
    }
    results[id.x] = vec2<u32>(bitcast<u32>(f), n);
}
"#;

pub fn mixed(input: &[u32]) -> Vec<u32> {
    let mut results = Vec::new();
    for row in input.chunks_exact(4) {
        let (mut f, g, mut n, m) = (
            f32::from_bits(row[0]),
            f32::from_bits(row[1]),
            row[2],
            row[3] as i32,
        );
        let mut i = 0u32;
        while i < (n & 7) + 1 {
            f = f * g - (m >> 24) as f32 * 0.125 + i as f32;
            f = f - (f * 0.001).floor() * 1000.0;
            let t = (f * 3.0) as i32;
            n = (n ^ t as u32)
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            n = n.wrapping_add(if f > 100.0 && n & 1 == 1 { 17 } else { 0 });
            i += 1;
        }
        results.extend([f.to_bits(), n]);
    }
    results
}

/// f32 matrices: loaded from and stored to storage (`mat3x3` columns are
/// padded to four words), scaled, added and subtracted, indexed
/// through pointers and by value, in and out of bounds.
pub const MATRICES: &str = r#"
@group(0) @binding(0) var<storage, read> ms: array<mat3x3<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<mat3x3<f32>>;
@group(0) @binding(2) var<storage, read_write> columns: array<vec2<f32>>;

@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = arrayLength(&ms);
    if (id.x >= n) {
        return;
    }
    let a = ms[id.x];
    let b = ms[(id.x + 1u) % n];
    var m = a * 2.0 + b - a * -0.5;
    m[id.x % 3u][1] = 7.0;
    m[1] = m[2] - m[0];
    out[id.x] = m;
    let small = mat2x2<f32>(a[0].xy, b[2].yz) - mat2x2<f32>(vec2<f32>(1.0, 2.0), vec2<f32>(3.0, 4.0));
    columns[id.x * 2u] = small[0];
    columns[id.x * 2u + 1u] = small[id.x];
}
"#;

/// A 3×3 matrix as its columns.
pub type Matrix3 = [[f32; 3]; 3];

/// The matrix kernel in Rust: the `mat3x3` outputs and the `vec2` columns.
pub fn matrices(ms: &[Matrix3]) -> (Vec<Matrix3>, Vec<[f32; 2]>) {
    let n = ms.len();
    let (mut out, mut columns) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (a, b) = (ms[i], ms[(i + 1) % n]);
        let mut m = [[0.0f32; 3]; 3];
        for c in 0..3 {
            for r in 0..3 {
                m[c][r] = a[c][r] * 2.0 + b[c][r] - a[c][r] * -0.5;
            }
        }
        m[i % 3][1] = 7.0;
        m[1] = [0, 1, 2].map(|r| m[2][r] - m[0][r]);
        out.push(m);
        let small = [
            [a[0][0] - 1.0, a[0][1] - 2.0],
            [b[2][1] - 3.0, b[2][2] - 4.0],
        ];
        columns.push(small[0]);
        columns.push(if i < 2 { small[i] } else { [0.0, 0.0] });
    }
    (out, columns)
}

/// A workgroup sum: each workgroup's first invocation picks a count that
/// `workgroupUniformLoad` hands to all, a reduction in workgroup memory
/// with a barrier inside a loop inside a called function, a pointer
/// parameter and a private table with an initializer.
pub const REDUCE: &str = r#"
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
var<workgroup> shared_count: u32;
var<workgroup> partial: array<u32, 16>;
var<private> weights: array<u32, 4> = array<u32, 4>(1u, 3u, 5u, 7u);

fn bump(total: ptr<function, u32>, by: u32) {
    *total = *total + by;
}

fn reduce(index: u32, value: u32) -> u32 {
    partial[index] = value;
    for (var stride = 8u; stride > 0u; stride = stride >> 1u) {
        workgroupBarrier();
        if (index < stride) {
            partial[index] = partial[index] + partial[index + stride];
        }
    }
    workgroupBarrier();
    return partial[0];
}

@compute @workgroup_size(16)
fn main(@builtin(local_invocation_index) index: u32,
        @builtin(workgroup_id) group: vec3<u32>) {
    if (index == 0u) {
        shared_count = input[group.x] % 9u;
    }
    let count = workgroupUniformLoad(&shared_count);
    var sum = 0u;
    for (var i = 0u; i < count; i = i + 1u) {
        bump(&sum, i * index + weights[i % 4u]);
    }
    let total = reduce(index, sum);
    out[group.x * 17u + index] = sum;
    if (index == 0u) {
        out[group.x * 17u + 16u] = total;
    }
}
"#;

pub fn reduce(input: &[u32], groups: usize) -> Vec<u32> {
    let weights = [1u32, 3, 5, 7];
    let mut out = Vec::new();
    for group in input.iter().take(groups) {
        let count = group % 9;
        let sums: Vec<u32> = (0..16u32)
            .map(|index| {
                (0..count)
                    .map(|i| i * index + weights[(i % 4) as usize])
                    .sum()
            })
            .collect();
        out.extend(&sums);
        out.push(sums.iter().sum());
    }
    out
}

/// Every compute built-in, some through a struct argument, over a 3-D
/// grid of 3-D workgroups, plus `atomicStore`, `atomicExchange` and an
/// atomic struct member.
pub const BUILT_INS: &str = r#"
struct Ids {
    @builtin(global_invocation_id) global: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(num_workgroups) groups: vec3<u32>,
}
struct Counters { first: atomic<u32>, last: atomic<u32> }
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read_write> counters: Counters;

@compute @workgroup_size(2, 3, 2)
fn main(ids: Ids,
        @builtin(workgroup_id) group: vec3<u32>,
        @builtin(local_invocation_id) local: vec3<u32>) {
    let width = ids.groups.x * 2u;
    let height = ids.groups.y * 3u;
    let flat = ids.global.x + (ids.global.y + ids.global.z * height) * width;
    out[flat * 4u] = ids.index;
    out[flat * 4u + 1u] = group.x + group.y * 10u + group.z * 100u;
    out[flat * 4u + 2u] = local.x + local.y * 10u + local.z * 100u;
    out[flat * 4u + 3u] = ids.groups.x * ids.groups.y * ids.groups.z;
    if (flat == 0u) {
        atomicStore(&counters.first, 41u);
    }
    storageBarrier();
    let before = atomicExchange(&counters.last, 7u);
    atomicMax(&counters.first, before & 0u);
}
"#;

/// The built-ins kernel's `out` in Rust, over `groups` workgroups.
pub fn built_ins(groups: [u32; 3]) -> Vec<u32> {
    let size = [2u32, 3, 2];
    let (width, height) = (groups[0] * size[0], groups[1] * size[1]);
    let mut out = vec![0u32; (width * height * groups[2] * size[2] * 4) as usize];
    for gz in 0..groups[2] {
        for gy in 0..groups[1] {
            for gx in 0..groups[0] {
                for index in 0..12u32 {
                    let local = [index % 2, index / 2 % 3, index / 6];
                    let global = [
                        gx * size[0] + local[0],
                        gy * size[1] + local[1],
                        gz * size[2] + local[2],
                    ];
                    let flat = (global[0] + (global[1] + global[2] * height) * width) as usize;
                    out[flat * 4..flat * 4 + 4].copy_from_slice(&[
                        index,
                        gx + gy * 10 + gz * 100,
                        local[0] + local[1] * 10 + local[2] * 100,
                        groups[0] * groups[1] * groups[2],
                    ]);
                }
            }
        }
    }
    out
}
