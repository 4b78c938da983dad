//! autolabel-local: label datasets with local language models by exact label scoring.
//!
//! One file per concern: [`config`] (Autolabel's JSON config), [`dataset`] (reading rows),
//! [`prompt`] and [`chat_template`] (prompt text), [`tasks`] (one file per task type behind one
//! trait), [`labeler`] (rows to scoring requests), [`scoring_pass`] (a dataset through the
//! model), [`confidence`], [`calibration`], [`answer_calibration`] (generated answers) and
//! [`operating_point`] (temperature and thresholds),
//! [`metrics`], [`plots`], [`output`], [`progress`], [`journal`] (resumable runs), and [`commands`] (one file
//! per command).

pub mod answer_calibration;
pub mod answer_pass;
pub mod batching;
pub mod calibration;
pub mod chain_of_thought;
pub mod chat_template;
pub mod commands;
pub mod confidence;
pub mod config;
pub mod dataset;
pub mod debias;
pub mod embeddings;
pub mod fit_choice;
pub mod generation_pass;
pub mod journal;
pub mod labeler;
pub mod metrics;
pub mod model_source;
pub mod operating_point;
pub mod output;
pub mod plots;
pub mod progress;
pub mod prompt;
pub mod scoring_pass;
pub mod session;
pub mod shard;
pub mod tasks;
