//! What a supervisor asks (`/healthz`, `/readyz` on the metrics address) and what the worker
//! says when it makes no progress.
//!
//! The worker's main loop reports, every half second, whether it owns partitions, how much it
//! has applied and how many records wait (the lag it last measured). From that: alive is the
//! process answering at all; ready is owning partitions and either having nothing waiting or
//! having made progress within the stall bound; a stall (records waiting, nothing applied for
//! longer than the bound) is logged once per bound as a warning with how long, and shown in
//! `cormorant_stalled_seconds`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The worker's state as the main loop last saw it.
pub struct Health {
    state: Mutex<State>,
}

struct State {
    assigned: bool,
    /// records + commits applied, a counter that moves with any progress
    applied: u64,
    /// records waiting in the owned partitions (last lag measurement)
    waiting: i64,
    progress_at: Instant,
    warned_at: Option<Instant>,
    stall_after: Duration,
}

pub static HEALTH: std::sync::LazyLock<Health> = std::sync::LazyLock::new(|| Health::new(Duration::from_secs(30)));

impl Health {
    fn new(stall_after: Duration) -> Self {
        Health {
            state: Mutex::new(State {
                assigned: false,
                applied: 0,
                waiting: 0,
                progress_at: Instant::now(),
                warned_at: None,
                stall_after,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_stall_after(&self, after: Duration) {
        self.state().stall_after = after;
    }

    /// The records waiting in the owned partitions, as the lag reader last measured them.
    pub fn set_waiting(&self, waiting: i64) {
        self.state().waiting = waiting;
    }

    /// Records what the main loop sees; warns when progress stalled while records wait.
    pub fn observe(&self, assigned: bool, applied: u64) {
        let mut s = self.state();
        s.assigned = assigned;
        let waiting = s.waiting;
        if applied != s.applied || waiting <= 0 {
            s.applied = applied;
            s.progress_at = Instant::now();
            s.warned_at = None;
        }
        let stalled = s.progress_at.elapsed();
        let stalled_secs = if stalled >= s.stall_after { stalled.as_secs() } else { 0 };
        crate::metrics::METRICS.stalled_seconds.set(stalled_secs as i64);
        if stalled_secs > 0 && s.warned_at.is_none_or(|t| t.elapsed() >= s.stall_after) {
            s.warned_at = Some(Instant::now());
            tracing::warn!(
                stalled_s = stalled_secs,
                waiting,
                "no progress for {stalled_secs} s while {waiting} records wait: a service the worker needs is slow or hung — the broker, the schema registry or the lake's storage; the warnings before this one name the call being retried"
            );
        }
    }

    /// `Ok` when ready to serve its share of the group; else why not.
    pub fn readiness(&self) -> Result<(), String> {
        let s = self.state();
        if !s.assigned {
            return Err("no partition assigned".into());
        }
        let stalled = s.progress_at.elapsed();
        if s.waiting > 0 && stalled >= s.stall_after {
            return Err(format!(
                "no progress for {} s while {} records wait",
                stalled.as_secs(),
                s.waiting
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_assigned_and_progressing_or_idle() {
        let h = Health::new(Duration::from_millis(50));
        h.observe(false, 0);
        assert!(h.readiness().is_err(), "nothing assigned yet");
        h.set_waiting(500);
        h.observe(true, 10);
        assert!(h.readiness().is_ok());
        std::thread::sleep(Duration::from_millis(80));
        h.observe(true, 10);
        let why = h.readiness().expect_err("stalled with records waiting");
        assert!(why.contains("500 records wait"), "{why}");
        h.set_waiting(400);
        h.observe(true, 11);
        assert!(h.readiness().is_ok(), "progress again");
        std::thread::sleep(Duration::from_millis(80));
        h.set_waiting(0);
        h.observe(true, 11);
        assert!(h.readiness().is_ok(), "idle, nothing waiting");
    }
}
