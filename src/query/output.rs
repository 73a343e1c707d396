//! Query results as text, the way PostgreSQL prints the same values (session `TimeZone=UTC`,
//! `DateStyle=ISO`, `extra_float_digits=1`), so an export can be compared with the source
//! byte for byte.
//!
//! - CSV follows `COPY … (FORMAT csv, HEADER)`: NULL is an empty unquoted field, an empty
//!   string is `""`, a field is quoted when it holds `,`, `"`, CR or LF; lists are array
//!   literals (`{a,"b c",NULL}`), binary is `\x…` hex, timestamps ISO 8601 (`+00` with a zone).
//! - JSON and NDJSON keep every column of every row: NULL is `null`, lists are JSON arrays.
//! - The table format shows NULL as `NULL`, so it cannot be mistaken for an empty string.
//!
//! Hand-rolled because arrow's CSV writer prints NULL and `""` alike and cannot write lists,
//! and its display of floats, binary and timestamps is not PostgreSQL's.

use std::fmt::Write as _;
use std::io::Write;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// One cell in PostgreSQL's text form; `None` for NULL.
pub fn pg_text(col: &dyn Array, row: usize) -> anyhow::Result<Option<String>> {
    // a NullArray (`SELECT NULL`) has no null buffer: its nulls are only logical
    if col.is_null(row) || col.data_type() == &DataType::Null {
        return Ok(None);
    }
    let text = match col.data_type() {
        DataType::Boolean => if col.as_boolean().value(row) { "t" } else { "f" }.to_string(),
        DataType::Float64 => pg_float(col.as_primitive::<arrow::datatypes::Float64Type>().value(row), 15),
        DataType::Float32 => pg_float(
            f64::from(col.as_primitive::<arrow::datatypes::Float32Type>().value(row)),
            6,
        ),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            hex(&binary_value(col, row)?)
        }
        DataType::Timestamp(unit, tz) => timestamp(col, row, *unit, tz.is_some())?,
        DataType::Time64(_) | DataType::Time32(_) => trim_fraction(display(col, row)?),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) | DataType::ListView(_) => {
            let mut out = String::new();
            array_literal(col, row, &mut out)?;
            out
        }
        DataType::Dictionary(..) => {
            let values = arrow::compute::cast(&col.slice(row, 1), dictionary_value_type(col.data_type()))?;
            return pg_text(values.as_ref(), 0);
        }
        _ => display(col, row)?,
    };
    Ok(Some(text))
}

fn dictionary_value_type(t: &DataType) -> &DataType {
    match t {
        DataType::Dictionary(_, v) => v,
        other => other,
    }
}

fn display(col: &dyn Array, row: usize) -> anyhow::Result<String> {
    Ok(ArrayFormatter::try_new(col, &FormatOptions::default())?
        .value(row)
        .to_string())
}

/// The shortest text that reads back to the same value, in PostgreSQL's layout: positional
/// for decimal exponents in `-4..digits`, else `1.5e+20` / `1e-05` (PostgreSQL's Ryu output;
/// `digits` is 15 for double precision, 6 for real).
fn pg_float(v: f64, digits: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = if digits == 6 {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..digits).contains(&exp) {
        return if digits == 6 {
            format!("{}", v as f32)
        } else {
            format!("{v}")
        };
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

fn binary_value(col: &dyn Array, row: usize) -> anyhow::Result<Vec<u8>> {
    Ok(match col.data_type() {
        DataType::Binary => col.as_binary::<i32>().value(row).to_vec(),
        DataType::LargeBinary => col.as_binary::<i64>().value(row).to_vec(),
        DataType::BinaryView => col.as_binary_view().value(row).to_vec(),
        DataType::FixedSizeBinary(_) => col.as_fixed_size_binary().value(row).to_vec(),
        other => anyhow::bail!("{other} is not binary"),
    })
}

/// bytea's hex output: `\x` and two lowercase digits per byte.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn timestamp(col: &dyn Array, row: usize, unit: TimeUnit, zoned: bool) -> anyhow::Result<String> {
    let micros = arrow::compute::cast(&col.slice(row, 1), &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let v = micros
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .value(0);
    let t = chrono::DateTime::from_timestamp_micros(v)
        .ok_or_else(|| anyhow::anyhow!("timestamp {v} µs ({unit:?}) is out of range"))?;
    let s = trim_fraction(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
    Ok(if zoned { format!("{s}+00") } else { s })
}

/// `12:30:00.500000` → `12:30:00.5`, `12:30:00.000000` → `12:30:00`, as PostgreSQL prints.
fn trim_fraction(s: String) -> String {
    match s.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                whole.to_string()
            } else {
                format!("{whole}.{frac}")
            }
        }
        None => s,
    }
}

/// A PostgreSQL array literal: `{1,2}`, `{"a b",NULL,""}`, nested `{{1,2},{3,4}}`.
fn array_literal(col: &dyn Array, row: usize, out: &mut String) -> anyhow::Result<()> {
    let values = match col.data_type() {
        DataType::List(_) => col.as_list::<i32>().value(row),
        DataType::LargeList(_) => col.as_list::<i64>().value(row),
        DataType::FixedSizeList(..) => col.as_fixed_size_list().value(row),
        DataType::ListView(_) => col.as_list_view::<i32>().value(row),
        other => anyhow::bail!("{other} is not a list"),
    };
    out.push('{');
    for i in 0..values.len() {
        if i > 0 {
            out.push(',');
        }
        let nested = matches!(
            values.data_type(),
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) | DataType::ListView(_)
        );
        match pg_text(values.as_ref(), i)? {
            None => out.push_str("NULL"),
            Some(text) if nested => out.push_str(&text),
            Some(text) => array_element(&text, out),
        }
    }
    out.push('}');
    Ok(())
}

/// An element quoted as `array_out` does: when empty, `NULL` in any case, or holding a
/// delimiter, brace, quote, backslash or white space; `"` and `\` then escaped with `\`.
fn array_element(text: &str, out: &mut String) {
    let quote = text.is_empty()
        || text.eq_ignore_ascii_case("NULL")
        || text
            .chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
    if !quote {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A CSV field as `COPY … CSV` writes it; NULL is the empty unquoted field.
fn csv_field(text: Option<&str>, out: &mut String) {
    let Some(text) = text else { return };
    // `\.` alone would read back as end-of-data, so COPY quotes it too
    let quote = text.is_empty() || text == "\\." || text.contains([',', '"', '\n', '\r']);
    if !quote {
        out.push_str(text);
        return;
    }
    out.push('"');
    out.push_str(&text.replace('"', "\"\""));
    out.push('"');
}

/// Writes `batches` as CSV with a header line (the header alone when there are no rows but
/// a schema; nothing at all without one).
pub fn write_csv(batches: &[RecordBatch], w: &mut dyn Write) -> anyhow::Result<()> {
    let Some(first) = batches.first() else { return Ok(()) };
    let mut line = String::new();
    for (i, f) in first.schema().fields().iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(Some(f.name()), &mut line);
    }
    writeln!(w, "{line}")?;
    for b in batches {
        for row in 0..b.num_rows() {
            line.clear();
            for (i, col) in b.columns().iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                csv_field(pg_text(col.as_ref(), row)?.as_deref(), &mut line);
            }
            writeln!(w, "{line}")?;
        }
    }
    Ok(())
}

/// Writes `batches` as one JSON array (`ndjson`: one object per line), NULL as `null`.
/// Floats and binary are written as PostgreSQL's `to_json` does: NaN and ±Infinity as the
/// strings `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such numbers, and `null` would
/// make them NULL), binary as `"\\x…"`.
pub fn write_json(batches: &[RecordBatch], ndjson: bool, w: &mut dyn Write) -> anyhow::Result<()> {
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let builder = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(std::sync::Arc::new(PgJson));
    if ndjson {
        let mut writer = builder.build::<_, arrow::json::writer::LineDelimited>(&mut *w);
        writer.write_batches(&refs)?;
        writer.finish()?;
    } else {
        let mut writer = builder.build::<_, arrow::json::writer::JsonArray>(&mut *w);
        writer.write_batches(&refs)?;
        writer.finish()?;
        writeln!(w)?;
    }
    Ok(())
}

/// Encodes floats and binary (also inside lists) from their PostgreSQL text.
#[derive(Debug)]
struct PgJson;

impl EncoderFactory for PgJson {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let ours = matches!(
            array.data_type(),
            DataType::Float32
                | DataType::Float64
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        );
        Ok(ours.then(|| NullableEncoder::new(Box::new(PgCell(array)), array.logical_nulls())))
    }
}

struct PgCell<'a>(&'a dyn Array);

impl Encoder for PgCell<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        // only non-null cells of the types above reach here, and pg_text cannot fail on them
        let text = pg_text(self.0, idx).ok().flatten().unwrap_or_default();
        let number = self.0.data_type().is_floating() && !matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity");
        if number {
            out.extend_from_slice(text.as_bytes());
        } else {
            let _ = serde_json::to_writer(out, &text);
        }
    }
}

/// Writes `batches` as a boxed table of PostgreSQL text, NULL shown as `NULL` (an empty
/// string stays empty).
pub fn write_table(batches: &[RecordBatch], w: &mut dyn Write) -> anyhow::Result<()> {
    let mut texts = Vec::with_capacity(batches.len());
    for b in batches {
        let fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
        for col in b.columns() {
            let cells: anyhow::Result<Vec<Option<String>>> =
                (0..b.num_rows()).map(|r| pg_text(col.as_ref(), r)).collect();
            columns.push(std::sync::Arc::new(StringArray::from(cells?)));
        }
        texts.push(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?);
    }
    let options = FormatOptions::default().with_null("NULL");
    writeln!(
        w,
        "{}",
        arrow::util::pretty::pretty_format_batches_with_options(&texts, &options)?
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
