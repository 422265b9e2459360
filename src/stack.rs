//! An operation's pipeline: its policies' stages, sorted into the phase
//! order of DESIGN §1 whatever order the config lists them in, run from one
//! loop in front of the proxy. Read from the top down:
//!
//! ```text
//!  request ─▶ Preflight    cors (answers a preflight; CORS headers on the way out)
//!             Screen       ip, abuse (ban check; watches the final status)
//!             Authenticate auth
//!             Authorize    roles, headers (require / match / forbid)
//!             RateLimit    rate_limit (adds RateLimit headers on the way out)
//!             Cache        cache (a hit answers here: no quota, no upstream)
//!             Quota        quota (counted only for calls that reach it)
//!             Validate     request schema (and the response schema)
//!             Rewrite      headers (request set/remove; response set/remove)
//!             Terminal     the proxy: forward, stream both bodies
//!  response ◀─ the response halves of the stages that asked, in reverse
//! ```
//!
//! Within a phase the config order (gateway, then API, then operation)
//! holds. A stage that refuses stops the walk: the stages before it (and
//! itself, if it left something for its response half) see the refusal on
//! its way out, exactly as in a tower onion, but without one boxed service,
//! clone and future per layer per request. Report-only refusals are noted
//! here, once, for every kind.

use http::{Request, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::ServiceExt;

use crate::body::Body;
use crate::context::RequestContext;
use crate::policy::{CompiledPolicy, OperationService, Phase, PolicyMeta, Saved, Stage, Stop};
use crate::problem::{Code, Reject};
use crate::proxy::Proxy;

/// Where a pipeline's walk ends when no stage answered.
#[derive(Clone)]
pub enum Terminal {
    /// Forward to the upstream (every operation).
    Proxy(Proxy),
    /// Any other service: the MCP endpoint, a probe's end, a test's stub.
    Service(OperationService),
}

/// The stages of one operation (or of a partial stack), in run order, and
/// where they end.
#[derive(Clone)]
pub struct Pipeline {
    stages: Arc<[Stage]>,
    terminal: Terminal,
}

/// The stages that passed and left something for their response half;
/// rarely more than a handful, so they live on the stack.
type Passed<'p> = smallvec::SmallVec<[(&'p Stage, Saved); 4]>;

// === impl Pipeline ===

impl Pipeline {
    /// Every stage of `policies`, in phase order, in front of `terminal`.
    pub fn new(policies: &[CompiledPolicy], terminal: Terminal) -> Pipeline {
        Pipeline::keeping(policies, terminal, |_, _| true)
    }

    /// The stages of `policies` that `keep` accepts, in phase order.
    fn keeping(
        policies: &[CompiledPolicy],
        terminal: Terminal,
        keep: impl Fn(&PolicyMeta, &Stage) -> bool,
    ) -> Pipeline {
        let mut stages: Vec<(Phase, usize, &Stage)> = policies
            .iter()
            .flat_map(|p| p.stages.iter().filter(|s| keep(&p.meta, s)))
            .enumerate()
            .map(|(order, stage)| (stage.phase, order, stage))
            .collect();
        stages.sort_by_key(|(phase, order, _)| (*phase, *order));
        Pipeline {
            stages: stages.into_iter().map(|(_, _, s)| s.clone()).collect(),
            terminal,
        }
    }

    /// Runs the call through this pipeline. (Not an `async fn`: a
    /// wrapper would hold the request once more.)
    pub fn run<'a>(
        &'a self,
        req: Request<Body>,
        cx: &'a mut RequestContext,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'a {
        run_chain(std::slice::from_ref(self), req, cx)
    }

    /// Whether a `cors` stage runs here: then a preflight to this
    /// operation's path is answered by it (`crate::gateway` routes it here).
    pub fn answers_preflight(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s.step, crate::policy::Step::Cors(_)))
    }

    /// This pipeline as a tower `Service` (the context travels in the
    /// request's extensions, as at any tower edge).
    pub fn into_service(self) -> OperationService {
        OperationService::new(self)
    }
}

/// Runs the call through the stages of every pipeline in `chain`, in
/// order, then the last one's terminal: a GraphQL document that matched
/// several operations passes the policies of each and reaches the upstream
/// once. The context is the entry's, lent to every stage and to the
/// proxy: never moved or boxed into extensions on the way (only a tower
/// terminal needs it there), and a future that holds a reference holds 8
/// bytes, not the context (an `async fn` keeps a by-value argument twice).
pub async fn run_chain(
    chain: &[Pipeline],
    req: Request<Body>,
    cx: &mut RequestContext,
) -> Response<Body> {
    let (mut parts, mut body) = req.into_parts();
    let mut passed: Passed<'_> = smallvec::SmallVec::new();
    let mut answer = None;
    'walk: for stage in chain.iter().flat_map(|p| p.stages.iter()) {
        let mut saved = Saved::Nothing;
        // Most stages decide at once (checks, rewrites, memory-store
        // limits): no future is built for them.
        let verdict = match stage.step.before_now(&mut parts, &mut body, cx, &mut saved) {
            Some(verdict) => verdict,
            // Boxed: the waiting halves (a Redis call, a JWKS fetch, a
            // body read) are kilobytes of state this future would
            // otherwise carry, and copy, for every request.
            None => Box::pin(stage.step.before(&mut parts, &mut body, cx, &mut saved)).await,
        };
        if !matches!(saved, Saved::Nothing) {
            passed.push((stage, saved));
        }
        match verdict {
            Ok(()) => {}
            Err(Stop::Refuse(reject)) if stage.meta.report_only => {
                tracing::info!(
                    policy = &*stage.meta.name,
                    code = reject.code.as_str(),
                    "report-only policy would reject"
                );
                crate::trace::would_refuse(cx, &stage.meta.name, reject.code);
                cx.would_reject.push((stage.meta.name.clone(), reject.code));
            }
            Err(Stop::Refuse(reject)) => {
                crate::trace::refused(cx, &stage.meta.name, reject.code);
                answer = Some(
                    reject
                        .by_policy(&stage.meta.name)
                        .into_response(&cx.request_id),
                );
                break 'walk;
            }
            Err(Stop::Answer(response)) => {
                answer = Some(*response);
                break 'walk;
            }
        }
    }
    let mut response = match answer {
        Some(response) => response,
        None => {
            let req = Request::from_parts(parts, body);
            // Boxed, though every forwarded call takes this path: the
            // proxy's future (2 KiB) is then copied once, into its box,
            // instead of with every future around it, up to the box the
            // entry puts each request's future in: the copies cost more
            // than the allocation (callgrind: ~200 instructions a call).
            match chain.last().map(|p| &p.terminal) {
                Some(Terminal::Proxy(proxy)) => Box::pin(proxy.forward(req, cx)).await,
                Some(Terminal::Service(service)) => Box::pin(call_service(service, req, cx)).await,
                None => Reject::new(Code::Internal, "an empty chain").into_response(&cx.request_id),
            }
        }
    };
    crate::trace::keep_rate_limit(cx);
    for (stage, saved) in passed.into_iter().rev() {
        if let Some(saved) = stage.step.after_now(&mut response, cx, saved) {
            Box::pin(stage.step.after(&mut response, cx, saved)).await;
        }
    }
    response
}

/// Calls a tower service at a pipeline's edge (a terminal, the MCP
/// endpoint): the context travels in the extensions there and back, and
/// the call cannot fail (errors are responses).
pub(crate) async fn call_service(
    service: &OperationService,
    mut req: Request<Body>,
    cx: &mut RequestContext,
) -> Response<Body> {
    req.extensions_mut().insert(crate::context::lend(cx));
    let mut response = match service.clone().oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    crate::context::take_back(cx, response.extensions_mut());
    response
}

/// At a tower edge the context travels in the extensions.
impl tower::Service<Request<Body>> for Pipeline {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            match req.extensions_mut().remove::<RequestContext>() {
                Some(mut cx) => {
                    let mut response = this.run(req, &mut cx).await;
                    response.extensions_mut().insert(cx);
                    Ok(response)
                }
                None => Ok(crate::policy::context_missing(
                    req.into_parts().0.extensions,
                )),
            }
        })
    }
}

// === the partial stacks ===

/// Every stage of `policies` around `terminal`, as a tower service.
pub fn build(policies: &[CompiledPolicy], terminal: OperationService) -> OperationService {
    Pipeline::new(policies, Terminal::Service(terminal)).into_service()
}

/// The pipeline for requests that matched no route: only the gateway-wide
/// `Screen` policies (ip, abuse) judge them, so a scanner probing unknown
/// paths is seen and banned like any other caller; a gateway-wide `cors`
/// answers preflights there too, and gives the 404/405 its CORS headers so
/// a page can read why.
pub fn unrouted(gateway_policies: &[CompiledPolicy], terminal: OperationService) -> Pipeline {
    Pipeline::keeping(gateway_policies, Terminal::Service(terminal), |_, stage| {
        stage.phase <= Phase::Screen
    })
}

/// The stack of the MCP endpoint itself (`crate::agents`): the gateway-wide
/// `Screen`, `Authenticate` and `RateLimit` stages (ip, abuse, auth — or
/// `own_auth` in its place — then rate_limit), so every MCP request (`initialize`, `tools/list`,
/// `tools/call`, ...) is counted by the limits that apply gateway-wide.
/// Roles, header rules, quotas and the operation's own limits are judged
/// on each tool call, which runs its operation's stack ([`tool_call`]).
pub fn build_agents_endpoint(
    gateway_policies: &[CompiledPolicy],
    terminal: OperationService,
    own_auth: Option<&dyn Fn(OperationService) -> OperationService>,
) -> OperationService {
    let limits = Pipeline::keeping(gateway_policies, Terminal::Service(terminal), |_, stage| {
        stage.phase == Phase::RateLimit
    })
    .into_service();
    // With `agents.oauth` the endpoint authenticates by its own rule (an
    // OAuth resource server) in place of the gateway-wide `auth`.
    let (inner, last) = match own_auth {
        Some(wrap) => (wrap(limits), Phase::Screen),
        None => (limits, Phase::Authenticate),
    };
    Pipeline::keeping(gateway_policies, Terminal::Service(inner), |_, stage| {
        stage.phase <= last
    })
    .into_service()
}

/// The pipeline of an operation's tool calls: all of it but the
/// gateway-wide `rate_limit` stages (`counted`), which the MCP request
/// carrying the call has already counted: one call, one token.
pub fn tool_call(
    policies: &[CompiledPolicy],
    counted: &[CompiledPolicy],
    terminal: Terminal,
) -> Pipeline {
    Pipeline::keeping(policies, terminal, |meta, stage| {
        stage.phase != Phase::RateLimit || !counted.iter().any(|g| g.meta.name == meta.name)
    })
}

/// The probe of an operation for `tools/list`: its checks that only judge
/// (ip, auth, roles, headers require/match/forbid) around `terminal`, so a
/// caller can be told which tools it may call without spending anything.
/// `abuse` is left out although it runs in `Screen`: it counts the statuses
/// it sees, and a probe's refusal is not a request the caller made.
pub fn build_probe(policies: &[CompiledPolicy], terminal: OperationService) -> OperationService {
    Pipeline::keeping(policies, Terminal::Service(terminal), |meta, stage| {
        stage.phase <= Phase::Authorize && meta.type_name != "abuse"
    })
    .into_service()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use crate::policy::{Check, RequestHead};
    use std::sync::Mutex;

    /// A check that records its name when the request passes it.
    struct Recording(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Check for Recording {
        fn check(&self, _: &mut RequestHead<'_>, _: &mut RequestContext) -> Result<(), Reject> {
            self.1.lock().map(|mut l| l.push(self.0)).ok();
            Ok(())
        }
    }

    fn recording(
        phase: Phase,
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
    ) -> CompiledPolicy {
        let meta = Arc::new(PolicyMeta {
            name: name.into(),
            // Named after the kind, so stacks that pick by kind can be seen.
            type_name: name,
            report_only: false,
        });
        CompiledPolicy {
            stages: vec![Stage::check(phase, &meta, Recording(name, log))],
            meta,
        }
    }

    fn request() -> Request<Body> {
        let mut req = Request::new(body::empty());
        req.extensions_mut().insert(RequestContext::new(
            http::HeaderValue::from_static("r"),
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1".parse().expect("ip"),
        ));
        req
    }

    fn terminal() -> OperationService {
        OperationService::new(tower::service_fn(|req: Request<Body>| async move {
            let mut response = Response::new(body::empty());
            if let Some(cx) = req.extensions().get::<RequestContext>() {
                response.extensions_mut().insert(cx.clone());
            }
            Ok(response)
        }))
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
        let svc = build(&policies, terminal());
        svc.oneshot(request()).await.expect("infallible");
        let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(seen, ["ip", "abuse", "auth", "roles", "rate", "quota"]);
    }

    /// The stages a builder keeps, in the order a request meets them.
    async fn kept(
        builder: impl Fn(&[CompiledPolicy], OperationService) -> OperationService,
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
        builder(&policies, terminal())
            .oneshot(request())
            .await
            .expect("infallible");
        let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
        seen
    }

    #[tokio::test]
    async fn each_partial_stack_keeps_only_its_stages() {
        let unrouted_service =
            |p: &[CompiledPolicy], t: OperationService| unrouted(p, t).into_service();
        assert_eq!(kept(unrouted_service).await, ["ip", "abuse"]);
        let endpoint =
            |p: &[CompiledPolicy], t: OperationService| build_agents_endpoint(p, t, None);
        assert_eq!(kept(endpoint).await, ["ip", "abuse", "auth", "rate"]);
        // A probe spends nothing: no abuse counting, no limits, no quota.
        assert_eq!(kept(build_probe).await, ["ip", "auth", "roles"]);
    }
}
