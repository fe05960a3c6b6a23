//! Generates a random module from the bytes and checks that, rewritten so
//! NaNs are canonical where observed, it behaves the same on this CPU as on
//! one that makes other NaNs (`idlegrid_sandbox::nan::same_on_another_cpu`).
//! `Broken` is a bug: a NaN's bits leaked, or the rewrite broke the module.

#![no_main]

use idlegrid_sandbox::nan::{Verdict, same_on_another_cpu};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut unstructured = arbitrary::Unstructured::new(bytes);
    // The sandbox's profile: no imports, SIMD without relaxed SIMD, no
    // threads, 32-bit memory, no reference types (externref needs
    // wasmtime's GC), no exceptions, tail calls or wide arithmetic.
    let config = wasm_smith::Config {
        max_imports: 0,
        export_everything: true,
        allow_start_export: false,
        min_funcs: 1,
        max_memory32_bytes: 1 << 20,
        relaxed_simd_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        reference_types_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        tail_call_enabled: false,
        wide_arithmetic_enabled: false,
        canonicalize_nans: false,
        ..wasm_smith::Config::default()
    };
    let Ok(module) = wasm_smith::Module::new(config, &mut unstructured) else {
        return;
    };
    if let Verdict::Broken(why) = same_on_another_cpu(&module.to_bytes()) {
        panic!("{why}");
    }
});
