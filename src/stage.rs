//! Stage systems: a function plus its declared access, kind and state.
//!
//! Two shapes share one set of kinds:
//! - a *row stage* ([`RowStage`]) is a per-row function
//!   `(&A, &B, &mut C) -> ()`; consecutive row stages of a static
//!   [`chain!`](crate::chain!) are fused into one loop body;
//! - a *chunk stage* ([`ChunkStage`]) receives the chunk's columns as slices
//!   plus its [`Rows`] and runs its own loop (or vector code) over them.
//!
//! Kinds ([`Kind`]) say how a stage may be scheduled: parallel stages keep no
//! state; sequential stages own `&mut` state and see rows in order, exactly
//! once; reductions keep one partial per worker, merged at the end of a run;
//! whole-batch stages see the entire batch in one call.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bumpalo::Bump;

use crate::access::{Access, FieldUse, RowOf, SlicesOf};
use crate::control::{RowCtl, RowState};
use crate::error::StageError;
use crate::report::SlotStats;

pub use crate::fetch::{
    AsyncResult, AsyncRows, AsyncStage, AsyncStep, BoxError, BoxFuture, Fetch, FnStage, fetch, fetch_with,
};

/// How a stage may be scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Stateless: any thread, any chunk order.
    Parallel,
    /// Owns `&mut` state: rows in submission order, exactly once.
    Sequential,
    /// One partial state per worker, merged at the end of the run.
    Reduction,
    /// Needs the entire batch at once.
    WholeBatch,
    /// A future per batch (or chunk), awaited between sync segments (see
    /// [`fetch`]).
    Async,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Parallel => "parallel",
            Kind::Sequential => "sequential",
            Kind::Reduction => "reduction",
            Kind::WholeBatch => "whole-batch",
            Kind::Async => "async",
        })
    }
}

/// What the plan needs to know about a stage.
#[derive(Clone, Debug)]
pub struct StageMeta {
    /// The stage's name (unique in a pipeline).
    pub name: Arc<str>,
    /// How it may be scheduled.
    pub kind: Kind,
    /// Whether it declared that it may reject rows.
    pub rejects: bool,
    /// Whether it may run side by side with the group before it, on rows
    /// that group may still stop (see [`RowFn::side_by_side`]).
    pub side_by_side: bool,
    /// The fields it touches.
    pub uses: Vec<FieldUse>,
}

/// Shared access to a stage's owned state (a sequential stage's state, a
/// reduction's merged total), readable after or between runs.
///
/// ```
/// use mware::prelude::*;
/// # let mut s = SchemaBuilder::new();
/// # let route = s.hot::<u16>("route");
/// let counter = stage::sequential("count", Read(route), 0u64, |n: &mut u64, _r: &u16, _c: &mut RowCtl| *n += 1);
/// let handle = counter.state();
/// assert_eq!(*handle.lock(), 0);
/// ```
pub struct StateHandle<S>(Arc<dyn StateSource<S>>);

impl<S> Clone for StateHandle<S> {
    fn clone(&self) -> Self {
        StateHandle(self.0.clone())
    }
}

/// Where a handle's state lives: a sequential stage's mutex, or a
/// reduction's total, which folds the workers' pending partials in first.
trait StateSource<S>: Send + Sync {
    fn lock(&self) -> MutexGuard<'_, S>;
}

impl<S: Send> StateSource<S> for Mutex<S> {
    fn lock(&self) -> MutexGuard<'_, S> {
        Mutex::lock(self).unwrap_or_else(|e| e.into_inner())
    }
}

impl<S> StateHandle<S> {
    /// Locks the state. A stage that panicked while holding it does not
    /// poison it: the state is handed out as the stage left it. For a
    /// reduction, every partial folded so far is merged in first.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.0.lock()
    }

    /// Replaces the state, returning the old one.
    pub fn replace(&self, state: S) -> S {
        std::mem::replace(&mut *self.lock(), state)
    }
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a stage keeps state; one of [`Stateless`], [`Owned`] or [`Partial`].
pub trait StatePolicy: Send + Sync + 'static {
    /// Per-worker scratch (a reduction's partial).
    type Local: Send + 'static;
    /// What a chunk holds while it runs (a lock, a `&mut` partial, nothing).
    type Guard<'a>;
    /// The state the stage's function receives.
    type State;
    /// The kind this policy implies.
    const KIND: Kind;
    /// A fresh per-worker scratch.
    fn local(&self) -> Self::Local;
    /// Enters a chunk.
    fn enter<'a>(&'a self, local: &'a mut Self::Local) -> Self::Guard<'a>;
    /// The state inside a guard.
    fn state<'g>(guard: &'g mut Self::Guard<'_>) -> &'g mut Self::State;
}

/// No state: the stage is parallel.
pub struct Stateless;

impl StatePolicy for Stateless {
    type Local = ();
    type Guard<'a> = ();
    type State = ();
    const KIND: Kind = Kind::Parallel;
    fn local(&self) {}
    #[inline(always)]
    fn enter<'a>(&'a self, _: &'a mut ()) {}
    #[inline(always)]
    fn state(guard: &mut ()) -> &mut () {
        guard
    }
}

/// State owned by a sequential stage, locked once per chunk.
pub struct Owned<S>(Arc<Mutex<S>>);

impl<S: Send + 'static> Owned<S> {
    fn new(state: S) -> Self {
        Owned(Arc::new(Mutex::new(state)))
    }
}

/// A sequential stage's state, locked for a chunk by the first walk that
/// runs the stage: a fused group that holds the stage but does not run it
/// (a parallel plan cuts chains before sequential stages) never takes the
/// lock. A static chain takes it when its walk starts (see `chain.rs`).
pub struct LazyLock<'a, S> {
    mutex: &'a Mutex<S>,
    guard: Option<MutexGuard<'a, S>>,
}

impl<S: Send + 'static> StatePolicy for Owned<S> {
    type Local = ();
    type Guard<'a> = LazyLock<'a, S>;
    type State = S;
    const KIND: Kind = Kind::Sequential;
    fn local(&self) {}
    #[inline(always)]
    fn enter<'a>(&'a self, _: &'a mut ()) -> LazyLock<'a, S> {
        LazyLock { mutex: &self.0, guard: None }
    }
    #[inline(always)]
    fn state<'g>(lazy: &'g mut LazyLock<'_, S>) -> &'g mut S {
        let mutex = lazy.mutex;
        lazy.guard.get_or_insert_with(|| lock(mutex))
    }
}

/// A reduction: a partial per worker, started from `init` and folded into
/// the total with `merge` when the total is read. Each worker's partial is
/// locked once per chunk; runs never pay for merging.
pub struct Partial<P, M>(Arc<Reducer<P, M>>);

struct Reducer<P, M> {
    total: Mutex<P>,
    partials: Mutex<Vec<Arc<Mutex<P>>>>,
    init: P,
    merge: M,
}

impl<P, M> StateSource<P> for Reducer<P, M>
where
    P: Clone + Send + Sync,
    M: Fn(&mut P, &P) + Send + Sync,
{
    fn lock(&self) -> MutexGuard<'_, P> {
        let mut total = lock(&self.total);
        // Partials are merged in the order the workers were created, so a
        // merge that is associative and commutative gives the same total
        // whatever the thread count.
        for part in lock(&self.partials).iter() {
            let mut part = lock(part);
            (self.merge)(&mut total, &part);
            part.clone_from(&self.init);
        }
        total
    }
}

impl<P: Clone, M> Partial<P, M> {
    fn new(init: P, merge: M) -> Self {
        let total = Mutex::new(init.clone());
        Partial(Arc::new(Reducer { total, partials: Mutex::new(Vec::new()), init, merge }))
    }
}

impl<P, M> StatePolicy for Partial<P, M>
where
    P: Clone + Send + Sync + 'static,
    M: Fn(&mut P, &P) + Send + Sync + 'static,
{
    type Local = Arc<Mutex<P>>;
    type Guard<'a> = MutexGuard<'a, P>;
    type State = P;
    const KIND: Kind = Kind::Reduction;
    fn local(&self) -> Arc<Mutex<P>> {
        let part = Arc::new(Mutex::new(self.0.init.clone()));
        lock(&self.0.partials).push(part.clone());
        part
    }
    #[inline(always)]
    fn enter<'a>(&'a self, local: &'a mut Arc<Mutex<P>>) -> MutexGuard<'a, P> {
        lock(local)
    }
    #[inline(always)]
    fn state<'g>(guard: &'g mut MutexGuard<'_, P>) -> &'g mut P {
        guard
    }
}

/// The function of a row stage, with or without state (see [`Plain`] and
/// [`WithState`]).
pub trait RowBody<A: Access, S>: Send + Sync + 'static {
    /// Runs on one row.
    fn call(&self, state: &mut S, row: RowOf<'_, A>, ctl: &mut RowCtl);
}

/// The function of a chunk stage, with or without state.
pub trait ChunkBody<A: Access, S>: Send + Sync + 'static {
    /// Runs on one chunk.
    fn call(&self, state: &mut S, cols: SlicesOf<'_, A>, rows: &mut Rows<'_>);
}

/// A stage function that keeps no state.
pub struct Plain<F>(F);

/// A stage function that receives `&mut` state first.
pub struct WithState<F>(F);

impl<A: Access, F> RowBody<A, ()> for Plain<F>
where
    F: Fn(RowOf<'_, A>, &mut RowCtl) + Send + Sync + 'static,
{
    #[inline(always)]
    fn call(&self, _: &mut (), row: RowOf<'_, A>, ctl: &mut RowCtl) {
        (self.0)(row, ctl)
    }
}

impl<A: Access, S, F> RowBody<A, S> for WithState<F>
where
    F: Fn(&mut S, RowOf<'_, A>, &mut RowCtl) + Send + Sync + 'static,
{
    #[inline(always)]
    fn call(&self, state: &mut S, row: RowOf<'_, A>, ctl: &mut RowCtl) {
        (self.0)(state, row, ctl)
    }
}

impl<A: Access, F> ChunkBody<A, ()> for Plain<F>
where
    F: Fn(SlicesOf<'_, A>, &mut Rows<'_>) + Send + Sync + 'static,
{
    fn call(&self, _: &mut (), cols: SlicesOf<'_, A>, rows: &mut Rows<'_>) {
        (self.0)(cols, rows)
    }
}

impl<A: Access, S, F> ChunkBody<A, S> for WithState<F>
where
    F: Fn(&mut S, SlicesOf<'_, A>, &mut Rows<'_>) + Send + Sync + 'static,
{
    fn call(&self, state: &mut S, cols: SlicesOf<'_, A>, rows: &mut Rows<'_>) {
        (self.0)(state, cols, rows)
    }
}

/// A per-row stage. Built with [`parallel`], [`sequential`] or [`reduction`];
/// run on its own or fused with its neighbours in a [`chain!`](crate::chain!).
pub trait RowStage: Send + Sync + 'static {
    /// The declared access.
    type Access: Access;
    /// How it keeps state.
    type Policy: StatePolicy;
    /// Name, kind and access.
    fn meta(&self) -> StageMeta;
    /// The declaration, for resolving columns.
    fn access(&self) -> &Self::Access;
    /// The state policy.
    fn policy(&self) -> &Self::Policy;
    /// Runs the stage on one row.
    fn call(
        &self,
        state: &mut <Self::Policy as StatePolicy>::State,
        row: RowOf<'_, Self::Access>,
        ctl: &mut RowCtl,
    );
}

/// A row stage made of a function (see [`parallel`], [`sequential`],
/// [`reduction`]).
pub struct RowFn<A, P, F> {
    name: Arc<str>,
    access: A,
    policy: P,
    rejects: bool,
    side_by_side: bool,
    f: F,
}

impl<A: Access, P, F> RowFn<A, P, F> {
    fn new(name: &str, access: A, policy: P, f: F) -> Self {
        RowFn { name: name.into(), access, policy, rejects: false, side_by_side: false, f }
    }

    fn meta_as(&self, kind: Kind) -> StageMeta {
        let mut uses = Vec::new();
        self.access.uses(&mut uses);
        StageMeta {
            name: self.name.clone(),
            kind,
            rejects: self.rejects,
            side_by_side: self.side_by_side,
            uses,
        }
    }
}

impl<A, P, F> RowFn<A, P, F> {
    /// Declares that the stage may reject rows (shown by `explain`).
    pub fn rejects(mut self) -> Self {
        self.rejects = true;
        self
    }
}

impl<A, F> RowFn<A, Stateless, F> {
    /// Lets the plan run this stage side by side with the group just before
    /// it, on a second thread, when a batch is a single chunk and the
    /// pipeline may use several threads; [`Pipeline::explain`] lists the
    /// pairs it formed.
    ///
    /// The stage then runs on the rows live when that group starts, before
    /// knowing which of them the group stops. For the rows the group
    /// rejects or fails, the stage's writes to its declared fields and its
    /// own rejections and failures are undone, so every row ends exactly as
    /// if the two had run one after the other. What the stage does outside
    /// its declared access (a log line, a counter it captured) is not
    /// undone: hence the opt-in. (Chunk stages cannot ask: what a chunk
    /// stage does may depend on which rows it is given, down to a panic
    /// failing all of them.) The plan pairs the stage only when it is
    /// registered on its own as a before-stage, touches no cold field, and
    /// shares no field with the group before it where either side writes;
    /// that group must hold only before-stages and belong to another
    /// registration. Otherwise the hint is ignored.
    ///
    /// Pairs run only where a run could split (from `min_parallel_work`
    /// rows × stages, or as [`adapt_threads`] finds faster) and the batch is
    /// one chunk of the parallel plan, which cannot spread its chunks. Each
    /// pair pays for waking a second thread, and a run called from outside
    /// the pool also for entering it and waking the caller. On the 2-core
    /// machine of BENCHMARKS.md §2, two stages of about 210 ns per row ran
    /// 1.41–1.66× faster side by side in batches of 256–4,096 rows (1.65–1.75×
    /// with `run` called from a pool thread, e.g. inside `pool.install` with
    /// [`thread_pool`]); two of about 17 ns per row ran 1.3–3.3× slower
    /// (0.82–1.32× the speed from a pool thread).
    ///
    /// ```
    /// use mware::prelude::*;
    ///
    /// let mut s = SchemaBuilder::new();
    /// let (x, y, z) = (s.hot::<u32>("x"), s.hot::<u64>("y"), s.hot::<u64>("z"));
    /// let schema = s.build()?;
    /// let check = stage::parallel("check", Read(x), |x: &u32, ctl: &mut RowCtl| {
    ///     if *x == 0 { ctl.reject(400) }
    /// }).rejects();
    /// let score = stage::parallel("score", (Read(y), Write(z)), |(y, z): (&u64, &mut u64), _: &mut RowCtl| {
    ///     *z = (0..64).fold(*y, |h, i| h.rotate_left(5) ^ i);
    /// }).side_by_side();
    /// let pipeline = Pipeline::builder(&schema).before(check).before(score).threads(2).build()?;
    /// assert!(pipeline.explain().contains("side by side with group 0"));
    /// # Ok::<(), mware::Error>(())
    /// ```
    ///
    /// [`Pipeline::explain`]: crate::Pipeline::explain
    /// [`adapt_threads`]: crate::PipelineBuilder::adapt_threads
    /// [`thread_pool`]: crate::PipelineBuilder::thread_pool
    pub fn side_by_side(mut self) -> Self {
        self.side_by_side = true;
        self
    }
}

impl<A, S: Send + 'static, F> RowFn<A, Owned<S>, F> {
    /// A handle on the stage's state.
    pub fn state(&self) -> StateHandle<S> {
        StateHandle(self.policy.0.clone())
    }
}

impl<A, P, M, F> RowFn<A, Partial<P, M>, F>
where
    P: Clone + Send + Sync + 'static,
    M: Fn(&mut P, &P) + Send + Sync + 'static,
{
    /// A handle on the reduction's total.
    pub fn total(&self) -> StateHandle<P> {
        StateHandle(self.policy.0.clone())
    }
}

impl<A, P, F> RowStage for RowFn<A, P, F>
where
    A: Access,
    P: StatePolicy,
    F: RowBody<A, P::State>,
{
    type Access = A;
    type Policy = P;
    fn meta(&self) -> StageMeta {
        self.meta_as(P::KIND)
    }
    #[inline(always)]
    fn access(&self) -> &A {
        &self.access
    }
    #[inline(always)]
    fn policy(&self) -> &P {
        &self.policy
    }
    #[inline(always)]
    fn call(&self, state: &mut P::State, row: RowOf<'_, A>, ctl: &mut RowCtl) {
        self.f.call(state, row, ctl)
    }
}

/// A stateless per-row stage: may run on any thread, in any chunk order.
///
/// ```
/// use mware::prelude::*;
/// # let mut s = SchemaBuilder::new();
/// # let len = s.hot::<u32>("payload_len");
/// let validate = stage::parallel("validate", Read(len), |len: &u32, ctl: &mut RowCtl| {
///     if *len > 1 << 20 {
///         ctl.reject(413);
///     }
/// })
/// .rejects();
/// # let _ = validate;
/// ```
pub fn parallel<A, F>(name: &str, access: A, f: F) -> RowFn<A, Stateless, Plain<F>>
where
    A: Access,
    F: Fn(RowOf<'_, A>, &mut RowCtl) + Send + Sync + 'static,
{
    RowFn::new(name, access, Stateless, Plain(f))
}

/// A sequential per-row stage owning `state`: sees rows in submission
/// order, exactly once, across batches.
pub fn sequential<A, S, F>(name: &str, access: A, state: S, f: F) -> RowFn<A, Owned<S>, WithState<F>>
where
    A: Access,
    S: Send + 'static,
    F: Fn(&mut S, RowOf<'_, A>, &mut RowCtl) + Send + Sync + 'static,
{
    RowFn::new(name, access, Owned::new(state), WithState(f))
}

/// A per-row reduction: each worker folds rows into its own copy of `init`;
/// at the end of a run the partials are merged, in worker order, into the
/// total (see [`RowFn::total`]). `merge` must be associative and
/// commutative for results to be independent of the thread count.
pub fn reduction<A, P, F, M>(
    name: &str,
    access: A,
    init: P,
    f: F,
    merge: M,
) -> RowFn<A, Partial<P, M>, WithState<F>>
where
    A: Access,
    P: Clone + Send + Sync + 'static,
    F: Fn(&mut P, RowOf<'_, A>, &mut RowCtl) + Send + Sync + 'static,
    M: Fn(&mut P, &P) + Send + Sync + 'static,
{
    RowFn::new(name, access, Partial::new(init, merge), WithState(f))
}

/// Which rows of a chunk a stage should process.
#[derive(Clone, Copy, Debug)]
pub enum Selection<'a> {
    /// Every row `0 .. n` of the chunk (the dense fast path).
    Dense(usize),
    /// Only these chunk rows, ascending.
    Sparse(&'a [u32]),
}

/// The rows of one chunk as a chunk stage sees them: which to process, and
/// how to reject, respond to or fail them. Indices are chunk-relative, like
/// the stage's slices.
pub struct Rows<'a> {
    pub(crate) states: &'a mut [RowState],
    pub(crate) selection: Selection<'a>,
    pub(crate) depth: u16,
    pub(crate) first_row: usize,
    pub(crate) stage: &'a Arc<str>,
    pub(crate) errors: &'a mut Vec<(usize, StageError)>,
    pub(crate) arena: &'a Bump,
    /// Rows this stage stopped (for the profile; counting only stops keeps
    /// it off the rows the stage passes).
    pub(crate) stops: &'a mut SlotStats,
}

impl<'a> Rows<'a> {
    /// Number of rows in the chunk (selected or not).
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The rows to process.
    pub fn selection(&self) -> Selection<'a> {
        self.selection
    }

    /// Calls `f` with each selected row; the dense case is a plain counted
    /// loop the compiler can vectorise.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        match self.selection {
            Selection::Dense(n) => (0..n).for_each(f),
            Selection::Sparse(rows) => rows.iter().for_each(|&i| f(i as usize)),
        }
    }

    /// The batch index of chunk row 0.
    pub fn first_row(&self) -> usize {
        self.first_row
    }

    /// Chunk row `i`'s status.
    pub fn status(&self, i: usize) -> u16 {
        self.states[i].status()
    }

    /// Sets chunk row `i`'s status without stopping it.
    pub fn respond(&mut self, i: usize, status: u16) {
        self.states[i] = self.states[i].with_status(status);
    }

    /// Stops chunk row `i` here with `status`.
    pub fn reject(&mut self, i: usize, status: u16) {
        let before = self.states[i];
        self.states[i] = RowState::rejected(self.depth, status);
        self.stops.record(self.depth, before, self.states[i]);
    }

    /// Fails chunk row `i` here with `message`.
    pub fn fail(&mut self, i: usize, message: impl Into<String>) {
        let before = self.states[i];
        self.states[i].fail(self.depth);
        self.stops.record(self.depth, before, self.states[i]);
        let error = StageError { stage: self.stage.clone(), message: message.into(), panicked: false };
        self.errors.push((self.first_row + i, error));
    }

    /// A bump arena for scratch that lives until the batch is cleared (or, on
    /// a worker thread, until the run ends).
    pub fn arena(&self) -> &'a Bump {
        self.arena
    }
}

/// A stage that processes a whole chunk at once. Built with
/// [`parallel_chunks`], [`sequential_chunks`], [`reduction_chunks`] or
/// [`whole_batch`].
pub trait ChunkStage: Send + Sync + 'static {
    /// The declared access.
    type Access: Access;
    /// How it keeps state.
    type Policy: StatePolicy;
    /// Name, kind and access.
    fn meta(&self) -> StageMeta;
    /// The declaration.
    fn access(&self) -> &Self::Access;
    /// The state policy.
    fn policy(&self) -> &Self::Policy;
    /// Runs the stage on one chunk.
    fn call(
        &self,
        state: &mut <Self::Policy as StatePolicy>::State,
        cols: SlicesOf<'_, Self::Access>,
        rows: &mut Rows<'_>,
    );
}

/// A chunk stage made of a function.
pub struct ChunkFn<A, P, F> {
    inner: RowFn<A, P, F>,
    whole: bool,
}

impl<A, P, F> ChunkFn<A, P, F> {
    /// Declares that the stage may reject rows (shown by `explain`).
    pub fn rejects(mut self) -> Self {
        self.inner.rejects = true;
        self
    }
}

impl<A, S: Send + 'static, F> ChunkFn<A, Owned<S>, F> {
    /// A handle on the stage's state.
    pub fn state(&self) -> StateHandle<S> {
        self.inner.state()
    }
}

impl<A, P, M, F> ChunkFn<A, Partial<P, M>, F>
where
    P: Clone + Send + Sync + 'static,
    M: Fn(&mut P, &P) + Send + Sync + 'static,
{
    /// A handle on the reduction's merged total.
    pub fn total(&self) -> StateHandle<P> {
        self.inner.total()
    }
}

impl<A, P, F> ChunkStage for ChunkFn<A, P, F>
where
    A: Access,
    P: StatePolicy,
    F: ChunkBody<A, P::State>,
{
    type Access = A;
    type Policy = P;
    fn meta(&self) -> StageMeta {
        let kind = if self.whole { Kind::WholeBatch } else { P::KIND };
        self.inner.meta_as(kind)
    }
    fn access(&self) -> &A {
        &self.inner.access
    }
    fn policy(&self) -> &P {
        &self.inner.policy
    }
    fn call(&self, state: &mut P::State, cols: SlicesOf<'_, A>, rows: &mut Rows<'_>) {
        self.inner.f.call(state, cols, rows)
    }
}

/// A stateless chunk stage.
///
/// ```
/// use mware::prelude::*;
/// # let mut s = SchemaBuilder::new();
/// # let ts = s.hot::<u64>("ts");
/// # let lat = s.hot::<u64>("latency");
/// let timing = stage::parallel_chunks("timing", (Read(ts), Write(lat)), |(ts, lat): (&[u64], &mut [u64]), rows: &mut Rows| {
///     rows.for_each(|i| lat[i] = 5_000 - ts[i]);
/// });
/// # let _ = timing;
/// ```
pub fn parallel_chunks<A, F>(name: &str, access: A, f: F) -> ChunkFn<A, Stateless, Plain<F>>
where
    A: Access,
    F: Fn(SlicesOf<'_, A>, &mut Rows<'_>) + Send + Sync + 'static,
{
    ChunkFn { inner: RowFn::new(name, access, Stateless, Plain(f)), whole: false }
}

/// A sequential chunk stage owning `state`; chunks arrive in row order.
pub fn sequential_chunks<A, S, F>(name: &str, access: A, state: S, f: F) -> ChunkFn<A, Owned<S>, WithState<F>>
where
    A: Access,
    S: Send + 'static,
    F: Fn(&mut S, SlicesOf<'_, A>, &mut Rows<'_>) + Send + Sync + 'static,
{
    let policy = Owned::new(state);
    ChunkFn { inner: RowFn::new(name, access, policy, WithState(f)), whole: false }
}

/// A chunk-level reduction (see [`reduction`]).
pub fn reduction_chunks<A, P, F, M>(
    name: &str,
    access: A,
    init: P,
    f: F,
    merge: M,
) -> ChunkFn<A, Partial<P, M>, WithState<F>>
where
    A: Access,
    P: Clone + Send + Sync + 'static,
    F: Fn(&mut P, SlicesOf<'_, A>, &mut Rows<'_>) + Send + Sync + 'static,
    M: Fn(&mut P, &P) + Send + Sync + 'static,
{
    let policy = Partial::new(init, merge);
    ChunkFn { inner: RowFn::new(name, access, policy, WithState(f)), whole: false }
}

/// A stage that needs the entire batch in one call (a sort key, a
/// batch-wide dedup…). It owns `state` like a sequential stage and splits the
/// plan: everything before it finishes on every row first.
pub fn whole_batch<A, S, F>(name: &str, access: A, state: S, f: F) -> ChunkFn<A, Owned<S>, WithState<F>>
where
    A: Access,
    S: Send + 'static,
    F: Fn(&mut S, SlicesOf<'_, A>, &mut Rows<'_>) + Send + Sync + 'static,
{
    let policy = Owned::new(state);
    ChunkFn { inner: RowFn::new(name, access, policy, WithState(f)), whole: true }
}
