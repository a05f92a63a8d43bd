fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    notification_scheduler::cli::main()
}

/// glibc gives a thread that meets contention an arena of its own, and memory
/// freed into one arena is not reused by the others: draining a backlog, the
/// daemon peaked at 30.5-32.3 MiB resident with the default arenas and at
/// 27.6-28.2 MiB with one, at the same rate (docs/BENCHMARKS.md). Its threads
/// (two runtime workers, the timer's short blocking waits) seldom allocate at
/// the same moment. `MALLOC_ARENA_MAX`, when set, is left to glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: sets one allocator parameter, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
