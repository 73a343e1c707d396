//! Keeping a long-running table's log bounded: a checkpoint every `delta.checkpointInterval`
//! commits and the removal of log files older than `delta.logRetentionDuration`.
//!
//! Every commit Cormorant makes (ingest, dead letters, compaction, schema changes) goes through
//! [`crate::commit::commit_at`] — directly from the writer, or by [`crate::commit::try_commit`]
//! — and is followed by [`after_commit`]. The writer of version `v` with `v % interval == 0`
//! writes the checkpoint of `v` (the Spark convention), so with several workers exactly one of
//! them does it. delta-rs's own post-commit hook never runs (its commit builder is not used): it
//! lists the whole `_delta_log` after EVERY commit when `delta.enableExpiredLogCleanup` is on
//! (the default), which grows with the table's age, and a checkpoint failure there surfaces as a
//! failed commit although the commit landed.
//!
//! The checkpoint is written on a task beside the commit path ([`after_commit`]); a process
//! that exits calls [`settle`] first so a due checkpoint is not lost with it.
//!
//! Invariants: a failed checkpoint or clean-up never fails the commit that triggered it (the
//! next interval tries again, readers replay a few more JSON files meanwhile); log files are
//! removed only below a checkpoint and only when older than the retention
//! ([`deltalake::checkpoints::cleanup_expired_logs_for`] keeps every version inside it).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::checkpoints::cleanup_expired_logs_for;
use deltalake::logstore::LogStoreRef;
use deltalake::table::config::TablePropertiesExt as _;

/// The log-keeping table properties Cormorant sets on the tables it writes (unset: Delta's
/// defaults — a checkpoint every 100 commits, 30 days of log, 7 days of tombstones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPolicy {
    /// `delta.checkpointInterval`
    pub checkpoint_interval: Option<u64>,
    /// `delta.logRetentionDuration`: how far back time travel reaches through the log.
    pub log_retention: Option<Duration>,
    /// `delta.deletedFileRetentionDuration`: how long checkpoints keep tombstones, the
    /// longest retention vacuum accepts.
    pub deleted_file_retention: Option<Duration>,
}

impl LogPolicy {
    /// The table properties this policy sets, as Delta spells them.
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(n) = self.checkpoint_interval {
            out.push(("delta.checkpointInterval".to_string(), n.max(1).to_string()));
        }
        if let Some(d) = self.log_retention {
            out.push(("delta.logRetentionDuration".to_string(), interval(d)));
        }
        if let Some(d) = self.deleted_file_retention {
            out.push(("delta.deletedFileRetentionDuration".to_string(), interval(d)));
        }
        out
    }
}

/// A duration as a Delta interval property ("interval 30 days"), in the largest exact unit.
pub fn interval(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        0 => (0, "seconds"),
        _ if s.is_multiple_of(86_400) => (s / 86_400, "days"),
        _ if s.is_multiple_of(3_600) => (s / 3_600, "hours"),
        _ if s.is_multiple_of(60) => (s / 60, "minutes"),
        _ => (s, "seconds"),
    };
    format!("interval {n} {unit}")
}

/// What maintenance did to one table, as seen by this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The newest checkpoint this process wrote.
    pub last_checkpoint: Option<u64>,
    pub checkpoints_written: u64,
    pub checkpoint_failures: u64,
    /// Expired log files (commits and old checkpoints) removed.
    pub log_files_removed: u64,
    /// Files and bytes deleted by vacuum.
    pub vacuumed_files: u64,
    pub vacuumed_bytes: u64,
}

/// Per table root URL. A process-wide map because commits reach [`after_commit`] from several
/// owners of a `DeltaTable` (writers, compaction, schema evolution) that share no handle; the
/// metrics endpoint reads it by table.
static STATS: LazyLock<Mutex<HashMap<String, Stats>>> = LazyLock::new(Default::default);

/// This process's maintenance figures for the table at `root` (its URL).
pub fn stats(root: &str) -> Stats {
    STATS
        .lock()
        .map(|m| m.get(root.trim_end_matches('/')).cloned().unwrap_or_default())
        .unwrap_or_default()
}

pub(crate) fn record(table: &DeltaTable, f: impl FnOnce(&mut Stats)) {
    record_at(root_of(table), f)
}

fn record_at(root: String, f: impl FnOnce(&mut Stats)) {
    if let Ok(mut m) = STATS.lock() {
        f(m.entry(root).or_default());
    }
}

/// What a table's `_delta_log` holds: the reach of time travel and the size of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogExtent {
    /// Commit files and checkpoint parts in `_delta_log`.
    pub log_files: usize,
    /// The oldest commit file left (older ones expired).
    pub oldest_commit: Option<u64>,
    /// The oldest version a reader can load: version 0 while the whole log is there, else the
    /// oldest checkpoint from which every later commit file is still present.
    pub oldest_readable: Option<u64>,
    pub last_checkpoint: Option<u64>,
}

/// Lists `_delta_log` once (bounded by the log retention) and works out its [`LogExtent`].
pub async fn log_extent(table: &DeltaTable) -> crate::Result<LogExtent> {
    use futures::TryStreamExt;
    let store = table.log_store().object_store(None);
    let prefix = object_store::path::Path::from("_delta_log");
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    let (mut commits, mut checkpoints) = (Vec::new(), Vec::new());
    for m in &metas {
        let Some(name) = m.location.filename() else { continue };
        let Some(version) = name.split('.').next().and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        if name.ends_with(".json") {
            commits.push(version);
        } else if name.contains(".checkpoint") {
            checkpoints.push(version);
        }
    }
    Ok(extent(commits, checkpoints))
}

fn extent(mut commits: Vec<u64>, mut checkpoints: Vec<u64>) -> LogExtent {
    commits.sort_unstable();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let log_files = commits.len() + checkpoints.len();
    let oldest_commit = commits.first().copied();
    // the commit files present from the newest gap on
    let contiguous_from = commits
        .windows(2)
        .rev()
        .find(|w| w[1] != w[0] + 1)
        .map_or(oldest_commit, |w| Some(w[1]));
    let oldest_readable = match contiguous_from {
        Some(0) => Some(0),
        Some(from) => checkpoints.iter().copied().find(|c| *c + 1 >= from),
        None => checkpoints.last().copied(),
    };
    LogExtent {
        log_files,
        oldest_commit,
        oldest_readable,
        last_checkpoint: checkpoints.last().copied(),
    }
}

/// Whether version `v` is one to checkpoint.
pub fn checkpoint_due(version: u64, interval: u64) -> bool {
    version > 0 && version.is_multiple_of(interval.max(1))
}

/// Per table root: whether a checkpoint task runs (`busy`, changed only under the lock, so a
/// due version is either queued for the running task or starts a new one — never lost between
/// the two), its handle, and the newest due version that arrived meanwhile. It holds the log
/// store, not the table: a queued `DeltaTable` would pin a whole snapshot (every live file's
/// `add`) for as long as the checkpoint before it takes.
#[derive(Default)]
struct Slot {
    busy: bool,
    handle: Option<tokio::task::JoinHandle<()>>,
    next: Option<(LogStoreRef, Retention, u64)>,
}

/// The retentions a checkpoint task needs, read from the snapshot that came due.
#[derive(Clone, Copy)]
struct Retention {
    log: Duration,
}

static CHECKPOINTS: LazyLock<Mutex<HashMap<String, Slot>>> = LazyLock::new(Default::default);

fn root_of(table: &DeltaTable) -> String {
    root_of_store(&table.log_store())
}

fn root_of_store(store: &LogStoreRef) -> String {
    store.root_url().to_string().trim_end_matches('/').to_string()
}

/// Runs after `table` committed `version` (its state is that version): when a checkpoint is
/// due, it is written — with the removal of expired log files after it — on a task of its own,
/// so the commit path never waits for it (a checkpoint of a table with thousands of files takes
/// a second or more). One task per table at a time; a checkpoint that comes due while one runs
/// is written right after it (only the newest one if several came due). Problems are logged,
/// never returned.
pub async fn after_commit(table: &DeltaTable, version: u64) {
    let Ok(snapshot) = table.snapshot() else { return };
    if !checkpoint_due(version, snapshot.table_config().checkpoint_interval().get()) {
        return;
    }
    let retention = Retention {
        log: snapshot.table_config().log_retention_duration(),
    };
    start(table.log_store(), retention, version);
}

/// Starts the checkpoint task of a table, or queues `version` for the one running.
fn start(store: LogStoreRef, retention: Retention, version: u64) {
    let root = root_of_store(&store);
    let Ok(mut slots) = CHECKPOINTS.lock() else { return };
    let slot = slots.entry(root.clone()).or_default();
    if slot.busy {
        tracing::debug!(version, root, "checkpoint due while another is written: queued");
        slot.next = Some((store, retention, version));
        return;
    }
    tracing::debug!(version, root, "checkpoint due");
    slot.busy = true;
    // dropped when the task ends, also when it panics or is cancelled before it ever ran
    let idle = Idle(root.clone());
    slot.handle = Some(tokio::spawn(async move {
        let _idle = idle;
        let mut due = (store, retention, version);
        loop {
            checkpoint(&due.0, due.1, due.2).await;
            let next = CHECKPOINTS
                .lock()
                .ok()
                .and_then(|mut m| m.get_mut(&root).and_then(|s| s.next.take()));
            match next {
                Some(n) => due = n,
                None => break, // `_idle` marks the slot idle under the same check below
            }
        }
    }));
}

/// Marks a table's checkpoint slot idle when its task ends — unless a due version arrived
/// after the task's last look, which then gets a task of its own.
struct Idle(String);

impl Drop for Idle {
    fn drop(&mut self) {
        let Ok(mut slots) = CHECKPOINTS.lock() else { return };
        let Some(slot) = slots.get_mut(&self.0) else { return };
        slot.busy = false;
        if let Some((store, retention, version)) = slot.next.take() {
            drop(slots);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { start(store, retention, version) });
            }
        }
    }
}

/// Waits for the checkpoints in flight (a process about to exit, a test about to look), at
/// most a minute: an exit is never held up for long — a checkpoint not written is written at
/// the next interval.
pub async fn settle() {
    settle_within(Duration::from_secs(60)).await;
}

/// [`settle`] bounded by `limit` (a stop requested by a signal has seconds, not a minute).
pub async fn settle_within(limit: Duration) {
    if tokio::time::timeout(limit, wait_for_checkpoints()).await.is_err() {
        tracing::warn!(
            seconds = limit.as_secs_f64(),
            "checkpoints still running; exiting without them (the next interval writes them)"
        );
    }
}

async fn wait_for_checkpoints() {
    loop {
        let (handles, busy) = match CHECKPOINTS.lock() {
            Ok(mut m) => (
                m.values_mut().filter_map(|s| s.handle.take()).collect::<Vec<_>>(),
                m.values().any(|s| s.busy),
            ),
            Err(_) => return,
        };
        if handles.is_empty() && !busy {
            return;
        }
        for h in handles {
            let _ = h.await;
        }
        if busy {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Writes the checkpoint of `version`, then removes the log files the retention let go.
async fn checkpoint(store: &LogStoreRef, retention: Retention, version: u64) {
    let root = root_of_store(store);
    let started = Instant::now();
    let written = match crate::checkpoint::write(store.clone(), version).await {
        Ok(w) => w,
        Err(e) => {
            record_at(root, |s| s.checkpoint_failures += 1);
            tracing::warn!(version, error = %e, "writing the checkpoint failed; the next checkpoint interval tries again (readers replay more log files until then)");
            return;
        }
    };
    record_at(root.clone(), |s| {
        s.last_checkpoint = Some(version);
        s.checkpoints_written += u64::from(written.is_some());
    });
    let cutoff = chrono::Utc::now().timestamp_millis() - retention.log.as_millis() as i64;
    match cleanup_expired_logs_for(version, store.as_ref(), cutoff, None).await {
        Ok(removed) => {
            record_at(root, |s| s.log_files_removed += removed as u64);
            let w = written.unwrap_or_default(); // zeros: another writer wrote it
            tracing::info!(
                version,
                actions = w.actions,
                live_files = w.adds,
                bytes = w.bytes,
                tombstones_dropped = w.tombstones_dropped,
                removed,
                took_ms = started.elapsed().as_millis() as u64,
                "checkpoint written, expired log files removed"
            );
        }
        Err(e) => {
            tracing::warn!(version, error = %e, "removing expired log files failed; the next checkpoint tries again")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{checkpoint_due, extent, interval};

    #[test]
    fn the_oldest_readable_version_needs_a_checkpoint_once_commits_expired() {
        let whole = extent((0..=12).collect(), vec![10]);
        assert_eq!(
            (whole.oldest_readable, whole.last_checkpoint, whole.log_files),
            (Some(0), Some(10), 14)
        );
        // commits 0..=7 expired: 8 and 9 are listed but have no checkpoint below them
        let expired = extent((8..=25).collect(), vec![10, 20]);
        assert_eq!((expired.oldest_commit, expired.oldest_readable), (Some(8), Some(10)));
        // a checkpoint right below the oldest commit file serves it
        assert_eq!(extent((11..=25).collect(), vec![10, 20]).oldest_readable, Some(10));
        assert_eq!(extent(vec![], vec![]).oldest_readable, None);
    }

    #[test]
    fn intervals_in_the_largest_exact_unit() {
        assert_eq!(interval(Duration::from_secs(30 * 86_400)), "interval 30 days");
        assert_eq!(interval(Duration::from_secs(7_200)), "interval 2 hours");
        assert_eq!(interval(Duration::from_secs(90)), "interval 90 seconds");
        assert_eq!(interval(Duration::ZERO), "interval 0 seconds");
    }

    #[test]
    fn every_interval_th_version_but_not_the_first() {
        let due: Vec<u64> = (0..=300).filter(|v| checkpoint_due(*v, 100)).collect();
        assert_eq!(due, vec![100, 200, 300]);
        assert!(checkpoint_due(7, 1) && checkpoint_due(7, 0));
    }
}
