//! Arrow arrays in and out of batches, without copying hot columns.

#![cfg(feature = "arrow")]

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt16Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, Float32Array, Int64Array, RecordBatch, StringArray,
    UInt16Array, UInt64Array,
};
use arrow_buffer::Buffer;
use mware::arrow::{
    self, ColumnMap, Error, ExportOptions, Exporter, ImportOptions, import_record_batch, into_record_batch,
};
use mware::prelude::*;
use mware::{Outcome, SchemaBuilder};

struct S {
    schema: Schema,
    id: Field<u64>,
    route: Field<u16>,
    score: Field<f32>,
    key: Field<[u8; 16]>,
    agent: Field<String>,
    blob: Field<Vec<u8>>,
}

fn schema() -> S {
    let mut s = SchemaBuilder::new();
    let id = s.hot::<u64>("id");
    let route = s.hot::<u16>("route");
    let score = s.hot::<f32>("score");
    let key = s.hot::<[u8; 16]>("key");
    let agent = s.cold::<String>("agent");
    let blob = s.cold::<Vec<u8>>("blob");
    S { schema: s.build().unwrap(), id, route, score, key, agent, blob }
}

fn record_batch(n: usize) -> RecordBatch {
    let ids = UInt64Array::from_iter_values((0..n as u64).map(|i| i * 7));
    let routes = UInt16Array::from_iter_values((0..n as u16).map(|i| i % 64));
    let scores = Float32Array::from_iter_values((0..n).map(|i| i as f32 * 0.5));
    let keys = FixedSizeBinaryArray::try_from_iter((0..n).map(|i| [i as u8; 16])).unwrap();
    let agents = StringArray::from_iter((0..n).map(|i| (i % 3 == 0).then(|| format!("agent-{i}"))));
    let blobs = BinaryArray::from_iter((0..n).map(|i| (i % 5 == 1).then(|| vec![i as u8; i % 7])));
    RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("route", Arc::new(routes) as ArrayRef),
        ("score", Arc::new(scores) as ArrayRef),
        ("key", Arc::new(keys) as ArrayRef),
        ("agent", Arc::new(agents) as ArrayRef),
        ("blob", Arc::new(blobs) as ArrayRef),
    ])
    .unwrap()
}

fn values_ptr(a: &dyn Array) -> *const u8 {
    let d = a.to_data();
    d.buffers()[0].as_ptr()
}

#[test]
fn import_reads_hot_columns_in_place() {
    let s = schema();
    let rb = record_batch(1000);
    let mut batch = Batch::new(&s.schema);
    let stats = import_record_batch(&rb, &mut batch).unwrap();
    assert_eq!((stats.rows, stats.zero_copy, stats.copied), (1000, 4, 0));
    assert_eq!(batch.column(s.id).unwrap().as_ptr().cast(), values_ptr(rb.column(0).as_ref()));
    assert_eq!(batch.column(s.route).unwrap().as_ptr().cast(), values_ptr(rb.column(1).as_ref()));
    assert_eq!(batch.column(s.score).unwrap().as_ptr().cast(), values_ptr(rb.column(2).as_ref()));
    assert_eq!(batch.column(s.key).unwrap().as_ptr().cast(), values_ptr(rb.column(3).as_ref()));
    assert_eq!(batch.column(s.id).unwrap()[10], 70);
    assert_eq!(batch.column(s.key).unwrap()[9], [9u8; 16]);
    assert_eq!(batch.cold(s.agent).unwrap().get(3).map(String::as_str), Some("agent-3"));
    assert_eq!(batch.cold(s.agent).unwrap().get(4), None);
    assert_eq!(batch.cold(s.agent).unwrap().len(), 334);
    assert_eq!(batch.cold(s.blob).unwrap().get(6), Some(&vec![6u8; 6]));
    assert!(batch.is_shared(s.id.index()));
}

#[test]
fn import_of_a_sliced_record_batch_keeps_its_offset() {
    let s = schema();
    let rb = record_batch(1000).slice(100, 50);
    let mut batch = Batch::new(&s.schema);
    import_record_batch(&rb, &mut batch).unwrap();
    assert_eq!(batch.len(), 50);
    assert_eq!(batch.column(s.id).unwrap()[0], 700);
    assert_eq!(batch.cold(s.agent).unwrap().get(2).map(String::as_str), Some("agent-102"));
}

#[test]
fn export_points_at_the_batch_columns() {
    let s = schema();
    let mut batch = Batch::new(&s.schema);
    batch
        .extend_rows(0..500u64, |row, i| {
            row.set(s.id, i)?.set(s.route, i as u16)?.set(s.score, i as f32)?.set(s.key, [i as u8; 16])?;
            if i % 10 == 0 {
                row.set_cold(s.agent, format!("a{i}"))?;
            }
            Ok(())
        })
        .unwrap();
    let ptrs = [
        batch.column(s.id).unwrap().as_ptr().cast::<u8>(),
        batch.column(s.route).unwrap().as_ptr().cast(),
        batch.column(s.score).unwrap().as_ptr().cast(),
        batch.column(s.key).unwrap().as_ptr().cast(),
    ];
    let rb = into_record_batch(batch).unwrap();
    for (c, p) in ptrs.iter().enumerate() {
        assert_eq!(values_ptr(rb.column(c).as_ref()), *p, "column {c} was copied");
        assert_eq!(*p as usize % 64, 0, "batch columns are 64-byte aligned");
    }
    assert_eq!(rb.column(0).as_primitive::<UInt64Type>().value(499), 499);
    let agent = rb.column(4).as_string::<i32>();
    assert_eq!((agent.value(20), agent.is_null(21), agent.null_count()), ("a20", true, 450));
    assert_eq!(rb.column(5).null_count(), 500);
    let names: Vec<_> = rb.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(&names[6..], &arrow::CONTROL_COLUMNS);
}

#[test]
fn import_then_export_hands_the_same_memory_back() {
    let s = schema();
    let rb = record_batch(300);
    let mut batch = Batch::new(&s.schema);
    import_record_batch(&rb, &mut batch).unwrap();
    let out = into_record_batch(batch).unwrap();
    for c in 0..4 {
        assert_eq!(values_ptr(out.column(c).as_ref()), values_ptr(rb.column(c).as_ref()));
    }
    for c in 0..6 {
        assert_eq!(out.column(c).to_data(), rb.column(c).to_data(), "column {c}");
    }
}

#[test]
fn an_exported_batch_comes_back_when_arrow_lets_go() {
    let s = schema();
    let mut batch = Batch::new(&s.schema);
    batch.resize(100);
    let ptr = batch.column(s.id).unwrap().as_ptr();
    let ex = Exporter::new(&s.schema, &ExportOptions::new()).unwrap();
    let exported = ex.export(batch).unwrap();
    let back = exported.into_batch().expect("no other reference");
    assert_eq!(back.column(s.id).unwrap().as_ptr(), ptr);

    let exported = ex.export(back).unwrap();
    let kept = exported.record_batch().column(0).clone();
    assert!(exported.into_batch().is_none(), "an array still points into the batch");
    assert_eq!(kept.len(), 100);
}

#[test]
fn control_state_is_exported_and_restored() {
    let mut sb = SchemaBuilder::new();
    let v = sb.hot::<u32>("v");
    let schema = sb.build().unwrap();
    let check = stage::parallel("check", Read(v), |v: &u32, ctl: &mut RowCtl| {
        if *v % 3 == 1 {
            ctl.reject(403);
        }
    })
    .rejects();
    let boom = stage::parallel("boom", Read(v), |v: &u32, ctl: &mut RowCtl| {
        if *v % 3 == 2 {
            ctl.fail(format!("bad {v}"));
        }
    });
    let ok = stage::parallel("ok", (), |_: (), ctl: &mut RowCtl| ctl.respond(200));
    let p = Pipeline::builder(&schema).threads(1).before(check).before(boom).handler(ok).build().unwrap();
    let mut batch = Batch::new(&schema);
    batch.extend_rows(0..30u32, |row, i| row.set(v, i).map(|_| ())).unwrap();
    p.run(&mut batch).unwrap();
    let states = batch.states().to_vec();
    let errors: Vec<_> = batch.errors().map(|(r, e)| (r, e.clone())).collect();
    assert!(!errors.is_empty());

    let rb = into_record_batch(batch).unwrap();
    let status = rb.column_by_name(arrow::STATUS_COLUMN).unwrap().as_primitive::<UInt16Type>();
    let depth = rb.column_by_name(arrow::STOP_DEPTH_COLUMN).unwrap().as_primitive::<UInt16Type>();
    let failed = rb.column_by_name(arrow::FAILED_COLUMN).unwrap().as_boolean();
    let error = rb.column_by_name(arrow::ERROR_COLUMN).unwrap().as_string::<i32>();
    assert_eq!(
        (status.value(0), depth.is_null(0), failed.value(0), error.is_null(0)),
        (200, true, false, true)
    );
    assert_eq!((status.value(1), depth.value(1), failed.value(1)), (403, 0, false));
    assert_eq!((depth.value(2), failed.value(2)), (1, true));
    assert!(error.value(2).contains("bad 2"), "{}", error.value(2));

    let mut back = Batch::new(&schema);
    let map = ColumnMap::new(&schema, &rb.schema(), &ImportOptions::new().restore_control(true)).unwrap();
    map.import(&rb, &mut back).unwrap();
    assert_eq!(back.states(), &states[..]);
    let back_errors: Vec<_> = back.errors().map(|(r, e)| (r, e.clone())).collect();
    assert_eq!(back_errors, errors);
    assert_eq!(back.outcome(2), Some(Outcome::Failed { depth: 1, status: 0 }));

    let mut fresh = Batch::new(&schema);
    import_record_batch(&rb, &mut fresh).unwrap();
    assert!(fresh.states().iter().all(|s| s.is_live() && s.status() == 0), "not restored by default");
}

#[test]
fn mismatches_are_errors_that_name_the_column() {
    let s = schema();
    let rb = record_batch(10);
    let mut batch = Batch::new(&s.schema);

    // A column of the wrong type.
    let mut cols: Vec<ArrayRef> = rb.columns().to_vec();
    cols[0] = Arc::new(Int64Array::from_iter_values(0..10));
    let bad =
        RecordBatch::try_from_iter(rb.schema().fields().iter().map(|f| f.name().clone()).zip(cols)).unwrap();
    match import_record_batch(&bad, &mut batch) {
        Err(Error::TypeMismatch { column, expected, found }) => {
            assert_eq!((column.as_str(), expected.as_str(), found.as_str()), ("id", "UInt64", "Int64"));
        }
        other => panic!("{other:?}"),
    }

    // A missing hot column, then the same column made optional.
    let without = rb.project(&[1, 2, 3, 4, 5]).unwrap();
    let err = import_record_batch(&without, &mut batch).unwrap_err();
    assert!(matches!(&err, Error::MissingColumn { column } if column == "id"), "{err}");
    assert!(err.to_string().contains("`id`"));
    let map = ColumnMap::new(&s.schema, &without.schema(), &ImportOptions::new().optional(["id"])).unwrap();
    let stats = map.import(&without, &mut batch).unwrap();
    assert_eq!((stats.zeroed, batch.column(s.id).unwrap()), (1, &[0u64; 10][..]));

    // Nulls in a hot column.
    let mut cols: Vec<ArrayRef> = rb.columns().to_vec();
    cols[1] = Arc::new(UInt16Array::from(vec![
        Some(1),
        None,
        Some(3),
        None,
        None,
        Some(6),
        Some(7),
        Some(8),
        Some(9),
        Some(0),
    ]));
    let nulls =
        RecordBatch::try_from_iter(rb.schema().fields().iter().map(|f| f.name().clone()).zip(cols)).unwrap();
    let err = import_record_batch(&nulls, &mut batch).unwrap_err();
    assert!(matches!(&err, Error::NullsInHotColumn { column, nulls: 3 } if column == "route"), "{err}");

    // A cold column of the wrong type.
    let mut cols: Vec<ArrayRef> = rb.columns().to_vec();
    cols[4] = Arc::new(UInt64Array::from_iter_values(0..10));
    let cold =
        RecordBatch::try_from_iter(rb.schema().fields().iter().map(|f| f.name().clone()).zip(cols)).unwrap();
    let err = import_record_batch(&cold, &mut batch).unwrap_err();
    assert!(matches!(&err, Error::TypeMismatch { column, .. } if column == "agent"), "{err}");

    // A cold type Arrow cannot carry, on export.
    let mut sb = SchemaBuilder::new();
    sb.hot::<u64>("id");
    sb.cold::<std::collections::HashMap<String, String>>("headers");
    let schema2 = sb.build().unwrap();
    let err = Exporter::new(&schema2, &ExportOptions::new()).unwrap_err();
    assert!(matches!(&err, Error::Unsupported { column, .. } if column == "headers"), "{err}");
    assert!(Exporter::new(&schema2, &ExportOptions::new().fields(["id"])).is_ok());

    // A batch of another schema.
    let other = Batch::new(&schema2);
    let ex = Exporter::new(&s.schema, &ExportOptions::new()).unwrap();
    assert!(matches!(ex.export(other), Err(Error::Mware(mware::Error::SchemaMismatch))));
}

#[test]
fn a_misaligned_column_is_copied_once_or_rejected() {
    let mut sb = SchemaBuilder::new();
    let pair = sb.hot::<[u32; 2]>("pair");
    let schema = sb.build().unwrap();
    let n = 64;
    // 8-byte values starting 4 bytes past an aligned address.
    let mut raw = vec![0u8; 4];
    for i in 0..n as u32 {
        raw.extend_from_slice(&i.to_le_bytes());
        raw.extend_from_slice(&(i * 2).to_le_bytes());
    }
    let aligned = Buffer::from_slice_ref(&raw);
    let values = aligned.slice_with_length(4, n * 8);
    assert_eq!(values.as_ptr() as usize % 8, 4);
    let col = FixedSizeBinaryArray::new(8, values, None);
    let rb = RecordBatch::try_from_iter([("pair", Arc::new(col) as ArrayRef)]).unwrap();

    let mut batch = Batch::new(&schema);
    let stats = import_record_batch(&rb, &mut batch).unwrap();
    assert_eq!((stats.copied, stats.zero_copy), (1, 0));
    assert_eq!(batch.column(pair).unwrap()[5], [5, 10]);
    assert_eq!(batch.column(pair).unwrap().as_ptr() as usize % 64, 0);

    let map = ColumnMap::new(&schema, &rb.schema(), &ImportOptions::new().require_zero_copy(true)).unwrap();
    let err = map.import(&rb, &mut batch).unwrap_err();
    assert!(matches!(&err, Error::Misaligned { column, align: 8, .. } if column == "pair"), "{err}");
}

#[test]
fn a_pipeline_copies_only_the_columns_it_writes() {
    let mut sb = SchemaBuilder::new();
    let a = sb.hot::<u64>("a");
    let b = sb.hot::<u64>("b");
    let schema = sb.build().unwrap();
    let double =
        stage::parallel("double", (Read(a), Write(b)), |(a, b): (&u64, &mut u64), _: &mut RowCtl| {
            *b = *a * 2
        });
    let p = Pipeline::builder(&schema).threads(1).before(double).build().unwrap();
    let av = UInt64Array::from_iter_values(0..1000);
    let bv = UInt64Array::from_iter_values(std::iter::repeat_n(9, 1000));
    let rb = RecordBatch::try_from_iter([("a", Arc::new(av) as ArrayRef), ("b", Arc::new(bv) as ArrayRef)])
        .unwrap();
    let mut batch = Batch::new(&schema);
    import_record_batch(&rb, &mut batch).unwrap();
    p.run(&mut batch).unwrap();
    assert!(batch.is_shared(a.index()) && !batch.is_shared(b.index()));
    assert_eq!(batch.column(a).unwrap().as_ptr().cast(), values_ptr(rb.column(0).as_ref()));
    assert_eq!(batch.column(b).unwrap()[21], 42);
    assert_eq!(rb.column(1).as_primitive::<UInt64Type>().value(21), 9, "the Arrow input is untouched");
}
