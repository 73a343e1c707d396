//! Local-disk I/O on threads of its own.
//!
//! object_store's `LocalFileSystem` does every read, write, listing and rename as a blocking
//! task on the blocking pool of the runtime that polls it — the pool tokio grows up to 512
//! threads, which the worker shares with decoding and with the Delta kernel's log reads. Under
//! ingest load that pool grew to ~60 threads, and each allocated the buffers of its reads in an
//! allocator heap of its own: the 5M-event run over 1M keys held 1.25–1.35 GiB resident where
//! its live heap was about a third of that, and a pool capped at 16 brought it to ~0.78 GiB.
//! The shared pool cannot be capped (the kernel's log reads wait on store reads from inside
//! it: a small shared pool deadlocks), so [`PooledStore`] moves the store's work to a runtime
//! of its own with [`IO_THREADS`] blocking threads that live for the process.
//!
//! How: every call of the wrapped store is polled inside the I/O runtime's context, so the
//! blocking tasks it starts go to that runtime's pool, and their completion wakes the caller
//! directly. (A first build spawned each call as a task of the I/O runtime instead: one more
//! thread hop per file operation; its single 5M run was inside this machine's noise, so the
//! hop's cost is not measured — polling in place simply avoids it.)
//!
//! Invariants: the pool only ever runs file-system work that waits for nothing else, so a full
//! pool delays callers but cannot deadlock them, whatever runtime or blocking thread they are
//! on. A `get` returns its bytes already read (on the pool), not an open file: reading an open
//! file later would run on the caller's blocking pool again.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use tokio::runtime::{Handle, Runtime};

/// Blocking threads of the I/O runtime: enough to keep a local disk (or tmpfs) busy from two
/// cores — the writer reads at most 8 files and writes at most 8 at a time per table.
pub const IO_THREADS: usize = 16;

/// The process's I/O runtime (made on first use; never shut down). `None` when its threads
/// cannot be started: calls then run on the caller's runtime, as object_store would.
fn io() -> Option<&'static Handle> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(IO_THREADS)
                // threads that come and go leave their allocator pages behind: keep them
                .thread_keep_alive(Duration::from_secs(24 * 3600))
                .thread_name("cormorant-io")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .map(Runtime::handle)
}

/// `fut`, polled in the I/O runtime's context: the blocking tasks it starts (object_store's
/// local store starts one per call) run on that runtime's pool, and their completion wakes
/// the caller directly — no task of the I/O runtime in between, so no extra thread hop.
async fn on_io<T>(mut fut: BoxFuture<'_, T>) -> T {
    futures::future::poll_fn(move |cx| {
        let _io = io().map(Handle::enter);
        fut.as_mut().poll(cx)
    })
    .await
}

/// `stream`, polled in the I/O runtime's context (see [`on_io`]).
fn stream_on_io<T: 'static>(mut stream: BoxStream<'static, T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| {
        let _io = io().map(Handle::enter);
        stream.poll_next_unpin(cx)
    })
    .boxed()
}

/// A store whose every call does its blocking work on the I/O pool (see the module docs).
#[derive(Debug)]
pub struct PooledStore {
    inner: Arc<dyn ObjectStore>,
}

impl PooledStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for PooledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PooledStore({})", self.inner)
    }
}

/// A `get`'s result with its bytes read; a `head` reads none.
async fn read_all(result: GetResult, head: bool) -> object_store::Result<GetResult> {
    let (meta, range, attributes) = (result.meta.clone(), result.range.clone(), result.attributes.clone());
    let bytes = if head { Bytes::new() } else { result.bytes().await? };
    let once = futures::stream::once(async move { Ok(bytes) });
    Ok(GetResult {
        payload: GetResultPayload::Stream(once.boxed()),
        meta,
        range,
        attributes,
    })
}

#[async_trait]
impl ObjectStore for PooledStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        on_io(self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = on_io(self.inner.put_multipart_opts(location, opts)).await?;
        Ok(Box::new(PooledUpload { inner: upload }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let head = options.head;
        on_io(Box::pin(async move {
            read_all(self.inner.get_opts(location, options).await?, head).await
        }))
        .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        on_io(self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        stream_on_io(self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        stream_on_io(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        stream_on_io(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        on_io(self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        on_io(self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        on_io(self.inner.rename_opts(from, to, options)).await
    }
}

/// A multipart upload whose writes run on the I/O pool.
#[derive(Debug)]
struct PooledUpload {
    inner: Box<dyn MultipartUpload>,
}

#[async_trait]
impl MultipartUpload for PooledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // the inner future starts its blocking write when first polled
        Box::pin(on_io(self.inner.put_part(data)))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        on_io(self.inner.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        on_io(self.inner.abort()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    use super::*;

    /// An in-memory store that notes the thread its blocking work would run on.
    #[derive(Debug, Default)]
    struct Probe {
        inner: InMemory,
        threads: Mutex<Vec<String>>,
    }

    impl fmt::Display for Probe {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Probe")
        }
    }

    impl Probe {
        async fn note(&self) {
            let name = tokio::task::spawn_blocking(|| std::thread::current().name().map(str::to_string))
                .await
                .expect("blocking task");
            self.threads.lock().expect("lock").push(name.unwrap_or_default());
        }
    }

    #[async_trait]
    impl ObjectStore for Probe {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> object_store::Result<PutResult> {
            self.note().await;
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
            self.note().await;
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
            self.note().await;
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> object_store::Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    /// Threads of this process named like the pool's.
    fn pool_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|name| name.trim() == "cormorant-io")
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_work_runs_on_the_pool_whatever_the_callers_runtime() {
        let probe = Arc::new(Probe::default());
        let store = Arc::new(PooledStore::new(probe.clone()));
        let reads = (0..64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let p = Path::from(format!("f{i}"));
                store.put(&p, Bytes::from(vec![i as u8; 100]).into()).await?;
                let back = store.get(&p).await?.bytes().await?;
                assert_eq!(back.as_ref(), &[i as u8; 100][..]);
                store.list_with_delimiter(None).await.map(|_| ())
            })
        });
        for r in futures::future::join_all(reads).await {
            r.expect("task").expect("calls");
        }
        let threads = probe.threads.lock().expect("lock").clone();
        assert_eq!(threads.len(), 3 * 64);
        assert!(threads.iter().all(|t| t == "cormorant-io"), "{threads:?}");
        // every test of the crate shares the pool: it never holds more than its threads
        assert!(pool_threads() <= IO_THREADS + 1, "{} pool threads", pool_threads());
    }

    #[tokio::test]
    async fn a_local_store_behind_the_pool_keeps_its_meaning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalFileSystem::new_with_prefix(dir.path()).expect("local");
        let store = PooledStore::new(Arc::new(local));
        let (a, b) = (Path::from("t/a.bin"), Path::from("t/b.bin"));
        store
            .put(&a, Bytes::from_static(b"0123456789").into())
            .await
            .expect("put");

        let head = store.head(&a).await.expect("head");
        assert_eq!(head.size, 10);
        assert_eq!(store.get_range(&a, 2..5).await.expect("range").as_ref(), b"234");
        let ranges = store.get_ranges(&a, &[0..1, 8..10]).await.expect("ranges");
        assert_eq!(ranges, vec![Bytes::from_static(b"0"), Bytes::from_static(b"89")]);

        let mut upload = store.put_multipart(&b).await.expect("multipart");
        upload.put_part(Bytes::from_static(b"ab").into()).await.expect("part 1");
        upload.put_part(Bytes::from_static(b"cd").into()).await.expect("part 2");
        upload.complete().await.expect("complete");
        assert_eq!(
            store.get(&b).await.expect("get").bytes().await.expect("bytes").as_ref(),
            b"abcd"
        );

        let listed: Vec<_> = store
            .list(Some(&Path::from("t")))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .expect("list");
        assert_eq!(listed.len(), 2);
        store.rename(&b, &Path::from("t/c.bin")).await.expect("rename");
        store.delete(&a).await.expect("delete");
        assert!(matches!(store.get(&a).await, Err(object_store::Error::NotFound { .. })));
        assert!(matches!(
            store.head(&b).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }
}
