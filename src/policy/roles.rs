//! Role restriction: allow and deny lists of declared roles; deny wins.
//!
//! ```yaml
//! policies:
//!   admins-only:
//!     type: roles
//!     allow: [admin]        # the client must hold one of these
//!     deny: [suspended]     # and none of these
//! ```
//!
//! Runs after `auth`: an anonymous call gets 401 `unauthenticated`, a
//! client without an allowed role (or with a denied one) 403
//! `forbidden_role`.

use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

use super::registry::PolicyKind;
use super::{Check, CompileCx, Phase, PolicyMeta, RequestHead, Stage};
use crate::context::{RequestContext, RoleSet};
use crate::problem::{Code, Reject};

/// `type: roles` — allow and deny lists of declared roles; deny wins. An anonymous call gets
/// 401 `unauthenticated`, a client without an allowed role (or with a denied one) 403
/// `forbidden_role`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// The client must hold one of these roles, e.g. `[reader, admin]` (empty: any client).
    #[serde(default)]
    pub allow: Vec<String>,
    /// A client holding any of these roles is refused, e.g. `[suspended]`.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A compiled `roles` policy: two masks.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    /// Empty: any client not denied passes.
    allow: RoleSet,
    deny: RoleSet,
}

impl PolicyKind for RolesConfig {
    const TYPE: &'static str = "roles";
    const SCHEMA_NAME: &'static str = "RolesPolicy";

    fn compile(&self, meta: &Arc<PolicyMeta>, cx: &mut CompileCx<'_>) -> Option<Vec<Stage>> {
        compile(self, meta, cx)
    }

    fn roles_used(&self) -> Vec<(Vec<String>, &str)> {
        super::registry::listed_roles("allow", &self.allow)
            .chain(super::registry::listed_roles("deny", &self.deny))
            .collect()
    }

    fn refusals(&self) -> &'static [Code] {
        &[Code::Unauthenticated, Code::ForbiddenRole]
    }
}

fn compile(
    config: &RolesConfig,
    meta: &Arc<PolicyMeta>,
    cx: &mut CompileCx<'_>,
) -> Option<Vec<Stage>> {
    if config.allow.is_empty() && config.deny.is_empty() {
        cx.error(&[], "give `allow`, `deny` or both");
        return None;
    }
    let roles = Roles {
        allow: cx.role_set("allow", &config.allow),
        deny: cx.role_set("deny", &config.deny),
    };
    Some(vec![Stage::check(Phase::Authorize, meta, roles)])
}

// === impl Roles ===

impl Check for Roles {
    fn check(&self, _req: &mut RequestHead<'_>, cx: &mut RequestContext) -> Result<(), Reject> {
        let Some(client) = &cx.client else {
            return Err(Reject::new(
                Code::Unauthenticated,
                "this operation is restricted by role: authenticate first",
            ));
        };
        if client.roles.intersects(self.deny) {
            return Err(Reject::new(
                Code::ForbiddenRole,
                "one of the client's roles is denied this operation",
            ));
        }
        if !self.allow.is_empty() && !client.roles.intersects(self.allow) {
            return Err(Reject::new(
                Code::ForbiddenRole,
                "the client holds no role allowed this operation",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Client;
    use http::{HeaderMap, HeaderValue, Method, Uri};

    fn judge(roles: &Roles, client: Option<RoleSet>) -> Result<(), Code> {
        let mut cx = RequestContext::new(
            HeaderValue::from_static("r"),
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1".parse().expect("ip"),
        );
        cx.client = client.map(|roles| Client {
            id: "c".into(),
            roles,
            key_id: None,
        });
        let (method, uri, mut headers) = (Method::GET, Uri::from_static("/"), HeaderMap::new());
        let mut head = RequestHead {
            method: &method,
            uri: &uri,
            headers: &mut headers,
        };
        roles.check(&mut head, &mut cx).map_err(|r| r.code)
    }

    #[test]
    fn deny_wins_over_allow() {
        let (reader, admin, banned) = (
            RoleSet::EMPTY.with(0),
            RoleSet::EMPTY.with(1),
            RoleSet::EMPTY.with(2),
        );
        let roles = Roles {
            allow: reader.with(1),
            deny: banned,
        };
        assert_eq!(judge(&roles, Some(reader)), Ok(()));
        assert_eq!(judge(&roles, Some(admin)), Ok(()));
        assert_eq!(judge(&roles, Some(admin.with(2))), Err(Code::ForbiddenRole));
        assert_eq!(judge(&roles, Some(banned)), Err(Code::ForbiddenRole));
        assert_eq!(
            judge(&roles, Some(RoleSet::EMPTY)),
            Err(Code::ForbiddenRole)
        );
        assert_eq!(judge(&roles, None), Err(Code::Unauthenticated));
    }

    #[test]
    fn a_deny_only_policy_lets_every_other_client_through() {
        let roles = Roles {
            allow: RoleSet::EMPTY,
            deny: RoleSet::EMPTY.with(3),
        };
        assert_eq!(judge(&roles, Some(RoleSet::EMPTY)), Ok(()));
        assert_eq!(
            judge(&roles, Some(RoleSet::EMPTY.with(3))),
            Err(Code::ForbiddenRole)
        );
    }
}
