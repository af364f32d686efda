//! 0 %, 1 %, 50 % and 99 % of rows rejected by the first of eight stages:
//! the cost per row must fall as rows are rejected, never rise above the
//! all-live cost.
//!
//! `cargo bench --bench selectivity`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mware::chain::before;
use mware::gateway8::mix;
use mware::prelude::*;
use mware::{RowStage, Stage};

const ROWS: usize = 1 << 18;

fn work(x: Field<u64>, y: Field<u64>, i: u64) -> impl RowStage + Stage {
    stage::parallel(
        &format!("work{i}"),
        (Read(x), Write(y)),
        move |(x, y): (&u64, &mut u64), _: &mut RowCtl| *y = y.wrapping_add(mix(*x ^ i)),
    )
}

fn bench(c: &mut Criterion) {
    let mut s = SchemaBuilder::new();
    let key = s.hot::<u32>("key");
    let x = s.hot::<u64>("x");
    let y = s.hot::<u64>("y");
    let schema = s.build().unwrap();
    let mut batch = Batch::new(&schema);
    batch.resize(ROWS);
    for (i, k) in batch.column_mut(key).unwrap().iter_mut().enumerate() {
        *k = (mix(i as u64) % 100) as u32;
    }
    for (i, v) in batch.column_mut(x).unwrap().iter_mut().enumerate() {
        *v = i as u64;
    }
    let mut group = c.benchmark_group("selectivity");
    group
        .throughput(Throughput::Elements(ROWS as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    for percent in [0u32, 1, 50, 99] {
        let gate = stage::parallel("gate", Read(key), move |k: &u32, ctl: &mut RowCtl| {
            if *k < percent {
                ctl.reject(429)
            }
        })
        .rejects();
        let fused = Pipeline::builder(&schema)
            .threads(1)
            .chain(mware::chain![
                before(gate),
                before(work(x, y, 1)),
                before(work(x, y, 2)),
                before(work(x, y, 3)),
                before(work(x, y, 4)),
                before(work(x, y, 5)),
                before(work(x, y, 6)),
                before(work(x, y, 7)),
            ])
            .build()
            .unwrap();
        group.bench_function(BenchmarkId::new("static", percent), |b| {
            b.iter(|| {
                batch.reset_control();
                fused.run(&mut batch).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
