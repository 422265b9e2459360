//! What a policy kind declares about itself, and the registry that lists
//! every kind ([`super::KINDS`]).
//!
//! A kind is its config struct (the YAML form) implementing [`PolicyKind`]
//! in its own file: its `type:` name, how it compiles, the roles it names
//! and the error codes it can answer. Everything that needs to know the
//! kinds reads the registry instead of listing them: the config loader
//! (`type:` picks the entry that parses the rest), validation (role
//! references), `tollgate schema` (one `oneOf` branch per entry), the
//! OpenAPI export (which error responses an operation documents) and the
//! compiler.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::{CompileCx, PolicyMeta, Stage};
use crate::problem::Code;

/// A policy kind, implemented by its config struct.
pub trait PolicyKind: DeserializeOwned + JsonSchema + fmt::Debug + Send + Sync + 'static {
    /// The `type:` name in YAML.
    const TYPE: &'static str;
    /// The name of its definition in the JSON Schema (`IpPolicy`).
    const SCHEMA_NAME: &'static str;

    /// Compiles the config into the stages an operation runs; mistakes are
    /// recorded in `cx` (with paths relative to the definition) and give
    /// `None`.
    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>>;

    /// The roles the config names, each with its path inside the
    /// definition (`["allow", "1"]`), so validation can check each is
    /// declared.
    fn roles_used(&self) -> Vec<(Vec<String>, &str)> {
        Vec::new()
    }

    /// The error codes this policy can answer a call with, for the
    /// responses the OpenAPI export documents.
    fn refusals(&self) -> &'static [Code] {
        &[]
    }
}

/// A parsed policy config of some kind, as [`crate::config::schema::PolicyDef`]
/// holds it. Blanket-implemented for every [`PolicyKind`].
pub trait AnyPolicyConfig: fmt::Debug + Send + Sync {
    /// The kind's `type:` name ([`PolicyKind::TYPE`]).
    fn type_name(&self) -> &'static str;
    /// The config as `Any`, for [`crate::config::schema::PolicyDef::config_of`] to downcast.
    fn as_any(&self) -> &dyn Any;
    /// Compiles the config into its stages ([`PolicyKind::compile`]); `None` when it had errors.
    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>>;
    /// The role names the config references, each with its path ([`PolicyKind::roles_used`]).
    fn roles_used(&self) -> Vec<(Vec<String>, &str)>;
    /// The error codes the policy can answer with ([`PolicyKind::refusals`]).
    fn refusals(&self) -> &'static [Code];
}

impl<K: PolicyKind> AnyPolicyConfig for K {
    fn type_name(&self) -> &'static str {
        K::TYPE
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        PolicyKind::compile(self, meta, cx)
    }

    fn roles_used(&self) -> Vec<(Vec<String>, &str)> {
        PolicyKind::roles_used(self)
    }

    fn refusals(&self) -> &'static [Code] {
        PolicyKind::refusals(self)
    }
}

/// Why a config did not parse: the path inside the definition and the
/// message.
pub type ParseError = (Vec<String>, String);

/// One line of the registry: a kind's name and what parses and describes
/// its config.
pub struct RegisteredKind {
    /// The kind's `type:` name, e.g. `rate_limit`.
    pub type_name: &'static str,
    /// The name of the kind's definition in the JSON Schema, e.g. `RateLimitConfig`.
    pub schema_name: &'static str,
    /// Parses the definition's keys other than `type` and `report_only`.
    pub parse: fn(serde_yaml::Value) -> Result<Arc<dyn AnyPolicyConfig>, ParseError>,
    /// The config's JSON Schema (without the shared keys).
    pub json_schema: fn(&mut SchemaGenerator) -> Schema,
}

/// The registry line of kind `K`.
pub const fn kind<K: PolicyKind>() -> RegisteredKind {
    RegisteredKind {
        type_name: K::TYPE,
        schema_name: K::SCHEMA_NAME,
        parse: parse_as::<K>,
        json_schema: K::json_schema,
    }
}

fn parse_as<K: PolicyKind>(
    value: serde_yaml::Value,
) -> Result<Arc<dyn AnyPolicyConfig>, ParseError> {
    serde_path_to_error::deserialize::<_, K>(value)
        .map(|config| Arc::new(config) as Arc<dyn AnyPolicyConfig>)
        .map_err(|e| {
            (
                crate::config::path_segments(e.path()),
                e.into_inner().to_string(),
            )
        })
}

/// The registry entry for a `type:` name.
pub fn find(type_name: &str) -> Option<&'static RegisteredKind> {
    super::KINDS.iter().find(|k| k.type_name == type_name)
}

/// Every `type:` name, in registry order (the order errors list them in).
pub fn type_names() -> impl Iterator<Item = &'static str> {
    super::KINDS.iter().map(|k| k.type_name)
}

/// `(path, role)` of each role in the list at `field`, for
/// [`PolicyKind::roles_used`].
pub fn listed_roles<'a>(
    field: &'a str,
    roles: &'a [String],
) -> impl Iterator<Item = (Vec<String>, &'a str)> + 'a {
    roles
        .iter()
        .enumerate()
        .map(move |(i, role)| (vec![field.to_string(), i.to_string()], role.as_str()))
}
