//! Where an operation's service is assembled: its policies' stages, sorted
//! into the phase order of DESIGN §1 whatever order the config lists them
//! in, wrapped around the proxy. Read from the outside in:
//!
//! ```text
//!  request ─▶ Screen       ip, abuse (ban check; watches the final status)
//!             Authenticate auth
//!             Authorize    roles, headers (require / match / forbid)
//!             RateLimit    rate_limit (adds RateLimit headers on the way out)
//!             Cache        cache (a hit answers here: no quota, no upstream)
//!             Quota        quota (counted only for calls that reach it)
//!             Validate     request schema
//!             Rewrite      headers (request set/remove; response set/remove)
//!             Proxy        forward, stream both bodies
//!  response ◀─ ... each layer sees the response on its way back out
//! ```
//!
//! Within a phase the config order (gateway, then API, then operation)
//! holds.

use crate::policy::{CompiledPolicy, OperationService, Phase, PolicyMeta, Stage};

/// Wraps `terminal` with every stage of `policies`, outermost first in
/// phase order.
pub fn build(policies: &[CompiledPolicy], terminal: OperationService) -> OperationService {
    let mut stages: Vec<(Phase, usize, &Stage)> = policies
        .iter()
        .flat_map(|p| p.stages.iter())
        .enumerate()
        .map(|(order, stage)| (stage.phase, order, stage))
        .collect();
    stages.sort_by_key(|(phase, order, _)| (*phase, *order));
    stages
        .iter()
        .rev()
        .fold(terminal, |inner, (_, _, stage)| (stage.layer)(inner))
}

/// The stack for requests that matched no route: only the gateway-wide
/// `Screen` policies (ip, abuse) judge them, so a scanner probing unknown
/// paths is seen and banned like any other caller.
pub fn build_unrouted(
    gateway_policies: &[CompiledPolicy],
    terminal: OperationService,
) -> OperationService {
    build(
        &only(gateway_policies, |_, stage| stage.phase == Phase::Screen),
        terminal,
    )
}

/// The stack of the MCP endpoint itself (`crate::agents`): the gateway-wide
/// `Screen` and `Authenticate` stages (ip, abuse, auth). Limits, quotas,
/// roles and header rules are not judged here but on each tool call, which
/// runs its operation's whole stack: counting the envelope too would charge
/// one call twice.
pub fn build_agents_endpoint(
    gateway_policies: &[CompiledPolicy],
    terminal: OperationService,
) -> OperationService {
    build(
        &only(gateway_policies, |_, stage| {
            stage.phase <= Phase::Authenticate
        }),
        terminal,
    )
}

/// The probe of an operation for `tools/list`: its checks that only judge
/// (ip, auth, roles, headers require/match/forbid) around `terminal`, so a
/// caller can be told which tools it may call without spending anything.
/// `abuse` is left out although it runs in `Screen`: it counts the statuses
/// it sees, and a probe's refusal is not a request the caller made.
pub fn build_probe(policies: &[CompiledPolicy], terminal: OperationService) -> OperationService {
    build(
        &only(policies, |meta, stage| {
            stage.phase <= Phase::Authorize && meta.type_name != "abuse"
        }),
        terminal,
    )
}

/// `policies` with only the stages `keep` accepts.
fn only(
    policies: &[CompiledPolicy],
    keep: impl Fn(&PolicyMeta, &Stage) -> bool,
) -> Vec<CompiledPolicy> {
    policies
        .iter()
        .map(|p| CompiledPolicy {
            meta: p.meta.clone(),
            stages: p
                .stages
                .iter()
                .filter(|s| keep(&p.meta, s))
                .cloned()
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{self, Body};
    use http::{Request, Response};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    /// A stage that records its name when the request passes it.
    fn recording(
        phase: Phase,
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
    ) -> CompiledPolicy {
        CompiledPolicy {
            meta: Arc::new(PolicyMeta {
                name: name.into(),
                // Named after the kind, so stacks that pick by kind can be seen.
                type_name: name,
                report_only: false,
            }),
            stages: vec![Stage {
                phase,
                layer: Arc::new(move |inner: OperationService| {
                    let log = log.clone();
                    OperationService::new(tower::service_fn(move |req: Request<Body>| {
                        log.lock().map(|mut l| l.push(name)).ok();
                        inner.clone().oneshot(req)
                    }))
                }),
            }],
        }
    }

    #[tokio::test]
    async fn stages_run_in_phase_order_whatever_the_list_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let policies = vec![
            recording(Phase::Quota, "quota", log.clone()),
            recording(Phase::Authorize, "roles", log.clone()),
            recording(Phase::Screen, "ip", log.clone()),
            recording(Phase::RateLimit, "rate", log.clone()),
            recording(Phase::Authenticate, "auth", log.clone()),
            recording(Phase::Screen, "abuse", log.clone()),
        ];
        let terminal = OperationService::new(tower::service_fn(|_req: Request<Body>| async {
            Ok(Response::new(body::empty()))
        }));
        let svc = build(&policies, terminal);
        svc.oneshot(Request::new(body::empty()))
            .await
            .expect("infallible");
        let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(seen, ["ip", "abuse", "auth", "roles", "rate", "quota"]);
    }

    /// The stages a builder keeps, in the order a request meets them.
    async fn kept(
        builder: fn(&[CompiledPolicy], OperationService) -> OperationService,
    ) -> Vec<&'static str> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let policies = vec![
            recording(Phase::Screen, "ip", log.clone()),
            recording(Phase::Screen, "abuse", log.clone()),
            recording(Phase::Authenticate, "auth", log.clone()),
            recording(Phase::Authorize, "roles", log.clone()),
            recording(Phase::RateLimit, "rate", log.clone()),
            recording(Phase::Quota, "quota", log.clone()),
            recording(Phase::Rewrite, "headers", log.clone()),
        ];
        let terminal = OperationService::new(tower::service_fn(|_req: Request<Body>| async {
            Ok(Response::new(body::empty()))
        }));
        builder(&policies, terminal)
            .oneshot(Request::new(body::empty()))
            .await
            .expect("infallible");
        let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
        seen
    }

    #[tokio::test]
    async fn each_partial_stack_keeps_only_its_stages() {
        assert_eq!(kept(build_unrouted).await, ["ip", "abuse"]);
        assert_eq!(kept(build_agents_endpoint).await, ["ip", "abuse", "auth"]);
        // A probe spends nothing: no abuse counting, no limits, no quota.
        assert_eq!(kept(build_probe).await, ["ip", "auth", "roles"]);
    }
}
