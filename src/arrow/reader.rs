//! Reads Arrow IPC files through a memory mapping, zero-copy.
//!
//! [`MappedFile::open`] maps the file (memmap2), checks its structure and
//! reads the footer. Each record batch is then checked before arrow-ipc's
//! `FileDecoder` sees it (message bounds, every buffer inside the body,
//! row and node counts, the stored checksums), decoded over the mapping,
//! and imported into a batch whose read-only hot columns point into the
//! mapping. A panic inside the decoder is caught and returned as
//! [`Error::Panic`]. Nothing in a file, however malformed, makes the reader
//! panic or hand out memory outside the file.
//!
//! The mapping assumes the file is not modified while it is open (another
//! process truncating it would make reads fault, as with any mapped file).

use std::collections::HashMap;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::FileDecoder;
use arrow_ipc::{Block, MessageHeader, MetadataVersion};
use arrow_schema::{Schema as ArrowSchema, SchemaRef};

use super::checksum;
use super::error::{Error, Result};
use super::import::{ColumnMap, ImportOptions, ImportStats};
use crate::batch::Batch;
use crate::schema::Schema;

const MAGIC: &[u8; 6] = b"ARROW1";
const CONTINUATION: u32 = 0xFFFF_FFFF;
/// Rows one record batch may hold (a batch indexes rows with `u32`).
const MAX_ROWS: i64 = u32::MAX as i64;

/// What to do with the checksums mware stores in each record batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checksums {
    /// Verify them where present; batches written without them (by other
    /// tools) are read unverified (the default).
    #[default]
    Verify,
    /// Verify them, and reject a batch that has none.
    Require,
    /// Do not verify.
    Skip,
}

/// How a file is read.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    pub(crate) checksums: Checksums,
    pub(crate) recover: bool,
    pub(crate) populate: bool,
}

impl ReadOptions {
    /// Checksums verified, no recovery.
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do with stored checksums (default: [`Checksums::Verify`]).
    pub fn checksums(mut self, c: Checksums) -> Self {
        self.checksums = c;
        self
    }

    /// Reads a file without (or with a broken) footer, as a writer that
    /// stopped early leaves it, up to its last complete record batch,
    /// instead of rejecting it (default: off).
    pub fn recover(mut self, on: bool) -> Self {
        self.recover = on;
        self
    }

    /// Pre-faults the whole mapping when opening (`MAP_POPULATE` on Linux),
    /// moving page-fault cost out of the replay loop (default: off).
    pub fn populate(mut self, on: bool) -> Self {
        self.populate = on;
        self
    }
}

/// How a file without its footer was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Complete record batches found.
    pub batches: usize,
    /// Bytes after the last complete message, ignored.
    pub dropped_bytes: u64,
    /// Why the footer could not be used.
    pub reason: String,
}

/// Per-batch figures of a read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// The import's figures.
    pub import: ImportStats,
    /// Whether the batch's checksums were verified.
    pub verified: bool,
}

/// An Arrow IPC file, mapped (or held in memory), its structure checked.
pub struct MappedFile {
    data: Buffer,
    path: Option<PathBuf>,
    mapped: bool,
    schema: SchemaRef,
    version: MetadataVersion,
    blocks: Vec<Block>,
    dictionaries: Vec<Block>,
    metadata: HashMap<String, String>,
    recovery: Option<Recovery>,
    options: ReadOptions,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.data.len())
            .field("batches", &self.blocks.len())
            .finish()
    }
}

/// Runs `f`, turning a panic into [`Error::Panic`].
fn guarded<T>(batch: Option<usize>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Panic { batch, message })
        }
    }
}

/// The Arrow schema of a flatbuffer schema. arrow-ipc before 60 has only
/// the panicking `fb_to_schema` (60 adds `try_fb_to_schema` and deprecates
/// it); every caller runs under [`guarded`], so a malformed schema becomes
/// [`Error::Panic`] on any version in the range.
#[allow(deprecated)]
fn schema_of(fb: arrow_ipc::Schema<'_>) -> ArrowSchema {
    arrow_ipc::convert::fb_to_schema(fb)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// A message's flatbuffer inside `meta` (the block's metadata bytes):
/// `0xFFFFFFFF`, length, flatbuffer (or the pre-0.15 form without marker).
fn message_flatbuffer(meta: &[u8]) -> Option<&[u8]> {
    let first = read_u32(meta, 0)?;
    let (prefix, len): (usize, u32) =
        if first == CONTINUATION { (8, read_u32(meta, 4)?) } else { (4, first) };
    let len = i32::try_from(len).ok()? as usize;
    meta.get(prefix..prefix.checked_add(len)?)
}

impl MappedFile {
    /// Maps and checks the file at `path` with the default options.
    pub fn open(path: impl AsRef<Path>) -> Result<MappedFile> {
        Self::open_with(path, ReadOptions::default())
    }

    /// Maps and checks the file at `path`.
    pub fn open_with(path: impl AsRef<Path>, options: ReadOptions) -> Result<MappedFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(Some(path), e))?;
        let len = file.metadata().map_err(|e| Error::io(Some(path), e))?.len();
        let data = if len == 0 {
            Buffer::from_vec(Vec::<u8>::new())
        } else {
            let mut opts = memmap2::MmapOptions::new();
            if options.populate {
                opts.populate();
            }
            // SAFETY: the mapping is read-only and mware never writes
            // through it. Its contents may change only if another process
            // modifies the file while it is open, which the module
            // documents as unsupported (as every mapped-file reader does).
            let map = unsafe { opts.map(&file) }.map_err(|e| Error::io(Some(path), e))?;
            let ptr = NonNull::new(map.as_ptr().cast_mut()).expect("a mapping is never null");
            let n = map.len();
            // SAFETY: `ptr .. ptr + n` is the mapping, valid for reads as
            // long as `map` lives; the buffer owns `map` (in the `Arc`), so
            // the memory outlives every slice of the buffer.
            unsafe { Buffer::from_custom_allocation(ptr, n, Arc::new(map)) }
        };
        let mut f = Self::from_buffer(data, options)?;
        f.path = Some(path.to_path_buf());
        f.mapped = len > 0;
        Ok(f)
    }

    /// Checks an Arrow IPC file held in `data` (any Arrow buffer: a
    /// mapping, memory, a slice of a larger buffer).
    pub fn from_buffer(data: Buffer, options: ReadOptions) -> Result<MappedFile> {
        guarded(None, || Self::parse(data, options))
    }

    fn parse(data: Buffer, options: ReadOptions) -> Result<MappedFile> {
        let bytes = data.as_slice();
        let len = bytes.len() as u64;
        if bytes.len() < MAGIC.len() || &bytes[..6] != MAGIC {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let detail = if bytes.is_empty() {
                "the file is empty".to_string()
            } else {
                format!("it starts with [{}], not `ARROW1`", head.join(" "))
            };
            return Err(Error::NotArrow { detail });
        }
        let footer = Self::footer(bytes);
        let mut file = MappedFile {
            data: data.clone(),
            path: None,
            mapped: false,
            schema: Arc::new(ArrowSchema::empty()),
            version: MetadataVersion::V5,
            blocks: Vec::new(),
            dictionaries: Vec::new(),
            metadata: HashMap::new(),
            recovery: None,
            options,
        };
        match footer {
            Ok((footer_start, footer)) => {
                file.version = footer.version();
                let schema =
                    footer.schema().ok_or_else(|| Error::corrupt(None, "the footer has no schema"))?;
                file.schema = Arc::new(schema_of(schema));
                for kv in footer.custom_metadata().into_iter().flatten() {
                    if let (Some(k), Some(v)) = (kv.key(), kv.value()) {
                        file.metadata.insert(k.to_string(), v.to_string());
                    }
                }
                let check = |i: usize, b: &Block, what: &str| -> Result<()> {
                    let (o, m, l) = (b.offset(), b.metaDataLength() as i64, b.bodyLength());
                    if o < 8 || m < 8 || l < 0 || o % 8 != 0 {
                        return Err(Error::corrupt(
                            Some(i),
                            format!("{what} block {i}: offset {o}, metadata {m}, body {l}"),
                        ));
                    }
                    let end = o.checked_add(m).and_then(|e| e.checked_add(l)).unwrap_or(i64::MAX);
                    if end as u64 > footer_start as u64 {
                        return Err(Error::TruncatedBatch {
                            batch: i,
                            needed: end as u64,
                            available: footer_start as u64,
                            complete_batches: i,
                        });
                    }
                    Ok(())
                };
                for (i, b) in footer.recordBatches().into_iter().flatten().enumerate() {
                    check(i, b, "record batch")?;
                    file.blocks.push(*b);
                }
                for (i, b) in footer.dictionaries().into_iter().flatten().enumerate() {
                    check(i, b, "dictionary")?;
                    file.dictionaries.push(*b);
                }
            }
            Err(reason) => {
                let scan = Self::scan(bytes)?;
                let complete = scan.blocks.len();
                if !file.options.recover {
                    return Err(match scan.cut {
                        Some((needed, available)) => Error::TruncatedBatch {
                            batch: complete,
                            needed,
                            available,
                            complete_batches: complete,
                        },
                        None => Error::TruncatedFooter {
                            file_len: len,
                            complete_batches: complete,
                            detail: reason,
                        },
                    });
                }
                file.version = scan.version;
                file.schema = Arc::new(scan.schema);
                file.blocks = scan.blocks;
                file.dictionaries = scan.dictionaries;
                file.recovery = Some(Recovery { batches: complete, dropped_bytes: len - scan.end, reason });
            }
        }
        Ok(file)
    }

    /// The footer, or why there is none (a missing trailing magic or a
    /// malformed footer).
    fn footer(bytes: &[u8]) -> Result<(usize, arrow_ipc::Footer<'_>), String> {
        let n = bytes.len();
        if n < 8 + 10 || &bytes[n - 6..] != MAGIC {
            return Err("the file does not end with the footer and `ARROW1`".into());
        }
        let footer_len = i32::from_le_bytes(bytes[n - 10..n - 6].try_into().expect("4 bytes"));
        let start = (n - 10).checked_sub(footer_len.max(0) as usize).filter(|&s| s >= 8 && footer_len > 0);
        let Some(start) = start else {
            return Err(format!("footer length {footer_len} does not fit the file of {n} bytes"));
        };
        arrow_ipc::root_as_footer(&bytes[start..n - 10])
            .map(|f| (start, f))
            .map_err(|e| format!("malformed footer: {e}"))
    }

    /// Walks the messages from the start of the file (as a stream reader
    /// would) to find the complete record batches of a file without footer.
    fn scan(bytes: &[u8]) -> Result<Scan> {
        let end = bytes.len();
        let mut pos = 8usize;
        let mut scan = Scan {
            schema: ArrowSchema::empty(),
            version: MetadataVersion::V5,
            blocks: Vec::new(),
            dictionaries: Vec::new(),
            end: 8,
            cut: None,
        };
        let mut have_schema = false;
        // Writers pad the magic to 8 bytes or more (arrow-rs and mware: 64).
        while pos + 8 <= end && bytes[pos..pos + 8] == [0; 8] {
            pos += 8;
        }
        loop {
            if pos + 8 > end {
                if pos < end {
                    scan.cut = Some((pos as u64 + 8, end as u64));
                }
                break;
            }
            let first = read_u32(bytes, pos).expect("in bounds");
            let (prefix, len) = if first == CONTINUATION {
                (8usize, read_u32(bytes, pos + 4).expect("in bounds"))
            } else {
                (4usize, first)
            };
            if len == 0 {
                scan.end = (pos + prefix) as u64;
                break; // end-of-stream marker
            }
            let Ok(len) = i32::try_from(len) else {
                return Err(Error::corrupt(None, format!("message at byte {pos} has length {len}")));
            };
            let meta_end = pos + prefix + len as usize;
            if meta_end > end {
                scan.cut = Some((meta_end as u64, end as u64));
                break;
            }
            let message = match arrow_ipc::root_as_message(&bytes[pos + prefix..meta_end]) {
                Ok(m) => m,
                Err(e) if have_schema => {
                    // A garbled tail (cut inside a message being written).
                    scan.cut = Some((meta_end as u64, end as u64));
                    let _ = e;
                    break;
                }
                Err(e) => return Err(Error::corrupt(None, format!("the schema message: {e}"))),
            };
            let body = message.bodyLength();
            let total = (meta_end as u64).checked_add(u64::try_from(body).unwrap_or(u64::MAX));
            let Some(total) = total.filter(|&t| t <= end as u64) else {
                scan.cut = Some((total.unwrap_or(u64::MAX), end as u64));
                break;
            };
            let block = Block::new(pos as i64, (meta_end - pos) as i32, body);
            match message.header_type() {
                MessageHeader::Schema if !have_schema => {
                    let s = message.header_as_schema().expect("schema header");
                    scan.schema = schema_of(s);
                    scan.version = message.version();
                    have_schema = true;
                }
                _ if !have_schema => {
                    return Err(Error::corrupt(None, "the file does not start with a schema"));
                }
                MessageHeader::RecordBatch => scan.blocks.push(block),
                MessageHeader::DictionaryBatch => scan.dictionaries.push(block),
                t => {
                    return Err(Error::corrupt(Some(scan.blocks.len()), format!("unexpected message {t:?}")));
                }
            }
            pos = total as usize;
            scan.end = total;
        }
        if !have_schema {
            return Err(Error::TruncatedFooter {
                file_len: end as u64,
                complete_batches: 0,
                detail: "the file ends before its schema".into(),
            });
        }
        Ok(scan)
    }

    /// The file's Arrow schema.
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Number of record batches.
    pub fn num_batches(&self) -> usize {
        self.blocks.len()
    }

    /// The footer's custom metadata.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// How the file was recovered, if it had no usable footer.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Whether the bytes are a memory mapping of the file.
    pub fn is_mapped(&self) -> bool {
        self.mapped
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// The file's path, when opened from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The rows of each record batch, read from the message headers
    /// (checked, but without decoding or verifying the bodies).
    pub fn batch_rows(&self) -> Result<Vec<usize>> {
        (0..self.blocks.len()).map(|i| self.checked(i, None).map(|c| c.rows)).collect()
    }

    /// Checks record batch `i`'s message and, per the options, the
    /// checksums of the columns in `verify` (`None`: all).
    fn checked(&self, i: usize, verify: Option<&[usize]>) -> Result<Checked> {
        let block = self
            .blocks
            .get(i)
            .ok_or(Error::Mware(crate::Error::RowOutOfBounds { row: i, len: self.blocks.len() }))?;
        let bytes = self.data.as_slice();
        let (o, m, l) =
            (block.offset() as usize, block.metaDataLength() as usize, block.bodyLength() as usize);
        // Bounds were checked when the file was opened.
        let meta = &bytes[o..o + m];
        let fb = message_flatbuffer(meta).ok_or_else(|| {
            Error::corrupt(Some(i), format!("message length exceeds its block of {m} bytes"))
        })?;
        let message =
            arrow_ipc::root_as_message(fb).map_err(|e| Error::corrupt(Some(i), format!("message: {e}")))?;
        if message.version() != self.version && self.version != MetadataVersion::V1 {
            return Err(Error::corrupt(Some(i), "message and footer metadata versions differ"));
        }
        let header = message.header_as_record_batch().ok_or_else(|| {
            Error::corrupt(Some(i), format!("expected a record batch, found {:?}", message.header_type()))
        })?;
        let body_len = message.bodyLength();
        if body_len < 0 || body_len as usize > l {
            return Err(Error::TruncatedBatch {
                batch: i,
                needed: (o + m) as u64 + body_len.max(0) as u64,
                available: (o + m + l) as u64,
                complete_batches: i,
            });
        }
        let rows = header.length();
        if !(0..=MAX_ROWS).contains(&rows) {
            return Err(Error::corrupt(Some(i), format!("{rows} rows")));
        }
        let nodes = header.nodes().map_or(0, |n| n.len());
        for n in header.nodes().into_iter().flatten() {
            if n.length() < 0
                || n.null_count() < 0
                || n.null_count() > n.length()
                || n.length() > i32::MAX as i64
            {
                return Err(Error::corrupt(
                    Some(i),
                    format!("a node of length {} with {} nulls", n.length(), n.null_count()),
                ));
            }
        }
        if nodes < self.schema.fields().len() {
            return Err(Error::corrupt(
                Some(i),
                format!("{nodes} nodes for {} columns", self.schema.fields().len()),
            ));
        }
        let ranges = checksum::column_buffers(&self.schema, &header);
        let column_of = |k: usize| -> String {
            ranges
                .as_ref()
                .and_then(|r| r.iter().position(|r| r.contains(&k)))
                .map_or(format!("#buffer{k}"), |c| self.schema.field(c).name().clone())
        };
        for (k, b) in header.buffers().into_iter().flatten().enumerate() {
            let (bo, bl) = (b.offset(), b.length());
            if bo < 0 || bl < 0 || bo.checked_add(bl).is_none_or(|e| e > body_len) {
                return Err(Error::BufferOutOfBounds {
                    batch: i,
                    column: column_of(k),
                    offset: bo,
                    len: bl,
                    body_len,
                });
            }
        }
        if header.compression().is_some() {
            return Err(Error::Unsupported {
                column: String::new(),
                detail: format!("record batch {i} is compressed; mware reads uncompressed files"),
            });
        }
        let mut crcs = None;
        let mut layout = None;
        for kv in message.custom_metadata().into_iter().flatten() {
            match (kv.key(), kv.value()) {
                (Some(checksum::CRC_KEY), Some(v)) => crcs = Some(checksum::parse_crcs(v, i)?),
                (Some(checksum::LAYOUT_KEY), Some(v)) => layout = Some(checksum::parse_crc(v, i)?),
                _ => {}
            }
        }
        let mut verified = false;
        match (self.options.checksums, crcs, layout) {
            (Checksums::Skip, _, _) => {}
            (Checksums::Require, None, _) | (Checksums::Require, _, None) => {
                return Err(Error::ChecksumMissing { batch: i });
            }
            (_, Some(crcs), Some(layout)) => {
                let actual = checksum::layout_crc(body_len, &header);
                if actual != layout {
                    return Err(Error::ChecksumMismatch {
                        batch: i,
                        column: "(layout)".into(),
                        expected: layout,
                        actual,
                    });
                }
                let ranges = ranges.ok_or_else(|| {
                    Error::corrupt(
                        Some(i),
                        "checksums stored, but the buffer layout does not match the schema",
                    )
                })?;
                if crcs.len() != ranges.len() {
                    return Err(Error::corrupt(
                        Some(i),
                        format!("{} checksums for {} columns", crcs.len(), ranges.len()),
                    ));
                }
                let body = &bytes[o + m..o + m + body_len as usize];
                let all: Vec<usize>;
                let columns = match verify {
                    Some(c) => c,
                    None => {
                        all = (0..ranges.len()).collect();
                        &all
                    }
                };
                for &c in columns {
                    let actual = checksum::column_crc(&header, ranges[c].clone(), body);
                    if actual != crcs[c] {
                        return Err(Error::ChecksumMismatch {
                            batch: i,
                            column: self.schema.field(c).name().clone(),
                            expected: crcs[c],
                            actual,
                        });
                    }
                }
                verified = true;
            }
            _ => {}
        }
        Ok(Checked { block: *block, rows: rows as usize, verified })
    }

    /// A decoder for this file, with its dictionaries loaded.
    fn decoder(&self, projection: Option<Vec<usize>>) -> Result<FileDecoder> {
        guarded(None, || {
            let mut d = FileDecoder::new(self.schema.clone(), self.version).with_require_alignment(false);
            if let Some(p) = projection {
                d = d.with_projection(p);
            }
            for (i, b) in self.dictionaries.iter().enumerate() {
                let len = b.metaDataLength() as usize + b.bodyLength() as usize;
                let buf = self.data.slice_with_length(b.offset() as usize, len);
                if message_flatbuffer(&buf.as_slice()[..b.metaDataLength() as usize]).is_none() {
                    return Err(Error::corrupt(None, format!("dictionary {i}: message exceeds its block")));
                }
                d.read_dictionary(b, &buf).map_err(|e| Error::decode(None, e))?;
            }
            Ok(d)
        })
    }

    fn decode(&self, decoder: &FileDecoder, i: usize, checked: &Checked) -> Result<RecordBatch> {
        let b = &checked.block;
        let len = b.metaDataLength() as usize + b.bodyLength() as usize;
        let buf = self.data.slice_with_length(b.offset() as usize, len);
        guarded(Some(i), || {
            decoder
                .read_record_batch(b, &buf)
                .map_err(|e| Error::decode(Some(i), e))?
                .ok_or_else(|| Error::corrupt(Some(i), "the block holds no record batch"))
        })
    }

    /// Decodes record batch `i` (every column), verifying its checksums.
    /// Its buffers point into the file's bytes.
    pub fn record_batch(&self, i: usize) -> Result<RecordBatch> {
        let checked = guarded(Some(i), || self.checked(i, None))?;
        let decoder = self.decoder(None)?;
        self.decode(&decoder, i, &checked)
    }

    /// Every record batch, decoded in turn.
    pub fn record_batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        let decoder = self.decoder(None);
        (0..self.blocks.len()).map(move |i| {
            let d = decoder.as_ref().map_err(Clone::clone)?;
            let checked = guarded(Some(i), || self.checked(i, None))?;
            self.decode(d, i, &checked)
        })
    }

    /// Binds the file to batches of `schema`: checks once that the file has
    /// a column of the right type for every field it needs (errors name the
    /// column) and prepares a decoder that decodes only those columns.
    pub fn bind(&self, schema: &Schema, options: &ImportOptions) -> Result<Replay<'_>> {
        let map = ColumnMap::new(schema, &self.schema, options)?;
        let projection = map.projection();
        let decoder = self.decoder(Some(projection.clone()))?;
        let map = map.projected(&projection);
        Ok(Replay { file: self, decoder, map, projection })
    }
}

struct Scan {
    schema: ArrowSchema,
    version: MetadataVersion,
    blocks: Vec<Block>,
    dictionaries: Vec<Block>,
    /// Where the complete messages end.
    end: u64,
    /// `(needed, available)` when the scan stopped inside a message.
    cut: Option<(u64, u64)>,
}

struct Checked {
    block: Block,
    rows: usize,
    verified: bool,
}

/// A file bound to a schema: reads record batches into batches.
pub struct Replay<'f> {
    file: &'f MappedFile,
    decoder: FileDecoder,
    map: ColumnMap,
    projection: Vec<usize>,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").field("file", self.file).field("projection", &self.projection).finish()
    }
}

impl Replay<'_> {
    /// Number of record batches.
    pub fn len(&self) -> usize {
        self.file.num_batches()
    }

    /// Whether the file has no record batches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file.
    pub fn file(&self) -> &MappedFile {
        self.file
    }

    /// The file's columns that are read (the decoder's projection).
    pub fn projection(&self) -> &[usize] {
        &self.projection
    }

    /// Replaces `batch`'s rows with record batch `i`'s: checks and (per the
    /// options) verifies it, decodes the bound columns over the file's bytes
    /// and imports them, hot columns read in place.
    pub fn read(&self, i: usize, batch: &mut Batch) -> Result<ReadStats> {
        let file = self.file;
        let checked = guarded(Some(i), || file.checked(i, Some(&self.projection)))?;
        let rb = file.decode(&self.decoder, i, &checked)?;
        let range: Range<usize> = {
            let b = file.data.as_slice();
            let start = b.as_ptr() as usize;
            start..start + b.len()
        };
        let import = self.map.import_from(&rb, batch, Some(range), Some(i))?;
        Ok(ReadStats { import, verified: checked.verified })
    }
}
