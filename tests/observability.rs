//! Observability: run reports against a per-request reference, the
//! degradation monitor, the plan as text and as Graphviz DOT, the report's
//! table and chart, and (feature `tracing`) the spans.
//!
//! * Per-stage counts (rows seen, rejected, failed) of random pipelines —
//!   row stages of every kind registered one by one, around pairs, chunk and
//!   whole-batch stages, and a static chain fused into one loop — equal
//!   those of a naive per-request onion that counts what each stage sees and
//!   does, on one thread and on two, also added up over several runs and
//!   over a stream.
//! * A stage made slow by a flag the test sets (it sleeps; no wall-time
//!   threshold decides anything) raises exactly one alert per window while
//!   it is slow and none while it is fast.
//! * `to_dot` output is checked structurally and, when Graphviz's `dot` is
//!   installed, rendered with `dot -Tsvg`.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mware::chain::{around, before};
use mware::gateway8::{Composition, Fields, GatewayPipeline, mix};
use mware::monitor::{Monitor, Statistic};
use mware::prelude::*;
use mware::stream::StreamRunner;
use mware::{PipelineBuilder, RunReport};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Stage behaviour shared by the executor's stages and the reference.

/// What a stage does to a row, decided by a hash of the row's `x`.
#[derive(Clone, Debug)]
struct Spec {
    salt: u64,
    /// `(modulus, status)`: reject when the hash hits.
    reject: Option<(u64, u16)>,
    /// Modulus: fail when the hash hits (and the row was not rejected).
    fail: Option<u64>,
}

/// How a stage is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    Par,
    Seq,
    Red,
    ChunkPar,
    ChunkSeq,
    Whole,
}

impl K {
    fn is_chunk(self) -> bool {
        matches!(self, K::ChunkPar | K::ChunkSeq | K::Whole)
    }
}

/// What a stage body may do: implemented by the executor's row and chunk
/// controls and by the reference.
trait Ctl {
    fn reject(&mut self, status: u16);
    fn fail(&mut self);
}

impl Ctl for RowCtl {
    fn reject(&mut self, status: u16) {
        RowCtl::reject(self, status)
    }
    fn fail(&mut self) {
        RowCtl::fail(self, "refused")
    }
}

struct ChunkCtl<'r, 'a>(&'r mut Rows<'a>, usize);

impl Ctl for ChunkCtl<'_, '_> {
    fn reject(&mut self, status: u16) {
        self.0.reject(self.1, status)
    }
    fn fail(&mut self) {
        self.0.fail(self.1, "refused")
    }
}

fn decide(s: &Spec, x: u64, ctl: &mut impl Ctl) {
    let h = mix(x ^ s.salt);
    if let Some((m, code)) = s.reject {
        if (h >> 8) % m == 0 {
            ctl.reject(code);
            return;
        }
    }
    if let Some(m) = s.fail {
        if (h >> 24) % m == 0 {
            ctl.fail();
        }
    }
}

// ---------------------------------------------------------------------------
// The reference: one request at a time through boxed layers, counting.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    rows: u64,
    rejected: u64,
    failed: u64,
}

/// `(depth, failed)` where the request stopped.
struct RefCtl {
    stop: Option<(usize, bool)>,
    depth: usize,
}

impl Ctl for RefCtl {
    fn reject(&mut self, _: u16) {
        self.stop = Some((self.depth, false));
    }
    fn fail(&mut self) {
        self.stop = Some((self.depth, true));
    }
}

struct RefStage {
    name: String,
    spec: Spec,
}

#[derive(Default)]
struct RefLayer {
    before: Option<RefStage>,
    after: Option<RefStage>,
}

fn ref_step(
    s: &RefStage,
    depth: usize,
    x: u64,
    stop: &mut Option<(usize, bool)>,
    counts: &mut HashMap<String, Counts>,
) {
    let c = counts.entry(s.name.clone()).or_default();
    c.rows += 1;
    let mut ctl = RefCtl { stop: *stop, depth };
    decide(&s.spec, x, &mut ctl);
    if ctl.stop != *stop {
        if ctl.stop.is_some_and(|(_, failed)| failed) {
            c.failed += 1;
        } else {
            c.rejected += 1;
        }
    }
    *stop = ctl.stop;
}

/// `before; if stopped, return; inner layers; after` — the onion.
fn ref_handle(
    layers: &[RefLayer],
    depth: usize,
    x: u64,
    stop: &mut Option<(usize, bool)>,
    counts: &mut HashMap<String, Counts>,
) {
    let Some((layer, inner)) = layers.split_first() else { return };
    if let Some(b) = &layer.before {
        ref_step(b, depth, x, stop, counts);
    }
    if stop.is_some() {
        return;
    }
    ref_handle(inner, depth + 1, x, stop, counts);
    if let Some(a) = &layer.after {
        ref_step(a, depth, x, stop, counts);
    }
}

fn reference(layers: &[RefLayer], xs: &[u64], counts: &mut HashMap<String, Counts>) {
    for &x in xs {
        ref_handle(layers, 0, x, &mut None, counts);
    }
}

// ---------------------------------------------------------------------------
// Random pipelines.

#[derive(Clone, Debug)]
enum LayerSpec {
    Before(K, Spec),
    After(K, Spec),
    /// Both row stages or both chunk stages.
    Around(K, Spec, K, Spec),
    /// A static chain, fused into one loop body:
    /// `chain![around(par, par), around(seq, red), before(par)]`.
    Chain([Spec; 5]),
}

fn spec() -> impl Strategy<Value = Spec> {
    (any::<u64>(), prop::option::of((2u64..6, 400u16..500)), prop::option::of(3u64..9))
        .prop_map(|(salt, reject, fail)| Spec { salt, reject, fail })
}

fn row_kind() -> impl Strategy<Value = K> {
    prop_oneof![Just(K::Par), Just(K::Seq), Just(K::Red)]
}

fn any_kind() -> impl Strategy<Value = K> {
    prop_oneof![
        3 => row_kind(),
        1 => Just(K::ChunkPar),
        1 => Just(K::ChunkSeq),
        1 => Just(K::Whole),
    ]
}

fn chunk_kind() -> impl Strategy<Value = K> {
    prop_oneof![Just(K::ChunkPar), Just(K::ChunkSeq), Just(K::Whole)]
}

fn layer() -> impl Strategy<Value = LayerSpec> {
    prop_oneof![
        3 => (any_kind(), spec()).prop_map(|(k, s)| LayerSpec::Before(k, s)),
        2 => (any_kind(), spec()).prop_map(|(k, s)| LayerSpec::After(k, s)),
        2 => (row_kind(), spec(), row_kind(), spec()).prop_map(|(kb, b, ka, a)| LayerSpec::Around(kb, b, ka, a)),
        1 => (chunk_kind(), spec(), chunk_kind(), spec()).prop_map(|(kb, b, ka, a)| LayerSpec::Around(kb, b, ka, a)),
        2 => [spec(), spec(), spec(), spec(), spec()].prop_map(LayerSpec::Chain),
    ]
}

/// Builds a row stage of kind `$k` named `$name`, binds it to `$s` and
/// evaluates `$body` (the stage types differ by kind).
macro_rules! with_row_stage {
    ($k:expr, $spec:expr, $name:expr, $x:expr, |$s:ident| $body:expr) => {{
        let spec: Spec = $spec.clone();
        let rejects = spec.reject.is_some();
        match $k {
            K::Par => {
                let $s = stage::parallel(&$name, Read($x), move |x: &u64, ctl: &mut RowCtl| {
                    decide(&spec, *x, ctl)
                });
                let $s = if rejects { $s.rejects() } else { $s };
                $body
            }
            K::Seq => {
                let $s = stage::sequential(
                    &$name,
                    Read($x),
                    0u64,
                    move |n: &mut u64, x: &u64, ctl: &mut RowCtl| {
                        *n += 1;
                        decide(&spec, *x, ctl)
                    },
                );
                let $s = if rejects { $s.rejects() } else { $s };
                $body
            }
            K::Red => {
                let $s = stage::reduction(
                    &$name,
                    Read($x),
                    0u64,
                    move |n: &mut u64, x: &u64, ctl: &mut RowCtl| {
                        *n += 1;
                        decide(&spec, *x, ctl)
                    },
                    |t: &mut u64, p: &u64| *t += *p,
                );
                let $s = if rejects { $s.rejects() } else { $s };
                $body
            }
            _ => unreachable!("not a row kind"),
        }
    }};
}

/// The same for chunk stages.
macro_rules! with_chunk_stage {
    ($k:expr, $spec:expr, $name:expr, $x:expr, |$s:ident| $body:expr) => {{
        let spec: Spec = $spec.clone();
        let rejects = spec.reject.is_some();
        let f = move |xs: &[u64], rows: &mut Rows| {
            let mut sel = Vec::new();
            rows.for_each(|i| sel.push(i));
            for i in sel {
                decide(&spec, xs[i], &mut ChunkCtl(rows, i));
            }
        };
        match $k {
            K::ChunkPar => {
                let $s = stage::parallel_chunks(&$name, Read($x), f);
                let $s = if rejects { $s.rejects() } else { $s };
                $body
            }
            K::ChunkSeq => {
                let $s = stage::sequential_chunks(
                    &$name,
                    Read($x),
                    (),
                    move |_: &mut (), xs: &[u64], rows: &mut Rows| f(xs, rows),
                );
                let $s = if rejects { $s.rejects() } else { $s };
                $body
            }
            K::Whole => {
                let $s = stage::whole_batch(
                    &$name,
                    Read($x),
                    (),
                    move |_: &mut (), xs: &[u64], rows: &mut Rows| f(xs, rows),
                );
                let $s = if rejects { $s.rejects() } else { $s };
                $body
            }
            _ => unreachable!("not a chunk kind"),
        }
    }};
}

fn add_single(
    b: PipelineBuilder,
    k: K,
    s: &Spec,
    name: String,
    x: Field<u64>,
    after: bool,
) -> PipelineBuilder {
    if k.is_chunk() {
        with_chunk_stage!(k, s, name, x, |st| if after { b.after(st) } else { b.before(st) })
    } else {
        with_row_stage!(k, s, name, x, |st| if after { b.after(st) } else { b.before(st) })
    }
}

/// Registers `layers` on a builder and builds their reference.
fn build(
    schema: &Schema,
    x: Field<u64>,
    layers: &[LayerSpec],
    configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
) -> (Pipeline, Vec<RefLayer>) {
    register(configure(Pipeline::builder(schema)), x, layers)
}

/// `build`'s body, not generic: compiled once rather than once per caller's
/// closure (every stage kind in every place makes it long to compile).
fn register(b: PipelineBuilder, x: Field<u64>, layers: &[LayerSpec]) -> (Pipeline, Vec<RefLayer>) {
    let mut b = b.profile(true);
    let mut refs = Vec::new();
    let r = |name: &str, spec: &Spec| Some(RefStage { name: name.to_string(), spec: spec.clone() });
    for (l, layer) in layers.iter().enumerate() {
        match layer {
            LayerSpec::Before(k, s) => {
                let name = format!("L{l}b");
                refs.push(RefLayer { before: r(&name, s), after: None });
                b = add_single(b, *k, s, name, x, false);
            }
            LayerSpec::After(k, s) => {
                let name = format!("L{l}a");
                refs.push(RefLayer { before: None, after: r(&name, s) });
                b = add_single(b, *k, s, name, x, true);
            }
            LayerSpec::Around(kb, sb, ka, sa) => {
                let (nb, na) = (format!("L{l}b"), format!("L{l}a"));
                refs.push(RefLayer { before: r(&nb, sb), after: r(&na, sa) });
                b = if kb.is_chunk() {
                    with_chunk_stage!(*kb, sb, nb, x, |bs| with_chunk_stage!(*ka, sa, na, x, |as_| b
                        .around_chunks(bs, as_)))
                } else {
                    with_row_stage!(*kb, sb, nb, x, |bs| with_row_stage!(*ka, sa, na, x, |as_| b
                        .around(bs, as_)))
                };
            }
            LayerSpec::Chain(s) => {
                let n: Vec<String> = (0..5).map(|k| format!("L{l}c{k}")).collect();
                refs.push(RefLayer { before: r(&n[0], &s[0]), after: r(&n[1], &s[1]) });
                refs.push(RefLayer { before: r(&n[2], &s[2]), after: r(&n[3], &s[3]) });
                refs.push(RefLayer { before: r(&n[4], &s[4]), after: None });
                b = with_row_stage!(K::Par, s[0], n[0], x, |c0| with_row_stage!(
                    K::Par,
                    s[1],
                    n[1],
                    x,
                    |c1| {
                        with_row_stage!(K::Seq, s[2], n[2], x, |c2| with_row_stage!(
                            K::Red,
                            s[3],
                            n[3],
                            x,
                            |c3| {
                                with_row_stage!(K::Par, s[4], n[4], x, |c4| b.chain(mware::chain![
                                    around(c0, c1),
                                    around(c2, c3),
                                    before(c4)
                                ]))
                            }
                        ))
                    }
                ));
            }
        }
    }
    (b.build().expect("valid pipeline"), refs)
}

fn schema() -> (Schema, Field<u64>) {
    let mut s = SchemaBuilder::new();
    let x = s.hot::<u64>("x");
    (s.build().expect("schema"), x)
}

fn input(seed: u64, rows: usize) -> Vec<u64> {
    (0..rows as u64).map(|i| mix(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect()
}

fn fill(batch: &mut Batch, x: Field<u64>, seed: u64, rows: usize) -> Vec<u64> {
    let xs = input(seed, rows);
    batch.clear();
    batch.resize(rows);
    batch.column_mut(x).unwrap().copy_from_slice(&xs);
    xs
}

fn counts_of(report: &RunReport) -> HashMap<String, Counts> {
    report
        .stages
        .iter()
        .map(|s| (s.name.to_string(), Counts { rows: s.rows, rejected: s.rejected, failed: s.failed }))
        .collect()
}

/// The reference's counts, with a zero entry for each stage it never ran.
fn expected(p: &Pipeline, counts: HashMap<String, Counts>) -> HashMap<String, Counts> {
    p.plan()
        .steps
        .iter()
        .map(|s| (s.meta.name.to_string(), counts.get(s.meta.name.as_ref()).copied().unwrap_or_default()))
        .collect()
}

/// Checks a report's shape against the pipeline's plan: stages in
/// execution order, group and segment times present.
fn check_shape(p: &Pipeline, r: &RunReport) -> Result<(), TestCaseError> {
    let plan = if r.threads > 1 { p.parallel_plan() } else { p.plan() };
    let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_ref()).collect();
    let want: Vec<&str> = plan.steps.iter().map(|s| s.meta.name.as_ref()).collect();
    prop_assert_eq!(names, want);
    prop_assert_eq!(r.groups.len(), plan.groups.len());
    prop_assert_eq!(r.segments.len(), plan.segments.len());
    for (i, s) in r.stages.iter().enumerate() {
        let g = &plan.groups[s.group];
        prop_assert!(g.steps.contains(&i));
        prop_assert_eq!(s.time, r.groups[s.group]);
        prop_assert_eq!(s.fused, g.steps.len() > 1);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Per-stage counts equal the reference's, per run and added up.
    #[test]
    fn counts_equal_the_reference(
        layers in prop::collection::vec(layer(), 1..7),
        sizes in prop::collection::vec(0usize..400, 1..4),
        threads in 1usize..=2,
        chunk in prop_oneof![Just(16usize), Just(64), Just(1000)],
        seed in any::<u64>(),
    ) {
        let (schema, x) = schema();
        let (p, refs) = build(&schema, x, &layers, |b| b.threads(threads).chunk_rows(chunk).min_parallel_work(0));
        let mut batch = Batch::new(&schema);
        let mut total = RunReport::default();
        let mut all = HashMap::new();
        for (k, &rows) in sizes.iter().enumerate() {
            let xs = fill(&mut batch, x, seed.wrapping_add(k as u64), rows);
            let report = p.run(&mut batch).unwrap();
            let mut counts = HashMap::new();
            reference(&refs, &xs, &mut counts);
            reference(&refs, &xs, &mut all);
            if rows > 0 {
                check_shape(&p, &report)?;
            }
            prop_assert_eq!(counts_of(&report), expected(&p, counts));
            prop_assert_eq!(report.rows, rows);
            total.accumulate(&report);
        }
        prop_assert_eq!(total.rows, sizes.iter().sum::<usize>());
        prop_assert_eq!(counts_of(&total), expected(&p, all));
    }
}

/// A stream's reports, added up by the consumer, count what one run over
/// the concatenated input counts (the stages are per-row pure).
#[test]
fn stream_reports_add_up() {
    let (schema, x) = schema();
    let spec = |salt| Spec { salt, reject: Some((3, 401)), fail: Some(5) };
    let layers = vec![
        LayerSpec::Around(K::Par, spec(1), K::Red, spec(2)),
        LayerSpec::Chain([spec(3), spec(4), spec(5), spec(6), spec(7)]),
        LayerSpec::Before(K::ChunkPar, spec(8)),
    ];
    let (p, refs) = build(&schema, x, &layers, |b| b.threads(1));
    let p = Arc::new(p);
    // Two workers: the batches take turns at the ordered (reduction-holding)
    // groups of the plan for runs in turn.
    let runner = StreamRunner::builder(p.clone()).capacity(3).workers(2).build().unwrap();
    assert!(runner.in_order());
    let mut results = runner.consumer().unwrap();
    let mut all = HashMap::new();
    let mut inputs = Vec::new();
    for k in 0..20u64 {
        inputs.push(input(1000 + k, 50 + 13 * k as usize));
        reference(&refs, inputs.last().unwrap(), &mut all);
    }
    let feeder = {
        let producer = runner.producer();
        let inputs = inputs.clone();
        std::thread::spawn(move || {
            for xs in inputs {
                let mut batch = producer.batch();
                batch.resize(xs.len());
                batch.column_mut(x).unwrap().copy_from_slice(&xs);
                producer.submit(batch).unwrap();
            }
        })
    };
    let mut total = RunReport::default();
    for _ in 0..20 {
        let done = results.recv().unwrap();
        total.accumulate(done.report.as_ref().unwrap());
    }
    feeder.join().unwrap();
    runner.close();
    assert_eq!(total.rows, inputs.iter().map(Vec::len).sum::<usize>());
    assert_eq!(counts_of(&total), expected(&p, all));
    // The stream ran one plan: group and segment times added up too.
    assert_eq!(total.groups.len(), p.turn_plan().groups.len());
    assert_eq!(total.segments.len(), p.turn_plan().segments.len());
    assert!(total.elapsed >= total.segments.iter().sum::<Duration>());
}

/// The profile counts only the rows each stage stops and derives the rows
/// it saw; rows stopped by an earlier run of the same batch (no
/// `reset_control` in between) are counted in too.
#[test]
fn rerun_without_reset_counts_rows_stopped_before() {
    let (schema, x) = schema();
    let noop = |name: &'static str| stage::parallel(name, Read(x), |_: &u64, _: &mut RowCtl| {});
    let odd = stage::parallel("odd", Read(x), |x: &u64, ctl: &mut RowCtl| {
        if x % 2 == 0 {
            ctl.reject(400)
        }
    })
    .rejects();
    let p = Pipeline::builder(&schema)
        .around(noop("outer_in"), noop("outer_out"))
        .before(odd)
        .handler(noop("handler"))
        .threads(1)
        .profile(true)
        .build()
        .unwrap();
    let mut batch = Batch::new(&schema);
    batch.resize(1000);
    for (i, v) in batch.column_mut(x).unwrap().iter_mut().enumerate() {
        *v = i as u64;
    }
    let seen = |r: &RunReport| r.stages.iter().map(|s| (s.name.to_string(), s.rows)).collect::<Vec<_>>();
    let first = p.run(&mut batch).unwrap();
    let expect = |a: u64, b: u64, c: u64, d: u64| {
        vec![("outer_in".into(), a), ("odd".into(), b), ("handler".into(), c), ("outer_out".into(), d)]
    };
    assert_eq!(seen(&first), expect(1000, 1000, 500, 1000));
    // Again without a reset: the even rows stay stopped at depth 1, so only
    // the outer after-stage sees them.
    let second = p.run(&mut batch).unwrap();
    assert_eq!(seen(&second), expect(500, 500, 500, 1000));
    assert_eq!(second.stages[1].rejected, 0);
    batch.reset_control();
    assert_eq!(seen(&p.run(&mut batch).unwrap()), seen(&first));
}

/// Without profiling, the report has no per-stage figures and costs no
/// clock reads.
#[test]
fn profiling_off_reports_no_stages() {
    let (schema, x) = schema();
    let (p, _) =
        build(&schema, x, &[LayerSpec::Before(K::Par, Spec { salt: 1, reject: None, fail: None })], |b| b);
    p.set_profiling(false);
    let mut batch = Batch::new(&schema);
    fill(&mut batch, x, 1, 100);
    let r = p.run(&mut batch).unwrap();
    assert!(r.stages.is_empty() && r.groups.is_empty() && r.segments.is_empty());
    assert_eq!(r.elapsed, Duration::ZERO);
    assert!(r.table().contains("profiling was off"));
    assert!(r.to_svg().contains("profiling was off"));
    p.set_profiling(true);
    let r = p.run(&mut batch).unwrap();
    assert_eq!(r.stages.len(), 1);
    assert_eq!(r.stages[0].rows, 100);
}

// ---------------------------------------------------------------------------
// The monitor.

/// Three stages, each its own pass; the middle one sleeps 4 ms once per run
/// while `slow` is set.
fn slowable(schema: &Schema, x: Field<u64>, slow: &Arc<AtomicBool>, fused: bool) -> Pipeline {
    let flag = slow.clone();
    let nap = move |ctl: &RowCtl| {
        if ctl.row() == 0 && flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(4));
        }
    };
    let a = stage::parallel("a", Read(x), |_: &u64, _: &mut RowCtl| {});
    let lookup = stage::parallel("lookup", Read(x), move |_: &u64, ctl: &mut RowCtl| nap(ctl));
    let c = stage::parallel("c", Read(x), |_: &u64, _: &mut RowCtl| {});
    let b = Pipeline::builder(schema).threads(1).profile(true);
    let b = if fused {
        b.chain(mware::chain![before(a), before(lookup), before(c)])
    } else {
        b.before(a).before(lookup).before(c)
    };
    b.build().unwrap()
}

/// A stage slowed by the test's flag raises exactly one alert per window
/// while slow, none while fast; the first full window is the baseline.
#[test]
fn slow_stage_alerts_once_per_window() {
    let (schema, x) = schema();
    let slow = Arc::new(AtomicBool::new(false));
    let p = slowable(&schema, x, &slow, false);
    let log: Arc<Mutex<Vec<(String, u64, f64)>>> = Arc::default();
    let sink = log.clone();
    const W: usize = 5;
    let mut monitor = Monitor::builder(&p)
        .window(W)
        .factor(8.0)
        // Cheap stages stay quiet whatever the machine's load does to them.
        .min_ns_per_row(100.0)
        .on_alert(move |a| sink.lock().unwrap().push((a.stage.name.to_string(), a.window, a.ratio())))
        .build()
        .unwrap();
    let mut batch = Batch::new(&schema);
    fill(&mut batch, x, 7, 512);
    // Windows: 1 fast (baseline), 2–4 slow, 5–6 fast, 7 slow.
    let slow_windows = [2u64, 3, 4, 7];
    let mut raised = 0;
    for w in 1..=7u64 {
        slow.store(slow_windows.contains(&w), Ordering::Relaxed);
        for _ in 0..W {
            raised += monitor.observe(&p.run(&mut batch).unwrap());
        }
        let lookup: Vec<u64> =
            log.lock().unwrap().iter().filter(|(n, ..)| n == "lookup").map(|(_, w, _)| *w).collect();
        let want: Vec<u64> = slow_windows.iter().copied().filter(|&s| s <= w).collect();
        assert_eq!(lookup, want, "after window {w}");
    }
    assert!(monitor.baseline(1).is_some());
    let log = log.lock().unwrap();
    assert!(log.iter().all(|(n, _, ratio)| n == "lookup" && *ratio > 8.0), "{log:?}");
    assert_eq!(raised, 4);
    assert_eq!(monitor.alerts(), 4);
    assert_eq!(monitor.observed(), 35);
}

/// Stages of one fused loop share its time: a slow one raises one alert
/// for the loop, naming all of its stages.
#[test]
fn fused_loop_alerts_once() {
    let (schema, x) = schema();
    let slow = Arc::new(AtomicBool::new(false));
    let p = slowable(&schema, x, &slow, true);
    let fired = Arc::new(AtomicUsize::new(0));
    let sink = fired.clone();
    let mut monitor = Monitor::builder(&p)
        .window(3)
        .factor(8.0)
        .min_ns_per_row(100.0)
        .on_alert(move |a| {
            let names: Vec<&str> = a.timed_with.iter().map(|s| s.name.as_ref()).collect();
            assert_eq!(names, ["a", "lookup", "c"]);
            assert!(a.to_string().contains("fused loop"));
            sink.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let mut batch = Batch::new(&schema);
    fill(&mut batch, x, 7, 512);
    for run in 0..9 {
        slow.store(run >= 3, Ordering::Relaxed);
        monitor.observe(&p.run(&mut batch).unwrap());
    }
    assert_eq!(fired.load(Ordering::Relaxed), 2);
}

/// A baseline set by the user is used from the first window; `relearn`
/// forgets learnt baselines only; bad configurations are errors; reports
/// without stages are ignored.
#[test]
fn monitor_baselines_and_configuration() {
    let (schema, x) = schema();
    let slow = Arc::new(AtomicBool::new(true));
    let p = slowable(&schema, x, &slow, false);
    let mut monitor = Monitor::builder(&p)
        .window(2)
        .factor(4.0)
        .statistic(Statistic::Mean)
        .baseline("lookup", 1.0)
        .build()
        .unwrap();
    assert_eq!(monitor.baseline(1), Some(1.0));
    assert_eq!(monitor.stages().len(), 3);
    let mut batch = Batch::new(&schema);
    fill(&mut batch, x, 7, 256);
    monitor.observe(&p.run(&mut batch).unwrap());
    assert!(monitor.current(1).unwrap() > 1000.0, "4 ms over 256 rows");
    assert_eq!(monitor.observe(&p.run(&mut batch).unwrap()), 1, "first window against the set baseline");
    assert!(monitor.baseline(0).is_some(), "learnt");
    monitor.relearn();
    assert_eq!((monitor.baseline(0), monitor.baseline(1)), (None, Some(1.0)));
    monitor.set_baseline("a", 2.0).unwrap();
    assert_eq!(monitor.baseline(0), Some(2.0));
    assert!(monitor.set_baseline("nope", 1.0).is_err());

    p.set_profiling(false);
    assert_eq!(monitor.observe(&p.run(&mut batch).unwrap()), 0);
    assert_eq!(monitor.ignored(), 1);

    assert!(Monitor::builder(&p).window(0).build().is_err());
    assert!(Monitor::builder(&p).factor(f64::NAN).build().is_err());
    assert!(Monitor::builder(&p).baseline("nope", 1.0).build().is_err());
}

// ---------------------------------------------------------------------------
// The plan: text and DOT.

fn gateway(composition: Composition, threads: usize) -> GatewayPipeline {
    gateway_with_schema(composition, threads).0
}

fn gateway_with_schema(composition: Composition, threads: usize) -> (GatewayPipeline, Schema, Fields) {
    let (schema, fields) = Fields::schema();
    let gw = GatewayPipeline::build(&fields, &schema, 1 << 20, composition, |b| b.threads(threads)).unwrap();
    (gw, schema, fields)
}

#[test]
fn explain_shows_segments_groups_stages_and_parallelism() {
    let gw = gateway(Composition::Static, 2);
    let serial = gw.pipeline.plan().explain(gw.pipeline.schema());
    for want in [
        "plan (one thread",
        "8 stages in 1 segment and 1 group",
        "rows per chunk",
        "segment 0: chunked",
        "group 0: fused loop: one loop body runs its 8 stages",
        "before d2   auth",
        "sequential",
        "may reject",
        "reads route, cost",
        "reads ts_ns; writes latency_ns",
        "after  d0   metrics",
    ] {
        assert!(serial.contains(want), "missing {want:?} in\n{serial}");
    }
    let parallel = gw.pipeline.parallel_plan().explain(gw.pipeline.schema());
    // Cut where the quota's ordered span begins and ends: the quota alone
    // in row order, the stages on either side on any chunk.
    for want in [
        "plan (parallel",
        "3 groups",
        "group 1: own pass",
        "before d6   quota",
        "in row order",
        "group 2: fused loop: one loop body runs its 3 stages",
        "in parallel: any chunk on any worker",
    ] {
        assert!(parallel.contains(want), "missing {want:?} in\n{parallel}");
    }
    let all = gw.pipeline.explain();
    assert!(all.contains(&serial) && all.contains(&parallel));
    let boxed = gateway(Composition::Boxed, 1).pipeline.explain();
    assert!(boxed.contains("note: 8 groups are own passes"), "{boxed}");
    assert!(!all.contains("note:"));
}

/// Splits DOT text into tokens: quoted strings (escapes kept), `->`, single
/// punctuation, and bare words. Fails on an unterminated string.
fn dot_tokens(dot: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = dot.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {}
            '"' => {
                let mut s = String::from('"');
                loop {
                    match it.next() {
                        Some('\\') => {
                            s.push('\\');
                            s.push(it.next().expect("escape at end"));
                        }
                        Some('"') => break,
                        Some(c) => s.push(c),
                        None => panic!("unterminated string in DOT"),
                    }
                }
                s.push('"');
                out.push(s);
            }
            '-' if it.peek() == Some(&'>') => {
                it.next();
                out.push("->".into());
            }
            '{' | '}' | '[' | ']' | '=' | ';' | ',' => out.push(c.to_string()),
            c => {
                let mut w = c.to_string();
                while let Some(&n) = it.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '.' {
                        w.push(n);
                        it.next();
                    } else {
                        break;
                    }
                }
                out.push(w);
            }
        }
    }
    out
}

/// A structural check of DOT: one `digraph`, balanced braces and brackets,
/// every edge between declared nodes, and one node per stage.
fn check_dot(dot: &str, stages: usize) {
    let t = dot_tokens(dot);
    assert_eq!(&t[..3], ["digraph", "plan", "{"]);
    let (mut braces, mut brackets) = (0i32, 0i32);
    for tok in &t {
        match tok.as_str() {
            "{" => braces += 1,
            "}" => braces -= 1,
            "[" => brackets += 1,
            "]" => brackets -= 1,
            _ => {}
        }
        assert!(braces >= 0 && (0..=1).contains(&brackets), "unbalanced DOT:\n{dot}");
    }
    assert_eq!((braces, brackets), (0, 0), "unbalanced DOT:\n{dot}");
    assert_eq!(t.last().map(String::as_str), Some("}"));
    // Node statements: an identifier followed by `[` (not after `->`).
    let mut nodes = std::collections::HashSet::new();
    for w in t.windows(3) {
        if w[1] == "[" && !["graph", "node", "edge", "->"].contains(&w[0].as_str()) && w[0] != "]" {
            nodes.insert(w[0].clone());
        }
    }
    let stage_nodes = nodes.iter().filter(|n| n.starts_with('s') && n[1..].parse::<usize>().is_ok()).count();
    assert_eq!(stage_nodes, stages, "{dot}");
    for (i, tok) in t.iter().enumerate() {
        if tok == "->" {
            assert!(
                nodes.contains(&t[i - 1]) && nodes.contains(&t[i + 1]),
                "edge to an undeclared node: {dot}"
            );
        }
    }
}

fn dot_installed() -> bool {
    Command::new("dot")
        .arg("-V")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Renders DOT with Graphviz; `None` when `dot` is not installed.
fn render(dot: &str) -> Option<String> {
    if !dot_installed() {
        return None;
    }
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dot");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "dot rejected the plan: {stderr}\n{dot}");
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn dot_output_parses() {
    if !dot_installed() {
        eprintln!("Graphviz `dot` is not installed: structural checks only");
    }
    for (composition, threads) in
        [(Composition::Static, 1), (Composition::Boxed, 1), (Composition::Static, 2)]
    {
        let gw = gateway(composition, threads);
        for plan in [gw.pipeline.plan(), gw.pipeline.parallel_plan()] {
            let dot = plan.to_dot();
            check_dot(&dot, 8);
            if let Some(svg) = render(&dot) {
                assert!(svg.contains("<svg") && svg.contains("auth") && svg.contains("metrics"));
            }
        }
    }
    // Names that need escaping, a whole-batch barrier, chunk stages.
    let (schema, x) = schema();
    let spec = Spec { salt: 3, reject: Some((2, 400)), fail: None };
    let weird = stage::parallel("say \"hi\" \\ {x}", Read(x), |_: &u64, _: &mut RowCtl| {});
    let p = Pipeline::builder(&schema).before(weird).threads(1).build().unwrap();
    check_dot(&p.plan().to_dot(), 1);
    render(&p.plan().to_dot());
    let (p, _) = build(
        &schema,
        x,
        &[
            LayerSpec::Around(K::Par, spec.clone(), K::Seq, spec.clone()),
            LayerSpec::Before(K::Whole, spec.clone()),
            LayerSpec::Chain([spec.clone(), spec.clone(), spec.clone(), spec.clone(), spec.clone()]),
            LayerSpec::After(K::ChunkSeq, spec.clone()),
        ],
        |b| b.threads(2),
    );
    for plan in [p.plan(), p.parallel_plan()] {
        let dot = plan.to_dot();
        check_dot(&dot, 9);
        assert!(dot.contains("barrier"));
        render(&dot);
    }
}

/// Renders the gateway-8 plans into `docs/` (run by hand:
/// `cargo test --test observability -- --ignored render_gateway8_plan`).
#[test]
#[ignore = "writes docs/; run by hand after changing the plan's drawing"]
fn render_gateway8_plan() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let gw = gateway(Composition::Static, 2);
    for (name, plan) in
        [("gateway8-plan", gw.pipeline.plan()), ("gateway8-plan-parallel", gw.pipeline.parallel_plan())]
    {
        let dot = plan.to_dot();
        std::fs::write(docs.join(format!("{name}.dot")), &dot).unwrap();
        let svg = render(&dot).expect("Graphviz `dot` is needed to render the plan");
        std::fs::write(docs.join(format!("{name}.svg")), svg).unwrap();
    }
}

// ---------------------------------------------------------------------------
// The report's table and chart.

#[test]
fn table_and_chart() {
    let (gw, schema, fields) = gateway_with_schema(Composition::Static, 1);
    gw.pipeline.set_profiling(true);
    let mut batch = Batch::new(&schema);
    let mut total = RunReport::default();
    for k in 0..3u64 {
        fields.fill(&mut batch, 42, k * 5000, 5000).unwrap();
        total.accumulate(&gw.pipeline.run(&mut batch).unwrap());
    }
    assert_eq!(total.rows, 15_000);
    let groups: Vec<_> = total.group_reports().collect();
    assert_eq!(groups.len(), 1);
    assert!(groups[0].fused() && groups[0].stages.len() == 8);
    assert_eq!(groups[0].rows, 15_000);
    let table = total.table();
    assert!(table.starts_with("15000 rows"), "{table}");
    for name in ["auth", "validate", "route", "enrich", "quota", "handler", "timing", "metrics"] {
        assert!(table.contains(name), "{table}");
    }
    assert!(table.contains("fused group 0 (8 stages)"));
    assert_eq!(table, total.to_string());
    let svg = total.to_svg();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    assert!(svg.contains("fused loop of 8"));

    // Boxed: a bar per stage.
    let (gw, schema, fields) = gateway_with_schema(Composition::Boxed, 1);
    gw.pipeline.set_profiling(true);
    let mut batch = Batch::new(&schema);
    fields.fill(&mut batch, 42, 0, 5000).unwrap();
    let r = gw.pipeline.run(&mut batch).unwrap();
    assert_eq!(r.group_reports().count(), 8);
    assert_eq!(r.to_svg().matches("rx=\"2\"").count(), 8, "one bar per stage");
    assert_eq!(r.table().matches("own pass").count(), 8);
}

/// Reports of runs that took different plans (small batches stay on one
/// thread) add up per stage; group and segment times, whose indices differ
/// between the plans, are dropped.
#[test]
fn accumulate_across_plans() {
    let (gw, schema, fields) = gateway_with_schema(Composition::Static, 2);
    gw.pipeline.set_profiling(true);
    let mut batch = Batch::new(&schema);
    fields.fill(&mut batch, 42, 0, 100).unwrap();
    let small = gw.pipeline.run(&mut batch).unwrap();
    fields.fill(&mut batch, 42, 100, 1 << 16).unwrap();
    let big = gw.pipeline.run(&mut batch).unwrap();
    assert_eq!((small.threads, big.threads), (1, 2));
    let mut total = RunReport::default();
    total.accumulate(&small);
    total.accumulate(&big);
    assert!(total.groups.is_empty() && total.segments.is_empty());
    assert_eq!(total.threads, 2);
    for (t, (a, b)) in total.stages.iter().zip(small.stages.iter().zip(&big.stages)) {
        assert_eq!(t.rows, a.rows + b.rows);
        assert_eq!(t.rejected, a.rejected + b.rejected);
        assert_eq!(t.time, a.time + b.time);
    }
}

// ---------------------------------------------------------------------------
// Tracing.

#[cfg(feature = "tracing")]
mod tracing_spans {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field as TField, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;

    /// A span's name or an event's target, and its `field = value` pairs.
    type Entry = (String, Vec<(String, String)>);

    /// Spans and events seen.
    #[derive(Default)]
    struct Seen {
        spans: Mutex<Vec<Entry>>,
        events: Mutex<Vec<Entry>>,
    }

    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &TField, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_string(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &TField, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
    }

    struct Collector(Arc<Seen>);

    impl Subscriber for Collector {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut fields = Vec::new();
            span.record(&mut Fields(&mut fields));
            let mut spans = self.0.spans.lock().unwrap();
            spans.push((span.metadata().name().to_string(), fields));
            Id::from_u64(spans.len() as u64)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            let mut spans = self.0.spans.lock().unwrap();
            let entry = &mut spans[span.into_u64() as usize - 1].1;
            values.record(&mut Fields(entry));
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Vec::new();
            event.record(&mut Fields(&mut fields));
            self.0.events.lock().unwrap().push((event.metadata().target().to_string(), fields));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A span per run and per segment, with stage names and row counts;
    /// per-stage counts as events; monitor alerts as events.
    #[test]
    fn spans_per_run_and_segment() {
        let seen = Arc::new(Seen::default());
        let (schema, x) = schema();
        let spec = Spec { salt: 9, reject: Some((2, 400)), fail: None };
        let (p, _) = build(
            &schema,
            x,
            &[LayerSpec::Before(K::Par, spec.clone()), LayerSpec::Before(K::Whole, spec.clone())],
            |b| b.threads(1),
        );
        let mut batch = Batch::new(&schema);
        fill(&mut batch, x, 5, 300);
        let report =
            tracing::subscriber::with_default(Collector(seen.clone()), || p.run(&mut batch).unwrap());
        let spans = seen.spans.lock().unwrap();
        let runs: Vec<_> = spans.iter().filter(|(n, _)| n == "mware.run").collect();
        let segs: Vec<_> = spans.iter().filter(|(n, _)| n == "mware.segment").collect();
        assert_eq!((runs.len(), segs.len()), (1, 2), "{spans:?}");
        let run = &runs[0].1;
        assert_eq!(get(run, "rows"), Some("300"));
        assert_eq!(get(run, "stages"), Some("L0b,L1b"));
        assert_eq!(get(run, "chunks"), Some(&*report.chunks.to_string()));
        assert_eq!(get(run, "live"), Some(&*batch.live_rows().to_string()));
        assert_eq!(get(&segs[0].1, "stages"), Some("L0b"));
        assert_eq!(get(&segs[1].1, "stages"), Some("L1b"));
        assert_eq!(get(&segs[1].1, "barrier"), Some("true"));
        assert_eq!(get(&segs[1].1, "rows"), Some("300"));
        let events = seen.events.lock().unwrap();
        let stage_events: Vec<_> =
            events.iter().filter(|(t, f)| t == "mware" && get(f, "stage").is_some()).collect();
        assert_eq!(stage_events.len(), 2);
        assert_eq!(get(&stage_events[0].1, "rows"), Some("300"));
        assert_eq!(get(&stage_events[0].1, "rejected"), Some(&*report.stages[0].rejected.to_string()));
        drop(events);

        // An alert is a WARN event of target mware::monitor.
        let mut monitor = Monitor::builder(&p).window(1).baseline("L0b", 1e-6).build().unwrap();
        tracing::subscriber::with_default(Collector(seen.clone()), || monitor.observe(&report));
        let events = seen.events.lock().unwrap();
        assert!(
            events.iter().any(|(t, f)| t == "mware::monitor" && get(f, "stage") == Some("L0b")),
            "{events:?}"
        );
    }
}

/// A row whose stage panics was seen by that stage and failed by it, in a
/// stage's own pass and in a fused chain alike (chunk stages count it so).
#[test]
fn panicking_rows_count_as_seen_and_failed() {
    let (schema, x) = schema();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let boom = || stage::parallel("boom", Read(x), |x: &u64, _: &mut RowCtl| assert!(*x % 3 != 0, "boom"));
    let chunk_boom = stage::parallel_chunks("boom", Read(x), |xs: &[u64], rows: &mut Rows| {
        rows.for_each(|i| assert!(xs[i] % 3 != 0, "boom"))
    });
    let pipelines = [
        Pipeline::builder(&schema).before(boom()),
        Pipeline::builder(&schema).chain(mware::chain![before(boom())]),
        Pipeline::builder(&schema).before(chunk_boom).chunk_rows(1),
    ];
    let mut batch = Batch::new(&schema);
    batch.resize(30);
    let mut results = Vec::new();
    for b in pipelines {
        let p = b.threads(1).profile(true).build().unwrap();
        batch.reset_control();
        batch.column_mut(x).unwrap().iter_mut().enumerate().for_each(|(i, v)| *v = i as u64);
        let s = &p.run(&mut batch).unwrap().stages[0];
        results.push((s.rows, s.failed));
    }
    std::panic::set_hook(hook);
    assert_eq!(results, [(30, 10); 3]);
}
