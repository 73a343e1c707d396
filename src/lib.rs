//! Cormorant: Debezium change streams from Kafka into Delta Lake tables you can query.
//!
//! The binary's glue: [`config`], the streaming [`worker`], the [`query`] engine and the
//! test/quickstart schema [`registry`]. The data path itself lives in the `connectors`
//! (stream → `ChangeBatch`) and `tables` (`ChangeBatch` → Delta) crates.

pub mod config;
pub mod fixture;
pub mod metrics;
pub mod query;
pub mod registry;
pub mod replay;
pub mod shell;
pub mod status;
pub mod worker;
