//! A job file's `[gpu]` section: a WGSL kernel, its bindings and its
//! dispatches, turned into the [`GpuProgram`] that is the job's module.
//! The program is compiled here once, so a kernel that no provider would
//! run is refused before any escrow is opened.

use std::path::Path;

use idlegrid_types::gpu::{
    GPU_BINDINGS_MAX, GPU_DISPATCHES_MAX, GPU_SOURCE_BYTES_MAX, GpuBinding, GpuClass, GpuDispatch,
    GpuProgram,
};
use idlegrid_types::{Bounded, ExecutionLimits};
use serde::Deserialize;
use toml::Spanned;

use super::{JobFileError, JobFileProblem, MODULE_BYTES_MAX, Reporter, read_bounded};

/// Fuel one invocation may use unless the job file says.
pub const FUEL_PER_INVOCATION_DEFAULT: u64 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGpu {
    kernel: Spanned<String>,
    class: Option<Spanned<String>>,
    fuel_per_invocation: Option<Spanned<u64>>,
    binding: Spanned<Vec<Spanned<RawBinding>>>,
    dispatch: Spanned<Vec<Spanned<RawDispatch>>>,
}

/// One `[[gpu.binding]]`: exactly one of its keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    file: Option<String>,
    stdin: Option<bool>,
    params: Option<bool>,
    output_bytes: Option<u64>,
    scratch_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDispatch {
    entry_point: Option<String>,
    workgroups: Vec<u32>,
}

/// The program `raw` describes, its kernel's path, and its encoding.
pub(super) fn program(
    report: &Reporter<'_>,
    folder: &Path,
    raw: &RawGpu,
    limits: &ExecutionLimits,
) -> Result<(std::path::PathBuf, Vec<u8>), JobFileError> {
    let bad = |span: std::ops::Range<usize>, message: String| {
        report.at(span, JobFileProblem::Gpu(message))
    };
    let kernel_path = folder.join(raw.kernel.get_ref());
    let source = read_bounded(&kernel_path, GPU_SOURCE_BYTES_MAX)
        .map_err(|error| {
            bad(
                raw.kernel.span(),
                format!("failed to read kernel {}: {error}", kernel_path.display()),
            )
        })?
        .ok_or_else(|| {
            bad(
                raw.kernel.span(),
                format!(
                    "kernel {} is above {GPU_SOURCE_BYTES_MAX} bytes",
                    kernel_path.display()
                ),
            )
        })?;
    let source = String::from_utf8(source).map_err(|_| {
        bad(
            raw.kernel.span(),
            format!("kernel {} is not UTF-8 text", kernel_path.display()),
        )
    })?;
    let class = match raw.class.as_ref() {
        None => GpuClass::Exact,
        Some(class) if class.get_ref() == "exact" => GpuClass::Exact,
        Some(class) if class.get_ref() == "class" => GpuClass::Class,
        Some(class) => {
            return Err(bad(
                class.span(),
                format!(
                    "unknown class `{}`: \"exact\" (the same bytes on every GPU) or \
                     \"class\" (the same bytes on the same vendor, device and driver)",
                    class.get_ref()
                ),
            ));
        }
    };
    let fuel_per_invocation = report.optional(
        "fuel_per_invocation",
        raw.fuel_per_invocation.as_ref(),
        FUEL_PER_INVOCATION_DEFAULT,
        1..=u64::from(u32::MAX),
    )?;
    if raw.binding.get_ref().len() > GPU_BINDINGS_MAX {
        return Err(bad(
            raw.binding.span(),
            format!("at most {GPU_BINDINGS_MAX} bindings"),
        ));
    }
    let mut bindings = Vec::new();
    for entry in raw.binding.get_ref() {
        bindings.push(binding(report, folder, entry)?);
    }
    let dispatches = raw.dispatch.get_ref();
    if dispatches.is_empty() || dispatches.len() > GPU_DISPATCHES_MAX {
        return Err(bad(
            raw.dispatch.span(),
            format!("a program runs 1..={GPU_DISPATCHES_MAX} dispatches"),
        ));
    }
    let mut steps = Vec::new();
    for dispatch in dispatches {
        let inner = dispatch.get_ref();
        let workgroups: [u32; 3] = match inner.workgroups.as_slice() {
            [x] => [*x, 1, 1],
            [x, y] => [*x, *y, 1],
            [x, y, z] => [*x, *y, *z],
            _ => {
                return Err(bad(
                    dispatch.span(),
                    "`workgroups` is one to three counts, [x], [x, y] or [x, y, z]".to_owned(),
                ));
            }
        };
        let entry_point = inner
            .entry_point
            .clone()
            .unwrap_or_else(|| "main".to_owned());
        steps.push(GpuDispatch {
            entry_point: Bounded::new(entry_point).map_err(|error| {
                bad(dispatch.span(), format!("the entry point's name: {error}"))
            })?,
            workgroups,
        });
    }
    let program = GpuProgram {
        wgsl: Bounded::new(source).expect("read within the bound"),
        class,
        // In range, so it fits a u32.
        fuel_per_invocation: u32::try_from(fuel_per_invocation).unwrap_or(u32::MAX),
        bindings: Bounded::new(bindings).expect("counted"),
        dispatches: Bounded::new(steps).expect("counted"),
    };
    if program.output_bytes() > limits.output_bytes {
        return Err(bad(
            raw.binding.span(),
            format!(
                "the output buffers add up to {} bytes, above the job's `output_bytes` of {}",
                program.output_bytes(),
                limits.output_bytes
            ),
        ));
    }
    if program.buffer_bytes(0, 0) > limits.memory_bytes {
        return Err(bad(
            raw.binding.span(),
            format!(
                "the buffers add up to {} bytes, above the job's `memory_mib`",
                program.buffer_bytes(0, 0)
            ),
        ));
    }
    let encoded = program.encode();
    if encoded.len() > MODULE_BYTES_MAX {
        return Err(bad(
            raw.binding.span(),
            format!(
                "the program with its shared files is {} bytes, above the module limit of \
                 {MODULE_BYTES_MAX}",
                encoded.len()
            ),
        ));
    }
    // Checked with the compiler the providers use.
    idlegrid_gpu::Program::compile(program)
        .map_err(|error| bad(raw.kernel.span(), error.to_string()))?;
    Ok((kernel_path, encoded))
}

fn binding(
    report: &Reporter<'_>,
    folder: &Path,
    entry: &Spanned<RawBinding>,
) -> Result<GpuBinding, JobFileError> {
    let bad = |message: String| report.at(entry.span(), JobFileProblem::Gpu(message));
    let raw = entry.get_ref();
    let given = [
        raw.file.is_some(),
        raw.stdin.is_some(),
        raw.params.is_some(),
        raw.output_bytes.is_some(),
        raw.scratch_bytes.is_some(),
    ];
    if given.iter().filter(|set| **set).count() != 1 {
        return Err(bad(
            "a binding is exactly one of `file`, `stdin = true`, `params = true`, \
             `output_bytes` or `scratch_bytes`"
                .to_owned(),
        ));
    }
    let bytes_in_range = |bytes: u64| {
        if (1..=idlegrid_gpu::BUFFER_BYTES_MAX).contains(&bytes) {
            Ok(bytes)
        } else {
            Err(bad(format!(
                "a buffer is 1..={} bytes",
                idlegrid_gpu::BUFFER_BYTES_MAX
            )))
        }
    };
    Ok(if let Some(file) = &raw.file {
        let path = folder.join(file);
        let bytes = read_bounded(&path, MODULE_BYTES_MAX)
            .map_err(|error| bad(format!("failed to read {}: {error}", path.display())))?
            .ok_or_else(|| {
                bad(format!(
                    "{} is above the module limit of {MODULE_BYTES_MAX} bytes",
                    path.display()
                ))
            })?;
        GpuBinding::Shared(Bounded::new(bytes).map_err(|error| bad(error.to_string()))?)
    } else if raw.stdin == Some(true) {
        GpuBinding::Stdin
    } else if raw.params == Some(true) {
        GpuBinding::Params
    } else if let Some(bytes) = raw.output_bytes {
        GpuBinding::Output(bytes_in_range(bytes)?)
    } else if let Some(bytes) = raw.scratch_bytes {
        GpuBinding::Scratch(bytes_in_range(bytes)?)
    } else {
        return Err(bad("`stdin` and `params` take only `true`".to_owned()));
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use idlegrid_types::gpu::{GpuBinding, GpuProgram};

    use crate::jobspec::{JobFile, JobFileError};

    const KERNEL: &str = "@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x] = params[0] * id.x;
}
";
    const HEAD: &str =
        "price_per_million_fuel = 10\nbudget = 1000\n[tasks]\nend = 4\nargs = [\"{index}\"]\n";

    fn parse(kernel: &str, gpu: &str) -> Result<JobFile, JobFileError> {
        parse_after(kernel, "", gpu)
    }

    /// Parses `top`, the head and `gpu` with `kernel` as `k.wgsl`.
    fn parse_after(kernel: &str, top: &str, gpu: &str) -> Result<JobFile, JobFileError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.wgsl"), kernel).unwrap();
        let text = format!("{top}{HEAD}{gpu}");
        JobFile::parse(&text, &dir.path().join("job.toml"))
    }

    fn gpu_section(bindings: &str) -> String {
        format!("[gpu]\nkernel = \"k.wgsl\"\n{bindings}[[gpu.dispatch]]\nworkgroups = [1]\n")
    }

    const BINDINGS: &str = "[[gpu.binding]]\nparams = true\n[[gpu.binding]]\noutput_bytes = 256\n";

    #[test]
    fn a_gpu_section_becomes_the_program_every_task_runs() {
        let job = parse(KERNEL, &gpu_section(BINDINGS)).unwrap();
        let program = GpuProgram::decode(&job.module).unwrap().unwrap();
        assert_eq!(
            program.bindings.to_vec(),
            [GpuBinding::Params, GpuBinding::Output(256)]
        );
        assert_eq!(program.dispatches[0].entry_point.as_str(), "main");
        assert_eq!(program.dispatches[0].workgroups, [1, 1, 1]);
        assert_eq!(program.fuel_per_invocation, 1_000_000);
        assert_eq!(job.task_count(), 4);
        assert!(job.module_path.ends_with("k.wgsl"));
    }

    #[test]
    fn a_gpu_job_takes_no_input_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.wgsl"), KERNEL).unwrap();
        let text = format!(
            "price_per_million_fuel = 10\nbudget = 1000\n[files]\n\"k.bin\" = \"k.wgsl\"\n\
             [tasks]\nend = 4\n{}",
            gpu_section(BINDINGS)
        );
        let error = JobFile::parse(&text, &dir.path().join("job.toml")).unwrap_err();
        assert_eq!(error.location(), Some((3, 1)), "{error}");
        assert!(error.to_string().contains("through bindings"), "{error}");
    }

    fn problem(result: Result<JobFile, JobFileError>) -> String {
        let error = result.unwrap_err();
        assert!(error.location().is_some(), "{error}");
        error.to_string()
    }

    #[test]
    fn gpu_mistakes_are_refused_before_any_escrow_with_their_place() {
        let both = parse_after(KERNEL, "module = \"k.wasm\"\n", &gpu_section(BINDINGS));
        assert!(problem(both).contains("give exactly one"));
        let two_keys = "[[gpu.binding]]\nparams = true\noutput_bytes = 4\n[[gpu.binding]]\noutput_bytes = 256\n";
        assert!(problem(parse(KERNEL, &gpu_section(two_keys))).contains("exactly one of"));
        let swapped = "[[gpu.binding]]\noutput_bytes = 4\n[[gpu.binding]]\nparams = true\n";
        assert!(problem(parse(KERNEL, &gpu_section(swapped))).contains("declared read only"));
        let one = "[[gpu.binding]]\nparams = true\n";
        assert!(problem(parse(KERNEL, &gpu_section(one))).contains("2 storage buffers"));
        let sqrt = KERNEL.replace("params[0] * id.x", "u32(sqrt(f32(id.x)))");
        assert!(problem(parse(&sqrt, &gpu_section(BINDINGS))).contains("not exact"));
        // Outside the exact class, the `class` class takes it.
        let same_class = gpu_section(BINDINGS).replace("[gpu]\n", "[gpu]\nclass = \"class\"\n");
        let job = parse(&sqrt, &same_class).unwrap();
        let program = GpuProgram::decode(&job.module).unwrap().unwrap();
        assert_eq!(program.class, idlegrid_types::GpuClass::Class);
        assert!(problem(parse("fn broken(", &gpu_section(BINDINGS))).contains("invalid kernel"));
        let class = gpu_section(BINDINGS).replace("[gpu]\n", "[gpu]\nclass = \"fast\"\n");
        assert!(problem(parse(KERNEL, &class)).contains("unknown class"));
        let huge = "[[gpu.binding]]\nparams = true\n[[gpu.binding]]\noutput_bytes = 2000000\n";
        assert!(
            problem(parse(KERNEL, &gpu_section(huge))).contains("above the job's `output_bytes`")
        );
        let no_dispatch = "[gpu]\nkernel = \"k.wgsl\"\ndispatch = []\n".to_owned() + BINDINGS;
        assert!(problem(parse(KERNEL, &no_dispatch)).contains("dispatches"));
        let missing = gpu_section(BINDINGS).replace("k.wgsl", "nope.wgsl");
        assert!(problem(parse(KERNEL, &missing)).contains("failed to read kernel"));
    }

    #[test]
    fn the_mandelbrot_gpu_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/mandelbrot-gpu/job.toml"
        ));
        let job = JobFile::load(path).unwrap();
        assert_eq!(job.task_count(), 16);
        assert!(GpuProgram::is_program(&job.module));
        // Three replicas of every task at the fuel cap fit the budget.
        let worst_cost = 16 * 3 * job.limits.fuel * job.price_per_million_fuel / 1_000_000;
        assert!(job.budget >= worst_cost, "{} < {worst_cost}", job.budget);
    }
}
