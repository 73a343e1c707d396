//! Randomized corrupt frames: the real capture's records, mutated (bit flips, truncation,
//! garbage, spliced payloads, absurd varints, other schemas' ids), pushed through the decoder
//! the way the pipeline does. No case may panic or allocate without bound; every push is
//! `Ok` or an error the dead-letter table can hold; every batch is valid Arrow (full
//! validation, UTF-8 included) with one row per decoded change and its offsets moved past
//! every pushed record.
//!
//! `CORMORANT_CORRUPT_CASES` (default 100,000, the CI run) and `CORMORANT_CORRUPT_SEED`
//! (default 1); run a million outside CI with `scripts/fuzz-decoder`.

use std::panic::AssertUnwindSafe;

use super::records::{Event, events};
use super::*;

/// Cases pushed into one decoder before it is finished and checked.
const PER_BATCH: usize = 400;

/// splitmix64, the generator of `tables::fault::SplitMix64` (this crate never depends on the
/// tables side, so it keeps its own copy of these few lines).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// One mutation of `bytes` (a framed record); `other` is another record to splice from.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, other: &[u8], ids: &[u32]) {
    // most mutations hit the Avro payload, after the 5-byte frame header
    let lo = if bytes.len() > 5 && rng.below(10) > 0 { 5 } else { 0 };
    let at = |rng: &mut Rng, len: usize| lo + rng.below(len.saturating_sub(lo).max(1));
    match rng.below(10) {
        0 => {
            for _ in 0..=rng.below(3) {
                let i = at(rng, bytes.len());
                if i < bytes.len() {
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => {
            let i = at(rng, bytes.len());
            if i < bytes.len() {
                bytes[i] = [0x00, 0x7f, 0x80, 0xff, rng.byte()][rng.below(5)];
            }
        }
        2 => bytes.truncate(at(rng, bytes.len())),
        3 => bytes.extend((0..=rng.below(16)).map(|_| rng.byte())),
        4 => {
            let i = at(rng, bytes.len()).min(bytes.len());
            let junk: Vec<u8> = (0..=rng.below(8)).map(|_| rng.byte()).collect();
            bytes.splice(i..i, junk);
        }
        5 => {
            let i = at(rng, bytes.len()).min(bytes.len());
            let j = (i + rng.below(32)).min(bytes.len());
            bytes.drain(i..j);
        }
        6 => {
            // a varint (length, count, union index) made huge or negative
            let i = at(rng, bytes.len()).min(bytes.len());
            let huge: &[u8] = [
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..],
                &[0xfe, 0xff, 0xff, 0xff, 0x0f][..],
                &[0x01][..],
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..],
            ][rng.below(4)];
            let end = (i + huge.len()).min(bytes.len());
            bytes.splice(i..end, huge.iter().copied());
        }
        7 => {
            // this header, another record's payload (a schema mismatch)
            if bytes.len() >= 5 && other.len() >= 5 {
                bytes.truncate(5);
                bytes.extend_from_slice(&other[5..]);
            }
        }
        8 => {
            // another schema's id: a real schema that does not describe these bytes
            if bytes.len() >= 5 && !ids.is_empty() {
                let id = ids[rng.below(ids.len())];
                bytes[1..5].copy_from_slice(&id.to_be_bytes());
            }
        }
        _ => *bytes = (0..rng.below(64)).map(|_| rng.byte()).collect(),
    }
}

/// Pushes one possibly corrupt record like the pipeline: a frame that does not split, or a
/// schema id the registry does not know, is a dead letter before the decoder sees it (`None`);
/// else whether the decoder accepted it.
fn push_raw(dec: &mut TableDecoder, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Option<bool> {
    let reg = registry();
    fn split(b: &[u8]) -> Option<(u32, &[u8])> {
        frame::split(b).ok().filter(|(id, _)| registry().plans.contains_key(id))
    }
    let key = match key.map(split) {
        Some(None) => return None,
        k => k.flatten(),
    };
    let value = match value.map(|v| split(v).filter(|(id, _)| reg.envs.contains_key(id))) {
        Some(None) => return None,
        v => v.flatten(),
    };
    dec.push(
        Position { partition: 0, offset },
        key.map(|(id, payload)| (id, &reg.plans[&id], payload)),
        value.map(|(id, payload)| (id, reg.envs[&id].clone(), payload)),
    )
    .is_ok()
    .into()
}

/// The checks on one finished batch whose last record the decoder saw is `last`.
fn check(batch: Option<ChangeBatch>, last: Option<i64>) -> Result<(), String> {
    let (Some(batch), Some(last)) = (batch, last) else {
        return if last.is_none() {
            Ok(())
        } else {
            Err("no batch after pushes".into())
        };
    };
    for (i, col) in batch.data.columns().iter().enumerate() {
        col.to_data()
            .validate_full()
            .map_err(|e| format!("column {i} is invalid Arrow: {e}"))?;
    }
    let rows = batch.data.num_rows();
    if batch.kinds.len() != rows || batch.positions.len() != rows {
        return Err(format!(
            "{rows} rows, {} kinds, {} positions",
            batch.kinds.len(),
            batch.positions.len()
        ));
    }
    match batch.offsets.as_slice() {
        [o] if o.next_offset == last + 1 => Ok(()),
        other => Err(format!("offsets {other:?}, expected next offset {}", last + 1)),
    }
}

/// One decoder's worth of cases over `table`'s events: how many were accepted (the rest are
/// dead letters); `Err` names the failing case.
fn run_batch(rng: &mut Rng, table: &[&Event], ids: &[u32], first_case: u64) -> Result<u64, String> {
    let mut dec = TableDecoder::new(StreamId::new("g", "t"));
    let mut offset = 0;
    let mut accepted = 0;
    let mut last = None;
    for case in 0..PER_BATCH {
        let e = table[rng.below(table.len())];
        let other = table[rng.below(table.len())];
        let (mut key, mut value) = (e.key.clone(), e.value.clone());
        let target = if value.is_some() && (key.is_none() || rng.below(10) < 7) {
            value.as_mut()
        } else {
            key.as_mut()
        };
        if let Some(bytes) = target {
            let splice = other.value.as_deref().unwrap_or_default();
            for _ in 0..=rng.below(3) {
                mutate(rng, bytes, splice, ids);
            }
        }
        offset += 1 + rng.below(3) as i64;
        let pushed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            push_raw(&mut dec, offset, key.as_deref(), value.as_deref())
        }));
        match pushed {
            Ok(None) => {}
            Ok(Some(ok)) => {
                accepted += u64::from(ok);
                last = Some(offset);
            }
            Err(p) => {
                let text = p.downcast_ref::<String>().cloned().unwrap_or_default();
                return Err(format!(
                    "case {} panicked: {text}\n  key {:02x?}\n  value {:02x?}",
                    first_case + case as u64,
                    key,
                    value
                ));
            }
        }
    }
    let finished = std::panic::catch_unwind(AssertUnwindSafe(|| dec.finish()))
        .map_err(|_| format!("finish panicked after cases from {first_case}"))?
        .map_err(|e| format!("finish failed after cases from {first_case}: {e}"))?;
    check(finished, last).map_err(|e| format!("cases from {first_case}: {e}"))?;
    Ok(accepted)
}

#[test]
fn corrupt_frames_never_panic_and_leave_valid_batches() {
    let cases = std::env::var("CORMORANT_CORRUPT_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(100_000);
    let seed = std::env::var("CORMORANT_CORRUPT_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    let all = events();
    let mut topics: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &all {
        topics.entry(e.topic.as_str()).or_default().push(e);
    }
    let tables: Vec<Vec<&Event>> = topics.into_values().collect();
    let mut ids: Vec<u32> = registry().plans.keys().copied().collect();
    ids.sort_unstable();
    ids.push(0x7fff_ffff); // and an id no registry knows
    let mut rng = Rng(seed);
    let started = std::time::Instant::now();
    let (mut done, mut accepted) = (0, 0);
    while done < cases {
        let table = &tables[rng.below(tables.len())];
        match run_batch(&mut rng, table, &ids, done) {
            Ok(n) => accepted += n,
            Err(e) => panic!("seed {seed}: {e}"),
        }
        done += PER_BATCH as u64;
    }
    eprintln!(
        "{done} corrupt-frame cases (seed {seed}) in {:.1?}: {accepted} decoded, {} dead letters, no panic, every batch valid",
        started.elapsed(),
        done - accepted
    );
}
