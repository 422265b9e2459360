//! The handle the gateway gives its MCP endpoint (`crate::agents`): the
//! agents of this compiled gateway, and a way to call one operation
//! *directly*. A tool call names its operation; it is never routed again
//! by the path its arguments make, so `getEmployee {"id": "export"}`
//! (path `/employees/{id}`) reaches `getEmployee`, never the operation at
//! `GET /employees/export`.
//!
//! The call still goes through the whole entry (`entry.rs`): the request
//! id and client address, the head limits, the clean-up on arrival, the
//! operation's pipeline (every policy, the proxy), the access log, the
//! metrics and the usage meter. Only step 4 differs: the operation is the
//! one named, its route parameters the ones the tool built.

use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Gateway;
use crate::agents::Agents;
use crate::body::Body;
use crate::context::{Client, Connection};

/// What the MCP endpoint holds of the gateway that serves it.
#[derive(Clone)]
pub struct GatewayHandle {
    gateway: Arc<Gateway>,
}

/// A call to one operation, chosen by index, not by path.
#[derive(Debug, Clone)]
pub struct DirectCall {
    /// The operation's index in `Gateway::operations`.
    pub operation: usize,
    /// Its route parameters (`{name}` -> value, percent-encoded as the
    /// router would hand them over).
    pub params: Vec<(String, String)>,
    /// The caller, when the MCP endpoint authenticated it by its own rule
    /// (an OAuth access token for this resource): see [`AgentIdentity`].
    pub identity: Option<Client>,
}

/// A caller the MCP endpoint's OAuth resource server authenticated, on a
/// tool call (or its probe): the operation's `auth` stage accepts it as
/// it would a credential it checked itself. Only the gateway puts it in a
/// request's extensions; no header can.
#[derive(Debug, Clone)]
pub struct AgentIdentity(pub Client);

// === impl GatewayHandle ===

impl GatewayHandle {
    pub(crate) fn new(gateway: Arc<Gateway>) -> GatewayHandle {
        GatewayHandle { gateway }
    }

    /// The tools and the endpoint of this gateway.
    pub fn agents(&self) -> &Agents {
        &self.gateway.agents
    }

    /// Answers `req` as a call to `call.operation`, arrived on `conn`.
    /// The request's path is the operation's public path (it is logged and
    /// seen by the policies); it does not choose the operation.
    pub fn call(
        &self,
        call: DirectCall,
        req: Request<Body>,
        conn: &Connection,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let gateway = self.gateway.clone();
        let (peer, tls, peer_ip_header) = (conn.peer, conn.tls, conn.peer_ip_header.clone());
        Box::pin(async move {
            gateway
                .answer(req, peer, tls, peer_ip_header, Some(call))
                .await
        })
    }
}
