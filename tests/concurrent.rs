//! One pipeline run from several threads at once (`run` takes `&self`).

use std::sync::Arc;
use std::time::Duration;

use mware::chain::{after, before};
use mware::prelude::*;

mod common;
use common::bounded;

/// A chain whose outer after-stage and inner before-stage are both
/// sequential, with a rejecting stage between them: a row rejected there
/// reaches the outer stage without the inner one. Had each walk locked a
/// stage's state when its first row reached it, a walk starting with such a
/// row would lock outer then inner, one starting with a live row inner then
/// outer, and two runs on two threads could each wait for the other's lock
/// for ever. Walks lock in layer order, so these runs finish; the test
/// fails by timeout otherwise.
#[test]
fn concurrent_runs_over_two_sequential_stages_finish() {
    bounded(Duration::from_secs(60), || {
        let mut s = SchemaBuilder::new();
        let x = s.hot::<u32>("x");
        let schema = s.build().unwrap();
        let outer = stage::sequential("outer", Read(x), 0u64, |n: &mut u64, _: &u32, _: &mut RowCtl| *n += 1);
        let gate = stage::parallel("gate", Read(x), |x: &u32, ctl: &mut RowCtl| {
            if *x % 2 == 1 {
                ctl.reject(403);
            }
        })
        .rejects();
        let inner = stage::sequential("inner", Read(x), 0u64, |n: &mut u64, _: &u32, _: &mut RowCtl| *n += 1);
        let (outer_count, inner_count) = (outer.state(), inner.state());
        let pipeline = Arc::new(
            Pipeline::builder(&schema)
                .threads(1)
                .chunk_rows(2)
                .chain(mware::chain![after(outer), before(gate), before(inner)])
                .build()
                .unwrap(),
        );
        const RUNS: u64 = 2_000;
        // One thread's batches start with a rejected row, the other's with
        // a live one.
        let workers: Vec<_> = [1u32, 0]
            .into_iter()
            .map(|first| {
                let (pipeline, schema) = (pipeline.clone(), schema.clone());
                std::thread::spawn(move || {
                    let mut batch = Batch::new(&schema);
                    for _ in 0..RUNS {
                        batch.clear();
                        for i in 0..8 {
                            batch.push_row().set(x, first + i).unwrap();
                        }
                        pipeline.run(&mut batch).unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        // Every row reached the outer stage; half of them the inner one.
        assert_eq!(*outer_count.lock(), 2 * RUNS * 8);
        assert_eq!(*inner_count.lock(), 2 * RUNS * 4);
    });
}
