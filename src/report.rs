//! What a run reports.

use std::time::Duration;

/// The outcome of one [`Pipeline::run`](crate::Pipeline::run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Rows in the batch.
    pub rows: usize,
    /// Chunks processed per segment, summed.
    pub chunks: usize,
    /// Worker threads used (1 = the calling thread only).
    pub threads: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
}
