//! The executor: walks a plan's segments over a batch, chunk by chunk, on
//! the calling thread or spread over a rayon pool.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bumpalo::Bump;

use crate::access::{ColumnTable, SendPtr};
use crate::batch::Batch;
use crate::column::ColdStore;
use crate::error::StageError;
use crate::pipeline::Pipeline;
use crate::plan::{Plan, Segment};
use crate::report::{RunReport, SlotStats, StageReport};
use crate::schema::Storage;
use crate::unit::ChunkRun;

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
}

/// Buffers a run needs, kept between runs so steady state allocates nothing.
pub(crate) struct Scratch {
    hot: Vec<SendPtr<u8>>,
    cold: Vec<SendPtr<dyn ColdStore>>,
    workers: Vec<Worker>,
    tickets: Vec<AtomicUsize>,
}

impl Scratch {
    fn new(p: &Pipeline, workers: usize) -> Scratch {
        let mut s = Scratch { hot: Vec::new(), cold: Vec::new(), workers: Vec::new(), tickets: Vec::new() };
        s.ensure(p, workers);
        s
    }

    fn ensure(&mut self, p: &Pipeline, workers: usize) {
        while self.workers.len() < workers {
            self.workers.push(Worker {
                locals: p.units.iter().map(|u| u.new_local()).collect(),
                stats: p.units.iter().map(|u| vec![SlotStats::default(); 2 * u.layers()]).collect(),
                group_time: vec![Duration::ZERO; p.serial.groups.len().max(p.parallel.groups.len())],
                sel: Vec::with_capacity(p.serial.chunk_rows),
                errors: Vec::new(),
                arena: Bump::new(),
            });
        }
        while self.tickets.len() < p.parallel.groups.len() {
            self.tickets.push(AtomicUsize::new(0));
        }
    }
}

pub(crate) fn run(p: &Pipeline, batch: &mut Batch) -> RunReport {
    let prof = p.profiling.load(Ordering::Relaxed);
    // Reading the clock costs as much as a one-row run: only when profiling.
    let started = prof.then(Instant::now);
    let len = batch.len();
    let steps = p.serial.steps.len();
    let workers =
        if len.saturating_mul(steps) >= p.min_parallel_work { p.threads.workers().max(1) } else { 1 };
    let workers = workers.min(len.div_ceil(p.parallel.chunk_rows)).max(1);

    let mut scratch =
        p.scratch.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_else(|| Scratch::new(p, 1));
    scratch.ensure(p, workers);
    batch.own_slots(&p.written_hot);
    let parts = batch.parts();
    scratch.hot.clear();
    scratch.hot.extend(parts.schema.fields().iter().map(|f| match f.storage {
        Storage::Hot { .. } => SendPtr(parts.hot[f.slot].base_ptr()),
        Storage::Cold => SendPtr(std::ptr::null_mut()),
    }));
    scratch.cold.clear();
    scratch.cold.extend(parts.cold.iter_mut().map(|c| SendPtr(&mut **c as *mut dyn ColdStore)));
    let table = ColumnTable {
        schema: parts.schema,
        hot: &scratch.hot,
        cold: &scratch.cold,
        states: SendPtr(parts.states.as_mut_ptr()),
        len,
    };

    let plan = if workers > 1 { &p.parallel } else { &p.serial };
    let mut report = RunReport { rows: len, threads: workers, ..RunReport::default() };
    let ctx = RunCtx { p, plan, table: &table, prof };
    #[cfg(feature = "tracing")]
    let run_span = crate::report::trace::run(plan, len, workers);
    #[cfg(feature = "tracing")]
    let _in_run = run_span.enter();
    for seg in &plan.segments {
        #[cfg(feature = "tracing")]
        let _in_segment = crate::report::trace::segment(plan, seg, len).entered();
        let ws = &mut scratch.workers[..workers];
        let t = prof.then(Instant::now);
        report.chunks += if workers > 1 && !seg.barrier {
            ctx.run_parallel(seg, ws, &scratch.tickets)
        } else {
            ctx.run_serial(seg, &mut ws[0], parts.arena)
        };
        if let Some(t) = t {
            report.segments.push(t.elapsed());
        }
        // File errors after every segment: within one, a row belongs to one
        // worker, so a row failed twice keeps its last error.
        for w in &mut scratch.workers[..workers] {
            for (row, e) in w.errors.drain(..) {
                parts.errors.insert(row, e);
            }
        }
    }
    if prof {
        collect_profile(plan, &mut scratch.workers[..workers], &mut report);
    }

    for w in &mut scratch.workers[..workers] {
        w.arena.reset();
    }
    p.scratch.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
    report.elapsed = started.map_or(Duration::ZERO, |t| t.elapsed());
    #[cfg(feature = "tracing")]
    crate::report::trace::finish(&run_span, &report, batch);
    report
}

/// Sums the workers' counters and group times into per-stage reports.
fn collect_profile(plan: &Plan, workers: &mut [Worker], report: &mut RunReport) {
    report.groups = vec![Duration::ZERO; plan.groups.len()];
    for w in workers.iter_mut() {
        for (g, t) in report.groups.iter_mut().zip(&mut w.group_time) {
            *g += std::mem::take(t);
        }
    }
    for (gi, g) in plan.groups.iter().enumerate() {
        for step in &plan.steps[g.steps.clone()] {
            let mut sum = SlotStats::default();
            for w in workers.iter_mut() {
                let s = std::mem::take(&mut w.stats[step.unit][step.slot]);
                sum.seen += s.seen;
                sum.rejected += s.rejected;
                sum.failed += s.failed;
            }
            report.stages.push(StageReport {
                name: step.meta.name.clone(),
                kind: step.meta.kind,
                depth: step.depth,
                after: step.after,
                rows: sum.seen,
                rejected: sum.rejected,
                failed: sum.failed,
                group: gi,
                time: report.groups[gi],
                fused: g.steps.len() > 1,
            });
        }
    }
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
}

impl RunCtx<'_> {
    fn run_group(&self, gi: usize, w: &mut Worker, arena: &Bump, start: usize, len: usize) {
        let (p, g) = (self.p, &self.plan.groups[gi]);
        let t = self.prof.then(Instant::now);
        let mut run = ChunkRun {
            table: self.table,
            start,
            len,
            depth_base: p.bases[g.unit],
            sel: &mut w.sel,
            errors: &mut w.errors,
            arena,
            stats: if self.prof { Some(&mut w.stats[g.unit]) } else { None },
        };
        p.units[g.unit].run(g.slots.clone(), &mut *w.locals[g.unit], &mut run, &p.names[g.unit]);
        if let Some(t) = t {
            w.group_time[gi] += t.elapsed();
        }
    }

    /// Runs a segment on the calling thread: chunk-major, so a chunk stays
    /// in cache across every group of the segment.
    fn run_serial(&self, seg: &Segment, w: &mut Worker, arena: &Bump) -> usize {
        let len = self.table.len;
        if len == 0 {
            return 0;
        }
        let chunk_rows = if seg.barrier { len } else { self.plan.chunk_rows };
        let n = len.div_ceil(chunk_rows);
        for k in 0..n {
            let (start, rows) = chunk_range(k, chunk_rows, len);
            for gi in seg.groups.clone() {
                self.run_group(gi, w, arena, start, rows);
            }
        }
        n
    }

    /// Runs a segment over a rayon pool: each worker claims the next chunk
    /// and takes it through every group; a group holding a sequential stage
    /// waits until the previous chunk has left it, so sequential stages see
    /// rows in order while other workers already run the parallel groups of
    /// later chunks.
    fn run_parallel(&self, seg: &Segment, workers: &mut [Worker], tickets: &[AtomicUsize]) -> usize {
        let (len, chunk_rows) = (self.table.len, self.plan.chunk_rows);
        let n = len.div_ceil(chunk_rows);
        for gi in seg.groups.clone() {
            tickets[gi].store(0, Ordering::Relaxed);
        }
        let next = AtomicUsize::new(0);
        let work = |w: &mut Worker| {
            let arena = std::mem::take(&mut w.arena);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    break;
                }
                let (start, rows) = chunk_range(k, chunk_rows, len);
                for gi in seg.groups.clone() {
                    let ordered = self.plan.groups[gi].ordered;
                    if ordered {
                        wait_turn(&tickets[gi], k);
                    }
                    self.run_group(gi, w, &arena, start, rows);
                    if ordered {
                        tickets[gi].store(k + 1, Ordering::Release);
                    }
                }
            }
            w.arena = arena;
        };
        match &self.p.threads {
            Threads::Pool(pool) => pool.install(|| spread(workers, &work)),
            _ => spread(workers, &work),
        }
        n
    }
}

/// Runs `work` once per worker, in parallel, with `rayon::join` (which
/// needs no heap allocation, unlike spawning).
fn spread(workers: &mut [Worker], work: &(impl Fn(&mut Worker) + Sync)) {
    match workers {
        [] => {}
        [w] => work(w),
        _ => {
            let (a, b) = workers.split_at_mut(workers.len() / 2);
            rayon::join(|| spread(a, work), || spread(b, work));
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
