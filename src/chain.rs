//! Static composition: row stages nested in one type, fused into one loop.
//!
//! A chain is a list of middleware layers, outermost first, each with an
//! optional before-stage and after-stage:
//!
//! ```
//! use mware::prelude::*;
//! use mware::chain::{after, before};
//!
//! let mut s = SchemaBuilder::new();
//! let len = s.hot::<u32>("len");
//! let seen = s.hot::<u32>("seen");
//! let schema = s.build()?;
//!
//! let count = stage::parallel("count", Write(seen), |seen: &mut u32, _: &mut RowCtl| *seen += 1);
//! let limit = stage::parallel("limit", Read(len), |len: &u32, ctl: &mut RowCtl| {
//!     if *len > 10 { ctl.reject(413) }
//! }).rejects();
//! let ok = stage::parallel("ok", (), |_: (), ctl: &mut RowCtl| ctl.respond(200));
//! let pipeline = Pipeline::builder(&schema)
//!     .chain(mware::chain![after(count), before(limit), before(ok)])
//!     .build()?;
//!
//! let mut batch = Batch::new(&schema);
//! batch.resize(2);
//! batch.column_mut(len)?.copy_from_slice(&[5, 50]);
//! pipeline.run(&mut batch)?;
//! assert_eq!(batch.status(0), Some(200));
//! assert_eq!(batch.status(1), Some(413));
//! assert_eq!(batch.column(seen)?, &[1, 1]); // the outer after sees both rows
//! # Ok::<(), mware::Error>(())
//! ```
//!
//! Every stage of the chain is a generic type, so the compiler monomorphises
//! and inlines the whole onion into one loop body per chunk: the Rust form of
//! unrolling a decorator stack. The executor dispatches to it once per chunk.
//! Stages that share a field share its column pointer in that loop when
//! they declare it with [`ReadAt`](crate::ReadAt) /
//! [`WriteAt`](crate::WriteAt) over a [`Pinned`](crate::Pinned) field
//! (`gateway8`: 1.11-1.16x the hand loop instead of 1.21-1.27x, BENCHMARKS.md §1).

use std::any::Any;
use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::access::{Access, ColumnTable, Frame, SendPtr};
use crate::control::{RowCtl, RowState};
use crate::error::StageError;
use crate::report::SlotStats;
use crate::stage::{Kind, RowStage, StageMeta, StatePolicy};
use crate::unit::{ChunkRun, LiveRows, Unit, Visible, Walk, own_local, panic_message, select, stage_name};

/// The absent half of a layer (a middleware with only a before or only an
/// after stage).
pub struct Nothing;

/// One middleware of a chain: a before-stage and an after-stage, either of
/// which may be [`Nothing`].
pub struct Layer<B, A> {
    before: B,
    after: A,
}

/// A layer with only a before-stage (a handler is the innermost one).
pub fn before<S: RowStage>(stage: S) -> Layer<S, Nothing> {
    Layer { before: stage, after: Nothing }
}

/// A layer with only an after-stage.
pub fn after<S: RowStage>(stage: S) -> Layer<Nothing, S> {
    Layer { before: Nothing, after: stage }
}

/// A layer with both.
pub fn around<B: RowStage, A: RowStage>(before: B, after: A) -> Layer<B, A> {
    Layer { before, after }
}

/// One half of a layer: a row stage or [`Nothing`].
pub trait Half: Send + Sync + 'static {
    /// Whether a stage is there.
    const PRESENT: bool;
    /// Whether the stage must see rows in order (where a parallel plan cuts
    /// a chain).
    #[doc(hidden)]
    const ORDERED: bool;
    #[doc(hidden)]
    type Ptrs: Copy;
    #[doc(hidden)]
    type Local: Send + 'static;
    #[doc(hidden)]
    type Guard<'a>
    where
        Self: 'a;
    #[doc(hidden)]
    fn meta(&self) -> Option<StageMeta>;
    #[doc(hidden)]
    fn resolve(&self, table: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs;
    #[doc(hidden)]
    fn local(&self) -> Self::Local;
    #[doc(hidden)]
    fn enter<'a>(&'a self, local: &'a mut Self::Local) -> Self::Guard<'a>;
    /// Takes the stage's state now rather than on first use.
    #[doc(hidden)]
    fn take_state(guard: &mut Self::Guard<'_>);
    /// Runs the stage on row `row`.
    ///
    /// # Safety
    /// `ptrs` resolves the batch being run, `row` is in bounds, and no other
    /// reference to this row's written fields lives meanwhile.
    #[doc(hidden)]
    unsafe fn call(&self, ptrs: Self::Ptrs, guard: &mut Self::Guard<'_>, row: usize, ctl: &mut RowCtl);
}

impl Half for Nothing {
    const PRESENT: bool = false;
    const ORDERED: bool = false;
    type Ptrs = ();
    type Local = ();
    type Guard<'a> = ();
    fn meta(&self) -> Option<StageMeta> {
        None
    }
    fn resolve(&self, _: &ColumnTable<'_>, _: &Frame) {}
    fn local(&self) {}
    fn enter<'a>(&'a self, _: &'a mut ()) {}
    fn take_state(_: &mut ()) {}
    #[inline(always)]
    unsafe fn call(&self, _: (), _: &mut (), _: usize, _: &mut RowCtl) {}
}

impl<S: RowStage> Half for S {
    const PRESENT: bool = true;
    const ORDERED: bool = matches!(<S::Policy as StatePolicy>::KIND, Kind::Sequential | Kind::WholeBatch);
    type Ptrs = <S::Access as Access>::Ptrs;
    type Local = <S::Policy as StatePolicy>::Local;
    type Guard<'a> = <S::Policy as StatePolicy>::Guard<'a>;
    fn meta(&self) -> Option<StageMeta> {
        Some(RowStage::meta(self))
    }
    #[inline(always)]
    fn resolve(&self, table: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs {
        self.access().resolve(table, frame)
    }
    fn local(&self) -> Self::Local {
        self.policy().local()
    }
    #[inline(always)]
    fn enter<'a>(&'a self, local: &'a mut Self::Local) -> Self::Guard<'a> {
        self.policy().enter(local)
    }
    #[inline(always)]
    fn take_state(guard: &mut Self::Guard<'_>) {
        S::Policy::state(guard);
    }
    #[inline(always)]
    unsafe fn call(&self, ptrs: Self::Ptrs, guard: &mut Self::Guard<'_>, row: usize, ctl: &mut RowCtl) {
        // SAFETY: forwarded from the caller's contract.
        let refs = unsafe { S::Access::row(ptrs, row) };
        RowStage::call(self, S::Policy::state(guard), refs, ctl)
    }
}

/// Where one row runs inside a chunk: the step range and the error sink.
pub struct RowEnv<'r> {
    trap: &'r Cell<Option<(usize, usize, RowState)>>,
    /// The unit's per-slot counters while profiling, else null (see
    /// [`RowCtl`]'s `stops`).
    stats: *mut SlotStats,
    /// Rows the walk stopped while they were live (see [`RowCtl`]'s
    /// `stopped`).
    stopped: *mut usize,
    errors: &'r mut Vec<(usize, StageError)>,
    names: &'r [Option<Arc<str>>],
}

/// The loop-invariant part of a walk, passed by value so it stays in
/// registers (the mutable [`RowEnv`] escapes into the cold error path).
#[derive(Clone, Copy)]
pub struct RowPlan {
    base: u16,
    lo: usize,
    hi: usize,
    /// Bit `s` set when slot `s` runs (chains of up to 64 layers): one test
    /// per step instead of two comparisons.
    mask: u128,
}

impl RowPlan {
    fn new(base: u16, slots: Range<usize>) -> RowPlan {
        let mask = below(slots.end) & !below(slots.start);
        RowPlan { base, lo: slots.start, hi: slots.end, mask }
    }

    /// Whether `slot` of a chain of `layers` runs. Both are constants once
    /// the chain is inlined, so this is one bit test: the number of layers
    /// must not come from the plan, or the choice between mask and range
    /// and every after-stage's slot are worked out per row (that cost a cut
    /// chain twice the time of the uncut one).
    #[inline(always)]
    fn has(self, slot: usize, layers: usize) -> bool {
        if layers <= 64 { self.mask & (1 << slot) != 0 } else { self.lo <= slot && slot < self.hi }
    }
}

/// Bits `0..n` of a slot mask, computed rather than looped: masks are made
/// once per chunk, and for one-row batches a loop over the slots showed in
/// profiles.
fn below(n: usize) -> u128 {
    if n >= 128 { u128::MAX } else { (1u128 << n) - 1 }
}

/// Which slots of a chain a walk runs. Where the plan's groups are known
/// from the chain's type (all of it, or the parts a parallel plan cuts it
/// into), the type says so and every step's test folds away; otherwise
/// each step tests the plan's mask ([`Ranged`]). A cut chain tested its
/// mask per step and row: twice the instructions per row of the uncut one.
#[doc(hidden)]
pub trait Span {
    /// Whether every slot runs (the whole chain in one loop).
    const WHOLE: bool = false;
    /// Whether `slot` of a chain of `layers` runs.
    fn runs(plan: RowPlan, slot: usize, layers: usize) -> bool;
}

/// Every slot: a chain run in one fused group.
#[doc(hidden)]
pub struct Whole;

/// The slots before the first ordered stage of the chain of layers `L`
/// ([`Layers::CUT`]): a group a parallel plan runs on any chunk.
#[doc(hidden)]
pub struct Head<L>(PhantomData<L>);

/// The slots from the first ordered stage of `L` to its last: the group a
/// parallel plan runs in row order.
#[doc(hidden)]
pub struct Mid<L>(PhantomData<L>);

/// The slots after the last ordered stage of `L` ([`Layers::CUT_END`]): a
/// group a parallel plan runs on any chunk.
#[doc(hidden)]
pub struct Tail<L>(PhantomData<L>);

/// The slots from the first ordered stage of `L` on ([`Layers::CUT`]): the
/// group a run in turn runs in turn.
#[doc(hidden)]
pub struct Rest<L>(PhantomData<L>);

/// The slots of the plan's range, tested per step.
#[doc(hidden)]
pub struct Ranged;

impl Span for Whole {
    const WHOLE: bool = true;
    #[inline(always)]
    fn runs(_: RowPlan, _: usize, _: usize) -> bool {
        true
    }
}

impl<L: Layers> Span for Head<L> {
    #[inline(always)]
    fn runs(_: RowPlan, slot: usize, _: usize) -> bool {
        slot < L::CUT
    }
}

impl<L: Layers> Span for Mid<L> {
    #[inline(always)]
    fn runs(_: RowPlan, slot: usize, _: usize) -> bool {
        L::CUT <= slot && slot < L::CUT_END
    }
}

impl<L: Layers> Span for Rest<L> {
    #[inline(always)]
    fn runs(_: RowPlan, slot: usize, _: usize) -> bool {
        slot >= L::CUT
    }
}

impl<L: Layers> Span for Tail<L> {
    #[inline(always)]
    fn runs(_: RowPlan, slot: usize, _: usize) -> bool {
        slot >= L::CUT_END
    }
}

impl Span for Ranged {
    #[inline(always)]
    fn runs(plan: RowPlan, slot: usize, layers: usize) -> bool {
        plan.has(slot, layers)
    }
}

/// The first and one past the last slot of a chain of `n` layers whose
/// stage is ordered, given per layer (bit `k`: layer `k`) which before- and
/// after-stages are: where a parallel plan cuts the chain. `usize::MAX`
/// for both when none is, or when the chain is too long for the masks.
const fn ordered_slots(n: usize, before: u64, after: u64) -> (usize, usize) {
    if n > 64 || (before == 0 && after == 0) {
        return (usize::MAX, usize::MAX);
    }
    // Before-stages run outermost first (slot = level); after-stages
    // innermost first (slot = 2n - 1 - level).
    let first = if before != 0 { before.trailing_zeros() as usize } else { 2 * n - 1 - innermost(after) };
    let last = if after != 0 { 2 * n - 1 - after.trailing_zeros() as usize } else { innermost(before) };
    (first, last + 1)
}

/// The deepest layer set in a non-empty mask.
const fn innermost(mask: u64) -> usize {
    63 - mask.leading_zeros() as usize
}

impl RowEnv<'_> {
    #[cold]
    #[inline(never)]
    fn record(&mut self, slot: usize, row: usize, message: String) {
        let stage = stage_name(self.names, slot);
        self.errors.push((row, StageError { stage, message, panicked: false }));
    }
}

/// A list of layers, outermost first: what [`chain!`](crate::chain!) builds.
pub trait Layers: Send + Sync + 'static {
    /// Number of layers.
    const LEN: usize;
    /// Bit `k`: layer `k`'s before-stage is ordered (first 64 layers).
    #[doc(hidden)]
    const ORDERED_BEFORE: u64;
    /// Bit `k`: layer `k`'s after-stage is ordered (first 64 layers).
    #[doc(hidden)]
    const ORDERED_AFTER: u64;
    /// The first slot of the chain's ordered span, where a parallel plan
    /// cuts it (see [`ordered_slots`]).
    #[doc(hidden)]
    const CUT: usize = ordered_slots(Self::LEN, Self::ORDERED_BEFORE, Self::ORDERED_AFTER).0;
    /// One past the last slot of the chain's ordered span, where a parallel
    /// plan cuts it again.
    #[doc(hidden)]
    const CUT_END: usize = ordered_slots(Self::LEN, Self::ORDERED_BEFORE, Self::ORDERED_AFTER).1;
    #[doc(hidden)]
    type Ptrs: Copy;
    #[doc(hidden)]
    type Locals: Send + 'static;
    #[doc(hidden)]
    type Guards<'a>
    where
        Self: 'a;
    #[doc(hidden)]
    fn metas(&self, out: &mut Vec<[Option<StageMeta>; 2]>);
    #[doc(hidden)]
    fn resolve(&self, table: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs;
    #[doc(hidden)]
    fn locals(&self) -> Self::Locals;
    #[doc(hidden)]
    fn enter<'a>(&'a self, locals: &'a mut Self::Locals) -> Self::Guards<'a>;
    /// Takes the state of every stage of this layer and the layers inside
    /// it that `plan` runs, outermost layer first (before, then after).
    #[doc(hidden)]
    fn take_states<S: Span>(guards: &mut Self::Guards<'_>, plan: RowPlan, level: usize);
    /// Runs this layer and everything inside it on one row.
    ///
    /// # Safety
    /// As for [`Half::call`].
    ///
    /// `FRESH`: the row was live when the walk started. `shielded`: no layer
    /// outside this one has a before-stage. Together they mean nothing
    /// outside this layer stopped the row, so its after-stage sees it.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row<S: Span, const FRESH: bool>(
        &self,
        ptrs: &Self::Ptrs,
        guards: &mut Self::Guards<'_>,
        env: &mut RowEnv<'_>,
        plan: RowPlan,
        ctl: &mut RowCtl,
        level: usize,
        shielded: bool,
    );
}

/// The empty end of a chain.
pub struct End;

/// A layer followed by the layers inside it.
pub struct Then<B, A, Rest>(pub Layer<B, A>, pub Rest);

impl Layers for End {
    const LEN: usize = 0;
    const ORDERED_BEFORE: u64 = 0;
    const ORDERED_AFTER: u64 = 0;
    type Ptrs = ();
    type Locals = ();
    type Guards<'a> = ();
    fn metas(&self, _: &mut Vec<[Option<StageMeta>; 2]>) {}
    fn resolve(&self, _: &ColumnTable<'_>, _: &Frame) {}
    fn locals(&self) {}
    fn enter<'a>(&'a self, _: &'a mut ()) {}
    fn take_states<S: Span>(_: &mut (), _: RowPlan, _: usize) {}
    #[inline(always)]
    unsafe fn row<S: Span, const FRESH: bool>(
        &self,
        _: &(),
        _: &mut (),
        _: &mut RowEnv<'_>,
        _: RowPlan,
        _: &mut RowCtl,
        _: usize,
        _: bool,
    ) {
    }
}

#[inline(always)]
unsafe fn step<H: Half>(
    half: &H,
    ptrs: H::Ptrs,
    guard: &mut H::Guard<'_>,
    env: &mut RowEnv<'_>,
    ctl: &mut RowCtl,
    depth: u16,
    slot: usize,
) {
    ctl.depth = depth;
    ctl.slot = slot as u16;
    // The trap is forgotten unless the stage unwinds: on the normal path it
    // costs nothing, and `ctl` stays in registers.
    let trap = Trap { cell: env.trap, row: ctl.row, slot, state: ctl.state };
    // SAFETY: forwarded from the caller's contract.
    unsafe { half.call(ptrs, guard, ctl.row, ctl) };
    std::mem::forget(trap);
    // Passing values, not `ctl`, keeps `ctl` out of memory.
    if let Some(message) = ctl.error.take() {
        env.record(slot, ctl.row, message);
    }
}

impl<B: Half, A: Half, R: Layers> Then<B, A, R> {
    /// The chain's length and this layer's two slots, for the layer with
    /// `level` layers outside it: constants once the chain is inlined.
    #[inline(always)]
    fn slots(level: usize) -> (usize, usize, usize) {
        let layers = level + Self::LEN;
        (layers, level, 2 * layers - 1 - level)
    }
}

impl<B: Half, A: Half, R: Layers> Layers for Then<B, A, R> {
    const LEN: usize = 1 + R::LEN;
    const ORDERED_BEFORE: u64 = B::ORDERED as u64 | R::ORDERED_BEFORE << 1;
    const ORDERED_AFTER: u64 = A::ORDERED as u64 | R::ORDERED_AFTER << 1;
    type Ptrs = (B::Ptrs, A::Ptrs, R::Ptrs);
    type Locals = (B::Local, A::Local, R::Locals);
    type Guards<'a> = (B::Guard<'a>, A::Guard<'a>, R::Guards<'a>);

    fn metas(&self, out: &mut Vec<[Option<StageMeta>; 2]>) {
        out.push([self.0.before.meta(), self.0.after.meta()]);
        self.1.metas(out);
    }
    #[inline(always)]
    fn resolve(&self, table: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs {
        (
            self.0.before.resolve(table, frame),
            self.0.after.resolve(table, frame),
            self.1.resolve(table, frame),
        )
    }
    fn locals(&self) -> Self::Locals {
        (self.0.before.local(), self.0.after.local(), self.1.locals())
    }
    #[inline(always)]
    fn enter<'a>(&'a self, l: &'a mut Self::Locals) -> Self::Guards<'a> {
        (self.0.before.enter(&mut l.0), self.0.after.enter(&mut l.1), self.1.enter(&mut l.2))
    }
    #[inline(always)]
    fn take_states<S: Span>(g: &mut Self::Guards<'_>, plan: RowPlan, level: usize) {
        let (layers, before_slot, after_slot) = Self::slots(level);
        if S::runs(plan, before_slot, layers) {
            B::take_state(&mut g.0);
        }
        if S::runs(plan, after_slot, layers) {
            A::take_state(&mut g.1);
        }
        R::take_states::<S>(&mut g.2, plan, level + 1);
    }
    #[inline(always)]
    unsafe fn row<S: Span, const FRESH: bool>(
        &self,
        p: &Self::Ptrs,
        g: &mut Self::Guards<'_>,
        env: &mut RowEnv<'_>,
        plan: RowPlan,
        ctl: &mut RowCtl,
        level: usize,
        shielded: bool,
    ) {
        let depth = plan.base + level as u16;
        let (layers, before_slot, after_slot) = Self::slots(level);
        if B::PRESENT && S::runs(plan, before_slot, layers) && ctl.state.is_live() {
            // SAFETY: forwarded from the caller's contract.
            unsafe { step::<B>(&self.0.before, p.0, &mut g.0, env, ctl, depth, before_slot) };
        }
        let shielded = shielded && !B::PRESENT;
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.1.row::<S, FRESH>(&p.2, &mut g.2, env, plan, ctl, level + 1, shielded) };
        // With no before-stage from the outermost layer in to this one, a
        // row live when the walk started can only have been stopped since
        // by inner layers' stages, deeper than `depth`: this after sees it.
        let sees = (FRESH && shielded) || ctl.state.reaches_after(depth);
        if A::PRESENT && S::runs(plan, after_slot, layers) && sees {
            // SAFETY: forwarded from the caller's contract.
            unsafe { step::<A>(&self.0.after, p.1, &mut g.1, env, ctl, depth, after_slot) };
        }
    }
}

/// Builds a static chain from layers, outermost first.
///
/// Each argument is a [`Layer`], made with [`before`], [`after`] or
/// [`around`]. See the [module docs](mod@crate::chain).
#[macro_export]
macro_rules! chain {
    () => { $crate::chain::Chain::new($crate::chain::End) };
    ($($layer:expr),+ $(,)?) => {
        $crate::chain::Chain::new($crate::chain!(@nest $($layer),+))
    };
    (@nest $head:expr) => { $crate::chain::Then($head, $crate::chain::End) };
    (@nest $head:expr, $($rest:expr),+) => {
        $crate::chain::Then($head, $crate::chain!(@nest $($rest),+))
    };
}

/// A static chain of layers, registered in a pipeline with
/// [`PipelineBuilder::chain`](crate::PipelineBuilder::chain).
pub struct Chain<L> {
    layers: L,
    /// The slots that hold a stage: a run covering them is the full chain.
    present: Range<usize>,
    /// The same as bits (chains of up to 64 layers).
    present_mask: u128,
}

impl<L: Layers> Chain<L> {
    #[doc(hidden)]
    pub fn new(layers: L) -> Self {
        let mut metas = Vec::with_capacity(L::LEN);
        layers.metas(&mut metas);
        let n = L::LEN;
        let slots: Vec<usize> = (0..2 * n)
            .filter(|&s| if s < n { metas[s][0].is_some() } else { metas[2 * n - 1 - s][1].is_some() })
            .collect();
        let present = match (slots.first(), slots.last()) {
            (Some(&a), Some(&b)) => a..b + 1,
            _ => 0..0,
        };
        let present_mask = if n <= 64 { slots.iter().fold(0, |m, &s| m | 1 << s) } else { 0 };
        Chain { layers, present, present_mask }
    }
}

/// Records which row and step unwound, and the row's state before that step.
struct Trap<'a> {
    cell: &'a Cell<Option<(usize, usize, RowState)>>,
    row: usize,
    slot: usize,
    state: RowState,
}

impl Drop for Trap<'_> {
    fn drop(&mut self) {
        // Runs only while unwinding: the normal path forgets the trap.
        self.cell.set(Some((self.row, self.slot, self.state)));
    }
}

impl<L: Layers> Chain<L> {
    /// Runs `slots` over the rows of `walk`, catching panics per row.
    fn run_protected(
        &self,
        slots: Range<usize>,
        walk: Walk<'_>,
        locals: &mut L::Locals,
        run: &mut ChunkRun<'_>,
        names: &[Option<Arc<str>>],
    ) {
        let trap = Cell::new(None);
        let mut walk = walk;
        loop {
            let result = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: `run` describes a chunk of the batch being run that
                // this worker owns for the duration of the call.
                unsafe { self.walk_rows(slots.clone(), walk.clone(), locals, run, names, &trap) }
            }));
            let Err(payload) = result else { return };
            // The unwound walk's count of stopped rows went down with it.
            run.live = LiveRows::UNKNOWN;
            let Some((row, slot, mut state)) = trap.take() else {
                // The panic did not come from a stage (resolving or locking);
                // nothing in this walk is trustworthy: fail it all.
                self.fail_walk(walk, slots.clone(), run, names, &payload);
                return;
            };
            let depth = run.depth_of(slot, L::LEN);
            state.fail(depth);
            run.set_state(row, state);
            if let Some(stats) = run.stats.as_deref_mut() {
                // Counted from the state before the step: a stop the stage
                // made before it unwound stays counted too (the state it
                // set went down with it).
                stats[slot].failed += 1;
            }
            let stage = stage_name(names, slot);
            run.errors.push((row, StageError { stage, message: panic_message(&*payload), panicked: true }));
            // The failing row still passes through the after-stages around it.
            let rest = slot + 1..slots.end;
            if !rest.is_empty() {
                self.run_protected(rest, Walk::Dense(row..row + 1), locals, run, names);
            }
            walk = match walk {
                // The rows after the failed one are untouched: as fresh as
                // they were.
                Walk::Fresh(r) => Walk::Fresh(row + 1..r.end),
                Walk::Dense(r) => Walk::Dense(row + 1..r.end),
                Walk::Sparse(rows) => {
                    let at = rows.partition_point(|&r| (r as usize) <= row);
                    Walk::Sparse(&rows[at..])
                }
            };
        }
    }

    /// Fails the rows of `walk` the first step would have seen: a panic
    /// outside any stage (resolving columns, taking state) comes before the
    /// first row runs, so the group could not start.
    #[cold]
    fn fail_walk(
        &self,
        walk: Walk<'_>,
        slots: Range<usize>,
        run: &mut ChunkRun<'_>,
        names: &[Option<Arc<str>>],
        payload: &(dyn Any + Send),
    ) {
        let slot = slots.start;
        let depth = run.depth_of(slot, L::LEN);
        let visible = Visible::of_slots(&(slot..slot + 1), L::LEN, run.depth_base);
        let stage = stage_name(names, slot);
        let message = panic_message(payload);
        let mut fail = |row: usize| {
            let mut s = run.state(row);
            if !visible.sees(s) {
                return;
            }
            s.fail(depth);
            run.set_state(row, s);
            if let Some(stats) = run.stats.as_deref_mut() {
                stats[slot].failed += 1;
            }
            run.errors
                .push((row, StageError { stage: stage.clone(), message: message.clone(), panicked: true }));
        };
        match walk {
            Walk::Fresh(r) | Walk::Dense(r) => r.for_each(&mut fail),
            Walk::Sparse(rows) => rows.iter().for_each(|&r| fail(r as usize)),
        }
    }

    /// Takes the rows the walk stopped off `run.live`.
    ///
    /// # Safety
    /// `run` describes a chunk this worker owns exclusively.
    unsafe fn walk_rows(
        &self,
        slots: Range<usize>,
        walk: Walk<'_>,
        locals: &mut L::Locals,
        run: &mut ChunkRun<'_>,
        names: &[Option<Arc<str>>],
        trap: &Cell<Option<(usize, usize, RowState)>>,
    ) {
        // Absent slots are no-ops, so covering every present one is a full run.
        let full = slots.start <= self.present.start && slots.end >= self.present.end;
        let base = run.depth_base;
        let stats = run.stats.as_deref_mut().map_or(std::ptr::null_mut(), <[SlotStats]>::as_mut_ptr);
        let mut stopped = 0;
        let mut env = RowEnv { trap, stats, stopped: &mut stopped, errors: &mut *run.errors, names };
        let table = run.table;
        if full {
            let plan = RowPlan { base, lo: slots.start, hi: slots.end, mask: u128::MAX };
            // SAFETY: forwarded from the caller's contract.
            unsafe { self.walk::<Whole>(walk, locals, table, &mut env, plan) };
        } else {
            // SAFETY: forwarded from the caller's contract.
            unsafe { self.walk_part(slots, walk, locals, table, &mut env, base) };
        }
        run.live = run.live.less(stopped);
    }

    /// Walks a part of the chain: picks the span the chain's type knows it
    /// by, or tests the plan's mask per step.
    ///
    /// # Safety
    /// As for `walk_rows`.
    // Out of line, so the masks are worked out only for a part: inlined,
    // they were hoisted above the choice and cost every whole walk (and so
    // every one-row run) 40 instructions.
    #[inline(never)]
    unsafe fn walk_part(
        &self,
        slots: Range<usize>,
        walk: Walk<'_>,
        locals: &mut L::Locals,
        table: &ColumnTable<'_>,
        env: &mut RowEnv<'_>,
        base: u16,
    ) {
        let plan = RowPlan::new(base, slots);
        // The parts a parallel plan (or a run in turn's) cuts the chain
        // into, as the types know them.
        let runs = plan.mask & self.present_mask;
        let part = |from: usize, to: usize| self.present_mask & below(to) & !below(from);
        let known = L::LEN <= 64 && runs != 0;
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            if known && runs == part(0, L::CUT) {
                self.walk::<Head<L>>(walk, locals, table, env, plan)
            } else if known && runs == part(L::CUT, L::CUT_END) {
                self.walk::<Mid<L>>(walk, locals, table, env, plan)
            } else if known && runs == part(L::CUT_END, usize::MAX) {
                self.walk::<Tail<L>>(walk, locals, table, env, plan)
            } else if known && runs == part(L::CUT, usize::MAX) {
                self.walk::<Rest<L>>(walk, locals, table, env, plan)
            } else {
                self.walk::<Ranged>(walk, locals, table, env, plan)
            }
        }
    }

    /// # Safety
    /// As for `walk_rows`.
    // Kept out of line: inlined into the unwinding wrapper, the row loop
    // lost registers to it and ran 8 % slower on gateway-8.
    #[inline(never)]
    unsafe fn walk<S: Span>(
        &self,
        walk: Walk<'_>,
        locals: &mut L::Locals,
        table: &ColumnTable<'_>,
        env: &mut RowEnv<'_>,
        plan: RowPlan,
    ) {
        // Outlives `ptrs`: pinned accesses point into it.
        let frame = Frame::of(table);
        let ptrs = self.layers.resolve(table, &frame);
        let mut guards = self.layers.enter(locals);
        // Sequential stages' state is locked here, for the whole walk, in
        // layer order: in the loop the lock is then known to be held (an
        // 11 % faster loop than testing it per row), and every walk over
        // this chain locks in the same order, so two runs on two threads
        // cannot each hold the lock the other waits for.
        L::take_states::<S>(&mut guards, plan, 0);
        let states = table.states;
        match walk {
            Walk::Fresh(rows) => {
                for row in rows {
                    // SAFETY: forwarded; `row` is in the chunk.
                    unsafe { self.one_row::<S, true>(row, states, &ptrs, &mut guards, env, plan) };
                }
            }
            Walk::Dense(rows) => {
                for row in rows {
                    // SAFETY: forwarded; `row` is in the chunk.
                    unsafe { self.one_row::<S, false>(row, states, &ptrs, &mut guards, env, plan) };
                }
            }
            Walk::Sparse(rows) => {
                for &row in rows {
                    // SAFETY: forwarded; the selection holds rows of the chunk.
                    unsafe { self.one_row::<S, false>(row as usize, states, &ptrs, &mut guards, env, plan) };
                }
            }
        }
    }

    /// # Safety
    /// `row` is in a chunk this worker owns; `states` is the batch's state
    /// vector.
    #[inline(always)]
    unsafe fn one_row<S: Span, const FRESH: bool>(
        &self,
        row: usize,
        states: SendPtr<RowState>,
        ptrs: &L::Ptrs,
        guards: &mut L::Guards<'_>,
        env: &mut RowEnv<'_>,
        plan: RowPlan,
    ) {
        // SAFETY: the row's state word is read and written only here while
        // the row runs, and the stages' column references for the row live
        // only inside `row`. `env.stats` is null or this worker's counters
        // for every slot of the unit, which nothing else touches during
        // the walk (`walk_rows` made the pointer from its exclusive borrow).
        unsafe {
            let state = *states.0.add(row);
            let mut ctl = RowCtl::new(state, row, env.stats, env.stopped);
            self.layers.row::<S, FRESH>(ptrs, guards, env, plan, &mut ctl, 0, true);
            // A one-layer unit, or a part of a cut chain, mostly leaves its
            // rows as they were (and when its stages never touch them the
            // compiler drops the store); a whole chain of several layers
            // mostly answers or stops them, and storing always is cheaper
            // than testing (gateway-8: 4 fewer instructions per row).
            if (S::WHOLE && L::LEN > 1) || ctl.state != state {
                *states.0.add(row) = ctl.state;
            }
        }
    }
}

impl<L: Layers> Unit for Chain<L> {
    fn layers(&self) -> usize {
        L::LEN
    }

    fn metas(&self) -> Vec<[Option<StageMeta>; 2]> {
        let mut out = Vec::with_capacity(L::LEN);
        self.layers.metas(&mut out);
        out
    }

    fn fused(&self) -> bool {
        true
    }

    fn new_local(&self) -> Box<dyn Any + Send> {
        Box::new(self.layers.locals())
    }

    unsafe fn run(
        &self,
        slots: Range<usize>,
        local: &mut dyn Any,
        run: &mut ChunkRun<'_>,
        names: &[Option<Arc<str>>],
    ) {
        // SAFETY: forwarded from the caller's contract.
        let locals = unsafe { own_local::<L::Locals>(local) };
        let mut sel = std::mem::take(run.sel);
        if let Some(walk) = select(run, &slots, L::LEN, &mut sel) {
            self.run_protected(slots, walk, locals, run, names);
        }
        *run.sel = sel;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordered_span_runs_from_the_first_to_the_last_ordered_slot() {
        // Four layers: slots 0..4 are the before-stages, outermost first;
        // slots 4..8 the after-stages, innermost first (layer k at 7 - k).
        let none = (usize::MAX, usize::MAX);
        assert_eq!(ordered_slots(4, 0, 0), none);
        assert_eq!(ordered_slots(4, 0b0100, 0b0001), (2, 8));
        assert_eq!(ordered_slots(4, 0b1100, 0), (2, 4));
        assert_eq!(ordered_slots(4, 0b0010, 0), (1, 2));
        // Only after-stages ordered: the innermost of them runs first.
        assert_eq!(ordered_slots(4, 0, 0b0001), (7, 8));
        assert_eq!(ordered_slots(4, 0, 0b0101), (5, 8));
        assert_eq!(ordered_slots(4, 0, 0b1000), (4, 5));
        assert_eq!(ordered_slots(4, 0b0001, 0b0100), (0, 6));
        assert_eq!(ordered_slots(65, 1, 0), none);
    }

    #[test]
    fn a_chain_knows_its_cut_from_its_stages_kinds() {
        use crate::stage;
        let par = || stage::parallel("p", (), |_: (), _: &mut RowCtl| {});
        let seq = || stage::sequential("s", (), 0u64, |_: &mut u64, _: (), _: &mut RowCtl| {});
        let c = crate::chain![after(par()), before(par()), around(seq(), par()), before(par())];
        fn cut<L: Layers>(_: &Chain<L>) -> (usize, usize) {
            (L::CUT, L::CUT_END)
        }
        assert_eq!(cut(&c), (2, 3));
        let c = crate::chain![after(seq()), before(par()), after(seq())];
        // Slots: 0..3 before, 3..6 after; layer 2's after is slot 3, layer
        // 0's slot 5.
        assert_eq!(cut(&c), (3, 6));
        assert_eq!(cut(&crate::chain![before(par()), after(par())]), (usize::MAX, usize::MAX));
    }
}
