//! Cormorant: Debezium change streams from Kafka into Delta Lake tables you can query.
//!
//! The library behind the binary: [`config`], the decode-and-apply [`pipeline`] (fed by the
//! streaming [`worker`], by [`replay`] and by the benchmarks), the [`query`] engine and the
//! test/quickstart schema [`registry`]. The pieces of the data path live in the `connectors`
//! (stream → `ChangeBatch`) and `tables` (`ChangeBatch` → Delta) crates.

pub mod config;
pub mod fixture;
pub mod health;
pub mod membership;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod registry;
pub mod replay;
pub mod serve;
pub mod shell;
pub mod status;
pub mod stop;
pub mod views;
pub mod worker;
