//! One request (a batch of one row) through gateway-8, against the hand
//! loop on one row.
//!
//! `cargo bench --bench latency`

use criterion::{Criterion, criterion_group, criterion_main};
use mware::Batch;
use mware::gateway8::{Columns, Composition, Fields, Gateway, GatewayPipeline, hand_fused};

fn bench(c: &mut Criterion) {
    let (schema, fields) = Fields::schema();
    let mut group = c.benchmark_group("latency");
    let mut cols = Columns::generate(42, 7, 1);
    let mut g = Gateway::new(1 << 20);
    group.bench_function("hand_fused_1row", |b| {
        b.iter(|| {
            cols.status[0] = 0;
            hand_fused(std::hint::black_box(&mut cols), &mut g);
        })
    });
    for (name, comp) in [("mware_static_1row", Composition::Static), ("mware_boxed_1row", Composition::Boxed)]
    {
        let gw = GatewayPipeline::build(&fields, &schema, 1 << 20, comp, |b| b.threads(1)).unwrap();
        let mut batch = Batch::new(&schema);
        fields.fill(&mut batch, 42, 7, 1).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                batch.reset_control();
                gw.pipeline.run(std::hint::black_box(&mut batch)).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
