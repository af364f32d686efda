//! Arrow `RecordBatch` → batch, without copying the hot columns.
//!
//! A hot field's column becomes a read-only shared column of the batch that
//! points at the Arrow buffer (which it keeps alive). The pipeline copies a
//! shared column only if one of its stages writes the field; columns it only
//! reads are never copied. Cold `Utf8`/`Binary` columns are copied into the
//! batch's side tables (they are sparse and owned by the batch).

use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Schema as ArrowSchema};

use super::error::{Error, Result};
use super::types::{self, ColdKind};
use crate::batch::Batch;
use crate::column::SharedColumn;
use crate::control::RowState;
use crate::error::StageError;
use crate::pipeline::Pipeline;
use crate::schema::{Field, Schema, Storage};

/// How Arrow columns are matched to a batch's fields.
///
/// ```
/// use mware::arrow::ImportOptions;
/// let opts = ImportOptions::new().optional(["cost", "score"]).restore_control(true);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub(crate) optional: Vec<String>,
    pub(crate) restore_control: bool,
    pub(crate) require_zero_copy: bool,
}

impl ImportOptions {
    /// Every hot field is required; control columns are ignored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hot fields that may be missing from the Arrow schema: they start
    /// zeroed, as new rows of a batch do.
    pub fn optional<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.optional.extend(names.into_iter().map(Into::into));
        self
    }

    /// Makes every hot field that `pipeline` writes optional: a request log
    /// holds the pipeline's inputs, not its outputs.
    pub fn for_pipeline(self, pipeline: &Pipeline) -> Self {
        let schema = pipeline.schema();
        let names: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| matches!(f.storage, Storage::Hot { .. }) && pipeline.written_hot.contains(&f.slot))
            .map(|f| f.name.clone())
            .collect();
        self.optional(names)
    }

    /// Restores each row's control state (status, stop depth, failure and
    /// error) from the `mware_*` control columns when they are present
    /// (default: off, every imported row starts live and pending).
    pub fn restore_control(mut self, on: bool) -> Self {
        self.restore_control = on;
        self
    }

    /// Rejects ([`Error::Misaligned`]) a column whose values are not
    /// aligned for the field's type instead of reading it through one
    /// aligned copy (the default).
    pub fn require_zero_copy(mut self, on: bool) -> Self {
        self.require_zero_copy = on;
        self
    }
}

/// What one import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Rows imported.
    pub rows: usize,
    /// Hot columns read in place (no copy).
    pub zero_copy: usize,
    /// Hot columns copied once because their values were misaligned (or,
    /// for files, because the Arrow decoder had realigned them).
    pub copied: usize,
    /// Optional hot columns missing from the input, zeroed.
    pub zeroed: usize,
}

impl std::ops::AddAssign for ImportStats {
    fn add_assign(&mut self, o: Self) {
        self.rows += o.rows;
        self.zero_copy += o.zero_copy;
        self.copied += o.copied;
        self.zeroed += o.zeroed;
    }
}

#[derive(Clone, Debug)]
struct HotColumn {
    index: usize,
    name: String,
    size: usize,
    align: usize,
    type_id: std::any::TypeId,
    type_name: &'static str,
    column: Option<usize>,
}

#[derive(Clone, Debug)]
enum ColdColumn {
    Str(Field<String>, usize),
    Bin(Field<Vec<u8>>, usize),
}

/// Which Arrow column feeds which field, checked once against an Arrow
/// schema and then used for every record batch of that schema.
#[derive(Clone, Debug)]
pub struct ColumnMap {
    schema: Schema,
    hot: Vec<HotColumn>,
    cold: Vec<ColdColumn>,
    control: Option<[usize; 4]>,
    require_zero_copy: bool,
}

impl ColumnMap {
    /// Matches `schema`'s fields to `arrow`'s columns by name. Every hot
    /// field needs a column of its type unless it is optional; cold fields
    /// of types Arrow can carry are filled when a column of a matching type
    /// exists (a cold field has no value on rows without one anyway).
    /// Errors name the column.
    pub fn new(schema: &Schema, arrow: &ArrowSchema, options: &ImportOptions) -> Result<ColumnMap> {
        let position = |name: &str| arrow.fields().iter().position(|f| f.name() == name);
        let mut hot = Vec::new();
        let mut cold = Vec::new();
        for (index, info) in schema.fields().iter().enumerate() {
            match info.storage {
                Storage::Hot { size } => {
                    let column = match position(&info.name) {
                        Some(c) => {
                            let expected = types::hot_type(info, size);
                            let found = arrow.field(c).data_type();
                            if !types::hot_compatible(&expected, found) {
                                return Err(Error::TypeMismatch {
                                    column: info.name.clone(),
                                    expected: expected.to_string(),
                                    found: found.to_string(),
                                });
                            }
                            Some(c)
                        }
                        None if options.optional.contains(&info.name) => None,
                        None => return Err(Error::MissingColumn { column: info.name.clone() }),
                    };
                    hot.push(HotColumn {
                        index,
                        name: info.name.clone(),
                        size,
                        align: types::hot_align(info, size),
                        type_id: info.type_id,
                        type_name: info.type_name,
                        column,
                    });
                }
                Storage::Cold => {
                    let (Some(kind), Some(c)) = (types::cold_kind(info), position(&info.name)) else {
                        continue;
                    };
                    let found = arrow.field(c).data_type();
                    if !types::cold_compatible(kind, found) {
                        return Err(Error::TypeMismatch {
                            column: info.name.clone(),
                            expected: cold_expected(kind).into(),
                            found: found.to_string(),
                        });
                    }
                    cold.push(match kind {
                        ColdKind::Utf8 => {
                            ColdColumn::Str(schema.handle(&info.name).expect("type checked"), c)
                        }
                        ColdKind::Binary => {
                            ColdColumn::Bin(schema.handle(&info.name).expect("type checked"), c)
                        }
                    });
                }
            }
        }
        let control = if options.restore_control { control_columns(arrow)? } else { None };
        Ok(ColumnMap {
            schema: schema.clone(),
            hot,
            cold,
            control,
            require_zero_copy: options.require_zero_copy,
        })
    }

    /// The Arrow columns this map reads, ascending (a decoder projection).
    pub fn projection(&self) -> Vec<usize> {
        let mut p: Vec<usize> = self
            .hot
            .iter()
            .filter_map(|h| h.column)
            .chain(self.cold.iter().map(|c| match c {
                ColdColumn::Str(_, c) | ColdColumn::Bin(_, c) => *c,
            }))
            .chain(self.control.iter().flatten().copied())
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// The same map over record batches that hold only the columns of
    /// `projection` (in that order), as a projecting decoder returns them.
    pub(crate) fn projected(&self, projection: &[usize]) -> ColumnMap {
        let at = |c: usize| projection.iter().position(|&p| p == c).expect("projection covers the map");
        let mut m = self.clone();
        for h in &mut m.hot {
            h.column = h.column.map(at);
        }
        for c in &mut m.cold {
            match c {
                ColdColumn::Str(_, c) | ColdColumn::Bin(_, c) => *c = at(*c),
            }
        }
        if let Some(ctl) = &mut m.control {
            for c in ctl.iter_mut() {
                *c = at(*c);
            }
        }
        m
    }

    /// The names of the hot fields this map reads from Arrow columns.
    pub fn hot_columns(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.hot.iter().filter_map(|h| h.column.map(|c| (h.name.as_str(), c)))
    }

    /// Replaces `batch`'s rows with `record_batch`'s, reading hot columns in
    /// place. `batch` must have the map's schema.
    pub fn import(&self, record_batch: &RecordBatch, batch: &mut Batch) -> Result<ImportStats> {
        self.import_from(record_batch, batch, None, None)
    }

    /// [`import`](Self::import) for a record batch decoded from `source`
    /// (a file's bytes): a column whose values lie outside `source` was
    /// copied by the decoder and is counted as copied.
    pub(crate) fn import_from(
        &self,
        record_batch: &RecordBatch,
        batch: &mut Batch,
        source: Option<Range<usize>>,
        batch_no: Option<usize>,
    ) -> Result<ImportStats> {
        if batch.schema() != &self.schema {
            return Err(Error::Mware(crate::Error::SchemaMismatch));
        }
        let rows = record_batch.num_rows();
        let mut stats = ImportStats { rows, ..ImportStats::default() };
        let mut shared = Vec::with_capacity(self.hot.len());
        for h in &self.hot {
            let Some(c) = h.column else {
                stats.zeroed += 1;
                continue;
            };
            let array = record_batch.column(c);
            if array.null_count() > 0 {
                return Err(Error::NullsInHotColumn { column: h.name.clone(), nulls: array.null_count() });
            }
            let data = array.to_data();
            let (Some(values), Some(want)) = (data.buffers().first(), rows.checked_mul(h.size)) else {
                return Err(Error::corrupt(batch_no, format!("column `{}` has no value buffer", h.name)));
            };
            let start = data.offset().saturating_mul(h.size);
            if array.len() != rows || start.saturating_add(want) > values.len() {
                return Err(Error::corrupt(
                    batch_no,
                    format!("column `{}` holds fewer than {rows} values", h.name),
                ));
            }
            let mut bytes = values.slice_with_length(start, want);
            let addr = bytes.as_ptr() as usize;
            let outside = source.as_ref().is_some_and(|r| !r.contains(&addr) && want > 0);
            if addr % h.align != 0 || outside {
                if self.require_zero_copy {
                    return Err(Error::Misaligned {
                        batch: batch_no.unwrap_or(0),
                        column: h.name.clone(),
                        align: h.align,
                    });
                }
                if addr % h.align != 0 {
                    // One copy into an Arrow allocation (64-byte aligned).
                    bytes = Buffer::from_slice_ref(bytes.as_slice());
                }
                stats.copied += 1;
            } else {
                stats.zero_copy += 1;
            }
            shared.push((h.index, shared_column(bytes, h)));
        }
        batch.import(rows, shared)?;
        for c in &self.cold {
            match c {
                ColdColumn::Str(f, c) => fill_strings(record_batch.column(*c), batch.cold_mut(*f)?),
                ColdColumn::Bin(f, c) => fill_binary(record_batch.column(*c), batch.cold_mut(*f)?),
            }
        }
        if let Some(ctl) = self.control {
            restore_control(record_batch, ctl, batch);
        }
        Ok(stats)
    }
}

/// Values owned by an Arrow buffer, read in place by a batch.
struct ArrowBytes(Buffer);

impl AsRef<[u8]> for ArrowBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A shared column of the field's type over `bytes` (length and alignment
/// checked by the caller; typed access re-checks both, so a mistake would
/// panic, never read out of bounds).
fn shared_column(bytes: Buffer, h: &HotColumn) -> SharedColumn {
    let mut column = SharedColumn::new::<u8, _>(Arc::new(ArrowBytes(bytes)));
    column.type_id = h.type_id;
    column.type_name = h.type_name;
    column
}

fn cold_expected(kind: ColdKind) -> &'static str {
    match kind {
        ColdKind::Utf8 => "Utf8 (or LargeUtf8, Utf8View)",
        ColdKind::Binary => "Binary (or LargeBinary, BinaryView)",
    }
}

fn fill_strings(array: &dyn Array, out: &mut crate::ColdColumn<String>) {
    let mut put = |i: usize, v: &str| {
        out.insert(i, v.to_string());
    };
    match array.data_type() {
        DataType::Utf8 => {
            array.as_string::<i32>().iter().enumerate().for_each(|(i, v)| v.map_or((), |v| put(i, v)))
        }
        DataType::LargeUtf8 => {
            array.as_string::<i64>().iter().enumerate().for_each(|(i, v)| v.map_or((), |v| put(i, v)))
        }
        _ => array.as_string_view().iter().enumerate().for_each(|(i, v)| v.map_or((), |v| put(i, v))),
    }
}

fn fill_binary(array: &dyn Array, out: &mut crate::ColdColumn<Vec<u8>>) {
    let mut put = |i: usize, v: &[u8]| {
        out.insert(i, v.to_vec());
    };
    match array.data_type() {
        DataType::Binary => {
            array.as_binary::<i32>().iter().enumerate().for_each(|(i, v)| v.map_or((), |v| put(i, v)))
        }
        DataType::LargeBinary => {
            array.as_binary::<i64>().iter().enumerate().for_each(|(i, v)| v.map_or((), |v| put(i, v)))
        }
        _ => array.as_binary_view().iter().enumerate().for_each(|(i, v)| v.map_or((), |v| put(i, v))),
    }
}

fn control_columns(arrow: &ArrowSchema) -> Result<Option<[usize; 4]>> {
    let fields = types::control_fields();
    let mut found = [0usize; 4];
    for (slot, f) in fields.iter().enumerate() {
        let Some(c) = arrow.fields().iter().position(|a| a.name() == f.name()) else {
            return Ok(None);
        };
        let t = arrow.field(c).data_type();
        if t != f.data_type() {
            return Err(Error::TypeMismatch {
                column: f.name().clone(),
                expected: f.data_type().to_string(),
                found: t.to_string(),
            });
        }
        found[slot] = c;
    }
    Ok(Some(found))
}

/// Parses the `Display` of a [`StageError`] back (`stage `s` failed: m`).
fn parse_stage_error(text: &str) -> StageError {
    let parsed = text.strip_prefix("stage `").and_then(|rest| {
        let (stage, rest) = rest.split_once('`')?;
        let (panicked, message) = if let Some(m) = rest.strip_prefix(" panicked: ") {
            (true, m)
        } else {
            (false, rest.strip_prefix(" failed: ")?)
        };
        Some(StageError { stage: stage.into(), message: message.to_string(), panicked })
    });
    parsed.unwrap_or_else(|| StageError {
        stage: "import".into(),
        message: text.to_string(),
        panicked: false,
    })
}

fn restore_control(rb: &RecordBatch, ctl: [usize; 4], batch: &mut Batch) {
    let status = rb.column(ctl[0]).as_primitive::<arrow_array::types::UInt16Type>();
    let depth = rb.column(ctl[1]).as_primitive::<arrow_array::types::UInt16Type>();
    let failed = rb.column(ctl[2]).as_boolean();
    let errors = rb.column(ctl[3]).as_string::<i32>();
    let (parts, _) = batch.parts();
    for (row, state) in parts.states.iter_mut().enumerate() {
        let s = if status.is_valid(row) { status.value(row) } else { 0 };
        *state = match depth.is_valid(row).then(|| depth.value(row)) {
            None => RowState::LIVE.with_status(s),
            Some(d) => {
                let d = d.min(crate::MAX_DEPTH as u16);
                let mut st = RowState::rejected(d, s);
                if failed.is_valid(row) && failed.value(row) {
                    st.fail(d);
                }
                st
            }
        };
        if errors.is_valid(row) {
            parts.errors.insert(row, parse_stage_error(errors.value(row)));
        }
    }
}

/// Imports `record_batch` into `batch` (same column names and types as the
/// batch's schema; every hot field required), reading hot columns in place.
/// For many record batches of one schema, build a [`ColumnMap`] once.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{RecordBatch, UInt64Array};
/// use mware::prelude::*;
///
/// let mut s = SchemaBuilder::new();
/// let id = s.hot::<u64>("id");
/// let schema = s.build()?;
/// let ids = UInt64Array::from(vec![7, 8, 9]);
/// let rb = RecordBatch::try_from_iter([("id", Arc::new(ids.clone()) as _)])?;
///
/// let mut batch = Batch::new(&schema);
/// mware::arrow::import_record_batch(&rb, &mut batch)?;
/// assert_eq!(batch.column(id)?, &[7, 8, 9]);
/// assert_eq!(batch.column(id)?.as_ptr(), ids.values().as_ptr()); // no copy
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import_record_batch(record_batch: &RecordBatch, batch: &mut Batch) -> Result<ImportStats> {
    let map = ColumnMap::new(batch.schema(), &record_batch.schema(), &ImportOptions::default())?;
    map.import(record_batch, batch)
}
