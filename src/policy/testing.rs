//! What the policies' unit tests share: compiling policies from YAML, a
//! terminal that answers like the proxy, and a request with its context.

use http::header::HeaderValue;
use http::{Request, Response};

use crate::body::Body;
use crate::clock::SharedClock;
use crate::config::schema::{Config, PolicyDef};
use crate::context::{Client, RequestContext, RoleSet};
use crate::policy::{CompileCx, CompiledPolicy, OperationService, RoleTable};
use crate::state::AnyStore;

/// Compiles policies from YAML definitions (`name: {type: ..}`) against
/// `config_yaml`, sharing `store` and `clock`. For this module's tests
/// and those of `quota` and `abuse`.
pub fn compile_policies(
    config_yaml: &str,
    defs_yaml: &str,
    store: &AnyStore,
    clock: &SharedClock,
) -> Result<Vec<CompiledPolicy>, Vec<String>> {
    let config: Config = serde_yaml::from_str(config_yaml).expect("config yaml");
    let defs: Vec<(String, PolicyDef)> = serde_yaml::from_str::<serde_yaml::Mapping>(defs_yaml)
        .expect("defs yaml")
        .into_iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("name").to_string(),
                serde_yaml::from_value(v).expect("policy def"),
            )
        })
        .collect();
    let roles = RoleTable::new(config.roles.clone());
    let base = std::path::PathBuf::from(".");
    let mut cx = CompileCx::new(&config, &roles, clock, &base).with_store(store);
    let mut out = Vec::new();
    for (name, def) in &defs {
        if let Some(p) = crate::policy::compile(def, name, &mut cx) {
            out.push(p);
        }
    }
    let errors: Vec<String> = cx
        .take_errors()
        .into_iter()
        .map(|(path, m)| format!("{}: {m}", path.join(".")))
        .collect();
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A terminal that answers 200 and hands the context back, as the
/// proxy does.
pub fn echo_terminal(status: u16) -> OperationService {
    OperationService::new(tower::service_fn(move |req: Request<Body>| async move {
        let (parts, _) = req.into_parts();
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        if let Some(cx) = parts.extensions.get::<RequestContext>() {
            response.extensions_mut().insert(cx.clone());
        }
        Ok(response)
    }))
}

pub fn request(client: Option<(&str, RoleSet)>) -> Request<Body> {
    let mut cx = RequestContext::new(
        HeaderValue::from_static("req"),
        "192.0.2.1:4000".parse().expect("addr"),
        "192.0.2.1".parse().expect("ip"),
    );
    cx.client = client.map(|(id, roles)| Client {
        id: id.into(),
        roles,
        key_id: None,
    });
    let mut req = Request::new(crate::body::empty());
    req.extensions_mut().insert(cx);
    req
}
