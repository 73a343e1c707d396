//! The stop signal as something to wait for: every wait that can be long (a hung service, a
//! backoff sleep) races it, so a stop is honoured within [`POLL`] of being requested.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a wait looks at the flag (the flag is shared with threads that are not async).
pub const POLL: Duration = Duration::from_millis(50);

/// Completes once `flag` is set.
pub async fn requested(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(POLL).await;
    }
}
