//! The plan: a pipeline's steps in onion order, grouped into fused groups
//! and segments, with a chunk size. Computed once when the pipeline is built.

use std::fmt::Write as _;
use std::ops::Range;

use crate::schema::Schema;
use crate::stage::{Kind, StageMeta};
use crate::unit::Unit;

/// One stage in execution order.
#[derive(Clone, Debug)]
pub struct Step {
    /// Index of the registered unit.
    pub unit: usize,
    /// The step's slot in its unit.
    pub slot: usize,
    /// Middleware depth (0 = outermost).
    pub depth: usize,
    /// `true` for an after-stage.
    pub after: bool,
    /// Name, kind, access.
    pub meta: StageMeta,
}

/// Consecutive steps of one unit that run together over each chunk.
#[derive(Clone, Debug)]
pub struct Group {
    /// The unit.
    pub unit: usize,
    /// Its slots.
    pub slots: Range<usize>,
    /// Indices into [`Plan::steps`].
    pub steps: Range<usize>,
    /// Whether one loop body runs all of its steps.
    pub fused: bool,
    /// Whether chunks must come to it in row order (and runs in submission
    /// order). In a parallel plan: whether it lies in its unit's ordered
    /// span, from the unit's first sequential or whole-batch step to its
    /// last. In the serial plan: whether its first step is one.
    pub ordered: bool,
    /// The group has after-stages, and every step before it stops rows
    /// deeper than all of them: in a run whose rows all came in live, every
    /// row reaches them (their walk needs no look at a row's stop).
    pub(crate) afters_reach_all: bool,
    /// In the plan for runs in turn, a group that joins its unit's ordered
    /// span with the steps after it: where the span ends. A run in turn
    /// walks its last rows in two parts, passing the turn on between them.
    pub(crate) split: Option<Split>,
    /// Runs side by side with the group before it, on a second thread, when
    /// a batch is one chunk (parallel plan only): a lone
    /// [`side_by_side`](crate::stage::RowFn::side_by_side) before-stage
    /// sharing no written field with that group, whose stops on the rows
    /// that group stops are undone.
    pub beside: bool,
}

/// Where a group of the plan for runs in turn can be cut: the first slot
/// after its ordered span, and whether the after-stages of each part (the
/// span, then the steps after it) see every row that comes in live (as
/// [`Group`]'s `afters_reach_all`, for the part alone).
#[derive(Clone, Debug)]
pub(crate) struct Split {
    pub slot: usize,
    pub afters_reach_all: [bool; 2],
}

/// Groups that run chunk by chunk together; segments are separated by
/// stages that need every row to have finished the steps before them.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Indices into [`Plan::groups`].
    pub groups: Range<usize>,
    /// Runs alone over the whole batch (a whole-batch stage, or a stage that
    /// writes a cold field in a parallel plan).
    pub barrier: bool,
}

/// How a pipeline runs; see [`Pipeline::explain`](crate::Pipeline::explain).
#[derive(Clone, Debug)]
pub struct Plan {
    /// Every stage in execution order.
    pub steps: Vec<Step>,
    /// Fused groups in execution order.
    pub groups: Vec<Group>,
    /// Segments in execution order.
    pub segments: Vec<Segment>,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Whether chunks of a segment are spread over threads.
    pub parallel: bool,
    /// Bytes of hot columns (and the control word) the stages touch per row.
    pub bytes_per_row: usize,
    /// The schema's field names, for [`to_dot`](Plan::to_dot).
    field_names: Vec<String>,
    /// Some group is [`beside`](Group::beside) the one before it.
    side_by_side: bool,
}

/// Bytes of a chunk's touched columns the default chunk size aims for: half
/// of this machine's L2 (1 MiB), leaving room for the stages' own data.
/// Larger chunks spread each group's fixed cost (selection, resolving,
/// locking, dispatch) over more rows: boxed gateway-8 ran 2.21-2.28x the
/// hand loop at 512 KiB against 2.33-2.37x at 128 KiB, the static chain
/// no slower (session 5, `cargo bench --bench gateway8 -- paired`, three
/// alternations of both builds).
const CHUNK_BYTES: usize = 512 * 1024;

/// The same for a parallel plan, smaller: a batch needs chunks enough to
/// spread over the workers and to pipeline its ordered groups (gateway-8 in
/// 65,536-row batches on two threads: 1.15x one thread with 128 KiB chunks,
/// 0.86-0.90x with 512 KiB).
const PARALLEL_CHUNK_BYTES: usize = 128 * 1024;

/// Which of a pipeline's plans to build.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One thread: fused loops whole.
    Serial,
    /// Chunks spread over threads: a fused loop cut where its ordered span
    /// begins and where it ends.
    Parallel,
    /// A stream's runs in turn: cut only where the ordered span begins, so
    /// the span and the steps after it run as one loop in turn. Against the
    /// parallel cut this saves a pass per chunk but holds the turn longer;
    /// on gateway-8 in 4,096-row batches it streamed 1.21–1.53× `run`
    /// (median 1.375×) against 1.08–1.40× (1.315×), eight alternations
    /// (BENCHMARKS.md §8, session 11). The joined group records where the
    /// span ends ([`Split`]), so a run can pass the turn on before the
    /// steps after the span on its last rows.
    InTurn,
}

impl Plan {
    /// Orders the units' steps as the onion runs them and groups them.
    pub(crate) fn build(
        schema: &Schema,
        units: &[Box<dyn Unit>],
        chunk_rows: Option<usize>,
        layout: Layout,
    ) -> Plan {
        let parallel = layout != Layout::Serial;
        let mut steps = Vec::new();
        let mut depth = 0;
        let mut bases = Vec::with_capacity(units.len());
        let metas: Vec<_> = units.iter().map(|u| u.metas()).collect();
        for (u, layers) in metas.iter().enumerate() {
            bases.push(depth);
            for (level, [before, _]) in layers.iter().enumerate() {
                if let Some(meta) = before {
                    let meta = meta.clone();
                    steps.push(Step { unit: u, slot: level, depth: depth + level, after: false, meta });
                }
            }
            depth += layers.len();
        }
        for (u, layers) in metas.iter().enumerate().rev() {
            let n = layers.len();
            for (level, [_, after]) in layers.iter().enumerate().rev() {
                if let Some(meta) = after {
                    let meta = meta.clone();
                    let slot = 2 * n - 1 - level;
                    steps.push(Step { unit: u, slot, depth: bases[u] + level, after: true, meta });
                }
            }
        }

        let barrier = |s: &Step| {
            matches!(s.meta.kind, Kind::WholeBatch | Kind::Async)
                || (parallel && s.meta.uses.iter().any(|f| f.cold && f.write))
        };
        let is_ordered = |s: &Step| matches!(s.meta.kind, Kind::Sequential | Kind::WholeBatch);
        // Per unit, the slots from its first ordered step to its last: in a
        // parallel plan, the part of a fused loop that must see chunks in
        // order. The steps before and after it run on any chunk.
        let mut ordered_span = vec![(usize::MAX, 0); units.len()];
        for s in steps.iter().filter(|s| is_ordered(s)) {
            let span = &mut ordered_span[s.unit];
            *span = (span.0.min(s.slot), span.1.max(s.slot));
        }
        let joined = layout == Layout::InTurn;
        let in_span = |s: &Step| {
            let (first, last) = ordered_span[s.unit];
            first <= s.slot && (joined || s.slot <= last)
        };
        let mut groups: Vec<Group> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let ordered = if parallel { in_span(step) } else { is_ordered(step) };
            let fused = units[step.unit].fused();
            let extend = groups.last().is_some_and(|g| {
                let prev = &steps[g.steps.end - 1];
                g.unit == step.unit
                    && fused
                    && !barrier(prev)
                    && !barrier(step)
                    // In a parallel plan a fused loop splits where its
                    // ordered span begins and where it ends, so the steps
                    // outside it run on any chunk in parallel and the
                    // ordered group holds as little as it can. Each cut
                    // costs a pass over the chunk; the chain's type knows
                    // both cuts (`chain::Head`/`Mid`/`Tail`), so its parts
                    // compile without per-step range tests (gateway-8 on one
                    // thread, session 5: 9.4 ns/row cut once, 7.6 uncut).
                    && (!parallel || in_span(prev) == ordered)
            });
            if extend {
                let g = groups.last_mut().expect("checked");
                g.slots.end = step.slot + 1;
                g.steps.end = i + 1;
                g.fused = true;
            } else {
                groups.push(Group {
                    unit: step.unit,
                    slots: step.slot..step.slot + 1,
                    steps: i..i + 1,
                    fused: false,
                    ordered,
                    afters_reach_all: false,
                    split: None,
                    beside: false,
                });
            }
            let g = groups.len() - 1;
            let alone = barrier(step);
            match segments.last_mut() {
                Some(s) if !s.barrier && !alone => s.groups.end = g + 1,
                _ => segments.push(Segment { groups: g..g + 1, barrier: alone }),
            }
        }

        // A step stops rows (rejects or fails them) at its own depth only.
        let afters_reach_all = |part: Range<usize>| {
            let earlier = steps[..part.start].iter().map(|s| s.depth).min().unwrap_or(usize::MAX);
            let afters = steps[part].iter().filter(|s| s.after).map(|s| s.depth).max();
            afters.is_some_and(|deepest| deepest < earlier)
        };
        for g in &mut groups {
            g.afters_reach_all = afters_reach_all(g.steps.clone());
            let span_end = ordered_span[g.unit].1 + 1;
            let step = g.steps.clone().find(|&i| steps[i].slot >= span_end);
            if let (true, true, Some(step)) = (joined, g.ordered, step.filter(|&i| i > g.steps.start)) {
                g.split = Some(Split {
                    slot: steps[step].slot,
                    afters_reach_all: [
                        afters_reach_all(g.steps.start..step),
                        afters_reach_all(step..g.steps.end),
                    ],
                });
            }
        }

        if parallel {
            mark_side_by_side(units, &steps, &mut groups, &segments);
        }

        let mut touched = vec![false; schema.len()];
        for s in &steps {
            for f in &s.meta.uses {
                touched[f.index()] = true;
            }
        }
        let bytes_per_row: usize = 4 + schema
            .fields()
            .iter()
            .zip(&touched)
            .filter(|(_, t)| **t)
            .map(|(f, _)| f.storage.inline_bytes())
            .sum::<usize>();
        let chunk_rows = chunk_rows.unwrap_or_else(|| {
            let target = if parallel { PARALLEL_CHUNK_BYTES } else { CHUNK_BYTES };
            let rows = (target / bytes_per_row).clamp(1024, 16 * 1024);
            1 << rows.ilog2()
        });
        let field_names = schema.fields().iter().map(|f| f.name.clone()).collect();
        let side_by_side = groups.iter().any(|g| g.beside);
        Plan { steps, groups, segments, chunk_rows, parallel, bytes_per_row, field_names, side_by_side }
    }

    /// Whether a group runs side by side with the one before it (see
    /// [`Group::beside`]).
    pub fn has_side_by_side(&self) -> bool {
        self.side_by_side
    }

    /// The plan as text: how it runs (one thread, or chunks spread over
    /// threads), chunk rows and bytes per row, then per segment its groups —
    /// fused loop or own pass, in parallel over chunks or in row order —
    /// and per stage its place in the onion, kind and field access.
    ///
    /// ```
    /// use mware::prelude::*;
    ///
    /// let mut s = SchemaBuilder::new();
    /// let x = s.hot::<u32>("x");
    /// let schema = s.build()?;
    /// let check = stage::parallel("check", Read(x), |x: &u32, ctl: &mut RowCtl| {
    ///     if *x == 0 { ctl.reject(400) }
    /// }).rejects();
    /// let pipeline = Pipeline::builder(&schema).before(check).threads(1).build()?;
    /// let text = pipeline.plan().explain(pipeline.schema());
    /// assert!(text.contains("check") && text.contains("reads x") && text.contains("may reject"));
    /// # Ok::<(), mware::Error>(())
    /// ```
    pub fn explain(&self, schema: &Schema) -> String {
        let field = |i: usize| schema.fields().get(i).map_or("?", |f| f.name.as_str());
        let mut out = String::new();
        let mode = if self.parallel {
            "parallel: the chunks of each chunked segment are spread over the worker threads"
        } else {
            "one thread: the calling thread, chunk by chunk"
        };
        let _ = writeln!(out, "plan ({mode})");
        let fused = self.groups.iter().filter(|g| g.fused).count();
        let _ = writeln!(
            out,
            "  {} in {} and {} ({} fused, {} own {}); {} rows per chunk, {} B touched per row ({} KiB per chunk)",
            plural(self.steps.len(), "stage"),
            plural(self.segments.len(), "segment"),
            plural(self.groups.len(), "group"),
            fused,
            self.groups.len() - fused,
            if self.groups.len() - fused == 1 { "pass" } else { "passes" },
            self.chunk_rows,
            self.bytes_per_row,
            (self.chunk_rows * self.bytes_per_row).div_ceil(1024),
        );
        let name_w = self.steps.iter().map(|s| s.meta.name.chars().count()).max().unwrap_or(0);
        for (si, seg) in self.segments.iter().enumerate() {
            let whole = self.groups[seg.groups.clone()]
                .iter()
                .any(|g| self.steps[g.steps.clone()].iter().any(|s| s.meta.kind == Kind::WholeBatch));
            let is_async = self.groups[seg.groups.clone()]
                .iter()
                .any(|g| self.steps[g.steps.clone()].iter().any(|s| s.meta.kind == Kind::Async));
            let how = if seg.barrier && is_async {
                "async: after every row has finished the segments before it, the stage's futures (one \
                 per batch, or per chunk of its chunk_rows) are in flight together and awaited"
            } else if seg.barrier && whole {
                "barrier: a whole-batch stage, called once over the whole batch on one thread after \
                 every row has finished the segments before it"
            } else if seg.barrier {
                "barrier: writes a cold field, so it runs over the whole batch on one thread (cold \
                 side tables are not split across threads) after every row has finished the \
                 segments before it"
            } else if self.parallel && self.groups[seg.groups.clone()].iter().any(|g| g.ordered) {
                "chunked: each worker claims the next chunk and takes it through every group below, \
                 so different groups run side by side on different chunks"
            } else if self.parallel {
                "chunked: each worker takes its own block of consecutive chunks through every group \
                 below, then helps with the blocks of the others"
            } else {
                "chunked: each chunk goes through every group below, while it is in cache, before \
                 the next chunk starts"
            };
            let _ = writeln!(out, "segment {si}: {how}");
            for gi in seg.groups.clone() {
                let g = &self.groups[gi];
                let n = g.steps.len();
                let shape = match (g.fused, seg.barrier) {
                    (true, _) => format!("fused loop: one loop body runs its {n} stages on each row"),
                    (false, true) => "own pass over the whole batch".to_string(),
                    (false, false) => "own pass: its own loop over the chunk".to_string(),
                };
                let when = match (self.parallel && !seg.barrier, g.ordered) {
                    (true, true) => {
                        " · in row order: one chunk at a time (chunk k+1 waits for chunk k), \
                         while other workers run the other groups on later chunks"
                    }
                    (true, false) => " · in parallel: any chunk on any worker",
                    (false, true) => " · in row order",
                    (false, false) => "",
                };
                let beside = if g.beside {
                    format!(
                        " · side by side with group {} on a second thread when a batch is one chunk \
                         (undone on the rows that group stops)",
                        gi - 1
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(out, "  group {gi}: {shape}{when}{beside}");
                for s in &self.steps[g.steps.clone()] {
                    let role = if s.after { "after " } else { "before" };
                    let rejects = if s.meta.rejects { "may reject" } else { "" };
                    let _ = writeln!(
                        out,
                        "    {role} d{:<2}  {:<name_w$}  {:<11}  {:<10}  {}",
                        s.depth,
                        s.meta.name,
                        s.meta.kind.to_string(),
                        rejects,
                        access_text(s, &field)
                    );
                }
            }
        }
        let own: usize = self
            .segments
            .iter()
            .filter(|seg| !seg.barrier)
            .map(|seg| self.groups[seg.groups.clone()].iter().filter(|g| !g.fused).count())
            .sum();
        if own >= 2 {
            let _ = writeln!(
                out,
                "note: {own} groups are own passes: each re-reads the chunk's columns and control words \
                 (eight own passes cost 2.3-2.7x one fused loop on gateway-8); row stages registered \
                 together in one chain! share a loop body"
            );
        }
        out
    }

    /// The plan as a Graphviz DOT digraph: a cluster per segment, a cluster
    /// per group (fused loops shaded), a node per stage with its place in
    /// the onion, kind and access, coloured by kind; solid edges follow
    /// execution order, dashed edges show where rows a stage rejects go
    /// next (the after-stages outside it, or out). Render it with
    /// `dot -Tsvg plan.dot -o plan.svg`.
    ///
    /// ```
    /// use mware::gateway8::{Composition, Fields, GatewayPipeline};
    ///
    /// let (schema, fields) = Fields::schema();
    /// let gw = GatewayPipeline::build(&fields, &schema, 1024, Composition::Static, |b| b.threads(1))?;
    /// let dot = gw.pipeline.plan().to_dot();
    /// assert!(dot.starts_with("digraph plan {") && dot.contains("\"auth"));
    /// # Ok::<(), mware::Error>(())
    /// ```
    pub fn to_dot(&self) -> String {
        let field = |i: usize| self.field_names.get(i).map_or("?", String::as_str);
        let mut out = String::from("digraph plan {\n");
        let title = format!(
            "mware plan ({}): {}, {} rows per chunk",
            if self.parallel { "parallel" } else { "one thread" },
            plural(self.steps.len(), "stage"),
            self.chunk_rows
        );
        let _ = writeln!(
            out,
            "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=12, labelloc=t, label=\"{}\", nodesep=0.25, ranksep=0.35];",
            dot_escape(&title)
        );
        out.push_str("  node [shape=box, style=\"filled\", fontname=\"Helvetica\", fontsize=10, margin=\"0.12,0.06\"];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];\n");
        out.push_str("  batch_in [label=\"batch in\", shape=oval, fillcolor=\"#eeeeee\"];\n");
        out.push_str("  batch_out [label=\"batch out\", shape=oval, fillcolor=\"#eeeeee\"];\n");
        for (si, seg) in self.segments.iter().enumerate() {
            let what = if seg.barrier {
                "barrier: whole batch, one thread"
            } else if self.parallel {
                "chunked, chunks over threads"
            } else {
                "chunked"
            };
            let _ = writeln!(
                out,
                "  subgraph cluster_s{si} {{\n    label=\"segment {si}: {what}\"; style=\"rounded\"; color=\"#888888\";"
            );
            for gi in seg.groups.clone() {
                let g = &self.groups[gi];
                let mut label =
                    if g.fused { format!("group {gi}: fused loop") } else { format!("group {gi}: own pass") };
                if g.ordered {
                    label.push_str(", in row order");
                }
                if g.beside {
                    let _ = write!(label, ", side by side with group {}", gi - 1);
                }
                let style = if g.fused {
                    "style=\"rounded,filled\"; fillcolor=\"#f3f6fa\"; color=\"#4e79a7\""
                } else {
                    "style=\"rounded,dashed\"; color=\"#999999\""
                };
                let _ = writeln!(
                    out,
                    "    subgraph cluster_g{gi} {{\n      label=\"{label}\"; labelloc=b; {style};"
                );
                for i in g.steps.clone() {
                    let s = &self.steps[i];
                    let role = if s.after { "after" } else { "before" };
                    let rejects = if s.meta.rejects { ", may reject" } else { "" };
                    let label = format!(
                        "{}\n{role} · depth {}\n{}{rejects}\n{}",
                        s.meta.name,
                        s.depth,
                        s.meta.kind,
                        access_text(s, &field)
                    );
                    let (fill, shape) =
                        (kind_tint(s.meta.kind), if s.after { ", style=\"rounded,filled\"" } else { "" });
                    let _ = writeln!(
                        out,
                        "      s{i} [label=\"{}\", fillcolor=\"{fill}\"{shape}];",
                        dot_escape(&label)
                    );
                }
                out.push_str("    }\n");
            }
            out.push_str("  }\n");
        }
        let node = |i: usize| if i < self.steps.len() { format!("s{i}") } else { "batch_out".to_string() };
        if !self.steps.is_empty() {
            out.push_str("  batch_in -> s0;\n");
        }
        for i in 0..self.steps.len() {
            let next = i + 1;
            let turn = !self.steps[i].after && self.steps.get(next).is_some_and(|s| s.after);
            let barrier = self.segments.iter().any(|seg| {
                !seg.groups.is_empty()
                    && self.groups[seg.groups.start].steps.start == next
                    && next < self.steps.len()
            });
            let attrs = match (turn, barrier) {
                (true, _) => " [label=\"response\"]",
                (false, true) => " [label=\"all rows\", penwidth=2]",
                _ => "",
            };
            let _ = writeln!(out, "  s{i} -> {}{attrs};", node(next));
        }
        // Rows a before-stage rejects skip to the first after-stage outside it.
        for (i, s) in self.steps.iter().enumerate() {
            if s.after || !s.meta.rejects {
                continue;
            }
            let to = self.steps[i + 1..]
                .iter()
                .position(|o| o.after && o.depth < s.depth)
                .map_or(self.steps.len(), |p| i + 1 + p);
            if to == i + 1 {
                continue;
            }
            let _ = writeln!(
                out,
                "  s{i} -> {} [style=dashed, color=\"#c0504d\", fontcolor=\"#c0504d\", label=\"rejected\", constraint=false];",
                node(to)
            );
        }
        out.push_str("}\n");
        out
    }
}

/// Marks each group that may run side by side with the group before it:
/// one before-stage of its own that asked to
/// ([`StageMeta::side_by_side`]), a stateless row stage (each row's result
/// depends on that row alone), touching no cold field; the
/// group before it in the same chunked segment, of another unit (their
/// scratch is per unit), made of before-stages only (so every row it stops
/// is one the later stage must not have seen, and nothing after it is
/// reordered) and sharing no field with it where either writes. A group
/// pairs at most once.
fn mark_side_by_side(units: &[Box<dyn Unit>], steps: &[Step], groups: &mut [Group], segments: &[Segment]) {
    for seg in segments.iter().filter(|seg| !seg.barrier) {
        let mut gi = seg.groups.start + 1;
        while gi < seg.groups.end {
            let (g, h) = (&groups[gi - 1], &groups[gi]);
            let later = &steps[h.steps.start];
            let earlier = &steps[g.steps.clone()];
            let eligible = h.steps.len() == 1
                && !later.after
                && later.meta.side_by_side
                && later.meta.kind == Kind::Parallel
                && units[h.unit].fused()
                && later.meta.uses.iter().all(|u| !u.cold)
                && g.unit != h.unit
                && earlier.iter().all(|s| !s.after)
                && earlier
                    .iter()
                    .flat_map(|s| &s.meta.uses)
                    .all(|u| later.meta.uses.iter().all(|v| u.index() != v.index() || !(u.write || v.write)));
            if eligible {
                groups[gi].beside = true;
                gi += 2;
            } else {
                gi += 1;
            }
        }
    }
}

/// `n` and a noun, plural when `n != 1`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// "reads a, b; writes c" (cold fields marked).
fn access_text<'a>(s: &Step, field: &impl Fn(usize) -> &'a str) -> String {
    let list =
        |write: bool| {
            s.meta
                .uses
                .iter()
                .filter(|f| f.write == write)
                .map(|f| {
                    if f.cold { format!("{} (cold)", field(f.index())) } else { field(f.index()).to_string() }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
    let (r, w) = (list(false), list(true));
    match (r.is_empty(), w.is_empty()) {
        (true, true) => "no fields".to_string(),
        (false, true) => format!("reads {r}"),
        (true, false) => format!("writes {w}"),
        (false, false) => format!("reads {r}; writes {w}"),
    }
}

/// A light tint of the stage kind's colour (the report chart's palette).
fn kind_tint(kind: Kind) -> &'static str {
    match kind {
        Kind::Parallel => "#d4e1ef",
        Kind::Sequential => "#fcdcc0",
        Kind::Reduction => "#d0e8cd",
        Kind::WholeBatch => "#f6cfd0",
        Kind::Async => "#e5d8ee",
    }
}

/// Escapes text for a double-quoted DOT string; newlines become `\n`.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
