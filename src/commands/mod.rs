//! The command-line commands, one file each; `main.rs` only parses arguments and maps results to
//! exit codes.

pub mod calibrate;
pub mod calibrate_open;
pub mod explain;
pub mod merge;
pub mod models;
pub mod plan;
pub mod run;
pub mod run_open;
pub mod score;
pub mod score_open;
pub mod status;
