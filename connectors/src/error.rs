//! The connectors crate's one error type. Every variant says whether retrying can help
//! ([`ConnectorError::is_retryable`]); permanent errors about one record send that record to
//! the dead-letter table, retryable ones are retried with backoff and never drop data, and
//! fatal ones ([`ConnectorError::is_fatal`]: the worker's own configuration is wrong) stop the
//! worker with the message saying what to fix — no record is dead-lettered for them.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConnectorError {
    #[error(
        "not a Confluent wire-format record ({0}); the topic must be written with a Schema Registry Avro serializer (magic byte 0 + 4-byte schema id)"
    )]
    BadFrame(String),
    #[error(
        "schema id {0} is not in the schema registry; check that the worker uses the same registry as the producer (registry.url)"
    )]
    UnknownSchema(u32),
    #[error("schema registry unavailable ({0}); check registry.url and the registry's health — retrying")]
    RegistryUnavailable(String),
    #[error("invalid Avro schema: {0}; fix the schema in the registry")]
    InvalidSchema(String),
    #[error("unsupported column type: {0}; open an issue with the source column's type")]
    UnsupportedType(String),
    #[error(
        "Avro data does not match its schema: {0}; the producer wrote bytes that are not valid for the registered schema"
    )]
    CorruptAvro(String),
    #[error("not a Debezium change event: {0}; point this table at a Debezium topic")]
    NotDebezium(String),
    #[error("change event without a key: {0}; Debezium tables need a primary key (or message.key.columns)")]
    MissingKey(String),
    #[error("schema change cannot be applied: {0}; the record is kept in the dead-letter table")]
    IncompatibleSchema(String),
    #[error("Kafka error: {0}; check kafka.brokers and the broker's health")]
    Kafka(String),
    /// A broken invariant of Cormorant's own (an Arrow batch it built does not fit its schema):
    /// a bug, not bad input; the records go to the dead-letter table so nothing is lost.
    #[error("internal error: {0}; the records are kept in the dead-letter table — please report this with the log")]
    Internal(String),
    /// The worker's configuration does not work with the service (credentials, URL, CA).
    #[error("{0}")]
    Config(String),
    /// The broker no longer holds records the table has not seen (retention deleted them).
    #[error(
        "{topic} [{partition}]: the table's next offset is {from} but the broker's earliest is {earliest}, so {lost} records were deleted (retention) before they were applied; re-snapshot the source table (Debezium incremental snapshot) or set on_data_loss = \"skip\" on its [[tables]] entry to accept the gap",
        lost = earliest - from
    )]
    DataLoss {
        topic: String,
        partition: i32,
        from: i64,
        earliest: i64,
    },
}

impl ConnectorError {
    /// Whether the same call can succeed later (outages), as opposed to bad input.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectorError::RegistryUnavailable(_) | ConnectorError::Kafka(_))
    }

    /// Whether the error is about the worker's configuration rather than a record: retrying
    /// cannot help and dead-lettering would be wrong, so the worker stops.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConnectorError::Config(_) | ConnectorError::DataLoss { .. })
    }

    /// A short stable name for the dead-letter table's `error_kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorError::BadFrame(_) => "bad_frame",
            ConnectorError::UnknownSchema(_) => "unknown_schema",
            ConnectorError::RegistryUnavailable(_) => "registry_unavailable",
            ConnectorError::InvalidSchema(_) => "invalid_schema",
            ConnectorError::UnsupportedType(_) => "unsupported_type",
            ConnectorError::CorruptAvro(_) => "corrupt_avro",
            ConnectorError::NotDebezium(_) => "not_debezium",
            ConnectorError::MissingKey(_) => "missing_key",
            ConnectorError::IncompatibleSchema(_) => "incompatible_schema",
            ConnectorError::Kafka(_) => "kafka",
            ConnectorError::Config(_) => "config",
            ConnectorError::Internal(_) => "internal",
            ConnectorError::DataLoss { .. } => "data_loss",
        }
    }
}
