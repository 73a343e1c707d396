//! `tables`: everything about the lake, and nothing about Kafka.
//!
//! [`ChangeBatch`](change::ChangeBatch)es arrive with opaque stream offsets; the [`writer`]
//! applies each in one Delta commit using the primary-key [`index`] of the source partitions
//! it owns. Every data file belongs to one source partition (its `cormorant.partition` tag), so
//! writers of different partitions never touch the same file; when they race for a version,
//! the loser follows the winners through the [`log`] instead of rebuilding anything.
//! [`compact`] rewrites files within one partition's group; [`maintain`] checkpoints and
//! expires the log, [`vacuum`] deletes files no retained version needs; [`lake`] locates tables.

pub mod changes;
pub mod checkpoint;
pub mod commit;
pub mod compact;
mod compact_job;
pub mod dv;
pub mod error;
pub mod evolve;
pub mod fault;
mod files;
#[cfg(test)]
mod group_model_tests;
pub mod index;
pub mod io_pool;
pub mod keys;
pub mod lake;
pub mod log;
pub mod maintain;
#[cfg(test)]
mod model_tests;
pub mod offsets;
#[cfg(test)]
mod partition_tests;
pub mod partitioning;
mod plan;
#[cfg(test)]
mod race_tests;
mod recent;
mod resolve;
mod state;
mod stats;
mod table_setup;
#[cfg(test)]
mod test_support;
mod txns;
mod vacuum;
pub mod writer;

pub use change;
pub use compact::{CompactionOptions, CompactionReport, compact, compact_partitions};
pub use compact_job::{CompactionJob, ReadyCompaction};
pub use error::{Result, TableError};
pub use lake::Lake;
pub use offsets::OffsetsWatch;
pub use vacuum::{VacuumReport, vacuum};
pub use writer::{Applied, DeleteMode, TableWriter, WriteMode, WriterOptions};
