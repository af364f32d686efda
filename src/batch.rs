//! The batch: rows of one schema as columns, plus their control state.

use bumpalo::Bump;
use bytemuck::Pod;

use crate::access::{FRAME_FIELDS, SendPtr};
use crate::column::{ColdColumn, ColdStore, HotColumn, SharedColumn};
use crate::control::{Outcome, RowState};
use crate::error::{Error, Result, StageError};
use crate::schema::{Field, Schema, Storage};

/// Rows of one schema: a 64-byte-aligned column per hot field, a sparse side
/// table per cold field, a bump arena for scratch, and a control word per row.
///
/// [`clear`](Batch::clear) keeps every buffer, so a recycled batch refilled to
/// the same size allocates nothing. Rows are never dropped by processing:
/// rejected and failed rows stay in place, marked.
///
/// A batch also keeps its columns' addresses for the executor from run to
/// run. For one request at a time, reuse one batch: rewrite its values
/// ([`column_mut`](Batch::column_mut), [`row_mut`](Batch::row_mut)) and
/// [`reset_control`](Batch::reset_control), or `clear` and refill it within
/// its capacity; the next run then skips looking the columns up.
///
/// ```
/// use mware::prelude::*;
///
/// let mut s = SchemaBuilder::new();
/// let id = s.hot::<u64>("id");
/// let note = s.cold::<String>("note");
/// let schema = s.build()?;
///
/// let mut batch = Batch::new(&schema);
/// batch.resize(3);
/// batch.column_mut(id)?.copy_from_slice(&[10, 20, 30]);
/// batch.push_row().set(id, 40)?.set_cold(note, "hi".to_string())?;
/// assert_eq!(batch.column(id)?, &[10, 20, 30, 40]);
/// assert_eq!(batch.cold(note)?.get(3).map(String::as_str), Some("hi"));
/// # Ok::<(), mware::Error>(())
/// ```
pub struct Batch {
    schema: Schema,
    len: usize,
    hot: Vec<HotColumn>,
    cold: Vec<Box<dyn ColdStore>>,
    states: Vec<RowState>,
    /// No run touched `states` since they were last all set live: lets a
    /// profiled run skip counting rows stopped before it started.
    all_live: bool,
    errors: ColdColumn<StageError>,
    arena: Bump,
    ptrs: ColumnPtrs,
}

/// The hot columns' base pointers by field position, as a run's column
/// table holds them (null for cold fields; at least [`FRAME_FIELDS`]
/// entries, so a walk copies its frame with a fixed-size copy). Kept with
/// the batch between runs: running the same batch again, one request after
/// another, does not look them up again (a fifth of a one-row run).
/// Whatever may move a column's values marks them stale.
#[derive(Default)]
struct ColumnPtrs {
    by_position: Vec<SendPtr<u8>>,
    fresh: bool,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("len", &self.len).field("errors", &self.errors.len()).finish()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new(schema: &Schema) -> Batch {
        let mut hot = Vec::with_capacity(schema.hot_count());
        let mut cold = Vec::with_capacity(schema.cold_count());
        for f in schema.fields() {
            match f.storage {
                Storage::Hot { size } => hot.push(HotColumn::new(size, f.slot)),
                Storage::Cold => cold.push((f.new_cold.expect("cold fields carry a constructor"))()),
            }
        }
        Batch {
            schema: schema.clone(),
            len: 0,
            hot,
            cold,
            states: Vec::new(),
            all_live: true,
            errors: ColdColumn::default(),
            arena: Bump::new(),
            ptrs: ColumnPtrs::default(),
        }
    }

    /// An empty batch with room for `rows` rows in every hot column.
    pub fn with_capacity(schema: &Schema, rows: usize) -> Batch {
        let mut b = Batch::new(schema);
        b.reserve(rows);
        b
    }

    /// Makes room for `rows` rows in total without changing the length.
    pub fn reserve(&mut self, rows: usize) {
        for c in &mut self.hot {
            c.reserve(rows);
        }
        self.ptrs.fresh = false;
        self.states.reserve(rows.saturating_sub(self.states.len()));
    }

    /// The batch's schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the number of rows. New rows are zeroed, live and without cold
    /// values; removed rows lose their cold values and errors.
    pub fn resize(&mut self, rows: usize) {
        for c in &mut self.hot {
            if c.resize(self.len, rows) {
                self.ptrs.fresh = false;
            }
        }
        if rows < self.len {
            for c in &mut self.cold {
                c.truncate_rows(rows);
            }
            self.errors.truncate_rows(rows);
        }
        self.states.resize(rows, RowState::LIVE);
        self.len = rows;
    }

    /// Removes every row and resets the arena, keeping all buffers.
    pub fn clear(&mut self) {
        self.len = 0;
        for c in &mut self.hot {
            if c.unshare() {
                self.ptrs.fresh = false;
            }
        }
        self.states.clear();
        self.all_live = true;
        for c in &mut self.cold {
            c.clear();
        }
        self.errors.clear();
        self.arena.reset();
    }

    /// Replaces the batch's rows with `rows` rows whose hot columns listed in
    /// `shared` (by schema position) are read in place, without copying; the
    /// other columns are zeroed. A shared column is copied only if a stage
    /// (or [`column_mut`](Batch::column_mut)) writes it.
    pub fn import(
        &mut self,
        rows: usize,
        shared: impl IntoIterator<Item = (usize, SharedColumn)>,
    ) -> Result<()> {
        self.clear();
        self.ptrs.fresh = false;
        let mut staged: Vec<(usize, SharedColumn)> = Vec::new();
        for (index, column) in shared {
            let info = self
                .schema
                .fields()
                .get(index)
                .ok_or_else(|| Error::Config(format!("field #{index} is not in the batch's schema")))?;
            let Storage::Hot { size } = info.storage else {
                return Err(Error::StorageMismatch {
                    stage: "import".into(),
                    field: info.name.clone(),
                    expected: "hot",
                });
            };
            if column.type_id != info.type_id {
                return Err(Error::Config(format!(
                    "column `{}` holds {}, the schema says {}",
                    info.name, column.type_name, info.type_name
                )));
            }
            if column.bytes().len() != rows * size {
                return Err(Error::LengthMismatch {
                    field: info.name.clone(),
                    got: column.bytes().len() / size.max(1),
                    expected: rows,
                });
            }
            staged.push((info.slot, column));
        }
        for (slot, column) in staged {
            self.hot[slot].share(column);
        }
        for c in self.hot.iter_mut().filter(|c| !c.is_shared()) {
            c.resize(0, rows);
        }
        self.states.resize(rows, RowState::LIVE);
        self.len = rows;
        Ok(())
    }

    /// Whether the hot field at schema position `index` is read in place
    /// from shared memory (see [`import`](Batch::import)).
    pub fn is_shared(&self, index: usize) -> bool {
        let info = &self.schema.fields()[index];
        matches!(info.storage, Storage::Hot { .. }) && self.hot[info.slot].is_shared()
    }

    /// Marks every row live with a pending status again and drops the
    /// errors, keeping the field values (to run the same input again).
    pub fn reset_control(&mut self) {
        self.states.fill(RowState::LIVE);
        self.all_live = true;
        self.errors.clear();
    }

    /// The values of a hot field.
    pub fn column<T: Pod>(&self, field: Field<T>) -> Result<&[T]> {
        let slot = self.schema.hot_slot(field.untyped(), "batch")?;
        Ok(self.hot[slot].typed(self.len))
    }

    /// The values of a hot field, mutable.
    pub fn column_mut<T: Pod>(&mut self, field: Field<T>) -> Result<&mut [T]> {
        let slot = self.schema.hot_slot(field.untyped(), "batch")?;
        if self.hot[slot].make_owned(self.len) {
            self.ptrs.fresh = false;
        }
        Ok(self.hot[slot].typed_mut(self.len))
    }

    /// The raw bytes of the hot field at schema position `index` (for
    /// exporters that work on untyped columns).
    pub fn column_bytes(&self, index: usize) -> Option<&[u8]> {
        let info = self.schema.fields().get(index)?;
        match info.storage {
            Storage::Hot { .. } => Some(self.hot[info.slot].bytes(self.len)),
            Storage::Cold => None,
        }
    }

    /// The side table of a cold field.
    pub fn cold<T: Send + Sync + 'static>(&self, field: Field<T>) -> Result<&ColdColumn<T>> {
        let slot = self.schema.cold_slot(field.untyped(), "batch")?;
        Ok(self.cold[slot].as_any().downcast_ref().expect("schema checked the type"))
    }

    /// The side table of a cold field, mutable. Rows past [`len`](Batch::len)
    /// are dropped by the next `resize` or `clear`.
    pub fn cold_mut<T: Send + Sync + 'static>(&mut self, field: Field<T>) -> Result<&mut ColdColumn<T>> {
        let slot = self.schema.cold_slot(field.untyped(), "batch")?;
        Ok(self.cold[slot].as_any_mut().downcast_mut().expect("schema checked the type"))
    }

    /// Appends one zeroed, live row and returns a writer for it.
    pub fn push_row(&mut self) -> RowWriter<'_> {
        let row = self.len;
        self.resize(row + 1);
        RowWriter { batch: self, row }
    }

    /// A writer for an existing row.
    pub fn row_mut(&mut self, row: usize) -> Result<RowWriter<'_>> {
        if row >= self.len {
            return Err(Error::RowOutOfBounds { row, len: self.len });
        }
        Ok(RowWriter { batch: self, row })
    }

    /// Appends one row per item, filled by `fill`.
    ///
    /// ```
    /// # use mware::prelude::*;
    /// # let mut s = SchemaBuilder::new();
    /// # let id = s.hot::<u64>("id");
    /// # let schema = s.build()?;
    /// let mut batch = Batch::new(&schema);
    /// batch.extend_rows(1..=3u64, |row, v| row.set(id, v * 10).map(|_| ()))?;
    /// assert_eq!(batch.column(id)?, &[10, 20, 30]);
    /// # Ok::<(), mware::Error>(())
    /// ```
    pub fn extend_rows<I: IntoIterator>(
        &mut self,
        items: I,
        mut fill: impl FnMut(&mut RowWriter<'_>, I::Item) -> Result<()>,
    ) -> Result<()> {
        let items = items.into_iter();
        self.reserve(self.len + items.size_hint().0);
        for item in items {
            fill(&mut self.push_row(), item)?;
        }
        Ok(())
    }

    /// Every row's control word.
    pub fn states(&self) -> &[RowState] {
        &self.states
    }

    /// One row's control state, spelled out.
    pub fn outcome(&self, row: usize) -> Option<Outcome> {
        self.states.get(row).map(|s| s.outcome())
    }

    /// One row's response status.
    pub fn status(&self, row: usize) -> Option<u16> {
        self.states.get(row).map(|s| s.status())
    }

    /// Why a row failed, if it did.
    pub fn error(&self, row: usize) -> Option<&StageError> {
        self.errors.get(row)
    }

    /// Every failed row with its error, in row order.
    pub fn errors(&self) -> impl Iterator<Item = (usize, &StageError)> + '_ {
        self.errors.iter()
    }

    /// Number of rows no stage stopped.
    pub fn live_rows(&self) -> usize {
        self.states.iter().filter(|s| s.is_live()).count()
    }

    /// The per-batch bump arena for scratch and variable-length data; reset
    /// by [`clear`](Batch::clear).
    pub fn arena(&self) -> &Bump {
        &self.arena
    }

    /// Bytes held by the batch's buffers (capacity, not length).
    pub fn allocated_bytes(&self) -> usize {
        self.hot.iter().map(HotColumn::allocated_bytes).sum::<usize>()
            + self.states.capacity() * std::mem::size_of::<RowState>()
            + self.arena.allocated_bytes()
    }

    /// Makes the listed hot slots owned (writable) before a run.
    pub(crate) fn own_slots(&mut self, slots: &[usize]) {
        for &slot in slots {
            if self.hot[slot].make_owned(self.len) {
                self.ptrs.fresh = false;
            }
        }
    }

    /// Looks up the hot columns' base pointers by field position (see
    /// `ColumnPtrs`).
    #[cold]
    fn point_columns(&mut self) {
        let fields = self.schema.fields();
        let ptrs = &mut self.ptrs.by_position;
        ptrs.clear();
        ptrs.resize(fields.len().max(FRAME_FIELDS), SendPtr(std::ptr::null_mut()));
        for (ptr, f) in ptrs.iter_mut().zip(fields) {
            if let Storage::Hot { .. } = f.storage {
                *ptr = SendPtr(self.hot[f.slot].base_ptr());
            }
        }
        self.ptrs.fresh = true;
    }

    /// The batch's parts for a run, and whether every row was live before it.
    // Inline: returned through memory, the parts were stored field by field
    // and read back whole, which stalls store forwarding.
    #[inline]
    pub(crate) fn parts(&mut self) -> (BatchParts<'_>, bool) {
        let all_live = std::mem::replace(&mut self.all_live, false);
        if !self.ptrs.fresh {
            self.point_columns();
        }
        // Tests run unoptimised: there, every run checks that nothing moved
        // a column without marking the pointers stale.
        #[cfg(debug_assertions)]
        for (ptr, f) in self.ptrs.by_position.iter().zip(self.schema.fields()) {
            if let Storage::Hot { .. } = f.storage {
                assert_eq!(
                    ptr.0,
                    self.hot[f.slot].base_ptr(),
                    "column `{}` moved, its pointer was kept",
                    f.name
                );
            }
        }
        let parts = BatchParts {
            schema: &self.schema,
            hot: &self.ptrs.by_position,
            cold: &mut self.cold,
            states: &mut self.states,
            errors: &mut self.errors,
            arena: &mut self.arena,
        };
        (parts, all_live)
    }
}

/// The batch split into its parts, for the executor.
pub(crate) struct BatchParts<'b> {
    pub schema: &'b Schema,
    /// The hot columns' base pointers by field position.
    pub hot: &'b [SendPtr<u8>],
    pub cold: &'b mut [Box<dyn ColdStore>],
    pub states: &'b mut [RowState],
    pub errors: &'b mut ColdColumn<StageError>,
    /// `&mut` (used as `&`) so a run holding the parts is `Send`: a
    /// `&Bump` is not (`Bump` is not `Sync`), and async runs cross awaits.
    pub arena: &'b mut Bump,
}

/// Writes several fields of one row: the batch form of `ctx.update({...})`.
pub struct RowWriter<'b> {
    batch: &'b mut Batch,
    row: usize,
}

impl RowWriter<'_> {
    /// The row's index.
    pub fn row(&self) -> usize {
        self.row
    }

    /// Sets a hot field.
    pub fn set<T: Pod>(&mut self, field: Field<T>, value: T) -> Result<&mut Self> {
        let row = self.row;
        self.batch.column_mut(field)?[row] = value;
        Ok(self)
    }

    /// Sets a cold field.
    pub fn set_cold<T: Send + Sync + 'static>(&mut self, field: Field<T>, value: T) -> Result<&mut Self> {
        let row = self.row;
        self.batch.cold_mut(field)?.insert(row, value);
        Ok(self)
    }
}
