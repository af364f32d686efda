//! What a run reports.

use std::time::Duration;

/// The outcome of one [`Pipeline::run`](crate::Pipeline::run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Rows in the batch.
    pub rows: usize,
    /// Rows no stage stopped.
    pub live: usize,
    /// Rows rejected by a stage.
    pub rejected: usize,
    /// Rows failed by a stage (panic or error).
    pub failed: usize,
    /// Chunks processed per segment, summed.
    pub chunks: usize,
    /// Worker threads used (1 = the calling thread only).
    pub threads: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
}
