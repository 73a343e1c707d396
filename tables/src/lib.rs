//! `tables`: everything about the lake, and nothing about Kafka.
//!
//! [`ChangeBatch`](connectors::ChangeBatch)es arrive with opaque stream offsets; the
//! [`writer`] applies each in one Delta commit using the primary-key [`index`]; [`lake`]
//! locates tables under the lake URI.

pub mod compact;
pub mod dv;
pub mod error;
pub mod evolve;
mod files;
pub mod index;
pub mod lake;
#[cfg(test)]
mod model_tests;
mod resolve;
#[cfg(test)]
mod test_support;
pub mod writer;

pub use compact::{CompactionOptions, CompactionReport, compact};
pub use error::{Result, TableError};
pub use lake::Lake;
pub use writer::{Applied, DeleteMode, TableWriter, WriteMode, WriterOptions};
