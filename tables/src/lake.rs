//! The lake: a root URI (local path, `file://`, `s3://bucket/prefix`) holding one Delta table
//! per directory.
//!
//! Every table handle the crate opens is built here, so a store set here — the local I/O
//! pool's ([`crate::io_pool`]) for a local root, faults ([`Lake::with_faults`]) in tests —
//! is the one every read and write goes through.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, ObjectStore};
use futures::TryStreamExt;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use url::Url;

use crate::error::{Result, TableError};
use crate::fault::{Faults, FaultyStore};
use crate::io_pool::PooledStore;

static HANDLERS: Once = Once::new();

/// Where the tables live and how to reach them.
#[derive(Clone, Debug)]
pub struct Lake {
    root: Url,
    storage_options: HashMap<String, String>,
    /// The root store every handle uses instead of the one its URL names (fault injection).
    backend: Option<Arc<dyn ObjectStore>>,
}

impl Lake {
    /// `uri` is a path (relative to the working directory), `file://…` or `s3://bucket/prefix`.
    pub fn new(uri: &str, storage_options: HashMap<String, String>) -> Result<Self> {
        HANDLERS.call_once(|| deltalake::aws::register_handlers(None));
        let mut root = match Url::parse(uri) {
            Ok(u) if u.scheme().len() > 1 => u,
            _ => {
                let path = std::path::absolute(uri).map_err(|_| TableError::BadUri(uri.to_string()))?;
                std::fs::create_dir_all(&path).map_err(|e| TableError::BadUri(format!("{uri}: {e}")))?;
                Url::from_directory_path(&path).map_err(|_| TableError::BadUri(uri.to_string()))?
            }
        };
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let mut lake = Self {
            root,
            storage_options,
            backend: None,
        };
        if lake.root.scheme() == "file" {
            // local files are read and written on a pool of their own (see `io_pool`)
            lake.backend = Some(Arc::new(PooledStore::new(lake.root_store()?)));
        }
        Ok(lake)
    }

    /// The same lake, reached through a store that injects `faults` (tests, fault runs).
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Result<Self> {
        let inner = match self.backend.take() {
            Some(store) => store,
            None => self.root_store()?,
        };
        self.backend = Some(Arc::new(FaultyStore::new(inner, faults)));
        Ok(self)
    }

    /// The store of the root's scheme, as deltalake would make it for a table here.
    fn root_store(&self) -> Result<Arc<dyn ObjectStore>> {
        let bad = || TableError::BadUri(self.root.to_string());
        let scheme = Url::parse(&format!("{}://", self.root.scheme())).map_err(|_| bad())?;
        let factory = deltalake::logstore::object_store_factories()
            .get(&scheme)
            .map(|e| e.value().clone())
            .ok_or_else(bad)?;
        let config = deltalake::logstore::StorageConfig::parse_options(self.storage_options.clone())?;
        let (root, _) = factory.parse_url_opts(&self.root, &config)?;
        Ok(root)
    }

    /// A builder for the table at `url`, on this lake's options and store.
    fn builder(&self, url: Url) -> Result<DeltaTableBuilder> {
        let builder = DeltaTableBuilder::from_url(url.clone())?.with_storage_options(self.storage_options.clone());
        Ok(match &self.backend {
            Some(store) => builder.with_storage_backend(store.clone(), url),
            None => builder,
        })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// The URL of table `name`.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|_| TableError::BadUri(format!("{}{name}", self.root)))
    }

    /// A handle on table `name`, loaded when it exists (`state` is `None` when it does not).
    pub async fn table(&self, name: &str) -> Result<DeltaTable> {
        let url = self.table_url(name)?;
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            // the kernel refuses a missing local directory instead of reporting "not a table"
            std::fs::create_dir_all(&path).map_err(|e| TableError::BadUri(format!("{url}: {e}")))?;
        }
        let mut table = self.builder(url)?.build()?;
        if !self.exists(name).await? {
            return Ok(table);
        }
        match table.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
            Err(e) => Err(log_read(e)),
        }
    }

    /// Whether table `name` has a log, without loading it (loading a missing table makes the
    /// kernel log an ERROR, which a caller that merely waits for a table should not cause).
    pub async fn exists(&self, name: &str) -> Result<bool> {
        let table = self.builder(self.table_url(name)?)?.build()?;
        let store = table.log_store().object_store(None);
        match store.list(Some(&Path::from("_delta_log"))).try_next().await {
            Ok(first) => Ok(first.is_some()),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes table `name`: its log first, so that readers see no table rather than a log
    /// whose files are going, then every other object under it. Returns the objects deleted.
    /// For derived tables only (a view made anew from changed SQL); a CDC table is rebuilt
    /// with `replay --into` instead, which keeps the old one until the new one is checked.
    pub async fn drop_table(&self, name: &str) -> Result<usize> {
        let table = self.builder(self.table_url(name)?)?.build()?;
        let store = table.log_store().object_store(None);
        let mut deleted = 0;
        for prefix in [Some(Path::from("_delta_log")), None] {
            let paths: Vec<Path> = match store.list(prefix.as_ref()).map_ok(|m| m.location).try_collect().await {
                Ok(p) => p,
                Err(object_store::Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            for path in paths {
                match store.delete(&path).await {
                    Ok(()) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(deleted)
    }

    /// Table `name` at `version` (latest when `None`); `NotFound` when it does not exist.
    pub async fn open(&self, name: &str, version: Option<u64>) -> Result<DeltaTable> {
        let mut table = self.builder(self.table_url(name)?)?.build()?;
        let loaded = match version {
            Some(v) => table.load_version(v).await,
            None => table.load().await,
        };
        match loaded {
            Ok(()) => Ok(table),
            // on S3 a missing table is "not a table"; on local disk the kernel finds no path
            Err(
                DeltaTableError::NotATable(_)
                | DeltaTableError::KernelError(buoyant_kernel::Error::InvalidTableLocation(_)),
            ) => Err(TableError::NotFound(name.to_string())),
            Err(e) if version.is_none() => Err(log_read(e)),
            Err(e) => Err(e.into()),
        }
    }

    fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        let t = self.builder(self.root.clone())?.build()?;
        Ok(t.log_store().object_store(None))
    }

    /// Names of the Delta tables under the root, sorted.
    pub async fn list_tables(&self) -> Result<Vec<String>> {
        let store = self.store()?;
        let listing = match store.list_with_delimiter(None).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut names = Vec::new();
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename().map(str::to_string) else {
                continue;
            };
            let log = Path::from(format!("{dir}/_delta_log"));
            let mut entries = store.list(Some(&log));
            if entries.try_next().await?.is_some() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Brings `table` to the log's latest version. deltalake reports a failed log listing as
/// `Generic` text (`get_latest_version`); here, where the call is known to be a read of the
/// log's latest version, it becomes [`TableError::LogRead`], which a retry can fix.
pub(crate) async fn update_state(table: &mut DeltaTable) -> Result<()> {
    table.update_state().await.map_err(log_read)
}

/// The log's latest version, listed from `from` (a version known to exist): what tells a
/// writer or a watch whether anyone committed since, without a replay of the log.
/// `LogGap` when the commit of `from` is gone from the log (expired): the caller reloads.
pub(crate) async fn latest_version(table: &DeltaTable, from: u64) -> Result<u64> {
    match table.log_store().get_latest_version(from).await {
        Ok(v) => Ok(v),
        Err(DeltaTableError::InvalidVersion(v)) if v == from => Err(TableError::LogGap(format!(
            "commit {from} is no longer in the log (expired)"
        ))),
        Err(e) => Err(log_read(e)),
    }
}

/// The error of loading the log's latest version (see [`update_state`]).
pub(crate) fn log_read(e: DeltaTableError) -> TableError {
    match e {
        DeltaTableError::Generic(msg) => TableError::LogRead(msg),
        e => e.into(),
    }
}

/// The `add` actions of the table's current snapshot (its active files, with partition values,
/// tags, statistics and deletion vectors).
pub fn active_adds(table: &DeltaTable) -> Result<Vec<deltalake::kernel::Add>> {
    #[allow(deprecated)] // the Arrow-array replacement does not build Add actions
    Ok(table.snapshot()?.log_data().iter().map(|f| f.add_action()).collect())
}
