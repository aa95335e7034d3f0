//! `leafd`: the gateway server. See the crate documentation of `leaf`.

fn main() -> std::process::ExitCode {
    allocator::tune();
    leaf::app::main()
}

/// How leafd keeps glibc's allocator small.
///
/// glibc gives threads that allocate at the same time arenas of their own (up to eight per
/// core) and keeps what is freed in each for reuse by that arena only. In leafd the async
/// workers, the store's blocking readers and its writer all allocate, so a 1M-message uplink
/// replay grew leafd's RSS from 45 to 75 MiB while only 7 MiB of the heap was live
/// (`malloc_trim` gave back the rest). With one arena the same replay grew it by 3.5 MiB at
/// the same speed (BENCHMARKS.md, "Uplink replay"). What a burst leaves free (a backlog
/// filled while the WAN was down, say) is handed back to the kernel every
/// `TRIM_INTERVAL` (30 s).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    use std::time::Duration;

    /// Interval between two hand-backs of free heap memory to the kernel.
    pub const TRIM_INTERVAL: Duration = Duration::from_secs(30);

    /// One arena, and a thread that trims the heap now and then. Called before any other
    /// thread starts; failing costs memory, not correctness.
    pub fn tune() {
        // SAFETY: mallopt takes integer arguments and runs before any other thread exists.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } == 0 {
            eprintln!("leafd: cannot limit glibc's malloc arenas");
        }
        let trimmer = std::thread::Builder::new()
            .name("heap-trim".into())
            .stack_size(64 * 1024)
            .spawn(|| loop {
                std::thread::sleep(TRIM_INTERVAL);
                // SAFETY: malloc_trim only returns free heap pages to the kernel.
                unsafe { libc::malloc_trim(0) };
            });
        if let Err(e) = trimmer {
            eprintln!("leafd: cannot start the heap trimmer: {e}");
        }
    }
}

/// Other C libraries: nothing to tune.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    pub fn tune() {}
}
