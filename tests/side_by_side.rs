//! Side by side: a stage marked `side_by_side` runs at the same time as the
//! group before it when a batch is one chunk and two threads are free, and
//! every row still ends as if the two had run one after the other — the
//! rows the earlier group rejects, fails or panics on keep their values and
//! their first outcome, the later stage's own stops and errors count on the
//! others, and a status the earlier group sets on a live row (which the
//! later stage may read) makes the later stage run again after it. Also:
//! the two really run at once, and the plan ignores the hint where the
//! result could differ. A property test pairs random stages.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bounded, quiet_panics};
use mware::chain::before;
use mware::prelude::*;
use mware::{ColdCell, Outcome, PipelineBuilder};

struct Fields {
    x: Field<u32>,
    y: Field<u64>,
    /// Written by the later stage.
    z: Field<u64>,
    /// Written by the earlier group.
    w: Field<u64>,
    /// Written after the pair from both.
    sum: Field<u64>,
    /// Written by the outer after-stage.
    seen: Field<u32>,
    note: Field<String>,
}

fn schema() -> (Schema, Fields) {
    let mut s = SchemaBuilder::new();
    let f = Fields {
        x: s.hot("x"),
        y: s.hot("y"),
        z: s.hot("z"),
        w: s.hot("w"),
        sum: s.hot("sum"),
        seen: s.hot("seen"),
        note: s.cold("note"),
    };
    (s.build().expect("valid schema"), f)
}

fn mix(v: u64) -> u64 {
    let v = (v ^ (v >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    v ^ (v >> 29)
}

/// An outer layer (`open` rejects some rows, `close` records the status of
/// every row that reaches it), `check` (rejects, fails, panics, and with
/// `respond` sets a status on rows it leaves live), then `score`, marked
/// side by side (writes `z` from `y`, rejects, fails, panics), then `total`,
/// which reads what both wrote.
///
/// Registered on `b` (not generic over a closure that configures it, so
/// the stages compile once).
fn pipeline(b: PipelineBuilder, f: &Fields, respond: bool) -> Pipeline {
    let open = stage::parallel("open", Read(f.x), |x: &u32, ctl: &mut RowCtl| {
        if x % 13 == 0 {
            ctl.reject(401)
        }
    })
    .rejects();
    let close = stage::parallel("close", Write(f.seen), |seen: &mut u32, ctl: &mut RowCtl| {
        *seen = 1 + u32::from(ctl.status());
    });
    let check = stage::parallel(
        "check",
        (Read(f.x), Write(f.w)),
        move |(x, w): (&u32, &mut u64), ctl: &mut RowCtl| {
            *w = u64::from(*x) * 3;
            if x % 11 == 0 {
                panic!("boom: check broke on {x}");
            }
            if x % 7 == 0 {
                ctl.fail(format!("check refused {x}"));
            } else if x % 3 == 0 {
                ctl.reject(400);
            } else if respond && x % 5 == 0 {
                ctl.respond(203);
            }
        },
    )
    .rejects();
    let score =
        stage::parallel("score", (Read(f.y), Write(f.z)), |(y, z): (&u64, &mut u64), ctl: &mut RowCtl| {
            // The status the earlier group may have set: read, so a run that
            // missed it would show.
            *z = mix(*y) ^ u64::from(ctl.status());
            match y % 10 {
                3 => panic!("boom: score broke on {y}"),
                2 => ctl.fail(format!("score refused {y}")),
                1 | 6 => ctl.reject(429),
                _ => {}
            }
        })
        .rejects()
        .side_by_side();
    let total = stage::parallel(
        "total",
        (Read(f.z), Read(f.w), Write(f.sum)),
        |(z, w, sum): (&u64, &u64, &mut u64), _: &mut RowCtl| *sum = z.wrapping_add(*w),
    );
    let b = b.around(open, close).before(check).before(score);
    b.before(total).build().expect("valid pipeline")
}

fn fill(batch: &mut Batch, f: &Fields, rows: usize, seed: u64) {
    batch.clear();
    batch.resize(rows);
    for (i, x) in batch.column_mut(f.x).unwrap().iter_mut().enumerate() {
        *x = (mix(seed + i as u64) % 1000) as u32;
    }
    for (i, y) in batch.column_mut(f.y).unwrap().iter_mut().enumerate() {
        *y = mix(seed ^ ((i as u64) << 20));
    }
    for (i, z) in batch.column_mut(f.z).unwrap().iter_mut().enumerate() {
        *z = i as u64;
    }
}

/// Everything a run leaves in a batch, row by row.
fn rows_of(batch: &Batch, f: &Fields) -> Vec<String> {
    (0..batch.len())
        .map(|i| {
            let col = |v: &[u64]| v[i];
            format!(
                "z {} w {} sum {} seen {} outcome {:?} error {:?}",
                col(batch.column(f.z).unwrap()),
                col(batch.column(f.w).unwrap()),
                col(batch.column(f.sum).unwrap()),
                batch.column(f.seen).unwrap()[i],
                batch.outcome(i),
                batch.error(i).map(|e| (e.stage.to_string(), e.message.clone(), e.panicked)),
            )
        })
        .collect()
}

fn two_threads(b: PipelineBuilder) -> PipelineBuilder {
    b.threads(2).min_parallel_work(0)
}

#[test]
fn a_pair_gives_the_results_of_running_one_after_the_other() {
    quiet_panics();
    let (schema, f) = schema();
    for respond in [false, true] {
        let one = pipeline(Pipeline::builder(&schema).threads(1), &f, respond);
        let two = pipeline(two_threads(Pipeline::builder(&schema)), &f, respond);
        let text = two.explain();
        assert!(text.contains("side by side with group 1"), "{text}");
        // Up to one chunk of the parallel plan the pair runs side by
        // side; past it, chunks spread over the threads instead.
        let mut empty = Batch::new(&schema);
        assert_eq!(two.run(&mut empty).unwrap().threads, 1, "an empty batch runs nothing");
        let chunk = two.parallel_plan().chunk_rows;
        for rows in [1, 2, 17, 300, chunk, chunk + 1] {
            let (mut a, mut b) = (Batch::new(&schema), Batch::new(&schema));
            fill(&mut a, &f, rows, rows as u64);
            fill(&mut b, &f, rows, rows as u64);
            // Twice: the second run starts with stopped rows.
            for pass in 0..2 {
                one.run(&mut a).unwrap();
                let report = two.run(&mut b).unwrap();
                assert_eq!(report.threads, 2, "{rows} rows");
                let what = format!("respond {respond}, {rows} rows, pass {pass}");
                let (want, got) = (rows_of(&a, &f), rows_of(&b, &f));
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    assert_eq!(g, w, "row {i}: {what}");
                }
            }
        }
    }
}

#[test]
fn the_rows_the_earlier_group_stops_keep_their_values() {
    quiet_panics();
    let (schema, f) = schema();
    let p = pipeline(two_threads(Pipeline::builder(&schema)), &f, false);
    let mut batch = Batch::new(&schema);
    fill(&mut batch, &f, 500, 7);
    p.run(&mut batch).unwrap();
    let (x, z) = (batch.column(f.x).unwrap(), batch.column(f.z).unwrap());
    let mut stopped = 0;
    for i in 0..500 {
        let by_check = x[i] % 13 != 0 && (x[i] % 11 == 0 || x[i] % 7 == 0 || x[i] % 3 == 0);
        if by_check {
            stopped += 1;
            assert_eq!(z[i], i as u64, "row {i}: score's write undone");
            let stage = batch.error(i).map(|e| e.stage.to_string());
            assert!(stage.is_none() || stage.as_deref() == Some("check"), "row {i}: {stage:?}");
            let depth = match batch.outcome(i) {
                Some(Outcome::Rejected { depth, .. } | Outcome::Failed { depth, .. }) => Some(depth),
                _ => None,
            };
            assert_eq!(depth, Some(1), "row {i}");
        }
    }
    assert!(stopped > 100, "the earlier group stops rows ({stopped})");
}

#[test]
fn the_two_stages_run_at_the_same_time() {
    let (schema, f) = schema();
    // `wait` (the earlier group) waits for a message that only `signal`
    // (the later stage) sends: run one after the other, it would time out.
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    let received = Arc::new(Mutex::new(None));
    let got = received.clone();
    let wait = stage::parallel("wait", Read(f.x), move |_: &u32, _: &mut RowCtl| {
        let ok = rx.lock().unwrap().recv_timeout(Duration::from_secs(20)).is_ok();
        *got.lock().unwrap() = Some(ok);
    });
    let tx = Mutex::new(tx);
    let signal = stage::parallel("signal", Write(f.z), move |z: &mut u64, _: &mut RowCtl| {
        *z = 1;
        let _ = tx.lock().unwrap().send(());
    })
    .side_by_side();
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    let p = Pipeline::builder(&schema)
        .thread_pool(pool)
        .min_parallel_work(0)
        .before(wait)
        .before(signal)
        .build()
        .unwrap();
    let report = bounded(Duration::from_secs(60), move || {
        let mut batch = Batch::new(&mware::Schema::clone(p.schema()));
        batch.resize(1);
        let report = p.run(&mut batch).unwrap();
        assert_eq!(batch.column(f.z).unwrap()[0], 1);
        report
    });
    assert_eq!(report.threads, 2);
    assert_eq!(*received.lock().unwrap(), Some(true), "the earlier stage heard from the later one");
}

#[test]
fn the_plan_pairs_only_where_the_result_cannot_differ() {
    let (schema, f) = schema();
    let check = || {
        stage::parallel("check", (Read(f.x), Write(f.w)), |(x, w): (&u32, &mut u64), _: &mut RowCtl| {
            *w = u64::from(*x)
        })
    };
    let pairs = |b: PipelineBuilder| b.threads(2).build().unwrap().parallel_plan().has_side_by_side();
    let later = |read: Field<u64>, write: Field<u64>| {
        stage::parallel("later", (Read(read), Write(write)), |_: (&u64, &mut u64), _: &mut RowCtl| {})
    };

    // Disjoint: paired.
    assert!(pairs(Pipeline::builder(&schema).before(check()).before(later(f.y, f.z).side_by_side())));
    // Not asked.
    assert!(!pairs(Pipeline::builder(&schema).before(check()).before(later(f.y, f.z))));
    // Reads what the earlier group writes.
    assert!(!pairs(Pipeline::builder(&schema).before(check()).before(later(f.w, f.z).side_by_side())));
    // Writes what the earlier group reads.
    let writes_x = stage::parallel("later", Write(f.x), |_: &mut u32, _: &mut RowCtl| {}).side_by_side();
    assert!(!pairs(Pipeline::builder(&schema).before(check()).before(writes_x)));
    // Touches a cold field (its side tables cannot be put back).
    let cold = stage::parallel(
        "later",
        (Read(f.y), WriteCold(f.note)),
        |_: (&u64, ColdCell<'_, String>), _: &mut RowCtl| {},
    )
    .side_by_side();
    assert!(!pairs(Pipeline::builder(&schema).before(check()).before(cold)));
    // Part of the same registration as the group before it.
    let in_chain =
        stage::parallel("later", (Read(f.y), Write(f.z)), |_: (&u64, &mut u64), _: &mut RowCtl| {})
            .side_by_side();
    let seq = stage::sequential("count", Read(f.x), 0u64, |n: &mut u64, _: &u32, _: &mut RowCtl| *n += 1);
    assert!(!pairs(Pipeline::builder(&schema).chain(mware::chain![before(seq), before(in_chain)])));
    // A group pairs once: of three marked stages in a row, the second
    // pairs with the first, the third with nothing.
    let p = Pipeline::builder(&schema)
        .before(check())
        .before(later(f.y, f.z).side_by_side())
        .before(stage::parallel("third", Write(f.sum), |_: &mut u64, _: &mut RowCtl| {}).side_by_side())
        .threads(2)
        .build()
        .unwrap();
    let beside: Vec<bool> = p.parallel_plan().groups.iter().map(|g| g.beside).collect();
    assert_eq!(beside, [false, true, false]);
}

#[test]
fn profiling_and_one_thread_run_the_pair_one_after_the_other() {
    quiet_panics();
    let (schema, f) = schema();
    let one = pipeline(Pipeline::builder(&schema).threads(1), &f, true);
    let profiled = pipeline(two_threads(Pipeline::builder(&schema)), &f, true);
    profiled.set_profiling(true);
    let (mut a, mut b) = (Batch::new(&schema), Batch::new(&schema));
    fill(&mut a, &f, 300, 3);
    fill(&mut b, &f, 300, 3);
    assert_eq!(one.run(&mut a).unwrap().threads, 1);
    let report = profiled.run(&mut b).unwrap();
    assert_eq!(report.threads, 1, "profiling counts each stage's rows: no pair");
    assert_eq!(rows_of(&a, &f), rows_of(&b, &f));
    let score = report.stages.iter().find(|s| s.name.as_ref() == "score").unwrap();
    assert!(score.rejected > 0 && score.failed > 0);
}

/// What a random stage does to a row, from a hash of the value it reads.
#[derive(Clone, Copy, Debug)]
struct Moves {
    salt: u64,
    reject: u64,
    fail: u64,
    panic: u64,
    respond: u64,
}

impl Moves {
    /// Writes the hash of `v` to `out` and stops or answers the row on the
    /// hash's residues; reads the status first, so a stale one would show.
    fn apply(&self, v: u64, out: &mut u64, ctl: &mut RowCtl) {
        let h = mix(v ^ self.salt);
        *out = h ^ u64::from(ctl.status());
        let hit = |m: u64| m > 0 && h % m == 0;
        if hit(self.panic) {
            panic!("boom: {h}");
        } else if hit(self.fail) {
            ctl.fail(format!("refused {h}"));
        } else if hit(self.reject) {
            ctl.reject(400 + (h % 7) as u16);
        } else if hit(self.respond) {
            ctl.respond(200 + (h % 5) as u16);
        }
    }
}

fn moves() -> impl proptest::strategy::Strategy<Value = Moves> {
    use proptest::prelude::*;
    (any::<u64>(), 0u64..6, 0u64..12, 0u64..16, 0u64..8)
        .prop_map(|(salt, reject, fail, panic, respond)| Moves { salt, reject, fail, panic, respond })
}

/// `earlier` (one stage reading `y` and writing `w`, or a chain of that and
/// a stage reading `w` and writing `sum`), then `later` marked side by side
/// (reads `y` too, writes `z`), then a stage reading both sides' outputs.
fn random_pipeline(schema: &Schema, f: &Fields, earlier: &[Moves], later: Moves, threads: usize) -> Pipeline {
    let stage_of = |name: &str, m: Moves, read: Field<u64>, write: Field<u64>| {
        stage::parallel(
            name,
            (Read(read), Write(write)),
            move |(v, out): (&u64, &mut u64), ctl: &mut RowCtl| m.apply(*v, out, ctl),
        )
        .rejects()
    };
    let b = Pipeline::builder(schema).threads(threads).min_parallel_work(0);
    let b = match earlier {
        [one] => b.before(stage_of("earlier", *one, f.y, f.w)),
        [a, c] => b.chain(mware::chain![
            before(stage_of("earlier.a", *a, f.y, f.w)),
            before(stage_of("earlier.b", *c, f.w, f.sum))
        ]),
        _ => unreachable!("one or two earlier stages"),
    };
    let total = stage::parallel(
        "total",
        (Read(f.z), Read(f.sum), Write(f.seen)),
        |(z, s, seen): (&u64, &u64, &mut u32), _: &mut RowCtl| *seen = (z ^ s) as u32,
    );
    b.before(stage_of("later", later, f.y, f.z).side_by_side()).before(total).build().expect("valid pipeline")
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// Random stages on both sides of a pair, random batch sizes, and a
    /// second run over the rows the first left live: two threads give
    /// exactly one thread's columns, outcomes and errors.
    #[test]
    fn random_pairs_match_one_thread(
        earlier in proptest::collection::vec(moves(), 1..=2),
        later in moves(),
        rows in 0usize..600,
        seed in proptest::prelude::any::<u64>(),
    ) {
        quiet_panics();
        let (schema, f) = schema();
        let one = random_pipeline(&schema, &f, &earlier, later, 1);
        let two = random_pipeline(&schema, &f, &earlier, later, 2);
        proptest::prop_assert!(two.parallel_plan().has_side_by_side(), "{}", two.explain());
        let (mut a, mut b) = (Batch::new(&schema), Batch::new(&schema));
        fill(&mut a, &f, rows, seed);
        fill(&mut b, &f, rows, seed);
        for pass in 0..2 {
            one.run(&mut a).unwrap();
            let report = two.run(&mut b).unwrap();
            proptest::prop_assert_eq!(report.threads, if rows > 0 { 2 } else { 1 });
            proptest::prop_assert_eq!(rows_of(&a, &f), rows_of(&b, &f), "pass {}", pass);
        }
    }
}
