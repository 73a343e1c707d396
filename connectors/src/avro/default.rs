//! Avro field defaults as column defaults.
//!
//! A column added by a new schema version reads, for rows written before it, as the field's
//! Avro default — as PostgreSQL shows such rows. The default is decoded with the same
//! machinery as data (JSON default → Avro binary → [`Column`]) so logical types (decimals,
//! dates, zoned timestamps) get exactly the value a record would carry, then kept as text in
//! the column's Arrow metadata under [`DEFAULT_KEY`], from which Arrow casts it back.

use arrow::util::display::array_value_to_string;
use serde_json::Value as Json;

use super::decode::{Column, Reader};
use super::plan::{BytesKind, Plan};

/// Arrow field metadata key holding a column's default as text (defined by the change contract).
pub use change::DEFAULT_KEY;

fn zigzag(v: i64, out: &mut Vec<u8>) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Avro binary of a JSON default (Avro spec: a union's default is for its first branch;
/// bytes/fixed defaults are strings of code points 0–255). `None` for null or unsupported.
fn encode(plan: &Plan, json: &Json, out: &mut Vec<u8>) -> Option<()> {
    match plan {
        Plan::Nullable { null_index, inner } => {
            if *null_index == 0 || json.is_null() {
                return None;
            }
            zigzag(0, out);
            encode(inner, json, out)
        }
        Plan::Boolean => {
            out.push(u8::from(json.as_bool()?));
            Some(())
        }
        Plan::Int(_) | Plan::Long(_) => {
            zigzag(json.as_i64()?, out);
            Some(())
        }
        Plan::Float => {
            out.extend_from_slice(&(json.as_f64()? as f32).to_le_bytes());
            Some(())
        }
        Plan::Double => {
            out.extend_from_slice(&json.as_f64()?.to_le_bytes());
            Some(())
        }
        Plan::String(_) => {
            let s = json.as_str()?;
            zigzag(s.len() as i64, out);
            out.extend_from_slice(s.as_bytes());
            Some(())
        }
        Plan::Bytes(kind) if *kind != BytesKind::Binary => {
            let bytes: Vec<u8> = json
                .as_str()?
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<_>>()?;
            zigzag(bytes.len() as i64, out);
            out.extend_from_slice(&bytes);
            Some(())
        }
        Plan::Enum(symbols) => {
            let i = symbols.iter().position(|s| Some(s.as_str()) == json.as_str())?;
            zigzag(i as i64, out);
            Some(())
        }
        // binary, records, arrays, maps: kept null (no lossless text form)
        _ => None,
    }
}

/// The default of a field of `plan` as text Arrow can cast back to the column type.
pub fn default_text(plan: &Plan, json: &Json) -> Option<String> {
    let mut bytes = Vec::new();
    encode(plan, json, &mut bytes)?;
    let mut col = Column::new(&plan.arrow_type().ok()?).ok()?;
    let mut r = Reader::new(&bytes);
    col.append(plan, &mut r).ok()?;
    let array = col.finish();
    if array.is_null(0) {
        return None;
    }
    array_value_to_string(array.as_ref(), 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::Plan;

    fn field_plan(ty: &str) -> Plan {
        let schema = format!(r#"{{"type":"record","name":"r","fields":[{{"name":"f","type":{ty}}}]}}"#);
        match Plan::parse(&schema).expect("schema") {
            Plan::Record(r) => r.fields[0].plan.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_of_debezium_types() {
        let dec = r#"{"type":"bytes","scale":2,"precision":10,"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}"#;
        assert_eq!(
            default_text(&field_plan(dec), &Json::from("\u{0}")).as_deref(),
            Some("0.00")
        );
        assert_eq!(
            default_text(&field_plan(dec), &Json::from("\u{4}\u{d2}")).as_deref(),
            Some("12.34")
        );
        let boolean = r#"{"type":"boolean","connect.default":true}"#;
        assert_eq!(
            default_text(&field_plan(boolean), &Json::from(true)).as_deref(),
            Some("true")
        );
        assert_eq!(
            default_text(&field_plan(r#""string""#), &Json::from("silver")).as_deref(),
            Some("silver")
        );
        assert_eq!(default_text(&field_plan(r#"["null","string"]"#), &Json::Null), None);
        assert_eq!(
            default_text(&field_plan(r#"["string","null"]"#), &Json::from("x")).as_deref(),
            Some("x")
        );
        let date = r#"{"type":"int","connect.name":"io.debezium.time.Date"}"#;
        assert_eq!(
            default_text(&field_plan(date), &Json::from(1)).as_deref(),
            Some("1970-01-02")
        );
        assert_eq!(
            default_text(&field_plan(r#""long""#), &Json::from(-5)).as_deref(),
            Some("-5")
        );
    }
}
