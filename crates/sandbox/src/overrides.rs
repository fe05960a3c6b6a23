//! WASI functions the sandbox replaces or wraps to keep tasks deterministic
//! and bounded where wasmtime-wasi's own behaviour would not be.
//!
//! - `poll_oneoff` never blocks: every subscription fires at once. Real
//!   sleeping would make run time depend on the host and could hold a worker
//!   thread where the wall-clock backstop cannot reach it.
//! - `fd_write` / `fd_pwrite` to files and `path_open(O_CREAT)` /
//!   `path_create_directory` are charged against the task's output budget
//!   before they reach the disk, so a task cannot fill it.
//! - `path_symlink` and `path_link` are refused: links could point outside
//!   the output directory or alias an input file.
//! - File metadata and directory listings are made the same on every host
//!   (`crate::files`).

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as wasi, WasiSnapshotPreview1};
use wasmtime_wasi::runtime::in_tokio;
use wiggle::GuestMemory;

use crate::host::{TaskState, record};

pub(crate) const WASI: &str = "wasi_snapshot_preview1";
pub(crate) const ERRNO_SUCCESS: i32 = 0;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;
pub(crate) const ERRNO_FAULT: i32 = 21;
/// Most iovecs or subscriptions one call may pass (POSIX `IOV_MAX`).
const VECTOR_ITEMS_MAX: u32 = 1024;
const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;
const OFLAGS_CREAT: i32 = 1;

/// Calls into wasmtime-wasi's own implementation of a function the way its
/// generated linker glue does: with the task's memory and WASI context.
pub(crate) fn call_wasi<R>(
    caller: &mut Caller<'_, TaskState>,
    call: impl FnOnce(&mut WasiP1Ctx, &mut GuestMemory<'_>) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let hostcall_fuel = caller.as_context_mut().hostcall_fuel();
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("the module does not export its memory as `memory`");
    };
    let (bytes, state) = memory.data_and_store_mut(caller);
    state.wasi.set_hostcall_fuel(hostcall_fuel);
    call(&mut state.wasi, &mut GuestMemory::Unshared(bytes))
}

/// Adds the replacements to `linker`, which must already hold wasmtime-wasi.
pub(crate) fn add_to_linker(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);

    linker.func_wrap(WASI, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(
        WASI,
        "path_symlink",
        |_: i32, _: i32, _: i32, _: i32, _: i32| ERRNO_NOTSUP,
    )?;
    linker.func_wrap(
        WASI,
        "path_link",
        |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| ERRNO_NOTSUP,
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, TaskState>, fd: i32, iovs: i32, iovs_len: i32, written: i32| {
            if is_file(fd) {
                let bytes = iovec_bytes(&mut caller, iovs, iovs_len);
                charge_file_bytes(&mut caller, bytes)?;
            }
            call_wasi(&mut caller, |ctx, memory| {
                in_tokio(wasi::fd_write(ctx, memory, fd, iovs, iovs_len, written))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_pwrite",
        |mut caller: Caller<'_, TaskState>,
         fd: i32,
         iovs: i32,
         iovs_len: i32,
         offset: i64,
         written: i32| {
            if is_file(fd) {
                let bytes = iovec_bytes(&mut caller, iovs, iovs_len);
                charge_file_bytes(&mut caller, bytes)?;
            }
            call_wasi(&mut caller, |ctx, memory| {
                in_tokio(wasi::fd_pwrite(
                    ctx, memory, fd, iovs, iovs_len, offset, written,
                ))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_open",
        |mut caller: Caller<'_, TaskState>,
         dir_fd: i32,
         dir_flags: i32,
         path: i32,
         path_len: i32,
         open_flags: i32,
         rights_base: i64,
         rights_inheriting: i64,
         fd_flags: i32,
         opened_fd: i32| {
            if open_flags & OFLAGS_CREAT != 0 {
                charge_file_entry(&mut caller)?;
            }
            call_wasi(&mut caller, |ctx, memory| {
                in_tokio(wasi::path_open(
                    ctx,
                    memory,
                    dir_fd,
                    dir_flags,
                    path,
                    path_len,
                    open_flags,
                    rights_base,
                    rights_inheriting,
                    fd_flags,
                    opened_fd,
                ))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_create_directory",
        |mut caller: Caller<'_, TaskState>, dir_fd: i32, path: i32, path_len: i32| {
            charge_file_entry(&mut caller)?;
            call_wasi(&mut caller, |ctx, memory| {
                in_tokio(wasi::path_create_directory(
                    ctx, memory, dir_fd, path, path_len,
                ))
            })
        },
    )?;

    crate::files::add_to_linker(linker)?;

    linker.allow_shadowing(false);
    Ok(())
}

/// Descriptors 0–2 are stdio; everything above is a preopen or a file.
fn is_file(fd: i32) -> bool {
    fd > 2
}

pub(crate) fn memory(caller: &mut Caller<'_, TaskState>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Bytes a write would move. Malformed vectors count as zero; the original
/// implementation then reports the fault to the task.
fn iovec_bytes(caller: &mut Caller<'_, TaskState>, iovs: i32, iovs_len: i32) -> u64 {
    let Some(memory) = memory(caller) else {
        return 0;
    };
    let data = memory.data(&*caller);
    let count = (iovs_len as u32).min(VECTOR_ITEMS_MAX) as usize;
    let base = iovs as u32 as usize;
    (0..count)
        .filter_map(|index| read_u32(data, base + index * 8 + 4))
        .map(u64::from)
        .sum()
}

fn charge_file_bytes(caller: &mut Caller<'_, TaskState>, bytes: u64) -> wasmtime::Result<()> {
    let budget = &mut caller.data_mut().files;
    match budget.bytes_left.checked_sub(bytes) {
        Some(left) => {
            budget.bytes_left = left;
            Ok(())
        }
        None => {
            let message = "the task wrote more output files than its output limit allows";
            record(&budget.hits, |hits| hits.output = Some(message.to_owned()));
            wasmtime::bail!("{message}")
        }
    }
}

fn charge_file_entry(caller: &mut Caller<'_, TaskState>) -> wasmtime::Result<()> {
    let budget = &mut caller.data_mut().files;
    match budget.entries_left.checked_sub(1) {
        Some(left) => {
            budget.entries_left = left;
            Ok(())
        }
        None => {
            let message = format!(
                "the task created more than {} files and directories",
                crate::limits::OUTPUT_ENTRIES_MAX
            );
            record(&budget.hits, |hits| hits.output = Some(message.clone()));
            wasmtime::bail!("{message}")
        }
    }
}

/// Every subscription fires immediately: clocks as if their time had come,
/// descriptors as ready. Deterministic and never blocking.
fn poll_oneoff(
    mut caller: Caller<'_, TaskState>,
    subscriptions: i32,
    events: i32,
    count: i32,
    events_written: i32,
) -> i32 {
    let count = count as u32;
    if count == 0 || count > VECTOR_ITEMS_MAX {
        return ERRNO_INVAL;
    }
    let Some(memory) = memory(&mut caller) else {
        return ERRNO_FAULT;
    };
    let data = memory.data_mut(&mut caller);
    let (subscriptions, events, events_written) = (
        subscriptions as u32 as usize,
        events as u32 as usize,
        events_written as u32 as usize,
    );
    for index in 0..count as usize {
        let subscription = subscriptions + index * SUBSCRIPTION_BYTES;
        let event = events + index * EVENT_BYTES;
        let Some(source) = data.get(subscription..subscription + 9) else {
            return ERRNO_FAULT;
        };
        let (userdata, tag) = (<[u8; 8]>::try_from(&source[..8]), source[8]);
        let Ok(userdata) = userdata else {
            return ERRNO_FAULT;
        };
        let Some(target) = data.get_mut(event..event + EVENT_BYTES) else {
            return ERRNO_FAULT;
        };
        target.fill(0);
        target[..8].copy_from_slice(&userdata);
        target[10] = tag;
    }
    match data.get_mut(events_written..events_written + 4) {
        Some(target) => {
            target.copy_from_slice(&count.to_le_bytes());
            ERRNO_SUCCESS
        }
        None => ERRNO_FAULT,
    }
}
