//! Entity matching: whether two records describe the same entity, as classification over labels
//! like "duplicate" / "not duplicate", with Autolabel's entity-matching guidelines.

use super::Classification;
use crate::config::TaskConfig;
use crate::dataset::Dataset;
use anyhow::Result;

pub(crate) const ENTITY_MATCHING_GUIDELINES: &str = "Your job is to tell whether the two given entities are duplicates of each other. Label the pair with one of the following {num_labels} categories.\nCategories:\n{labels}\n";

/// The entity-matching task a config describes (labels scored exactly, as classification).
pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Classification> {
    Classification::with_guidelines(config, data, ENTITY_MATCHING_GUIDELINES)
}
