// The GPU capacity challenge: each invocation tries ATTEMPTS nonces and
// reports the first that scores below the target and how many did.
//
// A nonce's score is the first eight bytes (little-endian) of BLAKE3 over
// the 32-byte seed and the nonce's eight little-endian bytes: a 40-byte
// message, so one compression of one block (CHUNK_START | CHUNK_END |
// ROOT) gives the hash. Only integer operations, so the kernel is in the
// exact class and the CPU path runs it to the same bytes.
//
// Metering: the only loop is the one over the attempts, and it tests its
// end in `continuing`, so its body runs exactly ATTEMPTS times and every
// invocation uses exactly ATTEMPTS + 1 fuel (one for the invocation, one
// per iteration). Everything inside an attempt is straight-line code (the
// rounds unrolled, the hit counted with `select`), so the fuel does not
// depend on the seed, the nonces or how many of them hit.

// Words: the seed (8, little-endian), the target (low, high), the base
// nonce (low, high).
@group(0) @binding(0) var<storage, read> params: array<u32, 12>;
// Two words per invocation: the index of its first hit (NONE if none),
// then its number of hits.
@group(0) @binding(1) var<storage, read_write> hits: array<u32>;

// GPU_CHALLENGE_ATTEMPTS_PER_INVOCATION in idlegrid-types.
const ATTEMPTS: u32 = 256u;
const NONE: u32 = 0xFFFFFFFFu;

// BLAKE3's IV, as two rows of the state.
const IV_LOW = vec4<u32>(0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au);
const IV_HIGH = vec4<u32>(0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u);
// The last state row of the single block: its counter (zero, as the
// first block of the first chunk), its length and its flags.
const BLOCK_LEN: u32 = 40u;
const FLAGS: u32 = 11u; // CHUNK_START | CHUNK_END | ROOT

// The sixteen state words as four rows, v[0..4], v[4..8], v[8..12],
// v[12..16]: the column step of a round is one `g` on the rows.
struct Rows {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
    d: vec4<u32>,
}

fn rotr(x: vec4<u32>, n: u32) -> vec4<u32> {
    return (x >> vec4<u32>(n)) | (x << vec4<u32>(32u - n));
}

// BLAKE3's quarter-round G, on four columns at once.
fn g(s: Rows, mx: vec4<u32>, my: vec4<u32>) -> Rows {
    var a = s.a + s.b + mx;
    var d = rotr(s.d ^ a, 16u);
    var c = s.c + d;
    var b = rotr(s.b ^ c, 12u);
    a = a + b + my;
    d = rotr(d ^ a, 8u);
    c = c + d;
    b = rotr(b ^ c, 7u);
    return Rows(a, b, c, d);
}

// One round: G on the columns, then on the diagonals (each row turned
// left by its index so the diagonals line up as columns, then back).
fn round(s: Rows, m: array<u32, 16>) -> Rows {
    let columns = g(s, vec4<u32>(m[0], m[2], m[4], m[6]), vec4<u32>(m[1], m[3], m[5], m[7]));
    let turned = Rows(columns.a, columns.b.yzwx, columns.c.zwxy, columns.d.wxyz);
    let diagonals = g(
        turned,
        vec4<u32>(m[8], m[10], m[12], m[14]),
        vec4<u32>(m[9], m[11], m[13], m[15]),
    );
    return Rows(diagonals.a, diagonals.b.wxyz, diagonals.c.zwxy, diagonals.d.yzwx);
}

// BLAKE3's message permutation between rounds.
fn permute(m: array<u32, 16>) -> array<u32, 16> {
    return array<u32, 16>(
        m[2], m[6], m[3], m[10], m[7], m[0], m[4], m[13],
        m[1], m[11], m[12], m[5], m[9], m[14], m[15], m[8],
    );
}

// The first two words of BLAKE3 of the 40-byte message (the seed, then the
// nonce `low`, `high`): the nonce's score as (low, high).
fn score(seed_low: vec4<u32>, seed_high: vec4<u32>, low: u32, high: u32) -> vec2<u32> {
    let m0 = array<u32, 16>(
        seed_low.x, seed_low.y, seed_low.z, seed_low.w,
        seed_high.x, seed_high.y, seed_high.z, seed_high.w,
        low, high, 0u, 0u, 0u, 0u, 0u, 0u,
    );
    var s = Rows(IV_LOW, IV_HIGH, IV_LOW, vec4<u32>(0u, 0u, BLOCK_LEN, FLAGS));
    s = round(s, m0);
    let m1 = permute(m0);
    s = round(s, m1);
    let m2 = permute(m1);
    s = round(s, m2);
    let m3 = permute(m2);
    s = round(s, m3);
    let m4 = permute(m3);
    s = round(s, m4);
    let m5 = permute(m4);
    s = round(s, m5);
    let m6 = permute(m5);
    s = round(s, m6);
    // Output word i is v[i] ^ v[i + 8].
    return (s.a ^ s.c).xy;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    // The batch is one row of at most 65,535 workgroups, so id.x (under
    // 2^22) times ATTEMPTS fits in a word.
    let seed_low = vec4<u32>(params[0], params[1], params[2], params[3]);
    let seed_high = vec4<u32>(params[4], params[5], params[6], params[7]);
    let target_low = params[8];
    let target_high = params[9];
    // This invocation's first nonce, base + id.x * ATTEMPTS, wrapping
    // past 2^64 as the host's `wrapping_add` does.
    let start_low = params[10] + id.x * ATTEMPTS;
    let start_high = params[11] + select(0u, 1u, start_low < params[10]);

    var first = NONE;
    var count = 0u;
    var i = 0u;
    loop {
        let low = start_low + i;
        let high = start_high + select(0u, 1u, low < start_low);
        let s = score(seed_low, seed_high, low, high);
        let hit = (s.y < target_high) | ((s.y == target_high) & (s.x < target_low));
        first = select(first, i, hit & (first == NONE));
        count = count + select(0u, 1u, hit);
        continuing {
            i = i + 1u;
            break if i == ATTEMPTS;
        }
    }
    hits[2u * id.x] = first;
    hits[2u * id.x + 1u] = count;
}
