//! GCRA rate limits per client, IP, header or globally.

use serde::Deserialize;
use std::sync::Arc;

use super::{CompileCx, PolicyMeta, Stage};
#[allow(unused_imports)]
use crate::config::units::{ByteSize, ConfigDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub limit: u64,
    pub window: ConfigDuration,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub key: super::LimitKey,
    #[serde(default)]
    pub for_roles: Vec<String>,
}

pub fn compile(
    _config: &RateLimitConfig,
    _meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    cx.error(&["type"], "this policy type is not implemented yet");
    None
}
