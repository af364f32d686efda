//! Units: what a pipeline registers and the plan dispatches to, once per
//! chunk per fused group.
//!
//! A unit covers one or more consecutive middleware layers. Its *slots* list
//! its steps in execution order: slot `k < n` is layer `k`'s before-stage,
//! slot `2n - 1 - k` is layer `k`'s after-stage. The plan runs a unit's
//! contiguous slot ranges over chunks; a static chain runs a whole range in
//! one loop body, a chunk stage is its own pass.

use std::any::Any;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bumpalo::Bump;

use crate::access::{Access, ColumnTable};
use crate::control::{DEPTH, RowState, stop_of_word};
use crate::error::StageError;
use crate::report::SlotStats;
use crate::stage::{ChunkStage, Rows, Selection, StageMeta, StatePolicy};

/// One chunk as a unit sees it.
pub struct ChunkRun<'r> {
    pub(crate) table: &'r ColumnTable<'r>,
    /// First row of the chunk (batch index).
    pub(crate) start: usize,
    /// Rows in the chunk.
    pub(crate) len: usize,
    /// The chunk is as fresh as this group needs: every row was live when
    /// the run began, and either no step has run on it since (the first
    /// group) or every step that has stops rows deeper than the group's
    /// after-stages, so each row is live or stopped where they still see it.
    /// A group with befores still tests each row for them.
    pub(crate) fresh: bool,
    /// Live rows of the chunk before this group, when the groups before it
    /// on this chunk kept count (they report how many they stopped); the
    /// unit leaves the count after it here. Only picks the walk: a group of
    /// before-stages told that most rows are live walks them all, testing
    /// each, without counting first.
    pub(crate) live: LiveRows,
    /// Depth of the unit's first layer.
    pub(crate) depth_base: u16,
    pub(crate) sel: &'r mut Vec<u32>,
    pub(crate) errors: &'r mut Vec<(usize, StageError)>,
    pub(crate) arena: &'r Bump,
    /// The unit's per-slot counters while profiling.
    pub(crate) stats: Option<&'r mut [SlotStats]>,
}

impl ChunkRun<'_> {
    pub(crate) fn state(&self, row: usize) -> RowState {
        assert!(row >= self.start && row < self.start + self.len);
        // SAFETY: the row is in this worker's chunk (checked above), which no
        // one else touches while the chunk runs.
        unsafe { *self.table.states.0.add(row) }
    }

    pub(crate) fn set_state(&mut self, row: usize, state: RowState) {
        assert!(row >= self.start && row < self.start + self.len);
        // SAFETY: as in `state`.
        unsafe { *self.table.states.0.add(row) = state }
    }

    /// The middleware depth of `slot` in a unit of `layers` layers.
    pub(crate) fn depth_of(&self, slot: usize, layers: usize) -> u16 {
        let level = if slot < layers { slot } else { 2 * layers - 1 - slot };
        self.depth_base + level as u16
    }

    /// The chunk's control words.
    fn states(&self) -> &[RowState] {
        // SAFETY: the chunk is this worker's; the slice is dropped before any
        // write through the table's pointer (callers hold it only while
        // selecting).
        unsafe { self.table.states_mut(self.start, self.len) }
    }
}

/// A chunk's live rows, when known. One word: an `Option<usize>` is two,
/// written half by half and then read whole by the next group, which stalls
/// store forwarding (twice per group: a third of a one-row run's time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LiveRows(usize);

impl LiveRows {
    pub(crate) const UNKNOWN: LiveRows = LiveRows(usize::MAX);

    pub(crate) fn known(rows: usize) -> LiveRows {
        LiveRows(rows.min(usize::MAX - 1))
    }

    pub(crate) fn get(self) -> Option<usize> {
        (self != LiveRows::UNKNOWN).then_some(self.0)
    }

    /// The count after `stopped` more rows stopped.
    pub(crate) fn less(self, stopped: usize) -> LiveRows {
        match self.get() {
            Some(live) => LiveRows(live.saturating_sub(stopped)),
            None => self,
        }
    }
}

/// The rows a step sees: live rows for a before-stage; for an after-stage at
/// `depth`, live rows and rows stopped deeper than `depth`.
#[derive(Clone, Copy)]
pub(crate) enum Visible {
    Live,
    After(u16),
}

impl Visible {
    /// What the steps `slots` of a unit with `layers` layers see together:
    /// the outermost after-stage in the range sees the most rows.
    pub(crate) fn of_slots(slots: &Range<usize>, layers: usize, base: u16) -> Visible {
        if slots.end > layers {
            let outermost = 2 * layers - slots.end;
            Visible::After(base + outermost as u16)
        } else {
            Visible::Live
        }
    }

    #[inline(always)]
    pub(crate) fn sees(self, s: RowState) -> bool {
        match self {
            Visible::Live => s.is_live(),
            Visible::After(d) => s.reaches_after(d),
        }
    }

    /// How many of `states` this sees.
    fn count(self, states: &[RowState]) -> usize {
        self.count_with_live(states).0
    }

    /// How many of `states` this sees, and how many are live, in one pass:
    /// a branch-free loop per case so the compiler vectorises it, summing in
    /// `u32` lanes (twice as many per vector as `usize`) over blocks too
    /// short to overflow them.
    fn count_with_live(self, states: &[RowState]) -> (usize, usize) {
        // On the words as `u32` (status low, stop high): the same tests as
        // `is_live` and `reaches_after`, in 32-bit lanes without the
        // shuffles that splitting each word into two `u16` cost.
        let block = |b: &[RowState]| -> (usize, usize) {
            let words: &[u32] = bytemuck::cast_slice(b);
            let live = |w: u32| (stop_of_word(w) == 0) as u32;
            match self {
                Visible::Live => {
                    let live = words.iter().map(|&w| live(w)).sum::<u32>() as usize;
                    (live, live)
                }
                Visible::After(d) => {
                    let d = u32::from(d);
                    let (seen, live) = words.iter().fold((0u32, 0u32), |(seen, n), &w| {
                        let stop = stop_of_word(w) & u32::from(DEPTH);
                        (seen + ((stop.wrapping_sub(1) & 0xFFFF) > d) as u32, n + live(w))
                    });
                    (seen as usize, live as usize)
                }
            }
        };
        states.chunks(1 << 16).map(block).fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// Writes `first + i` for every `states[i]` this sees into `sel`, in
    /// order. Branch-free: every index is stored and the end moves only past
    /// the visible ones, so rows stopped at random (a quota running out)
    /// cost no mispredicted branches.
    /// The buffer keeps its length from call to call (only what this
    /// returns is meaningful), so it is zeroed only when it grows, not for
    /// every chunk.
    fn compact<'s>(self, states: &[RowState], first: u32, sel: &'s mut Vec<u32>) -> &'s [u32] {
        if sel.len() < states.len() {
            sel.resize(states.len(), 0);
        }
        // One loop per case, the test a constant inside it (as in
        // `count_with_live`): matched per row, it cost twice the
        // instructions.
        let n = match self {
            Visible::Live => compact_where(states, first, sel, RowState::is_live),
            Visible::After(d) => compact_where(states, first, sel, |s| s.reaches_after(d)),
        };
        &sel[..n]
    }
}

/// Writes `first + i` for every `states[i]` that `sees` into `sel` (at
/// least as long as `states`), in order; returns how many.
#[inline(always)]
fn compact_where(states: &[RowState], first: u32, sel: &mut [u32], sees: impl Fn(RowState) -> bool) -> usize {
    let mut n = 0;
    for (i, s) in (first..).zip(states) {
        sel[n] = i;
        n += sees(*s) as usize;
    }
    n
}

/// Which rows of a chunk a fused group walks.
#[derive(Clone)]
pub(crate) enum Walk<'s> {
    /// Every row of the range, each of them live when the walk starts: an
    /// after-stage with no before-stage outside it then sees every row, so
    /// its per-row check is compiled out.
    Fresh(Range<usize>),
    /// Every row of the range (each step still checks its row's state).
    Dense(Range<usize>),
    /// Only these batch rows, ascending.
    Sparse(&'s [u32]),
}

/// Below this share of visible rows a fused group walks a selection vector
/// instead of every row (arrow-rs switches at the same point).
const DENSE_SHARE: (usize, usize) = (4, 5);

/// Picks the walk for `slots` of a fused unit; `None` when no row is
/// visible. Leaves the chunk's live rows in `run.live` when it counts them.
#[inline]
pub(crate) fn select<'s>(
    run: &mut ChunkRun<'_>,
    slots: &Range<usize>,
    layers: usize,
    sel: &'s mut Vec<u32>,
) -> Option<Walk<'s>> {
    // Inline: a fresh chunk (every one-row run's) needs no look at its rows.
    if run.fresh {
        return Some(Walk::Fresh(run.start..run.start + run.len));
    }
    select_rows(run, slots, layers, sel)
}

/// [`select`] for a chunk that is not fresh.
fn select_rows<'s>(
    run: &mut ChunkRun<'_>,
    slots: &Range<usize>,
    layers: usize,
    sel: &'s mut Vec<u32>,
) -> Option<Walk<'s>> {
    let range = run.start..run.start + run.len;
    let dense = |count: usize| count * DENSE_SHARE.1 >= run.len * DENSE_SHARE.0;
    let visible = Visible::of_slots(slots, layers, run.depth_base);
    if let (Visible::Live, Some(live)) = (visible, run.live.get()) {
        // Before-stages see the live rows: most are, so walk every row (a
        // dense walk tests each) and skip the count. The count is only
        // trusted for this choice; a wrong one costs time, never a row.
        if live > 0 && dense(live) {
            return Some(Walk::Dense(range));
        }
    }
    let states = run.states();
    let (count, live) = visible.count_with_live(states);
    let walk = if live == run.len && live > 0 {
        Some(Walk::Fresh(range))
    } else if count == 0 {
        None
    } else if dense(count) {
        Some(Walk::Dense(range))
    } else {
        Some(Walk::Sparse(visible.compact(states, run.start as u32, sel)))
    };
    run.live = LiveRows::known(live);
    walk
}

/// The exact rows one chunk stage sees, chunk-relative.
fn select_exact<'s>(states: &[RowState], visible: Visible, sel: &'s mut Vec<u32>) -> Selection<'s> {
    let count = visible.count(states);
    if count == states.len() {
        Selection::Dense(count)
    } else {
        Selection::Sparse(visible.compact(states, 0, sel))
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// The name of the stage at `slot`.
pub(crate) fn stage_name(names: &[Option<Arc<str>>], slot: usize) -> Arc<str> {
    names.get(slot).and_then(Clone::clone).unwrap_or_else(|| "?".into())
}

/// `local` as the type its unit made it.
///
/// # Safety
/// `local` is a `T`: it was made by the `new_local` of the unit (or chunk
/// step) asking.
#[inline(always)]
pub(crate) unsafe fn own_local<T: Any>(local: &mut dyn Any) -> &mut T {
    // Checked in debug builds only: the check compares `TypeId`s read back
    // whole right after they were stored in halves, a store-forwarding stall
    // per group per chunk (2 ns each, 16 of a one-row run through eight
    // boxed stages).
    debug_assert!(local.is::<T>());
    // SAFETY: the caller guarantees `local` is a `T`.
    unsafe { &mut *(local as *mut dyn Any).cast::<T>() }
}

/// A registered unit of one or more layers.
pub trait Unit: Send + Sync {
    /// Number of layers (middleware depths) the unit covers.
    fn layers(&self) -> usize;
    /// Before- and after-stage of each layer, outermost first.
    fn metas(&self) -> Vec<[Option<StageMeta>; 2]>;
    /// Whether consecutive slots run in one loop body.
    fn fused(&self) -> bool;
    /// Fresh per-worker scratch (reduction partials).
    fn new_local(&self) -> Box<dyn Any + Send>;
    /// Runs `slots` on one chunk.
    ///
    /// # Safety
    /// `local` was made by this unit's [`new_local`](Unit::new_local).
    unsafe fn run(
        &self,
        slots: Range<usize>,
        local: &mut dyn Any,
        run: &mut ChunkRun<'_>,
        names: &[Option<Arc<str>>],
    );
    /// Checks settings that access validation does not cover (at build).
    fn check(&self, _schema: &crate::schema::Schema) -> crate::error::Result<()> {
        Ok(())
    }
    /// The async stage this unit holds, if it is one (see `crate::fetch`).
    fn as_async(&self) -> Option<&dyn crate::fetch::AsyncStep> {
        None
    }
}

/// A chunk stage behind a vtable, one half of a [`ChunkLayer`].
trait ChunkStep: Send + Sync {
    fn meta(&self) -> StageMeta;
    fn new_local(&self) -> Box<dyn Any + Send>;
    /// # Safety
    /// `local` was made by this step's `new_local`.
    unsafe fn run(
        &self,
        local: &mut dyn Any,
        slot: usize,
        visible: Visible,
        depth: u16,
        run: &mut ChunkRun<'_>,
        name: &Arc<str>,
    );
}

impl<S: ChunkStage> ChunkStep for S {
    fn meta(&self) -> StageMeta {
        ChunkStage::meta(self)
    }

    fn new_local(&self) -> Box<dyn Any + Send> {
        Box::new(self.policy().local())
    }

    unsafe fn run(
        &self,
        local: &mut dyn Any,
        slot: usize,
        visible: Visible,
        depth: u16,
        run: &mut ChunkRun<'_>,
        name: &Arc<str>,
    ) {
        // SAFETY: forwarded from the caller's contract.
        let local = unsafe { own_local::<<S::Policy as StatePolicy>::Local>(local) };
        // SAFETY: the chunk `start .. start + len` belongs to this worker for
        // the whole call; the state slice and the column slices are distinct
        // memory, and validation keeps the stage's written fields disjoint
        // from its other fields.
        let states = unsafe { run.table.states_mut(run.start, run.len) };
        let mut sel = std::mem::take(run.sel);
        let selection =
            if run.fresh { Selection::Dense(states.len()) } else { select_exact(states, visible, &mut sel) };
        if matches!(selection, Selection::Sparse(s) if s.is_empty()) {
            *run.sel = sel;
            return;
        }
        let errors_before = run.errors.len();
        let mut stops = SlotStats::default();
        let (start, len, table, arena) = (run.start, run.len, run.table, run.arena);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let frame = crate::access::Frame::of(table);
            let ptrs = self.access().resolve(table, &frame);
            // SAFETY: see above; `frame` is alive while the slices are made.
            let cols = unsafe { S::Access::slices(ptrs, start, len) };
            let mut guard = self.policy().enter(local);
            let mut rows = Rows {
                states: &mut *states,
                selection,
                depth,
                first_row: start,
                stage: name,
                errors: &mut *run.errors,
                arena,
                stops: &mut stops,
            };
            self.call(S::Policy::state(&mut guard), cols, &mut rows);
        }));
        if result.is_err() {
            // Every row the stage was given fails: its own stops are void.
            let n = match selection {
                Selection::Dense(n) => n,
                Selection::Sparse(s) => s.len(),
            };
            stops = SlotStats { rejected: 0, failed: n as u64 };
        }
        if let Some(stats) = run.stats.as_deref_mut() {
            stats[slot].add(stops);
        }
        if let Err(payload) = result {
            // Which rows the stage finished is unknown: every row it was
            // given fails, and errors it reported for them are superseded.
            run.errors.truncate(errors_before);
            let message = panic_message(&*payload);
            let mut fail = |i: usize| {
                states[i].fail(depth);
                let error = StageError { stage: name.clone(), message: message.clone(), panicked: true };
                run.errors.push((start + i, error));
            };
            match selection {
                Selection::Dense(n) => (0..n).for_each(&mut fail),
                Selection::Sparse(s) => s.iter().for_each(|&i| fail(i as usize)),
            }
        }
        *run.sel = sel;
    }
}

/// One layer of chunk stages: each half is its own pass over the chunk.
pub(crate) struct ChunkLayer {
    before: Option<Box<dyn ChunkStep>>,
    after: Option<Box<dyn ChunkStep>>,
}

impl ChunkLayer {
    pub(crate) fn new<B: ChunkStage, A: ChunkStage>(before: Option<B>, after: Option<A>) -> Self {
        ChunkLayer {
            before: before.map(|b| Box::new(b) as Box<dyn ChunkStep>),
            after: after.map(|a| Box::new(a) as Box<dyn ChunkStep>),
        }
    }

    fn halves(&self) -> [Option<&dyn ChunkStep>; 2] {
        [self.before.as_deref(), self.after.as_deref()]
    }
}

impl Unit for ChunkLayer {
    fn layers(&self) -> usize {
        1
    }

    fn metas(&self) -> Vec<[Option<StageMeta>; 2]> {
        vec![self.halves().map(|h| h.map(ChunkStep::meta))]
    }

    fn fused(&self) -> bool {
        false
    }

    fn new_local(&self) -> Box<dyn Any + Send> {
        Box::new(self.halves().map(|h| h.map(ChunkStep::new_local)))
    }

    unsafe fn run(
        &self,
        slots: Range<usize>,
        local: &mut dyn Any,
        run: &mut ChunkRun<'_>,
        names: &[Option<Arc<str>>],
    ) {
        // SAFETY: forwarded from the caller's contract.
        let locals = unsafe { own_local::<[Option<Box<dyn Any + Send>>; 2]>(local) };
        let depth = run.depth_base;
        for slot in slots {
            let (Some(step), Some(local)) = (self.halves()[slot], locals[slot].as_deref_mut()) else {
                continue;
            };
            let visible = if slot == 0 { Visible::Live } else { Visible::After(depth) };
            // SAFETY: `new_local` made `locals[slot]` with this half's own
            // `new_local`.
            unsafe { step.run(local, slot, visible, depth, run, &stage_name(names, slot)) };
            // The step may have stopped rows, uncounted.
            run.fresh = false;
            run.live = LiveRows::UNKNOWN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::RowState;

    /// Row states of every kind (live, rejected, failed) at depths 0–5, in a
    /// scrambled order.
    fn states(n: usize) -> Vec<RowState> {
        (0..n as u64)
            .map(|i| {
                let h = crate::gateway8::mix(i);
                let depth = (h >> 8) as u16 % 6;
                match h % 4 {
                    0 | 1 => RowState::LIVE,
                    2 => RowState::rejected(depth, 400),
                    _ => {
                        let mut s = RowState::LIVE;
                        s.fail(depth);
                        s
                    }
                }
            })
            .collect()
    }

    #[test]
    fn count_and_compact_agree_with_a_plain_filter() {
        let mut sel = Vec::new();
        // Shrinking last: the buffer then holds a longer selection's rows
        // past the end of the new one.
        for n in [0, 1, 7, 64, 1000, 70_000, 5] {
            let states = states(n);
            for visible in [Visible::Live, Visible::After(0), Visible::After(2), Visible::After(5)] {
                let expected: Vec<u32> =
                    (0..n as u32).filter(|&i| visible.sees(states[i as usize])).map(|i| i + 10).collect();
                assert_eq!(visible.count(&states), expected.len());
                assert_eq!(visible.compact(&states, 10, &mut sel), expected);
            }
        }
    }
}
