//! Generates a random module from the bytes and checks that, metered in the
//! module (`idlegrid_sandbox::meter`), it uses the fuel wasmtime's metering
//! gives it and runs out of fuel at the same check
//! (`idlegrid_sandbox::meter::metered_like_wasmtime`). `Broken` is a bug.

#![no_main]

use idlegrid_sandbox::meter::metered_like_wasmtime;
use idlegrid_sandbox::nan::Verdict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut unstructured = arbitrary::Unstructured::new(bytes);
    // The sandbox's profile, with start functions and tail calls.
    let config = wasm_smith::Config {
        max_imports: 0,
        export_everything: true,
        allow_start_export: true,
        min_funcs: 1,
        max_memory32_bytes: 1 << 20,
        relaxed_simd_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        reference_types_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        tail_call_enabled: true,
        wide_arithmetic_enabled: false,
        canonicalize_nans: false,
        ..wasm_smith::Config::default()
    };
    let Ok(module) = wasm_smith::Module::new(config, &mut unstructured) else {
        return;
    };
    if let Verdict::Broken(why) = metered_like_wasmtime(&module.to_bytes()) {
        panic!("{why}");
    }
});
