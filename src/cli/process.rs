//! Process-wide settings of the command line: the allocator and SIGPIPE.
//!
//! A MAP-GA iteration allocates and frees tens of MB of tensor buffers (activations, im2col
//! columns, gradients). glibc's malloc serves every buffer over its mmap threshold (128 KiB,
//! raised dynamically up to 32 MiB) with a fresh `mmap` and returns it to the kernel on free, and
//! trims the heap top above 128 KiB, so each iteration page-faults its working set in again:
//! measured on a batch-16 MNIST MAP-GA run (`bench/tax.mapga`, 30 iterations, one thread),
//! about 85,000 page faults and 0.2-0.4 s of system time, against 29,000 and 0.1 s with the
//! settings below, at the same peak memory (128 MB). mimalloc did as well only with purging
//! turned off, at 38% more peak memory.

/// Keeps large buffers in malloc's heaps for reuse: no `mmap` below 1 GiB, no trimming of the
/// heap top below 1 GiB, 256 MiB of extra room when the heap grows. The resident memory then
/// settles at the run's peak working set instead of following each iteration up and down.
///
/// Only on Linux with glibc, and only when the environment sets none of glibc's own malloc
/// settings (`MALLOC_*_` variables or `GLIBC_TUNABLES`), which then take precedence. Call it
/// once at the start of `main`, before other threads exist.
pub fn tune_allocator() {
    let user_set = std::env::vars_os().any(|(k, _)| {
        let k = k.to_string_lossy();
        k == "GLIBC_TUNABLES" || (k.starts_with("MALLOC_") && k.ends_with('_'))
    });
    if !user_set {
        set_glibc_options();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_glibc_options() {
    const GIB: libc::c_int = 1 << 30;
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called before other
    // threads exist, and a refused setting (return value 0) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, GIB);
        libc::mallopt(libc::M_TRIM_THRESHOLD, GIB);
        libc::mallopt(libc::M_TOP_PAD, GIB / 4);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_glibc_options() {}

/// Restores the default action of SIGPIPE (end the process quietly), as command-line tools
/// do: Rust ignores the signal, so `mapga eval suite.mapga | head` would otherwise panic at the
/// first `println!` after `head` exits. Outputs already written stay (cells, `run.ron`); an
/// evaluation ended this way resumes where it stopped. Call it once at the start of `main`.
pub fn default_sigpipe() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: setting a signal's disposition to its default is async-signal-safe and touches
    // no Rust state; it is done before other threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
