//! What a run reports, and ways to read it: a text table
//! ([`RunReport::table`]), an SVG bar chart ([`RunReport::to_svg`]) and
//! accumulation over many runs ([`RunReport::accumulate`]).

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::control::RowState;
use crate::plan::Step;
use crate::stage::Kind;

/// The outcome of one [`Pipeline::run`](crate::Pipeline::run).
///
/// With profiling on ([`Pipeline::set_profiling`](crate::Pipeline::set_profiling)
/// or the builder's `.profile(true)`), it holds per-stage row counts and
/// times; [`accumulate`](RunReport::accumulate) adds up the reports of a
/// stream of runs, [`table`](RunReport::table) prints them and
/// [`to_svg`](RunReport::to_svg) draws ns/row per stage.
///
/// ```
/// use mware::prelude::*;
/// use mware::RunReport;
///
/// let mut s = SchemaBuilder::new();
/// let x = s.hot::<u32>("x");
/// let schema = s.build()?;
/// let odd = stage::parallel("odd", Read(x), |x: &u32, ctl: &mut RowCtl| {
///     if *x % 2 == 1 { ctl.reject(400) }
/// }).rejects();
/// let ok = stage::parallel("ok", (), |_: (), ctl: &mut RowCtl| ctl.respond(200));
/// let pipeline = Pipeline::builder(&schema).before(odd).handler(ok).profile(true).build()?;
///
/// let mut total = RunReport::default();
/// let mut batch = Batch::new(&schema);
/// for round in 0..3u32 {
///     batch.clear();
///     batch.resize(10);
///     batch.column_mut(x)?.iter_mut().enumerate().for_each(|(i, v)| *v = i as u32 + round);
///     total.accumulate(&pipeline.run(&mut batch)?);
/// }
/// assert_eq!(total.rows, 30);
/// assert_eq!(total.stages[0].name.as_ref(), "odd");
/// assert_eq!((total.stages[0].rows, total.stages[0].rejected), (30, 15));
/// assert_eq!(total.stages[1].rows, 15); // the handler sees the rows `odd` let through
/// assert!(total.table().contains("odd"));
/// assert!(total.to_svg().starts_with("<svg"));
/// # Ok::<(), mware::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Rows in the batch.
    pub rows: usize,
    /// Chunks processed per segment, summed.
    pub chunks: usize,
    /// Worker threads used (1 = the calling thread only).
    pub threads: usize,
    /// Wall time of the run (measured only while profiling; zero otherwise).
    pub elapsed: Duration,
    /// Per stage, in execution order (empty unless profiling is on).
    pub stages: Vec<StageReport>,
    /// Per fused group of the plan that ran (empty unless profiling is on).
    pub groups: Vec<Duration>,
    /// Per segment (empty unless profiling is on).
    pub segments: Vec<Duration>,
    /// Futures created by async stages: one per async stage per chunk that
    /// had rows to process (with the default chunk size, one per stage per
    /// batch), never one per row. Always counted.
    pub futures: u64,
}

/// One stage's share of a run (see [`Pipeline::set_profiling`](crate::Pipeline::set_profiling)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageReport {
    /// The stage's name.
    pub name: std::sync::Arc<str>,
    /// Its kind.
    pub kind: Kind,
    /// Its middleware depth.
    pub depth: usize,
    /// `true` for an after-stage.
    pub after: bool,
    /// Rows the stage ran on.
    pub rows: u64,
    /// Rows it rejected.
    pub rejected: u64,
    /// Rows it failed (errors and panics).
    pub failed: u64,
    /// Index of its group in [`RunReport::groups`].
    pub group: usize,
    /// Time of the stage: its own pass, or — when it shares a fused loop
    /// with others — the whole group's time (stages of one loop body cannot
    /// be timed apart without a clock read per row).
    pub time: Duration,
    /// Whether `time` is a fused group's.
    pub fused: bool,
}

impl StageReport {
    /// Nanoseconds per row the stage (or its fused group) took.
    pub fn ns_per_row(&self) -> f64 {
        if self.rows == 0 { 0.0 } else { self.time.as_nanos() as f64 / self.rows as f64 }
    }
}

/// Rows one step stopped, kept per worker while profiling. Only stops are
/// counted, from the stopping call itself (rare, off the rows' fast path);
/// the rows each step saw follow from them, see [`rows_seen`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlotStats {
    pub rejected: u64,
    pub failed: u64,
}

impl SlotStats {
    /// Counts a row the step at `depth` moved from `before` to `after`. A
    /// step sees no row already stopped at its own depth, so a row stopped
    /// there was stopped by this very step: a second stop replaces the
    /// first (a reject then a fail counts as one failure).
    #[inline(always)]
    pub(crate) fn record(&mut self, depth: u16, before: RowState, after: RowState) {
        if before.same_stop(after) {
            return;
        }
        if before.stop_depth() == Some(depth as usize) {
            // Saturating: a chunk stage may (wrongly) stop a row it was not
            // given, stopped at this depth by its layer's other half.
            let first = self.counter(before);
            *first = first.saturating_sub(1);
        }
        *self.counter(after) += 1;
    }

    fn counter(&mut self, stopped: RowState) -> &mut u64 {
        if stopped.is_failed() { &mut self.failed } else { &mut self.rejected }
    }

    pub(crate) fn add(&mut self, other: SlotStats) {
        self.rejected += other.rejected;
        self.failed += other.failed;
    }
}

/// The rows each step of `steps` (in execution order) saw in a run of
/// `rows` rows, from the rows each step stopped (`stops`, per step) and the
/// rows already stopped at each depth when the run began (`stopped_before`).
///
/// Every before-stage runs before every after-stage, so a before-stage sees
/// the rows still live, and the after-stage at depth `d` sees the rows live
/// or stopped deeper than `d` when the last before-stage ended: an
/// after-stage stops rows only at its own depth, deeper than every
/// after-stage still to come, so it hides no row from them.
pub(crate) fn rows_seen(steps: &[Step], stops: &[SlotStats], rows: u64, stopped_before: &[u64]) -> Vec<u64> {
    let depths = steps.iter().map(|s| s.depth + 1).chain([stopped_before.len()]).max().unwrap_or(0);
    let mut stopped = vec![0u64; depths];
    stopped[..stopped_before.len()].copy_from_slice(stopped_before);
    let mut live = rows - stopped_before.iter().sum::<u64>();
    let mut seen = Vec::with_capacity(steps.len());
    for (step, s) in steps.iter().zip(stops) {
        if step.after {
            seen.push(live + stopped[step.depth + 1..].iter().sum::<u64>());
        } else {
            seen.push(live);
            let n = s.rejected + s.failed;
            live = live.saturating_sub(n);
            stopped[step.depth] += n;
        }
    }
    seen
}

/// Stages that share one timed loop in a run: a fused group of the plan
/// (one loop body, timed as a whole once per chunk) or a stage's own pass.
/// From [`RunReport::group_reports`].
#[derive(Clone, Copy, Debug)]
pub struct GroupReport<'a> {
    /// Index of the group in [`RunReport::groups`] (in the plan that ran).
    pub index: usize,
    /// Its stages, in execution order (one for an own pass).
    pub stages: &'a [StageReport],
    /// Time spent in the group's loop.
    pub time: Duration,
    /// Rows the loop ran over: the most any of its stages saw.
    pub rows: u64,
}

impl GroupReport<'_> {
    /// Nanoseconds per row of the group's loop.
    pub fn ns_per_row(&self) -> f64 {
        if self.rows == 0 { 0.0 } else { self.time.as_nanos() as f64 / self.rows as f64 }
    }

    /// Whether several stages share the loop (and so its time).
    pub fn fused(&self) -> bool {
        self.stages.len() > 1
    }
}

impl RunReport {
    /// Nanoseconds per row of the whole run (zero unless profiled).
    pub fn ns_per_row(&self) -> f64 {
        if self.rows == 0 { 0.0 } else { self.elapsed.as_nanos() as f64 / self.rows as f64 }
    }

    /// The stages grouped as they were timed: one entry per fused group or
    /// own pass, in execution order. Empty unless profiling was on.
    pub fn group_reports(&self) -> impl Iterator<Item = GroupReport<'_>> + '_ {
        self.stages.chunk_by(|a, b| a.group == b.group).map(|stages| GroupReport {
            index: stages[0].group,
            stages,
            time: stages.iter().map(|s| s.time).max().unwrap_or_default(),
            rows: stages.iter().map(|s| s.rows).max().unwrap_or(0),
        })
    }

    /// Adds `other` (a later run of the same pipeline) to this report: rows,
    /// chunks, wall time, and per stage the counts and times; `threads`
    /// becomes the most either used. Start from `RunReport::default()`.
    ///
    /// Stages are matched by name, so reports of different pipelines add up
    /// stage by stage too (a stage new to this report is appended). Per-stage
    /// figures cover the runs that were profiled. A pipeline takes its
    /// single-thread or its parallel plan by batch size; while every run took
    /// the same plan, `groups` and `segments` add up index by index, and
    /// once two runs took plans of different shapes they are left empty
    /// (their indices would mean different things) while the per-stage
    /// figures keep adding up.
    ///
    /// It allocates only when this report has no stages yet (or gains a
    /// stage), so a stream consumer that keeps one report allocates nothing
    /// per batch after the first.
    pub fn accumulate(&mut self, other: &RunReport) {
        self.rows += other.rows;
        self.chunks += other.chunks;
        self.futures += other.futures;
        self.threads = self.threads.max(other.threads);
        self.elapsed += other.elapsed;
        if other.stages.is_empty() {
            return;
        }
        if self.stages.is_empty() {
            self.stages.clone_from(&other.stages);
            self.groups.clone_from(&other.groups);
            self.segments.clone_from(&other.segments);
            return;
        }
        let same_shape = self.groups.len() == other.groups.len()
            && self.segments.len() == other.segments.len()
            && self.stages.len() == other.stages.len()
            && self.stages.iter().zip(&other.stages).all(|(a, b)| a.group == b.group && a.name == b.name);
        if same_shape {
            self.groups.iter_mut().zip(&other.groups).for_each(|(a, b)| *a += *b);
            self.segments.iter_mut().zip(&other.segments).for_each(|(a, b)| *a += *b);
        } else {
            self.groups.clear();
            self.segments.clear();
        }
        for (i, s) in other.stages.iter().enumerate() {
            let at = match self.stages.get(i) {
                Some(mine) if mine.name == s.name => Some(i),
                _ => self.stages.iter().position(|mine| mine.name == s.name),
            };
            match at {
                Some(at) => {
                    let mine = &mut self.stages[at];
                    mine.rows += s.rows;
                    mine.rejected += s.rejected;
                    mine.failed += s.failed;
                    mine.time += s.time;
                }
                None => self.stages.push(s.clone()),
            }
        }
    }

    /// The report as a text table: per stage its kind, place in the onion,
    /// rows seen, rejected and failed, time and ns/row; stages that share a
    /// fused loop are bracketed and show the loop's time once. Then the
    /// segment times and the run's totals.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{} rows, {} chunks, {} thread{}",
            self.rows,
            self.chunks,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        );
        if self.elapsed > Duration::ZERO {
            let _ = write!(out, ", {} ({:.2} ns/row)", Dur(self.elapsed), self.ns_per_row());
        }
        out.push('\n');
        if self.stages.is_empty() {
            out.push_str("no per-stage figures: profiling was off (see Pipeline::set_profiling)\n");
            return out;
        }
        let name_w = self.stages.iter().map(|s| s.name.chars().count()).max().unwrap_or(0).max(5);
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<11}  {:<9}  {:>10}  {:>9}  {:>7}    {:>10}  {:>9}  loop",
            "stage", "kind", "at", "rows", "rejected", "failed", "time", "ns/row"
        );
        for g in self.group_reports() {
            let n = g.stages.len();
            for (k, s) in g.stages.iter().enumerate() {
                let at = format!("{} d{}", if s.after { "after" } else { "before" }, s.depth);
                let mark = match (n, k) {
                    (1, _) => ' ',
                    (_, 0) => '┌',
                    (_, k) if k + 1 == n => '└',
                    _ => '│',
                };
                let _ = write!(
                    out,
                    "  {:<name_w$}  {:<11}  {:<9}  {:>10}  {:>9}  {:>7}  {mark} ",
                    s.name,
                    s.kind.to_string(),
                    at,
                    s.rows,
                    s.rejected,
                    s.failed
                );
                if k == 0 {
                    let what = if n > 1 {
                        format!("fused group {} ({n} stages)", g.index)
                    } else {
                        "own pass".into()
                    };
                    let _ = writeln!(out, "{:>10}  {:>9.2}  {what}", Dur(g.time).to_string(), g.ns_per_row());
                } else {
                    out.truncate(out.trim_end_matches(' ').len());
                    out.push('\n');
                }
            }
        }
        if !self.segments.is_empty() {
            out.push_str("segments:");
            for (i, t) in self.segments.iter().enumerate() {
                let _ = write!(out, " #{i} {}", Dur(*t));
            }
            out.push('\n');
        }
        out
    }

    /// An SVG bar chart of nanoseconds per row per stage, in execution
    /// order; stages that share a fused loop share one bar (their loop's
    /// time over the rows it ran). Colours follow the stage kind.
    pub fn to_svg(&self) -> String {
        svg::chart(self)
    }

    /// Writes [`to_svg`](RunReport::to_svg) to `path`.
    pub fn write_svg(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_svg())
    }
}

/// Prints [`RunReport::table`].
impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

/// A duration in the unit that suits it.
struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos() as f64;
        if ns < 1e3 {
            write!(f, "{ns:.0} ns")
        } else if ns < 1e6 {
            write!(f, "{:.2} µs", ns / 1e3)
        } else if ns < 1e9 {
            write!(f, "{:.2} ms", ns / 1e6)
        } else {
            write!(f, "{:.3} s", ns / 1e9)
        }
    }
}

/// The hand-written SVG chart (no plotting dependency: a few rectangles and
/// labels).
mod svg {
    use std::fmt::Write as _;

    use super::{Dur, RunReport};
    use crate::stage::Kind;

    const ROW: f64 = 24.0;
    const LEFT: f64 = 260.0;
    const PLOT: f64 = 560.0;
    const RIGHT: f64 = 220.0;
    const TOP: f64 = 64.0;
    /// A fused loop whose stages are of different kinds.
    const MIXED: &str = "#76b7b2";

    pub(super) fn colour(kind: Kind) -> &'static str {
        match kind {
            Kind::Parallel => "#4e79a7",
            Kind::Sequential => "#f28e2b",
            Kind::Reduction => "#59a14f",
            Kind::WholeBatch => "#e15759",
            Kind::Async => "#b07aa1",
        }
    }

    /// Escapes text for XML.
    pub(super) fn esc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c => out.push(c),
            }
        }
        out
    }

    /// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
    fn nice_max(v: f64) -> f64 {
        if v <= 0.0 || !v.is_finite() {
            return 1.0;
        }
        let p = 10f64.powf(v.log10().floor());
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&m| m >= v).unwrap_or(10.0 * p)
    }

    pub(super) fn chart(r: &RunReport) -> String {
        let n = r.stages.len().max(1);
        let legend_h = 3.0 * ROW;
        let (w, h) = (LEFT + PLOT + RIGHT, TOP + n as f64 * ROW + 40.0 + legend_h);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" font-size="16" font-weight="bold">ns per row by stage</text>"#,
            LEFT
        );
        let threads = if r.threads == 1 { "1 thread".to_string() } else { format!("{} threads", r.threads) };
        let mut sub = format!("{} rows, {} chunks, {threads}", r.rows, r.chunks);
        if r.elapsed > std::time::Duration::ZERO {
            let _ = write!(sub, ", run {} ({:.2} ns/row)", Dur(r.elapsed), r.ns_per_row());
        }
        let _ = writeln!(s, r##"<text x="{LEFT}" y="44" fill="#555">{}</text>"##, esc(&sub));
        if r.stages.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{LEFT}" y="{}" fill="#a00">no per-stage figures: profiling was off</text>"##,
                TOP + 16.0
            );
            s.push_str("</svg>\n");
            return s;
        }
        let max = nice_max(r.group_reports().map(|g| g.ns_per_row()).fold(0.0, f64::max));
        let scale = PLOT / max;
        let bottom = TOP + n as f64 * ROW;
        // Grid and axis.
        for k in 0..=5 {
            let v = max * k as f64 / 5.0;
            let x = LEFT + v * scale;
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                bottom + 16.0,
                trim(v)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">ns / row</text>"##,
            LEFT + PLOT / 2.0,
            bottom + 34.0
        );
        let mut row = 0usize;
        for g in r.group_reports() {
            let y0 = TOP + row as f64 * ROW;
            let k = g.stages.len();
            for (i, st) in g.stages.iter().enumerate() {
                let y = y0 + i as f64 * ROW + ROW * 0.68;
                let at = if st.after { "after" } else { "before" };
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{y:.1}" text-anchor="end">{} <tspan fill="#777" font-size="11">{at} d{}</tspan></text>"##,
                    LEFT - 8.0,
                    esc(&st.name),
                    st.depth
                );
            }
            let kind = g.stages[0].kind;
            let fill = if g.stages.iter().all(|st| st.kind == kind) { colour(kind) } else { MIXED };
            let bw = (g.ns_per_row() * scale).max(1.0);
            let bh = k as f64 * ROW - 6.0;
            let names: Vec<&str> = g.stages.iter().map(|st| st.name.as_ref()).collect();
            let _ = writeln!(
                s,
                r#"<rect x="{LEFT}" y="{:.1}" width="{bw:.1}" height="{bh:.1}" fill="{fill}" rx="2"><title>{}: {:.2} ns/row, {} over {} rows</title></rect>"#,
                y0 + 3.0,
                esc(&names.join(" + ")),
                g.ns_per_row(),
                Dur(g.time),
                g.rows
            );
            let label = if g.fused() {
                format!("{:.2} ns/row (fused loop of {k})", g.ns_per_row())
            } else {
                format!("{:.2} ns/row", g.ns_per_row())
            };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                LEFT + bw + 6.0,
                y0 + bh / 2.0 + 7.5,
                esc(&label)
            );
            row += k;
        }
        // Legend.
        let ly = bottom + 50.0;
        let kinds = [Kind::Parallel, Kind::Sequential, Kind::Reduction, Kind::WholeBatch];
        let legend = kinds.iter().map(|k| (colour(*k), k.to_string())).chain([(MIXED, "mixed kinds".into())]);
        for (i, (fill, text)) in legend.enumerate() {
            let x = LEFT + i as f64 * 130.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{ly}" width="12" height="12" fill="{fill}"/><text x="{}" y="{}">{text}</text>"#,
                x + 18.0,
                ly + 11.0
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{}" fill="#555" font-size="11">A bar spanning several stages is one fused loop: its stages run in one loop body and share its time.</text>"##,
            ly + 34.0
        );
        s.push_str("</svg>\n");
        s
    }

    /// A tick label without trailing zeros.
    fn trim(v: f64) -> String {
        let t = format!("{v:.2}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The spans and events of the `tracing` feature, opened by the executor.
#[cfg(feature = "tracing")]
pub(crate) mod trace {
    use std::fmt;
    use std::ops::Range;

    use tracing::field::Empty;

    use super::RunReport;
    use crate::control::RowState;
    use crate::plan::{Plan, Segment};

    /// Stage names of a range of steps, comma-separated (formatted only if
    /// a subscriber records the span).
    struct Names<'a>(&'a Plan, Range<usize>);

    impl fmt::Display for Names<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (k, s) in self.0.steps[self.1.clone()].iter().enumerate() {
                if k > 0 {
                    f.write_str(",")?;
                }
                f.write_str(&s.meta.name)?;
            }
            Ok(())
        }
    }

    /// The span of one run: `mware.run` at DEBUG, with the batch's rows,
    /// the threads, the plan and its stage names; `chunks` and `live` (rows
    /// neither rejected nor failed) are recorded when it ends.
    pub(crate) fn run(plan: &Plan, rows: usize, threads: usize) -> tracing::Span {
        tracing::debug_span!(
            target: "mware",
            "mware.run",
            rows,
            threads,
            plan = if plan.parallel { "parallel" } else { "one thread" },
            stages = %Names(plan, 0..plan.steps.len()),
            chunks = Empty,
            live = Empty,
        )
    }

    /// The span of one segment: `mware.segment` at DEBUG, with its index,
    /// the rows it runs over and its stage names.
    pub(crate) fn segment(plan: &Plan, seg: &Segment, rows: usize) -> tracing::Span {
        tracing::debug_span!(
            target: "mware",
            "mware.segment",
            index = plan.segments.iter().position(|s| std::ptr::eq(s, seg)).unwrap_or(0),
            rows,
            barrier = seg.barrier,
            stages = %Names(plan, plan.groups[seg.groups.start].steps.start..plan.groups[seg.groups.end - 1].steps.end),
        )
    }

    /// Ends a run's span: records its chunks and live rows and, when the
    /// run was profiled, one DEBUG event `stage` per stage with its counts.
    pub(crate) fn finish(span: &tracing::Span, report: &RunReport, states: &[RowState]) {
        if span.is_disabled() {
            return;
        }
        span.record("chunks", report.chunks);
        span.record("live", states.iter().filter(|s| s.is_live()).count());
        for s in &report.stages {
            tracing::debug!(
                target: "mware",
                stage = %s.name,
                rows = s.rows,
                rejected = s.rejected,
                failed = s.failed,
                time_ns = s.time.as_nanos() as u64,
                fused = s.fused,
                "stage"
            );
        }
    }
}
