//! Usage quotas per calendar period, consumed only by forwarded calls.

use serde::Deserialize;
use std::sync::Arc;

use super::{CompileCx, PolicyMeta, Stage};
#[allow(unused_imports)]
use crate::config::units::{ByteSize, ConfigDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub limit: u64,
    pub period: QuotaPeriod,
    #[serde(default)]
    pub key: super::LimitKey,
}

/// UTC calendar periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    Hour,
    Day,
    Month,
}

pub fn compile(
    _config: &QuotaConfig,
    _meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    cx.error(&["type"], "this policy type is not implemented yet");
    None
}
