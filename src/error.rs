//! The crate's error type.

use std::fmt;
use std::sync::Arc;

/// Everything that can go wrong in mware, from building a schema to running a
/// pipeline. Messages name the stage and the field involved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A schema declares two fields with the same name.
    DuplicateField {
        /// The field's name.
        field: String,
    },
    /// A hot field's type is aligned beyond the 64 bytes a column guarantees.
    OverAligned {
        /// The field's name.
        field: String,
        /// Its alignment.
        align: usize,
    },
    /// A field handle was used with a batch or pipeline of another schema.
    ForeignField {
        /// Where the handle was used (a stage name, or `batch`).
        stage: String,
        /// The field's index in its own schema.
        field: u32,
    },
    /// A hot-column operation on a cold field or the reverse.
    StorageMismatch {
        /// Where (a stage name, or `batch`).
        stage: String,
        /// The field's name.
        field: String,
        /// What the access expected: `hot` or `cold`.
        expected: &'static str,
    },
    /// One stage declares the same field twice and writes it at least once.
    AliasedAccess {
        /// The stage.
        stage: String,
        /// The field.
        field: String,
    },
    /// A pipeline without stages.
    EmptyPipeline,
    /// Two stages share a name.
    DuplicateStage {
        /// The name.
        stage: String,
    },
    /// A batch of one schema run through a pipeline built for another.
    SchemaMismatch,
    /// A row index past the end of the batch.
    RowOutOfBounds {
        /// The index.
        row: usize,
        /// The batch's length.
        len: usize,
    },
    /// Columns of different lengths where one length is needed.
    LengthMismatch {
        /// The field.
        field: String,
        /// The length given.
        got: usize,
        /// The length expected.
        expected: usize,
    },
    /// An invalid setting.
    Config(String),
    /// A stage failed (a panic or an error) for a row; kept per row.
    Stage(StageError),
    /// [`Pipeline::run`](crate::Pipeline::run) on a pipeline holding an
    /// async stage, which only [`run_async`](crate::Pipeline::run_async)
    /// can await.
    AsyncStage {
        /// The (first) async stage.
        stage: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::DuplicateField { field } => write!(f, "field `{field}` is declared twice"),
            Error::OverAligned { field, align } => {
                write!(f, "hot field `{field}` needs alignment {align}, columns give 64")
            }
            Error::ForeignField { stage, field } => {
                write!(f, "{stage}: field #{field} belongs to another schema")
            }
            Error::StorageMismatch { stage, field, expected } => {
                let other = if *expected == "hot" { "cold" } else { "hot" };
                write!(f, "{stage}: field `{field}` is {other}, accessed as {expected}")
            }
            Error::AliasedAccess { stage, field } => {
                write!(f, "stage `{stage}` accesses field `{field}` twice and writes it")
            }
            Error::EmptyPipeline => write!(f, "the pipeline has no stages"),
            Error::DuplicateStage { stage } => write!(f, "two stages are named `{stage}`"),
            Error::SchemaMismatch => write!(f, "the batch's schema is not the pipeline's"),
            Error::RowOutOfBounds { row, len } => {
                write!(f, "row {row} is out of bounds for a batch of {len} rows")
            }
            Error::LengthMismatch { field, got, expected } => {
                write!(f, "column `{field}` has {got} values, expected {expected}")
            }
            Error::Config(msg) => write!(f, "invalid setting: {msg}"),
            Error::Stage(e) => e.fmt(f),
            Error::AsyncStage { stage } => {
                write!(
                    f,
                    "stage `{stage}` is async: run the batch with Pipeline::run_async (or a stream runner)"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// Why a row failed: the stage and its message (a panic's payload or the
/// error the stage reported). Kept per row in the batch's error table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageError {
    /// The stage that failed the row.
    pub stage: Arc<str>,
    /// What it said.
    pub message: String,
    /// `true` when the stage panicked.
    pub panicked: bool,
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.panicked { "panicked" } else { "failed" };
        write!(f, "stage `{}` {what}: {}", self.stage, self.message)
    }
}

impl std::error::Error for StageError {}

/// A convenient result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
