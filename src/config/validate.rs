//! Checks serde cannot make. (Filled in next.)

use super::load::{ConfigError, LoadedConfig};

pub(crate) fn validate(_loaded: &LoadedConfig) -> Vec<ConfigError> {
    Vec::new()
}
