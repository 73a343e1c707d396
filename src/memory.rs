//! The allocator settings of a worker that runs for months: memory committed on demand.
//!
//! The binary and the benchmarks allocate with mimalloc (measured faster than glibc malloc on
//! the pipeline's many small Arrow buffers, `benches/results/pipeline.md`). With its defaults it
//! keeps freed pages committed for a while and commits whole arenas up front, and the Delta
//! kernel's log reader allocates JSON tape buffers of several MB for every commit it reads (one
//! per commit here; the heap profile of the soak bench under heaptrack peaked at 169 MB, 162 MB
//! of it those buffers). On the soak bench's steady table that made the resident set 0.4 GB
//! after 1,000 commits and ~1 GB later on, while the live heap stayed under 170 MB. Measured side
//! by side at 1,000 soak commits and on the 1M-event pipeline bench (compaction on), options
//! given as `MIMALLOC_*` environment variables (read at process start):
//!
//! | mimalloc options | soak RSS | pipeline events/CPU-s |
//! |---|---|---|
//! | defaults | 330 MiB | 154k |
//! | `arena_eager_commit = 0` | 193 MiB | 156k |
//! | the same and `purge_delay = 100` | 203 MiB | 152k |
//! | the same and `purge_delay = 0` | 153 MiB | 141k |
//!
//! Set from `main` (too late for the arena mimalloc reserves at start-up, which is why
//! `arena_eager_commit` alone changed nothing there: 475 MiB at 1,000 commits, 817 at 5,000),
//! `purge_delay = 0` is what bounds the resident set: 263 MiB at 1,000 commits and a plateau of
//! 430–540 MiB to 20,000 commits, against ~1 GB with the defaults. It costs up to ~9% CPU on
//! the pipeline bench (page faults and madvise calls); a worker that runs for months is worth
//! that. `CORMORANT_MIMALLOC_DEFAULTS=1` keeps mimalloc's defaults.
//!
//! Re-measured 2026-12-07 (`benches/results/stream.md`, `soak.md`): `purge_delay = 100` halves
//! the page faults of the 1M-event upsert stream and gave +4.8% events per CPU-second (four
//! alternated pairs, ahead in all four — close to this machine's noise) for +25% peak RSS there
//! (~500 against ~390 MiB), +150 MiB on the 5M-event run over 1M keys (914 against 762 MiB:
//! the 1 GiB target's margin shrinks from 260 to 110 MiB) and +11–15% on the soak (262 against
//! 236 MiB at 20,000 commits, flat in both). It stays 0; `MIMALLOC_PURGE_DELAY=100` is the
//! operator's trade of memory for CPU.
//!
//! Also measured 2026-12-07 on the same upsert stream, three alternated runs each: purge
//! delays of 10 and 30 ms (mean 194k and 183k events per CPU-second against 192k with 0) and
//! `MIMALLOC_PURGE_DECOMMITS=0` (purged pages left for the kernel to reclaim: 175k against
//! 170k, for 538–593 MiB peak RSS against 378–408) gave nothing outside the noise.
//!
//! Hand-rolled FFI (two declarations) because the `mimalloc` crate does not expose options and its
//! `libmimalloc-sys` names them only under a feature that needs another crate; the option
//! numbers are those of the mimalloc v3 header `libmimalloc-sys` 0.1.49 builds by default.

/// Makes the allocator give freed memory back at once and keeps transparent huge pages off
/// (call first thing in `main`), unless `CORMORANT_MIMALLOC_DEFAULTS=1` asks for mimalloc's
/// defaults (to compare). A `MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT` or
/// `MIMALLOC_ALLOW_THP` in the environment wins over the setting here (mimalloc reads them at
/// start-up; they are how an operator trades memory for CPU without a rebuild).
///
/// Why no huge pages: mimalloc asks the kernel for transparent huge pages on its arenas, and
/// with immediate purging every batch faults its buffers back in as 2 MiB pages the kernel
/// zeroes whole — `clear_page_erms` was the top symbol (11%) of a `perf` profile of the worker
/// at 48 partitions, page faults 22% inclusive. Without them the peak resident set of that
/// run fell ~15% (six runs each, `benches/results/stream.md`).
pub fn tune_allocator() {
    if std::env::var("CORMORANT_MIMALLOC_DEFAULTS").is_ok_and(|v| v == "1") {
        return;
    }
    let unset = |name: &str| std::env::var_os(name).is_none();
    if unset("MIMALLOC_ARENA_EAGER_COMMIT") {
        mi::set(mi::ARENA_EAGER_COMMIT, 0);
    }
    if unset("MIMALLOC_PURGE_DELAY") {
        mi::set(mi::PURGE_DELAY, 0);
    }
    if unset("MIMALLOC_ALLOW_THP") {
        mi::set(mi::ALLOW_THP, 0);
        no_huge_pages();
    }
}

/// Turns transparent huge pages off for this process (what mimalloc does at start-up when
/// `MIMALLOC_ALLOW_THP=0`; its arenas were already advised for them by then).
#[cfg(target_os = "linux")]
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's
    // page-fault policy; failure (an old kernel) leaves the default, which is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}

/// `purge_delay` as mimalloc reports it (`None` under the system allocator).
pub fn purge_delay() -> Option<i64> {
    mi::get(mi::PURGE_DELAY)
}

#[cfg(not(feature = "heap-profile"))]
mod mi {
    // links mimalloc (and its C library, which defines the functions below) into every user
    // of this module, the library's tests included
    extern crate mimalloc as _;

    /// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e`.
    pub(super) const ARENA_EAGER_COMMIT: i32 = 4;
    /// `mi_option_purge_delay` in mimalloc v3's `mi_option_e`.
    pub(super) const PURGE_DELAY: i32 = 15;
    /// `mi_option_allow_thp` in mimalloc v3's `mi_option_e`.
    pub(super) const ALLOW_THP: i32 = 43;

    unsafe extern "C" {
        fn mi_option_set(option: i32, value: std::ffi::c_long);
        fn mi_option_get(option: i32) -> std::ffi::c_long;
    }

    pub(super) fn set(option: i32, value: i64) {
        // SAFETY: mimalloc's option setters are thread-safe and take plain integers; these
        // options may change at any time (they only steer when memory is committed and purged).
        unsafe { mi_option_set(option, value as std::ffi::c_long) }
    }

    pub(super) fn get(option: i32) -> Option<i64> {
        // SAFETY: reading an option is thread-safe.
        Some(unsafe { mi_option_get(option) } as i64)
    }
}

/// The system allocator (`--features heap-profile`): nothing to tune.
#[cfg(feature = "heap-profile")]
mod mi {
    pub(super) const ARENA_EAGER_COMMIT: i32 = 4;
    pub(super) const PURGE_DELAY: i32 = 15;
    pub(super) const ALLOW_THP: i32 = 43;

    pub(super) fn set(_: i32, _: i64) {}

    pub(super) fn get(_: i32) -> Option<i64> {
        None
    }
}

#[cfg(all(test, not(feature = "heap-profile")))]
mod tests {
    #[test]
    fn the_options_are_the_ones_set() {
        super::tune_allocator();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(super::purge_delay(), Some(0));
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            assert_eq!(super::mi::get(super::mi::ALLOW_THP), Some(0));
        }
    }
}
