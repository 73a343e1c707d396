//! Avro writer schema → decoding plan.
//!
//! The plan is built from the schema's JSON text, not from `apache_avro::Schema`, because the
//! Kafka Connect / Debezium annotations that decide the Arrow type (`connect.name`,
//! `connect.type`, `connect.parameters`) sit on primitive types, where the Avro library drops
//! them. `apache_avro` still validates every schema first ([`Plan::parse`]).
//!
//! Invariant: every [`Plan`] node knows its Arrow type ([`Plan::arrow_type`]), so a column's
//! type is fixed by the schema alone, never by the data.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use serde_json::Value as Json;

use crate::error::ConnectorError;

/// How an Avro `int` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    Int8,
    Int16,
    Int32,
    /// `io.debezium.time.Date`: days since the epoch.
    Date,
    /// `io.debezium.time.Time` (ms since midnight) → µs.
    TimeMillis,
}

/// How an Avro `long` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongKind {
    Int64,
    /// `io.debezium.time.Timestamp` / `timestamp-millis` → µs, no zone.
    TimestampMillis,
    /// `io.debezium.time.MicroTimestamp` / `timestamp-micros` → µs, no zone.
    TimestampMicros,
    /// `io.debezium.time.NanoTimestamp` → µs (Delta keeps µs).
    TimestampNanos,
    /// `MicroTime`, `MicroDuration`: already µs.
    Micros,
    /// `NanoTime`, `NanoDuration` → µs.
    NanosToMicros,
    /// `org.apache.kafka.connect.data.Timestamp` (ms) → µs, no zone.
    ConnectTimestampMillis,
}

/// How an Avro `string` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrKind {
    Utf8,
    /// `io.debezium.time.ZonedTimestamp`: RFC 3339 text → µs UTC.
    ZonedTimestamp,
}

/// How an Avro `bytes` or `fixed` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesKind {
    Binary,
    /// Two's-complement big-endian unscaled value, precision ≤ 38.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// A decimal too wide for Decimal128: kept exact as text.
    DecimalText {
        scale: i32,
    },
}

/// A node of the decoding plan.
#[derive(Clone, Debug)]
pub enum Plan {
    Null,
    Boolean,
    Int(IntKind),
    Long(LongKind),
    Float,
    Double,
    Bytes(BytesKind),
    String(StrKind),
    Fixed(usize, BytesKind),
    Enum(Arc<[String]>),
    /// `io.debezium.data.VariableScaleDecimal` {scale:int, value:bytes} → exact text.
    VariableScaleDecimal,
    Record(Arc<Record>),
    Array(Box<Plan>),
    Map(Box<Plan>),
    /// A union of `null` and one other branch: the common optional field.
    Nullable {
        null_index: u64,
        inner: Box<Plan>,
    },
    /// Any other union (decoded, but not representable as a column).
    Union(Vec<Plan>),
}

/// A record node with its fields in writer order.
#[derive(Debug)]
pub struct Record {
    pub name: String,
    pub fields: Vec<RecordField>,
}

#[derive(Debug)]
pub struct RecordField {
    pub name: String,
    pub plan: Plan,
    /// The field's Avro default, if any (kept for schema evolution).
    pub default: Option<Json>,
}

impl Record {
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

impl Plan {
    /// Validates `schema` with `apache_avro` and builds its plan.
    pub fn parse(schema: &str) -> Result<Plan, ConnectorError> {
        apache_avro::Schema::parse_str(schema).map_err(|e| ConnectorError::InvalidSchema(e.to_string()))?;
        let json: Json = serde_json::from_str(schema).map_err(|e| ConnectorError::InvalidSchema(e.to_string()))?;
        Builder::default().build(&json, None)
    }

    /// The plan with a nullable wrapper removed.
    pub fn non_null(&self) -> &Plan {
        match self {
            Plan::Nullable { inner, .. } => inner,
            other => other,
        }
    }

    /// The Arrow type this node decodes into, or why it has none.
    pub fn arrow_type(&self) -> Result<DataType, ConnectorError> {
        Ok(match self {
            Plan::Null => DataType::Null,
            Plan::Boolean => DataType::Boolean,
            Plan::Int(IntKind::Int8) => DataType::Int8,
            Plan::Int(IntKind::Int16) => DataType::Int16,
            Plan::Int(IntKind::Int32) => DataType::Int32,
            Plan::Int(IntKind::Date) => DataType::Date32,
            Plan::Int(IntKind::TimeMillis) => DataType::Int64,
            Plan::Long(LongKind::Int64 | LongKind::Micros | LongKind::NanosToMicros) => DataType::Int64,
            Plan::Long(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
            Plan::Float => DataType::Float32,
            Plan::Double => DataType::Float64,
            Plan::Bytes(k) | Plan::Fixed(_, k) => match k {
                BytesKind::Binary => DataType::Binary,
                BytesKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
                BytesKind::DecimalText { .. } => DataType::Utf8,
            },
            Plan::String(StrKind::Utf8) | Plan::Enum(_) | Plan::VariableScaleDecimal => DataType::Utf8,
            Plan::String(StrKind::ZonedTimestamp) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Plan::Record(r) => {
                let fields: Result<Vec<Field>, _> = r
                    .fields
                    .iter()
                    .map(|f| Ok(Field::new(&f.name, f.plan.arrow_type()?, true)))
                    .collect();
                DataType::Struct(Fields::from(fields?))
            }
            Plan::Array(item) => DataType::List(Arc::new(Field::new("element", item.arrow_type()?, true))),
            Plan::Map(_) => return Err(ConnectorError::UnsupportedType("Avro map".into())),
            Plan::Nullable { inner, .. } => inner.arrow_type()?,
            Plan::Union(_) => {
                return Err(ConnectorError::UnsupportedType(
                    "Avro union with more than one non-null branch".into(),
                ));
            }
        })
    }
}

/// Resolves named types while walking one schema.
#[derive(Default)]
struct Builder {
    named: HashMap<String, Plan>,
}

fn connect_name(obj: &serde_json::Map<String, Json>) -> Option<&str> {
    obj.get("connect.name").and_then(Json::as_str)
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn decimal_kind(obj: &serde_json::Map<String, Json>) -> BytesKind {
    let params = obj.get("connect.parameters").and_then(Json::as_object);
    let scale = obj
        .get("scale")
        .and_then(Json::as_i64)
        .or_else(|| params.and_then(|p| p.get("scale")?.as_str()?.parse().ok()))
        .unwrap_or(0);
    let precision = obj
        .get("precision")
        .and_then(Json::as_i64)
        .or_else(|| params.and_then(|p| p.get("connect.decimal.precision")?.as_str()?.parse().ok()));
    match precision {
        Some(p) if (1..=38).contains(&p) && (0..=p).contains(&scale) => BytesKind::Decimal {
            precision: p as u8,
            scale: scale as i8,
        },
        _ => BytesKind::DecimalText { scale: scale as i32 },
    }
}

impl Builder {
    fn build(&mut self, schema: &Json, namespace: Option<&str>) -> Result<Plan, ConnectorError> {
        match schema {
            Json::String(name) => self.primitive_or_named(name, namespace),
            Json::Array(branches) => self.union(branches, namespace),
            Json::Object(obj) => self.complex(obj, namespace),
            other => Err(ConnectorError::InvalidSchema(format!("unexpected schema node {other}"))),
        }
    }

    fn primitive_or_named(&mut self, name: &str, namespace: Option<&str>) -> Result<Plan, ConnectorError> {
        Ok(match name {
            "null" => Plan::Null,
            "boolean" => Plan::Boolean,
            "int" => Plan::Int(IntKind::Int32),
            "long" => Plan::Long(LongKind::Int64),
            "float" => Plan::Float,
            "double" => Plan::Double,
            "bytes" => Plan::Bytes(BytesKind::Binary),
            "string" => Plan::String(StrKind::Utf8),
            named => self
                .named
                .get(&full_name(named, namespace))
                .or_else(|| self.named.get(named))
                .cloned()
                .ok_or_else(|| ConnectorError::InvalidSchema(format!("unknown named type {named}")))?,
        })
    }

    fn union(&mut self, branches: &[Json], namespace: Option<&str>) -> Result<Plan, ConnectorError> {
        let plans: Vec<Plan> = branches
            .iter()
            .map(|b| self.build(b, namespace))
            .collect::<Result<_, _>>()?;
        let nulls: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Plan::Null))
            .map(|(i, _)| i)
            .collect();
        if plans.len() == 2 && nulls.len() == 1 {
            let null_index = nulls[0];
            let inner = plans.into_iter().nth(1 - null_index).unwrap_or(Plan::Null);
            return Ok(Plan::Nullable {
                null_index: null_index as u64,
                inner: Box::new(inner),
            });
        }
        Ok(Plan::Union(plans))
    }

    fn complex(
        &mut self,
        obj: &serde_json::Map<String, Json>,
        namespace: Option<&str>,
    ) -> Result<Plan, ConnectorError> {
        let ty = obj
            .get("type")
            .ok_or_else(|| ConnectorError::InvalidSchema("schema object without type".into()))?;
        let logical = obj.get("logicalType").and_then(Json::as_str);
        let connect = connect_name(obj);
        let ty = match ty {
            Json::String(s) => s.as_str(),
            nested => return self.build(nested, namespace),
        };
        Ok(match ty {
            "int" => Plan::Int(
                match (connect, logical, obj.get("connect.type").and_then(Json::as_str)) {
                    (Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date"), _, _)
                    | (_, Some("date"), _) => IntKind::Date,
                    (Some("io.debezium.time.Time" | "org.apache.kafka.connect.data.Time"), _, _)
                    | (_, Some("time-millis"), _) => IntKind::TimeMillis,
                    (_, _, Some("int16")) => IntKind::Int16,
                    (_, _, Some("int8")) => IntKind::Int8,
                    _ => IntKind::Int32,
                },
            ),
            "long" => Plan::Long(match (connect, logical) {
                (Some("io.debezium.time.Timestamp"), _) | (_, Some("timestamp-millis" | "local-timestamp-millis")) => {
                    LongKind::TimestampMillis
                }
                (Some("org.apache.kafka.connect.data.Timestamp"), _) => LongKind::ConnectTimestampMillis,
                (Some("io.debezium.time.MicroTimestamp"), _)
                | (_, Some("timestamp-micros" | "local-timestamp-micros")) => LongKind::TimestampMicros,
                (Some("io.debezium.time.NanoTimestamp"), _) => LongKind::TimestampNanos,
                (Some("io.debezium.time.MicroTime" | "io.debezium.time.MicroDuration"), _)
                | (_, Some("time-micros")) => LongKind::Micros,
                (Some("io.debezium.time.NanoTime" | "io.debezium.time.NanoDuration"), _) => LongKind::NanosToMicros,
                _ => LongKind::Int64,
            }),
            "bytes" => Plan::Bytes(
                if logical == Some("decimal") || connect == Some("org.apache.kafka.connect.data.Decimal") {
                    decimal_kind(obj)
                } else {
                    BytesKind::Binary
                },
            ),
            "string" => Plan::String(match connect {
                Some("io.debezium.time.ZonedTimestamp") => StrKind::ZonedTimestamp,
                _ => StrKind::Utf8,
            }),
            "fixed" => {
                let size = obj
                    .get("size")
                    .and_then(Json::as_u64)
                    .ok_or_else(|| ConnectorError::InvalidSchema("fixed without size".into()))?
                    as usize;
                let kind = if logical == Some("decimal") {
                    decimal_kind(obj)
                } else {
                    BytesKind::Binary
                };
                let plan = Plan::Fixed(size, kind);
                self.register(obj, namespace, plan.clone());
                plan
            }
            "enum" => {
                let symbols: Vec<String> = obj
                    .get("symbols")
                    .and_then(Json::as_array)
                    .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let plan = Plan::Enum(symbols.into());
                self.register(obj, namespace, plan.clone());
                plan
            }
            "array" => Plan::Array(Box::new(
                self.build(
                    obj.get("items")
                        .ok_or_else(|| ConnectorError::InvalidSchema("array without items".into()))?,
                    namespace,
                )?,
            )),
            "map" => Plan::Map(Box::new(
                self.build(
                    obj.get("values")
                        .ok_or_else(|| ConnectorError::InvalidSchema("map without values".into()))?,
                    namespace,
                )?,
            )),
            "record" | "error" => self.record(obj, namespace)?,
            other => self.primitive_or_named(other, namespace)?,
        })
    }

    fn register(&mut self, obj: &serde_json::Map<String, Json>, namespace: Option<&str>, plan: Plan) {
        if let Some(name) = obj.get("name").and_then(Json::as_str) {
            let ns = obj.get("namespace").and_then(Json::as_str).or(namespace);
            self.named.insert(full_name(name, ns), plan);
        }
    }

    fn record(&mut self, obj: &serde_json::Map<String, Json>, namespace: Option<&str>) -> Result<Plan, ConnectorError> {
        let name = obj.get("name").and_then(Json::as_str).unwrap_or("record");
        let ns = obj
            .get("namespace")
            .and_then(Json::as_str)
            .or_else(|| name.rsplit_once('.').map(|(ns, _)| ns))
            .or(namespace);
        let ns_owned = ns.map(str::to_string);
        let raw_fields = obj
            .get("fields")
            .and_then(Json::as_array)
            .ok_or_else(|| ConnectorError::InvalidSchema(format!("record {name} without fields")))?;
        let mut fields = Vec::with_capacity(raw_fields.len());
        for f in raw_fields {
            let fname = f
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| ConnectorError::InvalidSchema(format!("field without name in {name}")))?;
            let ftype = f
                .get("type")
                .ok_or_else(|| ConnectorError::InvalidSchema(format!("field {fname} without type")))?;
            fields.push(RecordField {
                name: fname.to_string(),
                plan: self.build(ftype, ns_owned.as_deref())?,
                default: f.get("default").cloned(),
            });
        }
        let plan = if connect_name(obj) == Some("io.debezium.data.VariableScaleDecimal") {
            Plan::VariableScaleDecimal
        } else {
            Plan::Record(Arc::new(Record {
                name: full_name(name, ns),
                fields,
            }))
        };
        self.register(obj, ns, plan.clone());
        Ok(plan)
    }
}
