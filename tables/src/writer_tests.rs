//! Unit tests of [`TableWriter::apply`], every scenario in both write modes (CoW, MoR) and
//! both delete modes. Batches are built directly with Arrow; the table is read back through
//! deltalake's DataFusion provider, the way any Delta reader sees it.

use change::{ChangeBatch, SourceOffset};

use super::{DeleteMode, TableWriter, WriteMode, WriterOptions};
use crate::test_support::*;

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Inserts then updates across batches; several changes to one key in one batch: last wins.
async fn upserts_latest_wins(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut w = fx.writer().await;
    let a = apply(&mut w, &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000)])).await;
    assert_eq!(a.version, Some(1), "version 0 is the table's creation");
    assert_eq!((a.rows_in, a.rows_skipped), (2, 0));
    assert_eq!(fx.rows().await, ["1|a|10.00|0|u|false|0", "2|b|20.00|1000|u|false|1"]);

    let b = batch(&[
        up(2, 1, "a2", 1100),
        up(3, 3, "c", 3000),
        up(4, 3, "c2", 3100),
        up(5, 1, "a3", 1200),
        up(6, 3, "c3", 3200),
    ]);
    assert_eq!(apply(&mut w, &b).await.version, Some(2));
    assert_eq!(
        fx.rows().await,
        [
            "1|a3|12.00|5000|u|false|5",
            "2|b|20.00|1000|u|false|1",
            "3|c3|32.00|6000|u|false|6",
        ]
    );
    assert_eq!(fx.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM t").await, ["3|3"]);
    assert_eq!(w.indexed_keys(), Some(3));
}

/// Deletes of keys from an earlier batch, from the same batch and never seen; re-inserts.
async fn deletes(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut w = fx.writer().await;
    apply(
        &mut w,
        &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000), up(2, 3, "c", 3000)]),
    )
    .await;

    let b = batch(&[
        del(3, 1),            // known from the table
        up(4, 2, "b2", 2100), // updated, then deleted in the same batch
        del(5, 2),            //
        del(6, 9),            // never seen
        up(7, 4, "d", 4000),  // new
        up(8, 5, "e", 5000),  // inserted and deleted in the same batch
        del(9, 5),            //
    ]);
    let a = apply(&mut w, &b).await;
    assert_eq!(a.version, Some(2));
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                // last known values, metadata of the delete
                ("1|a|10.00|0|d|true|3", GONE),
                ("2|b2|21.00|4000|d|true|5", GONE),
                ("3|c|30.00|2000|u|false|2", LIVE),
                ("4|d|40.00|7000|u|false|7", LIVE),
                ("5|e|50.00|8000|d|true|9", GONE),
                // nothing known but the key
                ("9|null|null|null|d|true|6", GONE),
            ]
        )
    );
    // soft-deleted rows are current rows and stay indexed; hard-deleted ones do not
    let keys = if deletes == DeleteMode::Soft { 6 } else { 2 };
    assert_eq!(w.indexed_keys(), Some(keys));

    // re-insert after delete (in a later batch, and delete + insert inside one batch)
    let b = batch(&[
        up(10, 1, "a2", 1100),
        up(11, 9, "z", 9000),
        del(12, 3),
        up(13, 3, "c2", 3100),
        del(14, 4),
    ]);
    apply(&mut w, &b).await;
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                ("1|a2|11.00|10000|u|false|10", LIVE),
                ("2|b2|21.00|4000|d|true|5", GONE),
                ("3|c2|31.00|13000|u|false|13", LIVE),
                ("4|d|40.00|7000|d|true|14", GONE),
                ("5|e|50.00|8000|d|true|9", GONE),
                ("9|z|90.00|11000|u|false|11", LIVE),
            ]
        )
    );
    assert_eq!(fx.query("SELECT COUNT(*) - COUNT(DISTINCT id) FROM t").await, ["0"]);
}

/// An unavailable (TOASTed) cell keeps the previous value: from the table, from the same batch,
/// and null when the key has no previous row.
async fn toast_keeps_previous_value(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut w = fx.writer().await;
    apply(&mut w, &batch(&[up(0, 1, "long1", 1000), up(1, 2, "long2", 2000)])).await;

    let changes = [
        up(2, 1, "-", 1100), // name unavailable: previous from the table
        up(3, 1, "-", 1200), // again: previous is the row above, itself from the table
        up(4, 2, "x2", 2100),
        up(5, 2, "-", 2200), // previous from the same batch
        up(6, 3, "-", 3000), // no previous row: null
    ];
    apply(&mut w, &toast_batch(&changes, &[0, 1, 3, 4])).await;
    assert_eq!(
        fx.rows().await,
        [
            "1|long1|12.00|3000|u|false|3",
            "2|x2|22.00|5000|u|false|5",
            "3|null|30.00|6000|u|false|6",
        ]
    );

    // soft: a deleted row's last known values are what a later TOASTed update keeps;
    // hard: the row is gone, so there is nothing to keep
    let changes = [del(7, 1), up(8, 1, "-", 1300)];
    apply(&mut w, &toast_batch(&changes, &[1])).await;
    let name = if deletes == DeleteMode::Soft { "long1" } else { "null" };
    assert_eq!(
        fx.query("SELECT id, name, amount, __deleted FROM t WHERE id = 1").await,
        [format!("1|{name}|13.00|false")]
    );
    assert_eq!(
        fx.query(&format!("SELECT COUNT(*) FROM t WHERE name = '{UNAVAILABLE}'"))
            .await,
        ["0"]
    );
}

/// A truncate deletes every row present at that point; rows after it in the batch survive.
async fn truncate(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut w = fx.writer().await;
    apply(
        &mut w,
        &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000), up(2, 3, "c", 3000)]),
    )
    .await;
    apply(&mut w, &batch(&[up(3, 6, "f", 6000)])).await; // a second file

    let b = batch(&[
        up(4, 2, "b2", 2100), // updated in the batch before the truncate
        up(5, 4, "d", 4000),  // new in the batch before the truncate
        trunc(6),
        up(7, 5, "e", 5000),  // new after the truncate
        up(8, 3, "c2", 3100), // back after the truncate
    ]);
    let a = apply(&mut w, &b).await;
    assert_eq!(
        a.files_removed, 2,
        "a truncate rewrites (or drops, or re-adds with a deletion vector) every file"
    );
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                ("1|a|10.00|0|d|true|6", GONE),
                ("2|b2|21.00|4000|d|true|6", GONE),
                ("3|c2|31.00|8000|u|false|8", LIVE),
                ("4|d|40.00|5000|d|true|6", GONE),
                ("5|e|50.00|7000|u|false|7", LIVE),
                ("6|f|60.00|3000|d|true|6", GONE),
            ]
        )
    );

    // a truncate alone, then an insert in a later batch
    apply(&mut w, &batch(&[trunc(9)])).await;
    apply(&mut w, &batch(&[up(10, 7, "g", 7000)])).await;
    let live = fx.query("SELECT id FROM t WHERE NOT __deleted ORDER BY id").await;
    assert_eq!(live, ["7"]);
    let all = fx.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM t").await;
    assert_eq!(all, [if deletes == DeleteMode::Soft { "7|7" } else { "1|1" }]);
}

/// Re-applied batches commit nothing; a partly applied batch applies only its new rows; the
/// recorded offsets are the batches' next offsets, per partition.
async fn idempotent_replays(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut w = fx.writer().await;
    let (p0, p1) = (app_id(0), app_id(1));
    let first = batch(&[
        up(0, 1, "a", 1000),
        up(0, 3, "c", 3000).p(1),
        up(1, 2, "b", 2000),
        up(1, 4, "d", 4000).p(1),
    ]);
    assert_eq!(apply(&mut w, &first).await.version, Some(1));
    assert_eq!(
        (w.next_offset(&p0).await.unwrap(), w.next_offset(&p1).await.unwrap()),
        (Some(2), Some(2))
    );
    assert_eq!(w.next_offset(&app_id(7)).await.unwrap(), None);
    let before = fx.rows().await;

    let again = apply(&mut w, &first).await;
    assert_eq!(again.version, None);
    assert_eq!((again.rows_in, again.rows_skipped, again.files_added), (4, 4, 0));
    assert_eq!(w.current_table().await.expect("table").version(), Some(1));
    assert_eq!(fx.rows().await, before);

    // rows at offsets 1 (p0) and 1 (p1) were applied before: their stale values must not win
    let partly = batch(&[
        up(1, 2, "STALE", 9900),
        up(2, 5, "e", 5000),
        up(1, 4, "STALE", 9900).p(1),
        up(2, 3, "c2", 3100).p(1),
        del(3, 1),
    ]);
    let a = apply(&mut w, &partly).await;
    assert_eq!(a.version, Some(2));
    assert_eq!((a.rows_in, a.rows_skipped), (5, 2));
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                ("1|a|10.00|0|d|true|3", GONE),
                ("2|b|20.00|1000|u|false|1", LIVE),
                ("3|c2|31.00|2000|u|false|2", LIVE),
                ("4|d|40.00|1000|u|false|1", LIVE),
                ("5|e|50.00|2000|u|false|2", LIVE),
            ]
        )
    );
    assert_eq!(
        (w.next_offset(&p0).await.unwrap(), w.next_offset(&p1).await.unwrap()),
        (Some(4), Some(3))
    );
    assert_eq!(apply(&mut w, &partly).await.version, None);

    // offsets move without rows (tombstones, dead letters): one commit, no data files
    let moved = ChangeBatch::offsets_only(
        columns(false),
        vec!["id".into()],
        vec![SourceOffset {
            stream: stream(),
            partition: 0,
            next_offset: 10,
        }],
    );
    let a = apply(&mut w, &moved).await;
    assert_eq!((a.version, a.files_added, a.files_removed), (Some(3), 0, 0));
    assert_eq!(w.next_offset(&p0).await.unwrap(), Some(10));
    assert_eq!(apply(&mut w, &moved).await.version, None);
    // a row below the moved offset is already applied
    let a = apply(&mut w, &batch(&[up(9, 6, "f", 6000)])).await;
    assert_eq!((a.version, a.rows_skipped), (None, 1));
    assert_eq!(fx.query("SELECT COUNT(*) FROM t WHERE id = 6").await, ["0"]);
}

/// A batch that adds a column: rows written before read null for it, whether their file was
/// rewritten by the batch or not; a later batch without the column leaves it null.
async fn schema_evolution(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let mut w = fx.writer().await;
    apply(&mut w, &batch(&[up(0, 1, "a", 1000), up(1, 5, "e", 5000)])).await;
    apply(&mut w, &batch(&[up(2, 2, "b", 2000)])).await;

    let b = make_batch(
        &[up(3, 1, "a2", 1100).note("m"), up(4, 3, "c", 3000).note("n")],
        true,
        Vec::new(),
    );
    let a = apply(&mut w, &b).await;
    assert_eq!(a.files_removed, 1, "only the file of key 1 is rewritten");
    let (_, removed) = fx.log_actions(3);
    let (first_file, _) = fx.log_actions(1);
    assert_eq!(removed, first_file);

    let names: Vec<String> = w
        .table()
        .snapshot()
        .expect("snapshot")
        .snapshot()
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names[..6],
        ["id", "name", "amount", "ts", "note", "__op"],
        "new column before the meta columns"
    );

    let sql = "SELECT id, name, note, __deleted FROM t ORDER BY id";
    assert_eq!(
        fx.query(sql).await,
        ["1|a2|m|false", "2|b|null|false", "3|c|n|false", "5|e|null|false"]
    );

    // an older producer without the column: the column stays, null from then on
    apply(&mut w, &batch(&[up(5, 3, "c2", 3100), del(6, 1)])).await;
    assert_eq!(
        fx.query(sql).await,
        expect(
            deletes,
            &[
                ("1|a2|m|true", GONE), // soft delete keeps the last known note too
                ("2|b|null|false", LIVE),
                ("3|c2|null|false", LIVE),
                ("5|e|null|false", LIVE),
            ]
        )
    );
}

/// Only the files holding batch keys are touched (rewritten by CoW, given a deletion vector by
/// MoR); the others stay in the table untouched.
async fn untouched_files_stay(deletes: DeleteMode) {
    let mor = MODE.try_with(|m| *m == WriteMode::Mor).unwrap_or(false);
    let soft = deletes == DeleteMode::Soft;
    let fx = Fixture::new(deletes);
    let mut w = fx.writer().await;
    apply(&mut w, &batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000)])).await; // v1: file A
    apply(&mut w, &batch(&[up(2, 3, "c", 3000), up(3, 4, "d", 4000)])).await; // v2: file B
    let (file_a, _) = fx.log_actions(1);
    let (file_b, _) = fx.log_actions(2);
    assert_eq!((file_a.len(), file_b.len()), (1, 1));

    let a = apply(&mut w, &batch(&[up(4, 3, "c2", 3100)])).await; // v3
    assert_eq!((a.version, a.files_added, a.files_removed), (Some(3), 1, 1));
    let (added, removed) = fx.log_actions(3);
    assert_eq!(removed, file_b, "only B holds key 3");
    // MoR re-adds B with its deletion vector beside the new file
    assert_eq!(added.len(), if mor { 2 } else { 1 });

    // a delete of a key never seen touches no file
    let a = apply(&mut w, &batch(&[del(5, 9)])).await; // v4
    assert_eq!(a.files_removed, 0);
    let (added, removed) = fx.log_actions(4);
    assert_eq!((added.len(), removed.len()), (usize::from(soft), 0));

    // deleting key 1 touches A only (CoW rewrites it, MoR marks the row in A's vector)
    let a = apply(&mut w, &batch(&[del(6, 1)])).await; // v5
    let new_files = usize::from(!mor || soft);
    assert_eq!((a.files_added, a.files_removed), (new_files, 1));
    assert_eq!(fx.log_actions(5).1, file_a);
    // deleting the last live key of a file drops it (a soft delete writes the deleted row)
    let a = apply(&mut w, &batch(&[del(7, 2)])).await; // v6
    assert_eq!((a.files_added, a.files_removed), (usize::from(soft), 1));

    let files = live_files(&mut w).await;
    let expected_files = match (mor, soft) {
        (false, true) => 3,  // c2+d, 9, 1+2 (deleted)
        (false, false) => 1, // c2+d
        (true, true) => 5,   // B (d), c2, 9, 1, 2
        (true, false) => 2,  // B (d), c2
    };
    assert_eq!(files, expected_files);
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                ("1|a|10.00|0|d|true|6", GONE),
                ("2|b|20.00|1000|d|true|7", GONE),
                ("3|c2|31.00|4000|u|false|4", LIVE),
                ("4|d|40.00|3000|u|false|3", LIVE),
                ("9|null|null|null|d|true|5", GONE),
            ]
        )
    );
}

/// A fresh writer on an existing table rebuilds the index from the files and goes on: no
/// duplicate keys, replays still skipped, soft-deleted keys still found.
async fn restart_rebuilds_index(deletes: DeleteMode) {
    let fx = Fixture::new(deletes);
    let first = batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000), up(2, 3, "c", 3000)]);
    let second = batch(&[up(3, 2, "b2", 2100), del(4, 3)]);
    {
        let mut w = fx.writer().await;
        apply(&mut w, &first).await;
        apply(&mut w, &second).await;
    }

    let mut w = fx.writer().await;
    assert_eq!(w.indexed_keys(), None, "the index is built lazily");
    assert_eq!(w.next_offset(&app_id(0)).await.unwrap(), Some(5));
    assert_eq!(
        apply(&mut w, &second).await.version,
        None,
        "a replay after restart is skipped"
    );

    let third = batch(&[
        up(5, 1, "a2", 1100),
        up(6, 3, "c2", 3100),
        up(7, 4, "d", 4000),
        up(8, 2, "b3", 2200),
    ]);
    let a = apply(&mut w, &third).await;
    assert_eq!(a.version, Some(3));
    assert_eq!(w.indexed_keys(), Some(4));
    assert_eq!(
        fx.rows().await,
        [
            "1|a2|11.00|5000|u|false|5",
            "2|b3|22.00|8000|u|false|8",
            "3|c2|31.00|6000|u|false|6",
            "4|d|40.00|7000|u|false|7",
        ]
    );

    // and once more, from yet another writer, with a delete of a key written after the restart
    let mut w = fx.writer().await;
    apply(&mut w, &batch(&[del(9, 4), up(10, 1, "a3", 1200)])).await;
    assert_eq!(w.indexed_keys(), Some(if deletes == DeleteMode::Soft { 4 } else { 3 }));
    assert_eq!(fx.query("SELECT COUNT(*) - COUNT(DISTINCT id) FROM t").await, ["0"]);
    assert_eq!(
        fx.query("SELECT id, name FROM t WHERE NOT __deleted ORDER BY id").await,
        ["1|a3", "2|b3", "3|c2"]
    );
}

all_modes!(
    upserts_latest_wins,
    deletes,
    toast_keeps_previous_value,
    truncate,
    idempotent_replays,
    schema_evolution,
    untouched_files_stay,
    restart_rebuilds_index,
);

/// `apply_if` commits only while the table records the offset its caller read; once another
/// writer moved it, it commits nothing (and says so), and a writer that reads again goes on.
#[tokio::test]
async fn apply_if_commits_only_at_the_offset_it_expects() {
    let fx = Fixture::new(DeleteMode::Hard);
    let (mut a, mut b) = (fx.writer().await, fx.writer().await);
    apply(&mut a, &batch(&[up(0, 1, "a", 1000)])).await;
    let app = app_id(0);
    let read = b.next_offset(&app).await.expect("txn");
    assert_eq!(read, Some(1));
    // another writer moves the offset after b read it
    apply(&mut a, &batch(&[up(1, 2, "b", 2000)])).await;
    let refused = b
        .apply_if(&batch(&[up(2, 1, "stale", 1100)]), &app, read)
        .await
        .expect("apply_if");
    assert!(refused.is_none(), "nothing committed on top of a moved offset");
    assert_eq!(fx.query("SELECT name FROM t WHERE id = 1").await, ["a"]);
    let read = b.next_offset(&app).await.expect("txn");
    let done = b
        .apply_if(&batch(&[up(2, 1, "fresh", 1100)]), &app, read)
        .await
        .expect("apply_if")
        .expect("committed at the offset read");
    assert!(done.version.is_some());
    assert_eq!(fx.query("SELECT name FROM t WHERE id = 1").await, ["fresh"]);
}

/// A soft delete of a key in a file this writer did not write (here: written before a
/// restart) reads that small file whole and keeps it: a later delete of another key in it is
/// found in memory, not read again.
#[tokio::test]
async fn a_small_file_read_for_previous_rows_is_kept_in_memory() {
    crate::test_support::MODE
        .scope(WriteMode::Mor, async {
            let fx = Fixture::new(DeleteMode::Soft);
            let rows = batch(&[up(0, 1, "a", 1000), up(1, 2, "b", 2000), up(2, 3, "c", 3000)]);
            apply(&mut fx.writer().await, &rows).await;
            let mut w = fx.writer().await; // a new process: no recent rows
            let first = apply(&mut w, &batch(&[del(3, 1)])).await;
            assert_eq!((first.files_read, first.files_recalled), (1, 0));
            let second = apply(&mut w, &batch(&[del(4, 2)])).await;
            assert_eq!(
                (second.files_read, second.files_recalled),
                (0, 1),
                "the file read whole is kept"
            );
            assert_eq!(
                fx.query("SELECT id, name, __deleted FROM t ORDER BY id").await,
                ["1|a|true", "2|b|true", "3|c|false"]
            );
        })
        .await;
}

/// One plan reads whole at most an eighth of the recent rows' budget (every file it read is
/// held until it is done); the other files it needs are read with a row selection, and only
/// the files read whole are found in memory by the next batch.
#[tokio::test]
async fn one_plan_reads_whole_at_most_an_eighth_of_the_budget() {
    crate::test_support::MODE
        .scope(WriteMode::Mor, async {
            let fx = Fixture::new(DeleteMode::Soft);
            let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
            let mut w = fx.writer().await;
            for (i, name) in names.iter().enumerate() {
                let (offset, id) = (2 * i as i64, 2 * i as i32);
                apply(
                    &mut w,
                    &batch(&[up(offset, id, name, 1000), up(offset + 1, id + 1, name, 1000)]),
                )
                .await;
            }
            let table = fx.lake.open(TABLE, None).await.expect("table opens");
            let adds = crate::lake::active_adds(&table).expect("active files");
            let largest = adds.iter().map(|a| a.size).max().expect("data files");
            // each file is small enough to be read whole, eight of them fill the allowance
            let options = WriterOptions {
                recent_rows_bytes: Some(64 * largest as usize),
                ..fx.options()
            };
            let mut w = TableWriter::open(&fx.lake, TABLE, options).await.expect("writer opens");
            let evens: Vec<_> = (0..12).map(|i| del(100 + i, 2 * i as i32)).collect();
            let first = apply(&mut w, &batch(&evens)).await;
            assert_eq!((first.files_read, first.files_recalled), (12, 0));
            let odds: Vec<_> = (0..12).map(|i| del(200 + i, 2 * i as i32 + 1)).collect();
            let second = apply(&mut w, &batch(&odds)).await;
            assert_eq!(
                (second.files_read, second.files_recalled),
                (4, 8),
                "eight files were read whole and kept, four read by selection"
            );
            let live = fx.query("SELECT count(*) FROM t WHERE NOT __deleted").await;
            let deleted = fx.query("SELECT count(*) FROM t WHERE __deleted").await;
            assert_eq!((live, deleted), (vec!["0".to_string()], vec!["24".to_string()]));
        })
        .await;
}

/// A kept file whose rows were mostly superseded keeps only its live rows, and a soft delete
/// of one of them still finds its previous values there.
#[tokio::test]
async fn a_soft_delete_finds_its_row_in_a_shrunk_file() {
    crate::test_support::MODE
        .scope(WriteMode::Mor, async {
            let fx = Fixture::new(DeleteMode::Soft);
            let mut w = fx.writer().await;
            let four = [
                up(0, 1, "a", 1000),
                up(1, 2, "b", 2000),
                up(2, 3, "c", 3000),
                up(3, 4, "d", 4000),
            ];
            apply(&mut w, &batch(&four)).await;
            apply(
                &mut w,
                &batch(&[up(4, 1, "a2", 1100), up(5, 2, "b2", 2100), up(6, 3, "c2", 3100)]),
            )
            .await;
            let deleted = apply(&mut w, &batch(&[del(7, 4)])).await;
            assert_eq!((deleted.files_read, deleted.files_recalled), (0, 1));
            assert_eq!(
                fx.query("SELECT id, name, amount, __deleted FROM t ORDER BY id").await,
                [
                    "1|a2|11.00|false",
                    "2|b2|21.00|false",
                    "3|c2|31.00|false",
                    "4|d|40.00|true"
                ]
            );
        })
        .await;
}

/// A writer's own data commits leave the table's snapshot where it was (no replay of the log
/// per commit); another writer's commit in between is still seen, and the snapshot catches up
/// when asked for.
#[tokio::test]
async fn own_commits_do_not_replay_the_log_and_others_are_still_seen() {
    let fx = Fixture::new(DeleteMode::Hard);
    let (mut a, mut b) = (fx.writer().await, fx.writer().await);
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let i = i as i64;
        assert_eq!(
            apply(&mut a, &batch(&[up(i, 1, name, 1000 + i128::from(i))]))
                .await
                .version,
            Some(i as u64 + 1)
        );
    }
    assert_eq!(a.table().version(), Some(0), "the snapshot stays at the creation");
    let other = apply(&mut b, &batch(&[up(3, 2, "x", 2000)])).await;
    assert_eq!(other.version, Some(4), "b lists the log and commits after a's commits");
    let next = apply(&mut a, &batch(&[up(4, 1, "d", 1004), up(5, 2, "y", 2001)])).await;
    assert_eq!(
        (next.version, next.rows_skipped),
        (Some(5), 0),
        "b's commit is followed, not lost"
    );
    assert_eq!(a.current_table().await.expect("table").version(), Some(5));
    assert_eq!(fx.query("SELECT id, name FROM t ORDER BY id").await, ["1|d", "2|y"]);
}
