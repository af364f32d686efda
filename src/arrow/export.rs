//! Batch → Arrow `RecordBatch`, without copying the hot columns.
//!
//! A `RecordBatch` owns its buffers (`Arc`s, `'static`), while a batch's
//! columns are borrowed from the batch. Export therefore *consumes* the
//! batch: it moves into a shared owner that every exported hot buffer keeps
//! alive, and each buffer points straight at the column's memory (the
//! batch's own 64-byte-aligned column, or the shared memory a column was
//! imported from, e.g. a file mapping). No value is copied; nothing can
//! write the columns while Arrow holds them, because nothing can reach the
//! batch. [`Exported::into_batch`] gives the batch back (with all its
//! buffers, for recycling) once every Arrow reference is gone.
//!
//! Cold fields and the row control state are built as new Arrow arrays
//! (they are sparse or not stored column-wise).

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::types::*;
use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeBinaryArray, PrimitiveArray, RecordBatch, RecordBatchOptions,
    UInt16Array,
};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::{DataType, Schema as ArrowSchema, SchemaRef};

use super::error::{Error, Result};
use super::types::{self, ColdKind};
use crate::batch::Batch;
use crate::schema::{Field, Schema, Storage};

/// What an export (or a file written with [`Writer`](super::Writer)) contains.
///
/// ```
/// use mware::arrow::ExportOptions;
/// let opts = ExportOptions::new().control(false).fields(["user_id", "token"]);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub(crate) control: bool,
    pub(crate) fields: Option<Vec<String>>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { control: true, fields: None }
    }
}

impl ExportOptions {
    /// Every field Arrow can carry, plus the row control columns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to add the row control columns (`mware_status`,
    /// `mware_stop_depth`, `mware_failed`, `mware_error`); on by default.
    pub fn control(mut self, on: bool) -> Self {
        self.control = on;
        self
    }

    /// Exports only these fields, in schema order (default: every field).
    pub fn fields<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.fields = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

#[derive(Clone, Debug)]
enum Column {
    Hot { index: usize, size: usize, data_type: DataType },
    Str(Field<String>),
    Bin(Field<Vec<u8>>),
}

/// Turns batches of one schema into `RecordBatch`es of one Arrow schema.
/// Build it once, export many batches.
#[derive(Clone, Debug)]
pub struct Exporter {
    schema: Schema,
    arrow: SchemaRef,
    columns: Vec<Column>,
    control: bool,
}

impl Exporter {
    /// An exporter for batches of `schema`. Fails, naming the field, for a
    /// selected cold field whose type Arrow cannot carry (only `String` and
    /// `Vec<u8>` can), or a selected name that is not a field.
    pub fn new(schema: &Schema, options: &ExportOptions) -> Result<Exporter> {
        if let Some(names) = &options.fields {
            for n in names {
                if schema.field_named(n).is_none() {
                    return Err(Error::MissingColumn { column: n.clone() });
                }
            }
        }
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (index, info) in schema.fields().iter().enumerate() {
            if let Some(names) = &options.fields
                && !names.contains(&info.name)
            {
                continue;
            }
            if options.control && types::CONTROL_COLUMNS.contains(&info.name.as_str()) {
                return Err(Error::Unsupported {
                    column: info.name.clone(),
                    detail: "the name is reserved for the row control columns; export with \
                             `control(false)`"
                        .into(),
                });
            }
            let Some(field) = types::arrow_field(info) else {
                return Err(Error::Unsupported {
                    column: info.name.clone(),
                    detail: format!(
                        "cold type {} has no Arrow mapping (only String and Vec<u8>); leave the \
                         field out with `ExportOptions::fields`",
                        info.type_name
                    ),
                });
            };
            let column = match info.storage {
                Storage::Hot { size } => Column::Hot { index, size, data_type: field.data_type().clone() },
                Storage::Cold => match types::cold_kind(info) {
                    Some(ColdKind::Utf8) => Column::Str(schema.handle(&info.name).expect("checked type")),
                    Some(ColdKind::Binary) => Column::Bin(schema.handle(&info.name).expect("checked type")),
                    None => unreachable!("arrow_field returned a field"),
                },
            };
            columns.push(column);
            fields.push(field);
        }
        if options.control {
            fields.extend(types::control_fields());
        }
        Ok(Exporter {
            schema: schema.clone(),
            arrow: Arc::new(ArrowSchema::new(fields)),
            columns,
            control: options.control,
        })
    }

    /// The Arrow schema of the exported record batches.
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }

    /// The mware schema the batches must have.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Exports `batch` without copying its hot columns (see the module
    /// docs). On error the batch is dropped; [`prepare`](Self::prepare) +
    /// [`finish`](Self::finish) keep it.
    pub fn export(&self, batch: Batch) -> Result<Exported> {
        let prepared = self.prepare(&batch)?;
        Ok(self.finish(batch, prepared))
    }

    /// The fallible half of an export: checks the batch and builds the
    /// cold and control columns, leaving the batch untouched.
    pub fn prepare(&self, batch: &Batch) -> Result<Prepared> {
        if batch.schema() != &self.schema {
            return Err(Error::Mware(crate::Error::SchemaMismatch));
        }
        let rows = batch.len();
        let mut built: Vec<Option<ArrayRef>> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            built.push(match c {
                Column::Hot { .. } => None,
                Column::Str(f) => {
                    let cold = batch.cold(*f)?;
                    let bytes: usize = cold.iter().map(|(_, s)| s.len()).sum();
                    check_offsets(&self.schema.field_info(*f).name, bytes)?;
                    let mut b = StringBuilder::with_capacity(rows, bytes);
                    fill_sparse(rows, cold.iter(), |v| b.append_option(v));
                    Some(Arc::new(b.finish()))
                }
                Column::Bin(f) => {
                    let cold = batch.cold(*f)?;
                    let bytes: usize = cold.iter().map(|(_, s)| s.len()).sum();
                    check_offsets(&self.schema.field_info(*f).name, bytes)?;
                    let mut b = BinaryBuilder::with_capacity(rows, bytes);
                    fill_sparse(rows, cold.iter(), |v| b.append_option(v));
                    Some(Arc::new(b.finish()))
                }
            });
        }
        let control = if self.control { Some(control_arrays(batch)?) } else { None };
        Ok(Prepared { built, control })
    }

    /// The infallible half: moves `batch` into the buffers' owner and
    /// assembles the record batch.
    pub fn finish(&self, batch: Batch, prepared: Prepared) -> Exported {
        let rows = batch.len();
        // Pointers are taken before the move: a move of `Batch` does not move
        // the heap memory its columns (or the shared owners) hold.
        let spans: Vec<Option<(NonNull<u8>, usize)>> = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Hot { index, .. } => {
                    let bytes = batch.column_bytes(*index).expect("hot field");
                    Some((NonNull::from(bytes).cast::<u8>(), bytes.len()))
                }
                _ => None,
            })
            .collect();
        let owner = Arc::new(BatchOwner(Mutex::new(batch)));
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.arrow.fields().len());
        for ((c, built), span) in self.columns.iter().zip(prepared.built).zip(spans) {
            arrays.push(match (c, built, span) {
                (Column::Hot { size, data_type, .. }, _, Some((ptr, len))) => {
                    let buffer = owner_buffer(&owner, ptr, len);
                    hot_array(data_type, *size, rows, buffer)
                }
                (_, Some(a), _) => a,
                _ => unreachable!("every cold column was built by prepare"),
            });
        }
        if let Some(control) = prepared.control {
            arrays.extend(control);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let record_batch = RecordBatch::try_new_with_options(self.arrow.clone(), arrays, &options)
            .expect("the exporter builds columns of its own schema");
        Exported { record_batch, owner }
    }
}

/// The fallible part of an export, ready for [`Exporter::finish`].
#[derive(Debug)]
pub struct Prepared {
    built: Vec<Option<ArrayRef>>,
    control: Option<[ArrayRef; 4]>,
}

/// A batch exported to Arrow: the record batch, whose hot columns point
/// into the batch's memory, and a way to get the batch back.
#[derive(Debug)]
pub struct Exported {
    record_batch: RecordBatch,
    owner: Arc<BatchOwner>,
}

impl Exported {
    /// The record batch.
    pub fn record_batch(&self) -> &RecordBatch {
        &self.record_batch
    }

    /// The record batch, alone: the batch's memory lives as long as its
    /// buffers do.
    pub fn into_record_batch(self) -> RecordBatch {
        self.record_batch
    }

    /// Drops this record batch and returns the batch, with every buffer it
    /// had, if no other Arrow reference to its columns remains (clones of
    /// the record batch or its arrays); `None` otherwise, in which case the
    /// batch is freed when the last reference goes.
    pub fn into_batch(self) -> Option<Batch> {
        drop(self.record_batch);
        Arc::try_unwrap(self.owner).ok().map(|o| o.0.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Keeps an exported batch alive for the Arrow buffers pointing into it.
/// The batch is never accessed through the owner: the mutex only makes the
/// owner `Sync` (the batch's bump arena is not).
#[derive(Debug)]
struct BatchOwner(Mutex<Batch>);

fn owner_buffer(owner: &Arc<BatchOwner>, ptr: NonNull<u8>, len: usize) -> Buffer {
    // SAFETY: `ptr .. ptr + len` is a hot column of the batch inside
    // `owner` (its own aligned buffer, or the shared memory it imported),
    // taken just before the batch moved into `owner`; moving a `Batch` does
    // not move that memory. The owner keeps the batch, and so the memory,
    // alive as long as the buffer exists, and the batch is never reached
    // again while any buffer exists (`Exported::into_batch` only hands it
    // back once the owner is unique), so the memory is neither freed nor
    // written while Arrow reads it.
    unsafe { Buffer::from_custom_allocation(ptr, len, owner.clone()) }
}

/// An Arrow array over `buffer` holding `rows` values of a hot field.
pub(crate) fn hot_array(data_type: &DataType, size: usize, rows: usize, buffer: Buffer) -> ArrayRef {
    macro_rules! prim {
        ($t:ty) => {
            Arc::new(PrimitiveArray::<$t>::new(ScalarBuffer::new(buffer, 0, rows), None))
        };
    }
    match data_type {
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        _ => Arc::new(FixedSizeBinaryArray::new(size as i32, buffer, None)),
    }
}

fn check_offsets(column: &str, bytes: usize) -> Result<()> {
    if bytes > i32::MAX as usize {
        return Err(Error::Unsupported {
            column: column.to_string(),
            detail: format!("{bytes} bytes of values exceed what one Arrow Utf8/Binary array holds (2 GiB)"),
        });
    }
    Ok(())
}

/// Calls `put` once per row: with the value where the sparse table has
/// one, `None` elsewhere.
fn fill_sparse<'a, T: 'a>(
    rows: usize,
    entries: impl Iterator<Item = (usize, &'a T)>,
    mut put: impl FnMut(Option<&'a T>),
) {
    let mut next = 0;
    for (row, v) in entries {
        if row >= rows {
            break;
        }
        for _ in next..row {
            put(None);
        }
        put(Some(v));
        next = row + 1;
    }
    for _ in next..rows {
        put(None);
    }
}

fn control_arrays(batch: &Batch) -> Result<[ArrayRef; 4]> {
    let states = batch.states();
    let status: UInt16Array = states.iter().map(|s| s.status()).collect::<Vec<_>>().into();
    let stop: UInt16Array = states.iter().map(|s| s.stop_depth().map(|d| d as u16)).collect();
    let failed: BooleanArray = states.iter().map(|s| Some(s.is_failed())).collect();
    let messages: Vec<(usize, String)> = batch.errors().map(|(r, e)| (r, e.to_string())).collect();
    let bytes = messages.iter().map(|(_, m)| m.len()).sum();
    check_offsets(types::ERROR_COLUMN, bytes)?;
    let mut errors = StringBuilder::with_capacity(states.len(), bytes);
    fill_sparse(states.len(), messages.iter().map(|(r, m)| (*r, m)), |v| errors.append_option(v));
    Ok([Arc::new(status), Arc::new(stop), Arc::new(failed), Arc::new(errors.finish())])
}

/// Exports `batch` with the default options (every field, control columns)
/// without copying its hot columns. For many batches, build an [`Exporter`]
/// once.
///
/// ```
/// use mware::prelude::*;
///
/// let mut s = SchemaBuilder::new();
/// let id = s.hot::<u64>("id");
/// let schema = s.build()?;
/// let mut batch = Batch::new(&schema);
/// batch.extend_rows(1..=3u64, |row, v| row.set(id, v).map(|_| ()))?;
/// let ptr = batch.column(id)?.as_ptr();
///
/// let rb = mware::arrow::into_record_batch(batch)?;
/// let ids = rb.column(0).as_any().downcast_ref::<arrow_array::UInt64Array>().unwrap();
/// assert_eq!(ids.values().as_ptr(), ptr); // the batch's own column, not a copy
/// assert_eq!(rb.schema().field(1).name(), "mware_status");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn into_record_batch(batch: Batch) -> Result<RecordBatch> {
    let exporter = Exporter::new(batch.schema(), &ExportOptions::default())?;
    Ok(exporter.export(batch)?.into_record_batch())
}

/// The Arrow schema batches of `schema` export to with `options`.
pub fn arrow_schema(schema: &Schema, options: &ExportOptions) -> Result<SchemaRef> {
    Ok(Exporter::new(schema, options)?.arrow.clone())
}
