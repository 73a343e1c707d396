//! Several writers on one table: partition-owned file groups, commits that lose a race and are
//! rebased without a new plan, true overlaps that are planned again, handoffs of a partition,
//! and keys that moved between partitions. Every scenario runs in all four modes.
//!
//! A race is made deterministic with the writer's test hook: another writer's commit (or a
//! compaction) runs between the writer's sync and its commit.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::Mutex;

use crate::test_support::*;
use crate::writer::{DeleteMode, Race, TableWriter};

/// Another writer applying `b` in the middle of this writer's apply.
fn racing_apply(other: &Arc<Mutex<TableWriter>>, b: change::ChangeBatch) -> Race {
    let other = other.clone();
    Box::new(move || {
        async move {
            other.lock().await.apply(&b).await.expect("the racing writer applies");
        }
        .boxed()
    })
}

/// A compaction of every file group committing in the middle of this writer's apply.
fn racing_compaction(fx: &Fixture) -> Race {
    let lake = fx.lake.clone();
    Box::new(move || {
        async move {
            let mut t = lake.open(TABLE, None).await.expect("open");
            let r = crate::compact(&mut t, &eager()).await.expect("compaction");
            assert!(r.version.is_some(), "the racing compaction commits: {r:?}");
        }
        .boxed()
    })
}

/// Two workers owning partition 0 and 1: each indexes only its own partition, sees the other's
/// offsets, and the table holds both partitions' rows, each in files of its own partition.
async fn partitions_are_owned(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut a = fx.writer().await;
    let mut b = fx.writer().await;
    apply(&mut a, &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000)])).await;
    apply(&mut b, &batch(&[up(0, 3, "c", 3000).p(1), up(1, 4, "d", 4000).p(1)])).await;
    apply(&mut a, &batch(&[up(2, 1, "a2", 1100), del(3, 2)])).await;
    apply(&mut b, &batch(&[up(2, 3, "c2", 3100).p(1)])).await;
    assert_eq!(a.loaded_partitions(), vec![0]);
    assert_eq!(b.loaded_partitions(), vec![1]);
    assert_eq!(
        a.next_offset(&app_id(1)).await.expect("offset"),
        Some(3),
        "b's offsets are seen"
    );
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                ("1|a2|11.00|2000|u|false|2", LIVE),
                ("2|b|20.00|1000|d|true|3", GONE),
                ("3|c2|31.00|2000|u|false|2", LIVE),
                ("4|d|40.00|1000|u|false|1", LIVE),
            ]
        )
    );
    let parts = fx.query("SELECT DISTINCT __kafka_partition FROM t ORDER BY 1").await;
    assert_eq!(parts, ["0", "1"]);
    let table = fx.lake.open(TABLE, None).await.expect("open");
    #[allow(deprecated)]
    for f in table.snapshot().expect("snapshot").log_data().iter() {
        assert!(
            crate::index::partition_of(&f.add_action()).is_some(),
            "every data file is tagged with its partition"
        );
    }
}

/// A commit that loses to another partition's commit is made again at the next version
/// without a new plan, and the winner reaches the index as a patch.
async fn lost_race_is_rebased(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut a = fx.writer().await;
    let b = Arc::new(Mutex::new(fx.writer().await));
    apply(&mut a, &batch(&[up(0, 1, "a", 1000)])).await;
    apply(&mut *b.lock().await, &batch(&[up(0, 3, "c", 3000).p(1)])).await;
    a.race = Some(racing_apply(&b, batch(&[up(1, 3, "c2", 3100).p(1)])));
    let done = apply(&mut a, &batch(&[up(1, 1, "a2", 1100), up(2, 2, "b", 2000)])).await;
    assert_eq!((done.rebased, done.replanned), (1, 0), "{done:?}");
    assert_eq!(done.version, Some(4));
    assert_eq!(
        fx.rows().await,
        [
            "1|a2|11.00|1000|u|false|1",
            "2|b|20.00|2000|u|false|2",
            "3|c2|31.00|1000|u|false|1",
        ]
    );
    // both go on from the patched state
    apply(&mut a, &batch(&[del(3, 1)])).await;
    apply(&mut *b.lock().await, &batch(&[del(2, 3).p(1)])).await;
    assert_eq!(fx.query("SELECT COUNT(*) - COUNT(DISTINCT id) FROM t").await, ["0"]);
    assert_eq!(
        fx.query("SELECT id FROM t WHERE NOT __deleted ORDER BY id").await,
        ["2"]
    );
}

/// A compaction that rewrote the very file the commit supersedes a row in: a true overlap, the
/// batch is planned again on the patched index — no duplicate, no lost update.
async fn overlap_is_planned_again(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut a = fx.writer().await;
    apply(&mut a, &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000)])).await;
    apply(&mut a, &batch(&[up(2, 3, "c", 3000)])).await;
    a.race = Some(racing_compaction(&fx));
    let done = apply(&mut a, &batch(&[up(3, 1, "a2", 1100), del(4, 3)])).await;
    assert_eq!(done.replanned, 1, "{done:?}");
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                ("1|a2|11.00|3000|u|false|3", LIVE),
                ("2|b|20.00|1000|u|false|1", LIVE),
                ("3|c|30.00|2000|d|true|4", GONE),
            ]
        )
    );
    assert_eq!(a.loaded_partitions(), vec![0]);
}

/// Two writers believe they own partition 0 (a handoff in progress): the offsets recorded by
/// the winner make the loser apply only what is left, exactly once.
async fn same_partition_race_applies_once(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut a = fx.writer().await;
    let b = Arc::new(Mutex::new(fx.writer().await));
    apply(&mut a, &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000)])).await;
    // b (the new owner) applies 2..4 while a (the old one) is applying 2..5
    a.race = Some(racing_apply(&b, batch(&[up(2, 1, "a2", 1100), up(3, 2, "b2", 2100)])));
    let done = apply(
        &mut a,
        &batch(&[up(2, 1, "a2", 1100), up(3, 2, "b2", 2100), up(4, 1, "a3", 1200)]),
    )
    .await;
    assert_eq!((done.replanned, done.rows_skipped), (1, 2), "{done:?}");
    assert_eq!(a.next_offset(&app_id(0)).await.expect("offset"), Some(5));
    assert_eq!(
        fx.rows().await,
        ["1|a3|12.00|4000|u|false|4", "2|b2|21.00|3000|u|false|3"]
    );
}

/// The source's partition count changed: a key arriving on its new partition supersedes its
/// row in the old partition's group, also for a writer started afterwards.
async fn moved_keys_are_found(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut a = fx.writer().await;
    apply(&mut a, &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000)])).await;
    a.note_source_partitions(1).await.expect("count recorded");
    a.note_source_partitions(3).await.expect("count changed");
    apply(&mut a, &batch(&[up(0, 1, "a2", 1100).p(2)])).await;
    let mut fresh = fx.writer().await;
    apply(&mut fresh, &batch(&[del(1, 1).p(2), up(2, 2, "b2", 2100).p(1)])).await;
    assert_eq!(fresh.loaded_partitions(), vec![0, 1, 2], "every partition is indexed");
    assert_eq!(fx.query("SELECT COUNT(*) - COUNT(DISTINCT id) FROM t").await, ["0"]);
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[("1|a2|11.00|0|d|true|1", GONE), ("2|b2|21.00|2000|u|false|2", LIVE),]
        )
    );
}

all_modes!(
    partitions_are_owned,
    lost_race_is_rebased,
    overlap_is_planned_again,
    same_partition_race_applies_once,
    moved_keys_are_found,
);
