//! Batches on the consumer thread: how they are cut ([`BatchLimits`]), the records' bytes
//! ([`Arena`]), and the queue of cut batches waiting for the pipeline ([`Pending`]).
//!
//! Invariants: a batch's `bytes` is the sum of its records' key and value bytes; queued
//! batches keep the order records were polled in, also when merged; a record's bytes stay
//! valid (a shared slice of an arena block) until the record itself is dropped.

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::debezium::RawRecord;

/// How batches are cut: whichever limit is reached first.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
}

/// Records handed over together.
#[derive(Debug, Default)]
pub struct RawBatch {
    pub records: Vec<RawRecord>,
    /// Key + value bytes.
    pub bytes: usize,
}

impl RawBatch {
    pub(super) fn push(&mut self, r: RawRecord) {
        self.bytes += r.bytes();
        self.records.push(r);
    }

    pub(super) fn full(&self, limits: &BatchLimits) -> bool {
        self.records.len() >= limits.max_records || self.bytes >= limits.max_bytes
    }

    pub(super) fn retain_partitions(&mut self, revoked: &HashSet<(String, i32)>) {
        self.records
            .retain(|r| !revoked.contains(&(r.topic.to_string(), r.partition)));
        self.bytes = self.records.iter().map(|r| r.bytes()).sum();
    }
}

/// The consumer thread's copy of record keys and values: blocks of [`Arena::BLOCK`] bytes,
/// each record a shared slice of one. Per-record vectors cost two allocations on this thread
/// and two frees on the decoding threads — in mimalloc a free from another thread is queued
/// back to the allocating one, and a profile had this thread's malloc searching for free
/// pages at 2.7% of the worker's samples. A block lives until its last record is dropped.
///
/// A spent block is kept and filled again once its records are all gone: a fresh block's pages
/// are faulted in by the kernel as they are first written (the worker's allocator gives freed
/// memory back at once), and `perf` of the insert stream had those faults at 3% of the
/// worker's samples, under this thread's copies. The arena keeps as many blocks as the records
/// in flight can fill ([`Arena::for_limits`]): with only 32 kept, the upsert stream's records
/// queued, in the channel and being decoded (several batches of up to `batch_max_bytes` each)
/// outgrew them, and a profile still had 1.5–2.2% of the worker's samples faulting in fresh
/// blocks. Once the consumer has been idle for a while the spent blocks are let go
/// ([`Arena::trim`]), so a quiet worker does not hold its busiest moment's memory.
pub(super) struct Arena {
    block: BytesMut,
    spent: std::collections::VecDeque<BytesMut>,
    /// At most this many spent blocks are kept.
    keep: usize,
}

impl Default for Arena {
    fn default() -> Self {
        Self {
            block: BytesMut::new(),
            spent: Default::default(),
            keep: Self::MIN_KEEP,
        }
    }
}

impl Arena {
    const BLOCK: usize = 1 << 20;
    /// The fewest spent blocks kept, whatever the limits (and all an arena without them keeps).
    const MIN_KEEP: usize = 32;

    /// An arena that can keep a block for every record `limits` lets be in flight: batches of
    /// up to `max_bytes` each — the open one and the queued ones (together up to about twice
    /// `max_bytes`), one in the pipeline's channel, and one being decoded per core.
    pub(super) fn for_limits(limits: &BatchLimits) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let blocks = ((3 + cores) * limits.max_bytes).div_ceil(Self::BLOCK);
        Self {
            keep: blocks.clamp(Self::MIN_KEEP, 1024),
            ..Self::default()
        }
    }

    pub(super) fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if self.block.capacity() - self.block.len() < bytes.len() {
            self.next_block(Self::BLOCK.max(bytes.len()));
        }
        self.block.extend_from_slice(bytes);
        self.block.split().freeze()
    }

    /// Lets go of the spent blocks (those records still hold are freed with their records).
    pub(super) fn trim(&mut self) {
        self.spent.clear();
    }

    /// Makes a block of at least `size` bytes current: a spent one nothing refers to any more
    /// (`try_reclaim` succeeds only then), or a new one.
    fn next_block(&mut self, size: usize) {
        let reusable = self.spent.iter_mut().position(|b| b.try_reclaim(size));
        let next = match reusable.and_then(|i| self.spent.remove(i)) {
            Some(block) => block,
            None => BytesMut::with_capacity(size),
        };
        // a full block's handle is an empty view of its tail, which still owns the block
        self.spent.push_back(std::mem::replace(&mut self.block, next));
        if self.spent.len() > self.keep {
            // let go of a block records still hold (it is freed with them) rather than of one
            // ready for reuse; `try_reclaim` readies the free ones it meets
            let held = self.spent.iter_mut().position(|b| !b.try_reclaim(Self::BLOCK));
            self.spent.remove(held.unwrap_or(0));
        }
    }
}

/// Records read but not yet handed to the pipeline.
///
/// Cut batches queue here while the pipeline is busy, so the consumer keeps fetching instead of
/// pausing at every batch: a pause makes librdkafka drop what it prefetched and fetch it again
/// on resume, which with small batches cost a broker round trip per batch. The partitions are
/// paused only once the queue holds [`BatchLimits::max_bytes`] (memory stays bounded).
#[derive(Default)]
pub(super) struct Pending {
    pub(super) open: RawBatch,
    pub(super) ready: std::collections::VecDeque<RawBatch>,
}

impl Pending {
    pub(super) fn retain_partitions(&mut self, revoked: &HashSet<(String, i32)>) {
        self.open.retain_partitions(revoked);
        for b in &mut self.ready {
            b.retain_partitions(revoked);
        }
        self.ready.retain(|b| !b.records.is_empty());
    }

    /// Queues a cut batch, merged into the last queued one while both fit the limits: a
    /// pipeline that is behind then takes full batches instead of one linger's worth at a
    /// time (group commit). Each commit costs about the same whatever its size — one file per
    /// source partition, a log entry, index patches — so with 320 partitions a backlog cut
    /// by linger (~8k records) spent most of its CPU on per-commit work.
    pub(super) fn enqueue(&mut self, batch: RawBatch, limits: &BatchLimits) {
        match self.ready.back_mut() {
            Some(last)
                if last.records.len() + batch.records.len() <= limits.max_records
                    && last.bytes + batch.bytes <= limits.max_bytes =>
            {
                last.bytes += batch.bytes;
                last.records.extend(batch.records);
            }
            _ => self.ready.push_back(batch),
        }
    }

    /// Whether the queue is long enough to stop fetching.
    pub(super) fn backlog_full(&self, limits: &BatchLimits) -> bool {
        let bytes: usize = self.ready.iter().map(|b| b.bytes).sum();
        !self.ready.is_empty() && (bytes + self.open.bytes >= limits.max_bytes || self.ready.len() >= MAX_READY)
    }
}

/// Most cut batches queued on the consumer thread.
pub(super) const MAX_READY: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(offsets: std::ops::Range<i64>) -> RawBatch {
        let mut b = RawBatch::default();
        for offset in offsets {
            b.push(RawRecord {
                topic: "t".into(),
                partition: 0,
                offset,
                key: Some(vec![0; 4].into()),
                value: Some(vec![0; 6].into()),
                timestamp_ms: None,
            });
        }
        b
    }

    #[test]
    fn arena_slices_keep_every_record_whole_across_blocks() {
        let mut arena = Arena::default();
        let records: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| (0..(i * 7919 % 2000)).map(|j| (i ^ j) as u8).collect())
            .chain([vec![9; Arena::BLOCK + 1], Vec::new(), vec![1, 2, 3]])
            .collect();
        let copies: Vec<Bytes> = records.iter().map(|r| arena.copy(r)).collect();
        for (r, c) in records.iter().zip(&copies) {
            assert_eq!(&r[..], &c[..]);
        }
        // later copies never write over earlier slices, even once earlier blocks are dropped
        let kept = copies[2999].clone();
        drop(copies);
        let again = arena.copy(&[7; 100]);
        assert_eq!(&kept[..], &records[2999][..]);
        assert_eq!(&again[..], &[7; 100]);
    }

    /// A block whose records are all dropped is filled again instead of a new allocation; one
    /// still referenced never is.
    #[test]
    fn arena_reuses_a_block_only_once_its_records_are_gone() {
        let mut arena = Arena::default();
        let first = arena.copy(&[1; 1000]);
        let first_at = first.as_ptr();
        let held = arena.copy(&[2; Arena::BLOCK - 1000]); // fills the first block
        drop(first);
        // a new block: the first one is still referenced by `held`
        let second = arena.copy(&[3; 10]);
        assert_ne!(second.as_ptr(), first_at);
        drop(held);
        let _ = arena.copy(&[4; Arena::BLOCK - 10]); // fills the second block
        let third = arena.copy(&[5; 10]);
        assert_eq!(
            third.as_ptr(),
            first_at,
            "the first block is reused once nothing refers to it"
        );
        assert_eq!(&third[..], &[5; 10]);
        assert_eq!(&second[..], &[3; 10]);
        assert!(arena.spent.len() <= arena.keep);
    }

    /// Every block the records in flight filled is filled again once they are gone (the
    /// default 32 would have let 68 of these 100 go and faulted in new ones), and an idle
    /// consumer lets them all go.
    #[test]
    fn an_arena_reuses_as_many_blocks_as_records_in_flight_fill_and_trims_them() {
        let limits = BatchLimits {
            max_records: 1_000_000,
            max_bytes: 32 << 20,
            linger: Duration::from_millis(1),
        };
        let mut arena = Arena::for_limits(&limits);
        let (ones, twos) = (vec![1u8; Arena::BLOCK], vec![2u8; Arena::BLOCK]);
        let held: Vec<Bytes> = (0..100).map(|_| arena.copy(&ones)).collect();
        let blocks: HashSet<usize> = held.iter().map(|b| b.as_ptr() as usize).collect();
        drop(held);
        let again: Vec<Bytes> = (0..99).map(|_| arena.copy(&twos)).collect();
        assert!(again.iter().all(|b| blocks.contains(&(b.as_ptr() as usize))));
        assert!(again.iter().all(|b| b[..] == twos[..]));
        drop(again);
        arena.trim();
        assert!(arena.spent.is_empty());
        let after = arena.copy(&[3; 10]);
        assert_eq!(&after[..], &[3; 10]);
    }

    #[test]
    fn queued_batches_merge_up_to_the_limits_in_order() {
        let limits = BatchLimits {
            max_records: 10,
            max_bytes: 1000,
            linger: Duration::from_millis(1),
        };
        let mut pending = Pending::default();
        pending.enqueue(batch(0..4), &limits);
        pending.enqueue(batch(4..8), &limits);
        pending.enqueue(batch(8..12), &limits);
        let sizes: Vec<usize> = pending.ready.iter().map(|b| b.records.len()).collect();
        assert_eq!(sizes, vec![8, 4]);
        assert_eq!(pending.ready[0].bytes, 80);
        let offsets: Vec<i64> = pending
            .ready
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.offset))
            .collect();
        assert_eq!(offsets, (0..12).collect::<Vec<_>>());

        let tight = BatchLimits {
            max_bytes: 50,
            ..limits
        };
        let mut pending = Pending::default();
        pending.enqueue(batch(0..4), &tight);
        pending.enqueue(batch(4..8), &tight);
        assert_eq!(pending.ready.len(), 2, "80 bytes do not fit a 50-byte limit");
    }
}
