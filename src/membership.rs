//! Static group membership: the `group.instance.id` a worker joins its consumer group with.
//!
//! With an instance id, a worker restarted after a crash rejoins as the same member and gets
//! its partitions back at once; without one, the group keeps the dead member's partitions
//! until its session times out. The id must be stable across restarts of one worker and unique
//! among the live workers of a group (the broker fences a second member with the same id).
//!
//! `kafka.instance_id = "auto"` (the default) derives it from the host name and a slot: the
//! lowest number whose lock file this process can lock (held for the life of the process). A
//! worker restarted on the same host takes the slot its predecessor left, so several workers on
//! one host (or one per pod, where the host name is the pod's) each get a stable, distinct id.

use std::fs::File;
use std::path::PathBuf;

/// More slots than this on one host for one group means something is wrong.
const MAX_SLOTS: u32 = 1024;

/// The instance id to join with (`None`: dynamic membership) and the lock that reserves it.
pub struct Membership {
    pub instance_id: Option<String>,
    _slot: Option<File>,
}

/// Resolves `kafka.instance_id`: `"auto"`, `"none"` (or empty) or an explicit id.
pub fn resolve(setting: &str, group_id: &str) -> std::io::Result<Membership> {
    match setting.trim() {
        "" | "none" => Ok(Membership {
            instance_id: None,
            _slot: None,
        }),
        "auto" => auto(group_id),
        explicit => Ok(Membership {
            instance_id: Some(explicit.to_string()),
            _slot: None,
        }),
    }
}

fn auto(group_id: &str) -> std::io::Result<Membership> {
    let dir = slot_dir();
    std::fs::create_dir_all(&dir)?;
    let safe: String = group_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let host = host_name();
    for slot in 0..MAX_SLOTS {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{safe}.{slot}.lock")))?;
        if file.try_lock().is_ok() {
            return Ok(Membership {
                instance_id: Some(format!("{host}-{slot}")),
                _slot: Some(file),
            });
        }
    }
    Err(std::io::Error::other(format!(
        "no free instance slot among {MAX_SLOTS} in {}; set kafka.instance_id explicitly",
        dir.display()
    )))
}

/// Where the slot locks live: one directory per host (and per user).
fn slot_dir() -> PathBuf {
    std::env::var_os("CORMORANT_INSTANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("cormorant-instances"))
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cormorant".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_slots_are_distinct_while_held_and_reused_after() {
        let group = format!("test-{}", std::process::id());
        let a = resolve("auto", &group).expect("slot");
        let b = resolve("auto", &group).expect("slot");
        assert_ne!(a.instance_id, b.instance_id);
        let first = a.instance_id.clone();
        drop(a);
        let c = resolve("auto", &group).expect("slot");
        assert_eq!(
            c.instance_id, first,
            "a restarted worker takes the slot its predecessor left"
        );
        assert_eq!(resolve("none", &group).expect("none").instance_id, None);
        assert_eq!(
            resolve("w1", &group).expect("explicit").instance_id.as_deref(),
            Some("w1")
        );
    }
}
