//! Arbitrary bytes as an Arrow IPC file: `MappedFile` must return errors or
//! valid batches, never panic through its API or read outside the bytes.
//!
//! ```text
//! cargo +nightly fuzz run read_file               # panics caught by mware are not crashes
//! MWARE_FUZZ_STRICT=1 cargo +nightly fuzz run read_file   # every panic is, caught or not
//! ```
//!
//! Seed `corpus/read_file/` with a few small files (`replay --rows 300 --batch 100
//! --file F --keep --output G`, a pyarrow file) to get past the header quickly.
//! The strict mode finds the Arrow decoder's own panics on malformed input
//! (upstream issues); the default mode checks mware's promise.

#![no_main]

use arrow_buffer::Buffer;
use libfuzzer_sys::fuzz_target;
use mware::arrow::{Checksums, ImportOptions, MappedFile, ReadOptions};
use mware::{Batch, SchemaBuilder};

fuzz_target!(
    init: {
        if std::env::var_os("MWARE_FUZZ_STRICT").is_none() {
            // libfuzzer-sys aborts on any panic, even one mware catches.
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| {
        let mut s = SchemaBuilder::new();
        s.hot::<u64>("user_id");
        s.hot::<u16>("route");
        s.hot::<[u8; 16]>("key");
        s.cold::<String>("agent");
        let schema = s.build().unwrap();
        for (checksums, recover) in [(Checksums::Verify, false), (Checksums::Skip, true)] {
            let options = ReadOptions::new().checksums(checksums).recover(recover);
            let Ok(file) = MappedFile::from_buffer(Buffer::from_slice_ref(data), options) else { continue };
            let r = file.bytes().as_ptr_range();
            let range = r.start as usize..r.end as usize;
            let inside = |p: usize, n: usize| {
                (p >= range.start && p + n <= range.end) || p + n <= range.start || p >= range.end
            };
            for i in 0..file.num_batches() {
                if let Ok(rb) = file.record_batch(i) {
                    for c in rb.columns() {
                        let d = c.to_data();
                        assert!(d.validate_full().is_ok());
                        for b in d.buffers() {
                            assert!(inside(b.as_ptr() as usize, b.len()));
                        }
                    }
                }
                let opts = ImportOptions::new().optional(["route", "key"]).restore_control(true);
                if let Ok(replay) = file.bind(&schema, &opts) {
                    let mut batch = Batch::new(&schema);
                    if replay.read(i, &mut batch).is_ok() {
                        for index in 0..3 {
                            let col = batch.column_bytes(index).unwrap();
                            assert!(inside(col.as_ptr() as usize, col.len()));
                            std::hint::black_box(col.iter().map(|&b| b as u64).sum::<u64>());
                        }
                    }
                }
            }
        }
    }
);
