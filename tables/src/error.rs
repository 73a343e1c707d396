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
    /// Listing or reading the log failed; deltalake hands such failures on as text only
    /// (`get_latest_version`), so the call site names them: a read, safe to repeat.
    #[error("reading the table's log failed: {0}; check the lake's store (the worker retries, then stops)")]
    LogRead(String),
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

/// The kernel's errors, as deltalake wraps them (so retrying is judged the same way).
impl From<buoyant_kernel::Error> for TableError {
    fn from(e: buoyant_kernel::Error) -> Self {
        TableError::Delta(deltalake::DeltaTableError::KernelError(e))
    }
}

impl TableError {
    /// Whether the same operation can succeed later (I/O, commit races), as opposed to a
    /// problem with the data or the configuration.
    pub fn is_retryable(&self) -> bool {
        use deltalake::DeltaTableError as D;
        if untrusted_certificate(self) {
            // the store's client retries a refused handshake as a transport error; it is a
            // configuration problem (lake.ca_file), and the same handshake fails again
            return false;
        }
        match self {
            TableError::Store(e) => store_retryable(e),
            // parquet's async reader hands the store's error on as an external one
            TableError::Parquet(e) | TableError::Delta(D::Parquet { source: e }) => parquet_retryable(e),
            TableError::Arrow(e) | TableError::Delta(D::Arrow { source: e }) => arrow_retryable(e),
            TableError::Kernel(deltalake::kernel::Error::ObjectStore(e)) => store_retryable(e),
            TableError::Delta(D::ObjectStore { source }) => store_retryable(source),
            TableError::Delta(D::Transaction { .. } | D::VersionAlreadyExists(_) | D::Io { .. }) => true,
            TableError::LogRead(_) => true,
            // reading the log goes through the kernel, whose errors wrap the store's
            TableError::Delta(D::KernelError(e)) => kernel_retryable(e),
            TableError::Delta(D::Kernel {
                source: deltalake::kernel::Error::ObjectStore(e),
            }) => store_retryable(e),
            _ => false,
        }
    }
}

/// A store call that can succeed later: not a missing object, a refused precondition or a
/// bad configuration (those say something about the table or the settings).
fn store_retryable(e: &object_store::Error) -> bool {
    use object_store::Error as S;
    !matches!(
        e,
        S::NotFound { .. }
            | S::InvalidPath { .. }
            | S::NotSupported { .. }
            | S::NotImplemented { .. }
            | S::PermissionDenied { .. }
            | S::Unauthenticated { .. }
            | S::UnknownConfigurationKey { .. }
    )
}

fn arrow_retryable(e: &arrow::error::ArrowError) -> bool {
    match e {
        arrow::error::ArrowError::ExternalError(e) => source_retryable(e.as_ref()),
        arrow::error::ArrowError::IoError(..) => true,
        _ => false,
    }
}

fn parquet_retryable(e: &parquet::errors::ParquetError) -> bool {
    match e {
        parquet::errors::ParquetError::External(e) => source_retryable(e.as_ref()),
        _ => false,
    }
}

/// Whether a boxed error, or one it was caused by, is a store failure a retry can fix (the
/// layers between the store and its callers — parquet, arrow, buffered uploads — box it).
fn source_retryable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(store) = e.downcast_ref::<object_store::Error>() {
            return store_retryable(store);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // a buffered upload reports the store's error as an io::Error holding it
            return match io.get_ref() {
                Some(inner) => source_retryable(inner),
                None => !matches!(
                    io.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ),
            };
        }
        at = e.source();
    }
    false
}

fn kernel_retryable(e: &buoyant_kernel::Error) -> bool {
    use buoyant_kernel::Error as K;
    match e {
        K::Backtraced { source, .. } => kernel_retryable(source),
        K::ObjectStore(e) => store_retryable(e),
        K::IOError(_) => true,
        K::Arrow(e) => arrow_retryable(e),
        K::Parquet(e) => parquet_retryable(e),
        _ => false,
    }
}

/// Whether `err` or one of its causes is a TLS handshake that rejected the server's
/// certificate (rustls' `InvalidCertificate`, looked up by type on the error chain; the HTTP
/// client hands it on inside nested `io::Error`s, whose `source` skips the error they hold).
pub fn untrusted_certificate(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(err);
    while let Some(e) = at {
        if matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        at = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

pub type Result<T, E = TableError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        }
    }

    #[test]
    fn store_failures_are_retryable_missing_objects_and_bad_data_are_not() {
        assert!(TableError::Store(generic()).is_retryable());
        let not_found = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(!TableError::Store(not_found).is_retryable());
        // the kernel's log reads wrap the store's errors
        let kernel = buoyant_kernel::Error::ObjectStore(generic());
        assert!(TableError::Delta(deltalake::DeltaTableError::KernelError(kernel)).is_retryable());
        // deltalake's parquet writer hands a failed upload on as an external parquet error
        let upload = parquet::errors::ParquetError::External(Box::new(generic()));
        assert!(TableError::Delta(deltalake::DeltaTableError::Parquet { source: upload }).is_retryable());
        assert!(TableError::LogRead("list failed".into()).is_retryable());
        // the kernel reads checkpoints through arrow, which wraps the store's error
        let checkpoint = arrow::error::ArrowError::ExternalError(Box::new(generic()));
        let kernel = buoyant_kernel::Error::Arrow(checkpoint);
        assert!(TableError::Delta(deltalake::DeltaTableError::KernelError(kernel)).is_retryable());
        let bad = buoyant_kernel::Error::Generic("unparseable".into());
        assert!(!TableError::Delta(deltalake::DeltaTableError::KernelError(bad)).is_retryable());
        assert!(
            !TableError::Schema {
                table: "t".into(),
                reason: "r".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn a_rejected_certificate_is_found_inside_nested_io_errors_and_is_permanent() {
        // as the HTTP client hands it on: io::Error(Other, io::Error(InvalidData, rustls))
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let outer = std::io::Error::other(inner);
        let store = object_store::Error::Generic {
            store: "S3",
            source: Box::new(outer),
        };
        assert!(untrusted_certificate(&store));
        assert!(!TableError::Store(store).is_retryable());
        let plain = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other("connection reset")),
        };
        assert!(!untrusted_certificate(&plain));
        assert!(TableError::Store(plain).is_retryable());
    }
}
