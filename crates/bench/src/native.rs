//! The example kernels compiled natively into this binary (see `build.rs`),
//! called in-process with stdout sent to /dev/null and stdin from a file.

use std::ffi::{CString, c_char, c_int};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

type ExampleMain = unsafe extern "C" fn(c_int, *const *const c_char) -> c_int;

#[expect(
    unsafe_code,
    reason = "declaring the natively compiled example entry points"
)]
unsafe extern "C" {
    fn idlegrid_example_pi_main(argc: c_int, argv: *const *const c_char) -> c_int;
    fn idlegrid_example_mandelbrot_main(argc: c_int, argv: *const *const c_char) -> c_int;
    fn idlegrid_example_hashgrind_main(argc: c_int, argv: *const *const c_char) -> c_int;
    fn idlegrid_example_nbody_main(argc: c_int, argv: *const *const c_char) -> c_int;
    fn idlegrid_example_wordcount_main(argc: c_int, argv: *const *const c_char) -> c_int;
    static mut stdin: *mut libc::FILE;
}

fn entry_point(name: &str) -> Option<ExampleMain> {
    Some(match name {
        "pi" => idlegrid_example_pi_main,
        "mandelbrot" => idlegrid_example_mandelbrot_main,
        "hashgrind" => idlegrid_example_hashgrind_main,
        "nbody" => idlegrid_example_nbody_main,
        "wordcount" => idlegrid_example_wordcount_main,
        _ => return None,
    })
}

/// Runs example `name`'s native `main` once and returns how long it took.
#[expect(
    unsafe_code,
    reason = "calling C and redirecting this process's stdio descriptors around the call"
)]
pub fn run(name: &str, args: &[String], input: &[u8]) -> anyhow::Result<Duration> {
    let main = entry_point(name).with_context(|| format!("no native build of {name}"))?;
    let mut argv_owned = vec![CString::new(name)?];
    for arg in args {
        argv_owned.push(CString::new(arg.as_str())?);
    }
    let mut argv: Vec<*const c_char> = argv_owned.iter().map(|arg| arg.as_ptr()).collect();
    argv.push(std::ptr::null());
    let argc = c_int::try_from(argv_owned.len())?;

    let mut input_file = tempfile::tempfile()?;
    input_file.write_all(input)?;
    let input_path = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&input_file)
    );
    let input_path = CString::new(input_path)?;
    let dev_null = CString::new("/dev/null")?;

    // SAFETY: plain POSIX descriptor juggling on this process's own stdio;
    // the examples are re-entrant C programs that only use stdio and libm,
    // and they are never called from two threads at once.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        let saved_stdout = libc::dup(1);
        let saved_stdin = libc::dup(0);
        let null = libc::open(dev_null.as_ptr(), libc::O_WRONLY);
        let fresh_input = libc::open(input_path.as_ptr(), libc::O_RDONLY);
        if saved_stdout < 0 || saved_stdin < 0 || null < 0 || fresh_input < 0 {
            bail!("failed to redirect stdio for the native run");
        }
        libc::dup2(null, 1);
        libc::dup2(fresh_input, 0);
        libc::clearerr(stdin);

        let started = Instant::now();
        let status = main(argc, argv.as_ptr());
        libc::fflush(std::ptr::null_mut());
        let elapsed = started.elapsed();

        libc::dup2(saved_stdout, 1);
        libc::dup2(saved_stdin, 0);
        libc::clearerr(stdin);
        for fd in [saved_stdout, saved_stdin, null, fresh_input] {
            libc::close(fd);
        }
        if status != 0 {
            bail!("native {name} exited with {status}");
        }
        Ok(elapsed)
    }
}

pub const COMPILER: &str = env!("IDLEGRID_NATIVE_COMPILER");
