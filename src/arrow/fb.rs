//! The two flatbuffers mware's writer builds itself: a record batch
//! `Message` with custom metadata, and the file `Footer`.
//!
//! arrow-ipc's encoder produces the message of a record batch but has no
//! way to attach custom metadata to it, and its file writer cannot be given
//! the blocks of messages written around it. Both tables are small; each is
//! written here front to back, and the large sub-table it refers to (the
//! record batch header, the schema) is reused as arrow-ipc encoded it: its
//! bytes are appended after the new table, 8-byte aligned, and referenced
//! with a forward offset. Flatbuffer offsets are relative and alignment is
//! relative to the buffer's start, so the appended bytes stay valid. Every
//! buffer built here is checked by arrow-ipc's flatbuffer verifier in tests,
//! and pyarrow reads the files.

use super::error::{Error, Result};

/// A front-to-back flatbuffer writer with offset fix-ups.
struct Fb {
    buf: Vec<u8>,
    /// `(position of a u32 offset field, position it points to)`.
    fixups: Vec<(usize, usize)>,
}

impl Fb {
    fn new() -> Fb {
        Fb { buf: Vec::with_capacity(256), fixups: Vec::new() }
    }

    fn pos(&self) -> usize {
        self.buf.len()
    }

    fn align(&mut self, to: usize) {
        while self.buf.len() % to != 0 {
            self.buf.push(0);
        }
    }

    /// Pads so that the next write lands at `pos % to == rem`.
    fn align_rem(&mut self, to: usize, rem: usize) {
        while self.buf.len() % to != rem {
            self.buf.push(0);
        }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A vtable for a table of `table_size` bytes with the given field
    /// offsets (0 = absent). Returns its position.
    fn vtable(&mut self, table_size: u16, fields: &[u16]) -> usize {
        self.align(2);
        let at = self.pos();
        self.u16(4 + 2 * fields.len() as u16);
        self.u16(table_size);
        for &f in fields {
            self.u16(f);
        }
        at
    }

    /// Starts a table whose vtable is at `vtable` (the soffset).
    fn table_start(&mut self, vtable: usize) -> usize {
        let at = self.pos();
        self.i32((at - vtable) as i32);
        at
    }

    /// A placeholder offset field; returns its position.
    fn offset_field(&mut self) -> usize {
        let at = self.pos();
        self.u32(0);
        at
    }

    fn point(&mut self, field: usize, target: usize) {
        self.fixups.push((field, target));
    }

    /// A string; returns its position.
    fn string(&mut self, s: &str) -> usize {
        self.align(4);
        let at = self.pos();
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.u8(0);
        at
    }

    /// A `[KeyValue]` vector; returns its position.
    fn key_values(&mut self, kv: &[(&str, &str)]) -> usize {
        self.align(4);
        let vec = self.pos();
        self.u32(kv.len() as u32);
        let slots: Vec<usize> = kv.iter().map(|_| self.offset_field()).collect();
        for (slot, (k, v)) in slots.into_iter().zip(kv) {
            // KeyValue { key: string (slot 0), value: string (slot 1) }
            let vt = self.vtable(12, &[4, 8]);
            self.align(4);
            let table = self.table_start(vt);
            self.point(slot, table);
            let kf = self.offset_field();
            let vf = self.offset_field();
            let ks = self.string(k);
            let vs = self.string(v);
            self.point(kf, ks);
            self.point(vf, vs);
        }
        vec
    }

    /// Appends `tail` (a flatbuffer of its own) 8-byte aligned, resolves the
    /// fix-ups and returns the bytes with the position `tail` starts at.
    fn finish_with(mut self, tail: &[u8]) -> (Vec<u8>, usize) {
        self.align(8);
        let base = self.pos();
        self.buf.extend_from_slice(tail);
        for (field, target) in std::mem::take(&mut self.fixups) {
            let rel = (target - field) as u32;
            self.buf[field..field + 4].copy_from_slice(&rel.to_le_bytes());
        }
        (self.buf, base)
    }
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The position of the table that field `slot` (an offset field) of the
/// root table of flatbuffer `b` refers to.
fn root_field_target(b: &[u8], slot: usize) -> Option<usize> {
    let table = read_u32(b, 0)? as usize;
    let vtable = table.checked_sub(read_i32(b, table)? as usize)?;
    let vt_size = read_u16(b, vtable)? as usize;
    if 4 + 2 * slot + 2 > vt_size {
        return None;
    }
    let off = read_u16(b, vtable + 4 + 2 * slot)? as usize;
    if off == 0 {
        return None;
    }
    let field = table + off;
    Some(field + read_u32(b, field)? as usize)
}

/// `message` (a `Message` flatbuffer as arrow-ipc encodes it) with
/// `custom_metadata` added.
pub(crate) fn message_with_metadata(message: &[u8], custom_metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
    let parsed = arrow_ipc::root_as_message(message)
        .map_err(|e| Error::corrupt(None, format!("encoded message: {e}")))?;
    // Message { version: short (0), header_type: ubyte (1), header (2),
    //           bodyLength: long (3), custom_metadata (4) }
    let header =
        root_field_target(message, 2).ok_or_else(|| Error::corrupt(None, "encoded message has no header"))?;
    let mut fb = Fb::new();
    let root = fb.offset_field();
    // Inline table layout: soffset 0, header 4, bodyLength 8, custom 16,
    // version 20, header_type 22; 24 bytes.
    let vt = fb.vtable(24, &[20, 22, 4, 8, 16]);
    fb.align(8);
    let table = fb.table_start(vt);
    fb.point(root, table);
    let header_field = fb.offset_field();
    fb.i64(parsed.bodyLength());
    let custom_field = fb.offset_field();
    fb.u16(parsed.version().0 as u16);
    fb.u8(parsed.header_type().0);
    fb.u8(0);
    let kv = fb.key_values(custom_metadata);
    fb.point(custom_field, kv);
    let (mut bytes, base) = fb.finish_with(message);
    let rel = (base + header - header_field) as u32;
    bytes[header_field..header_field + 4].copy_from_slice(&rel.to_le_bytes());
    Ok(bytes)
}

/// One footer block: a message's offset, metadata length and body length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockRef {
    pub offset: i64,
    pub meta_len: i32,
    pub body_len: i64,
}

/// The file footer: `schema_message` is the schema `Message` flatbuffer the
/// file starts with; its schema table is reused.
pub(crate) fn footer(
    version: i16,
    schema_message: &[u8],
    dictionaries: &[BlockRef],
    batches: &[BlockRef],
    custom_metadata: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let schema = root_field_target(schema_message, 2)
        .ok_or_else(|| Error::corrupt(None, "encoded schema message has no schema"))?;
    let mut fb = Fb::new();
    let root = fb.offset_field();
    // Footer { version: short (0), schema (1), dictionaries (2),
    //          recordBatches (3), custom_metadata (4) }
    // Inline: soffset 0, schema 4, dicts 8, batches 12, custom 16, version 20.
    let vt = fb.vtable(24, &[20, 4, 8, 12, 16]);
    fb.align(8);
    let table = fb.table_start(vt);
    fb.point(root, table);
    let schema_field = fb.offset_field();
    let dict_field = fb.offset_field();
    let batch_field = fb.offset_field();
    let custom_field = fb.offset_field();
    fb.u16(version as u16);
    fb.u16(0);
    for (field, blocks) in [(dict_field, dictionaries), (batch_field, batches)] {
        // A vector of 24-byte, 8-aligned Block structs: the length sits just
        // before the first element.
        fb.align_rem(8, 4);
        let v = fb.pos();
        fb.u32(blocks.len() as u32);
        for b in blocks {
            fb.i64(b.offset);
            fb.i32(b.meta_len);
            fb.i32(0);
            fb.i64(b.body_len);
        }
        fb.point(field, v);
    }
    let kv = fb.key_values(custom_metadata);
    fb.point(custom_field, kv);
    let (mut bytes, base) = fb.finish_with(schema_message);
    let rel = (base + schema - schema_field) as u32;
    bytes[schema_field..schema_field + 4].copy_from_slice(&rel.to_le_bytes());
    Ok(bytes)
}
