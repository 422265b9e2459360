//! Header rules: required, matched and forbidden headers; request and response rewrites.

use serde::Deserialize;
use std::sync::Arc;

use super::{CompileCx, PolicyMeta, Stage};
#[allow(unused_imports)]
use crate::config::units::{ByteSize, ConfigDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    #[serde(default)]
    pub require: Vec<String>,
    #[serde(default, rename = "match")]
    pub match_: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub forbid: Vec<String>,
    #[serde(default)]
    pub request: HeaderRewrite,
    #[serde(default)]
    pub response: HeaderRewrite,
}

/// Headers to set (values may use `${client.id}`, `${request.id}`,
/// `${client.ip}`, `${env.NAME}`) and headers to remove.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRewrite {
    pub set: std::collections::BTreeMap<String, String>,
    pub remove: Vec<String>,
}

pub fn compile(
    _config: &HeadersConfig,
    _meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    cx.error(&["type"], "this policy type is not implemented yet");
    None
}
