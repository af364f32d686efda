//! The onion, property-tested against the per-request reference
//! (`tests/common`).
//!
//! Random pipelines — 1 to 12 layers of before/after/around middleware whose
//! stages read and write a few hot fields with random arithmetic, reject
//! with random codes, respond, fail and panic on rows chosen by a hash of
//! their values, plus sequential counters and sum reductions, and (in some
//! pipelines) chunk stages — run over random batches, registered three ways
//! (every layer on its own, every run of row-stage layers as one static
//! chain, a random split into chains and singles), on the calling thread and
//! on two threads, and through a stream runner with three workers, with
//! small chunk sizes. Parallel row stages are marked `side_by_side` at
//! random: on two threads, a batch of one chunk runs each pair the plan
//! forms at once. Every row's fields, status, outcome (with its stop depth)
//! and error must equal the reference's, and so must the counters and
//! totals.
//!
//! Static chains of random length and random mix of kinds cannot be spelled
//! as one Rust type per case, so inside random chains every stage is `Uni`,
//! a test-defined [`RowStage`] whose kind (parallel, sequential, reduction)
//! is chosen at run time; the executor schedules it from its `meta()` like
//! any other stage. Chains of up to three layers keep their exact shape
//! (absent halves are `Nothing`); longer ones fill absent halves with a
//! stage that does nothing. Singles use the library's own `stage::parallel`,
//! `stage::sequential` and `stage::reduction`, and the second property test
//! runs those inside fixed-shape static chains.

mod common;

use std::sync::{Arc, Mutex, MutexGuard};

use common::*;
use mware::chain::{after, around, before};
use mware::prelude::*;
use mware::stage::StatePolicy;
use mware::stream::StreamRunner;
use mware::{PipelineBuilder, RowOf, RowStage, Stage, StageMeta};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------
// Stages built from specs.

type UAcc = (Read<u32>, Read<u64>, Write<u32>, Write<u64>);
type USlices<'a> = (&'a [u32], &'a [u64], &'a mut [u32], &'a mut [u64]);
type URow<'a> = (&'a u32, &'a u64, &'a mut u32, &'a mut u64);

fn uacc(f: &TestFields, s: &Spec) -> UAcc {
    (Read(f.a[s.rd32]), Read(f.b[s.rd64]), Write(f.a[s.wr32]), Write(f.b[s.wr64]))
}

/// Reads a stage's final counter or total after the runs.
struct Probe {
    name: String,
    read: Box<dyn Fn() -> u64>,
}

fn probe(probes: &mut Vec<Probe>, name: &str, read: impl Fn() -> u64 + 'static) {
    probes.push(Probe { name: name.to_string(), read: Box::new(read) });
}

/// The state policy of [`Uni`]: a locked counter when sequential; a
/// partial per worker otherwise (summed when the total is read, used only
/// by reductions).
struct UniPolicy {
    kind: SKind,
    counter: Arc<Mutex<u64>>,
    partials: Arc<Mutex<Vec<Arc<Mutex<u64>>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatePolicy for UniPolicy {
    type Local = Arc<Mutex<u64>>;
    type Guard<'a> = MutexGuard<'a, u64>;
    type State = u64;
    // The kind the plan uses comes from `Uni::meta`.
    const KIND: Kind = Kind::Parallel;
    fn local(&self) -> Arc<Mutex<u64>> {
        let part = Arc::new(Mutex::new(0));
        lock(&self.partials).push(part.clone());
        part
    }
    fn enter<'a>(&'a self, local: &'a mut Arc<Mutex<u64>>) -> MutexGuard<'a, u64> {
        match self.kind {
            SKind::Seq => lock(&self.counter),
            _ => lock(local),
        }
    }
    fn state<'g>(guard: &'g mut MutexGuard<'_, u64>) -> &'g mut u64 {
        guard
    }
}

/// A row stage whose kind is chosen at run time.
struct Uni {
    name: Arc<str>,
    access: UAcc,
    policy: UniPolicy,
    spec: Spec,
}

fn uni(f: &TestFields, s: &Spec, probes: &mut Vec<Probe>) -> Uni {
    let policy = UniPolicy { kind: s.kind, counter: Arc::default(), partials: Arc::default() };
    match s.kind {
        SKind::Seq => {
            let c = policy.counter.clone();
            probe(probes, &s.name, move || *lock(&c));
        }
        SKind::Red => {
            let parts = policy.partials.clone();
            probe(probes, &s.name, move || lock(&parts).iter().fold(0u64, |t, p| t.wrapping_add(*lock(p))));
        }
        SKind::Par => {}
    }
    Uni { name: s.name.as_str().into(), access: uacc(f, s), policy, spec: s.clone() }
}

impl RowStage for Uni {
    type Access = UAcc;
    type Policy = UniPolicy;
    fn meta(&self) -> StageMeta {
        let mut uses = Vec::new();
        mware::Access::uses(&self.access, &mut uses);
        let kind = match self.spec.kind {
            SKind::Par => Kind::Parallel,
            SKind::Seq => Kind::Sequential,
            SKind::Red => Kind::Reduction,
        };
        StageMeta {
            name: self.name.clone(),
            kind,
            rejects: true,
            side_by_side: self.spec.kind == SKind::Par && self.spec.side_by_side,
            uses,
        }
    }
    fn access(&self) -> &UAcc {
        &self.access
    }
    fn policy(&self) -> &UniPolicy {
        &self.policy
    }
    fn call(&self, state: &mut u64, (x, y, a, b): RowOf<'_, UAcc>, ctl: &mut RowCtl) {
        body(&self.spec, *x, *y, a, b, state, ctl.row(), ctl)
    }
}

fn row_par(f: &TestFields, s: &Spec) -> impl RowStage + Stage {
    let spec = s.clone();
    let st = stage::parallel(&s.name, uacc(f, s), move |(x, y, a, b): URow<'_>, ctl: &mut RowCtl| {
        body(&spec, *x, *y, a, b, &mut 0, ctl.row(), ctl)
    })
    .rejects();
    if s.side_by_side { st.side_by_side() } else { st }
}

fn row_seq(f: &TestFields, s: &Spec, probes: &mut Vec<Probe>) -> impl RowStage + Stage {
    let spec = s.clone();
    let st = stage::sequential(
        &s.name,
        uacc(f, s),
        0u64,
        move |n: &mut u64, (x, y, a, b): URow<'_>, ctl: &mut RowCtl| {
            body(&spec, *x, *y, a, b, n, ctl.row(), ctl)
        },
    )
    .rejects();
    let h = st.state();
    probe(probes, &s.name, move || *h.lock());
    st
}

fn row_red(f: &TestFields, s: &Spec, probes: &mut Vec<Probe>) -> impl RowStage + Stage {
    let spec = s.clone();
    let st = stage::reduction(
        &s.name,
        uacc(f, s),
        0u64,
        move |sum: &mut u64, (x, y, a, b): URow<'_>, ctl: &mut RowCtl| {
            body(&spec, *x, *y, a, b, sum, ctl.row(), ctl)
        },
        |t: &mut u64, p: &u64| *t = t.wrapping_add(*p),
    )
    .rejects();
    let h = st.total();
    probe(probes, &s.name, move || *h.lock());
    st
}

/// A chunk stage's loop: the row body over the selected rows.
fn chunk_loop(s: &Spec, (x, y, a, b): USlices<'_>, rows: &mut Rows<'_>, state: &mut u64) {
    let first = rows.first_row();
    let mut one = |i: usize, rows: &mut Rows<'_>| {
        let mut ctl = RowsCtl { rows, i };
        body(s, x[i], y[i], &mut a[i], &mut b[i], state, first + i, &mut ctl);
    };
    match rows.selection() {
        Selection::Dense(n) => (0..n).for_each(|i| one(i, rows)),
        Selection::Sparse(sel) => sel.iter().for_each(|&i| one(i as usize, rows)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkKind {
    Par,
    Seq,
    Red,
    Whole,
}

fn chunk_par(f: &TestFields, s: &Spec) -> impl mware::stage::ChunkStage + Stage {
    let spec = s.clone();
    stage::parallel_chunks(&s.name, uacc(f, s), move |cols: USlices<'_>, rows: &mut Rows<'_>| {
        chunk_loop(&spec, cols, rows, &mut 0)
    })
    .rejects()
}

fn chunk_seq(f: &TestFields, s: &Spec, probes: &mut Vec<Probe>) -> impl mware::stage::ChunkStage + Stage {
    let spec = s.clone();
    let st = stage::sequential_chunks(
        &s.name,
        uacc(f, s),
        0u64,
        move |n: &mut u64, cols: USlices<'_>, rows: &mut Rows<'_>| chunk_loop(&spec, cols, rows, n),
    )
    .rejects();
    let h = st.state();
    probe(probes, &s.name, move || *h.lock());
    st
}

fn chunk_red(f: &TestFields, s: &Spec, probes: &mut Vec<Probe>) -> impl mware::stage::ChunkStage + Stage {
    let spec = s.clone();
    let st = stage::reduction_chunks(
        &s.name,
        uacc(f, s),
        0u64,
        move |sum: &mut u64, cols: USlices<'_>, rows: &mut Rows<'_>| chunk_loop(&spec, cols, rows, sum),
        |t: &mut u64, p: &u64| *t = t.wrapping_add(*p),
    )
    .rejects();
    let h = st.total();
    probe(probes, &s.name, move || *h.lock());
    st
}

fn chunk_whole(f: &TestFields, s: &Spec, probes: &mut Vec<Probe>) -> impl mware::stage::ChunkStage + Stage {
    let spec = s.clone();
    let st = stage::whole_batch(
        &s.name,
        uacc(f, s),
        0u64,
        move |n: &mut u64, cols: USlices<'_>, rows: &mut Rows<'_>| {
            assert_eq!(rows.first_row(), 0, "a whole-batch stage sees the batch from row 0");
            chunk_loop(&spec, cols, rows, n)
        },
    )
    .rejects();
    let h = st.state();
    probe(probes, &s.name, move || *h.lock());
    st
}

/// Binds `$x` to a library row stage of `$s`'s kind and evaluates `$e`.
macro_rules! with_row_stage {
    ($f:expr, $s:expr, $p:expr, $x:ident => $e:expr) => {
        match $s.kind {
            SKind::Par => {
                let $x = row_par($f, $s);
                $e
            }
            SKind::Seq => {
                let $x = row_seq($f, $s, $p);
                $e
            }
            SKind::Red => {
                let $x = row_red($f, $s, $p);
                $e
            }
        }
    };
}

/// Binds `$x` to a chunk stage of kind `$k` and evaluates `$e`.
macro_rules! with_chunk_stage {
    ($k:expr, $f:expr, $s:expr, $p:expr, $x:ident => $e:expr) => {
        match $k {
            ChunkKind::Par => {
                let $x = chunk_par($f, $s);
                $e
            }
            ChunkKind::Seq => {
                let $x = chunk_seq($f, $s, $p);
                $e
            }
            ChunkKind::Red => {
                let $x = chunk_red($f, $s, $p);
                $e
            }
            ChunkKind::Whole => {
                let $x = chunk_whole($f, $s, $p);
                $e
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Random pipelines.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Before,
    After,
    Around,
}

/// The random part of a stage (its name and depth come from its position).
#[derive(Clone, Debug)]
struct StageGen {
    kind: SKind,
    rd32: usize,
    off32: usize,
    rd64: usize,
    off64: usize,
    salt: u64,
    flags: u8,
    respond: Option<(u64, u16)>,
    reject: Option<(u64, u16)>,
    fail: Option<u64>,
    panic: Option<u64>,
}

#[derive(Clone, Debug)]
struct LayerGen {
    shape: Shape,
    /// `Some`: a layer of chunk stages of these kinds (before, after).
    chunk: Option<[ChunkKind; 2]>,
    halves: [StageGen; 2],
}

#[derive(Clone, Debug)]
struct Case {
    layers: Vec<LayerGen>,
    /// `(rows, input seed)` of each batch, run one after the other.
    batches: Vec<(usize, u64)>,
    chunk_rows: Option<usize>,
    /// Bits choosing how the split registration cuts and registers runs.
    split: u64,
}

/// A layer as specs: what both the executor and the reference run.
#[derive(Clone, Debug)]
struct LayerSpec {
    before: Option<Spec>,
    after: Option<Spec>,
    chunk: Option<[ChunkKind; 2]>,
}

fn spec_of(g: &StageGen, name: String, chunk: Option<ChunkKind>) -> Spec {
    let kind = match chunk {
        None => g.kind,
        Some(ChunkKind::Par) => SKind::Par,
        Some(ChunkKind::Seq | ChunkKind::Whole) => SKind::Seq,
        Some(ChunkKind::Red) => SKind::Red,
    };
    Spec {
        name,
        kind,
        noop: false,
        rd32: g.rd32,
        rd64: g.rd64,
        wr32: (g.rd32 + g.off32) % N32,
        wr64: (g.rd64 + g.off64) % N64,
        salt: g.salt,
        use_row: g.flags & 1 != 0,
        use_status: g.flags & 2 != 0,
        write32: g.flags & 4 != 0,
        write64: g.flags & 8 != 0,
        respond_after: g.flags & 16 != 0,
        respond: g.respond,
        reject: g.reject,
        fail: g.fail,
        // Chunk-stage panics are tested in tests/panics.rs.
        panic: if chunk.is_some() { None } else { g.panic },
        side_by_side: g.flags & 32 != 0,
    }
}

fn layer_specs(case: &Case) -> Vec<LayerSpec> {
    case.layers
        .iter()
        .enumerate()
        .map(|(d, l)| {
            let has_before = l.shape != Shape::After;
            let has_after = l.shape != Shape::Before;
            let [cb, ca] = l.chunk.map_or([None, None], |k| k.map(Some));
            LayerSpec {
                before: has_before.then(|| spec_of(&l.halves[0], format!("d{d}.before"), cb)),
                after: has_after.then(|| spec_of(&l.halves[1], format!("d{d}.after"), ca)),
                chunk: l.chunk,
            }
        })
        .collect()
}

fn stage_gen() -> impl Strategy<Value = StageGen> {
    (
        prop_oneof![6 => Just(SKind::Par), 2 => Just(SKind::Seq), 2 => Just(SKind::Red)],
        0..N32,
        1..N32,
        0..N64,
        1..N64,
        any::<u64>(),
        any::<u8>(),
        proptest::option::weighted(0.4, (2u64..6, 200u16..210)),
        proptest::option::weighted(0.45, (3u64..12, 400u16..410)),
        proptest::option::weighted(0.2, 3u64..12),
        proptest::option::weighted(0.2, 3u64..24),
    )
        .prop_map(|(kind, rd32, off32, rd64, off64, salt, flags, respond, reject, fail, panic)| {
            StageGen { kind, rd32, off32, rd64, off64, salt, flags, respond, reject, fail, panic }
        })
}

fn chunk_kind() -> impl Strategy<Value = ChunkKind> {
    prop_oneof![
        3 => Just(ChunkKind::Par),
        2 => Just(ChunkKind::Seq),
        1 => Just(ChunkKind::Red),
        1 => Just(ChunkKind::Whole)
    ]
}

fn layer_gen(chunks: f64) -> impl Strategy<Value = LayerGen> {
    (
        prop_oneof![Just(Shape::Before), Just(Shape::After), Just(Shape::Around)],
        if chunks > 0.0 {
            proptest::option::weighted(chunks, [chunk_kind(), chunk_kind()]).boxed()
        } else {
            Just(None).boxed()
        },
        [stage_gen(), stage_gen()],
    )
        .prop_map(|(shape, chunk, halves)| LayerGen { shape, chunk, halves })
}

fn batch_rows() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        1 => Just(1usize),
        3 => 2usize..40,
        2 => 40usize..300,
        1 => proptest::sample::select(vec![63usize, 64, 65, 127, 128, 129, 191, 192, 193]),
    ]
}

fn case(max_layers: usize, chunks: f64) -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(layer_gen(chunks), 1..=max_layers),
        proptest::collection::vec((batch_rows(), any::<u64>()), 1..=2),
        prop_oneof![Just(None), Just(Some(1usize)), Just(Some(3)), Just(Some(7)), Just(Some(64))],
        any::<u64>(),
    )
        .prop_map(|(layers, batches, chunk_rows, split)| Case { layers, batches, chunk_rows, split })
}

// ---------------------------------------------------------------------------
// Registration.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Every layer registered on its own (`before`/`after`/`around`/`handler`).
    Singles,
    /// Every maximal run of row-stage layers as one static chain.
    OneChain,
    /// Runs cut at random into chains and singles.
    Split,
}

/// One layer as row-stage singles, with the library's stage constructors.
fn reg_single(
    b: PipelineBuilder,
    f: &TestFields,
    l: &LayerSpec,
    last: bool,
    p: &mut Vec<Probe>,
) -> PipelineBuilder {
    if let Some(kinds) = l.chunk {
        return match (&l.before, &l.after) {
            (Some(sb), Some(sa)) => {
                with_chunk_stage!(kinds[0], f, sb, p, x => with_chunk_stage!(kinds[1], f, sa, p, y => b.around_chunks(x, y)))
            }
            (Some(sb), None) => with_chunk_stage!(kinds[0], f, sb, p, x => b.before(x)),
            (None, Some(sa)) => with_chunk_stage!(kinds[1], f, sa, p, x => b.after(x)),
            (None, None) => unreachable!("a layer has at least one half"),
        };
    }
    match (&l.before, &l.after) {
        (Some(sb), Some(sa)) => {
            with_row_stage!(f, sb, p, x => with_row_stage!(f, sa, p, y => b.around(x, y)))
        }
        (Some(sb), None) if last => with_row_stage!(f, sb, p, x => b.handler(x)),
        (Some(sb), None) => with_row_stage!(f, sb, p, x => b.before(x)),
        (None, Some(sa)) => with_row_stage!(f, sa, p, x => b.after(x)),
        (None, None) => unreachable!("a layer has at least one half"),
    }
}

/// A layer of a short static chain, with its exact shape.
#[allow(clippy::large_enum_variant)]
enum UniLayer {
    B(Uni),
    A(Uni),
    Ar(Uni, Uni),
}

/// Registers up to three [`UniLayer`]s as one chain of exactly their shapes.
macro_rules! exact_chain {
    ($b:ident; [$($acc:expr),*];) => { $b.chain(mware::chain![$($acc),*]) };
    ($b:ident; [$($acc:expr),*]; $k:expr $(, $rest:expr)*) => {
        match $k {
            UniLayer::B(x) => exact_chain!($b; [$($acc,)* before(x)]; $($rest),*),
            UniLayer::A(x) => exact_chain!($b; [$($acc,)* after(x)]; $($rest),*),
            UniLayer::Ar(x, y) => exact_chain!($b; [$($acc,)* around(x, y)]; $($rest),*),
        }
    };
}

/// Registers `n` layers taken from `it` as one chain of `around` layers.
macro_rules! around_chain {
    ($b:ident, $it:ident; $($l:ident)+) => {{
        $(let $l = $it.next().expect("enough layers");)+
        $b.chain(mware::chain![$($l),+])
    }};
}

/// Layers of row stages as one static chain of [`Uni`] stages.
fn reg_chain(b: PipelineBuilder, f: &TestFields, ls: &[LayerSpec], p: &mut Vec<Probe>) -> PipelineBuilder {
    assert!(ls.iter().all(|l| l.chunk.is_none()));
    if ls.len() <= 3 {
        let mut layers: Vec<UniLayer> = ls
            .iter()
            .map(|l| match (&l.before, &l.after) {
                (Some(sb), Some(sa)) => UniLayer::Ar(uni(f, sb, p), uni(f, sa, p)),
                (Some(sb), None) => UniLayer::B(uni(f, sb, p)),
                (None, Some(sa)) => UniLayer::A(uni(f, sa, p)),
                (None, None) => unreachable!(),
            })
            .collect();
        let mut it = layers.drain(..);
        let mut next = || it.next().expect("counted");
        return match ls.len() {
            1 => exact_chain!(b; []; next()),
            2 => exact_chain!(b; []; next(), next()),
            3 => exact_chain!(b; []; next(), next(), next()),
            _ => unreachable!(),
        };
    }
    // Longer chains: absent halves become stages that do nothing.
    let mut layers: Vec<_> = ls
        .iter()
        .map(|l| {
            let present = l.before.as_ref().or(l.after.as_ref()).expect("a half");
            let half = |s: &Option<Spec>, p: &mut Vec<Probe>| match s {
                Some(s) => uni(f, s, p),
                None => uni(f, &Spec::noop(format!("{}.noop", present.name)), p),
            };
            around(half(&l.before, p), half(&l.after, p))
        })
        .collect();
    let mut it = layers.drain(..);
    match ls.len() {
        4 => around_chain!(b, it; l0 l1 l2 l3),
        5 => around_chain!(b, it; l0 l1 l2 l3 l4),
        6 => around_chain!(b, it; l0 l1 l2 l3 l4 l5),
        7 => around_chain!(b, it; l0 l1 l2 l3 l4 l5 l6),
        8 => around_chain!(b, it; l0 l1 l2 l3 l4 l5 l6 l7),
        9 => around_chain!(b, it; l0 l1 l2 l3 l4 l5 l6 l7 l8),
        10 => around_chain!(b, it; l0 l1 l2 l3 l4 l5 l6 l7 l8 l9),
        11 => around_chain!(b, it; l0 l1 l2 l3 l4 l5 l6 l7 l8 l9 l10),
        12 => around_chain!(b, it; l0 l1 l2 l3 l4 l5 l6 l7 l8 l9 l10 l11),
        n => unreachable!("{n} layers"),
    }
}

fn build(
    schema: &Schema,
    f: &TestFields,
    ls: &[LayerSpec],
    mode: Mode,
    threads: usize,
    chunk_rows: Option<usize>,
    split: u64,
) -> (Pipeline, Vec<Probe>) {
    let mut p = Vec::new();
    let mut b = Pipeline::builder(schema).threads(threads);
    if threads > 1 {
        b = b.min_parallel_work(0);
    }
    if let Some(n) = chunk_rows {
        b = b.chunk_rows(n);
    }
    let mut bits = split;
    let mut take = |n: u32| {
        let v = bits & ((1 << n) - 1);
        bits = bits.rotate_right(n);
        v
    };
    let mut i = 0;
    while i < ls.len() {
        if ls[i].chunk.is_some() {
            b = reg_single(b, f, &ls[i], i + 1 == ls.len(), &mut p);
            i += 1;
            continue;
        }
        let run_end = (i..ls.len()).find(|&j| ls[j].chunk.is_some()).unwrap_or(ls.len());
        match mode {
            Mode::Singles => {
                for j in i..run_end {
                    b = reg_single(b, f, &ls[j], j + 1 == ls.len(), &mut p);
                }
            }
            Mode::OneChain => b = reg_chain(b, f, &ls[i..run_end], &mut p),
            Mode::Split => {
                let mut j = i;
                while j < run_end {
                    // Pieces of 1 to 4 layers, each a chain or singles.
                    let len = (1 + take(2) as usize).min(run_end - j);
                    if take(1) == 1 {
                        b = reg_chain(b, f, &ls[j..j + len], &mut p);
                    } else {
                        for k in j..j + len {
                            b = reg_single(b, f, &ls[k], k + 1 == ls.len(), &mut p);
                        }
                    }
                    j += len;
                }
            }
        }
        i = run_end;
    }
    (b.build().expect("a valid pipeline"), p)
}

// ---------------------------------------------------------------------------
// Checking.

struct Expected {
    batches: Vec<Vec<Req>>,
    states: Vec<(String, u64)>,
}

fn reference(ls: &[LayerSpec], batches: &[(usize, u64)]) -> Expected {
    let mut states = Vec::new();
    let mut stage = |spec: &Option<Spec>| {
        spec.clone().map(|spec| {
            let s = RefStage::new(spec);
            if s.spec.kind != SKind::Par {
                states.push((s.spec.name.clone(), s.state.clone()));
            }
            s
        })
    };
    let layers: Vec<Box<dyn Middleware>> = ls
        .iter()
        .map(|l| {
            Box::new(RefLayer { before: stage(&l.before), after: stage(&l.after) }) as Box<dyn Middleware>
        })
        .collect();
    let mut out = Vec::new();
    for &(rows, seed) in batches {
        let mut reqs: Vec<Req> = (0..rows)
            .map(|i| {
                let (a, b) = input_row(seed, i);
                Req::new(a, b)
            })
            .collect();
        run_reference(&layers, &mut reqs);
        out.push(reqs);
    }
    Expected { batches: out, states: states.into_iter().map(|(n, s)| (n, s.get())).collect() }
}

/// Runs the case again, reference and executor, recording the stage calls
/// for one row: what each side's stages saw.
fn retrace(case: &Case, ls: &[LayerSpec], mode: Mode, threads: usize, batch: usize, row: usize) -> String {
    let (schema, f) = test_schema();
    let pick = |lines: Vec<String>| {
        let tag = format!(" row {row}:");
        lines.into_iter().filter(|l| l.contains(&tag)).collect::<Vec<_>>().join("\n  ")
    };
    trace_start();
    let again = reference(ls, &case.batches[..=batch]);
    let reference_calls = pick(trace_take());
    let reference_calls = format!("{reference_calls}\n  => {:?}", again.batches[batch][row]);
    let (pipeline, _) = build(&schema, &f, ls, mode, threads, case.chunk_rows, case.split);
    let mut b = Batch::new(&schema);
    for &(rows, seed) in &case.batches[..batch] {
        fill_batch(&mut b, &f, seed, rows);
        pipeline.run(&mut b).expect("run");
    }
    let (rows, seed) = case.batches[batch];
    fill_batch(&mut b, &f, seed, rows);
    trace_start();
    pipeline.run(&mut b).expect("run");
    let executor_calls = pick(trace_take());
    format!(
        "reference calls (all batches so far):\n  {reference_calls}\nexecutor calls (this batch):\n  {executor_calls}"
    )
}

fn check(case: &Case, modes: &[Mode]) -> Result<(), TestCaseError> {
    quiet_panics();
    let (schema, f) = test_schema();
    let ls = layer_specs(case);
    let expected = reference(&ls, &case.batches);
    for &mode in modes {
        for threads in [1, 2] {
            let (pipeline, probes) = build(&schema, &f, &ls, mode, threads, case.chunk_rows, case.split);
            let mut batch = Batch::new(&schema);
            for (bi, &(rows, seed)) in case.batches.iter().enumerate() {
                fill_batch(&mut batch, &f, seed, rows);
                let report = pipeline.run(&mut batch).expect("run");
                let want = &expected.batches[bi];
                for (row, want) in want.iter().enumerate() {
                    let got = req_of(&batch, &f, row);
                    if got != *want {
                        let trace = retrace(case, &ls, mode, threads, bi, row);
                        prop_assert_eq!(
                            &got,
                            want,
                            "row {} of batch {} ({:?}, threads {}, chunk_rows {:?})\n{}\n{}",
                            row,
                            bi,
                            mode,
                            threads,
                            case.chunk_rows,
                            pipeline.explain(),
                            trace
                        );
                    }
                }
                let live = want.iter().filter(|r| r.stop.is_none()).count();
                prop_assert_eq!(report.rows, rows);
                prop_assert_eq!(batch.live_rows(), live);
                prop_assert_eq!(batch.errors().count(), want.iter().filter(|r| r.error.is_some()).count());
            }
            let got: Vec<(String, u64)> = probes.iter().map(|p| (p.name.clone(), (p.read)())).collect();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            let mut want_sorted = expected.states.clone();
            want_sorted.sort();
            prop_assert_eq!(got_sorted, want_sorted, "states ({:?}, threads {})", mode, threads);
        }
    }
    // Streamed twice: profiling off, and on (each group then also counts
    // and times its rows).
    check_streamed(case, &ls, &expected, false)?;
    check_streamed(case, &ls, &expected, true)
}

/// Streams `batches` through `pipeline` (three workers, results in order)
/// and checks every row against `expected`; `what` labels a failure.
fn stream_rows(
    pipeline: Pipeline,
    f: TestFields,
    batches: &[(usize, u64)],
    expected: &Expected,
    what: &str,
) -> Result<(), TestCaseError> {
    let runner = StreamRunner::builder(pipeline).workers(3).capacity(4).build().expect("runner");
    let mut consumer = runner.consumer().expect("consumer");
    let producer = runner.producer();
    let batches = batches.to_vec();
    let feeder = std::thread::spawn(move || {
        for (rows, seed) in batches {
            let mut batch = producer.batch();
            fill_batch(&mut batch, &f, seed, rows);
            producer.submit(batch).expect("submit");
        }
    });
    for (bi, want) in expected.batches.iter().enumerate() {
        let done = consumer.recv().expect("every batch comes back");
        prop_assert_eq!(done.seq, bi as u64);
        for (row, want) in want.iter().enumerate() {
            prop_assert_eq!(&req_of(&done, &f, row), want, "row {} of batch {} ({})", row, bi, what);
        }
    }
    feeder.join().expect("feeder");
    runner.close();
    Ok(())
}

/// The same batches through a stream runner: each batch runs on its
/// worker's thread while the ordered groups take the batches in turn (and
/// run ahead when they must wait).
fn check_streamed(
    case: &Case,
    ls: &[LayerSpec],
    expected: &Expected,
    profiling: bool,
) -> Result<(), TestCaseError> {
    let (schema, f) = test_schema();
    let (pipeline, probes) = build(&schema, &f, ls, Mode::Split, 1, case.chunk_rows, case.split);
    pipeline.set_profiling(profiling);
    stream_rows(pipeline, f, &case.batches, expected, &format!("streamed, profiling {profiling}"))?;
    let mut got: Vec<(String, u64)> = probes.iter().map(|p| (p.name.clone(), (p.read)())).collect();
    got.sort();
    let mut want = expected.states.clone();
    want.sort();
    prop_assert_eq!(got, want, "states (streamed, profiling {})", profiling);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2500, ..ProptestConfig::default() })]

    /// Row-stage pipelines (no chunk stages), all three registrations.
    #[test]
    fn row_pipelines_match_the_reference(case in case(12, 0.0)) {
        check(&case, &[Mode::Singles, Mode::OneChain, Mode::Split])?;
    }

    /// Pipelines mixing row-stage layers and chunk-stage layers (parallel,
    /// sequential, reduction and whole-batch chunk stages).
    #[test]
    fn mixed_pipelines_match_the_reference(case in case(12, 0.25)) {
        check(&case, &[Mode::Singles, Mode::OneChain, Mode::Split])?;
    }
}

// ---------------------------------------------------------------------------
// The library's own row stages inside fixed-shape static chains.

fn gen_spec(g: &StageGen, name: &str, kind: SKind) -> Spec {
    let mut s = spec_of(g, name.to_string(), None);
    s.kind = kind;
    s
}

/// A few chain shapes with `Nothing` halves and every row-stage kind, built
/// with `stage::parallel`/`sequential`/`reduction` and `chain!`. Returns the
/// layers (for the reference) and the pipeline.
fn template(
    t: usize,
    g: &[StageGen],
    schema: &Schema,
    f: &TestFields,
    configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
    p: &mut Vec<Probe>,
) -> (Vec<LayerSpec>, Pipeline) {
    use SKind::*;
    let s = |i: usize, name: &str, kind: SKind| gen_spec(&g[i], name, kind);
    let l = |before: Option<Spec>, after: Option<Spec>| LayerSpec { before, after, chunk: None };
    let b = configure(Pipeline::builder(schema));
    let (layers, b) = match t {
        0 => {
            // chain![after(R), before(P), around(S, P), after(P), before(P)]
            let ls = vec![
                l(None, Some(s(0, "metrics", Red))),
                l(Some(s(1, "auth", Par)), None),
                l(Some(s(2, "quota", Seq)), Some(s(3, "timing", Par))),
                l(None, Some(s(4, "log", Par))),
                l(Some(s(5, "handler", Par)), None),
            ];
            let b = b.chain(mware::chain![
                after(row_red(f, ls[0].after.as_ref().unwrap(), p)),
                before(row_par(f, ls[1].before.as_ref().unwrap())),
                around(
                    row_seq(f, ls[2].before.as_ref().unwrap(), p),
                    row_par(f, ls[2].after.as_ref().unwrap())
                ),
                after(row_par(f, ls[3].after.as_ref().unwrap())),
                before(row_par(f, ls[4].before.as_ref().unwrap())),
            ]);
            (ls, b)
        }
        1 => {
            // chain![around(P, R), before(S)], then a single after(P), then
            // chain![before(P), around(R, S)].
            let ls = vec![
                l(Some(s(0, "a", Par)), Some(s(1, "b", Red))),
                l(Some(s(2, "c", Seq)), None),
                l(None, Some(s(3, "d", Par))),
                l(Some(s(4, "e", Par)), None),
                l(Some(s(5, "f", Red)), Some(s(6, "g", Seq))),
            ];
            let b = b
                .chain(mware::chain![
                    around(
                        row_par(f, ls[0].before.as_ref().unwrap()),
                        row_red(f, ls[0].after.as_ref().unwrap(), p)
                    ),
                    before(row_seq(f, ls[1].before.as_ref().unwrap(), p)),
                ])
                .after(row_par(f, ls[2].after.as_ref().unwrap()))
                .chain(mware::chain![
                    before(row_par(f, ls[3].before.as_ref().unwrap())),
                    around(
                        row_red(f, ls[4].before.as_ref().unwrap(), p),
                        row_seq(f, ls[4].after.as_ref().unwrap(), p)
                    ),
                ]);
            (ls, b)
        }
        3 => {
            // chain![before(P), around(S, P), before(P), after(R)]: the slots
            // right before and right after the ordered span both hold a
            // stage, so a parallel plan's three parts are all non-empty.
            let ls = vec![
                l(Some(s(0, "p0", Par)), None),
                l(Some(s(1, "s1", Seq)), Some(s(2, "p1", Par))),
                l(Some(s(3, "p2", Par)), None),
                l(None, Some(s(4, "r3", Red))),
            ];
            let b = b.chain(mware::chain![
                before(row_par(f, ls[0].before.as_ref().unwrap())),
                around(
                    row_seq(f, ls[1].before.as_ref().unwrap(), p),
                    row_par(f, ls[1].after.as_ref().unwrap())
                ),
                before(row_par(f, ls[2].before.as_ref().unwrap())),
                after(row_red(f, ls[3].after.as_ref().unwrap(), p)),
            ]);
            (ls, b)
        }
        _ => {
            // chain![after(S), after(P), before(S), before(P), around(P, P), before(R)]
            let ls = vec![
                l(None, Some(s(0, "s0", Seq))),
                l(None, Some(s(1, "s1", Par))),
                l(Some(s(2, "s2", Seq)), None),
                l(Some(s(3, "s3", Par)), None),
                l(Some(s(4, "s4", Par)), Some(s(5, "s5", Par))),
                l(Some(s(6, "s6", Red)), None),
            ];
            let b = b.chain(mware::chain![
                after(row_seq(f, ls[0].after.as_ref().unwrap(), p)),
                after(row_par(f, ls[1].after.as_ref().unwrap())),
                before(row_seq(f, ls[2].before.as_ref().unwrap(), p)),
                before(row_par(f, ls[3].before.as_ref().unwrap())),
                around(row_par(f, ls[4].before.as_ref().unwrap()), row_par(f, ls[4].after.as_ref().unwrap())),
                before(row_red(f, ls[5].before.as_ref().unwrap(), p)),
            ]);
            (ls, b)
        }
    };
    (layers, b.build().expect("valid"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn library_stages_in_static_chains_match_the_reference(
        t in 0usize..4,
        g in proptest::collection::vec(stage_gen(), 7),
        batches in proptest::collection::vec((batch_rows(), any::<u64>()), 1..=3),
        chunk_rows in prop_oneof![Just(None), Just(Some(1usize)), Just(Some(3)), Just(Some(7)), Just(Some(64))],
        // 0: through a stream runner with three workers (the parallel plan,
        // the ordered span taking the batches in turn).
        threads in prop_oneof![Just(1usize), Just(2), Just(0)],
    ) {
        quiet_panics();
        let (schema, f) = test_schema();
        let mut probes = Vec::new();
        let (ls, pipeline) = template(t, &g, &schema, &f, |b| {
            let b = b.threads(threads.max(1)).min_parallel_work(if threads > 1 { 0 } else { usize::MAX });
            match chunk_rows { Some(n) => b.chunk_rows(n), None => b }
        }, &mut probes);
        let expected = reference(&ls, &batches);
        if threads == 0 {
            stream_rows(pipeline, f, &batches, &expected, "streamed")?;
        } else {
            let mut batch = Batch::new(&schema);
            for (bi, &(rows, seed)) in batches.iter().enumerate() {
                fill_batch(&mut batch, &f, seed, rows);
                pipeline.run(&mut batch).expect("run");
                for (row, want) in expected.batches[bi].iter().enumerate() {
                    prop_assert_eq!(&req_of(&batch, &f, row), want, "row {} of batch {}\n{}", row, bi, pipeline.explain());
                }
            }
        }
        let mut got: Vec<(String, u64)> = probes.iter().map(|p| (p.name.clone(), (p.read)())).collect();
        got.sort();
        let mut want = expected.states.clone();
        want.sort();
        prop_assert_eq!(got, want);
    }
}

/// A row an earlier unit rejected at a shallower depth is not seen by a
/// chain's outer after-stage, even when most rows of the chunk are live
/// (a dense walk) and the chain has no before-stage outside that after:
/// the walk may skip the after's row check only when every row starts live.
/// The same after does see rows its own inner stages stopped.
#[test]
fn outer_after_of_a_chain_skips_rows_stopped_by_an_earlier_unit() {
    let mut s = SchemaBuilder::new();
    let x = s.hot::<u32>("x");
    let seen = s.hot::<u32>("seen");
    let schema = s.build().unwrap();
    for threads in [1, 2] {
        let gate = stage::parallel("gate", Read(x), |x: &u32, ctl: &mut RowCtl| {
            if *x % 20 == 0 {
                ctl.reject(403);
            }
        });
        let count = stage::parallel("count", Write(seen), |seen: &mut u32, _: &mut RowCtl| *seen += 1);
        let inner = stage::parallel("inner", Read(x), |x: &u32, ctl: &mut RowCtl| {
            if *x % 20 == 1 {
                ctl.reject(429);
            } else {
                ctl.respond(200);
            }
        });
        let pipeline = Pipeline::builder(&schema)
            .before(gate)
            .chain(mware::chain![after(count), before(inner)])
            .threads(threads)
            .min_parallel_work(0)
            .chunk_rows(64)
            .build()
            .unwrap();
        let mut batch = Batch::new(&schema);
        batch.resize(1000);
        batch.column_mut(x).unwrap().iter_mut().enumerate().for_each(|(i, v)| *v = i as u32);
        pipeline.run(&mut batch).unwrap();
        for i in 0..1000 {
            let (want_seen, want_status) = match i % 20 {
                0 => (0, 403),
                1 => (1, 429),
                _ => (1, 200),
            };
            assert_eq!(batch.column(seen).unwrap()[i], want_seen, "row {i}, {threads} threads");
            assert_eq!(batch.status(i), Some(want_status), "row {i}, {threads} threads");
        }
    }
}
