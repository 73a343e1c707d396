//! `cormorant replay`: the whole topic into a new table equals the live table; replaying into
//! the live table (twice) changes nothing; a bounded range stops where it is told.

use tables::{DeleteMode, WriteMode};

use crate::support::*;
use cormorant::replay::{Bound, replay};

#[tokio::test(flavor = "multi_thread")]
async fn replay_rebuilds_and_is_idempotent() {
    let loaded = full_fixture().await;
    let mut cfg = config(
        &loaded.prefix,
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Mor,
        "replay",
    );
    cfg.kafka.batch_max_records = 3000;
    run_until_caught_up(&cfg).await;
    let lake = cfg.lake.open().expect("lake");
    for (table, key) in TABLES {
        let rebuilt = format!("{table}_rebuilt");
        let s = replay(&cfg, table, &Bound::Edge, &Bound::Edge, Some(&rebuilt), false)
            .await
            .expect("replay into new");
        let expected_events = fixture().events.iter().filter(|e| e.topic.ends_with(table)).count() as u64;
        assert_eq!(s.events, expected_events);
        let ctx = cormorant::query::session(&cfg).await.expect("session");
        let diff = batches_as_pg(
            &cormorant::query::run_sql(
                &ctx,
                &format!("SELECT count(*) FROM (SELECT * FROM {table} EXCEPT SELECT * FROM {rebuilt}) UNION ALL SELECT count(*) FROM (SELECT * FROM {rebuilt} EXCEPT SELECT * FROM {table})"),
            )
            .await
            .expect("diff")
            .remove(0),
        );
        assert_eq!(
            (diff[1][0].as_deref(), diff[2][0].as_deref()),
            (Some("0"), Some("0")),
            "{rebuilt} equals {table}"
        );
        assert_table_matches(
            &cfg,
            &rebuilt,
            key,
            &fixture_dir().join(format!("expected/final/{table}.csv")),
            None,
        )
        .await;
        // into the live table, twice: nothing changes
        let before = lake.open(table, None).await.expect("open").version();
        for _ in 0..2 {
            let s = replay(&cfg, table, &Bound::Edge, &Bound::Edge, None, false)
                .await
                .expect("replay into live");
            assert_eq!(s.commits, 0, "every record is below the table's offsets");
        }
        assert_eq!(lake.open(table, None).await.expect("open").version(), before);
    }
    // a bounded range: the first 100 customers records only
    let s = replay(
        &cfg,
        "customers",
        &Bound::Edge,
        &Bound::Offsets(vec![(0, 100)]),
        Some("first_hundred"),
        false,
    )
    .await
    .expect("bounded");
    assert_eq!(s.events, 100);
    let ctx = cormorant::query::session(&cfg).await.expect("session");
    let n = batches_as_pg(
        &cormorant::query::run_sql(&ctx, "SELECT max(__kafka_offset), count(*) FROM first_hundred")
            .await
            .expect("q")
            .remove(0),
    );
    assert_eq!((n[1][0].as_deref(), n[1][1].as_deref()), (Some("99"), Some("100")));
}
