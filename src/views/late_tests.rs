//! Late data end to end over a real lake: the watermark makes windows final (`is_final`, also
//! for windows no commit touched), a late change is applied (`late = "apply"`) or held back
//! and recorded in `_view_late` (`late = "dead_letter"`), and `view rebuild` applies it.

use change::ChangeKind;
use datafusion::prelude::SessionContext;
use tables::{DeleteMode, Lake, TableWriter, WriteMode, WriterOptions};

use super::late::{LATE_TABLE, LatePolicy};
use super::tests::{Change, both, csv, source_batch, tempfile_dir};
use super::{View, ViewConfig, ViewDef};

const HOUR: i64 = 3_600_000_000;
const MINUTE: i64 = 60_000_000;
/// An hour boundary (2023-11-14 23:00:00 UTC).
const T0: i64 = 1_700_002_800_000_000;

fn upsert(id: i32, ts: i64, amount: i64) -> Change {
    Change {
        kind: ChangeKind::Upsert,
        id: Some(id),
        ts: Some(ts),
        grp: Some("a"),
        amount: Some(amount),
    }
}

/// `sql` over the view table `per_hour` (as `v`) and `_view_late` (as `late`, when it exists).
async fn query(lake: &Lake, sql: &str) -> String {
    let ctx = SessionContext::new();
    let view = lake.open("per_hour", None).await.expect("view table");
    ctx.register_table("v", view.table_provider().await.expect("provider"))
        .expect("register");
    if let Ok(late) = lake.open(LATE_TABLE, None).await {
        ctx.register_table("late", late.table_provider().await.expect("provider"))
            .expect("register");
    }
    csv(&ctx, sql).await
}

async fn late_data(policy: LatePolicy, scoped: bool) {
    let label = format!("{policy:?}, scoped {scoped}");
    let dir = tempfile_dir(7_000 + u64::from(scoped) + 2 * (policy as u64));
    let lake = Lake::new(dir.to_str().expect("utf-8 path"), Default::default()).expect("lake");
    let options = WriterOptions {
        mode: WriteMode::Mor,
        deletes: DeleteMode::Hard,
        ..WriterOptions::default()
    };
    let mut source = TableWriter::open(&lake, "events", options).await.expect("writer");
    let entry = ViewConfig {
        name: "per_hour".into(),
        sql: "SELECT window_start, window_end, count(*) AS n, sum(amount) AS total \
              FROM tumble('events', 'ts', INTERVAL '1 hour') GROUP BY 1, 2"
            .into(),
        allowed_lateness: Some("30m".into()),
        late: policy,
        ..Default::default()
    };
    let mut view = View::open(&lake, ViewDef::of(&entry).expect("valid"), Default::default())
        .await
        .expect("view");
    if scoped {
        view = view.always_scoped();
    }
    let mut offset = 0;
    let mut commit = async |changes: Vec<Change>, view: &mut View| {
        source
            .apply(&source_batch(&changes, offset))
            .await
            .expect("source commit");
        offset += changes.len() as i64;
        view.step(&lake, false)
            .await
            .expect("view step")
            .expect("source exists")
    };
    let flags = "SELECT window_start, n, total, is_final FROM v ORDER BY 1";

    // W = 00:10: no window is final
    commit(
        vec![upsert(1, T0 + 10 * MINUTE, 5), upsert(2, T0 + HOUR + 10 * MINUTE, 7)],
        &mut view,
    )
    .await;
    let got = query(&lake, flags).await;
    assert_eq!(
        got,
        "window_start,n,total,is_final\n\
         2023-11-14 23:00:00+00,1,5,f\n2023-11-15 00:00:00+00,1,7,f\n",
        "{label}"
    );

    // W = 01:05 passes 00:00 + 30 min: the first window is final though no change touched it
    commit(vec![upsert(3, T0 + 2 * HOUR + 5 * MINUTE, 11)], &mut view).await;
    let got = query(&lake, flags).await;
    assert_eq!(
        got,
        "window_start,n,total,is_final\n\
         2023-11-14 23:00:00+00,1,5,t\n2023-11-15 00:00:00+00,1,7,f\n2023-11-15 01:00:00+00,1,11,f\n",
        "{label}"
    );

    // a late event in the final window, and an update in an open one
    let step = commit(
        vec![upsert(4, T0 + 20 * MINUTE, 100), upsert(2, T0 + HOUR + 15 * MINUTE, 8)],
        &mut view,
    )
    .await;
    let got = query(&lake, flags).await;
    let (stored, batch) = both(&lake, &mut view).await;
    match policy {
        LatePolicy::Apply => {
            assert_eq!(step.late, 0, "{label}: applied, not held");
            assert_eq!(stored, batch, "{label}: the view equals the batch query");
            assert!(got.contains("2023-11-14 23:00:00+00,2,105,t"), "{label}: {got}");
        }
        LatePolicy::DeadLetter => {
            assert_eq!(step.late, 1, "{label}: one final window held");
            assert!(
                got.contains("2023-11-14 23:00:00+00,1,5,t"),
                "{label}: the final window keeps its value: {got}"
            );
            assert!(
                got.contains("2023-11-15 00:00:00+00,1,8,f"),
                "{label}: open windows change: {got}"
            );
            assert_ne!(
                stored, batch,
                "{label}: the source holds the late event the view did not apply"
            );
            let late = query(
                &lake,
                "SELECT view, source_version, window_start, kept_row, source_row, reason FROM late",
            )
            .await;
            let lines: Vec<&str> = late.lines().collect();
            assert_eq!(lines.len(), 2, "{label}: one late entry: {late}");
            assert!(
                lines[1].starts_with("per_hour,3,2023-11-14 23:00:00")
                    || lines[1].starts_with("per_hour,3,2023-11-14T23:00:00"),
                "{label}: {late}"
            );
            assert!(
                lines[1].contains(r#""n"":1"#) && lines[1].contains(r#""n"":2"#),
                "{label}: kept and source rows: {late}"
            );
            assert!(
                lines[1].contains("was final") && lines[1].contains("view rebuild per_hour"),
                "{label}: {late}"
            );
            // a redone step (after a crash) records nothing twice
            let redone = super::late::dead_letter(
                &lake,
                "per_hour",
                3,
                0,
                &ViewDef::of(&entry).expect("valid").lateness.expect("set"),
                vec![super::late::Held {
                    window_start: "x".into(),
                    window_end: "y".into(),
                    kept: None,
                    source: None,
                }],
            )
            .await
            .expect("dead letter");
            assert_eq!(redone, 0, "{label}: a version recorded once");
            // a later step that recomputes the held window (every window, unscoped) finds it
            // still differs from the source, and does not report it again
            let step = commit(vec![upsert(3, T0 + 2 * HOUR + 6 * MINUTE, 12)], &mut view).await;
            assert_eq!(step.late, 0, "{label}: nothing new held");
            let again = query(&lake, "SELECT count(*) AS n FROM late").await;
            assert_eq!(again, "n\n1\n", "{label}: each late change recorded once");

            // `view rebuild` applies what was held
            view.step(&lake, true).await.expect("rebuild").expect("source exists");
            let (stored, batch) = both(&lake, &mut view).await;
            assert_eq!(stored, batch, "{label}: a rebuild applies every late change");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_changes_are_applied_or_dead_lettered_and_windows_become_final() {
    for policy in [LatePolicy::Apply, LatePolicy::DeadLetter] {
        for scoped in [true, false] {
            late_data(policy, scoped).await;
        }
    }
}

#[test]
fn lateness_is_refused_where_it_cannot_work() {
    let entry = |sql: &str, lateness: Option<&str>, late: LatePolicy| ViewConfig {
        name: "v".into(),
        sql: sql.into(),
        allowed_lateness: lateness.map(str::to_string),
        late,
        ..Default::default()
    };
    let session = "SELECT window_start, window_end, grp, count(*) FROM session('events', 'ts', INTERVAL '1 hour', 'grp') GROUP BY 1, 2, 3";
    let tumble =
        "SELECT window_start, window_end, count(*) FROM tumble('events', 'ts', INTERVAL '1 hour') GROUP BY 1, 2";
    let e = ViewDef::of(&entry(session, Some("1h"), LatePolicy::Apply)).expect_err("session");
    assert!(e.to_string().contains("tumble and hop"), "{e}");
    let e = ViewDef::of(&entry(tumble, None, LatePolicy::DeadLetter)).expect_err("no lateness");
    assert!(e.to_string().contains("needs allowed_lateness"), "{e}");
    let e = ViewDef::of(&entry(tumble, Some("soon"), LatePolicy::Apply)).expect_err("bad duration");
    assert!(e.to_string().contains("is not a duration"), "{e}");
    let clash = "SELECT window_start, window_end, count(*) AS is_final FROM tumble('events', 'ts', INTERVAL '1 hour') GROUP BY 1, 2";
    let e = ViewDef::of(&entry(clash, Some("1h"), LatePolicy::Apply)).expect_err("a column is_final");
    assert!(e.to_string().contains("rename the output column"), "{e}");
    let d = ViewDef::of(&entry(tumble, Some("90s"), LatePolicy::Apply)).expect("valid");
    assert_eq!(d.lateness.map(|l| l.allowed), Some(90_000_000));
}
