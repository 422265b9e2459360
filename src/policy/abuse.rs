//! Abuse blocking: ban an IP after too many watched responses, or at once for a blocked user agent or path.

use serde::Deserialize;
use std::sync::Arc;

use super::{CompileCx, PolicyMeta, Stage};
#[allow(unused_imports)]
use crate::config::units::{ByteSize, ConfigDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseConfig {
    #[serde(default = "default_watch")]
    pub watch: Vec<u16>,
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    #[serde(default = "default_window")]
    pub window: ConfigDuration,
    #[serde(default = "default_ban")]
    pub ban: ConfigDuration,
    #[serde(default)]
    pub block_user_agents: Vec<String>,
    #[serde(default)]
    pub block_paths: Vec<String>,
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_watch() -> Vec<u16> {
    vec![401, 403, 404, 429]
}
fn default_threshold() -> u32 {
    20
}
fn default_window() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(60))
}
fn default_ban() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(15 * 60))
}
fn default_ipv6_prefix() -> u8 {
    64
}

pub fn compile(
    _config: &AbuseConfig,
    _meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    cx.error(&["type"], "this policy type is not implemented yet");
    None
}
