//! Side by side: a group and the lone stage after it that asked to
//! ([`side_by_side`](crate::stage::RowFn::side_by_side)) run on one chunk at
//! once, on two threads, with the result of running them one after the
//! other.
//!
//! The later stage must not see the rows the earlier group stops, but it
//! starts before they are known. So it runs on its own copy of the chunk's
//! control words (it reads and stops rows there, not in the batch), with the
//! values of the fields it writes saved first, and its errors kept apart.
//! Once both are done, for each row the earlier group left live the batch
//! takes the later stage's outcome and errors; for every other row the
//! saved values come back and the later stage's outcome and errors are
//! dropped. The plan pairs only stages that share no field where either
//! writes, so the two walks touch disjoint memory.
//!
//! One thing access declarations do not cover: a stage may set a row's
//! status without stopping it (`RowCtl::respond`), and a later stage may
//! read it. When the earlier group changed a row it left live, the later
//! stage may have read a status it should not have: every saved value comes
//! back, its outcomes and errors are dropped, and it runs again, after the
//! group, as it would have without the pairing.

use bumpalo::Bump;

use crate::access::{ColumnTable, SendPtr};
use crate::control::RowState;
use crate::error::StageError;

/// The later stage's side of a pair, kept by a worker between runs so
/// steady state allocates nothing.
#[derive(Default)]
pub(crate) struct Beside {
    /// The later stage's control words for the chunk, by batch row (rows
    /// before the chunk are unused).
    states: Vec<RowState>,
    /// The chunk's control words before either side ran.
    before: Vec<RowState>,
    /// The chunk's values of the fields the later stage writes, before it
    /// ran: field after field, `len × size` bytes each.
    saved: Vec<u8>,
    sel: Vec<u32>,
    errors: Vec<(usize, StageError)>,
    pub(crate) arena: Bump,
}

/// What the later stage runs on: the batch's columns with its own control
/// words, and its own scratch.
pub(crate) struct Side<'s> {
    pub(crate) table: ColumnTable<'s>,
    pub(crate) sel: &'s mut Vec<u32>,
    pub(crate) errors: &'s mut Vec<(usize, StageError)>,
    pub(crate) arena: &'s mut Bump,
}

impl Beside {
    /// Readies the later stage's side for rows `start .. start + len`:
    /// copies their control words and saves the values of `written`
    /// (field position, bytes per value) there.
    ///
    /// # Safety
    /// `table` is a running batch's, the rows are in it, `written` are hot
    /// fields of its schema with their sizes, and nothing else touches
    /// those rows' control words or written fields during the call.
    pub(crate) unsafe fn begin<'s>(
        &'s mut self,
        table: &ColumnTable<'s>,
        written: impl Iterator<Item = (usize, usize)>,
        start: usize,
        len: usize,
    ) -> Side<'s> {
        // SAFETY: the rows are the batch's and untouched by others (the
        // caller's contract); the slice is dropped before the call returns.
        let states = unsafe { table.states_mut(start, len) };
        self.states.resize(start + len, RowState::LIVE);
        self.states[start..].copy_from_slice(states);
        self.before.clear();
        self.before.extend_from_slice(states);
        self.saved.clear();
        for (field, size) in written {
            // SAFETY: a hot column holds `size`-byte values for every row of
            // the batch, so the chunk's bytes are in it; only read here.
            let values = unsafe { column_bytes(table.hot[field], start, len, size) };
            self.saved.extend_from_slice(values);
        }
        Side {
            table: ColumnTable {
                schema: table.schema,
                hot: table.hot,
                cold: table.cold,
                states: SendPtr(self.states.as_mut_ptr()),
                len: start + len,
            },
            sel: &mut self.sel,
            errors: &mut self.errors,
            arena: &mut self.arena,
        }
    }

    /// Settles rows `start .. start + len` once both sides are done: rows
    /// the earlier group left live take the later stage's outcome and
    /// errors (into `errors`); every other row gets `written` back as
    /// [`begin`](Beside::begin) saved it. Returns `false`, with every row's
    /// `written` back and nothing taken, when the earlier group changed a
    /// row it left live: the later stage must then run again.
    ///
    /// # Safety
    /// As for `begin`, with the same `table`, rows and `written`, after the
    /// later stage's run on [`Side`] has ended.
    pub(crate) unsafe fn settle(
        &mut self,
        table: &ColumnTable<'_>,
        written: impl Iterator<Item = (usize, usize)>,
        (start, len): (usize, usize),
        errors: &mut Vec<(usize, StageError)>,
    ) -> bool {
        // SAFETY: as in `begin`.
        let states = unsafe { table.states_mut(start, len) };
        let responded = states.iter().zip(&self.before).any(|(now, then)| now.is_live() && now != then);
        let restore = |s: &RowState| responded || !s.is_live();
        let mut saved = self.saved.as_slice();
        for (field, size) in written {
            let (before, rest) = saved.split_at(len * size);
            saved = rest;
            // SAFETY: as in `begin`; the later stage's run has ended, so
            // this is the only reference to these bytes.
            let values = unsafe { column_bytes(table.hot[field], start, len, size) };
            for (i, _) in states.iter().enumerate().filter(|(_, s)| restore(s)) {
                values[i * size..(i + 1) * size].copy_from_slice(&before[i * size..(i + 1) * size]);
            }
        }
        if responded {
            self.errors.clear();
            return false;
        }
        errors.extend(self.errors.drain(..).filter(|(row, _)| states[row - start].is_live()));
        for (state, later) in states.iter_mut().zip(&self.states[start..]) {
            if state.is_live() {
                *state = *later;
            }
        }
        true
    }
}

/// The bytes of rows `start .. start + len` of a hot column of `size`-byte
/// values.
///
/// # Safety
/// `column` is the base of a hot column holding at least `start + len`
/// values, and no other reference to those bytes lives while the slice
/// does.
unsafe fn column_bytes<'a>(column: SendPtr<u8>, start: usize, len: usize, size: usize) -> &'a mut [u8] {
    // SAFETY: the caller's contract; `u8` has no alignment or validity
    // requirement, and every hot field is `Pod`, so its bytes may be read
    // and written as bytes.
    unsafe { std::slice::from_raw_parts_mut(column.0.add(start * size), len * size) }
}
