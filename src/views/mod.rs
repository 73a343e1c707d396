//! Windowed views the worker keeps up to date: `[[views]]` entries in the config, each a
//! `tumble`/`hop`/`session` aggregation over one table, kept as a Delta table of its own name
//! after every commit of its source table, on a task beside the worker's ingest
//! ([`Background`]).
//!
//! This module owns the config entry and the set of views a pipeline maintains; [`def`]
//! checks a view's SQL, [`maintain`] brings one view table to its source's version, exactly
//! once (the view's `txn` records the source version it reflects).

pub mod def;
pub mod identity;
pub mod late;
pub mod maintain;
pub mod retract;
pub mod scope;
pub mod sessions;
pub mod sink;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tables::Lake;

use crate::config::Config;
pub use def::ViewDef;
pub use maintain::{PAUSE_ENV, Step, View};

/// A `[[views]]` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ViewConfig {
    /// The view's table name.
    pub name: String,
    /// `SELECT window_start, window_end, <groups>, <aggregates> FROM tumble|hop|session(…) …`
    pub sql: String,
    /// How a step recomputes the view (default `incremental`).
    #[serde(default)]
    pub refresh: Refresh,
    /// A Kafka topic that gets every change of the view: upserts keyed by window and group,
    /// tombstones for groups that disappear (Avro, schemas registered in the registry).
    #[serde(default)]
    pub sink_topic: Option<String>,
    /// How long after a window's end (in event time: the latest time the view has seen)
    /// the window still takes changes normally, e.g. "1h"; after that it is final
    /// (`is_final`). `None`: windows are never final.
    #[serde(default)]
    pub allowed_lateness: Option<String>,
    /// What a change that reaches a final window does: `apply` (default) or `dead_letter`
    /// (the window keeps its value; the change goes to `_view_late`).
    #[serde(default)]
    pub late: late::LatePolicy,
}

/// How a view step recomputes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Refresh {
    /// A `tumble` or `hop` view of count, sum and avg updates the touched windows by
    /// arithmetic from the changed rows ([`retract`]); other views recompute only the windows
    /// the new commits touched, sessions only the sessions they reach (first steps and schema
    /// changes recompute the whole view).
    #[default]
    Incremental,
    /// Recompute the touched windows from the source even where arithmetic could keep them
    /// (the baseline `benches/views.rs` compares arithmetic with).
    Windows,
    /// Every step recomputes the whole view: the baseline `benches/views.rs` compares with, and
    /// a fallback that does not depend on reading the commits' files.
    Full,
}

/// Checks every `[[views]]` entry: its SQL, and that its name is its own.
pub fn validate(cfg: &Config) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    for v in &cfg.views {
        anyhow::ensure!(
            names.insert(v.name.as_str()),
            "view {:?} has two [[views]] entries; keep one",
            v.name
        );
        anyhow::ensure!(
            !cfg.tables.iter().any(|t| t.name == v.name),
            "view {:?} has the name of a [[tables]] entry; give the view its own name",
            v.name
        );
        anyhow::ensure!(
            !v.name.is_empty() && !v.name.starts_with('_') && !v.name.contains('/'),
            "view name {:?} is not allowed (empty, '/', or starting with '_', which is Cormorant's own)",
            v.name
        );
        anyhow::ensure!(
            v.sink_topic.as_ref().is_none_or(|t| !t.trim().is_empty()),
            "view {:?} has an empty sink_topic; name a topic or remove the line",
            v.name
        );
        let def = ViewDef::of(v)?;
        anyhow::ensure!(
            def.source != v.name,
            "view {:?} reads itself; name its source table",
            v.name
        );
    }
    Ok(())
}

/// The views of a pipeline, by source table.
pub struct Views {
    lake: Lake,
    by_source: HashMap<String, Vec<View>>,
    /// views whose table was made from another definition, tried again after each commit
    /// of their table (a `view rebuild` meanwhile makes them steppable)
    refused: Vec<ViewConfig>,
    cfg: Config,
}

impl Views {
    /// Opens the table of every configured view (created by its first step).
    pub async fn open(cfg: &Config, lake: &Lake) -> anyhow::Result<Self> {
        let mut views = Self {
            lake: lake.clone(),
            by_source: HashMap::new(),
            refused: Vec::new(),
            cfg: cfg.clone(),
        };
        for v in &cfg.views {
            match views.open_one(v, false).await? {
                Some(view) => views.by_source.entry(view.def().source.clone()).or_default().push(view),
                None => {
                    views.refused.push(v.clone());
                }
            }
        }
        Ok(views)
    }

    /// Opens one view; `None` when its table was made from another definition (logged unless
    /// `quiet`: the tables and the other views go on; this one waits for the user's choice).
    async fn open_one(&self, v: &ViewConfig, quiet: bool) -> anyhow::Result<Option<View>> {
        let (cfg, def) = (&self.cfg, ViewDef::of(v)?);
        let view = match View::open(&self.lake, def, cfg.log_policy(None)).await {
            Ok(view) => view,
            Err(e) if e.downcast_ref::<identity::Changed>().is_some() => {
                if !quiet {
                    tracing::error!("{e}; until then the view is not updated");
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if view.lacks_state() && !quiet {
            tracing::info!(
                view = %v.name,
                "the view's table was made before views kept the state that updates count, sum and avg by arithmetic: its steps recompute the windows they touch; run `cormorant view rebuild {}` to make it anew with that state",
                v.name
            );
        }
        let mut view = view.with_refresh(v.refresh);
        if let Some(topic) = &v.sink_topic {
            view = view.with_sink(sink::Sink::new(cfg, &v.name, topic)?);
        }
        if cfg.compaction.inline {
            view = view.with_compaction(cfg.compaction.every_commits, cfg.compaction.options.clone());
        }
        Ok(Some(view))
    }

    /// Opens again the refused views of `table` (after `view rebuild` they open).
    async fn retry_refused(&mut self, table: &str) -> anyhow::Result<()> {
        let mut still = Vec::new();
        for v in std::mem::take(&mut self.refused) {
            if ViewDef::of(&v)?.source != table {
                still.push(v);
                continue;
            }
            match self.open_one(&v, true).await? {
                Some(view) => {
                    tracing::info!(view = %v.name, "the view's table now matches its definition; the view is updated again");
                    self.by_source.entry(table.to_string()).or_default().push(view);
                }
                None => still.push(v),
            }
        }
        self.refused = still;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty() && self.refused.is_empty()
    }

    /// Brings every view to its source's latest version (at start: catches up after a crash
    /// between a source commit and its views' commits).
    pub async fn catch_up(&mut self) -> anyhow::Result<()> {
        let sources: Vec<String> = self.by_source.keys().cloned().collect();
        for s in sources {
            self.source_committed(&s).await?;
        }
        Ok(())
    }

    /// Steps the views of `table` after it committed.
    pub async fn source_committed(&mut self, table: &str) -> anyhow::Result<()> {
        if !self.refused.is_empty() {
            self.retry_refused(table).await?;
        }
        let Some(views) = self.by_source.get_mut(table) else {
            return Ok(());
        };
        let mut failure = None;
        for view in views {
            let name = view.def().name.clone();
            match view.step(&self.lake, false).await {
                Ok(Some(step)) => record(&name, &step),
                Ok(None) => {}
                Err(e) if e.downcast_ref::<maintain::Waiting>().is_some() => {
                    tracing::info!(view = name, "{e}");
                }
                // the other views of the table still step; the first failure is reported
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// The views of a pipeline stepped on a task of their own, so that ingest never waits for a
/// view: the pipeline names each table after it commits, and the task steps that table's
/// views to its latest version. Commits that arrive while a step runs are covered by one
/// next step (a step always goes to the table's latest version), so under load views fall
/// behind by a step, not by a queue. Exactly once as ever: each view commit records the
/// version it reflects, and a step cut short (a stop) is redone from there at the next start.
pub struct Background {
    tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// view names by source table
    names: HashMap<String, Vec<String>>,
    /// the task's early end was logged
    ended_logged: std::sync::atomic::AtomicBool,
}

impl Background {
    /// Starts the task: it first brings every view to its table's version (catching up after
    /// a crash between a table's commit and its views'). No task without views.
    pub fn start(mut views: Views) -> Self {
        let names = views
            .by_source
            .iter()
            .map(|(source, vs)| (source.clone(), vs.iter().map(|v| v.def().name.clone()).collect()))
            .collect();
        if views.is_empty() {
            return Self {
                tx: None,
                task: None,
                names,
                ended_logged: Default::default(),
            };
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            if let Err(e) = views.catch_up().await {
                failed(None, &e);
            }
            while let Some(first) = rx.recv().await {
                let mut tables = std::collections::BTreeSet::from([first]);
                while let Ok(t) = rx.try_recv() {
                    tables.insert(t);
                }
                for table in tables {
                    if let Err(e) = views.source_committed(&table).await {
                        failed(Some(&table), &e);
                    }
                }
            }
        });
        Self {
            tx: Some(tx),
            task: Some(task),
            names,
            ended_logged: Default::default(),
        }
    }

    /// The names of the views of `table`.
    pub fn views_of(&self, table: &str) -> &[String] {
        self.names.get(table).map_or(&[], Vec::as_slice)
    }

    /// `table` committed: its views step (soon, on the task).
    pub fn committed(&self, table: &str) {
        // only a panic ends the task early (every step error is logged and retried)
        if let Some(tx) = &self.tx
            && tx.send(table.to_string()).is_err()
            && !self.ended_logged.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                "the task that updates views has stopped (a bug: see the panic above); views are not updated until the worker restarts — please report it"
            );
        }
    }

    /// Ends the task: `wait` lets it finish the steps asked for (the views are then at their
    /// tables' versions, as `run --until-caught-up` promises); otherwise (a stop, a failure)
    /// the step under way is cut short and redone at the next start.
    pub async fn finish(&mut self, wait: bool) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            if !wait {
                task.abort();
            }
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(error = %e, "the task that updated views panicked; views were not updated since — please report it");
            }
        }
    }
}

fn failed(table: Option<&str>, e: &anyhow::Error) {
    tracing::error!(
        table,
        error = format!("{e:#}"),
        "a view could not be updated; it is retried after its table's next commit — check the view's SQL against the table's columns"
    );
}

/// Logs and counts a view step.
pub fn record(name: &str, step: &Step) {
    if step.version.is_some() {
        crate::metrics::METRICS
            .view_seconds
            .with_label_values(&[name])
            .observe(step.took.as_secs_f64());
        if let Some(f) = step.freshness {
            crate::metrics::METRICS
                .view_freshness
                .with_label_values(&[name])
                .observe(f.as_secs_f64());
        }
        tracing::info!(
            view = name,
            source_version = step.source_version,
            version = ?step.version,
            upserts = step.upserts,
            windows = step.windows.map_or("all".to_string(), |w| w.to_string()),
            deletes = step.deletes,
            arithmetic = step.retracted,
            took_ms = step.took.as_millis() as u64,
            freshness_ms = step.freshness.map(|f| f.as_millis() as u64),
            "view updated"
        );
    }
}

/// `cormorant view rebuild NAME`: recomputes view `name` from its table's latest version and
/// commits the difference, even when the view says it is up to date. A view whose SQL
/// changed since its table was made gets its table made anew (deleted, then computed whole).
pub async fn rebuild(cfg: &Config, name: &str) -> anyhow::Result<Rebuilt> {
    let entry = cfg.views.iter().find(|v| v.name == name).ok_or_else(|| {
        let known: Vec<&str> = cfg.views.iter().map(|v| v.name.as_str()).collect();
        anyhow::anyhow!("no [[views]] entry named {name:?} in the config (configured: {known:?})")
    })?;
    let lake = cfg.lake.open()?;
    let def = ViewDef::of(entry)?;
    let source = def.source.clone();
    let mut remade = None;
    let mut view = match View::open(&lake, def.clone(), cfg.log_policy(None)).await {
        Err(e) if e.downcast_ref::<identity::Changed>().is_some() => {
            lake.drop_table(name).await?;
            remade = Some("its definition changed since its table was made".to_string());
            View::open(&lake, def.clone(), cfg.log_policy(None)).await?
        }
        opened => opened?,
    };
    if view.lacks_state() {
        lake.drop_table(name).await?;
        remade = Some(
            "its table was made before views kept the state that updates count, sum and avg by arithmetic".to_string(),
        );
        view = View::open(&lake, def, cfg.log_policy(None)).await?;
    }
    let step = view.step(&lake, true).await?.ok_or_else(|| {
        anyhow::anyhow!("view {name:?} reads table {source:?}, which does not exist yet; run the worker first")
    })?;
    record(name, &step);
    Ok(Rebuilt { step, remade })
}

/// What `cormorant view rebuild` did.
pub struct Rebuilt {
    pub step: Step,
    /// Why its table was deleted and made anew (its SQL had changed, or it lacked the state
    /// arithmetic needs); `None`: it was kept.
    pub remade: Option<String>,
}

#[cfg(test)]
mod late_tests;
#[cfg(test)]
mod tests;
