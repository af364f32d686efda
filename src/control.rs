//! Per-row control state: live, stopped at a depth with a status, or failed.
//!
//! Every row of a batch carries one [`RowState`] (four bytes): its response
//! status and where it stopped. The executor reads it to skip stopped rows;
//! stages change it through [`RowCtl`] (per-row stages) or
//! [`Rows`](crate::Rows) (chunk stages).

use bytemuck::{Pod, Zeroable};

use crate::report::SlotStats;

const FAILED: u16 = 0x8000;
pub(crate) const DEPTH: u16 = 0x7FFF;

/// The deepest middleware depth a pipeline may have.
pub const MAX_DEPTH: usize = DEPTH as usize - 1;

/// A row's control word: its status code and the depth it stopped at.
///
/// `stop == 0` means live; otherwise the low 15 bits hold `depth + 1` and the
/// top bit says the row failed (its error is in the batch's error table).
// `PartialEq` compares the word as one `u32`: the row loop checks whether a
// row's state changed on every row, and two 16-bit compares cost more.
#[derive(Clone, Copy, Default, Eq, Pod, Zeroable)]
#[repr(C, align(4))]
pub struct RowState {
    status: u16,
    stop: u16,
}

/// The `stop` half of a state read as one native `u32` (as
/// `bytemuck::cast` gives it): for tests over many states in 32-bit lanes.
#[inline(always)]
pub(crate) fn stop_of_word(word: u32) -> u32 {
    // `status` comes first in memory.
    if cfg!(target_endian = "little") { word >> 16 } else { word & 0xFFFF }
}

impl PartialEq for RowState {
    #[inline(always)]
    fn eq(&self, other: &RowState) -> bool {
        bytemuck::cast::<RowState, u32>(*self) == bytemuck::cast::<RowState, u32>(*other)
    }
}

impl std::fmt::Debug for RowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.outcome())
    }
}

/// A row's control state, spelled out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not stopped; `status` is whatever stages responded (0 = pending).
    Live {
        /// The response status.
        status: u16,
    },
    /// Rejected by the stage at `depth` with `status`.
    Rejected {
        /// The middleware depth whose stage rejected the row.
        depth: usize,
        /// The status it gave.
        status: u16,
    },
    /// Failed (panic or error) in the stage at `depth`.
    Failed {
        /// The middleware depth whose stage failed the row.
        depth: usize,
        /// The status at the time.
        status: u16,
    },
}

impl RowState {
    /// A live row with a pending status.
    pub const LIVE: RowState = RowState { status: 0, stop: 0 };

    /// The response status (0 while pending).
    #[inline(always)]
    pub fn status(self) -> u16 {
        self.status
    }

    /// Whether no stage stopped this row.
    #[inline(always)]
    pub fn is_live(self) -> bool {
        self.stop == 0
    }

    /// Whether a stage failed this row.
    #[inline(always)]
    pub fn is_failed(self) -> bool {
        self.stop & FAILED != 0
    }

    /// The depth the row stopped at, if it stopped.
    #[inline(always)]
    pub fn stop_depth(self) -> Option<usize> {
        (self.stop != 0).then(|| ((self.stop & DEPTH) - 1) as usize)
    }

    /// Whether the after-stage of the middleware at `depth` sees this row:
    /// live rows and rows stopped deeper than `depth`.
    #[inline(always)]
    pub fn reaches_after(self, depth: u16) -> bool {
        (self.stop & DEPTH).wrapping_sub(1) > depth
    }

    /// The state spelled out.
    pub fn outcome(self) -> Outcome {
        match self.stop_depth() {
            None => Outcome::Live { status: self.status },
            Some(depth) if self.is_failed() => Outcome::Failed { depth, status: self.status },
            Some(depth) => Outcome::Rejected { depth, status: self.status },
        }
    }

    /// Whether `self` and `other` stopped at the same place the same way
    /// (statuses aside).
    #[inline(always)]
    pub(crate) fn same_stop(self, other: RowState) -> bool {
        self.stop == other.stop
    }

    #[inline(always)]
    pub(crate) fn rejected(depth: u16, status: u16) -> RowState {
        // `& DEPTH` changes no valid depth, but lets the compiler prove the
        // word non-zero (stopped): a fused loop then jumps from a reject past
        // every later liveness test (7 % of gateway-8's static chain).
        RowState { status, stop: (depth & DEPTH) + 1 }
    }

    #[inline(always)]
    pub(crate) fn fail(&mut self, depth: u16) {
        self.stop = (depth + 1) | FAILED;
    }

    #[inline(always)]
    pub(crate) fn with_status(self, status: u16) -> RowState {
        RowState { status, stop: self.stop }
    }
}

/// What a per-row stage may do to its row: read and set the status, reject
/// (stop the row here), or fail it with an error.
///
/// A rejected or failed row skips every later before-stage and the handler;
/// the after-stages of the middleware around the stage still see it.
pub struct RowCtl {
    pub(crate) state: RowState,
    pub(crate) depth: u16,
    /// The running step's slot in its unit.
    pub(crate) slot: u16,
    pub(crate) row: usize,
    pub(crate) error: Option<String>,
    /// While profiling, the unit's per-slot counters (indexed by `slot`),
    /// else null. Only stopping a row touches them, so profiling adds
    /// nothing to the rows a stage passes.
    stops: *mut SlotStats,
    /// The walk's count of rows stopped while live, which tells the next
    /// group of the chunk how many rows are left without counting them.
    stopped: *mut usize,
}

impl RowCtl {
    /// # Safety
    /// `stops` is null, or points to counters for every slot of the unit
    /// that only this thread uses, and that no reference covers, while this
    /// `RowCtl` lives; `stopped` is valid for writes under the same terms.
    #[inline(always)]
    pub(crate) unsafe fn new(
        state: RowState,
        row: usize,
        stops: *mut SlotStats,
        stopped: *mut usize,
    ) -> RowCtl {
        RowCtl { state, depth: 0, slot: 0, row, error: None, stops, stopped }
    }

    /// Counts a change of the row's stop: a live row stopped, for the walk;
    /// every change, for the profile.
    #[inline(always)]
    fn note(&self, before: RowState) {
        if before.is_live() {
            // SAFETY: per `new`'s contract.
            unsafe { *self.stopped += 1 }
        }
        if !self.stops.is_null() {
            // SAFETY: per `new`'s contract; `slot` is the running step's
            // slot in the unit whose counters `stops` points to.
            unsafe { note_stop(self.stops.add(self.slot as usize), self.depth, before, self.state) }
        }
    }

    /// The row's index in its batch.
    #[inline(always)]
    pub fn row(&self) -> usize {
        self.row
    }

    /// The row's current status (0 while pending).
    #[inline(always)]
    pub fn status(&self) -> u16 {
        self.state.status
    }

    /// The row's full control state.
    #[inline(always)]
    pub fn state(&self) -> RowState {
        self.state
    }

    /// Sets the response status without stopping the row (a handler's 200).
    #[inline(always)]
    pub fn respond(&mut self, status: u16) {
        self.state = self.state.with_status(status);
    }

    /// Stops the row here with `status`.
    #[inline(always)]
    pub fn reject(&mut self, status: u16) {
        let before = self.state;
        self.state = RowState::rejected(self.depth, status);
        self.note(before);
    }

    /// Fails the row here; `message` is kept in the batch's error table.
    #[inline]
    pub fn fail(&mut self, message: impl Into<String>) {
        let before = self.state;
        self.state.fail(self.depth);
        self.note(before);
        self.error = Some(message.into());
    }
}

/// # Safety
/// `stops` is valid for writes and unaliased (see [`RowCtl::new`]).
#[inline(always)]
unsafe fn note_stop(stops: *mut SlotStats, depth: u16, before: RowState, after: RowState) {
    // SAFETY: guaranteed by the caller.
    unsafe { (*stops).record(depth, before, after) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_visibility_follows_the_onion() {
        let live = RowState::LIVE;
        assert!(live.reaches_after(0) && live.reaches_after(1000));
        let r = RowState::rejected(3, 401);
        assert!(r.reaches_after(0) && r.reaches_after(2));
        assert!(!r.reaches_after(3) && !r.reaches_after(4));
        let mut f = RowState::LIVE;
        f.fail(2);
        assert!(f.reaches_after(1) && !f.reaches_after(2));
        assert_eq!(f.outcome(), Outcome::Failed { depth: 2, status: 0 });
        assert_eq!(r.outcome(), Outcome::Rejected { depth: 3, status: 401 });
    }
}
