//! Chains of 1, 2, 4, 8, 16 and 32 trivial stages, statically composed and
//! boxed one per layer: time per row must grow linearly with depth.
//!
//! `cargo bench --bench depth`, then `python3 scripts/depth_plot.py` fits
//! the per-stage and fixed cost from criterion's estimates and draws
//! `docs/depth.svg`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mware::chain::before;
use mware::prelude::*;
use mware::{PipelineBuilder, RowStage, Stage};

const ROWS: usize = 1 << 18;

/// Stage `i` reads `x` and updates one of eight outputs, so a deep chain is
/// eight interleaved dependency chains rather than one long one through
/// memory (which would measure store-to-load latency, not the executor).
fn step(f: &Fields, i: u32) -> impl RowStage + Stage {
    let y = f.y[i as usize % f.y.len()];
    stage::parallel(
        &format!("s{i}"),
        (Read(f.x), Write(y)),
        move |(x, y): (&u32, &mut u32), _: &mut RowCtl| *y = y.wrapping_mul(31).wrapping_add(*x ^ i),
    )
}

struct Fields {
    x: Field<u32>,
    y: [Field<u32>; 8],
}

macro_rules! static_chain {
    ($b:expr, $x:expr; $($i:literal)*) => {
        $b.chain(mware::chain![$(before(step(&$x, $i))),*])
    };
}

fn static_of(b: PipelineBuilder, x: &Fields, depth: usize) -> PipelineBuilder {
    match depth {
        1 => static_chain!(b, x; 0),
        2 => static_chain!(b, x; 0 1),
        4 => static_chain!(b, x; 0 1 2 3),
        8 => static_chain!(b, x; 0 1 2 3 4 5 6 7),
        16 => static_chain!(b, x; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15),
        32 => {
            static_chain!(b, x; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31)
        }
        _ => unreachable!("depths are 1, 2, 4 … 32"),
    }
}

fn bench(c: &mut Criterion) {
    let mut s = SchemaBuilder::new();
    let f = Fields { x: s.hot::<u32>("x"), y: std::array::from_fn(|i| s.hot::<u32>(&format!("y{i}"))) };
    let schema = s.build().unwrap();
    let mut batch = Batch::new(&schema);
    batch.resize(ROWS);
    let mut group = c.benchmark_group("depth");
    group
        .throughput(Throughput::Elements(ROWS as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    for depth in [1usize, 2, 4, 8, 16, 32] {
        let fused = static_of(Pipeline::builder(&schema).threads(1), &f, depth).build().unwrap();
        let boxed = (0..depth as u32)
            .fold(Pipeline::builder(&schema).threads(1), |b, i| b.before(step(&f, i)))
            .build()
            .unwrap();
        for (name, p) in [("static", &fused), ("boxed", &boxed)] {
            group.bench_function(BenchmarkId::new(name, depth), |b| {
                b.iter(|| {
                    batch.reset_control();
                    p.run(&mut batch).unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
