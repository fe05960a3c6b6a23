//! What a task sees of files and directories, made the same on every host.
//!
//! wasmtime-wasi reports what the host's file system says: modification,
//! access and change times, device and inode numbers, link counts, the
//! size of a directory (4,096 on ext4, entries × 20 on tmpfs), and a
//! directory's entries in the order the file system keeps them (hash order
//! on ext4, newest first on tmpfs). Two providers holding the same input
//! files would then give a task different bytes to print. The sandbox
//! wraps the calls that report them:
//!
//! - `fd_filestat_get` and `path_filestat_get`: times read the fixed wall
//!   clock, the device is 0, the link count 1, a directory's size 0, and
//!   the inode is numbered by first sight in this task (below);
//! - `fd_readdir`: `.` and `..` first, then the entries in byte order of
//!   their names, each cookie its position, each inode numbered as above.
//!
//! An inode is numbered 1, 2, 3… in the order the task first sees it (by
//! stat or in a listing): the same program over the same files sees the
//! same numbers, and one file seen twice keeps its number.

use std::collections::HashMap;

use wasmtime::{AsContextMut, Caller, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as wasi, WasiSnapshotPreview1};
use wasmtime_wasi::runtime::in_tokio;
use wiggle::GuestMemory;

use crate::host::{FIXED_WALL_CLOCK_SECS, TaskState};
use crate::overrides::{ERRNO_FAULT, ERRNO_SUCCESS, WASI, call_wasi, memory};

/// WASI's `filestat`: dev, ino, filetype, nlink, size, atim, mtim, ctim.
const FILESTAT_BYTES: usize = 64;
/// WASI's `dirent` header before the name: next cookie, ino, name length,
/// type.
const DIRENT_BYTES: usize = 24;
const FILETYPE_DIRECTORY: u8 = 3;
const ERRNO_NOBUFS: i32 = 42;
/// Entries one directory listing may hold; past it `fd_readdir` fails with
/// `nobufs` (the same on every host holding the same files).
const LISTING_ENTRIES_MAX: usize = 100_000;
/// Inodes numbered in one task; past it more are reported as 0.
const INODES_MAX: usize = 1 << 20;
/// The scratch buffer the host's listing is read through.
const SCRATCH_BYTES: usize = 64 << 10;

/// The task's view: inode numbers given so far and the last listing read.
#[derive(Debug, Default)]
pub(crate) struct FileView {
    inodes: HashMap<u64, u64>,
    listing: Option<Listing>,
}

#[derive(Debug)]
struct Listing {
    fd: i32,
    /// Sorted: `.`, `..`, then by name.
    entries: Vec<Entry>,
}

/// One entry of a directory as the host listed it.
#[derive(Debug)]
struct Entry {
    name: Vec<u8>,
    host_inode: u64,
    kind: u8,
}

impl FileView {
    /// The task's number for a host inode.
    fn inode(&mut self, host: u64) -> u64 {
        let next = self.inodes.len() as u64 + 1;
        if self.inodes.len() >= INODES_MAX && !self.inodes.contains_key(&host) {
            return 0;
        }
        *self.inodes.entry(host).or_insert(next)
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        |mut caller: Caller<'_, TaskState>, fd: i32, stat: i32| {
            let errno = call_wasi(&mut caller, |ctx, memory| {
                in_tokio(wasi::fd_filestat_get(ctx, memory, fd, stat))
            })?;
            Ok(settle_filestat(&mut caller, errno, stat))
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_get",
        |mut caller: Caller<'_, TaskState>,
         fd: i32,
         flags: i32,
         path: i32,
         path_len: i32,
         stat: i32| {
            let errno = call_wasi(&mut caller, |ctx, memory| {
                in_tokio(wasi::path_filestat_get(
                    ctx, memory, fd, flags, path, path_len, stat,
                ))
            })?;
            Ok(settle_filestat(&mut caller, errno, stat))
        },
    )?;
    linker.func_wrap(WASI, "fd_readdir", fd_readdir)?;
    Ok(())
}

/// After a successful stat, rewrites what the host leaked in the
/// `filestat` at `stat`; gives the errno to return.
fn settle_filestat(caller: &mut Caller<'_, TaskState>, errno: i32, stat: i32) -> i32 {
    if errno != ERRNO_SUCCESS {
        return errno;
    }
    let Some(memory) = memory(caller) else {
        return ERRNO_FAULT;
    };
    let at = stat as u32 as usize;
    let (data, state) = memory.data_and_store_mut(caller.as_context_mut());
    let Some(filestat) = data.get_mut(at..at + FILESTAT_BYTES) else {
        return ERRNO_FAULT;
    };
    let host_inode = u64::from_le_bytes(filestat[8..16].try_into().expect("8 bytes"));
    let inode = state.files_seen.inode(host_inode);
    let directory = filestat[16] == FILETYPE_DIRECTORY;
    let time = FIXED_WALL_CLOCK_SECS * 1_000_000_000;
    filestat[0..8].copy_from_slice(&0u64.to_le_bytes());
    filestat[8..16].copy_from_slice(&inode.to_le_bytes());
    filestat[24..32].copy_from_slice(&1u64.to_le_bytes());
    if directory {
        filestat[32..40].copy_from_slice(&0u64.to_le_bytes());
    }
    for field in [40, 48, 56] {
        filestat[field..field + 8].copy_from_slice(&time.to_le_bytes());
    }
    ERRNO_SUCCESS
}

/// Lists the directory `fd` into the guest's `buf` from `cookie` on, in
/// the sorted order, as many entries as fit (the last one cut short when it
/// does not: a full buffer tells the task to call again).
fn fd_readdir(
    mut caller: Caller<'_, TaskState>,
    fd: i32,
    buf: i32,
    buf_len: i32,
    cookie: i64,
    used: i32,
) -> wasmtime::Result<i32> {
    let fresh = cookie == 0
        || caller
            .data()
            .files_seen
            .listing
            .as_ref()
            .is_none_or(|listing| listing.fd != fd);
    if fresh {
        match read_listing(&mut caller, fd)? {
            Ok(entries) => caller.data_mut().files_seen.listing = Some(Listing { fd, entries }),
            Err(errno) => return Ok(errno),
        }
    }
    let Some(memory) = memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    let (data, state) = memory.data_and_store_mut(caller.as_context_mut());
    let view = &mut state.files_seen;
    let Some(listing) = view.listing.take() else {
        return Ok(ERRNO_FAULT);
    };
    let mut bytes = Vec::new();
    let start = usize::try_from(cookie).unwrap_or(usize::MAX);
    let capacity = buf_len as u32 as usize;
    for (index, entry) in listing.entries.iter().enumerate().skip(start) {
        if bytes.len() >= capacity {
            break;
        }
        bytes.extend_from_slice(&(index as u64 + 1).to_le_bytes());
        bytes.extend_from_slice(&view.inode(entry.host_inode).to_le_bytes());
        bytes.extend_from_slice(&(entry.name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&[entry.kind, 0, 0, 0]);
        bytes.extend_from_slice(&entry.name);
    }
    view.listing = Some(listing);
    bytes.truncate(capacity);
    let at = buf as u32 as usize;
    let used_at = used as u32 as usize;
    if data.len() < used_at + 4 {
        return Ok(ERRNO_FAULT);
    }
    let Some(target) = data.get_mut(at..at + bytes.len()) else {
        return Ok(ERRNO_FAULT);
    };
    target.copy_from_slice(&bytes);
    data[used_at..used_at + 4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// The whole of directory `fd`, read through wasmtime-wasi into a scratch
/// buffer on the host, sorted; or the errno the host's listing gave.
fn read_listing(
    caller: &mut Caller<'_, TaskState>,
    fd: i32,
) -> wasmtime::Result<Result<Vec<Entry>, i32>> {
    let mut scratch = vec![0u8; SCRATCH_BYTES + 4];
    let mut entries = Vec::new();
    let mut cookie = 0u64;
    loop {
        let hostcall_fuel = caller.as_context_mut().hostcall_fuel();
        let state = caller.data_mut();
        state.wasi.set_hostcall_fuel(hostcall_fuel);
        let errno = in_tokio(wasi::fd_readdir(
            &mut state.wasi,
            &mut GuestMemory::Unshared(&mut scratch),
            fd,
            0,
            SCRATCH_BYTES as i32,
            cookie as i64,
            SCRATCH_BYTES as i32,
        ))?;
        if errno != ERRNO_SUCCESS {
            return Ok(Err(errno));
        }
        let used = u32::from_le_bytes(
            scratch[SCRATCH_BYTES..]
                .try_into()
                .expect("4 bytes of scratch"),
        ) as usize;
        let mut at = 0;
        let mut progressed = false;
        while at + DIRENT_BYTES <= used {
            let header = &scratch[at..at + DIRENT_BYTES];
            let next = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
            let inode = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let length = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
            let kind = header[20];
            let Some(name) = scratch.get(at + DIRENT_BYTES..at + DIRENT_BYTES + length) else {
                break;
            };
            if at + DIRENT_BYTES + length > used {
                break;
            }
            if entries.len() >= LISTING_ENTRIES_MAX {
                return Ok(Err(ERRNO_NOBUFS));
            }
            entries.push(Entry {
                name: name.to_vec(),
                host_inode: inode,
                kind,
            });
            cookie = next;
            progressed = true;
            at += DIRENT_BYTES + length;
        }
        // A buffer not filled was the end; one that held nothing whole
        // cannot go on.
        if used < SCRATCH_BYTES || !progressed {
            break;
        }
    }
    let rank = |name: &[u8]| match name {
        b"." => 0,
        b".." => 1,
        _ => 2,
    };
    entries.sort_by(|a, b| (rank(&a.name).cmp(&rank(&b.name))).then_with(|| a.name.cmp(&b.name)));
    Ok(Ok(entries))
}
