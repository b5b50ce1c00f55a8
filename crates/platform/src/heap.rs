//! glibc's malloc, tuned where it matters for memory (BENCHMARKS.md,
//! "Memory, where it is"). Elsewhere (another libc) these do nothing.

/// One glibc malloc arena per core, not glibc's eight per core: each thread
/// that meets contention otherwise gets an arena of its own, and the
/// gateway's idle heap sat in them (17.6 -> 15.5 MB at start-up,
/// BENCHMARKS.md). Called first thing, before any thread exists, so that
/// every thread shares them. glibc reads `MALLOC_ARENA_MAX` and
/// `GLIBC_TUNABLES` from the process environment when the process starts
/// (not from `.env`, which is loaded later); either set there wins.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if !tuned {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
            // SAFETY: mallopt only sets a tunable of the allocator (under
            // its own lock); no thread but this one exists yet.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
    }
}

/// Hands the pages of freed heap memory back to the system. glibc keeps
/// them mapped (only the top of an arena is trimmed on its own), so the
/// temporaries of a start-up stay in the RSS for good: handing them back took
/// the idle gateway from 16.3 to 12.6 MB (its OpenAPI document, its routers).
/// Called once, when a start-up is done; the call walks every arena, so it
/// does not belong on a hot path.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes each arena's lock; it frees nothing in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf only reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages * usize::try_from(page).unwrap()
    }

    #[test]
    fn freed_memory_below_a_live_allocation_goes_back_to_the_system() {
        const MB: usize = 1 << 20;
        // 64 MB in chunks below glibc's mmap threshold, so they sit in an
        // arena, then one live allocation above them: once they are freed,
        // glibc's own trimming (only the top of an arena) cannot reach them.
        // black_box: the optimizer must not drop allocations nobody reads.
        let chunks: Vec<Vec<u8>> = (0..64 * 1024).map(|_| vec![1u8; 1024]).collect();
        let above = std::hint::black_box(vec![1u8; 1024]);
        drop(std::hint::black_box(chunks));
        let freed_but_held = resident_bytes();

        release_freed();

        let after = resident_bytes();
        assert!(
            after + 32 * MB < freed_but_held,
            "resident {} MB before, {} MB after",
            freed_but_held / MB,
            after / MB
        );
        drop(above);
    }
}
