//! Any bytes given as a data file, in every format and quoting mode: rows (some with errors) or
//! an error, never a panic. The first byte picks the format and options.
#![no_main]
use autolabel_local::dataset::{Dataset, ReadOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let name = ["fuzz.csv", "fuzz.tsv", "fuzz.jsonl"][(mode % 3) as usize];
    let opts = ReadOptions {
        delimiter: [None, Some(b';'), Some(b'|')][((mode / 3) % 3) as usize],
        disable_quoting: mode & 0x10 != 0,
        lossy: mode & 0x20 != 0,
    };
    if let Ok(ds) = Dataset::parse(Path::new(name), bytes, &opts) {
        for row in &ds.rows {
            assert!(row.line >= 1);
            assert!(row.fields.len() <= ds.columns.len() || row.error.is_some());
            for c in &ds.columns {
                let _ = ds.value(row, c);
            }
        }
    }
});
