//! gateway-8 (shared/WORKLOAD.md) through the executor equals the
//! hand-written fused loop, row by row and checksum by checksum, at every
//! batch size, thread count and composition; and the full run reproduces the
//! workload's test vector.

use mware::Batch;
use mware::gateway8::{
    Checksum, Columns, Composition, Fields, Gateway, GatewayPipeline, QUOTA, ROUTES, TEST_VECTOR, hand_fused,
};

const SEED: u64 = 42;

/// The outputs of a run, row by row, plus the state it leaves.
#[derive(Debug, PartialEq)]
struct Outputs {
    status: Vec<u16>,
    cost: Vec<u32>,
    /// `f32` as bits: the executor must compute the very same values.
    score: Vec<u32>,
    latency: Vec<u64>,
    used: [u64; ROUTES],
    checksum: Checksum,
}

/// The hand loop over the whole run at once (its state carries over rows
/// exactly as the executor's carries over batches).
fn hand(total: usize, used: [u64; ROUTES]) -> Outputs {
    let mut c = Columns::generate(SEED, 0, total);
    let mut g = Gateway::new(total as u64);
    g.used = used;
    hand_fused(&mut c, &mut g);
    Outputs {
        checksum: Checksum::of_columns(&c, &g),
        status: c.status,
        cost: c.cost,
        score: c.score.iter().map(|s| s.to_bits()).collect(),
        latency: c.latency_ns,
        used: g.used,
    }
}

/// The executor over the run in batches of `batch_rows`, recycling one batch.
fn executor(
    total: usize,
    batch_rows: usize,
    composition: Composition,
    used: [u64; ROUTES],
    configure: impl FnOnce(mware::PipelineBuilder) -> mware::PipelineBuilder,
) -> Outputs {
    let (schema, f) = Fields::schema();
    let gw =
        GatewayPipeline::build(&f, &schema, total as u64, composition, configure).expect("gateway builds");
    gw.quota.replace(used);
    let mut out = Outputs {
        status: Vec::with_capacity(total),
        cost: Vec::with_capacity(total),
        score: Vec::with_capacity(total),
        latency: Vec::with_capacity(total),
        used: [0; ROUTES],
        checksum: Checksum::default(),
    };
    let mut batch = Batch::with_capacity(&schema, batch_rows);
    let mut first = 0;
    while first < total {
        let rows = batch_rows.min(total - first);
        f.fill(&mut batch, SEED, first as u64, rows).unwrap();
        gw.pipeline.run(&mut batch).expect("run");
        f.add_to(&mut out.checksum, &batch).unwrap();
        out.status.extend(batch.states().iter().map(|s| s.status()));
        out.cost.extend_from_slice(batch.column(f.cost).unwrap());
        out.score.extend(batch.column(f.score).unwrap().iter().map(|s| s.to_bits()));
        out.latency.extend_from_slice(batch.column(f.latency_ns).unwrap());
        assert_eq!(batch.errors().count(), 0, "gateway-8 fails no row");
        first += rows;
    }
    out.checksum.set_metrics(&gw.metrics.lock());
    out.used = *gw.quota.lock();
    out
}

fn assert_same(got: &Outputs, want: &Outputs, what: &str) {
    // Row by row first, for a useful message.
    assert_eq!(got.status.len(), want.status.len(), "{what}: rows");
    for i in 0..want.status.len() {
        assert_eq!(
            (got.status[i], got.cost[i], got.score[i], got.latency[i]),
            (want.status[i], want.cost[i], want.score[i], want.latency[i]),
            "{what}: row {i} (status, cost, score bits, latency)"
        );
    }
    assert_eq!(got.used, want.used, "{what}: quota counters");
    assert_eq!(got.checksum, want.checksum, "{what}: checksum");
}

/// Quota counters preloaded close to the limit, so that small runs reach
/// the 429 path too (a fresh run needs about 800 K rows to get there).
fn near_quota() -> [u64; ROUTES] {
    let mut used = [0; ROUTES];
    for (r, u) in used.iter_mut().enumerate() {
        *u = QUOTA - 2_000 - 300 * r as u64;
    }
    used
}

#[test]
fn the_executor_equals_the_hand_loop() {
    // (rows in the run, rows per batch)
    let sizes = [(3_000, 1), (10_000, 7), (3 * 4096 + 5, 4096), (2 * 65_536 + 123, 65_536)];
    for used in [[0; ROUTES], near_quota()] {
        for (total, batch) in sizes {
            let want = hand(total, used);
            if used != [0; ROUTES] {
                assert!(want.status.contains(&429), "the preloaded quota is reached");
            }
            assert!(want.status.contains(&401) && want.status.contains(&200));
            for composition in [Composition::Static, Composition::Pinned, Composition::Boxed] {
                let what = |t: &str| format!("{total} rows in batches of {batch}, {composition:?}, {t}");
                let got = executor(total, batch, composition, used, |b| b.threads(1));
                assert_same(&got, &want, &what("1 thread"));
                let got = executor(total, batch, composition, used, |b| b.threads(2));
                assert_same(&got, &want, &what("2 threads"));
                // Many small chunks spread over two threads even for small
                // batches: the sequential quota stage must still see rows
                // in order.
                let got = executor(total, batch, composition, used, |b| {
                    b.threads(2).min_parallel_work(0).chunk_rows(64)
                });
                assert_same(&got, &want, &what("2 threads, chunks of 64"));
                let got = executor(total, batch, composition, used, |b| {
                    b.threads(2).min_parallel_work(0).chunk_rows(64).adapt_threads(true)
                });
                assert_same(&got, &want, &what("2 threads, chunks of 64, adaptive"));
            }
        }
    }
}

/// The full run of WORKLOAD.md: 1,048,576 rows, seed 42, in batches of
/// 4,096, 65,536 and 1,048,576 rows, static, pinned and boxed, on one and two
/// threads. (The hand loop itself is checked against the vector too.)
#[test]
fn the_full_run_gives_the_test_vector() {
    let total = 1 << 20;
    let mut c = Columns::generate(SEED, 0, total as usize);
    let mut g = Gateway::new(total);
    hand_fused(&mut c, &mut g);
    assert_eq!(Checksum::of_columns(&c, &g).to_string(), TEST_VECTOR, "the hand loop");

    let (schema, f) = Fields::schema();
    for composition in [Composition::Static, Composition::Pinned, Composition::Boxed] {
        for threads in [1, 2] {
            for batch_rows in [4096, 65_536, 1 << 20] {
                let gw =
                    GatewayPipeline::build(&f, &schema, total, composition, |b| b.threads(threads)).unwrap();
                let mut batch = Batch::with_capacity(&schema, batch_rows);
                let mut sum = Checksum::default();
                for first in (0..total).step_by(batch_rows) {
                    f.fill(&mut batch, SEED, first, batch_rows).unwrap();
                    gw.pipeline.run(&mut batch).unwrap();
                    f.add_to(&mut sum, &batch).unwrap();
                }
                sum.set_metrics(&gw.metrics.lock());
                assert_eq!(
                    sum.to_string(),
                    TEST_VECTOR,
                    "{composition:?}, {threads} threads, batches of {batch_rows}"
                );
            }
        }
    }
}

/// A single request, the latency case, again and again through one
/// pipeline (the run's state carrying over).
#[test]
fn single_requests() {
    let total = 500;
    let want = hand(total, near_quota());
    let got = executor(total, 1, Composition::Static, near_quota(), |b| b.threads(0));
    assert_same(&got, &want, "batches of 1 on the default thread setting");
}

/// With adaptive threads a pipeline times runs both ways and keeps timing
/// the slower one now and then; whichever way a run goes, the rows and
/// the state carried across batches are those of one thread.
#[test]
fn adaptive_threads_try_both_ways_and_change_nothing() {
    let (total, batch_rows) = (100 * 1024, 1024);
    let want = hand(total, near_quota());
    let (schema, f) = Fields::schema();
    let gw = GatewayPipeline::build(&f, &schema, total as u64, Composition::Static, |b| {
        b.threads(2).min_parallel_work(0).chunk_rows(128).adapt_threads(true)
    })
    .unwrap();
    gw.quota.replace(near_quota());
    let mut batch = Batch::with_capacity(&schema, batch_rows);
    let mut sum = Checksum::default();
    let mut threads = Vec::new();
    for first in (0..total).step_by(batch_rows) {
        f.fill(&mut batch, SEED, first as u64, batch_rows).unwrap();
        threads.push(gw.pipeline.run(&mut batch).unwrap().threads);
        f.add_to(&mut sum, &batch).unwrap();
    }
    sum.set_metrics(&gw.metrics.lock());
    assert_eq!(sum, want.checksum);
    assert_eq!(*gw.quota.lock(), want.used);
    // One size class: its first run on one thread, its second split, and
    // among the next 98 at least three retimes of the slower way.
    assert_eq!(threads[..2], [1, 2]);
    let (one, split) =
        (threads.iter().filter(|&&t| t == 1).count(), threads.iter().filter(|&&t| t == 2).count());
    assert_eq!(one + split, threads.len());
    assert!(one >= 3 && split >= 3, "{threads:?}");
}
