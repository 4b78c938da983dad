//! Any text given as a task config: parsed into a config or refused with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = autolabel_local::config::TaskConfig::parse(text, "fuzz.json");
    }
});
