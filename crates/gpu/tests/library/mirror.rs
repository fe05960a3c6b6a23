//! The library's functions in Rust, step for step: the same f32
//! operations in the same order, each result made canonical as the exact
//! class makes it on the device. `F` is an f32 whose `+ - *` and negation
//! do that.

use std::f64::consts::{FRAC_2_PI, LN_2, LOG2_E, SQRT_2};
use std::ops::{Add, Mul, Neg, Sub};

use idlegrid_gpu::canonical::canonical;

#[derive(Clone, Copy, Debug)]
pub struct F(pub f32);

/// A WGSL float literal: naga reads it as an f64 and converts it to f32.
fn lit(value: f64) -> F {
    F(value as f32)
}

impl Add for F {
    type Output = F;
    fn add(self, other: F) -> F {
        F(canonical(self.0 + other.0))
    }
}

impl Sub for F {
    type Output = F;
    fn sub(self, other: F) -> F {
        F(canonical(self.0 - other.0))
    }
}

impl Mul for F {
    type Output = F;
    fn mul(self, other: F) -> F {
        F(canonical(self.0 * other.0))
    }
}

impl Neg for F {
    type Output = F;
    fn neg(self) -> F {
        F(canonical(-self.0))
    }
}

impl F {
    fn bits(self) -> u32 {
        self.0.to_bits()
    }

    fn from_bits(bits: u32) -> F {
        F(canonical(f32::from_bits(bits)))
    }

    fn floor(self) -> F {
        F(canonical(self.0.floor()))
    }

    fn abs(self) -> F {
        F(canonical(self.0.abs()))
    }

    fn lt(self, other: F) -> bool {
        self.0 < other.0
    }

    fn gt(self, other: F) -> bool {
        self.0 > other.0
    }
}

const SIGN: u32 = 0x8000_0000;
const MAGNITUDE: u32 = 0x7fff_ffff;
const INFINITY: u32 = 0x7f80_0000;
const NAN: u32 = 0x7fc0_0000;

fn select<T>(reject: T, accept: T, condition: bool) -> T {
    if condition { accept } else { reject }
}

fn pow2(k: i32) -> F {
    F::from_bits(((k + 127) as u32) << 23)
}

fn scale(x: F, k: i32) -> F {
    let clamped = k.clamp(-252, 254);
    let first = clamped >> 1;
    x * pow2(first) * pow2(clamped - first)
}

fn exponent(bits: u32) -> i32 {
    ((bits >> 23) & 0xff) as i32 - 127
}

fn significand(bits: u32) -> F {
    F::from_bits((bits & 0x007f_ffff) | 0x3f80_0000)
}

fn recip_significand(m: F) -> F {
    let one = lit(1.0);
    let mut r = F::from_bits(0x7ef3_11c3u32.wrapping_sub(m.bits()));
    for _ in 0..3 {
        r = r + r * (one - m * r);
    }
    r
}

fn rsqrt_significand(m: F) -> F {
    let mut y = F::from_bits(0x5f37_59dfu32.wrapping_sub(m.bits() >> 1));
    for _ in 0..2 {
        y = y * (lit(1.5) - lit(0.5) * m * y * y);
    }
    y
}

pub fn div(a: F, b: F) -> F {
    let (a_bits, b_bits) = (a.bits(), b.bits());
    let sign = (a_bits ^ b_bits) & SIGN;
    let (a_abs, b_abs) = (a_bits & MAGNITUDE, b_bits & MAGNITUDE);
    let numerator = significand(a_bits);
    let denominator = significand(b_bits);
    let r = recip_significand(denominator);
    let mut q = numerator * r;
    q = q + r * (numerator - denominator * q);
    let quotient = scale(q, exponent(a_bits) - exponent(b_bits));
    let mut bits = quotient.bits() | sign;
    let (a_zero, b_zero) = (a_abs == 0, b_abs == 0);
    let (a_infinite, b_infinite) = (a_abs == INFINITY, b_abs == INFINITY);
    bits = select(bits, sign | INFINITY, a_infinite || b_zero);
    bits = select(bits, sign, a_zero || b_infinite);
    let nan =
        a_abs > INFINITY || b_abs > INFINITY || (a_zero && b_zero) || (a_infinite && b_infinite);
    F::from_bits(select(bits, NAN, nan))
}

pub fn recip(x: F) -> F {
    div(lit(1.0), x)
}

/// The significand in [1, 4) and half the exponent, for square roots.
fn sqrt_parts(bits: u32) -> (F, i32) {
    let exponent = exponent(bits);
    let odd = exponent & 1 != 0;
    let m = significand(bits) * select(lit(1.0), lit(2.0), odd);
    (m, (exponent - select(0, 1, odd)) >> 1)
}

pub fn sqrt(x: F) -> F {
    let bits = x.bits();
    let (m, half) = sqrt_parts(bits);
    let y = rsqrt_significand(m);
    let mut s = m * y;
    s = s + lit(0.5) * y * (m - s * s);
    let mut result = (s * pow2(half)).bits();
    let magnitude = bits & MAGNITUDE;
    result = select(result, bits, magnitude == 0 || bits == INFINITY);
    let nan = magnitude > INFINITY || bits > SIGN;
    F::from_bits(select(result, NAN, nan))
}

pub fn rsqrt(x: F) -> F {
    let bits = x.bits();
    let (m, half) = sqrt_parts(bits);
    let mut y = rsqrt_significand(m);
    y = y + lit(0.5) * y * (lit(1.0) - m * y * y);
    let mut result = (y * pow2(-half)).bits();
    let magnitude = bits & MAGNITUDE;
    result = select(result, (bits & SIGN) | INFINITY, magnitude == 0);
    result = select(result, 0, bits == INFINITY);
    let nan = magnitude > INFINITY || bits > SIGN;
    F::from_bits(select(result, NAN, nan))
}

/// `p = p * r + c` over `coefficients`, starting from the first.
fn horner(r: F, coefficients: &[f64]) -> F {
    let mut p = lit(coefficients[0]);
    for c in &coefficients[1..] {
        p = p * r + lit(*c);
    }
    p
}

fn is_nan(x: F) -> bool {
    x.bits() & MAGNITUDE > INFINITY
}

fn finite_or_zero(x: F) -> F {
    select(x, lit(0.0), is_nan(x))
}

const EXP: [f64; 7] = [
    0.0001984126984126984,
    0.001388888888888889,
    0.008333333333333333,
    0.041666666666666664,
    0.16666666666666666,
    0.5,
    1.0,
];

pub fn exp(x: F) -> F {
    let mut c = finite_or_zero(x);
    c = select(c, lit(-104.0), c.lt(lit(-104.0)));
    c = select(c, lit(89.0), c.gt(lit(89.0)));
    let k = (c * lit(LOG2_E) + lit(0.5)).floor();
    let r = c - k * lit(0.693145751953125) - k * lit(1.4286068202862268e-06);
    let p = horner(r, &EXP) * r + lit(1.0);
    let result = scale(p, k.0 as i32);
    select(result, F::from_bits(NAN), is_nan(x))
}

pub fn exp2(x: F) -> F {
    let mut c = finite_or_zero(x);
    c = select(c, lit(-152.0), c.lt(lit(-152.0)));
    c = select(c, lit(129.0), c.gt(lit(129.0)));
    let k = (c + lit(0.5)).floor();
    let r = c - k;
    let p = horner(
        r,
        &[
            1.5252733804059838e-05,
            0.00015403530393381606,
            0.0013333558146428441,
            0.009618129107628477,
            0.055504108664821576,
            0.2402265069591007,
            LN_2,
            1.0,
        ],
    );
    let result = scale(p, k.0 as i32);
    select(result, F::from_bits(NAN), is_nan(x))
}

/// The exponent, f, and log(1 + f) - f.
fn log_parts(x: F) -> (F, F, F) {
    let bits = x.bits();
    let mut exponent = exponent(bits);
    let mut m = significand(bits);
    let high = m.gt(lit(SQRT_2));
    m = select(m, m * lit(0.5), high);
    exponent += select(0, 1, high);
    let f = m - lit(1.0);
    let s = div(f, lit(2.0) + f);
    let z = s * s;
    let p = horner(
        z,
        &[
            0.18181818181818182,
            0.2222222222222222,
            0.2857142857142857,
            0.4,
            0.6666666666666666,
        ],
    );
    let big_r = z * p;
    let hfsq = lit(0.5) * f * f;
    (F(exponent as f32), f, s * (hfsq + big_r) - hfsq)
}

fn log_special(x: F, result: F) -> F {
    let bits = x.bits();
    let mut out = result.bits();
    out = select(out, SIGN | INFINITY, bits & MAGNITUDE == 0);
    out = select(out, INFINITY, bits == INFINITY);
    let nan = bits & MAGNITUDE > INFINITY || bits > SIGN;
    F::from_bits(select(out, NAN, nan))
}

pub fn log(x: F) -> F {
    let (e, f, rest) = log_parts(x);
    let result = e * lit(0.693145751953125) + (f + (rest + e * lit(1.4286068202862268e-06)));
    log_special(x, result)
}

pub fn log2(x: F) -> F {
    let (e, f, rest) = log_parts(x);
    let result = e + (f + rest) * lit(LOG2_E);
    log_special(x, result)
}

fn sin_reduced(r: F) -> F {
    let z = r * r;
    let mut p = lit(2.7557319223985893e-06);
    p = p * z - lit(0.0001984126984126984);
    p = p * z + lit(0.008333333333333333);
    p = p * z - lit(0.16666666666666666);
    r + r * z * p
}

fn cos_reduced(r: F) -> F {
    let z = r * r;
    let mut p = lit(-2.755731922398589e-07);
    p = p * z + lit(2.48015873015873e-05);
    p = p * z - lit(0.001388888888888889);
    p = p * z + lit(0.041666666666666664);
    p = p * z - lit(0.5);
    p * z + lit(1.0)
}

fn reduce(x: F) -> (F, u32) {
    let k = (x * lit(FRAC_2_PI) + lit(0.5)).floor();
    let r = x
        - k * lit(1.5703125)
        - k * lit(0.0004837512969970703)
        - k * lit(7.549533620476723e-08)
        - k * lit(2.5633440682570896e-12);
    let quadrant = k - lit(4.0) * (k * lit(0.25)).floor();
    (r, quadrant.0 as u32)
}

fn not_finite(x: F) -> bool {
    x.bits() & MAGNITUDE >= INFINITY
}

pub fn sin(x: F) -> F {
    let (r, quadrant) = reduce(select(x, lit(0.0), not_finite(x)));
    let (s, c) = (sin_reduced(r), cos_reduced(r));
    let mut result = select(s, c, quadrant & 1 != 0);
    result = select(result, -result, quadrant >= 2);
    result = select(result, x, x.abs().lt(lit(0.000244140625)));
    select(result, F::from_bits(NAN), not_finite(x))
}

pub fn cos(x: F) -> F {
    let (r, quadrant) = reduce(select(x, lit(0.0), not_finite(x)));
    let (s, c) = (sin_reduced(r), cos_reduced(r));
    let mut result = select(c, s, quadrant & 1 != 0);
    result = select(result, -result, quadrant == 1 || quadrant == 2);
    select(result, F::from_bits(NAN), not_finite(x))
}

pub fn tanh(x: F) -> F {
    let a = x.abs();
    let z = x * x;
    let mut p = lit(0.000590027440945586);
    p = p * z - lit(0.0014558343870513183);
    p = p * z + lit(0.003592128036572481);
    p = p * z - lit(0.008863235529902197);
    p = p * z + lit(0.021869488536155203);
    p = p * z - lit(0.05396825396825397);
    p = p * z + lit(0.13333333333333333);
    p = p * z - lit(0.3333333333333333);
    let small = x + x * z * p;
    let large = lit(1.0) - div(lit(2.0), exp(a + a) + lit(1.0));
    let signed = F::from_bits(large.bits() | (x.bits() & SIGN));
    let mut result = select(signed, small, a.lt(lit(0.55)));
    result = select(result, x, a.lt(lit(0.000244140625)));
    select(result, F::from_bits(NAN), is_nan(x))
}

pub fn sigmoid(x: F) -> F {
    div(lit(1.0), lit(1.0) + exp(-x))
}
