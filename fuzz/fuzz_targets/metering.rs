//! Generates a random module from the bytes and checks that, metered in the
//! module (`idlegrid_sandbox::meter`), it uses the fuel wasmtime's metering
//! gives it and runs out of fuel at the same check
//! (`idlegrid_sandbox::meter::metered_like_wasmtime`). `Broken` is a bug.

#![no_main]

use idlegrid_sandbox::meter::metered_like_wasmtime;
use idlegrid_sandbox::nan::Verdict;
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/sandbox/tests/common/smith.rs"]
mod smith;

fuzz_target!(|bytes: &[u8]| {
    let mut unstructured = arbitrary::Unstructured::new(bytes);
    let config = smith::config(true);
    let Ok(module) = wasm_smith::Module::new(config, &mut unstructured) else {
        return;
    };
    if let Verdict::Broken(why) = metered_like_wasmtime(&module.to_bytes()) {
        panic!("{why}");
    }
});
