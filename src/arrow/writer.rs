//! Appends batches to an Arrow IPC file: one record batch per batch, so a
//! large log is written incrementally, each with per-column checksums in
//! its message's custom metadata; the footer on [`finish`](Writer::finish),
//! then flush and fsync.
//!
//! The file is the standard Arrow IPC file format (`ARROW1`, the schema
//! message, record batch messages, an end-of-stream marker, the footer),
//! 64-byte aligned, readable by pyarrow, DuckDB, Polars and arrow-rs. A file
//! whose writer stopped before `finish` (a crash, a full disk) has complete
//! record batches followed by at most one cut one and no footer: the reader
//! rejects it with [`Error::TruncatedFooter`] or [`Error::TruncatedBatch`],
//! or reads the complete batches when asked to recover.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_ipc::MetadataVersion;
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_schema::SchemaRef;

use super::checksum;
use super::error::{Error, Result};
use super::export::{ExportOptions, Exporter};
use super::fb::{self, BlockRef};
use crate::batch::Batch;
use crate::schema::Schema;

/// The alignment of every message and buffer mware writes.
pub const FILE_ALIGN: usize = 64;

const MAGIC: &[u8; 6] = b"ARROW1";
const CONTINUATION: [u8; 4] = [0xFF; 4];
const ZEROS: [u8; FILE_ALIGN] = [0; FILE_ALIGN];

/// Where a [`Writer`] writes: anything `Write`, with a way to make written
/// bytes durable (`fsync` for files; nothing for memory).
pub trait Sink: Write {
    /// Makes everything written so far durable.
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}
impl Sink for Vec<u8> {}
impl Sink for std::io::Cursor<Vec<u8>> {}
impl<S: Sink + ?Sized> Sink for &mut S {
    fn sync(&mut self) -> std::io::Result<()> {
        (**self).sync()
    }
}

/// What a [`Writer`] writes.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub(crate) export: ExportOptions,
    pub(crate) checksums: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { export: ExportOptions::default(), checksums: true }
    }
}

impl WriteOptions {
    /// Every field plus the row control columns, with checksums.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which columns each record batch holds (see [`ExportOptions`]); a
    /// request log of raw input usually drops the control columns and the
    /// fields the pipeline computes.
    pub fn export(mut self, export: ExportOptions) -> Self {
        self.export = export;
        self
    }

    /// Whether to store per-column checksums (default: on).
    pub fn checksums(mut self, on: bool) -> Self {
        self.checksums = on;
        self
    }
}

/// Writes batches of one schema to an Arrow IPC file.
///
/// ```
/// use mware::arrow::{MappedFile, WriteOptions, Writer};
/// use mware::prelude::*;
///
/// let mut s = SchemaBuilder::new();
/// let id = s.hot::<u64>("id");
/// let schema = s.build()?;
/// let mut batch = Batch::new(&schema);
/// batch.extend_rows(0..1000u64, |row, v| row.set(id, v).map(|_| ()))?;
///
/// let path = std::env::temp_dir().join(format!("mware-doc-{}.arrow", std::process::id()));
/// let mut w = Writer::create(&path, &schema, WriteOptions::new())?;
/// w.write(&mut batch)?; // zero-copy export; the batch comes back intact
/// w.write(&mut batch)?;
/// w.finish()?; // footer, flush, fsync
///
/// let file = MappedFile::open(&path)?;
/// assert_eq!(file.num_batches(), 2);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Writer<S: Sink = File> {
    out: BufWriter<S>,
    path: Option<PathBuf>,
    pos: u64,
    blocks: Vec<BlockRef>,
    exporter: Exporter,
    ipc: IpcWriteOptions,
    data_gen: IpcDataGenerator,
    tracker: DictionaryTracker,
    schema_message: Vec<u8>,
    spare: Option<Batch>,
    rows: u64,
    checksums: bool,
}

impl<S: Sink> std::fmt::Debug for Writer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).field("batches", &self.blocks.len()).finish()
    }
}

impl Writer<File> {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>, schema: &Schema, options: WriteOptions) -> Result<Writer<File>> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|e| Error::io(Some(path), e))?;
        let mut w = Writer::new(file, schema, options)?;
        w.path = Some(path.to_path_buf());
        Ok(w)
    }
}

impl<S: Sink> Writer<S> {
    /// Starts a file on `sink`: writes the magic and the schema.
    pub fn new(sink: S, schema: &Schema, options: WriteOptions) -> Result<Writer<S>> {
        let exporter = Exporter::new(schema, &options.export)?;
        let ipc = IpcWriteOptions::try_new(FILE_ALIGN, false, MetadataVersion::V5)
            .map_err(|e| Error::decode(None, e))?;
        let data_gen = IpcDataGenerator::default();
        let mut tracker = DictionaryTracker::new(false);
        let schema_message = data_gen
            .schema_to_bytes_with_dictionary_tracker(exporter.arrow_schema(), &mut tracker, &ipc)
            .ipc_message;
        let mut w = Writer {
            out: BufWriter::with_capacity(1 << 20, sink),
            path: None,
            pos: 0,
            blocks: Vec::new(),
            exporter,
            ipc,
            data_gen,
            tracker,
            schema_message,
            spare: Some(Batch::new(schema)),
            rows: 0,
            checksums: options.checksums,
        };
        w.put(MAGIC)?;
        w.pad()?;
        let message = w.schema_message.clone();
        w.message(&message, &[])?;
        Ok(w)
    }

    /// The Arrow schema of the file.
    pub fn arrow_schema(&self) -> &SchemaRef {
        self.exporter.arrow_schema()
    }

    /// Record batches written so far.
    pub fn batches(&self) -> usize {
        self.blocks.len()
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends `batch` (raw or processed) as one record batch. The batch is
    /// exported without copying its columns and is given back unchanged.
    pub fn write(&mut self, batch: &mut Batch) -> Result<()> {
        let prepared = self.exporter.prepare(batch)?;
        let spare = self.spare.take().unwrap_or_else(|| Batch::new(self.exporter.schema()));
        let owned = std::mem::replace(batch, spare);
        let exported = self.exporter.finish(owned, prepared);
        let result = self.write_record_batch(exported.record_batch());
        let spare = std::mem::replace(
            batch,
            exported.into_batch().expect("the writer keeps no reference to the exported columns"),
        );
        self.spare = Some(spare);
        result
    }

    /// Appends a record batch that has the file's Arrow schema.
    pub fn write_record_batch(&mut self, record_batch: &RecordBatch) -> Result<()> {
        if record_batch.schema().fields() != self.arrow_schema().fields() {
            return Err(Error::Mware(crate::Error::Config(format!(
                "the record batch's schema {:?} is not the file's {:?}",
                record_batch.schema().fields(),
                self.arrow_schema().fields()
            ))));
        }
        #[allow(deprecated)] // `encode` replaces it from arrow 57 on; this works on 55 too.
        let (dictionaries, encoded) = self
            .data_gen
            .encoded_batch(record_batch, &mut self.tracker, &self.ipc)
            .map_err(|e| Error::decode(None, e))?;
        if !dictionaries.is_empty() {
            return Err(Error::Unsupported {
                column: String::new(),
                detail: "dictionary-encoded columns are not written by mware".into(),
            });
        }
        let mut metadata = Vec::new();
        let (crcs, layout);
        if self.checksums {
            let message = arrow_ipc::root_as_message(&encoded.ipc_message)
                .map_err(|e| Error::corrupt(None, format!("encoded message: {e}")))?;
            let header = message
                .header_as_record_batch()
                .ok_or_else(|| Error::corrupt(None, "encoded message is not a record batch"))?;
            let ranges = checksum::column_buffers(self.arrow_schema(), &header)
                .ok_or_else(|| Error::corrupt(None, "unexpected buffer layout from the encoder"))?;
            let body = &encoded.arrow_data;
            for b in header.buffers().into_iter().flatten() {
                if b.offset() < 0 || b.length() < 0 || (b.offset() + b.length()) as usize > body.len() {
                    return Err(Error::corrupt(None, "the encoder produced a buffer out of bounds"));
                }
            }
            let c: Vec<u32> = ranges.into_iter().map(|r| checksum::column_crc(&header, r, body)).collect();
            crcs = checksum::format_crcs(&c);
            layout = format!("{:08x}", checksum::layout_crc(message.bodyLength(), &header));
            metadata.push((checksum::CRC_KEY, crcs.as_str()));
            metadata.push((checksum::LAYOUT_KEY, layout.as_str()));
        }
        let message = fb::message_with_metadata(&encoded.ipc_message, &metadata)?;
        let offset = self.pos;
        let meta_len = self.message(&message, &encoded.arrow_data)?;
        self.blocks.push(BlockRef {
            offset: offset as i64,
            meta_len: meta_len as i32,
            body_len: (self.pos - offset - meta_len) as i64,
        });
        self.rows += record_batch.num_rows() as u64;
        Ok(())
    }

    /// Pushes everything written so far to the file and makes it durable
    /// (the file is not readable without recovery until `finish`).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.io(e))?;
        self.out.get_mut().sync().map_err(|e| self.io(e))
    }

    /// Writes the end-of-stream marker and the footer, flushes and fsyncs;
    /// returns the sink.
    pub fn finish(mut self) -> Result<S> {
        self.put(&CONTINUATION)?;
        self.put(&0i32.to_le_bytes())?;
        let rows = self.rows.to_string();
        let footer = fb::footer(
            MetadataVersion::V5.0,
            &self.schema_message,
            &[],
            &self.blocks,
            &[("mware.rows", rows.as_str())],
        )?;
        self.put(&footer)?;
        self.put(&(footer.len() as i32).to_le_bytes())?;
        self.put(MAGIC)?;
        self.flush()?;
        let path = self.path.clone();
        self.out.into_inner().map_err(|e| Error::io(path.as_deref(), e.into_error()))
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(self.path.as_deref(), e)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| self.io(e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = (FILE_ALIGN - (self.pos as usize % FILE_ALIGN)) % FILE_ALIGN;
        self.put(&ZEROS[..n])
    }

    /// Writes one encapsulated message (continuation, length, flatbuffer,
    /// padding, body, padding); returns the metadata length.
    fn message(&mut self, flatbuffer: &[u8], body: &[u8]) -> Result<u64> {
        let start = self.pos;
        let padded = (8 + flatbuffer.len()).next_multiple_of(FILE_ALIGN) - 8;
        self.put(&CONTINUATION)?;
        self.put(&(padded as i32).to_le_bytes())?;
        self.put(flatbuffer)?;
        self.pad()?;
        let meta_len = self.pos - start;
        self.put(body)?;
        self.pad()?;
        Ok(meta_len)
    }
}
