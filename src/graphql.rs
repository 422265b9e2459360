//! GraphQL endpoints: several operations at one method and path (e.g.
//! `POST /graphql`), each publishing one root field, told apart by the
//! document the caller sends.
//!
//! ```yaml
//! graphql_unmatched: reject          # or allow
//! apis:
//!   - name: embedded
//!     upstream: https://tray.example/graphql
//!     operations:
//!       - { id: getUsers, method: POST, path: /graphql, graphql: { operation: query, field: users } }
//!       - { id: removeUser, method: POST, path: /graphql, graphql: { operation: mutation, field: removeUser } }
//! ```
//!
//! What a call goes through:
//! 1. The body is buffered (it is already bounded by `limits.max_body`) and
//!    read as `{"query", "operationName"}` JSON, or as the document itself
//!    with `Content-Type: application/graphql`.
//! 2. The document is parsed; the executable operation is chosen (by
//!    `operationName`; a document with several operations and no
//!    `operationName` is refused, as a GraphQL server would refuse it).
//! 3. Its root fields are collected through fragment spreads and inline
//!    fragments, by field *name* (aliases are ignored), and whatever their
//!    directives say (`@skip(if: $x)` is decided by variables the gateway
//!    does not evaluate, so the field counts). Hence aliases, fragments and
//!    `operationName` cannot hide a field.
//!    A selector may name a field one level down (`field: viewer.solutions`)
//!    to tell apart operations that share a root field (Tray's `viewer`):
//!    then every field under that root must be published (unless the root
//!    field itself is).
//! 4. Each root field is matched to the operation publishing it. The call
//!    runs the full pipeline of *every* matched operation, in config order,
//!    and reaches the upstream once: the stages of each matched operation
//!    run one after the other (`crate::stack::run_chain`), then the last
//!    one's proxy.
//! 5. A root field no operation publishes: 400
//!    `graphql_operation_not_allowed` with `graphql_unmatched: reject`; with
//!    `allow` it is forwarded under the policies of the fields that did
//!    match. A document matching no operation at all is always refused:
//!    there would be no policy to run it under.
//!
//! `__typename` at the root needs no operation (it reveals only the root
//! type's name). Introspection (`__schema`, `__type`) is an ordinary root
//! field: publish it with an operation (`field: __schema`) to allow it, and
//! give that operation the policies it deserves.
//!
//! The upstream sees `X-Tollgate-Operation` naming every matched operation,
//! comma-separated in config order (the access log's `operation` too).
//!
//! Parser: `graphql-parser` — small (one dependency, `combine`), borrows
//! the document instead of copying it, and reads the whole executable
//! grammar; `async-graphql-parser` is the other maintained choice but
//! brings pest and a value model the gateway does not need.

use bytes::Bytes;
use graphql_parser::query::{
    Definition, Document, Field, OperationDefinition, Selection, SelectionSet,
};
use http::{HeaderValue, Request};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::body::{self, Body};
use crate::config::schema::{GraphqlOperationType, GraphqlSelector, GraphqlUnmatched};
use crate::context::{OperationInfo, RequestContext};
use crate::problem::{Code, Reject};
use crate::stack::Pipeline;

/// Documents nested deeper than this are refused before parsing: the
/// parser recurses, and a body of a million `{` must not exhaust the stack.
const MAX_DEPTH: usize = 64;

/// At most this many root field selections (aliases count) per operation.
const MAX_ROOT_FIELDS: usize = 256;

/// At most this many selections (fields, inline fragments, spreads) are
/// visited per document, through every fragment: the work of routing one
/// call is bounded whatever the document's shape.
const MAX_SELECTIONS: usize = 10_000;

/// One operation of an endpoint: the field it publishes and its pipeline.
#[derive(Clone)]
pub struct Member {
    /// The root field the operation publishes.
    pub selector: GraphqlSelector,
    /// The operation's API and id.
    pub info: Arc<OperationInfo>,
    /// The operation's stages and proxy.
    pub pipeline: Pipeline,
}

/// All the operations at one method and path.
#[derive(Clone)]
pub struct GraphqlEndpoint {
    members: Arc<[Member]>,
    unmatched: GraphqlUnmatched,
}

/// What a document asks for: the operation type and its root fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The operation type (`query` for a shorthand document), or `None` for a subscription.
    pub operation: Option<GraphqlOperationType>,
    /// Root field names, each once, in document order (`__typename` left out).
    pub fields: Vec<String>,
    /// For each root field, the names of the fields selected under it
    /// (for `field: viewer.solutions` selectors), through fragments.
    pub children: Vec<Vec<String>>,
}

// === impl GraphqlEndpoint ===

impl GraphqlEndpoint {
    /// `Err((index, message))` names a member whose field another member
    /// already publishes.
    pub fn new(members: Vec<Member>, unmatched: GraphqlUnmatched) -> Result<Self, (usize, String)> {
        for (i, m) in members.iter().enumerate() {
            if let Some(other) = members[..i].iter().find(|o| o.selector == m.selector) {
                return Err((
                    i,
                    format!(
                        "the {} field `{}` is already published by operation `{}`",
                        type_name(m.selector.operation),
                        m.selector.field,
                        other.info.id
                    ),
                ));
            }
        }
        Ok(GraphqlEndpoint {
            members: members.into(),
            unmatched,
        })
    }

    /// Answers a call to the endpoint: the document is read, its root
    /// fields matched, and the call runs the stages of every matched
    /// operation in config order, then reaches the upstream once.
    pub async fn call(&self, req: Request<Body>, cx: &mut RequestContext) -> http::Response<Body> {
        let (parts, body) = req.into_parts();
        let refuse = |reject: Reject, cx: &RequestContext| reject.into_response(&cx.request_id);
        let bytes = match body::collect_request(body).await {
            Ok(bytes) => bytes,
            Err(reject) => return refuse(reject, cx),
        };
        let matched = match read_request(&parts.headers, &bytes)
            .and_then(|(doc, name)| select(&doc, name.as_deref()))
            .and_then(|selected| self.matching(&selected))
        {
            Ok(m) => m,
            Err(reject) => return refuse(reject, cx),
        };
        cx.operation = Some(combined_info(&matched));
        let chain: Vec<Pipeline> = matched.iter().map(|m| m.pipeline.clone()).collect();
        crate::stack::run_chain(&chain, Request::from_parts(parts, body::full(bytes)), cx).await
    }

    /// The members whose policies the call must pass, in config order.
    fn matching(&self, selected: &Selected) -> Result<Vec<&Member>, Reject> {
        let operation = selected.operation.ok_or_else(|| {
            Reject::new(
                Code::GraphqlOperationNotAllowed,
                "subscriptions are not published at this endpoint",
            )
        })?;
        let mut unknown: Vec<String> = Vec::new();
        let mut hit = vec![false; self.members.len()];
        let position = |name: &str| {
            self.members
                .iter()
                .position(|m| m.selector.operation == operation && m.selector.field == name)
        };
        for (field, children) in selected.fields.iter().zip(&selected.children) {
            // `viewer.solutions` selectors split one root field by the
            // fields under it; each must then be published, unless the
            // root field itself is.
            let plain = position(field);
            if let Some(i) = plain {
                hit[i] = true;
            }
            for child in children {
                match position(&format!("{field}.{child}")) {
                    Some(i) => hit[i] = true,
                    None if plain.is_none() => unknown.push(format!("{field}.{child}")),
                    None => {}
                }
            }
            if plain.is_none() && children.is_empty() {
                unknown.push(field.clone());
            }
        }
        if !unknown.is_empty() && self.unmatched == GraphqlUnmatched::Reject {
            return Err(Reject::new(
                Code::GraphqlOperationNotAllowed,
                format!(
                    "no operation publishes the {} field(s) {}",
                    type_name(operation),
                    unknown.join(", ")
                ),
            ));
        }
        let matched: Vec<&Member> = self
            .members
            .iter()
            .zip(hit)
            .filter_map(|(m, hit)| hit.then_some(m))
            .collect();
        if matched.is_empty() {
            return Err(Reject::new(
                Code::GraphqlOperationNotAllowed,
                "the document selects no field an operation publishes",
            ));
        }
        Ok(matched)
    }
}

/// The `operation` the context, the access log and `X-Tollgate-Operation`
/// report: the matched ids, comma-separated.
fn combined_info(matched: &[&Member]) -> Arc<OperationInfo> {
    if let [only] = matched {
        return only.info.clone();
    }
    let ids = matched
        .iter()
        .map(|m| &*m.info.id)
        .collect::<Vec<_>>()
        .join(",");
    Arc::new(OperationInfo {
        api: matched
            .first()
            .map(|m| m.info.api.clone())
            .unwrap_or_default(),
        header_value: HeaderValue::from_str(&ids).unwrap_or(HeaderValue::from_static("invalid")),
        id: ids.into(),
        // One upstream call answers every matched field: it costs what they
        // declare together, and the first one's header reports it.
        cost: matched.first().map_or_else(Default::default, |m| {
            let mut cost = m.info.cost.clone();
            cost.declared = matched.iter().map(|m| m.info.cost.declared).sum();
            cost
        }),
    })
}

fn type_name(t: GraphqlOperationType) -> &'static str {
    match t {
        GraphqlOperationType::Query => "query",
        GraphqlOperationType::Mutation => "mutation",
    }
}

// === reading the document ===

fn bad(detail: impl Into<std::borrow::Cow<'static, str>>) -> Reject {
    Reject::new(Code::InvalidRequestBody, detail)
}

/// The document text and `operationName` of a GraphQL-over-HTTP request.
fn read_request(
    headers: &http::HeaderMap,
    bytes: &Bytes,
) -> Result<(String, Option<String>), Reject> {
    let essence = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/graphql") {
        let doc = std::str::from_utf8(bytes).map_err(|_| bad("the document is not UTF-8"))?;
        return Ok((doc.to_string(), None));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct GraphqlRequest {
        query: String,
        #[serde(default)]
        operation_name: Option<String>,
    }
    let req: GraphqlRequest = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "a GraphQL request is JSON with a `query` string ({e})"
        ))
    })?;
    Ok((req.query, req.operation_name))
}

/// Parses `document` and collects what its chosen operation selects.
pub fn select(document: &str, operation_name: Option<&str>) -> Result<Selected, Reject> {
    if nesting_depth(document) > MAX_DEPTH {
        return Err(bad(format!(
            "the document is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let doc: Document<'_, &str> = graphql_parser::parse_query(document)
        .map_err(|e| bad(format!("the GraphQL document does not parse: {e}")))?;
    let operations: Vec<&OperationDefinition<'_, &str>> = doc
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Operation(op) => Some(op),
            Definition::Fragment(_) => None,
        })
        .collect();
    let chosen = match operation_name {
        Some(name) => operations
            .iter()
            .find(|op| operation_name_of(op) == Some(name))
            .ok_or_else(|| bad(format!("the document has no operation named `{name}`")))?,
        None => match operations.as_slice() {
            [only] => only,
            [] => return Err(bad("the document has no operation")),
            _ => {
                return Err(bad(
                    "the document has several operations: `operationName` must choose one",
                ))
            }
        },
    };
    let (operation, set) = match chosen {
        OperationDefinition::SelectionSet(s) => (Some(GraphqlOperationType::Query), s),
        OperationDefinition::Query(q) => (Some(GraphqlOperationType::Query), &q.selection_set),
        OperationDefinition::Mutation(m) => {
            (Some(GraphqlOperationType::Mutation), &m.selection_set)
        }
        OperationDefinition::Subscription(s) => (None, &s.selection_set),
    };
    let fragments = fragments_of(&doc);
    let mut budget = Budget(MAX_SELECTIONS);
    let mut roots = Vec::new();
    collect_fields(&fragments, set, &mut budget, &mut roots)?;
    // Each root field's children are collected through the fragments
    // again: bound the root fields so that cannot grow quadratic.
    if roots.len() > MAX_ROOT_FIELDS {
        return Err(bad(format!(
            "the operation selects more than {MAX_ROOT_FIELDS} root fields"
        )));
    }
    let mut fields: Vec<String> = Vec::new();
    let mut children: Vec<Vec<String>> = Vec::new();
    for field in roots {
        let mut below = Vec::new();
        collect_fields(&fragments, &field.selection_set, &mut budget, &mut below)?;
        let i = match fields.iter().position(|f| f == field.name) {
            Some(i) => i,
            None => {
                fields.push(field.name.to_string());
                children.push(Vec::new());
                fields.len() - 1
            }
        };
        for child in below {
            if !children[i].iter().any(|c| c == child.name) {
                children[i].push(child.name.to_string());
            }
        }
    }
    Ok(Selected {
        operation,
        fields,
        children,
    })
}

fn operation_name_of<'a>(op: &OperationDefinition<'a, &'a str>) -> Option<&'a str> {
    match op {
        OperationDefinition::SelectionSet(_) => None,
        OperationDefinition::Query(q) => q.name,
        OperationDefinition::Mutation(m) => m.name,
        OperationDefinition::Subscription(s) => s.name,
    }
}

/// The fragments of a document by name, indexed once, so a spread is one
/// lookup instead of a scan of every definition.
type Fragments<'d, 'a> = HashMap<&'a str, &'d SelectionSet<'a, &'a str>>;

fn fragments_of<'d, 'a>(doc: &'d Document<'a, &'a str>) -> Fragments<'d, 'a> {
    doc.definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Fragment(f) => Some((f.name, &f.selection_set)),
            Definition::Operation(_) => None,
        })
        .collect()
}

/// What one document may cost: selections visited across every
/// collection the call makes (root fields, then each root field's
/// children). Shared by all of them, so a document cannot multiply its
/// work by spreading the same fragments under many root fields.
struct Budget(usize);

impl Budget {
    fn spend(&mut self) -> Result<(), Reject> {
        self.0 = self.0.checked_sub(1).ok_or_else(|| {
            bad(format!(
                "the document selects more than {MAX_SELECTIONS} fields and fragments"
            ))
        })?;
        Ok(())
    }
}

/// The fields of `set`, through fragments (each spread once), without
/// `__typename`, in document order.
///
/// Iterative, with an explicit stack: a chain of fragments spreading one
/// another is as deep as the attacker likes, and recursion would overflow
/// a worker's stack. Both the chain's depth and the total work are
/// bounded, and checked before the stack or the output grows.
fn collect_fields<'d, 'a>(
    fragments: &Fragments<'d, 'a>,
    set: &'d SelectionSet<'a, &'a str>,
    budget: &mut Budget,
    out: &mut Vec<&'d Field<'a, &'a str>>,
) -> Result<(), Reject> {
    let mut visited: HashSet<&'a str> = HashSet::new();
    let mut stack: Vec<std::slice::Iter<'d, Selection<'a, &'a str>>> = vec![set.items.iter()];
    while let Some(top) = stack.last_mut() {
        let Some(selection) = top.next() else {
            stack.pop();
            continue;
        };
        budget.spend()?;
        let nested = match selection {
            Selection::Field(field) => {
                if field.name != "__typename" {
                    out.push(field);
                }
                continue;
            }
            Selection::InlineFragment(inline) => &inline.selection_set,
            Selection::FragmentSpread(spread) => {
                // A fragment spread twice selects nothing new; a cycle
                // (invalid GraphQL) ends here too.
                if !visited.insert(spread.fragment_name) {
                    continue;
                }
                *fragments.get(spread.fragment_name).ok_or_else(|| {
                    bad(format!(
                        "the document spreads an undefined fragment `{}`",
                        spread.fragment_name
                    ))
                })?
            }
        };
        if stack.len() >= MAX_DEPTH {
            return Err(bad(format!(
                "the document nests fragments deeper than {MAX_DEPTH} levels"
            )));
        }
        stack.push(nested.items.iter());
    }
    Ok(())
}

/// The deepest nesting of `{`, `(` and `[` outside strings and comments.
fn nesting_depth(doc: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut chars = doc.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' | '(' | '[' => {
                depth += 1;
                max = max.max(depth);
            }
            '}' | ')' | ']' => depth = depth.saturating_sub(1),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '"' => {
                // Block strings ("""...""") are read as three strings: the
                // empty one, the body, the empty one; close enough for a
                // depth bound.
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
            }
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(doc: &str, name: Option<&str>) -> Vec<String> {
        select(doc, name).expect("selects").fields
    }

    #[test]
    fn aliases_are_ignored_and_fragments_are_expanded() {
        let doc = r#"
            mutation { safe: createSolutionInstance(input: {}) { id } ...F ... on Mutation { authorize(input: {}) { accessToken } } }
            fragment F on Mutation { hidden: removeUser(input: {}) { clientMutationId } }
        "#;
        assert_eq!(
            fields(doc, None),
            ["createSolutionInstance", "removeUser", "authorize"]
        );
    }

    #[test]
    fn operation_name_chooses_and_is_required_among_several() {
        let doc = "query A { users { id } } mutation B { removeUser { x } }";
        let b = select(doc, Some("B")).expect("B");
        assert_eq!(b.operation, Some(GraphqlOperationType::Mutation));
        assert_eq!(b.fields, ["removeUser"]);
        assert_eq!(
            select(doc, None).map(|_| ()).map_err(|r| r.code),
            Err(Code::InvalidRequestBody)
        );
        assert!(select(doc, Some("C")).is_err());
    }

    #[test]
    fn shorthand_is_a_query_and_typename_needs_no_operation() {
        let s = select("{ __typename viewer { id } viewer { name } }", None).expect("doc");
        assert_eq!(s.operation, Some(GraphqlOperationType::Query));
        assert_eq!(s.fields, ["viewer"]);
    }

    #[test]
    fn recursive_fragments_end_and_undefined_ones_are_refused() {
        let doc = "query { ...A } fragment A on Query { a ...B } fragment B on Query { b ...A }";
        assert_eq!(fields(doc, None), ["a", "b"]);
        assert!(select("query { ...Missing }", None).is_err());
    }

    /// `{...f0} fragment f0 on Q {...f1} … fragment fN on Q { users { id } }`
    fn fragment_chain(n: usize) -> String {
        let mut doc = String::from("query { ...f0 }");
        for i in 0..n {
            doc.push_str(&format!(" fragment f{i} on Query {{ ...f{} }}", i + 1));
        }
        doc.push_str(&format!(" fragment f{n} on Query {{ users {{ id }} }}"));
        doc
    }

    #[test]
    fn a_long_fragment_chain_is_refused_without_exhausting_the_stack() {
        // 12,000 chained spreads overflowed a worker's stack when the
        // expansion recursed; now the chain's depth is bounded.
        let refused = select(&fragment_chain(12_000), None).map(|_| ());
        assert_eq!(refused.map_err(|r| r.code), Err(Code::InvalidRequestBody));
        // A chain within the bound still routes by the field at its end.
        assert_eq!(fields(&fragment_chain(MAX_DEPTH - 2), None), ["users"]);
    }

    #[test]
    fn the_work_of_one_document_is_bounded_across_root_fields() {
        // A wide fragment spread under each of many root fields: each
        // collection alone is small, together they pass the budget.
        let wide: String = (0..100).map(|i| format!(" f{i}")).collect();
        let roots: String = (0..200).map(|i| format!(" r{i}: a {{ ...W }}")).collect();
        let doc = format!("query {{{roots} }} fragment W on A {{{wide} }}");
        let refused = select(&doc, None).map(|_| ());
        assert_eq!(refused.map_err(|r| r.code), Err(Code::InvalidRequestBody));
        let few: String = (0..20).map(|i| format!(" r{i}: a {{ ...W }}")).collect();
        let doc = format!("query {{{few} }} fragment W on A {{{wide} }}");
        assert_eq!(fields(&doc, None), ["a"]);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("query {}{}", "{ a ".repeat(10_000), "}".repeat(10_000));
        assert!(select(&deep, None).is_err());
        assert_eq!(
            nesting_depth(
                r#"{ a(s: "{{{{") # {{{{
            }"#
            ),
            2
        );
    }
}
