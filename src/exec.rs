//! The executor: walks a plan's segments over a batch, chunk by chunk, on
//! the calling thread or spread over a rayon pool.

use std::any::Any;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bumpalo::Bump;
use crossbeam::utils::CachePadded;

use crate::access::{ColumnTable, SendPtr};
use crate::batch::{Batch, BatchParts};
use crate::beside::Beside;
use crate::column::{ColdColumn, ColdStore};
use crate::error::StageError;
use crate::pipeline::Pipeline;
use crate::plan::{Plan, Segment};
use crate::report::{RunReport, SlotStats, StageReport, rows_seen};
use crate::slot::BoxSlot;
use crate::turns::{PassOnUnwind, Turn, Turns};
use crate::unit::{ChunkRun, LiveRows};

/// Where a pipeline's runs execute.
#[derive(Clone)]
pub(crate) enum Threads {
    /// Always the calling thread.
    Inline,
    /// Rayon's global pool, optionally limited to `n` workers.
    Global(Option<usize>),
    /// The embedder's pool.
    Pool(Arc<rayon::ThreadPool>),
}

impl Threads {
    pub(crate) fn may_be_parallel(&self) -> bool {
        self.workers() > 1
    }

    fn workers(&self) -> usize {
        match self {
            Threads::Inline => 1,
            Threads::Global(n) => n.unwrap_or_else(rayon::current_num_threads),
            Threads::Pool(p) => p.current_num_threads(),
        }
    }
}

/// One worker's reusable buffers.
pub(crate) struct Worker {
    locals: Vec<Box<dyn Any + Send>>,
    /// Per unit, per slot counters (profiling).
    stats: Vec<Vec<SlotStats>>,
    /// Per group time (profiling).
    group_time: Vec<Duration>,
    sel: Vec<u32>,
    errors: Vec<(usize, StageError)>,
    arena: Bump,
    /// The later side of groups that run side by side.
    beside: Beside,
}

/// Buffers a run needs, kept between runs so steady state allocates nothing.
pub(crate) struct Scratch {
    cold: Vec<SendPtr<dyn ColdStore>>,
    workers: Vec<Worker>,
    tickets: Vec<AtomicUsize>,
    /// Per worker, the next chunk of its block (segments without ordered
    /// groups); padded so workers do not share a line.
    cursors: Vec<CachePadded<AtomicUsize>>,
}

/// A pipeline's idle scratch: one in a lock-free slot (the common case of
/// one run at a time costs two atomic swaps, no lock), more behind a mutex
/// while runs overlap.
#[derive(Default)]
pub(crate) struct ScratchPool {
    slot: BoxSlot<Scratch>,
    // Boxed, so a scratch moves between the slot and the spares without
    // allocating.
    #[allow(clippy::vec_box)]
    spare: Mutex<Vec<Box<Scratch>>>,
}

impl ScratchPool {
    fn take(&self) -> Option<Box<Scratch>> {
        self.slot.take().or_else(|| self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop())
    }

    fn put(&self, scratch: Box<Scratch>) {
        if let Some(other) = self.slot.swap(scratch) {
            self.spare.lock().unwrap_or_else(|e| e.into_inner()).push(other);
        }
    }
}

impl Scratch {
    fn new(p: &Pipeline, workers: usize) -> Scratch {
        let mut s =
            Scratch { cold: Vec::new(), workers: Vec::new(), tickets: Vec::new(), cursors: Vec::new() };
        s.ensure(p, workers);
        s
    }

    #[inline]
    fn ensure(&mut self, p: &Pipeline, workers: usize) {
        // The plan for runs in turn only joins groups of the parallel plan,
        // so it never has more.
        if self.workers.len() >= workers && self.tickets.len() >= p.parallel.groups.len() {
            return;
        }
        self.grow(p, workers);
    }

    #[cold]
    fn grow(&mut self, p: &Pipeline, workers: usize) {
        while self.workers.len() < workers {
            self.workers.push(Worker {
                locals: p.units.iter().map(|u| u.new_local()).collect(),
                stats: p.units.iter().map(|u| vec![SlotStats::default(); 2 * u.layers()]).collect(),
                group_time: vec![Duration::ZERO; p.serial.groups.len().max(p.parallel.groups.len())],
                sel: Vec::with_capacity(p.serial.chunk_rows),
                errors: Vec::new(),
                arena: Bump::new(),
                beside: Beside::default(),
            });
        }
        while self.cursors.len() < workers {
            self.cursors.push(CachePadded::new(AtomicUsize::new(0)));
        }
        while self.tickets.len() < p.parallel.groups.len() {
            self.tickets.push(AtomicUsize::new(0));
        }
    }
}

/// A run of one batch in progress, segment by segment: what [`run`] and
/// [`run_in_turn`] drive, and the one place a caller that interleaves
/// other work between segments (an async stage) plugs in.
pub(crate) struct Run<'p, 'b> {
    p: &'p Pipeline,
    plan: &'p Plan,
    parts: BatchParts<'b>,
    /// Taken from the pipeline's pool; given back when the run ends.
    scratch: Option<Box<Scratch>>,
    workers: usize,
    prof: bool,
    started: Option<Instant>,
    /// Whether every row was live when the run began: the first group then
    /// needs no look at the control words.
    all_live: bool,
    /// Whether groups marked [`beside`](crate::plan::Group::beside) run side
    /// by side with the group before them.
    beside: bool,
    /// While profiling: rows already stopped at each depth when the run
    /// began (empty when every row was live).
    stopped_before: Vec<u64>,
    report: RunReport,
    /// Set when earlier runs' ordered groups must finish first (streams).
    turn: Option<Turn<'p>>,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl<'p, 'b> Run<'p, 'b> {
    /// Prepares `batch`: picks the plan and the worker count, takes scratch.
    /// `may_split: false` keeps the run on the calling thread.
    #[inline]
    pub(crate) fn start(
        p: &'p Pipeline,
        batch: &'b mut Batch,
        turn: Option<Turn<'p>>,
        may_split: bool,
    ) -> Self {
        let prof = p.profiling.load(Ordering::Relaxed);
        // Reading the clock costs as much as a one-row run: only when profiling.
        let started = prof.then(Instant::now);
        let len = batch.len();
        let steps = p.serial.steps.len();
        let split = may_split && turn.is_none() && len.saturating_mul(steps) >= p.min_parallel_work;
        let workers = if split {
            p.threads.workers().max(1).min(len.div_ceil(p.parallel.chunk_rows)).max(1)
        } else {
            1
        };
        // A batch of one chunk that would split cannot spread its chunks,
        // but may run pairs of groups side by side (not while profiling:
        // the later stage's counts would include rows it must not see).
        let beside = split
            && workers == 1
            && len > 0
            && !prof
            && p.threads.may_be_parallel()
            && p.parallel.has_side_by_side();
        // A run in turn keeps its ordered groups apart from the groups
        // before them, which overlap the run before's turn.
        let plan = if turn.is_some() {
            &p.turn
        } else if workers > 1 || beside {
            &p.parallel
        } else {
            &p.serial
        };
        let (mut scratch, parts, all_live) = prepare(p, batch);
        scratch.ensure(p, workers);
        let mut stopped_before = Vec::new();
        if prof && !all_live {
            stopped_before = vec![0; p.serial.steps.iter().map(|s| s.depth + 1).max().unwrap_or(0)];
            for d in parts.states.iter().filter_map(|s| s.stop_depth()) {
                if let Some(n) = stopped_before.get_mut(d) {
                    *n += 1;
                }
            }
        }
        let report =
            RunReport { rows: len, threads: if beside { 2 } else { workers }, ..RunReport::default() };
        #[cfg(feature = "tracing")]
        let span = crate::report::trace::run(plan, len, workers);
        Run {
            p,
            plan,
            parts,
            scratch: Some(scratch),
            workers,
            prof,
            started,
            all_live,
            beside,
            stopped_before,
            report,
            turn,
            #[cfg(feature = "tracing")]
            span,
        }
    }

    /// The plan this run follows.
    pub(crate) fn plan(&self) -> &'p Plan {
        self.plan
    }

    /// Runs segment `s` of [`plan`](Run::plan). Segments must run in order.
    pub(crate) fn run_segment(&mut self, s: usize) {
        #[cfg(feature = "tracing")]
        let _in_run = self.span.enter();
        let seg = &self.plan.segments[s];
        #[cfg(feature = "tracing")]
        let _in_segment = crate::report::trace::segment(self.plan, seg, self.parts.states.len()).entered();
        let Scratch { cold, workers, tickets, cursors } =
            &mut **self.scratch.as_mut().expect("scratch until the run ends");
        let parts = &mut self.parts;
        let table = column_table(cold, parts);
        let ctx = RunCtx {
            p: self.p,
            plan: self.plan,
            table: &table,
            prof: self.prof,
            turn: self.turn,
            all_live: self.all_live,
            beside: self.beside,
        };
        let ws = &mut workers[..self.workers];
        let t = self.prof.then(Instant::now);
        self.report.chunks += if self.workers > 1 && !seg.barrier {
            ctx.run_parallel(seg, ws, tickets, cursors)
        } else {
            ctx.run_serial(seg, &mut ws[0], parts.arena)
        };
        if let Some(t) = t {
            self.report.segments.push(t.elapsed());
        }
        // File errors after every segment: within one, a row belongs to one
        // worker, so a row failed twice keeps its last error.
        for w in ws.iter_mut() {
            file_errors(w, parts.errors);
        }
    }

    /// The batch as a segment that runs outside the executor (an async
    /// stage, `crate::fetch`) needs it between two
    /// [`run_segment`](Run::run_segment)s: the column table, the error
    /// table, the report, and worker 0's counters of `unit` and group times
    /// while profiling. Nothing else touches the batch while it lives.
    pub(crate) fn detached(&mut self, unit: usize) -> Detached<'_> {
        let Scratch { cold, workers, .. } = &mut **self.scratch.as_mut().expect("scratch until the run ends");
        let parts = &mut self.parts;
        let table = column_table(cold, parts);
        let w = &mut workers[0];
        Detached {
            table,
            errors: &mut *parts.errors,
            report: &mut self.report,
            stats: if self.prof { Some(&mut w.stats[unit]) } else { None },
            group_time: if self.prof { Some(&mut w.group_time) } else { None },
        }
    }

    /// Ends the run: gives the scratch back and returns the report. Call it
    /// once, last. (By reference: moving the run into the call copied it,
    /// 7 % of a one-row run.)
    pub(crate) fn finish(&mut self) -> RunReport {
        let mut scratch = self.scratch.take().expect("scratch until the run ends");
        let ws = &mut scratch.workers[..self.workers];
        if self.prof {
            collect_profile(self.plan, ws, &self.stopped_before, &mut self.report);
        }
        for w in ws {
            w.arena.reset();
            w.beside.arena.reset();
        }
        self.p.scratch.put(scratch);
        // Field by field: copying the whole report with wide loads right
        // after the run's narrow writes to it stalls on store forwarding.
        let r = &mut self.report;
        let report = RunReport {
            rows: r.rows,
            chunks: r.chunks,
            threads: r.threads,
            elapsed: self.started.map_or(Duration::ZERO, |t| t.elapsed()),
            stages: std::mem::take(&mut r.stages),
            groups: std::mem::take(&mut r.groups),
            segments: std::mem::take(&mut r.segments),
            futures: r.futures,
        };
        #[cfg(feature = "tracing")]
        crate::report::trace::finish(&self.span, &report, self.parts.states);
        report
    }
}

/// Takes scratch from the pipeline (with at least one worker) and readies
/// `batch` for a run: the columns stages write made owned, the cold tables
/// pointed. Also says whether every row was live.
// Always inline: returned through memory, the parts would be read back
// whole right after being stored field by field (a store-forwarding stall).
#[inline(always)]
fn prepare<'b>(p: &Pipeline, batch: &'b mut Batch) -> (Box<Scratch>, BatchParts<'b>, bool) {
    let mut scratch = p.scratch.take().unwrap_or_else(|| Box::new(Scratch::new(p, 1)));
    batch.own_slots(&p.written_hot);
    let (mut parts, all_live) = batch.parts();
    point_cold(&mut scratch, &mut parts);
    (scratch, parts, all_live)
}

/// Points a run's table of cold columns at the batch's, once per run: they
/// do not move while the run holds the batch. (The batch keeps its hot
/// columns' pointers itself; the cold ones are taken afresh from `&mut`
/// borrows, which any other borrow in between would invalidate.)
fn point_cold(scratch: &mut Scratch, parts: &mut BatchParts<'_>) {
    scratch.cold.clear();
    scratch.cold.extend(parts.cold.iter_mut().map(|c| SendPtr(&mut **c as *mut dyn ColdStore)));
}

/// Moves the errors a worker's walks recorded into the batch's error table.
#[inline]
fn file_errors(w: &mut Worker, errors: &mut ColdColumn<StageError>) {
    if !w.errors.is_empty() {
        for (row, e) in w.errors.drain(..) {
            errors.insert(row, e);
        }
    }
}

/// The column table over the batch's hot pointers and the cold ones
/// [`point_cold`] set.
fn column_table<'a, 'b: 'a>(
    cold: &'a [SendPtr<dyn ColdStore>],
    parts: &mut BatchParts<'b>,
) -> ColumnTable<'a> {
    ColumnTable {
        schema: parts.schema,
        hot: parts.hot,
        cold,
        states: SendPtr(parts.states.as_mut_ptr()),
        len: parts.states.len(),
    }
}

/// A run's batch lent to a segment that runs outside the executor; see
/// [`Run::detached`].
pub(crate) struct Detached<'r> {
    pub(crate) table: ColumnTable<'r>,
    pub(crate) errors: &'r mut ColdColumn<StageError>,
    pub(crate) report: &'r mut RunReport,
    pub(crate) stats: Option<&'r mut [SlotStats]>,
    pub(crate) group_time: Option<&'r mut [Duration]>,
}

/// Runs every segment of `batch` on the calling thread or the pipeline's
/// pool.
pub(crate) fn run(p: &Pipeline, batch: &mut Batch) -> RunReport {
    // With adaptive threads, a run that may split asks the measurements
    // whether to, and adds its own time to them.
    let work = batch.len().saturating_mul(p.serial.steps.len());
    let small = work < p.min_parallel_work || !p.threads.may_be_parallel();
    if small && !cfg!(feature = "tracing") && !p.profiling.load(Ordering::Relaxed) {
        return run_inline(p, batch);
    }
    let choice = p.adapt.as_ref().filter(|_| !small);
    let may_split = choice.is_none_or(|c| c.split(work, p.min_parallel_work));
    let t = choice.map(|_| Instant::now());
    let mut run = Run::start(p, batch, None, may_split);
    for s in 0..run.plan().segments.len() {
        run.run_segment(s);
    }
    let report = run.finish();
    if let (Some(c), Some(t)) = (choice, t) {
        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        c.record(work, p.min_parallel_work, report.threads > 1, report.rows, nanos);
    }
    report
}

/// A run on the calling thread with profiling off: the walk a [`Run`]
/// makes, without its bookkeeping, which is most of the cost of a run of a
/// few rows.
fn run_inline(p: &Pipeline, batch: &mut Batch) -> RunReport {
    let (mut scratch, mut parts, all_live) = prepare(p, batch);
    let Scratch { cold, workers, .. } = &mut *scratch;
    let table = column_table(cold, &mut parts);
    let ctx = RunCtx { p, plan: &p.serial, table: &table, prof: false, turn: None, all_live, beside: false };
    let w = &mut workers[0];
    let mut chunks = 0;
    let one_chunk = (1..=p.serial.chunk_rows).contains(&table.len);
    for seg in &p.serial.segments {
        if one_chunk {
            // Every segment is one chunk (a barrier's is the whole batch).
            ctx.run_groups(seg.groups.clone(), w, parts.arena, (0, table.len));
            chunks += 1;
        } else {
            chunks += ctx.run_serial(seg, w, parts.arena);
        }
        file_errors(w, parts.errors);
    }
    w.arena.reset();
    let rows = table.len;
    p.scratch.put(scratch);
    RunReport { rows, chunks, threads: 1, ..RunReport::default() }
}

/// Runs `batch` as run number `index` of a sequence sharing `turns`: on the
/// calling thread, each ordered group entered only after run `index - 1`
/// has left it. Runs of one sequence may go on different threads at once.
pub(crate) fn run_in_turn(p: &Pipeline, batch: &mut Batch, turns: &Turns, index: u64) -> RunReport {
    let mut run = Run::start(p, batch, Some(Turn { turns, index }), false);
    // Should the run unwind outside any stage, later runs must not wait for
    // it forever: the guard passes every ordered group it still holds.
    let guard = PassOnUnwind { turns, index, plan: run.plan() };
    for s in 0..run.plan().segments.len() {
        run.run_segment(s);
    }
    std::mem::forget(guard);
    run.finish()
}

/// Sums the workers' counters and group times into per-stage reports.
fn collect_profile(plan: &Plan, workers: &mut [Worker], stopped_before: &[u64], report: &mut RunReport) {
    report.groups = vec![Duration::ZERO; plan.groups.len()];
    for w in workers.iter_mut() {
        for (g, t) in report.groups.iter_mut().zip(&mut w.group_time) {
            *g += std::mem::take(t);
        }
    }
    let stops: Vec<SlotStats> = plan
        .steps
        .iter()
        .map(|step| {
            let mut sum = SlotStats::default();
            for w in workers.iter_mut() {
                sum.add(std::mem::take(&mut w.stats[step.unit][step.slot]));
            }
            sum
        })
        .collect();
    let seen = rows_seen(&plan.steps, &stops, report.rows as u64, stopped_before);
    for (gi, g) in plan.groups.iter().enumerate() {
        for i in g.steps.clone() {
            let step = &plan.steps[i];
            report.stages.push(StageReport {
                name: step.meta.name.clone(),
                kind: step.meta.kind,
                depth: step.depth,
                after: step.after,
                rows: seen[i],
                rejected: stops[i].rejected,
                failed: stops[i].failed,
                group: gi,
                time: report.groups[gi],
                fused: g.steps.len() > 1,
            });
        }
    }
}

/// Which steps of a group [`RunCtx::run_part`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    /// Those before the group's split: its ordered span.
    Span,
    /// Those from its split on.
    AfterSpan,
}

/// How many of a run in turn's last rows take a split group in two parts:
/// a quarter of the batch, at most a chunk. Each part is a pass of its
/// own, so the tail costs more than it would joined, but the turn is no
/// longer held by the steps after the span on those rows. gateway-8 in
/// 4,096-row batches streamed a median 1.415× `run` against 1.380× with
/// the whole batch joined, sixteen alternations (BENCHMARKS.md §8,
/// session 12).
fn tail_rows(len: usize, chunk_rows: usize) -> usize {
    (len / 4).min(chunk_rows)
}

/// Chunk `k`'s row range.
fn chunk_range(k: usize, chunk_rows: usize, len: usize) -> (usize, usize) {
    let start = k * chunk_rows;
    (start, chunk_rows.min(len - start))
}

/// What every chunk of a run shares.
struct RunCtx<'r> {
    p: &'r Pipeline,
    plan: &'r Plan,
    table: &'r ColumnTable<'r>,
    prof: bool,
    turn: Option<Turn<'r>>,
    /// Every row was live when the run began.
    all_live: bool,
    /// Groups marked `beside` run side by side with the one before them.
    beside: bool,
}

impl RunCtx<'_> {
    /// Runs group `gi` on one chunk. The plan's first group sees the rows as
    /// the run began: all live, when they came in so (a fresh chunk); so do
    /// the after-stages of a group that every earlier step stops rows deeper
    /// than. `live` carries the chunk's live rows from group to group, when
    /// known.
    fn run_group(&self, gi: usize, w: &mut Worker, arena: &Bump, chunk: (usize, usize), live: &mut LiveRows) {
        self.run_part(gi, Part::All, w, arena, chunk, live);
    }

    /// Runs a part of group `gi` on one chunk: all of it, or one side of
    /// its [`Split`](crate::plan::Split) (the whole group when it has none).
    fn run_part(
        &self,
        gi: usize,
        part: Part,
        w: &mut Worker,
        arena: &Bump,
        (start, len): (usize, usize),
        live: &mut LiveRows,
    ) {
        let (p, g) = (self.p, &self.plan.groups[gi]);
        let (slots, afters_reach_all) = match (part, &g.split) {
            (Part::All, _) | (_, None) => (g.slots.clone(), g.afters_reach_all),
            (Part::Span, Some(s)) => (g.slots.start..s.slot, s.afters_reach_all[0]),
            (Part::AfterSpan, Some(s)) => (s.slot..g.slots.end, s.afters_reach_all[1]),
        };
        let t = self.prof.then(Instant::now);
        // The plan's first steps see the rows as the run began.
        let first = gi == 0 && part != Part::AfterSpan;
        if first && self.all_live {
            *live = LiveRows::known(len);
        }
        let mut run = ChunkRun {
            table: self.table,
            start,
            len,
            fresh: self.all_live && (first || afters_reach_all),
            live: *live,
            depth_base: p.bases[g.unit],
            sel: &mut w.sel,
            errors: &mut w.errors,
            arena,
            stats: if self.prof { Some(&mut w.stats[g.unit]) } else { None },
        };
        // SAFETY: a worker's locals are made by `Scratch::grow`, one per unit
        // in unit order, each by its unit's `new_local`.
        unsafe { p.units[g.unit].run(slots, &mut *w.locals[g.unit], &mut run, &p.names[g.unit]) };
        *live = run.live;
        if let Some(t) = t {
            w.group_time[gi] += t.elapsed();
        }
    }

    /// Runs `groups` on one chunk (`(start, rows)`), in order.
    fn run_groups(&self, groups: Range<usize>, w: &mut Worker, arena: &Bump, chunk: (usize, usize)) {
        let mut live = LiveRows::UNKNOWN;
        for gi in groups {
            self.run_group(gi, w, arena, chunk, &mut live);
        }
    }

    /// Runs `groups` on one chunk, in order, each group marked `beside`
    /// side by side with the one before it.
    fn run_groups_beside(&self, groups: Range<usize>, w: &mut Worker, arena: &Bump, chunk: (usize, usize)) {
        let mut live = LiveRows::UNKNOWN;
        let mut gi = groups.start;
        while gi < groups.end {
            if gi + 1 < groups.end && self.plan.groups[gi + 1].beside {
                self.run_pair(gi, w, arena, chunk, &mut live);
                gi += 2;
            } else {
                self.run_group(gi, w, arena, chunk, &mut live);
                gi += 1;
            }
        }
    }

    /// Runs group `gi` and the group after it on one chunk at once, with
    /// `rayon::join`: the later one on its own copy of the control words,
    /// then settled so the rows `gi` stopped are as if it had never run on
    /// them (`crate::beside`), or run again after `gi` when it cannot be.
    /// Both use worker arenas: they run on pool threads, and the batch's
    /// arena is not `Sync`.
    fn run_pair(
        &self,
        gi: usize,
        w: &mut Worker,
        batch_arena: &Bump,
        (start, len): (usize, usize),
        live: &mut LiveRows,
    ) {
        let (p, table) = (self.p, self.table);
        let (g, h) = (&self.plan.groups[gi], &self.plan.groups[gi + 1]);
        // Both see the rows as the group before `gi` left them.
        let fresh = self.all_live && gi == 0;
        if fresh {
            *live = LiveRows::known(len);
        }
        let written = || {
            let uses = &self.plan.steps[h.steps.start].meta.uses;
            uses.iter()
                .filter(|u| u.write)
                .map(|u| (u.index(), table.schema.fields()[u.index()].storage.inline_bytes()))
        };
        let Worker { locals, sel, errors, arena, beside, .. } = w;
        // The plan pairs groups of different units, `g`'s first.
        let (earlier, later) = locals.split_at_mut(h.unit);
        let (local_g, local_h) = (&mut *earlier[g.unit], &mut *later[0]);
        // SAFETY: the chunk is this worker's and nothing runs on it yet; the
        // written fields are hot fields of the batch's schema.
        let side = unsafe { beside.begin(table, written(), start, len) };
        let live_before = *live;
        let earlier_errors = &mut *errors;
        let earlier_run = move || {
            let mut run = ChunkRun {
                table,
                start,
                len,
                fresh,
                live: live_before,
                depth_base: p.bases[g.unit],
                sel,
                errors: earlier_errors,
                arena,
                stats: None,
            };
            // SAFETY: a worker's locals are made by `Scratch::grow`, one per
            // unit in unit order, each by its unit's `new_local`. Running
            // beside the later stage is sound: the plan pairs them only when
            // neither touches a field the other writes, and the later one
            // writes control words of its own (`Side::table`).
            unsafe { p.units[g.unit].run(g.slots.clone(), local_g, &mut run, &p.names[g.unit]) };
        };
        let later_run = move || {
            let mut run = ChunkRun {
                table: &side.table,
                start,
                len,
                fresh,
                live: live_before,
                depth_base: p.bases[h.unit],
                sel: side.sel,
                errors: side.errors,
                arena: side.arena,
                stats: None,
            };
            // SAFETY: as for the earlier group.
            unsafe { p.units[h.unit].run(h.slots.clone(), local_h, &mut run, &p.names[h.unit]) };
        };
        match &p.threads {
            Threads::Pool(pool) => pool.install(|| rayon::join(earlier_run, later_run)),
            _ => rayon::join(earlier_run, later_run),
        };
        // SAFETY: as for `begin`; both runs have ended.
        let settled = unsafe { beside.settle(table, written(), (start, len), errors) };
        *live = LiveRows::UNKNOWN;
        if !settled {
            self.run_group(gi + 1, w, batch_arena, (start, len), live);
        }
    }

    /// Runs a segment on the calling thread: chunk-major, so a chunk stays
    /// in cache across every group of the segment. In turn, in three phases
    /// over the chunks: the groups before the ordered span; the span, each
    /// ordered group waiting for the run before to leave it before its
    /// first chunk and letting the run after in after its last (a split
    /// group lets it in after the span of its last rows, see [`tail_rows`]);
    /// the groups after the span.
    fn run_serial(&self, seg: &Segment, w: &mut Worker, arena: &Bump) -> usize {
        let len = self.table.len;
        let chunk_rows = if seg.barrier { len.max(1) } else { self.plan.chunk_rows };
        let n = len.div_ceil(chunk_rows);
        let turn = |gi: usize| self.turn.filter(|_| self.plan.groups[gi].ordered);
        // The ordered span (in turn): from the first ordered group to the
        // last, the groups whose turns the run takes from the run before and
        // passes to the run after.
        let span = self.turn.and_then(|_| {
            let first = seg.groups.clone().find(|&gi| turn(gi).is_some())?;
            Some((first, seg.groups.clone().rev().find(|&gi| turn(gi).is_some())?))
        });
        let Some((first, last)) = span else {
            for k in 0..n {
                let chunk = chunk_range(k, chunk_rows, len);
                if self.beside && !seg.barrier {
                    self.run_groups_beside(seg.groups.clone(), w, arena, chunk);
                } else {
                    self.run_groups(seg.groups.clone(), w, arena, chunk);
                }
            }
            return n;
        };
        if n == 0 {
            // No chunk to carry the turns: pass them on straight away.
            for gi in first..=last {
                if let Some(t) = turn(gi) {
                    t.turns.wait(gi, t.index);
                    t.turns.pass(gi, t.index);
                }
            }
            return 0;
        }
        // The groups before the span run on every chunk first, while the
        // run before may still hold the span: this run then holds the span's
        // turns only while it runs the span itself, and the run after waits
        // as little as it can.
        for k in 0..n {
            self.run_groups(seg.groups.start..first, w, arena, chunk_range(k, chunk_rows, len));
        }
        // When the span's last group goes on past the span, the run's last
        // rows take it in two parts, with the turn passed on between them:
        // the run after then waits for this run's span, not for the steps
        // after it on these rows.
        let tail = if self.plan.groups[last].split.is_some() { tail_rows(len, chunk_rows) } else { 0 };
        let head = len - tail;
        let head_chunks = head.div_ceil(chunk_rows);
        for k in 0..head_chunks {
            let chunk = chunk_range(k, chunk_rows, head);
            let mut live = LiveRows::UNKNOWN;
            for gi in first..=last {
                let ordered = turn(gi);
                if let (Some(t), 0) = (ordered, k) {
                    t.turns.wait(gi, t.index);
                }
                self.run_group(gi, w, arena, chunk, &mut live);
                if let Some(t) = ordered.filter(|_| k + 1 == head_chunks && tail == 0) {
                    t.turns.pass(gi, t.index);
                }
            }
        }
        if tail > 0 {
            // The head is three quarters of the rows: its first chunk took
            // every turn above.
            let chunk = (head, tail);
            let mut live = LiveRows::UNKNOWN;
            for gi in first..last {
                self.run_group(gi, w, arena, chunk, &mut live);
                if let Some(t) = turn(gi) {
                    t.turns.pass(gi, t.index);
                }
            }
            self.run_part(last, Part::Span, w, arena, chunk, &mut live);
            if let Some(t) = turn(last) {
                t.turns.pass(last, t.index);
            }
            self.run_part(last, Part::AfterSpan, w, arena, chunk, &mut live);
        }
        // The groups after the span run once its turns are passed on, so the
        // run after overlaps them instead of waiting for them.
        for k in 0..n {
            self.run_groups(last + 1..seg.groups.end, w, arena, chunk_range(k, chunk_rows, len));
        }
        n
    }

    /// Runs a segment over a rayon pool. When the segment holds a
    /// sequential stage, each worker claims the next chunk and takes it
    /// through every group; a group holding a sequential stage waits until
    /// the previous chunk has left it, so sequential stages see rows in order
    /// while other workers already run the parallel groups of later chunks.
    /// Otherwise each worker runs a contiguous block of chunks, then helps
    /// with the blocks of the others: one long stream per column per worker,
    /// which the hardware prefetchers follow better than interleaved chunks.
    fn run_parallel(
        &self,
        seg: &Segment,
        workers: &mut [Worker],
        tickets: &[AtomicUsize],
        cursors: &[CachePadded<AtomicUsize>],
    ) -> usize {
        let (len, chunk_rows) = (self.table.len, self.plan.chunk_rows);
        let n = len.div_ceil(chunk_rows);
        let ordered = seg.groups.clone().any(|gi| self.plan.groups[gi].ordered);
        let blocks = if ordered { 1 } else { workers.len() };
        // Block `b` is chunks `bounds(b) .. bounds(b + 1)`.
        let bounds = |b: usize| n * b / blocks;
        for (b, cursor) in cursors[..blocks].iter().enumerate() {
            cursor.store(bounds(b), Ordering::Relaxed);
        }
        for gi in seg.groups.clone() {
            tickets[gi].store(0, Ordering::Relaxed);
        }
        let work = |wi: usize, w: &mut Worker| {
            let arena = std::mem::take(&mut w.arena);
            for b in (0..blocks).map(|i| (wi + i) % blocks) {
                loop {
                    let k = cursors[b].fetch_add(1, Ordering::Relaxed);
                    if k >= bounds(b + 1) {
                        break;
                    }
                    let chunk = chunk_range(k, chunk_rows, len);
                    let mut live = LiveRows::UNKNOWN;
                    for gi in seg.groups.clone() {
                        let ordered = self.plan.groups[gi].ordered;
                        if ordered {
                            wait_turn(&tickets[gi], k);
                        }
                        self.run_group(gi, w, &arena, chunk, &mut live);
                        if ordered {
                            tickets[gi].store(k + 1, Ordering::Release);
                        }
                    }
                }
            }
            w.arena = arena;
        };
        match &self.p.threads {
            Threads::Pool(pool) => pool.install(|| spread(workers, 0, &work)),
            _ => spread(workers, 0, &work),
        }
        n
    }
}

/// Runs `work` once per worker (numbered from `first`), in parallel, with
/// `rayon::join` (which needs no heap allocation, unlike spawning).
fn spread(workers: &mut [Worker], first: usize, work: &(impl Fn(usize, &mut Worker) + Sync)) {
    match workers {
        [] => {}
        [w] => work(first, w),
        _ => {
            let mid = workers.len() / 2;
            let (a, b) = workers.split_at_mut(mid);
            rayon::join(|| spread(a, first, work), || spread(b, first + mid, work));
        }
    }
}

/// Waits until chunk `k` may enter an ordered group. The chunk before it is
/// held by a running worker (chunks are claimed in order), so this ends.
fn wait_turn(ticket: &AtomicUsize, k: usize) {
    let mut spins = 0u32;
    while ticket.load(Ordering::Acquire) != k {
        if spins < 64 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}
