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

/// Where the little-endian `(offset, length)` pair of an IPC buffer lies in
/// `bytes` at or after `from` (the message metadata holds them as structs).
pub fn find_buffer_entry(bytes: &[u8], from: usize, offset: i64, len: i64) -> Option<usize> {
    let mut pat = offset.to_le_bytes().to_vec();
    pat.extend_from_slice(&len.to_le_bytes());
    bytes[from..].windows(16).position(|w| w == pat.as_slice()).map(|p| p + from)
}
