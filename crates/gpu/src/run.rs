//! Running a [`Kernel`] on a GPU through wgpu's Vulkan backend: its strict
//! SPIR-V loaded as is, inputs uploaded, outputs zeroed, one dispatch, the
//! outputs read back, all bounded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use wgpu::util::DeviceExt;

use crate::{GpuError, Kernel};

/// Largest buffer a task may bind, bytes (within the device's own limit).
pub const BUFFER_BYTES_MAX: u64 = 256 << 20;

/// Why a run's invocations stopped early; its outputs are then not the
/// kernel's answer, on any device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// An invocation used more than the kernel's fuel per invocation.
    OutOfFuel,
    /// A loop ran more than [`crate::meter::LOOP_ITERATIONS_MAX`] times
    /// in one go.
    LoopLimit,
    /// The run's fuel went past the budget it was given, and its
    /// invocations stopped early. Only a run whose whole fuel is past the
    /// budget stops so; the fuel read back is then only part of it.
    Budget,
}

/// What a run gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRun {
    /// Each output's bytes, in binding order.
    pub outputs: Vec<Vec<u8>>,
    /// Fuel used: one per invocation plus one per loop iteration, summed
    /// over invocations; the same on every device.
    pub fuel: u64,
    pub stopped: Option<Stopped>,
}

/// One dispatch of a program: `kernel` over a grid of `workgroups`. The
/// dispatches of one program run in order over the same buffers, so every
/// kernel in it binds the same buffers.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub kernel: &'a Kernel,
    pub workgroups: [u32; 3],
}

/// What the meter counted over a program's dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    /// Fuel used by every invocation of every dispatch; the same on every
    /// device.
    pub fuel: u64,
    /// Set when an invocation of any dispatch stopped early.
    pub stopped: Option<Stopped>,
}

/// The adapter a [`Gpu`] runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    pub name: String,
    /// PCI vendor id (0x10de NVIDIA, 0x10005 Mesa's software drivers).
    pub vendor: u32,
    pub device: u32,
    pub driver: String,
    pub driver_info: String,
    /// The adapter's PCI address (`domain:bus:device.function` in hex), as
    /// Vulkan reports it; empty where it does not.
    pub pci_bus_id: String,
}

/// One GPU, opened for running kernels.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    /// Pipelines already built: a provider runs the same program for task
    /// after task, and building one (the driver compiling the SPIR-V)
    /// costs more than a small task's dispatch.
    cache: Mutex<PipelineCache>,
}

/// Most pipelines a [`Gpu`] keeps built; past it, the cache starts over.
pub const PIPELINES_CACHED_MAX: usize = 64;

/// Bind group and pipeline layouts by the bindings they describe, and
/// pipelines by those bindings, entry point and SPIR-V.
#[derive(Default)]
struct PipelineCache {
    layouts: HashMap<Vec<crate::Binding>, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: HashMap<(Vec<crate::Binding>, String, Vec<u32>), wgpu::ComputePipeline>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

impl Gpu {
    /// Opens the first adapter whose name contains `name` (any adapter
    /// when `None`).
    pub fn open(name: Option<&str>) -> Result<Self, GpuError> {
        let adapters =
            futures::executor::block_on(instance().enumerate_adapters(wgpu::Backends::VULKAN));
        let adapter = adapters
            .into_iter()
            .filter(|adapter| {
                adapter
                    .features()
                    .contains(wgpu::Features::PASSTHROUGH_SHADERS)
            })
            .find(|adapter| name.is_none_or(|name| adapter.get_info().name.contains(name)))
            .ok_or_else(|| {
                GpuError::NoAdapter(match name {
                    Some(name) => format!("no Vulkan adapter named like `{name}`"),
                    None => "no Vulkan adapter (on a machine without a GPU, install Mesa's \
                             lavapipe: apt-get install mesa-vulkan-drivers)"
                        .to_owned(),
                })
            })?;
        let info = info(&adapter);
        let (device, queue) =
            futures::executor::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("idlegrid-gpu"),
                required_features: wgpu::Features::PASSTHROUGH_SHADERS,
                required_limits: adapter.limits(),
                ..wgpu::DeviceDescriptor::default()
            }))
            .map_err(|error| GpuError::NoAdapter(format!("{}: {error}", info.name)))?;
        Ok(Self {
            device,
            queue,
            info,
            cache: Mutex::new(PipelineCache::default()),
        })
    }

    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// Runs `kernel` over `workgroups` with `inputs` bound to its input
    /// bindings in order and zeroed outputs of `output_bytes` bound to its
    /// output bindings; gives each output's bytes and the fuel used. A run
    /// that outlasts `timeout` fails with [`GpuError::WallTimeout`].
    pub fn run(
        &self,
        kernel: &Kernel,
        inputs: &[&[u8]],
        output_bytes: &[u64],
        workgroups: [u32; 3],
        timeout: Duration,
    ) -> Result<GpuRun, GpuError> {
        let mut buffers = buffers_for(kernel, inputs, output_bytes)?;
        let metered = self.execute(&[Step { kernel, workgroups }], &mut buffers, timeout)?;
        Ok(GpuRun::from_buffers(kernel, buffers, metered))
    }

    /// Runs a program's dispatches in order over the same buffers:
    /// `buffers[i]` holds the bytes of binding `i` of the kernels (which
    /// must all bind the same buffers); writable ones start with what they
    /// hold and are read back into it. The meter is shared by every step
    /// and every step runs, even after one stopped.
    pub fn execute(
        &self,
        steps: &[Step<'_>],
        buffers: &mut [Vec<u8>],
        timeout: Duration,
    ) -> Result<Metered, GpuError> {
        self.execute_with_budget(steps, buffers, u64::MAX, timeout)
    }

    /// [`Gpu::execute`] that stops, on the device, once the fuel of all
    /// its steps together is past `budget` ([`Stopped::Budget`]); a run
    /// that fits gives what [`Gpu::execute`] gives.
    pub fn execute_with_budget(
        &self,
        steps: &[Step<'_>],
        buffers: &mut [Vec<u8>],
        budget: u64,
        timeout: Duration,
    ) -> Result<Metered, GpuError> {
        let Some(first) = steps.first() else {
            return Err(GpuError::Dispatch("a program needs a dispatch".to_owned()));
        };
        check_steps(steps, buffers)?;
        for step in steps {
            self.check(step.kernel, buffers, step.workgroups)?;
        }
        let device = &self.device;
        // The kernel's buffers and then the meter's.
        let meter = crate::Binding {
            binding: first.kernel.meter_binding,
            writable: true,
        };
        let bindings: Vec<crate::Binding> = first
            .kernel
            .bindings
            .iter()
            .copied()
            .chain([meter])
            .collect();
        let (layout, pipelines) = self.pipelines(steps, &bindings);

        // Buffers in binding order, the meter last; storage sizes are
        // whole words.
        let meter_bytes: Vec<u8> = crate::meter::meter_words(budget)
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect();
        let contents: Vec<&[u8]> = buffers
            .iter()
            .map(Vec::as_slice)
            .chain([meter_bytes.as_slice()])
            .collect();
        let mut device_buffers = Vec::with_capacity(contents.len());
        let mut read_back = Vec::new();
        for (index, (binding, bytes)) in bindings.iter().zip(&contents).enumerate() {
            let mut padded = bytes.to_vec();
            padded.resize(words(bytes.len() as u64) as usize, 0);
            let usage = if binding.writable {
                read_back.push((index, bytes.len()));
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC
            } else {
                wgpu::BufferUsages::STORAGE
            };
            device_buffers.push(
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: &padded,
                    usage,
                }),
            );
        }
        let bind_entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .zip(&device_buffers)
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding: binding.binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &bind_entries,
        });
        let readbacks: Vec<wgpu::Buffer> = read_back
            .iter()
            .map(|(_, bytes)| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: words(*bytes as u64),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();

        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        // A pass per step: each sees everything the one before wrote.
        for (step, pipeline) in steps.iter().zip(&pipelines) {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            let [x, y, z] = step.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
        for ((index, bytes), readback) in read_back.iter().zip(&readbacks) {
            encoder.copy_buffer_to_buffer(
                &device_buffers[*index],
                0,
                readback,
                0,
                words(*bytes as u64),
            );
        }
        let submission = self.queue.submit([encoder.finish()]);
        for readback in &readbacks {
            readback.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        }
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: Some(timeout),
            })
            .map_err(|error| match error {
                wgpu::PollError::Timeout => GpuError::WallTimeout(timeout),
                other => GpuError::Device(other.to_string()),
            })?;
        let mut meter = Vec::new();
        for ((index, bytes), readback) in read_back.iter().zip(&readbacks) {
            let mapped = readback
                .slice(..)
                .get_mapped_range()
                .map_err(|error| GpuError::Device(error.to_string()))?;
            match buffers.get_mut(*index) {
                Some(buffer) => buffer.copy_from_slice(&mapped[..*bytes]),
                None => meter = mapped[..*bytes].to_vec(),
            }
        }
        Ok(Metered::from_words(&meter))
    }

    /// The bind group layout for `bindings` and each step's pipeline, from
    /// the cache or built now.
    fn pipelines(
        &self,
        steps: &[Step<'_>],
        bindings: &[crate::Binding],
    ) -> (wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.pipelines.len() + steps.len() > PIPELINES_CACHED_MAX {
            *cache = PipelineCache::default();
        }
        let (layout, pipeline_layout) = cache
            .layouts
            .entry(bindings.to_vec())
            .or_insert_with(|| self.layouts(bindings))
            .clone();
        let pipelines = steps
            .iter()
            .map(|step| {
                let key = (
                    bindings.to_vec(),
                    step.kernel.entry_point.clone(),
                    step.kernel.spirv.clone(),
                );
                cache
                    .pipelines
                    .entry(key)
                    .or_insert_with(|| self.pipeline(step.kernel, &pipeline_layout))
                    .clone()
            })
            .collect();
        (layout, pipelines)
    }

    /// The bind group layout of `bindings` (storage buffers, in order) and
    /// the pipeline layout holding it.
    fn layouts(
        &self,
        bindings: &[crate::Binding],
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding: binding.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: !binding.writable,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: None,
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        (layout, pipeline_layout)
    }

    /// The compute pipeline of one kernel.
    fn pipeline(&self, kernel: &Kernel, layout: &wgpu::PipelineLayout) -> wgpu::ComputePipeline {
        // The one unsafe call in the project outside dependencies: the
        // SPIR-V goes to the driver unchecked by wgpu. It is naga's own
        // output for a module naga validated, compiled with bounds checks
        // on every access and bounded loops, plus decorations only.
        #[expect(unsafe_code, reason = "loading SPIR-V written and validated by naga")]
        let module = unsafe {
            self.device
                .create_shader_module_passthrough(wgpu::ShaderModuleDescriptorPassthrough {
                    label: Some("kernel"),
                    entry_points: Cow::Owned(vec![wgpu::PassthroughShaderEntryPoint {
                        name: Cow::Borrowed(kernel.entry_point.as_str()),
                        workgroup_size: (
                            kernel.workgroup_size[0],
                            kernel.workgroup_size[1],
                            kernel.workgroup_size[2],
                        ),
                    }]),
                    spirv: Some(Cow::Borrowed(&kernel.spirv)),
                    ..Default::default()
                })
        };
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: Some(layout),
                module: &module,
                entry_point: Some(&kernel.entry_point),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            })
    }

    /// Refuses what does not fit the device before anything is created.
    fn check(
        &self,
        kernel: &Kernel,
        buffers: &[Vec<u8>],
        workgroups: [u32; 3],
    ) -> Result<(), GpuError> {
        let limits = self.device.limits();
        let max = BUFFER_BYTES_MAX
            .min(limits.max_storage_buffer_binding_size)
            .min(limits.max_buffer_size);
        if let Some(size) = buffers
            .iter()
            .map(|buffer| buffer.len() as u64)
            .find(|size| *size > max)
        {
            return Err(GpuError::Bindings(format!(
                "a buffer of {size} bytes, over the limit of {max}"
            )));
        }
        let per_dimension = limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|count| *count > per_dimension) {
            return Err(GpuError::Dispatch(format!(
                "{workgroups:?} workgroups; at most {per_dimension} per dimension"
            )));
        }
        let invocations: u64 = kernel
            .workgroup_size
            .iter()
            .map(|n| u64::from(*n))
            .product();
        if invocations > u64::from(limits.max_compute_invocations_per_workgroup)
            || kernel
                .workgroup_size
                .iter()
                .zip([
                    limits.max_compute_workgroup_size_x,
                    limits.max_compute_workgroup_size_y,
                    limits.max_compute_workgroup_size_z,
                ])
                .any(|(size, max)| *size > max)
        {
            return Err(GpuError::Dispatch(format!(
                "a workgroup of {:?} is larger than the device allows",
                kernel.workgroup_size
            )));
        }
        Ok(())
    }
}

/// The buffers of a single-dispatch run: `inputs` at the input bindings,
/// zeroed `output_bytes` at the output bindings, in binding order.
pub(crate) fn buffers_for(
    kernel: &Kernel,
    inputs: &[&[u8]],
    output_bytes: &[u64],
) -> Result<Vec<Vec<u8>>, GpuError> {
    let (want_inputs, want_outputs) = (kernel.inputs().count(), kernel.outputs().count());
    if inputs.len() != want_inputs || output_bytes.len() != want_outputs {
        return Err(GpuError::Bindings(format!(
            "the kernel binds {want_inputs} inputs and {want_outputs} outputs; \
             {} and {} were given",
            inputs.len(),
            output_bytes.len()
        )));
    }
    // Checked before anything is allocated.
    if let Some(size) = inputs
        .iter()
        .map(|input| input.len() as u64)
        .chain(output_bytes.iter().copied())
        .find(|size| *size > BUFFER_BYTES_MAX)
    {
        return Err(GpuError::Bindings(format!(
            "a buffer of {size} bytes, over the limit of {BUFFER_BYTES_MAX}"
        )));
    }
    let mut inputs = inputs.iter();
    let mut outputs = output_bytes.iter();
    Ok(kernel
        .bindings
        .iter()
        .map(|binding| {
            if binding.writable {
                vec![0; *outputs.next().expect("counted") as usize]
            } else {
                inputs.next().expect("counted").to_vec()
            }
        })
        .collect())
}

/// Refuses steps whose kernels bind different buffers, or buffers that do
/// not match them.
pub(crate) fn check_steps(steps: &[Step<'_>], buffers: &[Vec<u8>]) -> Result<(), GpuError> {
    let Some(first) = steps.first() else {
        return Err(GpuError::Dispatch("a program needs a dispatch".to_owned()));
    };
    if let Some(other) = steps
        .iter()
        .find(|step| step.kernel.bindings != first.kernel.bindings)
    {
        return Err(GpuError::Bindings(format!(
            "entry points `{}` and `{}` bind different buffers",
            first.kernel.entry_point, other.kernel.entry_point
        )));
    }
    if buffers.len() != first.kernel.bindings.len() {
        return Err(GpuError::Bindings(format!(
            "the kernel binds {} buffers; {} were given",
            first.kernel.bindings.len(),
            buffers.len()
        )));
    }
    if let Some(size) = buffers
        .iter()
        .map(|buffer| buffer.len() as u64)
        .find(|size| *size > BUFFER_BYTES_MAX)
    {
        return Err(GpuError::Bindings(format!(
            "a buffer of {size} bytes, over the limit of {BUFFER_BYTES_MAX}"
        )));
    }
    Ok(())
}

impl Metered {
    /// What the meter's bytes say: fuel (low, high) and the stop flags.
    pub(crate) fn from_words(meter: &[u8]) -> Self {
        let words: Vec<u32> = meter
            .chunks_exact(4)
            .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("a word")))
            .collect();
        Self::from_meter(&words)
    }

    /// What the meter's words say. Past the budget, the other flags are
    /// not reported: which invocations stopped first, and so which flags
    /// were raised, can differ between devices.
    pub(crate) fn from_meter(words: &[u32]) -> Self {
        let word = |index: usize| words.get(index).copied().unwrap_or(0);
        let flags = word(2);
        let stopped = if flags & crate::meter::FLAG_BUDGET != 0 {
            Some(Stopped::Budget)
        } else if flags & crate::meter::FLAG_OUT_OF_FUEL != 0 {
            Some(Stopped::OutOfFuel)
        } else if flags & crate::meter::FLAG_LOOP_LIMIT != 0 {
            Some(Stopped::LoopLimit)
        } else {
            None
        };
        Self {
            fuel: u64::from(word(0)) | u64::from(word(1)) << 32,
            stopped,
        }
    }
}

impl GpuRun {
    /// The outputs of a single-dispatch run from its buffers.
    pub(crate) fn from_buffers(kernel: &Kernel, buffers: Vec<Vec<u8>>, metered: Metered) -> Self {
        let outputs = kernel
            .bindings
            .iter()
            .zip(buffers)
            .filter(|(binding, _)| binding.writable)
            .map(|(_, bytes)| bytes)
            .collect();
        Self {
            outputs,
            fuel: metered.fuel,
            stopped: metered.stopped,
        }
    }
}

fn instance() -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
    descriptor.backends = wgpu::Backends::VULKAN;
    wgpu::Instance::new(descriptor)
}

fn info(adapter: &wgpu::Adapter) -> AdapterInfo {
    let info = adapter.get_info();
    AdapterInfo {
        name: info.name,
        vendor: info.vendor,
        device: info.device,
        driver: info.driver,
        driver_info: info.driver_info,
        pci_bus_id: info.device_pci_bus_id,
    }
}

/// `bytes` rounded up to whole 4-byte words, at least one.
fn words(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}
