//! IP allow/deny lists (CIDR); deny wins.

use serde::Deserialize;
use std::sync::Arc;

use super::{CompileCx, PolicyMeta, Stage};
#[allow(unused_imports)]
use crate::config::units::{ByteSize, ConfigDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

pub fn compile(
    _config: &IpConfig,
    _meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    cx.error(&["type"], "this policy type is not implemented yet");
    None
}
