//! Tollgate: an API gateway that turns a project's workflow endpoints into
//! one governed API. See DESIGN.md for the contract and README.md for use.

// Every public item says what it is (issue #22): the crate is read more
// than it is written.
#![warn(missing_docs)]

pub mod access_log;
pub mod address;
pub mod admin;
pub mod agents;
pub mod app;
pub mod body;
pub mod body_schema;
pub mod calendar;
pub mod call_log;
pub mod clock;
pub mod config;
pub mod context;
pub mod cost;
pub mod credentials;
pub mod demo;
pub mod gateway;
pub mod graphql;
pub mod header_names;
pub mod metrics;
pub mod openapi;
pub mod path_template;
pub mod policy;
pub mod problem;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod trace;
pub mod usage_series;
pub mod woken;

/// What the fuzz targets (fuzz/) drive that is not public otherwise. Not an
/// API: it may change in any release.
#[doc(hidden)]
pub mod fuzzing {
    use http::HeaderValue;
    use std::net::{IpAddr, SocketAddr};

    use crate::context::{Client, RequestContext};
    use crate::policy::headers::Template;

    /// Parses a `headers` policy `set` value and renders it for a request
    /// from `client_ip` by `client` (anonymous if `None`).
    pub fn render_header_template(
        text: &str,
        client: Option<&str>,
        request_id: &str,
        client_ip: IpAddr,
    ) -> Result<Option<HeaderValue>, String> {
        let template = Template::parse(text)?;
        let request_id = HeaderValue::from_str(request_id).map_err(|e| e.to_string())?;
        let mut cx = RequestContext::new(request_id, SocketAddr::new(client_ip, 1), client_ip);
        cx.client = client.map(|id| Client {
            id: id.into(),
            roles: Default::default(),
            key_id: None,
        });
        Ok(template.render(Some(&cx)))
    }
}
