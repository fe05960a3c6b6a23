//! What random modules (wasm-smith) may use: the sandbox's profile. Shared
//! by the differential tests and the fuzz targets.

/// No imports, SIMD without relaxed SIMD, no threads, one 32-bit memory, no
/// reference types (externref needs wasmtime's GC, which is not built in),
/// no exceptions or wide arithmetic, NaNs as they come; with
/// `start_and_tail_calls`, start functions and tail calls too.
pub fn config(start_and_tail_calls: bool) -> wasm_smith::Config {
    wasm_smith::Config {
        max_imports: 0,
        export_everything: true,
        allow_start_export: start_and_tail_calls,
        min_funcs: 1,
        max_memory32_bytes: 1 << 20,
        max_table_elements: 1000,
        simd_enabled: true,
        relaxed_simd_enabled: false,
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        memory64_enabled: false,
        reference_types_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        tail_call_enabled: start_and_tail_calls,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        canonicalize_nans: false,
        ..wasm_smith::Config::default()
    }
}
