// C = A × B for int8 matrices, exact on any GPU: integer arithmetic only,
// so every device (and the CPU) gives the same i32 results.
//
// params: M, N, K (u32).
// a: A, M×K int8 row-major, byte r·K + k is A[r][k], four bytes per word
//    (little-endian: byte i is bits 8·(i % 4) of word i / 4).
// b: B, K×N int8 row-major, packed the same way.
// c: C, M×N i32 row-major.
//
// Tiled: a workgroup of 16 × 16 invocations computes a 64 × 64 tile of C,
// each invocation a 4 × 4 block of it. The workgroup steps through K 32
// bytes at a time, copying the 64 × 32 slice of A and the 32 × 64 slice
// of B it needs into workgroup memory, still packed four int8 to a word,
// so that each word read from workgroup memory feeds four multiplies.
// Rows need not be word-aligned (K and N are any size); bytes past the
// edge of a matrix are copied as zero, so edge tiles need no other case.
// Dispatch ceil(N / 64) × ceil(M / 64) workgroups.

@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<i32>;

const TILE: u32 = 64u;
const TILE_K: u32 = 32u;
const TILE_K_WORDS: u32 = 8u;    // TILE_K / 4
const TILE_WORDS: u32 = 16u;     // TILE / 4

// a_tile[row · 8 + w]: bytes 4w .. 4w + 3 of row `row` of the A slice.
var<workgroup> a_tile: array<u32, 512>;
// b_tile[k · 16 + w]: columns 4w .. 4w + 3 of row `k` of the B slice.
var<workgroup> b_tile: array<u32, 512>;

// Four int8 packed in a word, sign-extended: byte 0 in x.
fn unpack(word: u32) -> vec4<i32> {
    let shifted = vec4<u32>(word << 24u, word << 16u, word << 8u, word);
    return bitcast<vec4<i32>>(shifted) >> vec4<u32>(24u);
}

// The four bytes starting at byte `offset` of a matrix whose words around
// it are `low` (the word holding `offset`) and `high` (the next one), with
// only the first `valid` bytes kept and the rest zero.
fn four_bytes(low: u32, high: u32, offset: u32, valid: u32) -> u32 {
    let shift = (offset & 3u) * 8u;
    // Aligned bytes are all in `low`: a case of their own, since shifting
    // `high` by 32 is undefined in SPIR-V.
    let joined = select((low >> shift) | (high << ((32u - shift) & 31u)), low, shift == 0u);
    let mask = select((1u << (valid * 8u)) - 1u, 0xffffffffu, valid >= 4u);
    return joined & mask;
}

// Copies word `index` of the A slice at (m0, k0) into a_tile.
fn load_a(index: u32, m0: u32, k0: u32, m: u32, k: u32) {
    let row = m0 + index / TILE_K_WORDS;
    let column = k0 + (index % TILE_K_WORDS) * 4u;
    var valid = 0u;
    if (row < m && column < k) {
        valid = min(k - column, 4u);
    }
    let offset = row * k + column;
    a_tile[index] = four_bytes(a[offset / 4u], a[offset / 4u + 1u], offset, valid);
}

// Copies word `index` of the B slice at (k0, n0) into b_tile.
fn load_b(index: u32, k0: u32, n0: u32, k: u32, n: u32) {
    let row = k0 + index / TILE_WORDS;
    let column = n0 + (index % TILE_WORDS) * 4u;
    var valid = 0u;
    if (row < k && column < n) {
        valid = min(n - column, 4u);
    }
    let offset = row * n + column;
    b_tile[index] = four_bytes(b[offset / 4u], b[offset / 4u + 1u], offset, valid);
}

// Stores the row of four results `sums` at (row, column) of C, within M × N.
fn store(sums: vec4<i32>, row: u32, column: u32, m: u32, n: u32) {
    if (row >= m) {
        return;
    }
    let start = row * n + column;
    if (column < n) { c[start] = sums.x; }
    if (column + 1u < n) { c[start + 1u] = sums.y; }
    if (column + 2u < n) { c[start + 2u] = sums.z; }
    if (column + 3u < n) { c[start + 3u] = sums.w; }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
) {
    let m = params[0];
    let n = params[1];
    let k = params[2];
    let m0 = group.y * TILE;
    let n0 = group.x * TILE;
    // This invocation's rows of the A tile and words of the B tile.
    let row = local.y * 4u;
    let word = local.x;

    var sums0 = vec4<i32>(0);
    var sums1 = vec4<i32>(0);
    var sums2 = vec4<i32>(0);
    var sums3 = vec4<i32>(0);
    for (var k0 = 0u; k0 < k; k0 = k0 + TILE_K) {
        // 512 words per tile, two per invocation.
        load_a(index, m0, k0, m, k);
        load_a(index + 256u, m0, k0, m, k);
        load_b(index, k0, n0, k, n);
        load_b(index + 256u, k0, n0, k, n);
        workgroupBarrier();
        for (var w = 0u; w < TILE_K_WORDS; w = w + 1u) {
            // Four k values of four rows of A, and of four columns of B.
            let a0 = unpack(a_tile[row * TILE_K_WORDS + w]);
            let a1 = unpack(a_tile[(row + 1u) * TILE_K_WORDS + w]);
            let a2 = unpack(a_tile[(row + 2u) * TILE_K_WORDS + w]);
            let a3 = unpack(a_tile[(row + 3u) * TILE_K_WORDS + w]);
            let b0 = unpack(b_tile[(w * 4u) * TILE_WORDS + word]);
            let b1 = unpack(b_tile[(w * 4u + 1u) * TILE_WORDS + word]);
            let b2 = unpack(b_tile[(w * 4u + 2u) * TILE_WORDS + word]);
            let b3 = unpack(b_tile[(w * 4u + 3u) * TILE_WORDS + word]);
            sums0 = sums0 + a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
            sums1 = sums1 + a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
            sums2 = sums2 + a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
            sums3 = sums3 + a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
        }
        workgroupBarrier();
    }
    let column = n0 + word * 4u;
    store(sums0, m0 + row, column, m, n);
    store(sums1, m0 + row + 1u, column, m, n);
    store(sums2, m0 + row + 2u, column, m, n);
    store(sums3, m0 + row + 3u, column, m, n);
}
