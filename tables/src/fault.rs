//! Fault injection for the lake's object store: failed calls, writes that happen but report a
//! failure, and latency.
//!
//! [`FaultyStore`] wraps the root store of a [`Lake`](crate::Lake) (see `Lake::with_faults`), so
//! everything the tables crate does — ingest, deletion vectors, commits, checkpoints,
//! compaction, vacuum and queries — goes through it. The seeded model tests switch faults on
//! around single operations; the worker takes a plan from `CORMORANT_FAULTS` for end-to-end
//! fault runs (never set in production).
//!
//! Invariants: a fault never corrupts an object — a write is either not done, or done in full
//! and reported failed (the ambiguous case a network timeout produces on S3: the caller cannot
//! tell, and must find out from the table); reads fail before reading anything.
//! object_store's own `ThrottledStore` covers latency but not errors, hence this wrapper.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};

/// How often what goes wrong; all zero is a transparent store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// Share of calls that fail (0.0..=1.0).
    pub error: f64,
    /// Of the failing writes (put, copy, rename), the share that is done before it fails.
    pub ambiguous: f64,
    /// Share of calls delayed by up to `max_latency`.
    pub slow: f64,
    pub max_latency: Duration,
}

impl FaultRates {
    /// Parses `error=0.05,ambiguous=0.5,slow=0.1,latency_ms=200` (every key optional). A
    /// four-key grammar read once from an environment variable does not warrant a parser crate.
    pub fn parse(spec: &str) -> Result<(Self, u64), String> {
        let mut rates = FaultRates::default();
        let mut seed = 1;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("fault spec item {item:?} is not key=value"))?;
            let number = |v: &str| {
                v.parse::<f64>()
                    .map_err(|_| format!("fault spec: {key}={v} is not a number"))
            };
            match key {
                "error" => rates.error = number(value)?,
                "ambiguous" => rates.ambiguous = number(value)?,
                "slow" => rates.slow = number(value)?,
                "latency_ms" => rates.max_latency = Duration::from_millis(number(value)? as u64),
                "seed" => seed = number(value)? as u64,
                _ => {
                    return Err(format!(
                        "fault spec: unknown key {key:?} (error, ambiguous, slow, latency_ms, seed)"
                    ));
                }
            }
        }
        Ok((rates, seed))
    }
}

/// The switchable fault plan shared by a store and the test that drives it.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rates: FaultRates,
    rng: SplitMix64,
    injected: u64,
    /// Calls of one kind that fail next, whatever the rates ([`Faults::fail_next`]).
    scripted: Option<(&'static str, u64)>,
}

/// What happens to one call.
enum Fate {
    Pass,
    Fail,
    /// Do the write, then report a failure.
    FailAfter,
}

impl Faults {
    pub fn new(seed: u64, rates: FaultRates) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                rates,
                rng: SplitMix64(seed),
                injected: 0,
                scripted: None,
            }),
        })
    }

    /// Replaces the rates (`FaultRates::default()` switches faults off).
    pub fn set(&self, rates: FaultRates) {
        self.lock().rates = rates;
    }

    /// Makes the next `n` calls of kind `op` (`get`, `list`, `put`, …) fail before doing
    /// anything, then lets them pass again: a transient failure at a chosen step, for tests
    /// that must tell what the caller does about one failed call.
    pub fn fail_next(&self, op: &'static str, n: u64) {
        self.lock().scripted = Some((op, n));
    }

    /// Errors injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // a panic elsewhere while holding this lock leaves plain numbers behind: still usable
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rolls the dice for one call: its delay and its fate.
    fn roll(&self, op: &str, write: bool) -> (Duration, Fate) {
        let mut guard = self.lock();
        let s = &mut *guard;
        if let Some((kind, n)) = &mut s.scripted
            && *kind == op
            && *n > 0
        {
            *n -= 1;
            s.injected += 1;
            return (Duration::ZERO, Fate::Fail);
        }
        let r = s.rates;
        let delay = if r.slow > 0.0 && s.uniform() < r.slow {
            r.max_latency.mul_f64(s.uniform())
        } else {
            Duration::ZERO
        };
        let fate = if r.error > 0.0 && s.uniform() < r.error {
            s.injected += 1;
            if write && s.uniform() < r.ambiguous {
                Fate::FailAfter
            } else {
                Fate::Fail
            }
        } else {
            Fate::Pass
        };
        (delay, fate)
    }
}

impl State {
    fn uniform(&mut self) -> f64 {
        self.rng.uniform()
    }
}

/// splitmix64: the seeded generator of fault plans and of the randomized tests (model, chaos,
/// benches), so one seed means one stream everywhere. Hand-rolled (a few lines) because a
/// seed must replay the same sequence for good — the regression files keep seeds — which
/// `rand`'s small generators do not promise across versions. Every seed, 0 included, gives a
/// good stream.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `p` times in a hundred.
    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// Uniform in `0.0..1.0`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn injected(op: &str, location: &Path, after: bool) -> object_store::Error {
    let when = if after {
        "after the write was done"
    } else {
        "before anything was done"
    };
    object_store::Error::Generic {
        store: "fault-injection",
        source: format!("injected {op} failure on {location} ({when})").into(),
    }
}

/// An object store that fails and delays calls as its [`Faults`] say.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }

    /// Waits the call's delay; `Err` when the call must fail before it is done, `Ok(true)`
    /// when it must be done and then reported failed.
    async fn enter(&self, op: &str, location: &Path, write: bool) -> object_store::Result<bool> {
        let (delay, fate) = self.faults.roll(op, write);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fate {
            Fate::Pass => Ok(false),
            Fate::Fail => Err(injected(op, location, false)),
            Fate::FailAfter => Ok(true),
        }
    }

    /// The result of a write that was done: the store's own error, or the injected one.
    fn leave<T>(op: &str, location: &Path, fail_after: bool, r: object_store::Result<T>) -> object_store::Result<T> {
        match r {
            Ok(_) if fail_after => Err(injected(op, location, true)),
            other => other,
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let after = self.enter("put", location, true).await?;
        Self::leave(
            "put",
            location,
            after,
            self.inner.put_opts(location, payload, opts).await,
        )
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // an upload is only visible once completed: failing at the start is the only fault
        // that cannot leave half an object behind, and the one S3 produces most
        self.enter("multipart put", location, false).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.enter("get", location, false).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.enter("get ranges", location, false).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // deletes are only ever clean-up here (orphans, vacuum): they pass untouched
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let at = prefix.cloned().unwrap_or_default();
        match self.faults.roll("list", false).1 {
            Fate::Pass => self.inner.list(prefix),
            _ => futures::stream::once(async move { Err(injected("list", &at, false)) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let at = prefix.cloned().unwrap_or_default();
        self.enter("list", &at, false).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        let after = self.enter("copy", to, true).await?;
        Self::leave("copy", to, after, self.inner.copy_opts(from, to, options).await)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        let after = self.enter("rename", to, true).await?;
        Self::leave("rename", to, after, self.inner.rename_opts(from, to, options).await)
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    fn store(rates: FaultRates) -> (FaultyStore, Arc<Faults>) {
        let faults = Faults::new(7, rates);
        (FaultyStore::new(Arc::new(InMemory::new()), faults.clone()), faults)
    }

    #[tokio::test]
    async fn off_is_transparent() {
        let (s, faults) = store(FaultRates::default());
        let p = Path::from("a/b");
        s.put(&p, Bytes::from_static(b"x").into()).await.expect("put");
        assert_eq!(
            s.get(&p).await.expect("get").bytes().await.expect("bytes").as_ref(),
            b"x"
        );
        assert_eq!(faults.injected(), 0);
    }

    #[tokio::test]
    async fn an_ambiguous_put_is_done_and_reported_failed() {
        let (s, faults) = store(FaultRates {
            error: 1.0,
            ambiguous: 1.0,
            ..FaultRates::default()
        });
        let p = Path::from("commit.json");
        let err = s.put(&p, Bytes::from_static(b"x").into()).await.expect_err("injected");
        assert!(err.to_string().contains("after the write was done"), "{err}");
        faults.set(FaultRates::default());
        assert!(s.get(&p).await.is_ok(), "the write was done");
    }

    #[tokio::test]
    async fn a_plain_failure_does_nothing() {
        let (s, faults) = store(FaultRates {
            error: 1.0,
            ..FaultRates::default()
        });
        let p = Path::from("x");
        assert!(s.put(&p, Bytes::from_static(b"x").into()).await.is_err());
        assert!(s.list(None).next().await.expect("one item").is_err());
        faults.set(FaultRates::default());
        assert!(matches!(s.get(&p).await, Err(object_store::Error::NotFound { .. })));
        assert_eq!(faults.injected(), 2);
    }

    #[tokio::test]
    async fn scripted_failures_hit_only_their_kind_of_call_and_run_out() {
        let (s, faults) = store(FaultRates::default());
        let p = Path::from("x");
        s.put(&p, Bytes::from_static(b"x").into()).await.expect("put");
        faults.fail_next("get", 1);
        assert!(s.list(None).next().await.expect("one item").is_ok(), "a list passes");
        assert!(s.get(&p).await.is_err(), "the next get fails");
        assert!(s.get(&p).await.is_ok(), "the one after passes");
        assert_eq!(faults.injected(), 1);
    }

    #[test]
    fn spec_parses_and_rejects_with_a_hint() {
        let (r, seed) = FaultRates::parse("error=0.1, ambiguous=0.5,slow=0.2,latency_ms=300,seed=9").expect("valid");
        assert_eq!(
            (r.error, r.ambiguous, r.slow, r.max_latency, seed),
            (0.1, 0.5, 0.2, Duration::from_millis(300), 9)
        );
        assert!(
            FaultRates::parse("eror=1")
                .expect_err("typo")
                .contains("error, ambiguous")
        );
        assert!(FaultRates::parse("error").is_err());
    }
}
