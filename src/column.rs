//! Column storage: aligned hot columns and sparse cold side tables.

use std::any::{Any, TypeId};
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

/// The alignment every hot column starts at (one cache line).
pub const COLUMN_ALIGN: usize = 64;

/// One cache line of bytes; a hot column is a vector of these, which is what
/// gives it its 64-byte alignment without any unsafe allocation code.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; COLUMN_ALIGN]);

/// Values owned elsewhere (an Arrow buffer, a memory-mapped file) that a
/// batch reads in place as one hot column.
///
/// ```
/// use std::sync::Arc;
/// use mware::prelude::*;
/// use mware::SharedColumn;
///
/// let mut s = SchemaBuilder::new();
/// let id = s.hot::<u64>("id");
/// let schema = s.build()?;
/// let values: Arc<Vec<u64>> = Arc::new(vec![1, 2, 3]);
/// let mut batch = Batch::new(&schema);
/// batch.import(3, [(id.index(), SharedColumn::new(values.clone()))])?;
/// assert_eq!(batch.column(id)?.as_ptr(), values.as_ptr()); // no copy
/// # Ok::<(), mware::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedColumn {
    owner: Arc<dyn SharedBytes>,
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
}

/// Read-only bytes behind an `Arc`.
trait SharedBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
}

struct Typed<O, T>(Arc<O>, std::marker::PhantomData<fn() -> T>);

impl<O: AsRef<[T]> + Send + Sync, T: Pod> SharedBytes for Typed<O, T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.0.as_ref().as_ref())
    }
}

impl SharedColumn {
    /// Shares `owner`'s values; the column keeps `owner` alive.
    pub fn new<T: Pod, O: AsRef<[T]> + Send + Sync + 'static>(owner: Arc<O>) -> SharedColumn {
        SharedColumn {
            owner: Arc::new(Typed(owner, std::marker::PhantomData)),
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }

    /// The shared values as bytes.
    pub fn bytes(&self) -> &[u8] {
        self.owner.bytes()
    }
}

/// A hot column: untyped bytes, either owned (64-byte aligned) or shared
/// read-only from elsewhere. The batch knows its length in rows; the schema
/// knows its element type.
#[derive(Clone, Default)]
pub(crate) struct HotColumn {
    lines: Vec<Line>,
    /// Lines skipped at the start of `lines`. Large columns come from the
    /// allocator page-aligned, so row `r` of every column would share its
    /// address bits below 4 KiB and a load from one column would wait on a
    /// store to another (4K aliasing). Each column starts a different number
    /// of cache lines in.
    pad: usize,
    elem_size: usize,
    /// When set, the column's values are these (read-only) and `lines` only
    /// keeps its capacity for later.
    shared: Option<SharedColumn>,
}

impl HotColumn {
    /// An empty column; `slot` (its position among the hot columns) picks
    /// its start offset.
    pub(crate) fn new(elem_size: usize, slot: usize) -> Self {
        HotColumn { lines: Vec::new(), pad: (slot * 5) % 61, elem_size, shared: None }
    }

    /// Reads `column` in place instead of the owned buffer (which moves
    /// the column's base pointer).
    pub(crate) fn share(&mut self, column: SharedColumn) {
        self.shared = Some(column);
    }

    /// Whether the values live elsewhere.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Copies shared values of `rows` rows into the owned buffer, so the
    /// column can be written. Returns whether it did (and so moved the
    /// column's base pointer).
    #[inline]
    pub(crate) fn make_owned(&mut self, rows: usize) -> bool {
        // Every run calls this per written column: the check is inline, the
        // copy is not.
        let shared = self.shared.is_some();
        if shared {
            self.copy_shared(rows);
        }
        shared
    }

    #[cold]
    fn copy_shared(&mut self, rows: usize) {
        if let Some(shared) = self.shared.take() {
            let n = rows * self.elem_size;
            self.lines.clear();
            self.lines.resize(self.lines_for(rows), Line([0; COLUMN_ALIGN]));
            self.bytes_mut_all()[..n].copy_from_slice(&shared.bytes()[..n]);
        }
    }

    /// Drops shared values without copying them (for `clear`). Returns
    /// whether there were any (and so the base pointer moved).
    pub(crate) fn unshare(&mut self) -> bool {
        self.shared.take().is_some()
    }

    fn lines_for(&self, rows: usize) -> usize {
        self.pad + (rows * self.elem_size).div_ceil(COLUMN_ALIGN)
    }

    /// Resizes to `rows` rows; new rows are zeroed. Keeps the allocation.
    /// Returns whether the base pointer moved.
    pub(crate) fn resize(&mut self, old_rows: usize, rows: usize) -> bool {
        let before = self.owned_base();
        let copied = self.make_owned(old_rows);
        let lines = self.lines_for(rows);
        if rows > old_rows {
            // Zero the tail of the last partially used line too: rows past the
            // old length may hold values from before a `truncate`.
            let (from, want) = (old_rows * self.elem_size, rows * self.elem_size);
            let bytes = self.bytes_mut_all();
            let to = bytes.len().min(want);
            if from < to {
                bytes[from..to].fill(0);
            }
        }
        self.lines.resize(lines, Line([0; COLUMN_ALIGN]));
        // Moved also without reallocating: the pad applies once there are
        // lines enough for it (a reserved column's first rows).
        copied || self.owned_base() != before
    }

    pub(crate) fn reserve(&mut self, rows: usize) {
        let want = self.lines_for(rows);
        self.lines.reserve(want.saturating_sub(self.lines.len()));
    }

    fn bytes_mut_all(&mut self) -> &mut [u8] {
        let pad = self.pad.min(self.lines.len());
        bytemuck::cast_slice_mut(&mut self.lines[pad..])
    }

    /// The first `rows` values as `T` (`T`'s size is the column's).
    pub(crate) fn typed<T: Pod>(&self, rows: usize) -> &[T] {
        bytemuck::cast_slice(self.bytes(rows))
    }

    /// The first `rows` values as `T`, mutable. The column must be owned
    /// ([`make_owned`](HotColumn::make_owned)).
    pub(crate) fn typed_mut<T: Pod>(&mut self, rows: usize) -> &mut [T] {
        debug_assert!(self.shared.is_none());
        let n = rows * self.elem_size;
        bytemuck::cast_slice_mut(&mut self.bytes_mut_all()[..n])
    }

    /// The first `rows` values as raw bytes.
    pub(crate) fn bytes(&self, rows: usize) -> &[u8] {
        let n = rows * self.elem_size;
        match &self.shared {
            Some(shared) => &shared.bytes()[..n],
            None => &bytemuck::cast_slice::<Line, u8>(&self.lines[self.pad.min(self.lines.len())..])[..n],
        }
    }

    /// Base pointer for the executor's column table. A shared column's
    /// pointer is only ever read through: the executor makes every column a
    /// pipeline writes owned before a run.
    pub(crate) fn base_ptr(&mut self) -> *mut u8 {
        match &self.shared {
            Some(shared) => shared.bytes().as_ptr().cast_mut(),
            // No slice of the lines: `Vec::as_mut_ptr` leaves other pointers
            // to them valid, and skips a bounds check.
            None => self.lines.as_mut_ptr().wrapping_add(self.pad.min(self.lines.len())).cast(),
        }
    }

    /// Where the owned values start (only compared, never read through).
    fn owned_base(&self) -> *const Line {
        self.lines.as_ptr().wrapping_add(self.pad.min(self.lines.len()))
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.lines.capacity() * COLUMN_ALIGN
    }
}

/// A cold side table: values for some rows, kept sorted by row.
///
/// Appending in row order is O(1); any other insert is O(n) in the table's
/// size, which stays small because cold fields are present on few rows.
///
/// ```
/// use mware::ColdColumn;
///
/// let mut c = ColdColumn::default();
/// c.insert(7, "seven".to_string());
/// c.insert(2, "two".to_string());
/// assert_eq!(c.get(2).map(String::as_str), Some("two"));
/// assert_eq!(c.get(3), None);
/// assert_eq!(c.iter().map(|(row, _)| row).collect::<Vec<_>>(), vec![2, 7]);
/// ```
#[derive(Clone, Debug)]
pub struct ColdColumn<T> {
    rows: Vec<u32>,
    values: Vec<T>,
}

impl<T> Default for ColdColumn<T> {
    fn default() -> Self {
        ColdColumn { rows: Vec::new(), values: Vec::new() }
    }
}

impl<T> ColdColumn<T> {
    fn position(&self, row: usize) -> Result<usize, usize> {
        // The common case, appending after the last row, skips the search.
        match self.rows.last() {
            Some(&last) if (last as usize) < row => Err(self.rows.len()),
            None => Err(0),
            _ => self.rows.binary_search(&(row as u32)),
        }
    }

    /// The value of `row`, if it has one.
    pub fn get(&self, row: usize) -> Option<&T> {
        self.position(row).ok().map(|i| &self.values[i])
    }

    /// The value of `row`, mutable.
    pub fn get_mut(&mut self, row: usize) -> Option<&mut T> {
        self.position(row).ok().map(|i| &mut self.values[i])
    }

    /// Sets the value of `row`, returning the previous one.
    pub fn insert(&mut self, row: usize, value: T) -> Option<T> {
        match self.position(row) {
            Ok(i) => Some(std::mem::replace(&mut self.values[i], value)),
            Err(i) => {
                self.rows.insert(i, row as u32);
                self.values.insert(i, value);
                None
            }
        }
    }

    /// Removes the value of `row`.
    pub fn remove(&mut self, row: usize) -> Option<T> {
        let i = self.position(row).ok()?;
        self.rows.remove(i);
        Some(self.values.remove(i))
    }

    /// Number of rows that have a value.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row has a value.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `(row, value)` pairs in row order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.rows.iter().map(|&r| r as usize).zip(&self.values)
    }

    /// The entries whose rows fall in `start .. start + len`, as
    /// `(row - start, value)`.
    pub fn range(&self, start: usize, len: usize) -> impl Iterator<Item = (usize, &T)> + '_ {
        let lo = self.rows.partition_point(|&r| (r as usize) < start);
        let hi = self.rows.partition_point(|&r| (r as usize) < start + len);
        self.rows[lo..hi].iter().map(move |&r| r as usize - start).zip(&self.values[lo..hi])
    }

    /// Drops every value, keeping the buffers.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.values.clear();
    }

    fn truncate_rows(&mut self, rows: usize) {
        let keep = self.rows.partition_point(|&r| (r as usize) < rows);
        self.rows.truncate(keep);
        self.values.truncate(keep);
    }
}

/// A type-erased cold table, so a batch can hold tables of many types.
pub(crate) trait ColdStore: Any + Send + Sync {
    fn clear(&mut self);
    fn truncate_rows(&mut self, rows: usize);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Send + Sync + 'static> ColdStore for ColdColumn<T> {
    fn clear(&mut self) {
        ColdColumn::clear(self)
    }
    fn truncate_rows(&mut self, rows: usize) {
        ColdColumn::truncate_rows(self, rows)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_column_is_aligned_and_zeroed_on_growth() {
        let mut c = HotColumn::new(2, 3);
        c.resize(0, 100);
        assert_eq!(c.base_ptr() as usize % COLUMN_ALIGN, 0);
        c.typed_mut::<u16>(100).fill(7);
        c.resize(100, 10);
        c.resize(10, 50);
        assert!(c.typed::<u16>(50)[10..].iter().all(|&v| v == 0));
        assert!(c.typed::<u16>(50)[..10].iter().all(|&v| v == 7));
    }

    #[test]
    fn cold_column_keeps_row_order() {
        let mut c = ColdColumn::default();
        for r in [5usize, 1, 9, 3] {
            c.insert(r, r * 10);
        }
        assert_eq!(c.iter().map(|(r, _)| r).collect::<Vec<_>>(), vec![1, 3, 5, 9]);
        assert_eq!(c.insert(3, 31), Some(30));
        assert_eq!(c.remove(1), Some(10));
        assert_eq!(c.range(3, 3).collect::<Vec<_>>(), vec![(0, &31), (2, &50)]);
        c.truncate_rows(6);
        assert_eq!(c.len(), 2);
    }
}
