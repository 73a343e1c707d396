//! `connectors`: everything about the outside stream, and nothing about the lake.
//!
//! Kafka records ([`kafka`]) → Confluent frame check ([`frame`]) → schemas by id from a
//! Schema Registry, cached ([`registry`]) → Avro decoded straight into Arrow columns
//! ([`avro`]) → Debezium envelope rules ([`debezium`]) → one [`ChangeBatch`] per table
//! ([`pipeline`]), with bad records routed to dead letters ([`dlq`]).

pub mod avro;
pub mod change;
pub mod debezium;
pub mod dlq;
pub mod error;
pub mod frame;
pub mod kafka;
pub mod pipeline;
pub mod registry;

pub use change::{ChangeBatch, ChangeKind, Position, SourceOffset};
pub use debezium::RawRecord;
pub use error::ConnectorError;
pub use pipeline::{BatchDecoder, Decoded, SchemaGuard};
