//! Helpers shared by the `arrow*` tests.

#![allow(dead_code)]

use mware::Batch;
use mware::arrow::{ExportOptions, WriteOptions, Writer};
use mware::gateway8::{Checksum, Columns, Fields, Gateway, hand_fused};

/// The input columns of a gateway-8 request log.
pub const INPUTS: [&str; 5] = ["user_id", "token", "route", "payload_len", "ts_ns"];

/// Options for a request log of gateway-8 input.
pub fn input_log() -> WriteOptions {
    WriteOptions::new().export(ExportOptions::new().control(false).fields(INPUTS))
}

/// gateway-8 input of `rows` rows in batches of `batch`, as Arrow IPC file bytes.
pub fn gateway_file(rows: usize, batch: usize, options: WriteOptions) -> Vec<u8> {
    let (schema, f) = Fields::schema();
    let mut w = Writer::new(Vec::new(), &schema, options).unwrap();
    let mut b = Batch::new(&schema);
    for first in (0..rows).step_by(batch) {
        f.fill(&mut b, 42, first as u64, batch.min(rows - first)).unwrap();
        w.write(&mut b).unwrap();
    }
    w.finish().unwrap()
}

/// The checksum of the hand-written loop over the same rows.
pub fn expected_checksum(rows: usize) -> Checksum {
    let mut c = Columns::generate(42, 0, rows);
    let mut g = Gateway::new(rows as u64);
    hand_fused(&mut c, &mut g);
    Checksum::of_columns(&c, &g)
}

/// A unique temporary path.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "mware-test-{}-{}-{name}.arrow",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Where, in the IPC file `bytes`, the `(offset: i64, length: i64)` entry of
/// buffer `k` of record batch `batch` lies (found through the footer and
/// the message, as arrow-ipc parses them), with its current values.
pub fn buffer_entry(bytes: &[u8], batch: usize, k: usize) -> (usize, i64, i64) {
    let n = bytes.len();
    let footer_len = i32::from_le_bytes(bytes[n - 10..n - 6].try_into().unwrap()) as usize;
    let footer = arrow_ipc::root_as_footer(&bytes[n - 10 - footer_len..n - 10]).unwrap();
    let block = footer.recordBatches().unwrap().get(batch);
    let start = block.offset() as usize + 8;
    let len = block.metaDataLength() as usize - 8;
    let message = arrow_ipc::root_as_message(&bytes[start..start + len]).unwrap();
    let buffers = message.header_as_record_batch().unwrap().buffers().unwrap();
    let entry = buffers.get(k);
    let at = buffers.bytes().as_ptr() as usize - bytes.as_ptr() as usize + 16 * k;
    assert_eq!(i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()), entry.offset());
    (at, entry.offset(), entry.length())
}
