//! The Confluent wire format: magic byte `0`, a 4-byte big-endian schema id, then the payload.

use crate::error::ConnectorError;

/// Splits a framed record into its schema id and payload.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), ConnectorError> {
    match bytes {
        [] => Err(ConnectorError::BadFrame("empty record".into())),
        [m, ..] if *m != 0 => Err(ConnectorError::BadFrame(format!(
            "magic byte is {m:#04x}, expected 0x00"
        ))),
        [_, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        short => Err(ConnectorError::BadFrame(format!(
            "record of {} bytes is shorter than the 5-byte header",
            short.len()
        ))),
    }
}

/// Frames `payload` with `schema_id` (used by tests and tools that produce records).
pub fn frame(schema_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_rejects() {
        assert_eq!(split(&frame(7, b"xy")).unwrap(), (7, &b"xy"[..]));
        assert!(matches!(split(&[]), Err(ConnectorError::BadFrame(_))));
        assert!(matches!(split(&[1, 0, 0, 0, 1]), Err(ConnectorError::BadFrame(_))));
        assert!(matches!(split(&[0, 0, 1]), Err(ConnectorError::BadFrame(_))));
        assert_eq!(split(&[0, 0, 0, 0, 9]).unwrap(), (9, &b""[..]));
    }
}
