//! A batch run again without `reset_control` keeps what the first run
//! stopped: the second run's stages see only the rows still live (and
//! after-stages the rows stopped deeper than them), however the stages are
//! composed and however many threads run them. (A run whose rows all start
//! live skips the look at the control words before its first group, and
//! before a group whose after-stages every earlier step stops rows deeper
//! than — here the chunk stage `tally`, own pass after `count` and `odd`;
//! this checks that it does so only then.)

use mware::chain::{after, before};
use mware::prelude::*;

struct Fields {
    id: Field<u32>,
    seen: Field<u32>,
    tallied: Field<u32>,
}

fn schema() -> (Schema, Fields) {
    let mut s = SchemaBuilder::new();
    let fields = Fields { id: s.hot("id"), seen: s.hot("seen"), tallied: s.hot("tallied") };
    (s.build().expect("valid schema"), fields)
}

/// Three layers: `tally`, an after-stage that counts the rows it sees and
/// rejects ids divisible by 3 (so they stop at depth 0); `count`, a
/// before-stage that counts the rows it sees; `odd`, which rejects odd ids
/// (depth 2). Chained: one static chain of row stages. Not chained: the
/// same as chunk stages, each its own pass.
fn pipeline(schema: &Schema, f: &Fields, chained: bool, threads: usize) -> Pipeline {
    let b = Pipeline::builder(schema).threads(threads).chunk_rows(16).min_parallel_work(0);
    let b = if chained {
        let tally = stage::parallel(
            "tally",
            (Read(f.id), Write(f.tallied)),
            |(id, n): (&u32, &mut u32), ctl: &mut RowCtl| {
                *n += 1;
                if id % 3 == 0 {
                    ctl.reject(429)
                }
            },
        )
        .rejects();
        let count = stage::parallel("count", Write(f.seen), |seen: &mut u32, _: &mut RowCtl| *seen += 1);
        let odd = stage::parallel("odd", Read(f.id), |id: &u32, ctl: &mut RowCtl| {
            if id % 2 == 1 {
                ctl.reject(403)
            }
        })
        .rejects();
        b.chain(mware::chain![after(tally), before(count), before(odd)])
    } else {
        let tally = stage::parallel_chunks(
            "tally",
            (Read(f.id), Write(f.tallied)),
            |(id, n): (&[u32], &mut [u32]), rows: &mut Rows| {
                let mut stop = Vec::new();
                rows.for_each(|i| {
                    n[i] += 1;
                    if id[i] % 3 == 0 {
                        stop.push(i);
                    }
                });
                stop.into_iter().for_each(|i| rows.reject(i, 429));
            },
        )
        .rejects();
        let count = stage::parallel_chunks("count", Write(f.seen), |seen: &mut [u32], rows: &mut Rows| {
            rows.for_each(|i| seen[i] += 1)
        });
        let odd = stage::parallel_chunks("odd", Read(f.id), |id: &[u32], rows: &mut Rows| {
            let mut stop = Vec::new();
            rows.for_each(|i| {
                if id[i] % 2 == 1 {
                    stop.push(i)
                }
            });
            stop.into_iter().for_each(|i| rows.reject(i, 403));
        })
        .rejects();
        b.after(tally).before(count).before(odd)
    };
    b.build().expect("valid pipeline")
}

#[test]
fn a_second_run_sees_only_the_rows_the_first_left_live() {
    let (schema, f) = schema();
    for chained in [true, false] {
        for threads in [1, 2] {
            let p = pipeline(&schema, &f, chained, threads);
            let mut batch = Batch::new(&schema);
            batch.resize(100);
            for (i, id) in batch.column_mut(f.id).unwrap().iter_mut().enumerate() {
                *id = i as u32;
            }
            p.run(&mut batch).unwrap();
            p.run(&mut batch).unwrap();
            let what = format!("chained {chained}, threads {threads}");
            let seen = batch.column(f.seen).unwrap();
            let tallied = batch.column(f.tallied).unwrap();
            for i in 0..100 {
                // The first run left ids divisible by 3 stopped at depth 0
                // (by `tally`) and the other odd ids stopped at depth 2: in
                // the second run `count` sees only the rest, `tally` every
                // row not stopped at its own depth.
                let by_tally = i % 3 == 0;
                let want_seen = if by_tally || i % 2 == 1 { 1 } else { 2 };
                let want_tallied = if by_tally { 1 } else { 2 };
                assert_eq!(seen[i], want_seen, "row {i} seen, {what}");
                assert_eq!(tallied[i], want_tallied, "row {i} tallied, {what}");
            }
            batch.reset_control();
            p.run(&mut batch).unwrap();
            assert_eq!(batch.column(f.seen).unwrap()[1], 2, "a reset batch is live again, {what}");
        }
    }
}
