//! Typed access declarations and the unsafe core that turns them into column
//! slices and row references.
//!
//! A stage declares what it touches with a value such as
//! `(Read(user_id), Read(token), Write(cost))`. The declaration is checked when
//! the pipeline is built (no field twice with a write, no foreign field, hot
//! and cold used as declared); the executor then resolves it once per chunk
//! into raw column pointers and hands the stage either slices over the chunk
//! ([`Access::Slices`]) or references into one row ([`Access::Row`]).
//!
//! [`ReadAt`] and [`WriteAt`] take a [`Pinned`] handle instead: a field whose
//! position in the schema is part of its type. Each stage's pointer to a
//! runtime handle's column is a value of its own, so in a static chain where
//! four stages read `route` the fused loop carries four copies of one
//! pointer and spills most of them; pinned accesses read their pointer from
//! one per-chunk [`Frame`] at a constant index, so the compiler sees one
//! value per field, as in a hand-written loop.
//!
//! This module and the executor's column table are the only places that
//! create references from raw column pointers.

use std::marker::PhantomData;

use bytemuck::Pod;

use crate::column::{ColdColumn, ColdStore};
use crate::control::RowState;
use crate::schema::{Field, FieldId, Schema};

/// Read a hot field: `&[T]` per chunk, `&T` per row.
#[derive(Clone, Copy, Debug)]
pub struct Read<T: 'static>(pub Field<T>);
/// Write a hot field: `&mut [T]` per chunk, `&mut T` per row.
#[derive(Clone, Copy, Debug)]
pub struct Write<T: 'static>(pub Field<T>);
/// Read a cold field: [`ColdRead`] per chunk, `Option<&T>` per row.
#[derive(Clone, Copy, Debug)]
pub struct ReadCold<T: 'static>(pub Field<T>);
/// Write a cold field: [`ColdWrite`] per chunk, [`ColdCell`] per row. A stage
/// that writes a cold field runs alone (never beside other stages).
#[derive(Clone, Copy, Debug)]
pub struct WriteCold<T: 'static>(pub Field<T>);

/// One field a stage touches, as declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldUse {
    pub(crate) field: FieldId,
    /// Whether the stage writes the field.
    pub write: bool,
    /// Whether the access is to a cold side table.
    pub cold: bool,
}

impl FieldUse {
    /// The field's position in its schema.
    pub fn index(&self) -> usize {
        self.field.index as usize
    }
}

/// The executor's table of column pointers for one run, shared by every
/// worker. Opaque: only the executor builds it.
pub struct ColumnTable<'r> {
    pub(crate) schema: &'r Schema,
    /// Base pointer of each field's hot column, by field position.
    pub(crate) hot: &'r [SendPtr<u8>],
    pub(crate) cold: &'r [SendPtr<dyn ColdStore>],
    pub(crate) states: SendPtr<RowState>,
    pub(crate) len: usize,
}

/// A raw pointer that may cross threads; what it points to is governed by
/// the executor's disjointness rules (see `ColumnTable`).
pub struct SendPtr<T: ?Sized>(pub(crate) *mut T);

impl<T: ?Sized> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for SendPtr<T> {}
// SAFETY: a `SendPtr` is only an address. Every dereference happens in this
// module or in `exec`, under the rule that concurrent workers touch disjoint
// row ranges of hot columns and that cold tables are written only by a stage
// that runs alone; see the SAFETY comments at those sites.
unsafe impl<T: ?Sized> Send for SendPtr<T> {}
// SAFETY: as for `Send`: sharing the address is harmless, dereferences are
// argued where they happen.
unsafe impl<T: ?Sized> Sync for SendPtr<T> {}

impl<'r> ColumnTable<'r> {
    /// `hot` is indexed by field position (cold fields hold null), so this
    /// is one load.
    #[inline(always)]
    fn hot_ptr<T>(&self, field: FieldId) -> *mut T {
        self.hot[field.index as usize].0.cast()
    }

    fn cold_ptr(&self, field: FieldId) -> *mut dyn ColdStore {
        let slot = self.schema.fields()[field.index as usize].slot;
        self.cold[slot].0
    }

    /// The control words of rows `start .. start + len`.
    ///
    /// # Safety
    /// The range must lie in the batch and no other live reference may
    /// overlap it while the slice lives.
    pub(crate) unsafe fn states_mut<'a>(&self, start: usize, len: usize) -> &'a mut [RowState] {
        debug_assert!(start + len <= self.len);
        // SAFETY: the pointer is the batch's state vector, valid for
        // `self.len` rows; the caller guarantees the range is in bounds and
        // exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(self.states.0.add(start), len) }
    }
}

/// How many leading fields of a schema can be [`Pinned`].
pub const FRAME_FIELDS: usize = 16;

/// The hot column pointers of a schema's first [`FRAME_FIELDS`] fields,
/// copied onto the stack of the loop that runs a chunk. Pinned accesses
/// resolve to the address of the frame, which every stage of a chain shares.
#[doc(hidden)]
pub struct Frame([*mut u8; FRAME_FIELDS]);

impl Frame {
    pub(crate) fn of(table: &ColumnTable<'_>) -> Frame {
        let mut frame = [std::ptr::null_mut(); FRAME_FIELDS];
        // The executor pads the table to at least `FRAME_FIELDS` entries, so
        // this is a fixed-size copy (no call to `memcpy` per walk).
        match table.hot.get(..FRAME_FIELDS) {
            Some(head) => (0..FRAME_FIELDS).for_each(|i| frame[i] = head[i].0),
            None => frame.iter_mut().zip(table.hot).for_each(|(slot, ptr)| *slot = ptr.0),
        }
        Frame(frame)
    }

    /// Row `row` of the column at position `I`.
    ///
    /// # Safety
    /// `frame` points to a live frame of the batch being run; position `I`
    /// is a hot field of type `T` of its schema; `row` is in the batch.
    #[inline(always)]
    unsafe fn cell<T, const I: usize>(frame: SendPtr<Frame>, row: usize) -> *mut T {
        // SAFETY: the frame is live and `I < FRAME_FIELDS` (`Field::pin`
        // checks it), so slot `I` holds the table's base pointer of field
        // `I`'s column, typed `T`, with `row` inside it.
        unsafe { (*frame.0).0[I].cast::<T>().add(row) }
    }
}

/// A hot field handle whose position `I` in its schema is part of its
/// type; made by [`Field::pin`](crate::Field::pin), used with [`ReadAt`] and
/// [`WriteAt`].
///
/// ```
/// use mware::prelude::*;
///
/// let mut s = SchemaBuilder::new();
/// let len = s.hot::<u32>("len").pin::<0>()?;
/// let seen = s.hot::<u32>("seen").pin::<1>()?;
/// let schema = s.build()?;
///
/// let count = stage::parallel("count", (ReadAt(len), WriteAt(seen)), |(len, seen): (&u32, &mut u32), _: &mut RowCtl| {
///     *seen = *len + 1;
/// });
/// let pipeline = Pipeline::builder(&schema).chain(mware::chain![mware::chain::before(count)]).build()?;
/// let mut batch = Batch::new(&schema);
/// batch.resize(2);
/// batch.column_mut(len.field())?.copy_from_slice(&[5, 50]);
/// pipeline.run(&mut batch)?;
/// assert_eq!(batch.column(seen.field())?, &[6, 51]);
/// # Ok::<(), mware::Error>(())
/// ```
pub struct Pinned<T: 'static, const I: usize>(pub(crate) Field<T>);

impl<T, const I: usize> Pinned<T, I> {
    /// The runtime handle of the same field.
    pub fn field(self) -> Field<T> {
        self.0
    }
}

impl<T, const I: usize> Clone for Pinned<T, I> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, const I: usize> Copy for Pinned<T, I> {}

impl<T, const I: usize> std::fmt::Debug for Pinned<T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pinned<{I}>")
    }
}

/// Declares a struct of [`Pinned`] hot fields whose positions follow the
/// order of declaration, and a `declare` function that adds them to a
/// [`SchemaBuilder`](crate::SchemaBuilder) under their own names. Declare
/// them before any other field (`declare` fails otherwise, naming the
/// position it met).
///
/// ```
/// use mware::prelude::*;
///
/// mware::pinned_fields! {
///     /// The request columns every stage of the chain shares.
///     pub struct Req {
///         pub len: u32,
///         pub cost: u64,
///     }
/// }
///
/// let mut s = SchemaBuilder::new();
/// let f = Req::declare(&mut s)?;
/// let note = s.cold::<String>("note"); // other fields after them
/// let schema = s.build()?;
///
/// let price = stage::parallel("price", (ReadAt(f.len), WriteAt(f.cost)), |(len, cost): (&u32, &mut u64), _: &mut RowCtl| {
///     *cost = u64::from(*len) * 3;
/// });
/// let pipeline = Pipeline::builder(&schema).chain(mware::chain![mware::chain::before(price)]).build()?;
/// let mut batch = Batch::new(&schema);
/// batch.resize(2);
/// batch.column_mut(f.len.field())?.copy_from_slice(&[1, 2]);
/// pipeline.run(&mut batch)?;
/// assert_eq!(batch.column(f.cost.field())?, &[3, 6]);
/// # let _ = note;
/// # Ok::<(), mware::Error>(())
/// ```
#[macro_export]
macro_rules! pinned_fields {
    (
        $(#[$meta:meta])* $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $crate::pinned_fields!(@count [$(#[$meta])* $vis struct $name] [] (0usize)
            $($(#[$fmeta])* $fvis $field [$ty],)*);
    };
    // Gives each field its position: the sum of ones before it.
    (@count $head:tt [$($done:tt)*] ($pos:expr) $(#[$fmeta:meta])* $fvis:vis $field:ident [$ty:ty], $($rest:tt)*) => {
        $crate::pinned_fields!(@count $head [$($done)* [$(#[$fmeta])* $fvis $field [$ty] ($pos)]] ($pos + 1usize)
            $($rest)*);
    };
    (@count [$(#[$meta:meta])* $vis:vis struct $name:ident]
        [$([$(#[$fmeta:meta])* $fvis:vis $field:ident [$ty:ty] ($pos:expr)])*] ($end:expr)) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $crate::Pinned<$ty, { $pos }>,)*
        }

        impl $name {
            /// Adds the fields to `builder` as hot fields, in order, and
            /// pins them; fails unless they are its first fields.
            #[allow(dead_code)]
            $vis fn declare(builder: &mut $crate::SchemaBuilder) -> $crate::Result<Self> {
                Ok($name { $($field: builder.hot::<$ty>(stringify!($field)).pin::<{ $pos }>()?,)* })
            }
        }
    };
}

/// Read a [`Pinned`] hot field: as [`Read`], with a column pointer shared by
/// every stage of a fused chain.
#[derive(Clone, Copy, Debug)]
pub struct ReadAt<T: 'static, const I: usize>(pub Pinned<T, I>);
/// Write a [`Pinned`] hot field: as [`Write`], with a column pointer shared
/// by every stage of a fused chain.
#[derive(Clone, Copy, Debug)]
pub struct WriteAt<T: 'static, const I: usize>(pub Pinned<T, I>);

impl<T: Pod, const I: usize> sealed::Sealed for ReadAt<T, I> {}
impl<T: Pod + Send + Sync, const I: usize> Access for ReadAt<T, I> {
    type Slices<'a> = &'a [T];
    type Row<'a> = &'a T;
    type Ptrs = SendPtr<Frame>;

    fn uses(&self, out: &mut Vec<FieldUse>) {
        out.push(FieldUse { field: self.0.0.untyped(), write: false, cold: false });
    }
    #[inline(always)]
    fn resolve(&self, _: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs {
        SendPtr((frame as *const Frame).cast_mut())
    }
    #[inline(always)]
    unsafe fn slices<'a>(p: Self::Ptrs, start: usize, len: usize) -> &'a [T] {
        // SAFETY: `p` is the frame `resolve` was given, live per the
        // caller's contract; validation made `I` a hot field of type `T`.
        // Then as for `Read`.
        unsafe { std::slice::from_raw_parts(Frame::cell::<T, I>(p, start), len) }
    }
    #[inline(always)]
    unsafe fn row<'a>(p: Self::Ptrs, row: usize) -> &'a T {
        // SAFETY: as in `slices`, for one in-bounds row.
        unsafe { &*Frame::cell::<T, I>(p, row) }
    }
}

impl<T: Pod, const I: usize> sealed::Sealed for WriteAt<T, I> {}
impl<T: Pod + Send + Sync, const I: usize> Access for WriteAt<T, I> {
    type Slices<'a> = &'a mut [T];
    type Row<'a> = &'a mut T;
    type Ptrs = SendPtr<Frame>;

    fn uses(&self, out: &mut Vec<FieldUse>) {
        out.push(FieldUse { field: self.0.0.untyped(), write: true, cold: false });
    }
    #[inline(always)]
    fn resolve(&self, _: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs {
        SendPtr((frame as *const Frame).cast_mut())
    }
    #[inline(always)]
    unsafe fn slices<'a>(p: Self::Ptrs, start: usize, len: usize) -> &'a mut [T] {
        // SAFETY: as for `ReadAt`, and the caller guarantees no other
        // reference overlaps the range while this one lives (as `Write`).
        unsafe { std::slice::from_raw_parts_mut(Frame::cell::<T, I>(p, start), len) }
    }
    #[inline(always)]
    unsafe fn row<'a>(p: Self::Ptrs, row: usize) -> &'a mut T {
        // SAFETY: as in `slices`, for one in-bounds row.
        unsafe { &mut *Frame::cell::<T, I>(p, row) }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An access declaration: a [`Read`], [`Write`], [`ReadCold`], [`WriteCold`],
/// or a tuple of up to ten of them.
///
/// Sealed: the executor's soundness rests on the exact set of
/// implementations in this module.
pub trait Access: sealed::Sealed + Send + Sync + 'static {
    /// What a chunk stage receives: slices over the chunk's rows.
    type Slices<'a>;
    /// What a row stage receives: references into one row.
    type Row<'a>;
    /// Resolved column pointers.
    #[doc(hidden)]
    type Ptrs: Copy + Send + Sync;

    /// Appends the declared fields to `out`.
    fn uses(&self, out: &mut Vec<FieldUse>);

    /// Resolves the declaration against a run's column table; `frame` is
    /// the caller's copy of the table's first hot pointers, which must
    /// outlive every use of the result.
    #[doc(hidden)]
    fn resolve(&self, table: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs;

    /// The slices of rows `start .. start + len`.
    ///
    /// # Safety
    /// `ptrs` comes from `resolve` on the table of the batch being run, and
    /// the frame `resolve` was given is still alive; the range lies inside
    /// the batch; for the slices' lifetime no other
    /// reference overlaps the written rows or reads written ones, and cold
    /// tables written here are not touched by anyone else. The pipeline's
    /// validation (no field declared twice with a write) makes the slices of
    /// one call disjoint from each other.
    #[doc(hidden)]
    unsafe fn slices<'a>(ptrs: Self::Ptrs, start: usize, len: usize) -> Self::Slices<'a>;

    /// The references of row `row`.
    ///
    /// # Safety
    /// As for [`slices`](Access::slices), for the single row `row`.
    #[doc(hidden)]
    unsafe fn row<'a>(ptrs: Self::Ptrs, row: usize) -> Self::Row<'a>;
}

/// The per-row references of access `A`.
pub type RowOf<'a, A> = <A as Access>::Row<'a>;
/// The per-chunk slices of access `A`.
pub type SlicesOf<'a, A> = <A as Access>::Slices<'a>;

/// A cold field's entries within one chunk; indices are chunk-relative.
pub struct ColdRead<'a, T> {
    col: &'a ColdColumn<T>,
    start: usize,
    len: usize,
}

impl<'a, T> ColdRead<'a, T> {
    /// The value of chunk row `i`.
    pub fn get(&self, i: usize) -> Option<&'a T> {
        if i < self.len { self.col.get(self.start + i) } else { None }
    }

    /// The chunk's entries as `(chunk row, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &'a T)> + 'a {
        self.col.range(self.start, self.len)
    }
}

/// A cold field's entries within one chunk, writable; indices are
/// chunk-relative and writes outside the chunk are ignored.
pub struct ColdWrite<'a, T> {
    col: &'a mut ColdColumn<T>,
    start: usize,
    len: usize,
}

impl<T> ColdWrite<'_, T> {
    /// The value of chunk row `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i < self.len { self.col.get(self.start + i) } else { None }
    }

    /// Sets chunk row `i`'s value; returns the old one. Ignored (returning
    /// the value back as `Err`) when `i` is outside the chunk.
    pub fn insert(&mut self, i: usize, value: T) -> Result<Option<T>, T> {
        if i < self.len { Ok(self.col.insert(self.start + i, value)) } else { Err(value) }
    }

    /// Removes chunk row `i`'s value.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        if i < self.len { self.col.remove(self.start + i) } else { None }
    }
}

/// One row's entry of a cold field, writable.
pub struct ColdCell<'a, T> {
    col: &'a mut ColdColumn<T>,
    row: usize,
}

impl<T> ColdCell<'_, T> {
    /// The row's value.
    pub fn get(&self) -> Option<&T> {
        self.col.get(self.row)
    }

    /// Sets the row's value, returning the old one.
    pub fn set(&mut self, value: T) -> Option<T> {
        self.col.insert(self.row, value)
    }

    /// Removes the row's value.
    pub fn take(&mut self) -> Option<T> {
        self.col.remove(self.row)
    }
}

impl<T: Pod> sealed::Sealed for Read<T> {}
impl<T: Pod + Send + Sync> Access for Read<T> {
    type Slices<'a> = &'a [T];
    type Row<'a> = &'a T;
    type Ptrs = SendPtr<T>;

    fn uses(&self, out: &mut Vec<FieldUse>) {
        out.push(FieldUse { field: self.0.untyped(), write: false, cold: false });
    }
    fn resolve(&self, table: &ColumnTable<'_>, _: &Frame) -> Self::Ptrs {
        SendPtr(table.hot_ptr(self.0.untyped()))
    }
    unsafe fn slices<'a>(p: Self::Ptrs, start: usize, len: usize) -> &'a [T] {
        // SAFETY: the column holds the batch's rows as `T` (the schema gave
        // the handle's type and the column is 64-byte aligned); the caller
        // guarantees the range is in bounds and not written meanwhile.
        unsafe { std::slice::from_raw_parts(p.0.add(start), len) }
    }
    unsafe fn row<'a>(p: Self::Ptrs, row: usize) -> &'a T {
        // SAFETY: as in `slices`, for one in-bounds row.
        unsafe { &*p.0.add(row) }
    }
}

impl<T: Pod> sealed::Sealed for Write<T> {}
impl<T: Pod + Send + Sync> Access for Write<T> {
    type Slices<'a> = &'a mut [T];
    type Row<'a> = &'a mut T;
    type Ptrs = SendPtr<T>;

    fn uses(&self, out: &mut Vec<FieldUse>) {
        out.push(FieldUse { field: self.0.untyped(), write: true, cold: false });
    }
    fn resolve(&self, table: &ColumnTable<'_>, _: &Frame) -> Self::Ptrs {
        SendPtr(table.hot_ptr(self.0.untyped()))
    }
    unsafe fn slices<'a>(p: Self::Ptrs, start: usize, len: usize) -> &'a mut [T] {
        // SAFETY: as for `Read`, and the caller guarantees no other
        // reference overlaps the range while this one lives.
        unsafe { std::slice::from_raw_parts_mut(p.0.add(start), len) }
    }
    unsafe fn row<'a>(p: Self::Ptrs, row: usize) -> &'a mut T {
        // SAFETY: as in `slices`, for one in-bounds row.
        unsafe { &mut *p.0.add(row) }
    }
}

impl<T> sealed::Sealed for ReadCold<T> {}
impl<T: Send + Sync + 'static> Access for ReadCold<T> {
    type Slices<'a> = ColdRead<'a, T>;
    type Row<'a> = Option<&'a T>;
    type Ptrs = (SendPtr<ColdColumn<T>>, PhantomData<fn() -> T>);

    fn uses(&self, out: &mut Vec<FieldUse>) {
        out.push(FieldUse { field: self.0.untyped(), write: false, cold: true });
    }
    fn resolve(&self, table: &ColumnTable<'_>, _: &Frame) -> Self::Ptrs {
        let store = table.cold_ptr(self.0.untyped());
        (SendPtr(store.cast::<ColdColumn<T>>()), PhantomData)
    }
    unsafe fn slices<'a>(p: Self::Ptrs, start: usize, len: usize) -> ColdRead<'a, T> {
        // SAFETY: the schema made this table a `ColdColumn<T>` (the cast in
        // `resolve` keeps the data pointer of the trait object); nobody
        // writes the table while readers run (cold writers run alone).
        ColdRead { col: unsafe { &*p.0.0 }, start, len }
    }
    unsafe fn row<'a>(p: Self::Ptrs, row: usize) -> Option<&'a T> {
        // SAFETY: as in `slices`.
        unsafe { (*p.0.0).get(row) }
    }
}

impl<T> sealed::Sealed for WriteCold<T> {}
impl<T: Send + Sync + 'static> Access for WriteCold<T> {
    type Slices<'a> = ColdWrite<'a, T>;
    type Row<'a> = ColdCell<'a, T>;
    type Ptrs = (SendPtr<ColdColumn<T>>, PhantomData<fn() -> T>);

    fn uses(&self, out: &mut Vec<FieldUse>) {
        out.push(FieldUse { field: self.0.untyped(), write: true, cold: true });
    }
    fn resolve(&self, table: &ColumnTable<'_>, _: &Frame) -> Self::Ptrs {
        let store = table.cold_ptr(self.0.untyped());
        (SendPtr(store.cast::<ColdColumn<T>>()), PhantomData)
    }
    unsafe fn slices<'a>(p: Self::Ptrs, start: usize, len: usize) -> ColdWrite<'a, T> {
        // SAFETY: the table is a `ColdColumn<T>` (see `ReadCold`); a stage
        // writing a cold field runs alone, so this is the only reference.
        ColdWrite { col: unsafe { &mut *p.0.0 }, start, len }
    }
    unsafe fn row<'a>(p: Self::Ptrs, row: usize) -> ColdCell<'a, T> {
        // SAFETY: as in `slices`; per-row cells of one stage never coexist.
        ColdCell { col: unsafe { &mut *p.0.0 }, row }
    }
}

impl sealed::Sealed for () {}
impl Access for () {
    type Slices<'a> = ();
    type Row<'a> = ();
    type Ptrs = ();
    fn uses(&self, _: &mut Vec<FieldUse>) {}
    fn resolve(&self, _: &ColumnTable<'_>, _: &Frame) {}
    unsafe fn slices<'a>(_: (), _: usize, _: usize) -> Self::Slices<'a> {}
    unsafe fn row<'a>(_: (), _: usize) -> Self::Row<'a> {}
}

macro_rules! tuple_access {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Access),+> sealed::Sealed for ($($name,)+) {}
        impl<$($name: Access),+> Access for ($($name,)+) {
            type Slices<'a> = ($($name::Slices<'a>,)+);
            type Row<'a> = ($($name::Row<'a>,)+);
            type Ptrs = ($($name::Ptrs,)+);

            fn uses(&self, out: &mut Vec<FieldUse>) {
                $(self.$idx.uses(out);)+
            }
            #[inline(always)]
            fn resolve(&self, table: &ColumnTable<'_>, frame: &Frame) -> Self::Ptrs {
                ($(self.$idx.resolve(table, frame),)+)
            }
            #[inline(always)]
            unsafe fn slices<'a>(p: Self::Ptrs, start: usize, len: usize) -> Self::Slices<'a> {
                // SAFETY: forwarded contract; validation keeps the members'
                // written fields disjoint from every other member's fields.
                unsafe { ($($name::slices(p.$idx, start, len),)+) }
            }
            #[inline(always)]
            unsafe fn row<'a>(p: Self::Ptrs, row: usize) -> Self::Row<'a> {
                // SAFETY: as in `slices`.
                unsafe { ($($name::row(p.$idx, row),)+) }
            }
        }
    };
}

tuple_access!(A 0);
tuple_access!(A 0, B 1);
tuple_access!(A 0, B 1, C 2);
tuple_access!(A 0, B 1, C 2, D 3);
tuple_access!(A 0, B 1, C 2, D 3, E 4);
tuple_access!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_access!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_access!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_access!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_access!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
