//! NaNs made canonical where a task can observe them (`idlegrid_sandbox::nan`):
//! every observation point gives the canonical NaN, and random modules
//! behave the same on this CPU as on one that makes other NaNs.

use idlegrid_sandbox::nan::{
    ANOTHER_CPU, F32_CANONICAL_NAN, F64_CANONICAL_NAN, Rewrite, Verdict, rewrite,
    same_on_another_cpu,
};
use wasmtime::{Config, Engine, Instance, Module, Store};

#[path = "common/smith.rs"]
mod smith;

/// The engine a provider runs rewritten modules on (no per-operation
/// canonicalization), or wasmtime's canonicalization after every operation.
fn engine(every_operation: bool) -> Engine {
    let mut config = Config::new();
    config
        .cranelift_nan_canonicalization(every_operation)
        .wasm_relaxed_simd(false)
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .consume_fuel(true);
    Engine::new(&config).expect("an engine")
}

const OBSERVE: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "observe") (param $z f32) (param $zz f64)
    (f32.store (i32.const 0) (f32.div (local.get $z) (local.get $z)))
    (i32.store (i32.const 4) (i32.reinterpret_f32 (f32.div (local.get $z) (local.get $z))))
    (f32.store (i32.const 8) (f32.copysign (f32.const 1) (f32.div (local.get $z) (local.get $z))))
    (f64.store (i32.const 16) (f64.div (local.get $zz) (local.get $zz)))
    (i64.store (i32.const 24) (i64.reinterpret_f64 (f64.sqrt (f64.neg (f64.const 1)))))
    (v128.store (i32.const 32) (f32x4.splat (f32.div (local.get $z) (local.get $z))))
    (v128.store (i32.const 48) (f32x4.div (f32x4.splat (local.get $z)) (f32x4.splat (local.get $z))))
    (v128.store (i32.const 64) (f64x2.sqrt (f64x2.splat (f64.neg (f64.const 1)))))
    (v128.store (i32.const 80) (f64x2.replace_lane 1 (f64x2.splat (f64.const 2)) (f64.div (local.get $zz) (local.get $zz))))
    ;; A NaN that stays a float decides nothing: comparisons and
    ;; saturating conversion see no payload.
    (i32.store (i32.const 96) (f32.ne (f32.div (local.get $z) (local.get $z)) (f32.div (local.get $z) (local.get $z))))
    (i32.store (i32.const 100) (i32.trunc_sat_f32_s (f32.div (local.get $z) (local.get $z))))))
"#;

/// Runs `observe` of `bytes` on `engine` with zero arguments; gives the
/// first `length` bytes of the memory it wrote.
fn observe(engine: &Engine, bytes: &[u8], length: usize) -> Vec<u8> {
    let module = Module::new(engine, bytes).expect("the module compiles");
    let mut store = Store::new(engine, ());
    store.set_fuel(10_000_000).expect("fuel");
    let instance = Instance::new(&mut store, &module, &[]).expect("instantiates");
    let observe = instance
        .get_typed_func::<(f32, f64), ()>(&mut store, "observe")
        .expect("observe");
    observe.call(&mut store, (0.0, 0.0)).expect("runs");
    let memory = instance.get_memory(&mut store, "memory").expect("memory");
    memory.data(&store)[..length].to_vec()
}

#[test]
fn every_observed_nan_is_canonical_on_any_cpu() {
    let original = wat::parse_str(OBSERVE).expect("wat");
    let rewritten = rewrite(&original, Rewrite::Observed).expect("rewrites");
    let elsewhere = rewrite(&original, ANOTHER_CPU).expect("rewrites");
    let here = observe(&engine(false), &rewritten, 104);
    assert_eq!(here, observe(&engine(false), &elsewhere, 104));
    // The same as canonicalizing after every operation.
    assert_eq!(here, observe(&engine(true), &original, 104));

    let word = |at: usize| u32::from_le_bytes(here[at..at + 4].try_into().expect("4 bytes"));
    let double = |at: usize| u64::from_le_bytes(here[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(word(0), F32_CANONICAL_NAN);
    assert_eq!(word(4), F32_CANONICAL_NAN);
    assert_eq!(
        f32::from_bits(word(8)),
        1.0,
        "copysign took a canonical sign"
    );
    assert_eq!(double(16), F64_CANONICAL_NAN);
    assert_eq!(double(24), F64_CANONICAL_NAN);
    for lane in 0..4 {
        assert_eq!(word(32 + 4 * lane), F32_CANONICAL_NAN);
        assert_eq!(word(48 + 4 * lane), F32_CANONICAL_NAN);
    }
    assert_eq!(double(64), F64_CANONICAL_NAN);
    assert_eq!(double(72), F64_CANONICAL_NAN);
    assert_eq!(f64::from_bits(double(80)), 2.0);
    assert_eq!(double(88), F64_CANONICAL_NAN);
    assert_eq!(word(96), 1);
    assert_eq!(word(100), 0);
}

#[test]
fn random_modules_behave_the_same_on_a_cpu_that_makes_other_nans() {
    let mut compared = 0;
    for seed in 0..400u64 {
        let mut bytes = vec![0u8; 4096];
        let mut state = blake3::Hasher::new();
        state.update(&seed.to_le_bytes());
        state.finalize_xof().fill(&mut bytes);
        let mut unstructured = arbitrary::Unstructured::new(&bytes);
        let config = wasm_smith::Config {
            max_instructions: 200,
            ..smith::config(false)
        };
        let Ok(module) = wasm_smith::Module::new(config, &mut unstructured) else {
            continue;
        };
        match same_on_another_cpu(&module.to_bytes()) {
            Verdict::Same => compared += 1,
            Verdict::RanOutOfFuel => {}
            other => panic!("seed {seed}: {other:?}"),
        }
    }
    assert!(compared > 100, "only {compared} modules ran to the end");
}

/// A small deterministic generator for the programs below.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % sides as u64) as usize
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.roll(choices.len())]
    }
}

/// Float leaves that make NaNs likely: zeros, infinities, NaNs with and
/// without payloads or sign, and plain numbers.
const LEAVES: &[&str] = &[
    "0",
    "-0",
    "inf",
    "-inf",
    "nan",
    "-nan",
    "nan:0x200001",
    "-nan:0x1",
    "1",
    "-1.5",
    "0x1p-126",
];

/// A random expression of type `ty` (`f32` or `f64`).
fn expression(dice: &mut Dice, ty: &str, depth: u32) -> String {
    let other = if ty == "f32" { "f64" } else { "f32" };
    let lanes = if ty == "f32" { "f32x4" } else { "f64x2" };
    if depth == 0 || dice.roll(5) == 0 {
        return match dice.roll(4) {
            0 => format!("(local.get ${ty})"),
            _ => format!("({ty}.const {})", dice.pick(LEAVES)),
        };
    }
    let sub = |dice: &mut Dice| expression(dice, ty, depth - 1);
    match dice.roll(7) {
        0 | 1 => {
            let op = dice.pick(&["add", "sub", "mul", "div", "min", "max", "copysign"]);
            format!("({ty}.{op} {} {})", sub(dice), sub(dice))
        }
        2 => {
            let op = dice.pick(&["neg", "abs", "sqrt", "ceil", "floor", "trunc", "nearest"]);
            format!("({ty}.{op} {})", sub(dice))
        }
        3 => {
            let convert = if ty == "f32" {
                "demote_f64"
            } else {
                "promote_f32"
            };
            format!("({ty}.{convert} {})", expression(dice, other, depth - 1))
        }
        4 => format!(
            "(select {} {} ({ty}.lt {} {}))",
            sub(dice),
            sub(dice),
            sub(dice),
            sub(dice)
        ),
        5 => {
            let op = dice.pick(&["add", "sub", "mul", "div", "min", "max", "pmin", "sqrt"]);
            let vector = if op == "sqrt" {
                format!("({lanes}.sqrt ({lanes}.splat {}))", sub(dice))
            } else {
                format!(
                    "({lanes}.{op} ({lanes}.splat {}) ({lanes}.splat {}))",
                    sub(dice),
                    sub(dice)
                )
            };
            format!("({lanes}.extract_lane 1 {vector})")
        }
        // Through an integer and back: the bits as they are.
        _ => {
            let int = integer(ty);
            format!(
                "({ty}.reinterpret_{int} ({int}.reinterpret_{ty} {}))",
                sub(dice)
            )
        }
    }
}

fn integer(ty: &str) -> &'static str {
    if ty == "f32" { "i32" } else { "i64" }
}

/// A statement that shows an expression's value to whoever reads memory
/// at `at`, by one of the ways a value can leave the float domain.
fn observation(dice: &mut Dice, at: usize) -> String {
    let ty = if dice.roll(2) == 0 { "f32" } else { "f64" };
    let lanes = if ty == "f32" { "f32x4" } else { "f64x2" };
    let value = expression(dice, ty, 4);
    let int = integer(ty);
    match dice.roll(7) {
        0 => format!("({ty}.store (i32.const {at}) {value})"),
        1 => format!("({int}.store (i32.const {at}) ({int}.reinterpret_{ty} {value}))"),
        2 => format!("({ty}.store (i32.const {at}) ({ty}.copysign ({ty}.const 1) {value}))"),
        3 => format!("(v128.store (i32.const {at}) ({lanes}.splat {value}))"),
        4 => format!(
            "(v128.store (i32.const {at}) ({lanes}.replace_lane 0 ({lanes}.splat ({ty}.const 2)) {value}))"
        ),
        5 => format!(
            "(v128.store (i32.const {at}) ({lanes}.mul ({lanes}.splat {value}) ({lanes}.splat {})))",
            expression(dice, ty, 2)
        ),
        _ => format!("(i32.store (i32.const {at}) (i32.trunc_sat_{ty}_s {value}))"),
    }
}

#[test]
fn programs_full_of_nans_write_the_same_memory_on_a_cpu_that_makes_other_nans() {
    let engine = engine(false);
    for seed in 1..=150u64 {
        let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let statements: Vec<String> = (0..48)
            .map(|index| observation(&mut dice, index * 16))
            .collect();
        let text = format!(
            "(module (memory (export \"memory\") 1)\n\
             (func (export \"observe\") (param $f32 f32) (param $f64 f64)\n{}))",
            statements.join("\n")
        );
        let original = wat::parse_str(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        let length = statements.len() * 16;
        let here = rewrite(&original, Rewrite::Observed).expect("rewrites");
        let elsewhere = rewrite(&original, ANOTHER_CPU).expect("rewrites");
        let here = observe(&engine, &here, length);
        let elsewhere = observe(&engine, &elsewhere, length);
        if here != elsewhere {
            let first = here
                .iter()
                .zip(&elsewhere)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "seed {seed}: memory differs at byte {first}, statement {}:\n{}",
                first / 16,
                statements[first / 16]
            );
        }
    }
}
