//! What the call log never writes: header values by name, query values of
//! credential parameters, values at JSON pointers, and — wherever they
//! appear in an entry — the credential values the caller presented.

use http::header::{self, HeaderMap, HeaderName};
use serde_json::{Map, Value};

/// What a redacted value is recorded as.
pub const REDACTED: &str = "[redacted]";

/// Credential values shorter than this are not searched for in bodies
/// (they are still redacted where they were sent): a two-letter key would
/// blank out every word that contains it.
const MIN_SCRUBBED: usize = 6;

/// The headers and query parameters whose values are never recorded, and
/// the JSON pointers of one `record:`.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    /// Lower-case names (`HeaderName` is lower case already).
    pub headers: Vec<HeaderName>,
    /// Query parameter names (credentials), compared exactly.
    pub query: Vec<String>,
    /// Parsed pointers: each a list of segments, `*` matching any.
    pub pointers: Vec<Vec<String>>,
}

/// The headers that always carry credentials, whatever the config says.
pub fn credential_headers() -> Vec<HeaderName> {
    vec![
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
        header::SET_COOKIE,
        HeaderName::from_static("x-api-key"),
    ]
}

/// Parses an RFC 6901 pointer (`/card/number`, `~1` is `/`, `~0` is `~`).
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "`{pointer}` is not a JSON pointer (it starts with `/`, e.g. `/card/number`)"
        ));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

impl Redaction {
    /// The headers as a JSON object, name → value (or values, when repeated),
    /// with the redacted ones' values replaced.
    pub fn headers_json(&self, headers: &HeaderMap) -> Value {
        let mut out = Map::new();
        for name in headers.keys() {
            let hidden = self.headers.contains(name);
            let values: Vec<Value> = headers
                .get_all(name)
                .iter()
                .map(|v| match hidden {
                    true => Value::from(REDACTED),
                    false => Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                })
                .collect();
            let value = match <[Value; 1]>::try_from(values) {
                Ok([one]) => one,
                Err(many) => Value::Array(many),
            };
            out.insert(name.as_str().to_string(), value);
        }
        Value::Object(out)
    }

    /// The query with every credential parameter's value replaced (names
    /// compared percent-decoded, as the `auth` policy reads them).
    pub fn query(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                if !value.is_empty() && self.query.iter().any(|q| *q == decoded) {
                    format!("{name}={REDACTED}")
                } else {
                    pair.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Replaces the value at every pointer that exists in `value`.
    pub fn json(&self, value: &mut Value) {
        for pointer in &self.pointers {
            redact_at(value, pointer);
        }
    }

    /// The credential values the request presented: the values of the
    /// credential headers (and a scheme's token alone, as in `Bearer
    /// <token>`) and of credential query parameters. Entries are scrubbed
    /// of them wherever they appear (an upstream echoing a key back).
    pub fn presented_secrets(&self, headers: &HeaderMap, query: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for name in [header::AUTHORIZATION, header::PROXY_AUTHORIZATION]
            .iter()
            .chain(self.headers.iter().filter(|n| is_key_header(n)))
        {
            for value in headers.get_all(name) {
                let Ok(value) = value.to_str() else { continue };
                let value = value.trim();
                out.push(value.to_string());
                if let Some((_, token)) = value.split_once(' ') {
                    out.push(token.trim().to_string());
                }
            }
        }
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            if self.query.iter().any(|q| *q == name) {
                out.push(value.to_string());
                let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                out.push(decoded.into_owned());
            }
        }
        out.retain(|s| s.len() >= MIN_SCRUBBED);
        out.sort();
        out.dedup();
        out
    }
}

/// Headers configured as credentials that are not cookies (whose values
/// are redacted but not searched for).
fn is_key_header(name: &HeaderName) -> bool {
    *name != header::COOKIE && *name != header::SET_COOKIE
}

fn redact_at(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        *value = Value::from(REDACTED);
        return;
    };
    match value {
        Value::Object(map) if first == "*" => {
            map.values_mut().for_each(|v| redact_at(v, rest));
        }
        Value::Object(map) => {
            if let Some(v) = map.get_mut(first) {
                redact_at(v, rest);
            }
        }
        Value::Array(items) if first == "*" => {
            items.iter_mut().for_each(|v| redact_at(v, rest));
        }
        Value::Array(items) => {
            if let Some(v) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                redact_at(v, rest);
            }
        }
        _ => {}
    }
}

/// `bytes` with every occurrence of each secret replaced by [`REDACTED`].
pub fn scrub_bytes(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for secret in secrets {
        let needle = secret.as_bytes();
        if needle.is_empty() || out.len() < needle.len() {
            continue;
        }
        let mut scrubbed = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                scrubbed.extend_from_slice(REDACTED.as_bytes());
                i += needle.len();
            } else {
                scrubbed.push(out[i]);
                i += 1;
            }
        }
        out = scrubbed;
    }
    out
}

/// `text` with every occurrence of each secret replaced by [`REDACTED`].
pub fn scrub_str(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), REDACTED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redaction(pointers: &[&str]) -> Redaction {
        Redaction {
            headers: credential_headers(),
            query: vec!["api_key".into()],
            pointers: pointers
                .iter()
                .map(|p| parse_pointer(p).expect("pointer"))
                .collect(),
        }
    }

    #[test]
    fn pointers_redact_members_elements_and_wildcards() {
        let mut v = json!({
            "password": "hunter2",
            "card": {"number": "4111", "exp": "12/30"},
            "items": [{"secret": 1}, {"secret": 2, "keep": true}],
            "a/b": "slash",
        });
        redaction(&[
            "/password",
            "/card/number",
            "/items/*/secret",
            "/a~1b",
            "/missing/x",
        ])
        .json(&mut v);
        assert_eq!(
            v,
            json!({
                "password": REDACTED,
                "card": {"number": REDACTED, "exp": "12/30"},
                "items": [{"secret": REDACTED}, {"secret": REDACTED, "keep": true}],
                "a/b": REDACTED,
            })
        );
        assert!(parse_pointer("password").is_err());
    }

    #[test]
    fn credential_headers_and_query_values_are_never_shown() {
        let r = redaction(&[]);
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer tok-123456".parse().expect("value"));
        h.insert("x-api-key", "key-abcdef".parse().expect("value"));
        h.insert("accept", "text/plain".parse().expect("value"));
        h.append("cookie", "a=1".parse().expect("value"));
        h.append("cookie", "b=2".parse().expect("value"));
        assert_eq!(
            r.headers_json(&h),
            json!({
                "authorization": REDACTED,
                "x-api-key": REDACTED,
                "accept": "text/plain",
                "cookie": [REDACTED, REDACTED],
            })
        );
        assert_eq!(
            r.query("a=1&api_key=s3cret&%61pi_key=x&b"),
            format!("a=1&api_key={REDACTED}&%61pi_key={REDACTED}&b")
        );
        let secrets = r.presented_secrets(&h, Some("api_key=qkey-99999"));
        assert_eq!(
            secrets,
            [
                "Bearer tok-123456",
                "key-abcdef",
                "qkey-99999",
                "tok-123456"
            ]
        );
        assert_eq!(
            scrub_str("echo tok-123456!", &secrets),
            format!("echo {REDACTED}!")
        );
        assert_eq!(
            scrub_bytes(b"k=key-abcdef;", &secrets),
            format!("k={REDACTED};").into_bytes()
        );
    }
}
