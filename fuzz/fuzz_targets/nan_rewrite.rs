//! Generates a random module from the bytes and checks that, rewritten so
//! NaNs are canonical where observed, it behaves the same on this CPU as on
//! one that makes other NaNs (`idlegrid_sandbox::nan::same_on_another_cpu`).
//! `Broken` is a bug: a NaN's bits leaked, or the rewrite broke the module.

#![no_main]

use idlegrid_sandbox::nan::{Verdict, same_on_another_cpu};
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/sandbox/tests/common/smith.rs"]
mod smith;

fuzz_target!(|bytes: &[u8]| {
    let mut unstructured = arbitrary::Unstructured::new(bytes);
    let config = smith::config(false);
    let Ok(module) = wasm_smith::Module::new(config, &mut unstructured) else {
        return;
    };
    if let Verdict::Broken(why) = same_on_another_cpu(&module.to_bytes()) {
        panic!("{why}");
    }
});
