//! A small suite that walks every unsafe path (column pointers, fused rows,
//! unwind traps, chunk slices, cold tables, shared columns, parallel
//! workers, pinned fields, side by side pairs, a stream's runs in turn) on
//! tiny batches, so it runs under Miri: `cargo +nightly miri test --test
//! miri_core`. The cases with two threads of rayon need Tree Borrows
//! (rayon's crossbeam-epoch trips Stacked Borrows):
//! `MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks" MWARE_MIRI_THREADS=1 cargo +nightly miri test --test miri_core`.

use std::sync::Arc;

use mware::chain::{after, around, before};
use mware::prelude::*;
use mware::{Outcome, SharedColumn};

struct Fields {
    a: Field<u32>,
    b: Field<u64>,
    out: Field<u64>,
    note: Field<String>,
}

fn schema() -> (Schema, Fields) {
    let mut s = SchemaBuilder::new();
    let f = Fields { a: s.hot("a"), b: s.hot("b"), out: s.hot("out"), note: s.cold("note") };
    (s.build().unwrap(), f)
}

fn fill(f: &Fields, batch: &mut Batch, rows: u32) {
    batch.clear();
    for i in 0..rows {
        batch.push_row().set(f.a, i).unwrap().set(f.b, u64::from(i) * 3).unwrap();
    }
}

fn pipeline(schema: &Schema, f: &Fields, threads: usize) -> Pipeline {
    let total = stage::reduction(
        "total",
        Read(f.out),
        0u64,
        |t: &mut u64, out: &u64, _: &mut RowCtl| *t += *out,
        |t: &mut u64, p: &u64| *t += *p,
    );
    let tag = stage::parallel(
        "tag",
        (Read(f.a), WriteCold(f.note)),
        |(a, mut note): (&u32, mware::ColdCell<'_, String>), _: &mut RowCtl| {
            if *a % 4 == 0 {
                note.set(format!("row {a}"));
            }
        },
    );
    let gate = stage::parallel("gate", Read(f.a), |a: &u32, c: &mut RowCtl| {
        if *a % 5 == 3 {
            c.reject(403);
        }
        if *a == 7 {
            panic!("seven");
        }
    });
    // Pinned accesses (the fused loop's shared frame) beside runtime ones.
    let (b, out) = (f.b.pin::<1>().unwrap(), f.out.pin::<2>().unwrap());
    let double =
        stage::parallel("double", (ReadAt(b), WriteAt(out)), |(b, out): (&u64, &mut u64), c: &mut RowCtl| {
            *out = *b * 2;
            c.respond(200);
        });
    let seq = stage::sequential("seq", Read(f.a), 0u32, |n: &mut u32, _: &u32, _: &mut RowCtl| *n += 1);
    let bump = stage::parallel_chunks("bump", WriteAt(out), |out: &mut [u64], rows: &mut Rows<'_>| {
        rows.for_each(|i| out[i] += 1);
    });
    let names = stage::parallel("names", ReadCold(f.note), |n: Option<&String>, c: &mut RowCtl| {
        if n.is_some_and(|n| n.ends_with('4')) {
            c.fail("four");
        }
    });
    Pipeline::builder(schema)
        .threads(threads)
        .min_parallel_work(0)
        .chunk_rows(3)
        .after(total)
        .before(tag)
        .chain(mware::chain![around(gate, names), before(double), after(seq)])
        .after(bump)
        .build()
        .unwrap()
}

#[test]
fn fused_rows_traps_and_chunk_stages() {
    let (schema, f) = schema();
    // Under Miri, rayon's crossbeam-epoch trips Stacked Borrows (not our code);
    // `MIRIFLAGS=-Zmiri-tree-borrows` runs the two-thread case too.
    let threads: &[usize] =
        if cfg!(miri) && option_env!("MWARE_MIRI_THREADS").is_none() { &[1] } else { &[1, 2] };
    for &threads in threads {
        let p = pipeline(&schema, &f, threads);
        let mut batch = Batch::new(&schema);
        fill(&f, &mut batch, 10);
        p.run(&mut batch).unwrap();
        assert_eq!(batch.outcome(3), Some(Outcome::Rejected { depth: 2, status: 403 }));
        assert!(matches!(batch.outcome(7), Some(Outcome::Failed { depth: 2, .. })));
        assert_eq!(batch.error(7).unwrap().stage.as_ref(), "gate");
        assert_eq!(batch.outcome(8), Some(Outcome::Rejected { depth: 2, status: 403 }));
        assert_eq!(batch.outcome(4), Some(Outcome::Failed { depth: 2, status: 200 }));
        assert_eq!(batch.error(4).unwrap().message, "four");
        assert_eq!(batch.status(0), Some(200));
        let out = batch.column(f.out).unwrap();
        assert_eq!(out[1], 6 + 1); // doubled, then bumped by the inner after
        assert_eq!(out[3], 0); // rejected before `double`, and `bump` is inside `gate`
        assert_eq!(batch.cold(f.note).unwrap().get(4).map(String::as_str), Some("row 4"));
    }
}

#[test]
fn shared_columns_are_read_in_place_and_copied_when_written() {
    let (schema, f) = schema();
    let a: Arc<Vec<u32>> = Arc::new((0..6).collect());
    let b: Arc<Vec<u64>> = Arc::new((0..6).map(|i| i * 3).collect());
    let mut batch = Batch::new(&schema);
    batch
        .import(6, [(f.a.index(), SharedColumn::new(a.clone())), (f.b.index(), SharedColumn::new(b.clone()))])
        .unwrap();
    assert_eq!(batch.column(f.a).unwrap().as_ptr(), a.as_ptr());
    let p = pipeline(&schema, &f, 1);
    p.run(&mut batch).unwrap();
    assert_eq!(batch.column(f.a).unwrap().as_ptr(), a.as_ptr(), "read-only columns stay shared");
    assert_eq!(batch.column(f.out).unwrap()[2], 12 + 1);
    batch.column_mut(f.b).unwrap()[0] = 99;
    assert_eq!(b[0], 0, "writing copies first");
}

/// The batch keeps its hot columns' pointers between runs: writes and reads
/// through the batch's own API in between must leave them valid (Stacked
/// Borrows under Miri), and growing, clearing or importing must renew them.
#[test]
fn kept_column_pointers_survive_the_batch_api_between_runs() {
    let (schema, f) = schema();
    let p = pipeline(&schema, &f, 1);
    let outputs = |batch: &Batch| -> Vec<u64> { batch.column(f.out).unwrap().to_vec() };
    let fresh = |rows: u32, edit: &dyn Fn(&mut Batch)| {
        let mut b = Batch::new(&schema);
        fill(&f, &mut b, rows);
        edit(&mut b);
        p.run(&mut b).unwrap();
        outputs(&b)
    };
    let mut batch = Batch::new(&schema);
    fill(&f, &mut batch, 6);
    p.run(&mut batch).unwrap();
    // Values rewritten in place: the kept pointers stay.
    let rewrite = |b: &mut Batch| {
        b.column_mut(f.b).unwrap()[1] = 50;
        b.column_mut(f.out).unwrap().fill(0);
    };
    rewrite(&mut batch);
    assert_eq!(batch.column(f.b).unwrap()[1], 50);
    batch.reset_control();
    p.run(&mut batch).unwrap();
    assert_eq!(outputs(&batch), fresh(6, &rewrite));
    // Grown past its capacity: every column moves.
    let grow = |b: &mut Batch| {
        for i in 6..40 {
            b.push_row().set(f.a, i).unwrap().set(f.b, u64::from(i)).unwrap();
        }
    };
    grow(&mut batch);
    batch.column_mut(f.out).unwrap().fill(0);
    batch.reset_control();
    p.run(&mut batch).unwrap();
    let mut expected = Batch::new(&schema);
    fill(&f, &mut expected, 6);
    rewrite(&mut expected);
    grow(&mut expected);
    p.run(&mut expected).unwrap();
    assert_eq!(outputs(&batch), outputs(&expected));
    // Cleared and refilled, then shared columns imported over it.
    fill(&f, &mut batch, 5);
    p.run(&mut batch).unwrap();
    assert_eq!(outputs(&batch), fresh(5, &|_| {}));
    let a: Arc<Vec<u32>> = Arc::new((0..5).collect());
    batch.import(5, [(f.a.index(), SharedColumn::new(a))]).unwrap();
    batch.column_mut(f.b).unwrap().copy_from_slice(&[0, 3, 6, 9, 12]);
    p.run(&mut batch).unwrap();
    assert_eq!(outputs(&batch), fresh(5, &|_| {}));
    // Run empty with room reserved, then filled without reallocating: the
    // columns' start moves past their padding all the same.
    let mut batch = Batch::with_capacity(&schema, 8);
    p.run(&mut batch).unwrap();
    fill(&f, &mut batch, 5);
    p.run(&mut batch).unwrap();
    assert_eq!(outputs(&batch), fresh(5, &|_| {}));
}

/// Profiling (stops counted through `RowCtl`'s counters pointer) and an
/// async stage (chunk slices handed to a future) on the same tiny batches.
#[test]
fn profiled_and_async_runs() {
    let (schema, f) = schema();
    let p = pipeline(&schema, &f, 1);
    p.set_profiling(true);
    let mut batch = Batch::new(&schema);
    fill(&f, &mut batch, 10);
    let report = p.run(&mut batch).unwrap();
    let gate = report.stages.iter().find(|s| s.name.as_ref() == "gate").unwrap();
    // Rows 3 and 8 rejected (a % 5 == 3); row 7 panics.
    assert_eq!((gate.rows, gate.rejected, gate.failed), (10, 2, 1));

    let fetch = stage::fetch(
        "fetch",
        (Read(f.a), Write(f.out)),
        |(a, out): (&[u32], &mut [u64]), mut rows: AsyncRows<'_>| {
            Box::pin(async move {
                for i in rows.iter().collect::<Vec<_>>() {
                    out[i] = u64::from(a[i]) + 100;
                    if a[i] == 2 {
                        rows.reject(i, 429);
                    }
                }
                Ok(())
            })
        },
    )
    .rejects()
    .chunk_rows(4);
    let p = Pipeline::builder(&schema).threads(1).chunk_rows(3).before(fetch).build().unwrap();
    fill(&f, &mut batch, 10);
    let report = mware::block_on(p.run_async(&mut batch)).unwrap();
    assert_eq!(report.futures, 3);
    assert_eq!(batch.column(f.out).unwrap()[9], 109);
    assert_eq!(batch.outcome(2), Some(Outcome::Rejected { depth: 0, status: 429 }));
}

#[test]
fn side_by_side_pair_matches_one_after_the_other() {
    // Needs two threads: under Miri, only with the flags of
    // `fused_rows_traps_and_chunk_stages` (and `-Zmiri-ignore-leaks`, as
    // rayon's pool outlives the test).
    if cfg!(miri) && option_env!("MWARE_MIRI_THREADS").is_none() {
        return;
    }
    let (schema, f) = schema();
    // `gate` stops some rows (rejects, one panic) while `mix`, beside it,
    // writes `out` and rejects others: on the rows `gate` stops, `mix`'s
    // write and stop are undone.
    let build = |threads: usize| {
        let gate = stage::parallel("gate", Read(f.a), |a: &u32, c: &mut RowCtl| {
            if *a % 3 == 1 {
                c.reject(403);
            }
            if *a == 4 {
                panic!("four");
            }
        });
        let mix = stage::parallel(
            "mix",
            (Read(f.b), Write(f.out)),
            |(b, out): (&u64, &mut u64), c: &mut RowCtl| {
                *out = b.rotate_left(7) ^ 0x55;
                if *b % 4 == 2 {
                    c.reject(429);
                }
            },
        )
        .side_by_side();
        Pipeline::builder(&schema)
            .threads(threads)
            .min_parallel_work(0)
            .before(gate)
            .before(mix)
            .build()
            .unwrap()
    };
    let (one, two) = (build(1), build(2));
    let (mut a, mut b) = (Batch::new(&schema), Batch::new(&schema));
    fill(&f, &mut a, 9);
    fill(&f, &mut b, 9);
    one.run(&mut a).unwrap();
    assert_eq!(two.run(&mut b).unwrap().threads, 2);
    assert_eq!(a.column(f.out).unwrap(), b.column(f.out).unwrap());
    assert_eq!(a.states(), b.states());
    assert_eq!(b.error(4).map(|e| e.stage.to_string()).as_deref(), Some("gate"));
}

/// A stream's runs in turn (two workers, a batch each; the chain's ordered
/// span taken in turn, its last rows in two passes with the turn passed
/// between them) give every batch what one run gives it.
#[test]
fn runs_in_turn_match_one_run() {
    use mware::stream::StreamRunner;
    let (schema, f) = schema();
    let p = Arc::new(pipeline(&schema, &f, 1));
    let view = |b: &Batch| {
        let out = b.column(f.out).unwrap().to_vec();
        (out, (0..b.len()).map(|i| b.outcome(i)).collect::<Vec<_>>())
    };
    let mut alone = Batch::new(&schema);
    fill(&f, &mut alone, 10);
    p.run(&mut alone).unwrap();
    let expected = view(&alone);
    let runner = StreamRunner::builder(p).workers(2).capacity(4).build().unwrap();
    let (producer, mut consumer) = (runner.producer(), runner.consumer().unwrap());
    for _ in 0..4 {
        let mut batch = producer.batch();
        fill(&f, &mut batch, 10);
        producer.submit(batch).unwrap();
    }
    for k in 0..4 {
        let done = consumer.recv().unwrap();
        assert_eq!(done.seq, k);
        assert_eq!(view(done.batch()), expected, "batch {k}");
    }
    assert_eq!(runner.close().delivered, 4);
}
