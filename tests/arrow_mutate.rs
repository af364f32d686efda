//! Thousands of damaged files (truncations, bit flips, overwritten offsets
//! and lengths): the reader must return an error or valid batches, never
//! panic through the API and never hand out memory outside the file.

#![cfg(feature = "arrow")]

mod arrow_common;

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_buffer::Buffer;
use mware::arrow::{
    Checksums, Error, ExportOptions, ImportOptions, MappedFile, ReadOptions, WriteOptions, Writer,
};
use mware::prelude::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn schema() -> Schema {
    let mut s = SchemaBuilder::new();
    s.hot::<u64>("id");
    s.hot::<u16>("route");
    s.hot::<[u8; 16]>("key");
    s.cold::<String>("agent");
    s.cold::<Vec<u8>>("blob");
    s.build().unwrap()
}

/// A processed file: primitives, fixed-size binary, strings, binary, the
/// control columns (booleans, nullable integers).
fn mware_file(checksums: bool) -> Vec<u8> {
    let schema = schema();
    let id = schema.handle::<u64>("id").unwrap();
    let route = schema.handle::<u16>("route").unwrap();
    let key = schema.handle::<[u8; 16]>("key").unwrap();
    let agent = schema.handle::<String>("agent").unwrap();
    let blob = schema.handle::<Vec<u8>>("blob").unwrap();
    let reject = stage::parallel("reject", Read(route), |r: &u16, ctl: &mut RowCtl| {
        if *r % 4 == 0 {
            ctl.reject(429);
        } else if *r % 7 == 0 {
            ctl.fail("seven");
        }
    })
    .rejects();
    let p = Pipeline::builder(&schema).threads(1).before(reject).build().unwrap();
    let mut w = Writer::new(Vec::new(), &schema, WriteOptions::new().checksums(checksums)).unwrap();
    let mut batch = Batch::new(&schema);
    for b in 0..3u64 {
        batch.clear();
        batch
            .extend_rows(0..150u64, |row, i| {
                let n = b * 1000 + i;
                row.set(id, n)?.set(route, (n % 64) as u16)?.set(key, [n as u8; 16])?;
                if n % 3 == 0 {
                    row.set_cold(agent, format!("agent/{n}"))?;
                }
                if n % 5 == 0 {
                    row.set_cold(blob, vec![n as u8; (n % 11) as usize])?;
                }
                Ok(())
            })
            .unwrap();
        p.run(&mut batch).unwrap();
        w.write(&mut batch).unwrap();
    }
    w.finish().unwrap()
}

/// A file from arrow-rs's own writer (no checksums, its own footer).
fn foreign_file() -> Vec<u8> {
    let ids = UInt32Array::from_iter_values(0..300);
    let names = StringArray::from_iter((0..300).map(|i| (i % 2 == 0).then(|| format!("n{i}"))));
    let rb = RecordBatch::try_from_iter([
        ("id32", Arc::new(ids) as ArrayRef),
        ("agent", Arc::new(names) as ArrayRef),
    ])
    .unwrap();
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::FileWriter::try_new(&mut out, &rb.schema()).unwrap();
    w.write(&rb.slice(0, 100)).unwrap();
    w.write(&rb.slice(100, 200)).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    opened: usize,
    batches_ok: usize,
    errors: usize,
    panics_caught: usize,
}

fn within_or_outside(r: Range<usize>, file: &Range<usize>) -> bool {
    (r.start >= file.start && r.end <= file.end) || r.end <= file.start || r.start >= file.end
}

fn check_case(bytes: &[u8], tally: &mut Tally) {
    tally.cases += 1;
    let schema = schema();
    let mut s32 = SchemaBuilder::new();
    s32.hot::<u32>("id32");
    s32.cold::<String>("agent");
    let schema32 = s32.build().unwrap();
    for checksums in [Checksums::Verify, Checksums::Skip] {
        let data = Buffer::from_slice_ref(bytes);
        let options = ReadOptions::new().checksums(checksums).recover(tally.cases % 2 == 0);
        let file = match MappedFile::from_buffer(data, options) {
            Ok(f) => f,
            Err(e) => {
                note(&e, tally);
                continue;
            }
        };
        tally.opened += 1;
        let range = {
            let r = file.bytes().as_ptr_range();
            r.start as usize..r.end as usize
        };
        for i in 0..file.num_batches() {
            match file.record_batch(i) {
                Ok(rb) => {
                    for c in rb.columns() {
                        let d = c.to_data();
                        d.validate_full().expect("the decoder hands out valid arrays");
                        for b in d.buffers() {
                            let p = b.as_ptr() as usize;
                            assert!(
                                within_or_outside(p..p + b.len(), &range),
                                "a buffer straddles the file's end"
                            );
                        }
                    }
                    tally.batches_ok += 1;
                }
                Err(e) => note(&e, tally),
            }
            for (sch, opts) in
                [(&schema, ImportOptions::new().restore_control(true)), (&schema32, ImportOptions::new())]
            {
                let Ok(replay) = file.bind(sch, &opts) else { continue };
                let mut batch = Batch::new(sch);
                match replay.read(i, &mut batch) {
                    Ok(_) => {
                        for (index, info) in sch.fields().iter().enumerate() {
                            if let Some(col) = batch.column_bytes(index) {
                                let p = col.as_ptr() as usize;
                                assert!(
                                    within_or_outside(p..p + col.len(), &range),
                                    "{} out of bounds",
                                    info.name
                                );
                                // Touch every byte.
                                std::hint::black_box(col.iter().map(|&b| b as u64).sum::<u64>());
                            }
                        }
                        tally.batches_ok += 1;
                    }
                    Err(e) => note(&e, tally),
                }
            }
        }
    }
}

fn note(e: &Error, tally: &mut Tally) {
    tally.errors += 1;
    if let Error::Panic { .. } = e {
        tally.panics_caught += 1;
        eprintln!("caught: {e}");
    }
    assert!(!e.to_string().is_empty());
}

fn mutate_all(base: &[u8], seed: u64, tally: &mut Tally) {
    let mut rng = Rng(seed);
    let n = base.len();
    // Truncations.
    let step = (n / 300).max(1);
    for cut in (0..n).step_by(step).chain(n.saturating_sub(40)..n) {
        check_case(&base[..cut], tally);
    }
    // Single bit flips anywhere, then in the metadata-dense head and tail.
    for k in 0..900 {
        let mut b = base.to_vec();
        let at = match k % 3 {
            0 => rng.below(n),
            1 => rng.below(n.min(1024)),
            _ => n - 1 - rng.below(n.min(1024)),
        };
        b[at] ^= 1 << rng.below(8);
        check_case(&b, tally);
    }
    // Overwritten integers: offsets, lengths and counts gone wrong.
    let values: [i64; 9] = [0, -1, 1, 7, i32::MAX as i64, i64::MAX, n as i64, -(n as i64), 1 << 33];
    for _ in 0..500 {
        let mut b = base.to_vec();
        let at = rng.below(n.saturating_sub(8)) & !3;
        let v = if rng.below(4) == 0 { rng.next() as i64 } else { values[rng.below(values.len())] };
        if rng.below(2) == 0 {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        } else {
            b[at..at + 4].copy_from_slice(&(v as i32).to_le_bytes());
        }
        check_case(&b, tally);
    }
}

#[test]
#[cfg_attr(miri, ignore)] // thousands of files: too slow for an interpreter
fn damaged_files_never_panic_nor_read_out_of_bounds() {
    let mut tally = Tally::default();
    for (seed, base) in [(1, mware_file(true)), (2, mware_file(false)), (3, foreign_file())] {
        // The undamaged file reads.
        let before = tally.batches_ok;
        check_case(&base, &mut tally);
        assert!(tally.batches_ok > before);
        mutate_all(&base, seed, &mut tally);
    }
    eprintln!("{tally:?}");
    assert!(tally.cases > 5000, "{tally:?}");
    assert!(tally.errors > 1000 && tally.batches_ok > 1000, "{tally:?}");
}

#[test]
#[cfg_attr(miri, ignore)] // hundreds of files: too slow for an interpreter
fn checksums_catch_every_single_bit_flip_in_a_body() {
    // A flip anywhere in a record batch's buffers fails verification: a
    // damaged file is never read as valid data.
    let base = mware_file(true);
    let file = MappedFile::from_buffer(Buffer::from_slice_ref(&base), ReadOptions::new()).unwrap();
    let mut spans = Vec::new();
    for i in 0..file.num_batches() {
        let rb = file.record_batch(i).unwrap();
        for c in rb.columns() {
            for b in c.to_data().buffers() {
                let start = b.as_ptr() as usize - file.bytes().as_ptr() as usize;
                spans.push(start..start + b.len());
            }
        }
    }
    drop(file);
    let mut rng = Rng(99);
    for _ in 0..300 {
        let span = &spans[rng.below(spans.len())];
        if span.is_empty() {
            continue;
        }
        let at = span.start + rng.below(span.len());
        let mut b = base.clone();
        b[at] ^= 1 << rng.below(8);
        let file = MappedFile::from_buffer(Buffer::from_slice_ref(&b), ReadOptions::new()).unwrap();
        let bad = (0..file.num_batches()).filter(|&i| file.record_batch(i).is_err()).count();
        assert_eq!(bad, 1, "flip at {at}");
    }
}

#[test]
#[cfg_attr(miri, ignore)] // opens a file (a memory map)
fn the_replay_example_rejects_a_damaged_file_without_panicking() {
    // Kept cheap here: the example itself is exercised by .ci/pyarrow.sh.
    let base = mware_file(true);
    let path = arrow_common::temp_path("damaged");
    std::fs::write(&path, &base[..base.len() / 2]).unwrap();
    let err = MappedFile::open(&path).unwrap_err();
    assert!(matches!(err, Error::TruncatedBatch { .. } | Error::TruncatedFooter { .. }), "{err}");
    std::fs::remove_file(&path).unwrap();
    let _ = ExportOptions::new();
}
