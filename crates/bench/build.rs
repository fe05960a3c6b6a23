//! Compiles the example workloads natively, with the same compiler as their
//! wasm builds (clang; the system C compiler where clang is missing) at -O2,
//! so the benchmark can call each one's `main` in-process as its baseline.

use std::path::Path;
use std::process::Command;

const EXAMPLES: [&str; 5] = ["pi", "mandelbrot", "hashgrind", "nbody", "wordcount"];

fn main() {
    // Read at run time: `env!` would bake in the path of whichever clone
    // first compiled this script, and a target directory shared between
    // clones would then reuse it.
    let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        panic!("cargo sets CARGO_MANIFEST_DIR for build scripts");
    };
    let examples = Path::new(&manifest_dir).join("../../examples");
    let clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    let compiler = if clang { "clang" } else { "cc" };
    // Each example is its own library so that its `main` gets its own name.
    for name in EXAMPLES {
        let source = examples.join(name).join(format!("{name}.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        cc::Build::new()
            .compiler(compiler)
            .opt_level(2)
            .debug(false)
            .warnings(false)
            .define("main", format!("idlegrid_example_{name}_main").as_str())
            .file(&source)
            .compile(&format!("idlegrid_example_{name}"));
    }
    println!("cargo:rustc-link-lib=m");
    println!("cargo:rustc-env=IDLEGRID_NATIVE_COMPILER={compiler} -O2");
}
