//! The allocator settings of a worker that runs for months: memory committed on demand.
//!
//! The binary and the benchmarks allocate with mimalloc (measured faster than glibc malloc on
//! the pipeline's many small Arrow buffers, `benches/results/pipeline.md`). With its defaults it
//! keeps freed pages committed for a while and commits whole arenas up front, and the Delta
//! kernel's log reader allocates JSON tape buffers of several MB for every commit it reads (one
//! per commit here; the heap profile of the soak bench under heaptrack peaked at 169 MB, 162 MB
//! of it those buffers). On the soak bench's steady table that made the resident set 0.4 GB
//! after 1,000 commits and ~1 GB later on, while the live heap stayed under 170 MB. Measured side
//! by side (`benches/results/soak.md`, `benches/results/pipeline.md`), at 1,000 soak commits
//! and on the 1M-event pipeline bench:
//!
//! | mimalloc options | soak RSS | pipeline events/CPU-s |
//! |---|---|---|
//! | defaults | 330 MiB | 154k |
//! | `arena_eager_commit = 0` | 193 MiB | 156k |
//! | the same and `purge_delay = 100` | 203 MiB | 152k |
//! | the same and `purge_delay = 0` | 153 MiB | 141k |
//!
//! Committing arenas on demand costs nothing and saves ~40%; purging at once saves another
//! 40 MB for 9% more CPU (page faults and madvise calls), so the delay stays at its default.
//!
//! Hand-rolled FFI (two declarations) because the `mimalloc` crate does not expose options and its
//! `libmimalloc-sys` names them only under a feature that needs another crate; the option
//! numbers are those of the mimalloc v3 header `libmimalloc-sys` 0.1.49 builds by default.

/// Makes the allocator commit memory on demand (call first thing in `main`),
/// unless `CORMORANT_MIMALLOC_DEFAULTS=1` asks for mimalloc's defaults (to compare).
pub fn tune_allocator() {
    if std::env::var("CORMORANT_MIMALLOC_DEFAULTS").is_ok_and(|v| v == "1") {
        return;
    }
    mi::set_arena_eager_commit(0);
}

/// `arena_eager_commit` as mimalloc reports it (`None` under the system allocator).
pub fn arena_eager_commit() -> Option<i64> {
    mi::arena_eager_commit()
}

#[cfg(not(feature = "heap-profile"))]
mod mi {
    // links mimalloc (and its C library, which defines the functions below) into every user
    // of this module, the library's tests included
    extern crate mimalloc as _;

    /// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e`.
    const ARENA_EAGER_COMMIT: i32 = 4;

    unsafe extern "C" {
        fn mi_option_set(option: i32, value: std::ffi::c_long);
        fn mi_option_get(option: i32) -> std::ffi::c_long;
    }

    pub(super) fn set_arena_eager_commit(value: i64) {
        // SAFETY: mimalloc's option setters are thread-safe and take plain integers; this
        // option may change at any time (it only steers when arena memory is committed).
        unsafe { mi_option_set(ARENA_EAGER_COMMIT, value as std::ffi::c_long) }
    }

    pub(super) fn arena_eager_commit() -> Option<i64> {
        // SAFETY: reading an option is thread-safe.
        Some(unsafe { mi_option_get(ARENA_EAGER_COMMIT) } as i64)
    }
}

/// The system allocator (`--features heap-profile`): nothing to tune.
#[cfg(feature = "heap-profile")]
mod mi {
    pub(super) fn set_arena_eager_commit(_: i64) {}

    pub(super) fn arena_eager_commit() -> Option<i64> {
        None
    }
}

#[cfg(all(test, not(feature = "heap-profile")))]
mod tests {
    #[test]
    fn the_option_is_the_one_set() {
        super::tune_allocator();
        assert_eq!(super::arena_eager_commit(), Some(0));
    }
}
