// idlegrid's exact library: division, square roots and transcendentals
// built only from what the exact class allows (f32 `+ - *`, comparisons,
// `select`, `abs`, `floor`, integer operations and bitcasts), so every
// device gives the same bits. Initial guesses come from bit tricks,
// Newton steps refine them; exp, log, sin and cos reduce their argument
// and evaluate a polynomial in Horner form.
//
// Special values are decided on the bits, never by float comparisons with
// NaN. Results that would be denormal or `-0.0` are `+0.0`, as the exact
// class makes every zero. Errors measured against f64 are in
// docs/gpu.md.
//
// Functions: ig_recip, ig_div, ig_sqrt, ig_rsqrt, ig_exp, ig_exp2,
// ig_log, ig_log2, ig_sin, ig_cos, ig_tanh, ig_sigmoid (f32 -> f32).

const IG_SIGN: u32 = 0x80000000u;
const IG_MAGNITUDE: u32 = 0x7fffffffu;
const IG_INFINITY: u32 = 0x7f800000u;
const IG_NAN: u32 = 0x7fc00000u;

// 2^k for k in [-126, 127].
fn ig_pow2(k: i32) -> f32 {
    return bitcast<f32>(u32(k + 127) << 23u);
}

// x * 2^k for any k: exact unless the result overflows (infinity) or is
// denormal (zero).
fn ig_scale(x: f32, k: i32) -> f32 {
    let clamped = clamp(k, -252, 254);
    let first = clamped >> 1u;
    return x * ig_pow2(first) * ig_pow2(clamped - first);
}

// The unbiased exponent of a normal float's bits.
fn ig_exponent(bits: u32) -> i32 {
    return i32((bits >> 23u) & 0xffu) - 127;
}

// A normal float's significand, in [1, 2), sign dropped.
fn ig_significand(bits: u32) -> f32 {
    return bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
}

// 1 / m for m in [1, 2): a guess from the bits, then three Newton steps.
fn ig_recip_significand(m: f32) -> f32 {
    var r = bitcast<f32>(0x7ef311c3u - bitcast<u32>(m));
    r = r + r * (1.0 - m * r);
    r = r + r * (1.0 - m * r);
    r = r + r * (1.0 - m * r);
    return r;
}

// 1 / sqrt(m) for m in [1, 4): a guess from the bits, then two Newton
// steps.
fn ig_rsqrt_significand(m: f32) -> f32 {
    var y = bitcast<f32>(0x5f3759dfu - (bitcast<u32>(m) >> 1u));
    y = y * (1.5 - 0.5 * m * y * y);
    y = y * (1.5 - 0.5 * m * y * y);
    return y;
}

// a / b. x/0 = ±infinity, 0/0 = NaN, infinity/infinity = NaN,
// x/infinity = ±0, NaN in gives NaN.
fn ig_div(a: f32, b: f32) -> f32 {
    let a_bits = bitcast<u32>(a);
    let b_bits = bitcast<u32>(b);
    let sign = (a_bits ^ b_bits) & IG_SIGN;
    let a_abs = a_bits & IG_MAGNITUDE;
    let b_abs = b_bits & IG_MAGNITUDE;
    let numerator = ig_significand(a_bits);
    let denominator = ig_significand(b_bits);
    let r = ig_recip_significand(denominator);
    var q = numerator * r;
    q = q + r * (numerator - denominator * q);
    let quotient = ig_scale(q, ig_exponent(a_bits) - ig_exponent(b_bits));
    var bits = bitcast<u32>(quotient) | sign;
    let a_zero = a_abs == 0u;
    let b_zero = b_abs == 0u;
    let a_infinite = a_abs == IG_INFINITY;
    let b_infinite = b_abs == IG_INFINITY;
    bits = select(bits, sign | IG_INFINITY, a_infinite || b_zero);
    bits = select(bits, sign, a_zero || b_infinite);
    let nan = a_abs > IG_INFINITY || b_abs > IG_INFINITY || (a_zero && b_zero)
        || (a_infinite && b_infinite);
    return bitcast<f32>(select(bits, IG_NAN, nan));
}

// 1 / x, as ig_div(1.0, x).
fn ig_recip(x: f32) -> f32 {
    return ig_div(1.0, x);
}

// sqrt(x). sqrt(±0) = ±0, sqrt(+infinity) = +infinity, negative numbers
// and NaN give NaN.
fn ig_sqrt(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let exponent = ig_exponent(bits);
    let odd = (exponent & 1) != 0;
    let m = ig_significand(bits) * select(1.0, 2.0, odd);
    let half = (exponent - select(0, 1, odd)) >> 1u;
    let y = ig_rsqrt_significand(m);
    var s = m * y;
    s = s + 0.5 * y * (m - s * s);
    var result = bitcast<u32>(s * ig_pow2(half));
    let magnitude = bits & IG_MAGNITUDE;
    result = select(result, bits, magnitude == 0u || bits == IG_INFINITY);
    let nan = magnitude > IG_INFINITY || (bits > IG_SIGN);
    return bitcast<f32>(select(result, IG_NAN, nan));
}

// 1 / sqrt(x). rsqrt(±0) = ±infinity, rsqrt(+infinity) = +0, negative
// numbers and NaN give NaN.
fn ig_rsqrt(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let exponent = ig_exponent(bits);
    let odd = (exponent & 1) != 0;
    let m = ig_significand(bits) * select(1.0, 2.0, odd);
    let half = (exponent - select(0, 1, odd)) >> 1u;
    var y = ig_rsqrt_significand(m);
    y = y + 0.5 * y * (1.0 - m * y * y);
    var result = bitcast<u32>(y * ig_pow2(-half));
    let magnitude = bits & IG_MAGNITUDE;
    result = select(result, (bits & IG_SIGN) | IG_INFINITY, magnitude == 0u);
    result = select(result, 0u, bits == IG_INFINITY);
    let nan = magnitude > IG_INFINITY || (bits > IG_SIGN);
    return bitcast<f32>(select(result, IG_NAN, nan));
}

// e^r for r in [-0.35, 0.35]: Taylor to degree 7.
fn ig_exp_reduced(r: f32) -> f32 {
    var p = 0.0001984126984126984;
    p = p * r + 0.001388888888888889;
    p = p * r + 0.008333333333333333;
    p = p * r + 0.041666666666666664;
    p = p * r + 0.16666666666666666;
    p = p * r + 0.5;
    p = p * r + 1.0;
    return p * r + 1.0;
}

// NaN becomes 0 so that no later conversion to an integer sees it; the
// caller returns NaN for it.
fn ig_finite_or_zero(x: f32) -> f32 {
    return select(x, 0.0, (bitcast<u32>(x) & IG_MAGNITUDE) > IG_INFINITY);
}

fn ig_is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & IG_MAGNITUDE) > IG_INFINITY;
}

// e^x: x = k ln2 + r, ln2 in two parts so k ln2's first part is exact.
// exp(-infinity) = 0, exp(+infinity) = +infinity, overflow gives
// +infinity, results below 2^-126 are 0, NaN gives NaN.
fn ig_exp(x: f32) -> f32 {
    var c = ig_finite_or_zero(x);
    c = select(c, -104.0, c < -104.0);
    c = select(c, 89.0, c > 89.0);
    let k = floor(c * 1.4426950408889634 + 0.5);
    let r = c - k * 0.693145751953125 - k * 1.4286068202862268e-06;
    let result = ig_scale(ig_exp_reduced(r), i32(k));
    return select(result, bitcast<f32>(IG_NAN), ig_is_nan(x));
}

// 2^x: x = k + r exactly, then 2^r by its Taylor series to degree 7.
// Special values as for ig_exp; 2^k for integer k is exact.
fn ig_exp2(x: f32) -> f32 {
    var c = ig_finite_or_zero(x);
    c = select(c, -152.0, c < -152.0);
    c = select(c, 129.0, c > 129.0);
    let k = floor(c + 0.5);
    let r = c - k;
    var p = 1.5252733804059838e-05;
    p = p * r + 0.00015403530393381606;
    p = p * r + 0.0013333558146428441;
    p = p * r + 0.009618129107628477;
    p = p * r + 0.055504108664821576;
    p = p * r + 0.2402265069591007;
    p = p * r + 0.6931471805599453;
    p = p * r + 1.0;
    let result = ig_scale(p, i32(k));
    return select(result, bitcast<f32>(IG_NAN), ig_is_nan(x));
}

// log(x) split as e ln2 + log(1 + f), f in [-0.29, 0.42].
struct IgLogParts {
    exponent: f32,
    // f, and log(1 + f) - f.
    f: f32,
    rest: f32,
}

// log(1 + f) = f - hfsq + s (hfsq + R), s = f / (2 + f), hfsq = f^2 / 2,
// R the atanh series in s^2.
fn ig_log_parts(x: f32) -> IgLogParts {
    let bits = bitcast<u32>(x);
    var exponent = ig_exponent(bits);
    var m = ig_significand(bits);
    let high = m > 1.4142135623730951;
    m = select(m, m * 0.5, high);
    exponent = exponent + select(0, 1, high);
    let f = m - 1.0;
    let s = ig_div(f, 2.0 + f);
    let z = s * s;
    var p = 0.18181818181818182;
    p = p * z + 0.2222222222222222;
    p = p * z + 0.2857142857142857;
    p = p * z + 0.4;
    p = p * z + 0.6666666666666666;
    let big_r = z * p;
    let hfsq = 0.5 * f * f;
    return IgLogParts(f32(exponent), f, s * (hfsq + big_r) - hfsq);
}

// Special values of log and log2: log(±0) = -infinity, log(+infinity) =
// +infinity, negative numbers and NaN give NaN.
fn ig_log_special(x: f32, result: f32) -> f32 {
    let bits = bitcast<u32>(x);
    var out = bitcast<u32>(result);
    out = select(out, IG_SIGN | IG_INFINITY, (bits & IG_MAGNITUDE) == 0u);
    out = select(out, IG_INFINITY, bits == IG_INFINITY);
    let nan = (bits & IG_MAGNITUDE) > IG_INFINITY || bits > IG_SIGN;
    return bitcast<f32>(select(out, IG_NAN, nan));
}

// log(x), natural.
fn ig_log(x: f32) -> f32 {
    let parts = ig_log_parts(x);
    let e = parts.exponent;
    let result = e * 0.693145751953125 + (parts.f + (parts.rest + e * 1.4286068202862268e-06));
    return ig_log_special(x, result);
}

// log2(x); exact for powers of two.
fn ig_log2(x: f32) -> f32 {
    let parts = ig_log_parts(x);
    let result = parts.exponent + (parts.f + parts.rest) * 1.4426950408889634;
    return ig_log_special(x, result);
}

// sin(r) and cos(r) for r in [-pi/4, pi/4]: Taylor to degrees 9 and 10.
fn ig_sin_reduced(r: f32) -> f32 {
    let z = r * r;
    var p = 2.7557319223985893e-06;
    p = p * z - 0.0001984126984126984;
    p = p * z + 0.008333333333333333;
    p = p * z - 0.16666666666666666;
    return r + r * z * p;
}

fn ig_cos_reduced(r: f32) -> f32 {
    let z = r * r;
    var p = -2.755731922398589e-07;
    p = p * z + 2.48015873015873e-05;
    p = p * z - 0.001388888888888889;
    p = p * z + 0.041666666666666664;
    p = p * z - 0.5;
    return p * z + 1.0;
}

// x = k pi/2 + r, |r| <= pi/4, with pi/2 in four parts (the first three of
// 11 bits, so k times them is exact for |k| < 2^13).
struct IgQuadrant {
    r: f32,
    // k mod 4.
    quadrant: u32,
}

fn ig_reduce(x: f32) -> IgQuadrant {
    let k = floor(x * 0.6366197723675814 + 0.5);
    let r = x - k * 1.5703125 - k * 0.0004837512969970703 - k * 7.549533620476723e-08
        - k * 2.5633440682570896e-12;
    // k mod 4, in floats: k may be beyond any integer type.
    let quadrant = k - 4.0 * floor(k * 0.25);
    return IgQuadrant(r, u32(quadrant));
}

// sin(x). Accurate to the bounds in docs/gpu.md for |x| <= 8192; beyond,
// still the same bits everywhere and within [-1, 1], but the reduction
// loses accuracy. sin(±infinity) and NaN give NaN.
fn ig_sin(x: f32) -> f32 {
    let finite = select(x, 0.0, (bitcast<u32>(x) & IG_MAGNITUDE) >= IG_INFINITY);
    let reduced = ig_reduce(finite);
    let s = ig_sin_reduced(reduced.r);
    let c = ig_cos_reduced(reduced.r);
    var result = select(s, c, (reduced.quadrant & 1u) != 0u);
    result = select(result, -result, reduced.quadrant >= 2u);
    // sin(x) rounds to x below 2^-12.
    result = select(result, x, abs(x) < 0.000244140625);
    let nan = (bitcast<u32>(x) & IG_MAGNITUDE) >= IG_INFINITY;
    return select(result, bitcast<f32>(IG_NAN), nan);
}

// cos(x), as ig_sin.
fn ig_cos(x: f32) -> f32 {
    let finite = select(x, 0.0, (bitcast<u32>(x) & IG_MAGNITUDE) >= IG_INFINITY);
    let reduced = ig_reduce(finite);
    let s = ig_sin_reduced(reduced.r);
    let c = ig_cos_reduced(reduced.r);
    var result = select(c, s, (reduced.quadrant & 1u) != 0u);
    let negative = reduced.quadrant == 1u || reduced.quadrant == 2u;
    result = select(result, -result, negative);
    let nan = (bitcast<u32>(x) & IG_MAGNITUDE) >= IG_INFINITY;
    return select(result, bitcast<f32>(IG_NAN), nan);
}

// tanh(x): an odd Taylor series to degree 17 below 0.55, else
// 1 - 2 / (e^2|x| + 1). tanh(±infinity) = ±1, NaN gives NaN.
fn ig_tanh(x: f32) -> f32 {
    let a = abs(x);
    let z = x * x;
    var p = 0.000590027440945586;
    p = p * z - 0.0014558343870513183;
    p = p * z + 0.003592128036572481;
    p = p * z - 0.008863235529902197;
    p = p * z + 0.021869488536155203;
    p = p * z - 0.05396825396825397;
    p = p * z + 0.13333333333333333;
    p = p * z - 0.3333333333333333;
    let small = x + x * z * p;
    let large = 1.0 - ig_div(2.0, ig_exp(a + a) + 1.0);
    let signed = bitcast<f32>(bitcast<u32>(large) | (bitcast<u32>(x) & IG_SIGN));
    var result = select(signed, small, a < 0.55);
    // tanh(x) rounds to x below 2^-12; this also keeps the sign of -0.
    result = select(result, x, a < 0.000244140625);
    return select(result, bitcast<f32>(IG_NAN), ig_is_nan(x));
}

// 1 / (1 + e^-x). sigmoid(+infinity) = 1, sigmoid(-infinity) = 0, NaN
// gives NaN.
fn ig_sigmoid(x: f32) -> f32 {
    return ig_div(1.0, 1.0 + ig_exp(-x));
}
