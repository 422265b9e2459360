//! API keys and JWTs: who is calling.

use serde::Deserialize;
use std::sync::Arc;

use super::{CompileCx, PolicyMeta, Stage};
#[allow(unused_imports)]
use crate::config::units::{ByteSize, ConfigDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub methods: Vec<AuthMethod>,
    #[serde(default)]
    pub api_key: ApiKeySource,
    /// Send the credential on to the upstream (default: removed).
    #[serde(default)]
    pub forward_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Jwt,
}

/// Where an API key may come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeySource {
    pub header: String,
    /// The key may also come as `Authorization: Bearer <key>`.
    pub bearer: bool,
    /// A query parameter that may carry the key.
    pub query: Option<String>,
}

impl Default for ApiKeySource {
    fn default() -> Self {
        ApiKeySource {
            header: "X-API-Key".into(),
            bearer: true,
            query: None,
        }
    }
}

pub fn compile(
    _config: &AuthConfig,
    _meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    cx.error(&["type"], "this policy type is not implemented yet");
    None
}
