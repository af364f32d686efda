//! Schemas declare a context's fields and hand out typed [`Field`] handles.
//!
//! A *hot* field is a [`bytemuck::Pod`] value stored inline, one contiguous
//! 64-byte-aligned column per field. A *cold* field is any `Send + Sync` value
//! kept in a sparse side table, costing nothing on rows that lack it.

use std::any::{TypeId, type_name};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;

use crate::error::{Error, Result};

static NEXT_SCHEMA_ID: AtomicU64 = AtomicU64::new(1);

/// A typed handle to one field of one schema. `Copy`, two integers inside.
///
/// Only a [`SchemaBuilder`] mints handles, so a handle's type always matches
/// its field; using it with a batch of another schema is an
/// [`Error::ForeignField`].
pub struct Field<T: 'static> {
    pub(crate) schema: u64,
    pub(crate) index: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Field<T> {}
impl<T> PartialEq for Field<T> {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema && self.index == other.index
    }
}
impl<T> Eq for Field<T> {}
impl<T> fmt::Debug for Field<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field<{}>(#{} of schema {})", type_name::<T>(), self.index, self.schema)
    }
}

impl<T> Field<T> {
    /// The field's position in its schema.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// This handle with its position `I` in the type, for [`ReadAt`] and
    /// [`WriteAt`]: in a static chain, stages that share a pinned field
    /// share its column pointer (see [`Pinned`]). Fails unless `I` is the
    /// field's position and below [`FRAME_FIELDS`].
    ///
    /// ```
    /// let mut s = mware::SchemaBuilder::new();
    /// let a = s.hot::<u32>("a");
    /// let b = s.hot::<u64>("b");
    /// assert!(b.pin::<1>().is_ok());
    /// assert!(a.pin::<1>().is_err()); // `a` is at position 0
    /// ```
    ///
    /// [`ReadAt`]: crate::ReadAt
    /// [`WriteAt`]: crate::WriteAt
    /// [`Pinned`]: crate::Pinned
    /// [`FRAME_FIELDS`]: crate::FRAME_FIELDS
    pub fn pin<const I: usize>(self) -> crate::Result<crate::Pinned<T, I>> {
        if self.index as usize == I && I < crate::FRAME_FIELDS {
            Ok(crate::Pinned(self))
        } else {
            Err(crate::Error::Config(format!(
                "cannot pin the field at position {} as position {I} (pinned positions are below {})",
                self.index,
                crate::FRAME_FIELDS
            )))
        }
    }

    pub(crate) fn untyped(self) -> FieldId {
        FieldId { schema: self.schema, index: self.index }
    }
}

/// A field handle with its type erased (for access declarations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FieldId {
    pub(crate) schema: u64,
    pub(crate) index: u32,
}

/// Where a field's values live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Inline, one aligned column; `size` bytes per row.
    Hot {
        /// Bytes per value.
        size: usize,
    },
    /// A sparse side table.
    Cold,
}

impl Storage {
    /// Bytes per row inline in the batch: a hot field's value size, 0 for a
    /// cold field.
    pub(crate) fn inline_bytes(self) -> usize {
        match self {
            Storage::Hot { size } => size,
            Storage::Cold => 0,
        }
    }
}

/// What a schema knows about one field.
#[derive(Clone, Debug)]
pub struct FieldInfo {
    /// The field's name.
    pub name: String,
    /// Hot or cold.
    pub storage: Storage,
    /// The value type's name, for messages.
    pub type_name: &'static str,
    pub(crate) type_id: TypeId,
    /// Position among the hot or among the cold fields.
    pub(crate) slot: usize,
    pub(crate) new_cold: Option<fn() -> Box<dyn crate::column::ColdStore>>,
}

/// Declares fields; [`build`](SchemaBuilder::build) checks and freezes them.
///
/// ```
/// use mware::prelude::*;
///
/// let mut s = SchemaBuilder::new();
/// let user: Field<u64> = s.hot("user_id");
/// let agent: Field<String> = s.cold("user_agent");
/// let schema = s.build()?;
/// assert_eq!(schema.field_info(user).name, "user_id");
/// assert_eq!(schema.len(), 2);
/// # let _ = agent;
/// # Ok::<(), mware::Error>(())
/// ```
pub struct SchemaBuilder {
    id: u64,
    fields: Vec<FieldInfo>,
    hot: usize,
    cold: usize,
    error: Option<Error>,
}

impl Default for SchemaBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaBuilder {
    /// An empty schema.
    pub fn new() -> Self {
        SchemaBuilder {
            id: NEXT_SCHEMA_ID.fetch_add(1, Ordering::Relaxed),
            fields: Vec::new(),
            hot: 0,
            cold: 0,
            error: None,
        }
    }

    /// Declares a hot field: a Pod value stored inline in an aligned column.
    pub fn hot<T: Pod + Send + Sync>(&mut self, name: &str) -> Field<T> {
        if std::mem::align_of::<T>() > crate::column::COLUMN_ALIGN {
            self.error.get_or_insert(Error::OverAligned {
                field: name.to_string(),
                align: std::mem::align_of::<T>(),
            });
        }
        let slot = self.hot;
        self.hot += 1;
        self.push::<T>(name, Storage::Hot { size: std::mem::size_of::<T>() }, slot, None)
    }

    /// Declares a cold field: any `Send + Sync` value, stored sparsely.
    pub fn cold<T: Send + Sync + 'static>(&mut self, name: &str) -> Field<T> {
        let slot = self.cold;
        self.cold += 1;
        let new: fn() -> Box<dyn crate::column::ColdStore> =
            || Box::new(crate::column::ColdColumn::<T>::default());
        self.push::<T>(name, Storage::Cold, slot, Some(new))
    }

    fn push<T: 'static>(
        &mut self,
        name: &str,
        storage: Storage,
        slot: usize,
        new_cold: Option<fn() -> Box<dyn crate::column::ColdStore>>,
    ) -> Field<T> {
        if self.fields.iter().any(|f| f.name == name) {
            self.error.get_or_insert(Error::DuplicateField { field: name.to_string() });
        }
        let index = self.fields.len() as u32;
        self.fields.push(FieldInfo {
            name: name.to_string(),
            storage,
            type_name: type_name::<T>(),
            type_id: TypeId::of::<T>(),
            slot,
            new_cold,
        });
        Field { schema: self.id, index, _type: PhantomData }
    }

    /// Freezes the schema, or reports the first problem found while declaring.
    pub fn build(self) -> Result<Schema> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(Schema(Arc::new(SchemaInner { id: self.id, fields: self.fields, hot: self.hot, cold: self.cold })))
    }
}

struct SchemaInner {
    id: u64,
    fields: Vec<FieldInfo>,
    hot: usize,
    cold: usize,
}

/// A frozen set of fields. Cheap to clone (shared).
#[derive(Clone)]
pub struct Schema(Arc<SchemaInner>);

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("id", &self.0.id).field("fields", &self.0.fields).finish()
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for Schema {}

impl Schema {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.fields.len()
    }

    /// Whether the schema has no fields.
    pub fn is_empty(&self) -> bool {
        self.0.fields.is_empty()
    }

    /// Every field, in declaration order.
    pub fn fields(&self) -> &[FieldInfo] {
        &self.0.fields
    }

    /// The description of a field of this schema.
    ///
    /// # Panics
    /// If the handle belongs to another schema (building a pipeline reports
    /// such a handle as an error instead).
    pub fn field_info<T>(&self, field: Field<T>) -> &FieldInfo {
        match self.check(field.untyped(), "schema") {
            Ok(info) => info,
            Err(e) => panic!("{e}"),
        }
    }

    /// Looks a field up by name.
    pub fn field_named(&self, name: &str) -> Option<(usize, &FieldInfo)> {
        self.0.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }

    /// The typed handle of the field called `name`, if it has type `T`.
    pub fn handle<T: 'static>(&self, name: &str) -> Option<Field<T>> {
        let (i, info) = self.field_named(name)?;
        (info.type_id == TypeId::of::<T>()).then_some(Field {
            schema: self.0.id,
            index: i as u32,
            _type: PhantomData,
        })
    }

    pub(crate) fn hot_count(&self) -> usize {
        self.0.hot
    }

    pub(crate) fn cold_count(&self) -> usize {
        self.0.cold
    }

    /// Checks that `field` belongs to this schema; `context` names the user.
    pub(crate) fn check(&self, field: FieldId, context: &str) -> Result<&FieldInfo> {
        if field.schema != self.0.id {
            return Err(Error::ForeignField { stage: context.to_string(), field: field.index });
        }
        Ok(&self.0.fields[field.index as usize])
    }

    /// The hot slot of a field, or a storage error.
    pub(crate) fn hot_slot(&self, field: FieldId, context: &str) -> Result<usize> {
        let info = self.check(field, context)?;
        match info.storage {
            Storage::Hot { .. } => Ok(info.slot),
            Storage::Cold => Err(Error::StorageMismatch {
                stage: context.to_string(),
                field: info.name.clone(),
                expected: "hot",
            }),
        }
    }

    /// The cold slot of a field, or a storage error.
    pub(crate) fn cold_slot(&self, field: FieldId, context: &str) -> Result<usize> {
        let info = self.check(field, context)?;
        match info.storage {
            Storage::Cold => Ok(info.slot),
            Storage::Hot { .. } => Err(Error::StorageMismatch {
                stage: context.to_string(),
                field: info.name.clone(),
                expected: "cold",
            }),
        }
    }
}
