//! Shared by the benchmarks: a generator of realistic Debezium change streams, encoded with the
//! fixture's REAL registry schemas (Debezium 3.6.3 `dbz.public.customers` envelope v2, key
//! `{id: int}`) in Confluent wire format, plus small measuring helpers.
//!
//! Values look like the PostgreSQL workload's: emails, names, nullable notes, decimal balances
//! (Debezium's bytes decimals), zoned timestamps as text, dates, JSON profiles, UUIDs; `source`
//! carries an LSN, a txId and `ts_ms` (set when the record is made, for freshness).
//!
//! Streams:
//! - `insert`: N inserts (`op = c`) of distinct keys — an initial load / append stream;
//! - `upsert`: over K keys, each change is an update (70 %), a delete followed by its
//!   tombstone (10 %) or an insert of a new key (20 %); the first K changes create the keys.

#![allow(dead_code)] // each bench binary uses its own part of this module

use std::collections::HashMap;
use std::path::Path;

use apache_avro::Schema;
use apache_avro::types::Value;

/// The fixture's schemas: (subject, schema JSON) of the customers key and value (v2).
pub fn schemas() -> anyhow::Result<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debezium/schemas.json");
    let all: HashMap<String, Vec<serde_json::Value>> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let latest = |s: &str| -> anyhow::Result<String> {
        all.get(s)
            .and_then(|v| v.last())
            .and_then(|v| v["schema"].as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("{s} missing from schemas.json"))
    };
    Ok((
        latest("dbz.public.customers-key")?,
        latest("dbz.public.customers-value")?,
    ))
}

/// Registers the customers key and value schemas for `topic`; returns their ids.
pub async fn register(registry: &str, topic: &str) -> anyhow::Result<(u32, u32)> {
    use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
    use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
    let (key, value) = schemas()?;
    let settings = SrSettings::new_builder(registry.to_string()).no_proxy().build()?;
    let k = post_schema(
        &settings,
        format!("{topic}-key"),
        SuppliedSchema::new(None, SchemaType::Avro, key),
    )
    .await?;
    let v = post_schema(
        &settings,
        format!("{topic}-value"),
        SuppliedSchema::new(None, SchemaType::Avro, value),
    )
    .await?;
    Ok((k.id, v.id))
}

/// What a stream is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// distinct keys, inserts only
    Insert,
    /// 70/10/20 update/delete/insert over `keys` keys
    Upsert { keys: u64 },
    /// A table of `keys` rows in a steady state (a long run): after the first `keys` inserts,
    /// 80/10/10 update/delete/re-insert of a deleted key — the key space never grows.
    Steady { keys: u64 },
}

/// One record: key and value bytes (Confluent framed; `None` value: tombstone).
#[derive(Clone, Debug)]
pub struct Rec {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

pub use tables::fault::SplitMix64 as Rng;

const NAMES: [&str; 12] = [
    "Ada Lovelace",
    "Grace Hopper",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Ken Thompson",
    "Frances Allen",
    "Donald Knuth",
    "Margaret Hamilton",
    "Niklaus Wirth",
    "Radia Perlman",
    "Leslie Lamport",
    "Jean Sammet",
];
const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];

/// Generates a stream; `ts_ms()` gives `source.ts_ms` of each record (the wall clock for
/// freshness runs, a fixed clock otherwise).
pub struct Generator {
    key_schema: Schema,
    value_schema: Schema,
    key_id: u32,
    value_id: u32,
    shape: Shape,
    rng: Rng,
    /// keys that exist now (upsert streams), and the next new key
    live: Vec<i32>,
    /// deleted keys a steady stream inserts again
    dead: Vec<i32>,
    next_key: i32,
    lsn: i64,
    /// pending tombstone after a delete
    tombstone: Option<Vec<u8>>,
    made: u64,
}

impl Generator {
    pub fn new(shape: Shape, key_id: u32, value_id: u32, seed: u64) -> anyhow::Result<Self> {
        let (key, value) = schemas()?;
        Ok(Self {
            key_schema: Schema::parse_str(&key)?,
            value_schema: Schema::parse_str(&value)?,
            key_id,
            value_id,
            shape,
            rng: Rng(seed),
            live: Vec::new(),
            dead: Vec::new(),
            next_key: 1,
            lsn: 30_000_000,
            tombstone: None,
            made: 0,
        })
    }

    fn key(&self, id: i32) -> anyhow::Result<Vec<u8>> {
        let v = Value::Record(vec![("id".into(), Value::Int(id))]);
        Ok(connectors::frame::frame(
            self.key_id,
            &apache_avro::writer::datum::GenericDatumWriter::builder(&self.key_schema)
                .build()?
                .write_value_to_vec(v)?,
        ))
    }

    fn row(&mut self, id: i32, deleted_placeholder: bool) -> Value {
        let r = &mut self.rng;
        let cents = r.below(10_000_000) as i64 - 100_000;
        let balance = if deleted_placeholder { 0 } else { cents };
        let opt = |v: Value| Value::Union(1, Box::new(v));
        let null = Value::Union(0, Box::new(Value::Null));
        let notes = if r.below(3) == 0 {
            null.clone()
        } else {
            opt(Value::String(format!(
                "customer since {} — prefers email; note {}",
                2000 + r.below(24),
                r.next_u64() % 100_000
            )))
        };
        let profile = if r.below(4) == 0 {
            null.clone()
        } else {
            opt(Value::String(format!(
                "{{\"newsletter\": {}, \"score\": {}, \"tags\": [\"t{}\", \"t{}\"]}}",
                r.below(2) == 0,
                r.below(1000),
                r.below(50),
                r.below(50)
            )))
        };
        let tier = if r.below(2) == 0 {
            null.clone()
        } else {
            opt(Value::String(TIERS[r.below(4) as usize].into()))
        };
        let name = NAMES[r.below(NAMES.len() as u64) as usize];
        Value::Record(vec![
            ("id".into(), Value::Int(id)),
            (
                "email".into(),
                Value::String(format!("user{id}.{}@example.com", r.below(100))),
            ),
            ("full_name".into(), Value::String(name.into())),
            ("notes".into(), notes),
            ("is_active".into(), Value::Boolean(r.below(10) != 0)),
            (
                "balance".into(),
                Value::Decimal(apache_avro::Decimal::from(decimal_bytes(balance))),
            ),
            (
                "created_at".into(),
                Value::String(format!(
                    "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                    15 + r.below(10),
                    1 + r.below(12),
                    1 + r.below(28),
                    r.below(24),
                    r.below(60),
                    r.below(60),
                    r.below(1_000_000)
                )),
            ),
            ("birth_date".into(), opt(Value::Int(-3650 + r.below(15_000) as i32))),
            ("profile".into(), profile),
            (
                "external_id".into(),
                Value::String(uuid::Uuid::from_u64_pair(r.next_u64(), r.next_u64()).to_string()),
            ),
            ("loyalty_tier".into(), tier),
        ])
    }

    fn envelope(&mut self, op: &str, id: i32, ts_ms: i64) -> anyhow::Result<Vec<u8>> {
        self.lsn += 1 + self.rng.below(200) as i64;
        let null = Value::Union(0, Box::new(Value::Null));
        let opt = |v: Value| Value::Union(1, Box::new(v));
        let (before, after) = if op == "d" {
            (opt(self.row(id, true)), null.clone())
        } else {
            (null.clone(), opt(self.row(id, false)))
        };
        let source = Value::Record(vec![
            ("version".into(), Value::String("3.6.3.Final".into())),
            ("connector".into(), Value::String("postgresql".into())),
            ("name".into(), Value::String("dbz".into())),
            ("ts_ms".into(), Value::Long(ts_ms)),
            (
                "snapshot".into(),
                Value::Union(0, Box::new(Value::String("false".into()))),
            ),
            ("db".into(), Value::String("inventory".into())),
            (
                "sequence".into(),
                opt(Value::String(format!("[\"{}\",\"{}\"]", self.lsn - 8, self.lsn))),
            ),
            ("ts_us".into(), opt(Value::Long(ts_ms * 1000))),
            ("ts_ns".into(), opt(Value::Long(ts_ms * 1_000_000))),
            ("schema".into(), Value::String("public".into())),
            ("table".into(), Value::String("customers".into())),
            ("txId".into(), opt(Value::Long(800 + self.lsn / 100))),
            ("lsn".into(), opt(Value::Long(self.lsn))),
            ("xmin".into(), null.clone()),
            ("origin".into(), null.clone()),
            ("origin_lsn".into(), null.clone()),
        ]);
        let v = Value::Record(vec![
            ("before".into(), before),
            ("after".into(), after),
            ("source".into(), source),
            ("transaction".into(), null.clone()),
            ("op".into(), Value::String(op.into())),
            ("ts_ms".into(), opt(Value::Long(ts_ms + 3))),
            ("ts_us".into(), opt(Value::Long((ts_ms + 3) * 1000))),
            ("ts_ns".into(), opt(Value::Long((ts_ms + 3) * 1_000_000))),
        ]);
        Ok(connectors::frame::frame(
            self.value_id,
            &apache_avro::writer::datum::GenericDatumWriter::builder(&self.value_schema)
                .build()?
                .write_value_to_vec(v)?,
        ))
    }

    /// Starts new keys at `first` (a second stream whose keys never meet this one's, as keys
    /// of different Kafka partitions never do).
    pub fn with_first_key(mut self, first: i32) -> Self {
        self.next_key = first;
        self
    }

    /// The next record, with `source.ts_ms = ts_ms`.
    pub fn next_record(&mut self, ts_ms: i64) -> anyhow::Result<Rec> {
        self.made += 1;
        if let Some(key) = self.tombstone.take() {
            return Ok(Rec { key, value: None });
        }
        let (op, id) = match self.shape {
            Shape::Insert => ("c", self.new_key()),
            Shape::Upsert { keys } if (self.live.len() as u64) < keys => ("c", self.new_key()),
            Shape::Upsert { .. } => match self.rng.below(100) {
                0..70 => ("u", self.live[self.rng.below(self.live.len() as u64) as usize]),
                70..80 => {
                    let i = self.rng.below(self.live.len() as u64) as usize;
                    ("d", self.live.swap_remove(i))
                }
                _ => ("c", self.new_key()),
            },
            Shape::Steady { keys } if (self.live.len() + self.dead.len()) as u64 >= keys => match self.rng.below(100) {
                0..80 => ("u", self.live[self.rng.below(self.live.len() as u64) as usize]),
                80..90 => {
                    let i = self.rng.below(self.live.len() as u64) as usize;
                    let id = self.live.swap_remove(i);
                    self.dead.push(id);
                    ("d", id)
                }
                _ => match self.dead.pop() {
                    Some(id) => {
                        self.live.push(id);
                        ("c", id)
                    }
                    None => ("u", self.live[self.rng.below(self.live.len() as u64) as usize]),
                },
            },
            Shape::Steady { .. } => ("c", self.new_key()),
        };
        let key = self.key(id)?;
        let value = self.envelope(op, id, ts_ms)?;
        if op == "d" {
            self.tombstone = Some(key.clone());
        }
        Ok(Rec {
            key,
            value: Some(value),
        })
    }

    fn new_key(&mut self) -> i32 {
        let id = self.next_key;
        self.next_key += 1;
        if matches!(self.shape, Shape::Upsert { .. } | Shape::Steady { .. }) {
            self.live.push(id);
        }
        id
    }
}

/// Big-endian two's-complement minimal bytes of `v` (a Debezium bytes decimal).
fn decimal_bytes(v: i64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 7 && ((b[start] == 0 && b[start + 1] & 0x80 == 0) || (b[start] == 0xff && b[start + 1] & 0x80 != 0)) {
        start += 1;
    }
    b[start..].to_vec()
}

/// Kafka's Java default partitioner: murmur2 of the key bytes, positive, modulo partitions.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let seed: u32 = 0x9747_b28c;
    let (m, r) = (0x5bd1_e995u32, 24);
    let mut h: u32 = seed ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

/// This process's CPU seconds (user + system) so far.
pub fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer it is given
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A setting from the environment, or `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `kB` field of `/proc/self/status`, in bytes (0 where unknown).
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident set of this process so far (VmHWM), bytes.
pub fn peak_rss() -> u64 {
    status_bytes("VmHWM:")
}

/// Resident set of this process now (VmRSS), bytes.
pub fn rss() -> u64 {
    status_bytes("VmRSS:")
}

/// Total bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Appends `line` to `benches/results/<file>`.
pub fn append_result(file: &str, header: &str, line: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results").join(file);
    let fresh = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    if fresh {
        f.write_all(header.as_bytes())?;
    }
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

/// The build profile the bench runs in.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) { "dev" } else { "release" }
}
