//! `Cache-Control` as the caller asks it and as the upstream allows it.

use http::header::{self, HeaderMap};

/// `(directive, value)` pairs of every `Cache-Control` field: names
/// lowercased, quotes removed.
pub(super) fn directives(
    headers: &HeaderMap,
) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|d| !d.trim().is_empty())
        .map(|d| match d.split_once('=') {
            Some((name, value)) => (
                name.trim().to_ascii_lowercase(),
                Some(value.trim().trim_matches('"').to_string()),
            ),
            None => (d.trim().to_ascii_lowercase(), None),
        })
}

/// What the caller asked of the cache.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Asked {
    /// Skip the lookup (`no-cache`, `max-age=0`, `Pragma: no-cache`).
    pub(super) revalidate: bool,
    /// Do not store the answer (`no-store`).
    pub(super) no_store: bool,
}

pub(super) fn asked(headers: &HeaderMap) -> Asked {
    let mut asked = Asked::default();
    let mut any = false;
    for (name, value) in directives(headers) {
        any = true;
        match name.as_str() {
            "no-cache" => asked.revalidate = true,
            "max-age" if value.as_deref() == Some("0") => asked.revalidate = true,
            "no-store" => asked.no_store = true,
            _ => {}
        }
    }
    // RFC 9111 §5.4: `Pragma` counts only without `Cache-Control`.
    if !any {
        asked.revalidate = headers
            .get_all(header::PRAGMA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
            });
    }
    asked
}

/// What the upstream allowed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Allowed {
    pub(super) no_store: bool,
    pub(super) no_cache: bool,
    pub(super) private: bool,
    /// Seconds of `s-maxage`, else of `max-age`; `Some(0)` for a value
    /// that does not parse (RFC 9111 §4.2.1: treat as stale).
    pub(super) max_age: Option<u64>,
}

pub(super) fn allowed(headers: &HeaderMap) -> Allowed {
    let mut allowed = Allowed::default();
    let mut max_age = None;
    let mut s_maxage = None;
    let seconds = |v: Option<String>| v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    for (name, value) in directives(headers) {
        match name.as_str() {
            "no-store" => allowed.no_store = true,
            "no-cache" => allowed.no_cache = true,
            "private" => allowed.private = true,
            "max-age" => max_age = Some(seconds(value)),
            "s-maxage" => s_maxage = Some(seconds(value)),
            _ => {}
        }
    }
    allowed.max_age = s_maxage.or(max_age);
    allowed
}
