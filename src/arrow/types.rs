//! How mware fields map to Arrow types.
//!
//! | mware field                          | Arrow column                          |
//! |--------------------------------------|---------------------------------------|
//! | hot `u8 … u64`, `i8 … i64`, `f32`, `f64` | `UInt8 … UInt64`, `Int8 … Int64`, `Float32`, `Float64`, not null |
//! | hot, any other Pod type of `n` bytes | `FixedSizeBinary(n)`, not null        |
//! | cold `String`                        | `Utf8`, null where the row has no value |
//! | cold `Vec<u8>`                       | `Binary`, null where the row has no value |
//! | row control state (export only)      | `mware_status: UInt16`, `mware_stop_depth: UInt16` (null = live), `mware_failed: Boolean`, `mware_error: Utf8` (null unless failed) |
//!
//! On import a hot `i64`/`i32` field also accepts the temporal Arrow types of
//! the same width (`Timestamp`, `Date64`, `Duration`, `Time64`; `Date32`,
//! `Time32`), and a cold field accepts `LargeUtf8`/`Utf8View` (`String`) or
//! `LargeBinary`/`BinaryView` (`Vec<u8>`).

use std::any::TypeId;

use arrow_schema::{DataType, Field as ArrowField};

use crate::schema::{FieldInfo, Storage};

/// The column that holds each row's response status on export.
pub const STATUS_COLUMN: &str = "mware_status";
/// The column that holds the depth a row stopped at (null while live).
pub const STOP_DEPTH_COLUMN: &str = "mware_stop_depth";
/// The column that says whether a stage failed the row.
pub const FAILED_COLUMN: &str = "mware_failed";
/// The column that holds a failed row's error (null otherwise).
pub const ERROR_COLUMN: &str = "mware_error";

/// The names of the row control columns, in export order.
pub const CONTROL_COLUMNS: [&str; 4] = [STATUS_COLUMN, STOP_DEPTH_COLUMN, FAILED_COLUMN, ERROR_COLUMN];

/// What kind of cold value a cold field holds, when Arrow can carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColdKind {
    Utf8,
    Binary,
}

/// The primitive a hot field's Rust type is, when it is one.
pub(crate) fn primitive_type(type_id: TypeId) -> Option<DataType> {
    let table: [(TypeId, DataType); 10] = [
        (TypeId::of::<u8>(), DataType::UInt8),
        (TypeId::of::<u16>(), DataType::UInt16),
        (TypeId::of::<u32>(), DataType::UInt32),
        (TypeId::of::<u64>(), DataType::UInt64),
        (TypeId::of::<i8>(), DataType::Int8),
        (TypeId::of::<i16>(), DataType::Int16),
        (TypeId::of::<i32>(), DataType::Int32),
        (TypeId::of::<i64>(), DataType::Int64),
        (TypeId::of::<f32>(), DataType::Float32),
        (TypeId::of::<f64>(), DataType::Float64),
    ];
    table.into_iter().find(|(t, _)| *t == type_id).map(|(_, d)| d)
}

/// The Arrow type of a hot field of `size` bytes.
pub(crate) fn hot_type(info: &FieldInfo, size: usize) -> DataType {
    primitive_type(info.type_id).unwrap_or(DataType::FixedSizeBinary(size as i32))
}

/// The alignment a hot field's values need to be read in place. For the
/// primitives it is exact; for other Pod types the schema does not record
/// the alignment, so the largest power of two dividing the size (an upper
/// bound of any Pod type's alignment, capped at a column's 64) is used.
pub(crate) fn hot_align(info: &FieldInfo, size: usize) -> usize {
    match primitive_type(info.type_id) {
        Some(dt) => dt.primitive_width().unwrap_or(1),
        None if size == 0 => 1,
        None => (1usize << size.trailing_zeros()).min(crate::COLUMN_ALIGN),
    }
}

/// The cold kind of a cold field, if Arrow can carry it.
pub(crate) fn cold_kind(info: &FieldInfo) -> Option<ColdKind> {
    if info.type_id == TypeId::of::<String>() {
        Some(ColdKind::Utf8)
    } else if info.type_id == TypeId::of::<Vec<u8>>() {
        Some(ColdKind::Binary)
    } else {
        None
    }
}

/// The Arrow field of an mware field, or `None` for a cold type Arrow
/// cannot carry.
pub(crate) fn arrow_field(info: &FieldInfo) -> Option<ArrowField> {
    match info.storage {
        Storage::Hot { size } => Some(ArrowField::new(&info.name, hot_type(info, size), false)),
        Storage::Cold => cold_kind(info).map(|k| {
            let dt = match k {
                ColdKind::Utf8 => DataType::Utf8,
                ColdKind::Binary => DataType::Binary,
            };
            ArrowField::new(&info.name, dt, true)
        }),
    }
}

/// The Arrow fields of the control columns.
pub(crate) fn control_fields() -> [ArrowField; 4] {
    [
        ArrowField::new(STATUS_COLUMN, DataType::UInt16, false),
        ArrowField::new(STOP_DEPTH_COLUMN, DataType::UInt16, true),
        ArrowField::new(FAILED_COLUMN, DataType::Boolean, false),
        ArrowField::new(ERROR_COLUMN, DataType::Utf8, true),
    ]
}

/// Whether a column of type `found` can be read as a hot field whose Arrow
/// type is `expected` (same physical layout).
pub(crate) fn hot_compatible(expected: &DataType, found: &DataType) -> bool {
    if expected == found {
        return true;
    }
    match expected {
        DataType::Int64 => matches!(
            found,
            DataType::Timestamp(..) | DataType::Date64 | DataType::Duration(_) | DataType::Time64(_)
        ),
        DataType::Int32 => matches!(found, DataType::Date32 | DataType::Time32(_)),
        _ => false,
    }
}

/// Whether a column of type `found` can be read into a cold field of `kind`.
pub(crate) fn cold_compatible(kind: ColdKind, found: &DataType) -> bool {
    match kind {
        ColdKind::Utf8 => matches!(found, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
        ColdKind::Binary => matches!(found, DataType::Binary | DataType::LargeBinary | DataType::BinaryView),
    }
}
