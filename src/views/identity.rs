//! What a view's table was made from: the view's SQL (whitespace collapsed) and its
//! `allowed_lateness`, recorded as table properties at creation. A step over a table made
//! from another definition would recompute some windows by the new one and keep the rest
//! by the old, so a view whose definition changed is not stepped until `view rebuild`
//! makes its table anew.

use tables::TableWriter;

use super::def::ViewDef;

/// The table property holding the SQL a view's table was made from (whitespace collapsed):
/// a step over a table made from other SQL would mix two views' rows.
pub const SQL_PROPERTY: &str = "cormorant.view.sql";

/// How a view table's description ends after the SQL (tables made before [`SQL_PROPERTY`]
/// existed say their SQL only there).
const DESCRIPTION_TAIL: &str = "; each commit records the table version it reflects";

/// A view whose SQL in the config is not the SQL its table was made from. Its steps would
/// recompute some windows by the new SQL and keep the rest by the old, so it is not stepped
/// until the user chooses.
#[derive(Debug, thiserror::Error)]
#[error(
    "view {view}: its SQL, allowed_lateness or late in the config is not what its table was made from ({was}); run `cormorant view rebuild {view}` to make its table anew from the new definition (the table's history goes with it), or put the old one back"
)]
pub struct Changed {
    pub view: String,
    pub was: String,
}

/// The table property holding a view's `allowed_lateness` in µs (absent: none). A view
/// table's `is_final` column is made by it, so changing it makes a new view.
pub const LATENESS_PROPERTY: &str = "cormorant.view.allowed_lateness_us";

/// `sql` with its whitespace collapsed: what a view table records and compares.
fn normalized(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What makes a view's table: its SQL and its lateness, as [`made_from`] reads them back.
fn definition(def: &ViewDef) -> String {
    described(normalized(&def.sql), def.lateness.map(|l| l.allowed.to_string()))
}

fn described(sql: String, lateness_us: Option<String>) -> String {
    match lateness_us {
        Some(us) => format!("{sql} with allowed_lateness {us} µs"),
        None => sql,
    }
}

/// The description a view's table is created with: what it computes and how it is kept.
pub(super) fn description(def: &ViewDef, txn: &str) -> String {
    format!(
        "Windowed view kept by Cormorant {} over table {}: {}{DESCRIPTION_TAIL} (txn {txn}).",
        env!("CARGO_PKG_VERSION"),
        def.source,
        normalized(&def.sql),
    )
}

/// The table property holding a view's `late` policy: a `dead_letter` view's table holds
/// windows that differ from what the table gives, and keeps no state for arithmetic, so a
/// table made under one policy does not serve the other. (Tables made before the property
/// existed are not checked.)
pub const LATE_PROPERTY: &str = "cormorant.view.late";

fn policy(def: &ViewDef) -> &'static str {
    def.lateness.map_or(super::late::LatePolicy::Apply, |l| l.policy).name()
}

/// The properties a view's table is created with: its definition.
pub(super) fn properties(def: &ViewDef) -> Vec<(String, String)> {
    [
        Some((SQL_PROPERTY.to_string(), normalized(&def.sql))),
        Some((LATE_PROPERTY.to_string(), policy(def).to_string())),
        def.lateness
            .map(|l| (LATENESS_PROPERTY.to_string(), l.allowed.to_string())),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Refuses a view table made from another definition than `def`.
pub(super) fn check(writer: &TableWriter, def: &ViewDef) -> Result<(), Changed> {
    match made_from(writer) {
        Some(was) if was != definition(def) => {
            return Err(Changed {
                view: def.name.clone(),
                was,
            });
        }
        _ => {}
    }
    let late = writer
        .table()
        .snapshot()
        .ok()
        .and_then(|s| s.metadata().configuration().get(LATE_PROPERTY).cloned());
    match late {
        Some(was) if was != policy(def) => Err(Changed {
            view: def.name.clone(),
            was: format!("late = \"{was}\""),
        }),
        _ => Ok(()),
    }
}

/// The definition the view table of `writer` was made from (`None`: no table yet).
fn made_from(writer: &TableWriter) -> Option<String> {
    let snapshot = writer.table().snapshot().ok()?;
    let metadata = snapshot.metadata();
    let config = metadata.configuration();
    let lateness = config.get(LATENESS_PROPERTY).cloned();
    if let Some(sql) = config.get(SQL_PROPERTY) {
        return Some(described(sql.clone(), lateness));
    }
    let description = metadata.description()?;
    let (_, rest) = description.split_once(" over table ")?;
    let (_, rest) = rest.split_once(": ")?;
    Some(rest.rsplit_once(DESCRIPTION_TAIL)?.0.to_string())
}
