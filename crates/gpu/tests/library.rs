//! The exact library: every function compiles in the exact class, gives
//! on the device the same bits as the same arithmetic in Rust, and is
//! within its documented error of the true value.

#[expect(dead_code, reason = "these tests use a few of the helpers")]
mod kernels;
#[path = "library/mirror.rs"]
mod mirror;

use std::ops::RangeInclusive;
use std::sync::OnceLock;
use std::time::Duration;

use idlegrid_gpu::canonical::canonical;
use idlegrid_gpu::{Class, Gpu, Kernel, with_library};
use kernels::FUEL;
use mirror::F;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Results per input: the twelve functions, `ig_div` taking the input and
/// its partner.
const FUNCTIONS: usize = 12;
const NAMES: [&str; FUNCTIONS] = [
    "recip", "div", "sqrt", "rsqrt", "exp", "exp2", "log", "log2", "sin", "cos", "tanh", "sigmoid",
];

const KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read> xs: array<f32>;
@group(0) @binding(1) var<storage, read> ys: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&xs)) {
        return;
    }
    let x = xs[i];
    let at = i * 12u;
    out[at] = ig_recip(x);
    out[at + 1u] = ig_div(x, ys[i]);
    out[at + 2u] = ig_sqrt(x);
    out[at + 3u] = ig_rsqrt(x);
    out[at + 4u] = ig_exp(x);
    out[at + 5u] = ig_exp2(x);
    out[at + 6u] = ig_log(x);
    out[at + 7u] = ig_log2(x);
    out[at + 8u] = ig_sin(x);
    out[at + 9u] = ig_cos(x);
    out[at + 10u] = ig_tanh(x);
    out[at + 11u] = ig_sigmoid(x);
}
"#;

/// The twelve results in Rust.
fn mirrored(x: f32, y: f32) -> [f32; FUNCTIONS] {
    // Loaded from a buffer, so made canonical first.
    let (x, y) = (F(canonical(x)), F(canonical(y)));
    [
        mirror::recip(x),
        mirror::div(x, y),
        mirror::sqrt(x),
        mirror::rsqrt(x),
        mirror::exp(x),
        mirror::exp2(x),
        mirror::log(x),
        mirror::log2(x),
        mirror::sin(x),
        mirror::cos(x),
        mirror::tanh(x),
        mirror::sigmoid(x),
    ]
    .map(|value| value.0)
}

/// The true values, in f64, of the inputs as the kernel sees them
/// (denormals are zeros).
fn true_values(x: f32, y: f32) -> [f64; FUNCTIONS] {
    let (x, y) = (f64::from(canonical(x)), f64::from(canonical(y)));
    [
        1.0 / x,
        x / y,
        x.sqrt(),
        1.0 / x.sqrt(),
        x.exp(),
        x.exp2(),
        x.ln(),
        x.log2(),
        x.sin(),
        x.cos(),
        x.tanh(),
        1.0 / (1.0 + (-x).exp()),
    ]
}

struct Case {
    x: f32,
    y: f32,
    device: [f32; FUNCTIONS],
}

/// Special values, then inputs over every exponent and over the ranges
/// the functions are used in; each with a partner for `ig_div`.
fn inputs() -> Vec<(f32, f32)> {
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.0,
        0.5,
        3.0,
        10.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        std::f32::consts::PI,
        std::f32::consts::FRAC_PI_2,
        8192.0,
        1.0e10,
        88.7,
        -87.3,
        -103.0,
        127.5,
        -126.0,
        1.0 + f32::EPSILON,
        1.0 - f32::EPSILON / 2.0,
        0.55,
        -0.55,
        9.0,
        1.0e-30,
    ];
    let mut pairs: Vec<(f32, f32)> = specials
        .iter()
        .flat_map(|x| specials.iter().map(move |y| (*x, *y)))
        .collect();
    let mut state = 0x9e37_79b9u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut unit = move || (next() >> 8) as f32 / (1 << 24) as f32;
    for n in 0..4_000 {
        let x = match n % 5 {
            // Any normal float, either sign.
            0 => {
                let bits = (unit() * 4.0e9) as u32;
                let bits = (bits & 0x807f_ffff) | (((bits >> 23) % 253 + 1) << 23);
                f32::from_bits(bits)
            }
            1 => unit() * 200.0 - 100.0,
            2 => unit() * 20.0 - 10.0,
            3 => unit() * 16384.0 - 8192.0,
            _ => unit() * 4.0,
        };
        let y = unit() * 8.0 - 4.0;
        pairs.push((x, y));
    }
    // Near multiples of pi/2, where sin or cos is near zero and the
    // argument reduction matters most.
    for k in (1..5_215).step_by(7) {
        let x = (f64::from(k) * std::f64::consts::FRAC_PI_2) as f32;
        for neighbour in [x.to_bits() - 1, x.to_bits(), x.to_bits() + 1] {
            pairs.push((f32::from_bits(neighbour), 1.0));
        }
    }
    pairs
}

/// The inputs, run once on the device.
fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let pairs = inputs();
        let xs: Vec<u32> = pairs.iter().map(|(x, _)| x.to_bits()).collect();
        let ys: Vec<u32> = pairs.iter().map(|(_, y)| y.to_bits()).collect();
        let gpu = Gpu::open(None).unwrap_or_else(|error| panic!("{error}"));
        let kernel =
            Kernel::compile(&with_library(KERNEL), "main", Class::Exact, FUEL).expect("exact");
        let count = pairs.len() as u32;
        let run = gpu
            .run(
                &kernel,
                &[&kernels::bytes(&xs), &kernels::bytes(&ys)],
                &[u64::from(count) * 4 * FUNCTIONS as u64],
                [count.div_ceil(64), 1, 1],
                TIMEOUT,
            )
            .expect("runs");
        let out = kernels::words(&run.outputs[0]);
        pairs
            .iter()
            .enumerate()
            .map(|(index, (x, y))| Case {
                x: *x,
                y: *y,
                device: std::array::from_fn(|slot| f32::from_bits(out[index * FUNCTIONS + slot])),
            })
            .collect()
    })
}

#[test]
fn every_library_function_compiles_in_the_exact_class() {
    Kernel::compile(&with_library(KERNEL), "main", Class::Exact, FUEL)
        .unwrap_or_else(|error| panic!("{error}"));
    // Each alone, so none depends on another being called.
    for name in NAMES {
        let call = if name == "div" {
            "ig_div(a, 3.0)".to_owned()
        } else {
            format!("ig_{name}(a)")
        };
        let wgsl = with_library(&format!(
            "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n\
             @compute @workgroup_size(1) fn main() {{ let a = o[0]; o[0] = {call}; }}"
        ));
        Kernel::compile(&wgsl, "main", Class::Exact, FUEL)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
}

#[test]
fn the_device_gives_the_same_bits_as_the_arithmetic_in_rust() {
    let mut differing = Vec::new();
    for case in cases() {
        let want = mirrored(case.x, case.y);
        for slot in 0..FUNCTIONS {
            if case.device[slot].to_bits() != want[slot].to_bits() {
                differing.push((NAMES[slot], case.x, case.y, case.device[slot], want[slot]));
            }
        }
    }
    assert!(
        differing.is_empty(),
        "{} results differ; first (function, x, y, device, rust): {:?}",
        differing.len(),
        &differing[..differing.len().min(10)]
    );
}

/// The device's result of function `name` for `x` (and `y`, for
/// `ig_div`).
fn device(name: &str, x: f32, y: f32) -> f32 {
    let slot = NAMES.iter().position(|n| *n == name).expect("a function");
    let case = cases()
        .iter()
        .find(|case| case.x.to_bits() == x.to_bits() && case.y.to_bits() == y.to_bits())
        .unwrap_or_else(|| panic!("no case for {x}, {y}"));
    case.device[slot]
}

#[test]
fn special_values_follow_the_documented_rules() {
    let (inf, nan, max) = (f32::INFINITY, f32::NAN, f32::MAX);
    let one = 1.0;
    let checks: &[(&str, f32, f32, f32)] = &[
        ("div", 1.0, 0.0, inf),
        ("div", -1.0, 0.0, -inf),
        ("div", 1.0, -0.0, inf),
        ("div", 0.0, 0.0, nan),
        ("div", inf, inf, nan),
        ("div", inf, 2.0, inf),
        ("div", 1.0, inf, 0.0),
        ("div", -1.0, inf, -0.0),
        ("div", -0.0, 3.0, -0.0),
        ("div", nan, 1.0, nan),
        ("div", 3.0, 3.0, 1.0),
        ("div", max, 0.5, inf),
        ("recip", 0.0, one, inf),
        ("recip", -0.0, one, inf),
        ("recip", inf, one, 0.0),
        ("recip", -inf, one, -0.0),
        ("recip", max, one, 0.0),
        ("recip", 2.0, one, 0.5),
        ("sqrt", 0.0, one, 0.0),
        ("sqrt", -0.0, one, -0.0),
        ("sqrt", inf, one, inf),
        ("sqrt", -1.0, one, nan),
        ("sqrt", -inf, one, nan),
        ("sqrt", nan, one, nan),
        ("rsqrt", 0.0, one, inf),
        ("rsqrt", -0.0, one, inf),
        ("rsqrt", inf, one, 0.0),
        ("rsqrt", -1.0, one, nan),
        ("exp", 0.0, one, 1.0),
        ("exp", inf, one, inf),
        ("exp", -inf, one, 0.0),
        ("exp", 1.0e10, one, inf),
        ("exp", -103.0, one, 0.0),
        ("exp", nan, one, nan),
        ("exp2", 0.0, one, 1.0),
        ("exp2", 10.0, one, 1024.0),
        ("exp2", -126.0, one, f32::MIN_POSITIVE),
        ("exp2", inf, one, inf),
        ("exp2", -inf, one, 0.0),
        ("log", 1.0, one, 0.0),
        ("log", 0.0, one, -inf),
        ("log", -0.0, one, -inf),
        ("log", -1.0, one, nan),
        ("log", inf, one, inf),
        ("log", -inf, one, nan),
        ("log", nan, one, nan),
        ("log2", 2.0, one, 1.0),
        ("log2", 0.5, one, -1.0),
        ("log2", f32::MIN_POSITIVE, one, -126.0),
        ("log2", 0.0, one, -inf),
        ("sin", 0.0, one, 0.0),
        ("sin", -0.0, one, -0.0),
        ("sin", inf, one, nan),
        ("sin", nan, one, nan),
        ("cos", 0.0, one, 1.0),
        ("cos", -inf, one, nan),
        ("tanh", 0.0, one, 0.0),
        ("tanh", -0.0, one, -0.0),
        ("tanh", inf, one, 1.0),
        ("tanh", -inf, one, -1.0),
        ("tanh", nan, one, nan),
        ("sigmoid", 0.0, one, 0.5),
        ("sigmoid", inf, one, 1.0),
        ("sigmoid", -inf, one, 0.0),
        ("sigmoid", nan, one, nan),
    ];
    for (name, x, y, want) in checks {
        let got = device(name, *x, *y);
        let want = canonical(*want);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{name}({x}, {y}) = {got}, documented {want}"
        );
    }
}

/// The distance from `got` to `want` in units of the last place of the f32
/// nearest `want`, when `want` is a normal f32.
fn ulps(got: f32, want: f64) -> Option<f64> {
    let normal = (f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX)).contains(&want.abs());
    let nearest = (want as f32).abs();
    let ulp = f64::from(f32::from_bits(nearest.to_bits() + 1) - nearest);
    normal.then(|| (f64::from(got) - want).abs() / ulp)
}

/// A documented bound: function `slot`'s largest error in ULP for inputs
/// `x` in `domain` (and any partner `y`) whose true value is a normal f32.
struct Bound {
    slot: usize,
    domain: RangeInclusive<f32>,
    ulps_max: f64,
}

const ALL: RangeInclusive<f32> = -f32::MAX..=f32::MAX;

fn bounds() -> Vec<Bound> {
    let bound = |slot, domain, ulps_max| Bound {
        slot,
        domain,
        ulps_max,
    };
    vec![
        bound(0, ALL, 1.5),
        bound(1, ALL, 1.5),
        bound(2, ALL, 1.0),
        bound(3, ALL, 1.5),
        bound(4, ALL, 1.5),
        bound(5, ALL, 1.5),
        bound(6, ALL, 1.0),
        bound(7, ALL, 2.0),
        bound(8, -100.0..=100.0, 2.0),
        bound(9, -100.0..=100.0, 2.0),
        bound(8, -8192.0..=8192.0, 2.5),
        bound(9, -8192.0..=8192.0, 2.5),
        bound(10, ALL, 2.0),
        bound(11, ALL, 3.0),
    ]
}

/// Worst error in ULP over `cases` (x, y, result) for `bound`, and where.
fn worst(bound: &Bound, cases: &mut dyn Iterator<Item = (f32, f32, f32)>) -> (f64, f32, f32) {
    let mut worst = (0.0, 0.0, 0.0);
    for (x, y, got) in cases {
        if !bound.domain.contains(&x) || !y.is_finite() {
            continue;
        }
        let want = true_values(x, y)[bound.slot];
        if let Some(error) = ulps(got, want)
            && error > worst.0
        {
            worst = (error, x, y);
        }
    }
    worst
}

/// The worst error over `results` is within `bound`'s ULPs (printed).
fn check_bound(bound: &Bound, results: &mut dyn Iterator<Item = (f32, f32, f32)>) {
    let (error, x, y) = worst(bound, results);
    eprintln!(
        "{}: {error:.3} ULP at x = {x:e}, y = {y:e}",
        NAMES[bound.slot]
    );
    assert!(
        error <= bound.ulps_max,
        "{}: {error} ULP at x = {x:e}, y = {y:e}",
        NAMES[bound.slot]
    );
}

#[test]
fn each_function_is_within_its_documented_error_on_the_device() {
    for bound in bounds() {
        let mut results = cases()
            .iter()
            .map(|case| (case.x, case.y, case.device[bound.slot]));
        check_bound(&bound, &mut results);
    }
    // sin and cos up to |x| = 8192, in absolute error.
    for slot in [8, 9] {
        let error = cases()
            .iter()
            .filter(|case| case.x.abs() <= 8192.0)
            .map(|case| (f64::from(case.device[slot]) - true_values(case.x, case.y)[slot]).abs())
            .fold(0.0, f64::max);
        eprintln!("{}: absolute {error:e} up to 8192", NAMES[slot]);
        assert!(error <= 1.0e-7, "{}: {error}", NAMES[slot]);
    }
}

/// The same bounds over many more inputs, in Rust (the device gives the
/// same bits, as the test above shows).
#[test]
fn the_error_bounds_hold_over_a_wider_sweep() {
    let mut state = 0x2545_f491u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let inputs: Vec<(f32, f32)> = (0..40_000)
        .map(|n| {
            let bits = next();
            let x = match n % 4 {
                0 => f32::from_bits(bits),
                1 => (bits >> 8) as f32 / (1 << 24) as f32 * 200.0 - 100.0,
                2 => (bits >> 8) as f32 / (1 << 24) as f32 * 16384.0 - 8192.0,
                _ => (bits >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0,
            };
            (x, f32::from_bits(next()))
        })
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    for bound in bounds() {
        let mut results = inputs
            .iter()
            .map(|(x, y)| (*x, *y, mirrored(*x, *y)[bound.slot]));
        check_bound(&bound, &mut results);
    }
}
