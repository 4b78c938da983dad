//! Where models come from: built-in model cards, verified and cached downloads, and the Hugging
//! Face Hub (online and offline).

pub mod cards;
pub mod fetch;
pub mod hub;
