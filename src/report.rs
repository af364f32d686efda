//! What a run reports.

use std::time::Duration;

use crate::control::RowState;
use crate::stage::Kind;

/// The outcome of one [`Pipeline::run`](crate::Pipeline::run).
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

/// Counters of one step, kept per worker while profiling.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlotStats {
    pub seen: u64,
    pub rejected: u64,
    pub failed: u64,
}

impl SlotStats {
    /// Counts one row the step ran on, from its state before and after.
    #[inline(always)]
    pub(crate) fn count(&mut self, before: RowState, after: RowState) {
        self.seen += 1;
        if after.is_live() == before.is_live()
            && after.is_failed() == before.is_failed()
            && after.stop_depth() == before.stop_depth()
        {
            return;
        }
        if after.is_failed() {
            self.failed += 1;
        } else {
            self.rejected += 1;
        }
    }
}
