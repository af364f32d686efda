//! The error type of `mware::arrow`: one variant per way an Arrow array or
//! file can be wrong, each naming the column or record batch involved.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong converting Arrow arrays or reading and
/// writing Arrow IPC files. Bad input is always one of these, never a panic.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// Opening, reading, writing or syncing a file failed.
    Io {
        /// The file, when known.
        path: Option<PathBuf>,
        /// What the operating system said.
        source: Arc<std::io::Error>,
    },
    /// The bytes do not start with the Arrow IPC file magic (`ARROW1`).
    NotArrow {
        /// What was found instead.
        detail: String,
    },
    /// The file ends before (or inside) its footer: every record batch in it
    /// is complete, but the footer that indexes them is missing or cut.
    /// [`ReadOptions::recover`](super::ReadOptions::recover) reads the
    /// complete batches anyway.
    TruncatedFooter {
        /// The file's length in bytes.
        file_len: u64,
        /// Complete record batches found by scanning the file.
        complete_batches: usize,
        /// Details.
        detail: String,
    },
    /// A record batch is cut short: its message or body extends past the end
    /// of the file (or of the data before the footer).
    TruncatedBatch {
        /// The record batch's position in the file.
        batch: usize,
        /// The byte offset its block would need to reach.
        needed: u64,
        /// The bytes available.
        available: u64,
        /// Complete record batches before it.
        complete_batches: usize,
    },
    /// A buffer of a record batch points outside the batch's body.
    BufferOutOfBounds {
        /// The record batch.
        batch: usize,
        /// The column the buffer belongs to (or `#k` when the layout is
        /// unknown).
        column: String,
        /// The buffer's offset in the body.
        offset: i64,
        /// The buffer's length.
        len: i64,
        /// The body's length.
        body_len: i64,
    },
    /// The IPC metadata (footer, message header, schema) is malformed.
    CorruptMetadata {
        /// The record batch, when the problem is in one.
        batch: Option<usize>,
        /// Details.
        detail: String,
    },
    /// A column a hot field needs is not in the Arrow schema.
    MissingColumn {
        /// The field's (and expected column's) name.
        column: String,
    },
    /// A column's Arrow type does not match the field's type.
    TypeMismatch {
        /// The column.
        column: String,
        /// The Arrow type the field maps to.
        expected: String,
        /// The column's Arrow type.
        found: String,
    },
    /// A hot (non-nullable) column holds nulls.
    NullsInHotColumn {
        /// The column.
        column: String,
        /// How many nulls.
        nulls: usize,
    },
    /// A column's stored checksum does not match its bytes.
    ChecksumMismatch {
        /// The record batch.
        batch: usize,
        /// The column, or `(layout)` for the batch's buffer layout.
        column: String,
        /// The stored checksum.
        expected: u32,
        /// The checksum of the bytes in the file.
        actual: u32,
    },
    /// Checksums were required but a record batch carries none.
    ChecksumMissing {
        /// The record batch.
        batch: usize,
    },
    /// A column's values are not aligned for its type, so they cannot be
    /// read in place, and [`ImportOptions::require_zero_copy`](super::ImportOptions::require_zero_copy)
    /// forbids the aligned copy.
    Misaligned {
        /// The record batch.
        batch: usize,
        /// The column.
        column: String,
        /// The alignment the field's type needs.
        align: usize,
    },
    /// A field type mware cannot map to Arrow (cold fields other than
    /// `String` and `Vec<u8>`), or an Arrow feature mware does not read.
    Unsupported {
        /// The column.
        column: String,
        /// Details.
        detail: String,
    },
    /// The Arrow decoder rejected a record batch.
    Decode {
        /// The record batch, when decoding one.
        batch: Option<usize>,
        /// The decoder's message.
        message: String,
    },
    /// The Arrow decoder panicked on malformed input; mware caught it.
    Panic {
        /// The record batch, when decoding one.
        batch: Option<usize>,
        /// The panic's message.
        message: String,
    },
    /// A batch or setting mware itself rejects (wrong schema, …).
    Mware(crate::Error),
}

impl Error {
    pub(crate) fn io(path: Option<&std::path::Path>, e: std::io::Error) -> Error {
        Error::Io { path: path.map(|p| p.to_path_buf()), source: Arc::new(e) }
    }

    pub(crate) fn corrupt(batch: Option<usize>, detail: impl Into<String>) -> Error {
        Error::CorruptMetadata { batch, detail: detail.into() }
    }

    pub(crate) fn decode(batch: Option<usize>, e: arrow_schema::ArrowError) -> Error {
        Error::Decode { batch, message: e.to_string() }
    }
}

fn batch_ctx(batch: &Option<usize>) -> String {
    match batch {
        Some(b) => format!("record batch {b}: "),
        None => String::new(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path: Some(p), source } => write!(f, "{}: {source}", p.display()),
            Error::Io { path: None, source } => write!(f, "i/o error: {source}"),
            Error::NotArrow { detail } => write!(f, "not an Arrow IPC file: {detail}"),
            Error::TruncatedFooter { file_len, complete_batches, detail } => write!(
                f,
                "truncated Arrow file ({file_len} bytes): {detail}; {complete_batches} complete record \
                 batches precede the cut (open with recovery to read them)"
            ),
            Error::TruncatedBatch { batch, needed, available, complete_batches } => write!(
                f,
                "record batch {batch} is truncated: it needs {needed} bytes, {available} are there \
                 ({complete_batches} complete record batches precede it)"
            ),
            Error::BufferOutOfBounds { batch, column, offset, len, body_len } => write!(
                f,
                "record batch {batch}, column `{column}`: buffer at {offset}+{len} lies outside the \
                 body of {body_len} bytes"
            ),
            Error::CorruptMetadata { batch, detail } => {
                write!(f, "{}corrupt Arrow metadata: {detail}", batch_ctx(batch))
            }
            Error::MissingColumn { column } => write!(f, "column `{column}` is missing"),
            Error::TypeMismatch { column, expected, found } => {
                write!(f, "column `{column}` has Arrow type {found}, the field needs {expected}")
            }
            Error::NullsInHotColumn { column, nulls } => {
                write!(f, "column `{column}` holds {nulls} nulls, but its field is hot (never null)")
            }
            Error::ChecksumMismatch { batch, column, expected, actual } => write!(
                f,
                "record batch {batch}, column `{column}`: checksum mismatch (stored {expected:08x}, \
                 computed {actual:08x})"
            ),
            Error::ChecksumMissing { batch } => {
                write!(f, "record batch {batch} carries no checksums, and they are required")
            }
            Error::Misaligned { batch, column, align } => write!(
                f,
                "record batch {batch}, column `{column}`: values are not {align}-byte aligned, so \
                 they cannot be read in place"
            ),
            Error::Unsupported { column, detail } => write!(f, "column `{column}`: {detail}"),
            Error::Decode { batch, message } => write!(f, "{}Arrow decoder: {message}", batch_ctx(batch)),
            Error::Panic { batch, message } => {
                write!(f, "{}Arrow decoder panicked (caught): {message}", batch_ctx(batch))
            }
            Error::Mware(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(&**source),
            Error::Mware(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Self {
        Error::Mware(e)
    }
}

/// Lets `?` carry an Arrow error into code returning [`mware::Result`](crate::Result);
/// the message is kept, the variant becomes [`crate::Error::Config`].
impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Mware(e) => e,
            e => crate::Error::Config(e.to_string()),
        }
    }
}

/// Results of `mware::arrow`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
