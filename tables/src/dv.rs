//! Delta deletion vectors: reading and writing the RoaringBitmapArray format.
//!
//! On-disk layout (Delta PROTOCOL.md, "Deletion Vector Format"): a version byte `1`, then per
//! vector a big-endian `size` (= 4 + data length), the little-endian magic `1681511377`, the
//! portable 64-bit roaring serialization, and a big-endian CRC-32 of magic + data. The framing
//! is written by the kernel's `StreamingDeletionVectorWriter`; descriptors use storage type
//! `u` (a Z85-encoded UUID relative to the table root) with `offset` pointing at `size`.
//!
//! Invariant: a descriptor's `cardinality` is the bitmap's exact cardinality and
//! `size_in_bytes` the framed size, as other readers check both.

use buoyant_kernel::actions::deletion_vector_writer::{KernelDeletionVector, StreamingDeletionVectorWriter};
use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use roaring::RoaringTreemap;

use crate::error::{Result, TableError};

const MAGIC: u32 = 1681511377;

fn dv_error(msg: impl Into<String>) -> TableError {
    TableError::DeletionVector(msg.into())
}

/// The table-relative file holding a `u` descriptor's vector.
pub fn relative_path(d: &DeletionVectorDescriptor) -> Result<String> {
    relative_path_of(&d.path_or_inline_dv)
}

/// The table-relative file of a `u` descriptor's `pathOrInlineDv`.
pub fn relative_path_of(encoded: &str) -> Result<String> {
    if encoded.len() < 20 {
        return Err(dv_error(format!(
            "descriptor path {encoded:?} is shorter than a Z85 UUID"
        )));
    }
    let (prefix, z) = encoded.split_at(encoded.len() - 20);
    let bytes = z85::decode(z).map_err(|e| dv_error(format!("bad Z85 UUID {z:?}: {e}")))?;
    let uuid = uuid::Uuid::from_slice(&bytes).map_err(|e| dv_error(format!("bad UUID: {e}")))?;
    Ok(if prefix.is_empty() {
        format!("deletion_vector_{uuid}.bin")
    } else {
        format!("{prefix}/deletion_vector_{uuid}.bin")
    })
}

fn decode_bitmap(framed: &[u8]) -> Result<RoaringTreemap> {
    if framed.len() < 4 {
        return Err(dv_error("deletion vector shorter than its magic number"));
    }
    let magic = u32::from_le_bytes([framed[0], framed[1], framed[2], framed[3]]);
    if magic != MAGIC {
        return Err(dv_error(format!("unknown deletion vector magic {magic}")));
    }
    RoaringTreemap::deserialize_from(&framed[4..]).map_err(|e| dv_error(format!("corrupt deletion vector: {e}")))
}

/// Delta's CRC-32 of a vector (java.util.zip.CRC32: the ISO-HDLC polynomial).
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// `framed` (magic + data + big-endian CRC) without its CRC, once the CRC matches: a torn or
/// bit-flipped vector would otherwise hide or resurrect rows silently.
fn checked<'a>(framed: &'a [u8], path: &Path) -> Result<&'a [u8]> {
    let Some(split) = framed.len().checked_sub(4) else {
        return Err(dv_error(format!("deletion vector in {path} is truncated")));
    };
    let (body, crc) = framed.split_at(split);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = CRC32.checksum(body);
    if stored != actual {
        return Err(dv_error(format!(
            "deletion vector in {path} fails its CRC (stored {stored:#010x}, computed {actual:#010x}): the file is corrupt; restore it from a backup or time-travel to a version before it"
        )));
    }
    Ok(body)
}

/// Reads the vector a descriptor points at (`u` and `i` storage).
pub async fn read(store: &dyn ObjectStore, d: &DeletionVectorDescriptor) -> Result<RoaringTreemap> {
    let bitmap = match d.storage_type {
        StorageType::Inline => {
            let bytes = z85::decode(&d.path_or_inline_dv).map_err(|e| dv_error(format!("bad inline vector: {e}")))?;
            decode_bitmap(&bytes)?
        }
        StorageType::UuidRelativePath | StorageType::AbsolutePath => {
            let path = match d.storage_type {
                StorageType::UuidRelativePath => Path::from(relative_path(d)?),
                _ => Path::parse(&d.path_or_inline_dv).map_err(|e| dv_error(e.to_string()))?,
            };
            let offset = d.offset.unwrap_or(1).max(0) as u64;
            let size = u64::try_from(d.size_in_bytes).map_err(|_| dv_error("negative deletion vector size"))?;
            // skip the 4-byte size prefix; read magic + data and the CRC after them
            let range = offset + 4..offset + 4 + size + 4;
            let bytes = store.get_ranges(&path, std::slice::from_ref(&range)).await?.concat();
            decode_bitmap(checked(&bytes, &path)?)?
        }
    };
    if bitmap.len() != d.cardinality as u64 {
        return Err(dv_error(format!(
            "deletion vector holds {} rows but its descriptor says {}",
            bitmap.len(),
            d.cardinality
        )));
    }
    Ok(bitmap)
}

/// Writes `bitmaps` into ONE new file under the table root (one object per commit, however
/// many files it touches) and returns their descriptors, in order.
pub async fn write_all(store: &dyn ObjectStore, bitmaps: &[&RoaringTreemap]) -> Result<Vec<DeletionVectorDescriptor>> {
    if bitmaps.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut buf);
    let mut written = Vec::with_capacity(bitmaps.len());
    for bitmap in bitmaps {
        let mut dv = KernelDeletionVector::new();
        dv.add_deleted_row_indexes(bitmap.iter());
        written.push(
            writer
                .write_deletion_vector(dv)
                .map_err(|e| dv_error(format!("serializing deletion vector: {e}")))?,
        );
    }
    writer.finalize().map_err(|e| dv_error(e.to_string()))?;
    let encoded = z85::encode(uuid::Uuid::new_v4().as_bytes());
    let descriptors: Vec<DeletionVectorDescriptor> = written
        .into_iter()
        .map(|w| DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: encoded.clone(),
            offset: Some(w.offset),
            size_in_bytes: w.size_in_bytes,
            cardinality: w.cardinality,
        })
        .collect();
    store
        .put(
            &Path::from(relative_path(&descriptors[0])?),
            bytes::Bytes::from(buf).into(),
        )
        .await?;
    Ok(descriptors)
}

/// Writes one vector to a new file and returns its descriptor.
pub async fn write(store: &dyn ObjectStore, bitmap: &RoaringTreemap) -> Result<DeletionVectorDescriptor> {
    write_all(store, &[bitmap])
        .await?
        .pop()
        .ok_or_else(|| dv_error("no descriptor written"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_through_a_store() {
        let store = object_store::memory::InMemory::new();
        let bitmap: RoaringTreemap = [0u64, 3, 7, 1 << 33].into_iter().collect();
        let d = write(&store, &bitmap).await.expect("write");
        assert_eq!(d.cardinality, 4);
        assert_eq!(d.offset, Some(1));
        assert_eq!(d.path_or_inline_dv.len(), 20);
        let back = read(&store, &d).await.expect("read");
        assert_eq!(back, bitmap);
        let file = store
            .get(&Path::from(relative_path(&d).expect("path")))
            .await
            .expect("get");
        let bytes = file.bytes().await.expect("bytes");
        assert_eq!(bytes[0], 1, "version byte");
        let size = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(size, d.size_in_bytes as usize);
        assert_eq!(bytes.len(), 1 + 4 + size + 4, "version + size + (magic+data) + crc");
    }

    #[tokio::test]
    async fn several_vectors_share_one_file() {
        let store = object_store::memory::InMemory::new();
        let a: RoaringTreemap = [0u64, 3].into_iter().collect();
        let b: RoaringTreemap = (10u64..5000).collect();
        let ds = write_all(&store, &[&a, &b]).await.expect("write");
        assert_eq!(ds.len(), 2);
        assert_eq!(ds[0].path_or_inline_dv, ds[1].path_or_inline_dv);
        assert!(ds[1].offset > ds[0].offset);
        assert_eq!(read(&store, &ds[0]).await.expect("a"), a);
        assert_eq!(read(&store, &ds[1]).await.expect("b"), b);
    }

    #[tokio::test]
    async fn a_flipped_bit_fails_the_crc() {
        let store = object_store::memory::InMemory::new();
        let bitmap: RoaringTreemap = (0u64..100).collect();
        let d = write(&store, &bitmap).await.expect("write");
        let path = Path::from(relative_path(&d).expect("path"));
        let mut bytes = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes")
            .to_vec();
        let last_data = bytes.len() - 5;
        bytes[last_data] ^= 0x01;
        store.put(&path, bytes.into()).await.expect("put");
        let err = read(&store, &d).await.expect_err("corrupt vector read").to_string();
        assert!(err.contains("fails its CRC"), "{err}");
    }

    #[tokio::test]
    async fn wrong_cardinality_is_an_error() {
        let store = object_store::memory::InMemory::new();
        let bitmap: RoaringTreemap = [1u64, 2].into_iter().collect();
        let mut d = write(&store, &bitmap).await.expect("write");
        d.cardinality = 3;
        assert!(read(&store, &d).await.is_err());
    }
}
