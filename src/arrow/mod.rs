//! Arrow arrays in and out, and Arrow IPC files (feature `arrow`).
//!
//! mware speaks the field's standard columnar format instead of one of its
//! own: a batch's hot columns *are* Arrow primitive arrays (contiguous,
//! 64-byte aligned), so they cross the boundary without a copy.
//!
//! - **Arrays.** [`import_record_batch`] / [`ColumnMap`] turn a
//!   `RecordBatch` into a batch whose hot columns point at the Arrow
//!   buffers; [`into_record_batch`] / [`Exporter`] turn a batch into a
//!   `RecordBatch` whose hot columns point at the batch's memory, plus the
//!   row control columns. The type mapping is in [`types`](self#type-mapping).
//! - **Files.** [`Writer`] appends batches to an Arrow IPC file, one record
//!   batch each, with per-column CRC-32s in each record batch's custom
//!   metadata, and fsyncs on [`finish`](Writer::finish).
//!   [`MappedFile`] maps a file, checks it, and [`Replay`] reads its record
//!   batches into batches whose read-only columns point into the mapping.
//!   Columns a pipeline writes are copied into ordinary columns before the
//!   run ([`Batch::import`](crate::Batch::import)); columns it only reads are
//!   never copied.
//!
//! ```
//! use mware::arrow::{ImportOptions, MappedFile, WriteOptions, Writer, ExportOptions};
//! use mware::gateway8::{Checksum, Composition, Fields, GatewayPipeline};
//! use mware::Batch;
//!
//! let (schema, f) = Fields::schema();
//! let rows = 20_000;
//! let path = std::env::temp_dir().join(format!("mware-mod-doc-{}.arrow", std::process::id()));
//!
//! // A request log of gateway-8 input, written batch by batch.
//! let inputs = ExportOptions::new().control(false).fields(["user_id", "token", "route", "payload_len", "ts_ns"]);
//! let mut w = Writer::create(&path, &schema, WriteOptions::new().export(inputs))?;
//! let mut batch = Batch::new(&schema);
//! for first in (0..rows).step_by(4096) {
//!     f.fill(&mut batch, 42, first as u64, 4096.min(rows - first))?;
//!     w.write(&mut batch)?;
//! }
//! w.finish()?;
//!
//! // Replayed from the mapping: inputs read in place, outputs computed.
//! let gw = GatewayPipeline::build(&f, &schema, rows as u64, Composition::Static, |b| b.threads(1))?;
//! let file = MappedFile::open(&path)?;
//! let replay = file.bind(&schema, &ImportOptions::new().for_pipeline(&gw.pipeline))?;
//! let mut sum = Checksum::default();
//! for i in 0..replay.len() {
//!     let stats = replay.read(i, &mut batch)?;
//!     assert_eq!(stats.import.copied, 0);
//!     gw.pipeline.run(&mut batch)?;
//!     assert!(batch.is_shared(f.user_id.index())); // read, never copied
//!     f.add_to(&mut sum, &batch)?;
//! }
//! sum.set_metrics(&gw.metrics.lock());
//! assert_eq!(sum.hist.iter().sum::<u64>(), rows as u64);
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Type mapping
//!
//! | mware field                              | Arrow column                                      |
//! |------------------------------------------|---------------------------------------------------|
//! | hot `u8 … u64`, `i8 … i64`, `f32`, `f64` | `UInt8 … UInt64`, `Int8 … Int64`, `Float32`, `Float64`, not null |
//! | hot, any other Pod type of `n` bytes     | `FixedSizeBinary(n)`, not null                    |
//! | cold `String`                            | `Utf8`, null where the row has no value           |
//! | cold `Vec<u8>`                           | `Binary`, null where the row has no value         |
//! | row control state (export)               | `mware_status: UInt16`, `mware_stop_depth: UInt16` (null = live), `mware_failed: Boolean`, `mware_error: Utf8` (null unless failed) |
//!
//! Import also accepts, for a hot `i64`/`i32` field, the temporal types of
//! the same width, and for cold fields `LargeUtf8`/`Utf8View` and
//! `LargeBinary`/`BinaryView`. Other cold types have no mapping: export
//! rejects them by name unless [`ExportOptions::fields`] leaves them out.
//!
//! # Bad input
//!
//! Every way an array or a file can be wrong is an [`Error`] variant naming
//! the column or record batch: [`NotArrow`](Error::NotArrow),
//! [`TruncatedFooter`](Error::TruncatedFooter),
//! [`TruncatedBatch`](Error::TruncatedBatch),
//! [`BufferOutOfBounds`](Error::BufferOutOfBounds),
//! [`CorruptMetadata`](Error::CorruptMetadata),
//! [`MissingColumn`](Error::MissingColumn),
//! [`TypeMismatch`](Error::TypeMismatch),
//! [`NullsInHotColumn`](Error::NullsInHotColumn),
//! [`ChecksumMismatch`](Error::ChecksumMismatch), …
//! The reader checks each record batch's metadata itself before arrow-ipc
//! decodes it, and catches any panic of the decoder
//! ([`Error::Panic`]).
//!
//! **Misaligned columns.** A hot column whose values are not aligned for
//! the field's type (possible in files from other writers, which only
//! promise 8-byte alignment, or in hand-made arrays) is read through *one
//! aligned copy* and counted in [`ImportStats::copied`]; with
//! [`ImportOptions::require_zero_copy`] it is rejected instead
//! ([`Error::Misaligned`]). Files mware writes align every buffer to 64
//! bytes, so their columns are always read in place.
//!
//! **Truncated files.** A file cut short while being written (no footer) is
//! rejected, saying how many complete record batches precede the cut;
//! [`ReadOptions::recover`] reads those batches (each one still verified
//! against its own checksums). Never silently wrong.
//!
//! # Checksums
//!
//! See [`CRC_KEY`] and [`LAYOUT_KEY`]: CRC-32s of each column's buffer bytes
//! as they lie in the file and of the batch's layout, verified before
//! decoding ([`Checksums`]: verify where present by default, require, or
//! skip). Files from other writers carry none and are read unverified
//! unless checksums are required.

mod checksum;
mod error;
mod export;
mod fb;
mod import;
mod reader;
mod types;
mod writer;

pub use checksum::{CRC_KEY, LAYOUT_KEY};
pub use error::{Error, Result};
pub use export::{ExportOptions, Exported, Exporter, Prepared, arrow_schema, into_record_batch};
pub use import::{ColumnMap, ImportOptions, ImportStats, import_record_batch};
pub use reader::{Checksums, MappedFile, ReadOptions, ReadStats, Recovery, Replay};
pub use types::{CONTROL_COLUMNS, ERROR_COLUMN, FAILED_COLUMN, STATUS_COLUMN, STOP_DEPTH_COLUMN};
pub use writer::{FILE_ALIGN, Sink, WriteOptions, Writer};
