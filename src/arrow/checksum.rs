//! Per-column checksums of a record batch, stored in the record batch
//! message's custom metadata.
//!
//! Two keys, readable by any Arrow IPC reader (pyarrow:
//! `RecordBatchFileReader.get_batch_with_custom_metadata`):
//!
//! - `mware.crc32`: one CRC-32 (IEEE, lowercase hex) per top-level column,
//!   comma separated, in schema order. A column's CRC covers the bytes of its
//!   IPC buffers in the body (validity, offsets, values, children's buffers,
//!   in the order the message lists them; padding excluded), exactly as they
//!   lie in the file, so a reader verifies them before decoding anything.
//! - `mware.layout_crc32`: a CRC-32 of the message's layout, so a flipped
//!   length or offset in the metadata is caught too: the little-endian
//!   `i64`s of the body length, the row count, each node's length and null
//!   count, each buffer's offset and length, each variadic buffer count.

use arrow_ipc::RecordBatch as IpcRecordBatch;
use arrow_schema::{DataType, Schema as ArrowSchema, UnionMode};

use super::error::{Error, Result};

/// Custom-metadata key of the per-column CRCs.
pub const CRC_KEY: &str = "mware.crc32";
/// Custom-metadata key of the layout CRC.
pub const LAYOUT_KEY: &str = "mware.layout_crc32";

/// Number of IPC buffers of a column of type `dt` (children included), or
/// `None` for a type whose layout this reader does not know.
fn buffer_count(dt: &DataType, variadic: &mut impl Iterator<Item = i64>) -> Option<usize> {
    use DataType::*;
    Some(match dt {
        Null => 0,
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Timestamp(..) | Date32 | Date64 | Time32(_) | Time64(_) | Duration(_) | Interval(_)
        | FixedSizeBinary(_) | Decimal128(..) | Decimal256(..) | Dictionary(..) => 2,
        Utf8 | LargeUtf8 | Binary | LargeBinary => 3,
        Utf8View | BinaryView => 2 + usize::try_from(variadic.next()?).ok()?,
        List(f) | LargeList(f) | Map(f, _) => 2 + buffer_count(f.data_type(), variadic)?,
        FixedSizeList(f, _) => 1 + buffer_count(f.data_type(), variadic)?,
        Struct(fields) => {
            let mut n = 1;
            for f in fields {
                n += buffer_count(f.data_type(), variadic)?;
            }
            n
        }
        Union(fields, mode) => {
            let mut n = if *mode == UnionMode::Sparse { 1 } else { 2 };
            for (_, f) in fields.iter() {
                n += buffer_count(f.data_type(), variadic)?;
            }
            n
        }
        RunEndEncoded(a, b) => {
            buffer_count(a.data_type(), variadic)? + buffer_count(b.data_type(), variadic)?
        }
        _ => return None,
    })
}

/// The buffer index range of each top-level column, or `None` when a type's
/// layout is unknown or the message's buffer count disagrees.
pub(crate) fn column_buffers(
    schema: &ArrowSchema,
    rb: &IpcRecordBatch<'_>,
) -> Option<Vec<std::ops::Range<usize>>> {
    let mut variadic = rb.variadicBufferCounts().into_iter().flatten();
    let mut ranges = Vec::with_capacity(schema.fields().len());
    let mut at = 0;
    for f in schema.fields() {
        let n = buffer_count(f.data_type(), &mut variadic)?;
        ranges.push(at..at + n);
        at += n;
    }
    let total = rb.buffers().map_or(0, |b| b.len());
    (at == total).then_some(ranges)
}

/// Column `c`'s CRC over `body`. Buffers must have been bounds-checked.
pub(crate) fn column_crc(rb: &IpcRecordBatch<'_>, range: std::ops::Range<usize>, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if let Some(buffers) = rb.buffers() {
        for k in range {
            let b = buffers.get(k);
            let (o, l) = (b.offset() as usize, b.length() as usize);
            h.update(&body[o..o + l]);
        }
    }
    h.finalize()
}

/// The layout CRC of a record batch message.
pub(crate) fn layout_crc(body_len: i64, rb: &IpcRecordBatch<'_>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&body_len.to_le_bytes());
    h.update(&rb.length().to_le_bytes());
    for n in rb.nodes().into_iter().flatten() {
        h.update(&n.length().to_le_bytes());
        h.update(&n.null_count().to_le_bytes());
    }
    for b in rb.buffers().into_iter().flatten() {
        h.update(&b.offset().to_le_bytes());
        h.update(&b.length().to_le_bytes());
    }
    for v in rb.variadicBufferCounts().into_iter().flatten() {
        h.update(&v.to_le_bytes());
    }
    h.finalize()
}

/// Formats the CRCs for the custom metadata.
pub(crate) fn format_crcs(crcs: &[u32]) -> String {
    let mut s = String::with_capacity(crcs.len() * 9);
    for (i, c) in crcs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{c:08x}"));
    }
    s
}

/// Parses one CRC.
pub(crate) fn parse_crc(s: &str, batch: usize) -> Result<u32> {
    if s.len() != 8 {
        return Err(Error::corrupt(Some(batch), format!("checksum `{s}` is not 8 hex digits")));
    }
    u32::from_str_radix(s, 16).map_err(|_| Error::corrupt(Some(batch), format!("checksum `{s}` is not hex")))
}

/// Parses the per-column CRC list.
pub(crate) fn parse_crcs(s: &str, batch: usize) -> Result<Vec<u32>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|c| parse_crc(c, batch)).collect()
}
