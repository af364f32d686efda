//! Replaying gateway-8 from a mapped Arrow IPC file vs from batches in
//! memory, on the same pipeline; and the cost of Arrow import and export per
//! batch size (no copy: the cost per batch should not grow with its rows).
//!
//! ```text
//! cargo bench --features arrow --bench file
//! ```
//!
//! `replay/*` runs 1,048,576 rows in batches of 65,536 on one thread:
//! - `memory`: the input is already in batches; each batch gets its outputs
//!   zeroed and its control state reset, then runs;
//! - `mapped_verified` / `mapped_unverified`: each batch is read from the
//!   mapping (checks, CRC-32 verification or not, decode, zero-copy import,
//!   outputs zeroed), then runs.
//!
//! The file is written once and mapped with `populate`, so it sits in the
//! page cache and the page tables before timing starts. All variants are
//! checked to produce the workload's checksum first.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch, UInt16Array, UInt32Array, UInt64Array};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mware::Batch;
use mware::arrow::{
    Checksums, ColumnMap, ExportOptions, Exporter, ImportOptions, MappedFile, ReadOptions, WriteOptions,
    Writer,
};
use mware::gateway8::{Checksum, Columns, Composition, Fields, Gateway, GatewayPipeline, hand_fused};

const ROWS: usize = 1 << 20;
const BATCH: usize = 65_536;
const INPUTS: [&str; 5] = ["user_id", "token", "route", "payload_len", "ts_ns"];

fn write_log(path: &std::path::Path, f: &Fields, schema: &mware::Schema) {
    let opts = WriteOptions::new().export(ExportOptions::new().control(false).fields(INPUTS));
    let mut w = Writer::create(path, schema, opts).unwrap();
    let mut b = Batch::new(schema);
    for first in (0..ROWS).step_by(BATCH) {
        f.fill(&mut b, 42, first as u64, BATCH).unwrap();
        w.write(&mut b).unwrap();
    }
    w.finish().unwrap();
}

fn zero_outputs(f: &Fields, b: &mut Batch) {
    b.reset_control();
    b.column_mut(f.cost).unwrap().fill(0);
    b.column_mut(f.score).unwrap().fill(0.0);
    b.column_mut(f.latency_ns).unwrap().fill(0);
}

fn replay(c: &mut Criterion) {
    let (schema, f) = Fields::schema();
    let gw = GatewayPipeline::build(&f, &schema, ROWS as u64, Composition::Static, |b| b.threads(1)).unwrap();
    let path = std::env::temp_dir().join(format!("mware-bench-file-{}.arrow", std::process::id()));
    write_log(&path, &f, &schema);
    let expected = {
        let mut cols = Columns::generate(42, 0, ROWS);
        let mut g = Gateway::new(ROWS as u64);
        hand_fused(&mut cols, &mut g);
        Checksum::of_columns(&cols, &g)
    };

    let mut memory: Vec<Batch> = (0..ROWS / BATCH)
        .map(|k| {
            let mut b = Batch::new(&schema);
            f.fill(&mut b, 42, (k * BATCH) as u64, BATCH).unwrap();
            b
        })
        .collect();
    let run_memory = |batches: &mut [Batch]| {
        gw.reset();
        let mut sum = Checksum::default();
        for b in batches.iter_mut() {
            zero_outputs(&f, b);
            gw.pipeline.run(b).unwrap();
            f.add_to(&mut sum, b).unwrap();
        }
        sum.set_metrics(&gw.metrics.lock());
        sum
    };
    assert_eq!(run_memory(&mut memory), expected);

    let files: Vec<(&str, MappedFile)> =
        [("mapped_verified", Checksums::Verify), ("mapped_unverified", Checksums::Skip)]
            .into_iter()
            .map(|(name, c)| {
                (name, MappedFile::open_with(&path, ReadOptions::new().checksums(c).populate(true)).unwrap())
            })
            .collect();
    let mut batch = Batch::with_capacity(&schema, BATCH);
    let opts = ImportOptions::new().for_pipeline(&gw.pipeline);
    let run_mapped = |file: &MappedFile, batch: &mut Batch| {
        let replay = file.bind(&schema, &opts).unwrap();
        gw.reset();
        let mut sum = Checksum::default();
        for i in 0..replay.len() {
            replay.read(i, batch).unwrap();
            gw.pipeline.run(batch).unwrap();
            f.add_to(&mut sum, batch).unwrap();
        }
        sum.set_metrics(&gw.metrics.lock());
        sum
    };
    for (_, file) in &files {
        assert_eq!(run_mapped(file, &mut batch), expected);
    }

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("memory", |b| b.iter(|| run_memory(&mut memory)));
    for (name, file) in &files {
        g.bench_function(*name, |b| b.iter(|| run_mapped(file, &mut batch)));
    }
    g.finish();
    drop(files);
    std::fs::remove_file(&path).ok();
}

fn input_record_batch(rows: usize) -> RecordBatch {
    let cols = Columns::generate(42, 0, rows);
    RecordBatch::try_from_iter([
        ("user_id", Arc::new(UInt64Array::from(cols.user_id)) as ArrayRef),
        ("token", Arc::new(UInt64Array::from(cols.token)) as ArrayRef),
        ("route", Arc::new(UInt16Array::from(cols.route)) as ArrayRef),
        ("payload_len", Arc::new(UInt32Array::from(cols.payload_len)) as ArrayRef),
        ("ts_ns", Arc::new(UInt64Array::from(cols.ts_ns)) as ArrayRef),
        ("cost", Arc::new(UInt32Array::from(cols.cost)) as ArrayRef),
        ("score", Arc::new(arrow_array::Float32Array::from(cols.score)) as ArrayRef),
        ("latency_ns", Arc::new(UInt64Array::from(cols.latency_ns)) as ArrayRef),
    ])
    .unwrap()
}

fn import_export(c: &mut Criterion) {
    let (schema, f) = Fields::schema();
    let mut g = c.benchmark_group("arrow");
    g.sample_size(30).measurement_time(Duration::from_secs(2));
    for rows in [1024usize, 65_536, 1 << 20] {
        let rb = input_record_batch(rows);
        let map = ColumnMap::new(&schema, &rb.schema(), &ImportOptions::new()).unwrap();
        let mut batch = Batch::new(&schema);
        g.bench_with_input(BenchmarkId::new("import", rows), &rows, |b, _| {
            b.iter(|| map.import(&rb, &mut batch).unwrap())
        });
        let exporter = Exporter::new(&schema, &ExportOptions::new().control(false)).unwrap();
        let mut owned = Batch::new(&schema);
        f.fill(&mut owned, 42, 0, rows).unwrap();
        let mut slot = Some(owned);
        g.bench_with_input(BenchmarkId::new("export", rows), &rows, |b, _| {
            b.iter(|| {
                let exported = exporter.export(slot.take().unwrap()).unwrap();
                std::hint::black_box(exported.record_batch().num_rows());
                slot = Some(exported.into_batch().unwrap());
            })
        });
        let with_control = Exporter::new(&schema, &ExportOptions::new()).unwrap();
        g.bench_with_input(BenchmarkId::new("export_with_control", rows), &rows, |b, _| {
            b.iter(|| {
                let exported = with_control.export(slot.take().unwrap()).unwrap();
                slot = Some(exported.into_batch().unwrap());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, replay, import_export);
criterion_main!(benches);
