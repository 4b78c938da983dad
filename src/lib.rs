//! autolabel-local: label datasets with local language models by exact label scoring.
//!
//! One file per concern: [`config`] (Autolabel's JSON config), [`dataset`] (reading rows),
//! [`prompt`] and [`chat_template`] (prompt text), [`task`] (task types), [`labeler`] (rows to
//! scoring requests), [`confidence`], [`metrics`], [`output`], and the commands [`run`], [`plan`].

pub mod chat_template;
pub mod confidence;
pub mod config;
pub mod dataset;
pub mod labeler;
pub mod metrics;
pub mod model_source;
pub mod output;
pub mod plan;
pub mod prompt;
pub mod run;
pub mod session;
pub mod task;
