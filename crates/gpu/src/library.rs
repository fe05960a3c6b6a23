//! Exact replacements for float division, square roots and
//! transcendentals, written in WGSL from operations the exact class allows
//! (f32 `+ - *`, comparisons, selects, integer operations and bitcasts), so
//! they give the same bits on every device. See `library.wgsl` for each
//! function's accuracy and special values.

/// The library's WGSL: functions named `ig_*`.
pub const LIBRARY_WGSL: &str = include_str!("library.wgsl");

/// `source` with the library prepended, so a kernel can call `ig_sqrt` and
/// the rest.
pub fn with_library(source: &str) -> String {
    format!("{LIBRARY_WGSL}\n{source}")
}
