//! Path normalisation and the route table.
//!
//! Every request path is normalised once, before routing, and the
//! normalised path is what policies judge and what the upstream receives
//! (DESIGN §5): percent-encoded unreserved characters are decoded (so
//! `%2e%2e` is a dot-segment), other escapes are kept in upper-case hex,
//! dot-segments are resolved (never above the root), and runs of `/` are
//! merged. Encoded `/` or `\`, NUL, a literal `\`, broken escapes,
//! escapes that do not decode to UTF-8 (an overlong `%C0%AF` is a `/` to
//! some decoders) and dot-segments with parameters (`..;x`, which servlet
//! containers read as `..`) are refused, because upstreams disagree on
//! what they mean.
//!
//! The route table is a matchit radix tree over the public path templates
//! (`base_path` + operation `path`, with `{param}` and `{*rest}`); each
//! template holds the operations of each method.

use http::{HeaderValue, Method};
use std::borrow::Cow;

use crate::problem::{Code, Reject};

/// Why a path was refused. The detail is safe to show to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidPath {
    /// The request target is not a path starting with `/` (an absolute URL, `*`).
    NotOrigin,
    /// An encoded `/` or `\` (`%2F`, `%5C`), which would split a segment differently upstream.
    EncodedSlash,
    /// A `\`, which some upstreams read as `/`.
    Backslash,
    /// An encoded NUL (`%00`).
    Nul,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// Percent-encoded bytes that are not UTF-8.
    NotUtf8,
    /// A `.` or `..` segment with parameters (`..;`), which some upstreams resolve.
    DotSegmentParams,
}

impl InvalidPath {
    /// The refusal's detail, safe to show to the caller.
    pub fn detail(self) -> &'static str {
        match self {
            InvalidPath::NotOrigin => "the request target must be an absolute path",
            InvalidPath::EncodedSlash => "the path contains an encoded `/` or `\\`",
            InvalidPath::Backslash => "the path contains `\\`",
            InvalidPath::Nul => "the path contains an encoded NUL",
            InvalidPath::BadEscape => "the path contains a broken percent-encoding",
            InvalidPath::NotUtf8 => "the path's percent-encoded bytes are not UTF-8",
            InvalidPath::DotSegmentParams => {
                "the path contains a `.` or `..` segment with parameters (`..;`)"
            }
        }
    }

    /// The refusal: 400 `invalid_path` with [`InvalidPath::detail`].
    pub fn reject(self) -> Reject {
        Reject::new(Code::InvalidPath, self.detail())
    }
}

/// Normalises a request path (see the module doc). Borrows when the path
/// is already normal, which is the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(InvalidPath::NotOrigin);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    if decoded.split('/').any(is_dot_segment_with_params) {
        return Err(InvalidPath::DotSegmentParams);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// `.;x`, `..;x` or `..%3Bx`: a dot-segment to servers that drop path
/// parameters before resolving dot-segments, an ordinary name to us.
fn is_dot_segment_with_params(segment: &str) -> bool {
    let end = [segment.find(';'), segment.find("%3B")]
        .into_iter()
        .flatten()
        .min();
    matches!(end.map(|at| &segment[..at]), Some(".") | Some(".."))
}

/// True when the path needs no work: no escapes, no backslash, no empty
/// segment and no dot-segment (with or without parameters).
fn is_normal(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' | b'\\' => return false,
            b'/' => {
                let rest = &bytes[i + 1..];
                match rest {
                    [b'/', ..] => return false,
                    [b'.']
                    | [b'.', b'/' | b';', ..]
                    | [b'.', b'.']
                    | [b'.', b'.', b'/' | b';', ..] => return false,
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters, upper-cases the others, and
/// refuses the escapes that would change the path's structure or are not
/// UTF-8 once decoded.
fn decode_unreserved(bytes: &[u8]) -> Result<String, InvalidPath> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len());
    // The whole path decoded, only to check that its escapes are UTF-8.
    let mut plain = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(InvalidPath::Backslash),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(InvalidPath::BadEscape);
                };
                let v = hi << 4 | lo;
                plain.push(v);
                match v {
                    0 => return Err(InvalidPath::Nul),
                    b'/' | b'\\' => return Err(InvalidPath::EncodedSlash),
                    v if is_unreserved(v) => out.push(v),
                    v => out.extend_from_slice(&[
                        b'%',
                        HEX[(v >> 4) as usize],
                        HEX[(v & 0xf) as usize],
                    ]),
                }
                i += 3;
            }
            // Anything else is kept as it came: ASCII, or the bytes of raw
            // UTF-8 the URI parser admitted (never a `/`, `.` or `%`).
            b => {
                out.push(b);
                plain.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&plain).is_err() {
        return Err(InvalidPath::NotUtf8);
    }
    // Cannot fail: the input was a `str`, and every byte added is ASCII or
    // one of its own, copied in whole characters.
    String::from_utf8(out).map_err(|_| InvalidPath::NotUtf8)
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments merged.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        match seg {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

// === RouteTable ===

/// What a route lookup found.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch<'p> {
    /// Index of the operation in the gateway's operation list.
    pub operation: usize,
    /// `{param}` values, still percent-encoded as they arrived.
    pub params: Vec<(&'p str, &'p str)>,
}

/// Routes a normalised path and a method to an operation.
#[derive(Debug, Default)]
pub struct RouteTable {
    router: matchit::Router<usize>,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    template: String,
    /// Method, the operation it routes to, and whether that operation is
    /// a GraphQL endpoint (whose other operations share the route).
    methods: Vec<(Method, usize, bool)>,
    allow: HeaderValue,
}

/// Why a route could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The method and template are already routed.
    #[error("{method} {template} is already routed to operation #{existing}")]
    Duplicate {
        /// The method already routed.
        method: Method,
        /// The template, as written.
        template: String,
        /// The index of the operation it routes to.
        existing: usize,
    },
    /// The template overlaps another ambiguously; the message says how.
    #[error("{0}")]
    Conflict(String),
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `method template` -> `operation`.
    pub fn insert(
        &mut self,
        method: Method,
        template: &str,
        operation: usize,
    ) -> Result<(), RouteError> {
        self.add(method, template, operation, false)
    }

    /// Adds a GraphQL operation: several may share one method and template
    /// (the route leads to the first; `crate::graphql` tells them apart by
    /// the document), but not with a plain operation.
    pub fn insert_graphql(
        &mut self,
        method: Method,
        template: &str,
        operation: usize,
    ) -> Result<(), RouteError> {
        self.add(method, template, operation, true)
    }

    fn add(
        &mut self,
        method: Method,
        template: &str,
        operation: usize,
        graphql: bool,
    ) -> Result<(), RouteError> {
        let index = match self.router.at(template) {
            Ok(found) if self.entries[*found.value].template == template => *found.value,
            _ => {
                let index = self.entries.len();
                self.router
                    .insert(template, index)
                    .map_err(|e| RouteError::Conflict(e.to_string()))?;
                self.entries.push(Entry {
                    template: template.to_string(),
                    methods: Vec::new(),
                    allow: HeaderValue::from_static(""),
                });
                index
            }
        };
        let entry = &mut self.entries[index];
        if let Some((_, existing, shared)) = entry.methods.iter().find(|(m, ..)| *m == method) {
            if graphql && *shared {
                return Ok(());
            }
            return Err(RouteError::Duplicate {
                method,
                template: template.to_string(),
                existing: *existing,
            });
        }
        entry.methods.push((method, operation, graphql));
        let mut allow: Vec<&str> = entry.methods.iter().map(|(m, ..)| m.as_str()).collect();
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
        let allow = allow.join(", ");
        entry.allow = HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static(""));
        Ok(())
    }

    /// The operations published at a normalised path, in the order they
    /// were added (empty when none is): where a CORS preflight, which asks
    /// about a method rather than being one, can be answered.
    pub fn operations_at(&self, path: &str) -> impl Iterator<Item = usize> + '_ {
        self.router
            .at(path)
            .ok()
            .map(|found| &self.entries[*found.value].methods)
            .into_iter()
            .flatten()
            .map(|(_, operation, _)| *operation)
    }

    /// Looks up a normalised path: the operation, 404 `route_not_found`, or
    /// 405 `method_not_allowed` with `Allow`.
    pub fn lookup<'p>(&'p self, method: &Method, path: &'p str) -> Result<RouteMatch<'p>, Reject> {
        let found = self.router.at(path).map_err(|_| {
            Reject::new(
                Code::RouteNotFound,
                "no operation is published at this path",
            )
        })?;
        let entry = &self.entries[*found.value];
        let routed = |wanted: &Method| entry.methods.iter().find(|(m, ..)| m == wanted);
        // RFC 9110 §9.3.2: HEAD is GET without the body, so a path with a
        // GET operation and no HEAD one answers HEAD through the GET one
        // (same policies; a `cache` answers it from a stored GET).
        let route = routed(method).or_else(|| {
            (method == Method::HEAD)
                .then(|| routed(&Method::GET))
                .flatten()
        });
        match route {
            Some((_, operation, _)) => Ok(RouteMatch {
                operation: *operation,
                params: found.params.iter().collect(),
            }),
            None => Err(Reject::new(
                Code::MethodNotAllowed,
                "this path does not accept this method",
            )
            .with_header(http::header::ALLOW, entry.allow.clone())),
        }
    }
}

// === PathParamCheck ===

/// An operation's `path_schema`, compiled: its `{param}` values, decoded
/// and read as the types the schema gives them (`integer`, `number`,
/// `boolean`; anything else is a string), must match it. A mismatch is the
/// path's fault: 400 `invalid_path`, before any policy runs, so `abc` for
/// an integer id never reaches the upstream.
#[derive(Debug)]
pub struct PathParamCheck {
    schema: crate::body_schema::JsonSchema,
    /// The JSON type each parameter is read as, by name.
    types: Vec<(String, ParamType)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamType {
    Integer,
    Number,
    Boolean,
    String,
}

impl PathParamCheck {
    /// Compiles `schema` for a template with `params`; a property naming
    /// no parameter is a mistake.
    pub fn compile(schema: &serde_json::Value, params: &[&str]) -> Result<PathParamCheck, String> {
        let compiled = crate::body_schema::JsonSchema::compile(schema)?;
        let mut types = Vec::new();
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                if !params.contains(&name.as_str()) {
                    return Err(format!("`{name}` is not a parameter of the path"));
                }
                types.push((name.clone(), ParamType::of(prop)));
            }
        }
        Ok(PathParamCheck {
            schema: compiled,
            types,
        })
    }

    /// Checks the values a route lookup found (still percent-encoded).
    pub fn check(&self, params: &[(&str, &str)]) -> Result<(), Reject> {
        let mut object = serde_json::Map::with_capacity(params.len());
        for (name, raw) in params {
            let text = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            let kind = self
                .types
                .iter()
                .find(|(n, _)| n == name)
                .map_or(ParamType::String, |(_, t)| *t);
            object.insert(name.to_string(), kind.read(&text));
        }
        let object = serde_json::Value::Object(object);
        match self.schema.violations(&object).into_iter().next() {
            None => Ok(()),
            Some(violation) => {
                let name = violation
                    .pointer
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("");
                Err(Reject::new(
                    Code::InvalidPath,
                    format!("path parameter `{name}`: {}", violation.message),
                ))
            }
        }
    }
}

impl ParamType {
    fn of(schema: &serde_json::Value) -> ParamType {
        let named = |t: &str| match t {
            "integer" => Some(ParamType::Integer),
            "number" => Some(ParamType::Number),
            "boolean" => Some(ParamType::Boolean),
            "string" => Some(ParamType::String),
            _ => None,
        };
        match schema.get("type") {
            Some(serde_json::Value::String(t)) => named(t),
            Some(serde_json::Value::Array(ts)) => {
                ts.iter().filter_map(|t| t.as_str()).find_map(named)
            }
            _ => None,
        }
        .unwrap_or(ParamType::String)
    }

    /// The value as this type; text that is not one stays a string, so
    /// the schema refuses it.
    fn read(self, text: &str) -> serde_json::Value {
        use serde_json::Value;
        let as_string = || Value::String(text.to_string());
        match self {
            ParamType::Integer => text
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| as_string()),
            ParamType::Number => text
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(as_string),
            ParamType::Boolean => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => as_string(),
            },
            ParamType::String => as_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_read_as_their_declared_types() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "id": { "type": "integer", "minimum": 1 },
                "slug": { "type": "string", "pattern": "^[a-z]+$" },
                "on": { "type": "boolean" }
            }
        });
        let check = PathParamCheck::compile(&schema, &["id", "slug", "on"]).expect("compiles");
        assert!(check
            .check(&[("id", "42"), ("slug", "abc"), ("on", "true")])
            .is_ok());
        for bad in [
            [("id", "abc"), ("slug", "abc"), ("on", "true")],
            [("id", "0"), ("slug", "abc"), ("on", "true")],
            [("id", "4.5"), ("slug", "abc"), ("on", "true")],
            [("id", "1"), ("slug", "ABC"), ("on", "true")],
            [("id", "1"), ("slug", "abc"), ("on", "yes")],
        ] {
            let reject = check.check(&bad).expect_err("refused");
            assert_eq!(reject.code, Code::InvalidPath, "{bad:?}");
        }
        assert!(PathParamCheck::compile(&schema, &["id"]).is_err());
    }

    fn norm(p: &str) -> Result<String, InvalidPath> {
        normalize_path(p).map(|c| c.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/a.b/c..d/.e", "/a;x"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_duplicate_slashes_are_resolved() {
        assert_eq!(norm("/a/../b").as_deref(), Ok("/b"));
        assert_eq!(norm("//b").as_deref(), Ok("/b"));
        assert_eq!(norm("/a//b///c").as_deref(), Ok("/a/b/c"));
        assert_eq!(norm("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(norm("/../../etc").as_deref(), Ok("/etc"));
        assert_eq!(norm("/..").as_deref(), Ok("/"));
        assert_eq!(norm("/public/../admin").as_deref(), Ok("/admin"));
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(norm("/a/%2e%2e/b").as_deref(), Ok("/b"));
        assert_eq!(norm("/a/%2E/b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/%7euser").as_deref(), Ok("/~user"));
    }

    #[test]
    fn other_escapes_are_kept_upper_case() {
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(norm("/a%c3%a9").as_deref(), Ok("/a%C3%A9"));
        // Double encoding stays double encoded: it is not a slash.
        assert_eq!(norm("/a%252F").as_deref(), Ok("/a%252F"));
    }

    #[test]
    fn structural_escapes_and_broken_encoding_are_refused() {
        assert_eq!(norm("/a%2Fb"), Err(InvalidPath::EncodedSlash));
        assert_eq!(norm("/a%2fb"), Err(InvalidPath::EncodedSlash));
        assert_eq!(norm("/a%5Cb"), Err(InvalidPath::EncodedSlash));
        assert_eq!(norm("/a%00"), Err(InvalidPath::Nul));
        assert_eq!(norm("/a%zz"), Err(InvalidPath::BadEscape));
        assert_eq!(norm("/a%2"), Err(InvalidPath::BadEscape));
        assert_eq!(norm("/a\\b"), Err(InvalidPath::Backslash));
        assert_eq!(norm("*"), Err(InvalidPath::NotOrigin));
    }

    #[test]
    fn escapes_that_are_not_utf8_are_refused() {
        // Overlong `/` and `.`, a lone continuation byte, a cut sequence.
        for p in ["/a%c0%afb", "/%c0%ae%c0%ae/x", "/a%80", "/a%e2%82", "/a%ff"] {
            assert_eq!(norm(p), Err(InvalidPath::NotUtf8), "{p}");
        }
        assert_eq!(norm("/caf%C3%A9/%2e").as_deref(), Ok("/caf%C3%A9/"));
    }

    #[test]
    fn raw_utf8_is_kept_byte_for_byte() {
        assert_eq!(norm("/caf\u{e9}/./x").as_deref(), Ok("/caf\u{e9}/x"));
        assert_eq!(norm("//\u{1f600}%41").as_deref(), Ok("/\u{1f600}A"));
        // A raw character does not complete an escaped lead byte.
        assert_eq!(norm("/%C3\u{e9}"), Err(InvalidPath::NotUtf8));
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        for p in [
            "/public/..;/admin",
            "/public/..;x/admin",
            "/public/.;/admin",
            "/public/%2e%2e;/admin",
            "/public/..%3b/admin",
            "/..;",
        ] {
            assert_eq!(norm(p), Err(InvalidPath::DotSegmentParams), "{p}");
        }
        // Parameters on other segments, and dots that are part of a name, are fine.
        assert_eq!(norm("/a;x/b").as_deref(), Ok("/a;x/b"));
        assert_eq!(norm("/a/...;x").as_deref(), Ok("/a/...;x"));
        assert_eq!(norm("/a/x..;/b").as_deref(), Ok("/a/x..;/b"));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in [
            "/a/../b",
            "//x//y/",
            "/a/%2e%2e/%2E/c",
            "/%41%7e",
            "/a/b/..",
        ] {
            let once = norm(p).expect("valid");
            assert_eq!(norm(&once).as_deref(), Ok(once.as_str()), "{p}");
        }
    }

    fn table() -> RouteTable {
        let mut t = RouteTable::new();
        t.insert(Method::GET, "/employees/{id}", 0).expect("insert");
        t.insert(Method::DELETE, "/employees/{id}", 1)
            .expect("insert");
        t.insert(Method::POST, "/files/{*rest}", 2).expect("insert");
        t
    }

    #[test]
    fn routes_by_template_and_method_with_params() {
        let t = table();
        let m = t.lookup(&Method::GET, "/employees/42").expect("route");
        assert_eq!(m.operation, 0);
        assert_eq!(m.params, vec![("id", "42")]);
        assert_eq!(
            t.lookup(&Method::DELETE, "/employees/42")
                .map(|m| m.operation)
                .ok(),
            Some(1)
        );
        let rest = t.lookup(&Method::POST, "/files/a/b/c").expect("route");
        assert_eq!(rest.params, vec![("rest", "a/b/c")]);
    }

    #[test]
    fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
        let t = table();
        assert_eq!(
            t.lookup(&Method::GET, "/nope")
                .map(|_| ())
                .map_err(|r| r.code),
            Err(Code::RouteNotFound)
        );
        let r = t
            .lookup(&Method::PUT, "/employees/1")
            .map(|_| ())
            .expect_err("405");
        assert_eq!(r.code, Code::MethodNotAllowed);
        assert_eq!(
            r.headers()
                .map(|h| &h[http::header::ALLOW])
                .map(|v| v.as_bytes()),
            Some(&b"GET, DELETE, HEAD"[..])
        );
        // Matching is case-sensitive.
        assert_eq!(
            t.lookup(&Method::GET, "/EMPLOYEES/1")
                .map(|_| ())
                .map_err(|r| r.code),
            Err(Code::RouteNotFound)
        );
    }

    #[test]
    fn head_goes_to_the_get_operation_unless_one_is_declared_for_it() {
        let mut t = table();
        let head = |t: &RouteTable, path| t.lookup(&Method::HEAD, path).map(|m| m.operation);
        assert_eq!(head(&t, "/employees/1").ok(), Some(0));
        // No GET there: HEAD is not allowed either.
        assert_eq!(
            head(&t, "/files/x").map_err(|r| r.code),
            Err(Code::MethodNotAllowed)
        );
        t.insert(Method::HEAD, "/employees/{id}", 7)
            .expect("insert");
        assert_eq!(head(&t, "/employees/1").ok(), Some(7));
    }

    #[test]
    fn the_same_method_and_template_twice_is_refused() {
        let mut t = table();
        let err = t
            .insert(Method::GET, "/employees/{id}", 5)
            .expect_err("dup");
        assert!(matches!(err, RouteError::Duplicate { existing: 0, .. }));
        assert!(matches!(
            t.insert(Method::GET, "/employees/{other}", 6),
            Err(RouteError::Conflict(_))
        ));
    }

    #[test]
    fn graphql_operations_share_a_route_but_not_with_a_plain_one() {
        let mut t = RouteTable::new();
        t.insert_graphql(Method::POST, "/graphql", 0)
            .expect("first");
        t.insert_graphql(Method::POST, "/graphql", 1)
            .expect("shared");
        assert_eq!(
            t.lookup(&Method::POST, "/graphql")
                .map(|m| m.operation)
                .ok(),
            Some(0)
        );
        assert!(t.insert(Method::POST, "/graphql", 2).is_err());
        let mut t = table();
        assert!(t.insert_graphql(Method::GET, "/employees/{id}", 3).is_err());
    }
}
