//! A stage that panics or errors affects only its rows: the run returns
//! `Ok`, those rows come back failed with the stage's name and message, and
//! every other row is intact.

mod common;

use std::time::Duration;

use common::quiet_panics;
use mware::chain::{after, around, before};
use mware::prelude::*;
use mware::{Outcome, StageError};

struct F {
    schema: Schema,
    id: Field<u32>,
    out: Field<u32>,
    seen_outer: Field<u32>,
    seen_inner: Field<u32>,
    counter: Field<u64>,
}

fn fields() -> F {
    let mut s = SchemaBuilder::new();
    let id = s.hot("id");
    let out = s.hot("out");
    let seen_outer = s.hot("seen_outer");
    let seen_inner = s.hot("seen_inner");
    let counter = s.hot("counter");
    F { schema: s.build().unwrap(), id, out, seen_outer, seen_inner, counter }
}

fn make_batch(f: &F, rows: u32) -> Batch {
    let mut b = Batch::new(&f.schema);
    b.resize(rows as usize);
    for (i, v) in b.column_mut(f.id).unwrap().iter_mut().enumerate() {
        *v = i as u32;
    }
    b
}

fn is_bad(id: u32) -> bool {
    id % 7 == 3
}

fn configs() -> Vec<(usize, usize)> {
    // (threads, chunk_rows)
    vec![(1, 4), (1, 4096), (2, 4), (2, 64)]
}

fn configure(b: mware::PipelineBuilder, threads: usize, chunk_rows: usize) -> mware::PipelineBuilder {
    b.threads(threads).min_parallel_work(if threads > 1 { 0 } else { usize::MAX }).chunk_rows(chunk_rows)
}

/// Layers: 0 = after(seen_outer), 1 = before(work: panics on bad rows),
/// 2 = around(inner, seen_inner).
#[test]
fn a_panicking_row_stage_fails_only_its_rows() {
    quiet_panics();
    let f = fields();
    for (threads, chunk_rows) in configs() {
        for fused in [false, true] {
            let seen_outer =
                stage::parallel("outer", Write(f.seen_outer), |s: &mut u32, _: &mut RowCtl| *s += 1);
            let work = stage::parallel(
                "work",
                (Read(f.id), Write(f.out)),
                |(id, out): (&u32, &mut u32), ctl: &mut RowCtl| {
                    if is_bad(*id) {
                        panic!("boom: bad row {id}");
                    }
                    *out = id * 2;
                    ctl.respond(200);
                },
            );
            let inner = stage::parallel("inner", Write(f.counter), |c: &mut u64, _: &mut RowCtl| *c += 1);
            let seen_inner =
                stage::parallel("seen_inner", Write(f.seen_inner), |s: &mut u32, _: &mut RowCtl| *s += 1);
            let b = configure(Pipeline::builder(&f.schema), threads, chunk_rows);
            let p = if fused {
                b.chain(mware::chain![after(seen_outer), before(work), around(inner, seen_inner)])
            } else {
                b.after(seen_outer).before(work).around(inner, seen_inner)
            }
            .build()
            .unwrap();
            let n = 1000;
            let mut batch = make_batch(&f, n);
            p.run(&mut batch).expect("a panicking stage does not fail the run");
            for i in 0..n as usize {
                let id = i as u32;
                let ctx = format!("row {i}, threads {threads}, chunk_rows {chunk_rows}, fused {fused}");
                assert_eq!(
                    batch.column(f.seen_outer).unwrap()[i],
                    1,
                    "the outer after sees every row: {ctx}"
                );
                if is_bad(id) {
                    assert_eq!(batch.outcome(i), Some(Outcome::Failed { depth: 1, status: 0 }), "{ctx}");
                    let e = batch.error(i).expect("an error");
                    assert_eq!(
                        e,
                        &StageError {
                            stage: "work".into(),
                            message: format!("boom: bad row {id}"),
                            panicked: true
                        },
                        "{ctx}"
                    );
                    assert_eq!(batch.column(f.out).unwrap()[i], 0, "{ctx}");
                    assert_eq!(batch.column(f.counter).unwrap()[i], 0, "inner before skipped: {ctx}");
                    assert_eq!(batch.column(f.seen_inner).unwrap()[i], 0, "inner after skipped: {ctx}");
                } else {
                    assert_eq!(batch.outcome(i), Some(Outcome::Live { status: 200 }), "{ctx}");
                    assert!(batch.error(i).is_none(), "{ctx}");
                    assert_eq!(batch.column(f.out).unwrap()[i], id * 2, "{ctx}");
                    assert_eq!(batch.column(f.counter).unwrap()[i], 1, "{ctx}");
                    assert_eq!(batch.column(f.seen_inner).unwrap()[i], 1, "{ctx}");
                }
            }
            assert_eq!(batch.errors().count(), (0..n).filter(|&i| is_bad(i)).count());
        }
    }
}

/// A panic in an after-stage stops the row at that layer; layers outside it
/// still run their after-stages, and the error names the after-stage.
#[test]
fn a_panicking_after_stage_fails_its_rows_at_its_depth() {
    quiet_panics();
    let f = fields();
    for (threads, chunk_rows) in configs() {
        let outer = stage::parallel("outer", Write(f.seen_outer), |s: &mut u32, _: &mut RowCtl| *s += 1);
        let explode = stage::parallel("explode", Read(f.id), |id: &u32, _: &mut RowCtl| {
            if is_bad(*id) {
                panic!("boom after {id}");
            }
        });
        let handler = stage::parallel("handler", Read(f.id), |_: &u32, ctl: &mut RowCtl| ctl.respond(201));
        let p = configure(Pipeline::builder(&f.schema), threads, chunk_rows)
            .chain(mware::chain![after(outer), after(explode), before(handler)])
            .build()
            .unwrap();
        let mut batch = make_batch(&f, 100);
        p.run(&mut batch).unwrap();
        for i in 0..100 {
            assert_eq!(batch.column(f.seen_outer).unwrap()[i], 1);
            if is_bad(i as u32) {
                // The handler had responded 201 before the after-stage ran.
                assert_eq!(batch.outcome(i), Some(Outcome::Failed { depth: 1, status: 201 }));
                assert_eq!(&*batch.error(i).unwrap().stage, "explode");
                assert_eq!(batch.error(i).unwrap().message, format!("boom after {i}"));
            } else {
                assert_eq!(batch.outcome(i), Some(Outcome::Live { status: 201 }));
            }
        }
    }
}

/// `ctl.fail` is the non-panicking form: same outcome, `panicked: false`.
#[test]
fn failing_rows_keep_their_reason() {
    let f = fields();
    for (threads, chunk_rows) in configs() {
        let outer = stage::parallel("outer", Write(f.seen_outer), |s: &mut u32, _: &mut RowCtl| *s += 1);
        let check = stage::parallel("check", Read(f.id), |id: &u32, ctl: &mut RowCtl| {
            if is_bad(*id) {
                ctl.fail(format!("id {id} is bad"));
            }
        });
        let after_check =
            stage::parallel("after_check", Write(f.seen_inner), |s: &mut u32, _: &mut RowCtl| *s += 1);
        let p = configure(Pipeline::builder(&f.schema), threads, chunk_rows)
            .after(outer)
            .around(check, after_check)
            .build()
            .unwrap();
        let mut batch = make_batch(&f, 50);
        p.run(&mut batch).unwrap();
        for i in 0..50 {
            let bad = is_bad(i as u32);
            assert_eq!(batch.column(f.seen_outer).unwrap()[i], 1);
            // The failing layer's own after-stage does not see the row.
            assert_eq!(batch.column(f.seen_inner).unwrap()[i], u32::from(!bad));
            if bad {
                assert_eq!(batch.outcome(i), Some(Outcome::Failed { depth: 1, status: 0 }));
                assert_eq!(
                    batch.error(i),
                    Some(&StageError {
                        stage: "check".into(),
                        message: format!("id {i} is bad"),
                        panicked: false
                    })
                );
            } else {
                assert_eq!(batch.outcome(i), Some(Outcome::Live { status: 0 }));
                assert_eq!(batch.error(i), None);
            }
        }
    }
}

/// A chunk stage that panics fails every row it was given in that chunk —
/// and only those: rows of the chunk stopped earlier keep their outcome,
/// other chunks are untouched, errors it reported before panicking are
/// replaced by the panic.
#[test]
fn a_panicking_chunk_stage_fails_the_rows_of_its_chunk() {
    quiet_panics();
    let f = fields();
    let chunk = 8;
    for threads in [1, 2] {
        let outer = stage::parallel("outer", Write(f.seen_outer), |s: &mut u32, _: &mut RowCtl| *s += 1);
        // Rejects row 17 before the chunk stage runs.
        let gate = stage::parallel("gate", Read(f.id), |id: &u32, ctl: &mut RowCtl| {
            if *id == 17 {
                ctl.reject(403);
            }
        });
        // Chunk 16..24 holds row 20: the stage fails row 18 first, writes,
        // then panics. Chunk 40..48 panics at once.
        let blow = stage::parallel_chunks(
            "blow",
            (Read(f.id), Write(f.out)),
            |(id, out): (&[u32], &mut [u32]), rows: &mut Rows<'_>| {
                let sel: Vec<usize> = match rows.selection() {
                    Selection::Dense(n) => (0..n).collect(),
                    Selection::Sparse(s) => s.iter().map(|&i| i as usize).collect(),
                };
                if id.contains(&40) {
                    panic!("boom: chunk at {}", rows.first_row());
                }
                for i in sel {
                    if id[i] == 18 {
                        rows.fail(i, "eighteen");
                    }
                    out[i] = id[i] + 1;
                    rows.respond(i, 200);
                }
                if id.contains(&20) {
                    panic!("boom: chunk at {}", rows.first_row());
                }
            },
        );
        let p = configure(Pipeline::builder(&f.schema), threads, chunk)
            .after(outer)
            .before(gate)
            .before(blow)
            .build()
            .unwrap();
        let n = 64;
        let mut batch = make_batch(&f, n);
        p.run(&mut batch).unwrap();
        for i in 0..n as usize {
            let ctx = format!("row {i}, threads {threads}");
            assert_eq!(batch.column(f.seen_outer).unwrap()[i], 1, "{ctx}");
            let in_bad_chunk = (16..24).contains(&i) || (40..48).contains(&i);
            if i == 17 {
                assert_eq!(batch.outcome(i), Some(Outcome::Rejected { depth: 1, status: 403 }), "{ctx}");
                assert!(batch.error(i).is_none(), "{ctx}");
            } else if in_bad_chunk {
                let Some(Outcome::Failed { depth: 2, .. }) = batch.outcome(i) else {
                    panic!("{ctx}: {:?}", batch.outcome(i));
                };
                let first = i / chunk * chunk;
                assert_eq!(
                    batch.error(i),
                    Some(&StageError {
                        stage: "blow".into(),
                        message: format!("boom: chunk at {first}"),
                        panicked: true
                    }),
                    "{ctx}"
                );
            } else {
                assert_eq!(batch.outcome(i), Some(Outcome::Live { status: 200 }), "{ctx}");
                assert_eq!(batch.column(f.out).unwrap()[i], i as u32 + 1, "{ctx}");
                assert!(batch.error(i).is_none(), "{ctx}");
            }
        }
        assert_eq!(batch.errors().count(), 15);
    }
}

/// A whole-batch stage that panics fails every row it was given.
#[test]
fn a_panicking_whole_batch_stage_fails_every_visible_row() {
    quiet_panics();
    let f = fields();
    let gate = stage::parallel("gate", Read(f.id), |id: &u32, ctl: &mut RowCtl| {
        if *id < 3 {
            ctl.reject(400);
        }
    });
    let whole = stage::whole_batch("whole", Read(f.id), (), |_: &mut (), _: &[u32], _: &mut Rows<'_>| {
        panic!("boom whole")
    });
    let outer = stage::parallel("outer", Write(f.seen_outer), |s: &mut u32, _: &mut RowCtl| *s += 1);
    let p = Pipeline::builder(&f.schema).after(outer).before(gate).before(whole).build().unwrap();
    let mut batch = make_batch(&f, 10);
    p.run(&mut batch).unwrap();
    for i in 0..10 {
        assert_eq!(batch.column(f.seen_outer).unwrap()[i], 1);
        if i < 3 {
            assert_eq!(batch.outcome(i), Some(Outcome::Rejected { depth: 1, status: 400 }));
        } else {
            assert_eq!(batch.outcome(i), Some(Outcome::Failed { depth: 2, status: 0 }));
            assert_eq!(batch.error(i).unwrap().message, "boom whole");
        }
    }
}

/// The state of a sequential stage survives a panic in that stage (the lock
/// is not poisoned) and in its neighbours, and keeps counting across
/// batches; a reduction keeps the rows that did not panic.
#[test]
fn state_survives_panics() {
    quiet_panics();
    let f = fields();
    for (threads, chunk_rows) in configs() {
        for fused in [false, true] {
            // Counts every row it sees, writes the count, then panics on bad rows.
            let count = stage::sequential(
                "count",
                (Read(f.id), Write(f.counter)),
                0u64,
                |n: &mut u64, (id, c): (&u32, &mut u64), _: &mut RowCtl| {
                    *n += 1;
                    if is_bad(*id) {
                        panic!("boom count {id}");
                    }
                    *c = *n;
                },
            );
            let sum = stage::reduction(
                "sum",
                Read(f.id),
                0u64,
                |s: &mut u64, id: &u32, _: &mut RowCtl| {
                    if id % 5 == 0 {
                        panic!("boom sum {id}");
                    }
                    *s += *id as u64;
                },
                |t: &mut u64, p: &u64| *t += p,
            );
            let (state, total) = (count.state(), sum.total());
            let b = configure(Pipeline::builder(&f.schema), threads, chunk_rows);
            let p = if fused {
                b.chain(mware::chain![after(sum), before(count)])
            } else {
                b.after(sum).before(count)
            }
            .build()
            .unwrap();
            let n = 300u32;
            let mut batch = make_batch(&f, n);
            p.run(&mut batch).unwrap();
            assert_eq!(*state.lock(), n as u64, "every row was counted once");
            let mut seen = 0;
            for i in 0..n as usize {
                let id = i as u32;
                if id % 5 == 0 {
                    // The outer reduction panicked on it after anything else.
                    assert_eq!(batch.error(i).unwrap().stage.as_ref(), "sum");
                    assert_eq!(batch.outcome(i), Some(Outcome::Failed { depth: 0, status: 0 }));
                }
                if is_bad(id) {
                    if id % 5 != 0 {
                        assert_eq!(batch.error(i).unwrap().stage.as_ref(), "count");
                        assert_eq!(batch.outcome(i), Some(Outcome::Failed { depth: 1, status: 0 }));
                    }
                } else {
                    seen += 1;
                    assert_eq!(batch.column(f.counter).unwrap()[i], i as u64 + 1, "row order");
                }
            }
            assert!(seen > 0);
            // The reduction saw every row (failed ones too: it is the outer
            // after-stage) and panicked on multiples of 5.
            let want: u64 = (0..n).filter(|i| i % 5 != 0).map(u64::from).sum();
            assert_eq!(*total.lock(), want, "threads {threads}, chunk_rows {chunk_rows}, fused {fused}");
            // A second batch continues the count.
            let mut batch2 = make_batch(&f, 10);
            p.run(&mut batch2).unwrap();
            assert_eq!(*state.lock(), n as u64 + 10);
            assert_eq!(batch2.column(f.counter).unwrap()[0], n as u64 + 1);
        }
    }
}

/// A sequential chunk stage that panics keeps the state it built so far.
#[test]
fn sequential_chunk_state_survives_a_panic() {
    quiet_panics();
    let f = fields();
    for threads in [1, 2] {
        let st = stage::sequential_chunks(
            "seqc",
            Read(f.id),
            0u64,
            |n: &mut u64, ids: &[u32], rows: &mut Rows<'_>| {
                *n += rows.len() as u64;
                if ids.contains(&13) {
                    panic!("boom seqc");
                }
            },
        );
        let state = st.state();
        let p = configure(Pipeline::builder(&f.schema), threads, 5).before(st).build().unwrap();
        let mut batch = make_batch(&f, 40);
        p.run(&mut batch).unwrap();
        assert_eq!(*state.lock(), 40);
        for i in 0..40 {
            let failed = (10..15).contains(&i);
            assert_eq!(matches!(batch.outcome(i), Some(Outcome::Failed { .. })), failed, "row {i}");
        }
    }
}

/// Payloads that are not strings still fail their row with a message.
#[test]
fn non_string_panic_payloads_fail_their_row() {
    quiet_panics();
    let f = fields();
    let st = stage::parallel("odd", Read(f.id), |id: &u32, _: &mut RowCtl| {
        if *id == 1 {
            std::panic::panic_any(42u32);
        }
        if *id == 2 {
            panic!("boom static");
        }
    });
    let p = Pipeline::builder(&f.schema).threads(1).before(st).build().unwrap();
    let mut batch = make_batch(&f, 3);
    // The default hook prints the u32 payload's panic; harmless.
    p.run(&mut batch).unwrap();
    assert_eq!(batch.outcome(0), Some(Outcome::Live { status: 0 }));
    let e = batch.error(1).unwrap();
    assert!(e.panicked && &*e.stage == "odd" && !e.message.is_empty(), "{e:?}");
    assert_eq!(batch.error(2).unwrap().message, "boom static");
}

/// A row that fails twice — deep inside, then again in an outer
/// after-stage — ends with the error of its last failure, the one that
/// matches its outcome's depth, even when a barrier (a whole-batch stage)
/// separates the two failures and two workers ran them. (Regression test:
/// errors used to be filed worker by worker at the end of the run, so the
/// first error could win.)
#[test]
fn a_row_failed_twice_keeps_its_last_error() {
    let f = fields();
    for attempt in 0..5 {
        let outer = stage::parallel("outer", Read(f.id), |_: &u32, ctl: &mut RowCtl| ctl.fail("outer"));
        let barrier =
            stage::whole_batch("barrier", Read(f.id), (), |_: &mut (), _: &[u32], _: &mut Rows<'_>| {});
        let inner = stage::parallel("inner", Read(f.id), |_: &u32, ctl: &mut RowCtl| {
            // Slow enough that both workers take chunks.
            std::thread::sleep(Duration::from_micros(20));
            ctl.fail("inner")
        });
        let p = Pipeline::builder(&f.schema)
            .threads(2)
            .min_parallel_work(0)
            .chunk_rows(1)
            .after(outer)
            .after(barrier)
            .before(inner)
            .build()
            .unwrap();
        let mut batch = make_batch(&f, 200);
        p.run(&mut batch).unwrap();
        for i in 0..200 {
            assert_eq!(batch.outcome(i), Some(Outcome::Failed { depth: 0, status: 0 }));
            assert_eq!(
                &*batch.error(i).unwrap().stage,
                "outer",
                "attempt {attempt}, row {i}: the outcome says depth 0 (`outer`), the error names another stage"
            );
        }
    }
}
