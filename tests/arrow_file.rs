//! Arrow IPC files: writing, mapped zero-copy replay, and every way a file
//! can be wrong.

#![cfg(feature = "arrow")]

mod arrow_common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{ArrayRef, RecordBatch, UInt16Array, UInt64Array};
use arrow_buffer::Buffer;
use arrow_common::*;
use mware::arrow::{
    self, Checksums, Error, ExportOptions, ImportOptions, MappedFile, ReadOptions, WriteOptions, Writer,
};
use mware::gateway8::{Checksum, Composition, Fields, GatewayPipeline};
use mware::prelude::*;

fn open_bytes(bytes: &[u8], options: ReadOptions) -> Result<MappedFile, Error> {
    MappedFile::from_buffer(Buffer::from_slice_ref(bytes), options)
}

/// Replays a gateway-8 log held by `file`; returns the checksum.
fn replay(file: &MappedFile, rows: u64) -> Result<Checksum, Error> {
    let (schema, f) = Fields::schema();
    let gw = GatewayPipeline::build(&f, &schema, rows, Composition::Static, |b| b.threads(1))?;
    let replay = file.bind(&schema, &ImportOptions::new().for_pipeline(&gw.pipeline))?;
    let mut batch = Batch::new(&schema);
    let mut sum = Checksum::default();
    for i in 0..replay.len() {
        replay.read(i, &mut batch)?;
        gw.pipeline.run(&mut batch)?;
        f.add_to(&mut sum, &batch)?;
    }
    sum.set_metrics(&gw.metrics.lock());
    Ok(sum)
}

#[test]
#[cfg_attr(miri, ignore)] // memory maps are foreign calls
fn replay_from_the_mapping_reads_inputs_in_place() {
    let rows = 50_000;
    let path = temp_path("replay");
    std::fs::write(&path, gateway_file(rows, 4096, input_log())).unwrap();
    let file = MappedFile::open(&path).unwrap();
    assert!(file.is_mapped());
    assert_eq!(file.num_batches(), rows.div_ceil(4096));
    assert_eq!(file.metadata().get("mware.rows").map(String::as_str), Some("50000"));

    let (schema, f) = Fields::schema();
    let gw = GatewayPipeline::build(&f, &schema, rows as u64, Composition::Static, |b| b.threads(2)).unwrap();
    let replay = file.bind(&schema, &ImportOptions::new().for_pipeline(&gw.pipeline)).unwrap();
    assert_eq!(replay.projection(), &[0, 1, 2, 3, 4]);
    let map = file.bytes().as_ptr_range();
    let mut batch = Batch::new(&schema);
    let mut sum = Checksum::default();
    for i in 0..replay.len() {
        let stats = replay.read(i, &mut batch).unwrap();
        assert!(stats.verified);
        assert_eq!((stats.import.zero_copy, stats.import.copied, stats.import.zeroed), (5, 0, 3));
        let user = batch.column(f.user_id).unwrap().as_ptr().cast::<u8>();
        assert!(map.contains(&user), "user_id points into the mapping");
        assert_eq!(user as usize % 64, 0, "64-byte aligned");
        gw.pipeline.run(&mut batch).unwrap();
        for input in INPUTS {
            assert!(batch.is_shared(schema.field_named(input).unwrap().0), "{input} was copied");
        }
        assert!(!batch.is_shared(f.cost.index()));
        assert_eq!(batch.column(f.user_id).unwrap().as_ptr().cast(), user);
        f.add_to(&mut sum, &batch).unwrap();
    }
    sum.set_metrics(&gw.metrics.lock());
    assert_eq!(sum, expected_checksum(rows));
    drop(replay);
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_writer_gives_the_batch_back_unchanged() {
    let (schema, f) = Fields::schema();
    let mut w = Writer::new(Vec::new(), &schema, WriteOptions::new()).unwrap();
    let mut batch = Batch::new(&schema);
    f.fill(&mut batch, 42, 0, 1000).unwrap();
    let ptr = batch.column(f.token).unwrap().as_ptr();
    let before = batch.column(f.token).unwrap().to_vec();
    w.write(&mut batch).unwrap();
    w.write(&mut batch).unwrap();
    assert_eq!(batch.column(f.token).unwrap().as_ptr(), ptr);
    assert_eq!(batch.column(f.token).unwrap(), &before[..]);
    assert_eq!((w.batches(), w.rows()), (2, 2000));
    let bytes = w.finish().unwrap();
    assert_eq!(&bytes[..6], b"ARROW1");
}

#[test]
fn processed_batches_round_trip_with_their_control_state() {
    let (schema, f) = Fields::schema();
    let rows = 20_000u64;
    let gw = GatewayPipeline::build(&f, &schema, rows, Composition::Static, |b| b.threads(1)).unwrap();
    let mut w = Writer::new(Vec::new(), &schema, WriteOptions::new()).unwrap();
    let mut batch = Batch::new(&schema);
    let mut states = Vec::new();
    let mut costs = Vec::new();
    for first in (0..rows).step_by(5000) {
        f.fill(&mut batch, 42, first, 5000).unwrap();
        gw.pipeline.run(&mut batch).unwrap();
        states.extend_from_slice(batch.states());
        costs.extend_from_slice(batch.column(f.cost).unwrap());
        w.write(&mut batch).unwrap();
    }
    let bytes = w.finish().unwrap();
    let file = open_bytes(&bytes, ReadOptions::new()).unwrap();

    // As Arrow: the status column is the rows' control status.
    let mut status: Vec<u16> = Vec::new();
    for rb in file.record_batches() {
        let rb = rb.unwrap();
        status.extend(
            rb.column_by_name(arrow::STATUS_COLUMN).unwrap().as_primitive::<UInt16Type>().values().iter(),
        );
    }
    assert_eq!(status, states.iter().map(|s| s.status()).collect::<Vec<_>>());

    // As batches, control state restored.
    let replay = file.bind(&schema, &ImportOptions::new().restore_control(true)).unwrap();
    let mut got_states = Vec::new();
    let mut got_costs = Vec::new();
    for i in 0..replay.len() {
        replay.read(i, &mut batch).unwrap();
        got_states.extend_from_slice(batch.states());
        got_costs.extend_from_slice(batch.column(f.cost).unwrap());
    }
    assert_eq!(got_states, states);
    assert_eq!(got_costs, costs);
}

#[test]
fn arrow_rs_reads_mware_files_and_mware_reads_arrow_rs_files() {
    let bytes = gateway_file(10_000, 3000, input_log());
    // arrow-ipc's own reader (flatbuffer verifier included) accepts the file.
    let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes.clone()), None).unwrap();
    let mut n = 0;
    let ours_file = open_bytes(&bytes, ReadOptions::new()).unwrap();
    let mut ours = ours_file.record_batches();
    for rb in reader {
        let rb = rb.unwrap();
        assert_eq!(rb, ours.next().unwrap().unwrap());
        n += rb.num_rows();
    }
    assert_eq!(n, 10_000);

    // A file from arrow-ipc's FileWriter has no checksums: read unverified,
    // or rejected when checksums are required.
    let rb = open_bytes(&bytes, ReadOptions::new()).unwrap().record_batch(0).unwrap();
    let mut foreign = Vec::new();
    let mut fw = arrow_ipc::writer::FileWriter::try_new(&mut foreign, &rb.schema()).unwrap();
    fw.write(&rb).unwrap();
    fw.finish().unwrap();
    drop(fw);
    let file = open_bytes(&foreign, ReadOptions::new()).unwrap();
    let (schema, _) = Fields::schema();
    let replay = file.bind(&schema, &ImportOptions::new().optional(["cost", "score", "latency_ns"])).unwrap();
    let mut batch = Batch::new(&schema);
    let stats = replay.read(0, &mut batch).unwrap();
    assert!(!stats.verified);
    assert_eq!(stats.import.copied, 0);
    let strict = open_bytes(&foreign, ReadOptions::new().checksums(Checksums::Require)).unwrap();
    let err = strict.record_batch(0).unwrap_err();
    assert!(matches!(err, Error::ChecksumMissing { batch: 0 }), "{err}");
}

#[test]
#[cfg_attr(miri, ignore)] // opens files
fn not_an_arrow_file() {
    for bytes in [&b""[..], b"PAR1\0\0\0\0 some parquet", b"ARROW", &[0u8; 64][..]] {
        let err = open_bytes(bytes, ReadOptions::new()).unwrap_err();
        assert!(matches!(err, Error::NotArrow { .. }), "{err}");
        assert!(err.to_string().starts_with("not an Arrow IPC file"));
    }
    let path = temp_path("empty");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(MappedFile::open(&path), Err(Error::NotArrow { .. })));
    std::fs::remove_file(&path).unwrap();
    let missing = MappedFile::open("/nonexistent/mware.arrow").unwrap_err();
    assert!(matches!(missing, Error::Io { .. }) && missing.to_string().contains("/nonexistent/mware.arrow"));
}

#[test]
fn a_truncated_footer_is_rejected_or_recovered() {
    let rows = 10_000;
    let bytes = gateway_file(rows, 2500, input_log());
    for cut in [bytes.len() - 1, bytes.len() - 6, bytes.len() - 11, bytes.len() - 40] {
        let err = open_bytes(&bytes[..cut], ReadOptions::new()).unwrap_err();
        assert!(matches!(err, Error::TruncatedFooter { complete_batches: 4, .. }), "cut {cut}: {err}");
        let file = open_bytes(&bytes[..cut], ReadOptions::new().recover(true)).unwrap();
        assert_eq!(file.recovery().unwrap().batches, 4);
        assert_eq!(replay(&file, rows as u64).unwrap(), expected_checksum(rows));
    }
}

#[test]
fn a_truncated_record_batch_is_rejected_or_dropped() {
    let rows = 10_000;
    let bytes = gateway_file(rows, 2500, input_log());
    let full = open_bytes(&bytes, ReadOptions::new()).unwrap();
    // Cut inside the third record batch (metadata, then body).
    let third = full.record_batch(2).unwrap();
    let body_start = {
        let p = third.column(0).as_primitive::<UInt64Type>().values().as_ptr() as usize;
        p - full.bytes().as_ptr() as usize
    };
    for cut in [body_start - 60, body_start + 100, body_start + 20_000] {
        let err = open_bytes(&bytes[..cut], ReadOptions::new()).unwrap_err();
        assert!(
            matches!(err, Error::TruncatedBatch { batch: 2, complete_batches: 2, .. }),
            "cut {cut}: {err}"
        );
        let file = open_bytes(&bytes[..cut], ReadOptions::new().recover(true)).unwrap();
        let r = file.recovery().unwrap();
        assert_eq!(r.batches, 2);
        assert!(r.dropped_bytes > 0);
        assert_eq!(file.batch_rows().unwrap(), vec![2500, 2500]);
        replay(&file, 5000).unwrap();
    }
}

#[test]
fn a_buffer_out_of_bounds_is_rejected() {
    let rows = 1000;
    let bytes = gateway_file(rows, 1000, input_log());
    let mut bad = bytes.clone();
    let (at, _, _) = buffer_entry(&bad, 0, 1); // user_id's values
    bad[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    for checksums in [Checksums::Verify, Checksums::Skip] {
        let file = open_bytes(&bad, ReadOptions::new().checksums(checksums)).unwrap();
        let err = file.record_batch(0).unwrap_err();
        assert!(
            matches!(&err, Error::BufferOutOfBounds { batch: 0, column, .. } if column == "user_id"),
            "{err}"
        );
        let (schema, _) = Fields::schema();
        let replay =
            file.bind(&schema, &ImportOptions::new().optional(["cost", "score", "latency_ns"])).unwrap();
        assert!(matches!(replay.read(0, &mut Batch::new(&schema)), Err(Error::BufferOutOfBounds { .. })));
    }
}

#[test]
fn a_schema_the_pipeline_cannot_use_is_rejected_by_name() {
    let bytes = gateway_file(100, 100, input_log());
    let file = open_bytes(&bytes, ReadOptions::new()).unwrap();
    // `route` is u32 here, UInt16 in the file.
    let mut s = SchemaBuilder::new();
    s.hot::<u64>("user_id");
    s.hot::<u32>("route");
    let wrong_type = s.build().unwrap();
    let err = file.bind(&wrong_type, &ImportOptions::new()).unwrap_err();
    assert!(matches!(&err, Error::TypeMismatch { column, .. } if column == "route"), "{err}");
    assert_eq!(err.to_string(), "column `route` has Arrow type UInt16, the field needs UInt32");
    // `cost` is not in a request log unless optional.
    let (schema, _) = Fields::schema();
    let err = file.bind(&schema, &ImportOptions::new()).unwrap_err();
    assert!(matches!(&err, Error::MissingColumn { column } if column == "cost"), "{err}");
    // Converted into mware's error, the message survives.
    let e: mware::Error = err.into();
    assert!(e.to_string().contains("`cost`"));
}

#[test]
fn a_flipped_bit_fails_its_column_checksum() {
    let rows = 4000;
    let bytes = gateway_file(rows, 1000, input_log());
    let file = open_bytes(&bytes, ReadOptions::new()).unwrap();
    let rb = file.record_batch(1).unwrap();
    let token =
        rb.column(1).as_primitive::<UInt64Type>().values().as_ptr() as usize - file.bytes().as_ptr() as usize;
    let mut bad = bytes.clone();
    bad[token + 8 * 17 + 3] ^= 0x10;
    let file = open_bytes(&bad, ReadOptions::new()).unwrap();
    assert!(file.record_batch(0).is_ok());
    let err = file.record_batch(1).unwrap_err();
    assert!(matches!(&err, Error::ChecksumMismatch { batch: 1, column, .. } if column == "token"), "{err}");
    assert!(matches!(replay(&file, rows as u64), Err(Error::ChecksumMismatch { .. })));
    // Unverified, the flipped value is read as is.
    let skip = open_bytes(&bad, ReadOptions::new().checksums(Checksums::Skip)).unwrap();
    let rb = skip.record_batch(1).unwrap();
    let orig = Fields::schema();
    let _ = orig;
    assert_ne!(
        rb.column(1).as_primitive::<UInt64Type>().value(17),
        mware::gateway8::Request::generate(42, 1017).token
    );
    // A column the replay does not read is not verified (nor decoded).
    let mut s = SchemaBuilder::new();
    s.hot::<u64>("user_id");
    let only_users = s.build().unwrap();
    let replay = file.bind(&only_users, &ImportOptions::new()).unwrap();
    assert!(replay.read(1, &mut Batch::new(&only_users)).unwrap().verified);
}

#[test]
fn a_changed_layout_fails_the_layout_checksum() {
    let rows = 1000;
    let bytes = gateway_file(rows, 1000, input_log());
    let mut bad = bytes.clone();
    let (at, _, len) = buffer_entry(&bad, 0, 1); // user_id's values
    assert_eq!(len, rows as i64 * 8);
    bad[at + 8..at + 16].copy_from_slice(&(len - 64).to_le_bytes());
    let err = open_bytes(&bad, ReadOptions::new()).unwrap().record_batch(0).unwrap_err();
    assert!(matches!(&err, Error::ChecksumMismatch { column, .. } if column == "(layout)"), "{err}");
}

/// A file whose `b` column starts 4 bytes off its 8-byte alignment.
fn misaligned_file() -> Vec<u8> {
    let n = 16usize;
    let a = UInt16Array::from_iter_values(0..n as u16); // 32 bytes, padded to 64
    let b = UInt64Array::from_iter_values(0..n as u64);
    let rb =
        RecordBatch::try_from_iter([("a", Arc::new(a) as ArrayRef), ("b", Arc::new(b) as ArrayRef)]).unwrap();
    let mut bytes = Vec::new();
    let mut w = arrow_ipc::writer::FileWriter::try_new(&mut bytes, &rb.schema()).unwrap();
    w.write(&rb).unwrap();
    w.finish().unwrap();
    drop(w);
    // b's values buffer (a's validity, a's values, b's validity, b's
    // values), 4 bytes earlier.
    let (at, offset, len) = buffer_entry(&bytes, 0, 3);
    assert_eq!((offset % 8, len), (0, n as i64 * 8));
    bytes[at..at + 8].copy_from_slice(&(offset - 4).to_le_bytes());
    bytes
}

#[test]
fn a_misaligned_column_is_copied_once_or_rejected() {
    let bytes = misaligned_file();
    let mut s = SchemaBuilder::new();
    s.hot::<u16>("a");
    let b = s.hot::<u64>("b");
    let schema = s.build().unwrap();
    let file = open_bytes(&bytes, ReadOptions::new()).unwrap();
    let mut batch = Batch::new(&schema);
    let stats = file.bind(&schema, &ImportOptions::new()).unwrap().read(0, &mut batch).unwrap();
    assert_eq!((stats.import.zero_copy, stats.import.copied), (1, 1));
    // Shifted by 4 bytes, value k reads the high half of b[k - 1] (0) and
    // the low half of b[k].
    assert_eq!(batch.column(b).unwrap()[3], 3 << 32);
    let strict = file.bind(&schema, &ImportOptions::new().require_zero_copy(true)).unwrap();
    let err = strict.read(0, &mut batch).unwrap_err();
    assert!(matches!(&err, Error::Misaligned { column, .. } if column == "b"), "{err}");
}

#[test]
fn files_written_without_checksums_and_with_cold_fields() {
    let mut s = SchemaBuilder::new();
    let id = s.hot::<u32>("id");
    let note = s.cold::<String>("note");
    let schema = s.build().unwrap();
    let mut batch = Batch::new(&schema);
    batch
        .extend_rows(0..100u32, |row, i| {
            row.set(id, i)?;
            if i % 9 == 0 {
                row.set_cold(note, format!("n{i}"))?;
            }
            Ok(())
        })
        .unwrap();
    for checksums in [true, false] {
        let opts = WriteOptions::new().checksums(checksums).export(ExportOptions::new().control(false));
        let mut w = Writer::new(Vec::new(), &schema, opts).unwrap();
        w.write(&mut batch).unwrap();
        let bytes = w.finish().unwrap();
        let file = open_bytes(&bytes, ReadOptions::new()).unwrap();
        let mut back = Batch::new(&schema);
        let stats = file.bind(&schema, &ImportOptions::new()).unwrap().read(0, &mut back).unwrap();
        assert_eq!(stats.verified, checksums);
        assert_eq!(back.column(id).unwrap(), batch.column(id).unwrap());
        assert_eq!(
            back.cold(note).unwrap().iter().collect::<Vec<_>>(),
            batch.cold(note).unwrap().iter().collect::<Vec<_>>()
        );
        let rb = file.record_batch(0).unwrap();
        assert_eq!(rb.column(0).as_primitive::<UInt32Type>().value(99), 99);
    }
}
