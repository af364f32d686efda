//! The plan: a pipeline's steps in onion order, grouped into fused groups
//! and segments, with a chunk size. Computed once when the pipeline is built.

use std::fmt::Write as _;
use std::ops::Range;

use crate::schema::{Schema, Storage};
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
    /// Whether it holds a sequential stage (chunks must come in row order).
    pub ordered: bool,
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
}

/// Bytes of a chunk's touched columns the default chunk size aims for: well
/// inside this machine's L2 (1 MiB) with room for the stages' own data.
const CHUNK_BYTES: usize = 128 * 1024;

impl Plan {
    /// Orders the units' steps as the onion runs them and groups them.
    pub(crate) fn build(
        schema: &Schema,
        units: &[Box<dyn Unit>],
        chunk_rows: Option<usize>,
        parallel: bool,
    ) -> Plan {
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
            s.meta.kind == Kind::WholeBatch || (parallel && s.meta.uses.iter().any(|f| f.cold && f.write))
        };
        let mut groups: Vec<Group> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let ordered = step.meta.kind == Kind::Sequential;
            let fused = units[step.unit].fused();
            let extend = groups.last().is_some_and(|g| {
                let prev = &steps[g.steps.end - 1];
                g.unit == step.unit
                    && fused
                    && !barrier(prev)
                    && !barrier(step)
                    && (!parallel || g.ordered == ordered)
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
                });
            }
            let g = groups.len() - 1;
            let alone = barrier(step);
            match segments.last_mut() {
                Some(s) if !s.barrier && !alone => s.groups.end = g + 1,
                _ => segments.push(Segment { groups: g..g + 1, barrier: alone }),
            }
        }

        let chunk_rows = chunk_rows.unwrap_or_else(|| {
            let mut touched = vec![false; schema.len()];
            for s in &steps {
                for f in &s.meta.uses {
                    touched[f.index()] = true;
                }
            }
            let bytes: usize = 4 + schema
                .fields()
                .iter()
                .zip(&touched)
                .filter(|(_, t)| **t)
                .map(|(f, _)| match f.storage {
                    Storage::Hot { size } => size,
                    Storage::Cold => 0,
                })
                .sum::<usize>();
            let rows = (CHUNK_BYTES / bytes).clamp(1024, 16 * 1024);
            1 << rows.ilog2()
        });
        Plan { steps, groups, segments, chunk_rows, parallel }
    }

    /// The plan as text: segments, groups, stages, kinds, access, chunk rows.
    pub fn explain(&self, schema: &Schema) -> String {
        let mut out = String::new();
        let mode = if self.parallel { "parallel (chunks spread over threads)" } else { "one thread" };
        let _ =
            writeln!(out, "plan: {} stages, {} rows per chunk, {mode}", self.steps.len(), self.chunk_rows);
        for (si, seg) in self.segments.iter().enumerate() {
            let what = if seg.barrier { "barrier: runs alone over the whole batch" } else { "chunked" };
            let _ = writeln!(out, "segment {si} ({what})");
            for gi in seg.groups.clone() {
                let g = &self.groups[gi];
                let how = match (g.fused, g.ordered) {
                    (true, true) => "fused loop, chunks in row order",
                    (true, false) => "fused loop",
                    (false, true) => "own pass, chunks in row order",
                    (false, false) => "own pass",
                };
                let _ = writeln!(out, "  group {gi} [{how}]");
                for s in &self.steps[g.steps.clone()] {
                    let role = if s.after { "after " } else { "before" };
                    let access: Vec<String> = s
                        .meta
                        .uses
                        .iter()
                        .map(|f| {
                            let name = &schema.fields()[f.index()].name;
                            let verb = if f.write { "write" } else { "read" };
                            let cold = if f.cold { " (cold)" } else { "" };
                            format!("{verb} {name}{cold}")
                        })
                        .collect();
                    let rejects = if s.meta.rejects { ", may reject" } else { "" };
                    let _ = writeln!(
                        out,
                        "    {role} depth {:>2}  {:<12} {}{rejects}  [{}]",
                        s.depth,
                        s.meta.name,
                        s.meta.kind,
                        access.join(", ")
                    );
                }
            }
        }
        out
    }

    /// The plan as a Graphviz DOT digraph: a cluster per segment, a box per
    /// stage, fused groups outlined.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph plan {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
        for (si, seg) in self.segments.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_s{si} {{\n    label=\"segment {si}{}\";",
                if seg.barrier { " (barrier)" } else { "" }
            );
            for gi in seg.groups.clone() {
                let g = &self.groups[gi];
                let _ = writeln!(
                    out,
                    "    subgraph cluster_g{gi} {{\n      label=\"{}\"; style=dashed;",
                    if g.fused { "fused" } else { "own pass" }
                );
                for i in g.steps.clone() {
                    let s = &self.steps[i];
                    let style = if s.after { ", style=rounded" } else { "" };
                    let _ = writeln!(
                        out,
                        "      s{i} [label=\"{}\\n{} d{}\"{style}];",
                        s.meta.name, s.meta.kind, s.depth
                    );
                }
                out.push_str("    }\n");
            }
            out.push_str("  }\n");
        }
        for i in 1..self.steps.len() {
            let _ = writeln!(out, "  s{} -> s{i};", i - 1);
        }
        out.push_str("}\n");
        out
    }
}
