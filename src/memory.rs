//! Memory the process gives back: the allocator settings of a worker that runs for months.
//!
//! The binary and the benchmarks allocate with mimalloc (measured faster than glibc malloc on
//! the pipeline's many small Arrow buffers, `benches/results/pipeline.md`). With its defaults it
//! keeps freed pages committed for a while and commits whole arenas up front, and the Delta
//! kernel's log reader allocates JSON tape buffers of several MB for every commit it reads (one
//! per commit here; the heap profile of the soak bench under heaptrack peaked at 169 MB, 162 MB
//! of it those buffers). On the soak bench's steady table that made the resident set 0.4 GB
//! after 1,000 commits and ~1 GB later on, while the live heap stayed under 170 MB. Purging freed
//! pages at once and committing arenas on demand brought it to 158 MB at the same speed
//! (`benches/results/soak.md`).
//!
//! Hand-rolled FFI (two calls) because the `mimalloc` crate does not expose options and its
//! `libmimalloc-sys` names them only under a feature that needs another crate; the option
//! numbers are those of the mimalloc v3 header `libmimalloc-sys` 0.1.49 builds by default.

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e`.
const ARENA_EAGER_COMMIT: i32 = 4;
/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e`.
const PURGE_DELAY: i32 = 15;

// links mimalloc (and its C library, which defines the functions below) into every user of
// this module, the library's tests included
#[cfg(not(feature = "heap-profile"))]
extern crate mimalloc as _;

#[cfg(not(feature = "heap-profile"))]
unsafe extern "C" {
    fn mi_option_set(option: i32, value: std::ffi::c_long);
    fn mi_option_get(option: i32) -> std::ffi::c_long;
}

/// Makes the allocator return freed memory to the OS promptly (call first thing in `main`),
/// unless `CORMORANT_MIMALLOC_DEFAULTS=1` asks for mimalloc's defaults (to compare).
pub fn return_freed_memory_promptly() {
    if std::env::var("CORMORANT_MIMALLOC_DEFAULTS").is_ok_and(|v| v == "1") {
        return;
    }
    #[cfg(not(feature = "heap-profile"))]
    // SAFETY: mimalloc's option setters are thread-safe and take plain integers; these options
    // may change at any time (they only steer when pages are committed and purged).
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

/// The two options as mimalloc reports them (`None` under the system allocator).
pub fn allocator_options() -> Option<(i64, i64)> {
    #[cfg(not(feature = "heap-profile"))]
    // SAFETY: reading an option is thread-safe.
    unsafe {
        return Some((
            mi_option_get(ARENA_EAGER_COMMIT) as i64,
            mi_option_get(PURGE_DELAY) as i64,
        ));
    }
    #[allow(unreachable_code)]
    None
}

#[cfg(all(test, not(feature = "heap-profile")))]
mod tests {
    #[test]
    fn the_options_are_the_ones_set() {
        super::return_freed_memory_promptly();
        assert_eq!(super::allocator_options(), Some((0, 0)));
    }
}
