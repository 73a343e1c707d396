//! The tables crate's one error type; each error says whether retrying can help.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TableError {
    #[error("Delta table error: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("Delta kernel error: {0}")]
    Kernel(#[from] deltalake::kernel::Error),
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("Parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("object store error: {0}; check lake.uri and lake.storage_options")]
    Store(#[from] object_store::Error),
    #[error("schema change cannot be applied to table {table}: {reason}")]
    Schema { table: String, reason: String },
    #[error("deletion vector error: {0}")]
    DeletionVector(String),
    #[error("change batch error: {0}")]
    Change(#[from] change::ChangeError),
    #[error("the table's log cannot be followed: {0}; the writer reloads the table from its latest version")]
    LogGap(String),
    #[error(
        "inconsistent table state: {0}; restart the worker (it rebuilds its index from the table), and report this if it recurs"
    )]
    Corrupt(String),
    #[error("invalid lake location {0:?}: use a path, file://…, or s3://bucket/prefix")]
    BadUri(String),
    #[error("table {0} does not exist in the lake; run `cormorant run` to create it, or check the name with `\\dt`")]
    NotFound(String),
    /// An operation refused because doing it would be unsafe; the message says what to change.
    #[error("{0}")]
    Refused(String),
}

impl TableError {
    /// Whether the same operation can succeed later (I/O, commit races), as opposed to a
    /// problem with the data or the configuration.
    pub fn is_retryable(&self) -> bool {
        use deltalake::DeltaTableError as D;
        matches!(
            self,
            TableError::Store(_)
                | TableError::Delta(
                    D::ObjectStore { .. } | D::Transaction { .. } | D::VersionAlreadyExists(_) | D::Io { .. }
                )
        )
    }
}

pub type Result<T, E = TableError> = std::result::Result<T, E>;
