//! `connectors`: everything about the outside stream, and nothing about the lake.
//!
//! Kafka records ([`kafka`]) → Confluent frame check ([`frame`]) → schemas by id from a
//! Schema Registry, cached ([`registry`]) → Avro decoded straight into Arrow columns
//! ([`avro`]) → Debezium envelope rules ([`debezium`]) → one [`ChangeBatch`] per table
//! ([`decoder`], on every core), with bad records routed to dead letters ([`dlq`]).

pub mod avro;
pub mod debezium;
pub mod decoder;
pub mod dlq;
pub mod error;
pub mod frame;
pub mod kafka;
pub mod registry;

pub use change::{ChangeBatch, ChangeKind, Position, SourceOffset, StreamId};
pub use debezium::RawRecord;
pub use decoder::{Decoded, Decoder, SchemaGuard};
pub use error::ConnectorError;
