//! RFC 7662 token introspection, for authorization servers that issue
//! opaque access tokens.
//!
//! ```yaml
//! introspection:
//!   url: https://idp.example.com/token/introspection
//!   client_id: tollgate
//!   client_secret_env: TOLLGATE_INTROSPECTION_SECRET
//!   cache: 60s          # an answer is reused at most this long
//!   max_cached: 10000
//! ```
//!
//! One `POST` (form `token=…&token_type_hint=access_token`, HTTP Basic as
//! this resource server's client) per token, with a 5s deadline; an
//! inactive token, a failed call or an answer that is not JSON refuses the
//! token. Answers (active or not) are cached by the token's SHA-256, never
//! the token, for at most `cache` and never past the token's `exp`; the
//! cache holds at most `max_cached` (expired ones are swept first; when
//! still full, the answer is not cached). The claims then meet the same
//! rules as a JWT's (`iss`, `aud`, `sub`, in the parent module).

use base64::Engine as _;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Nanos, SharedClock};
use crate::config::schema::IntrospectionConfig;
use crate::proxy::UpstreamClients;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const SECOND: Nanos = 1_000_000_000;

/// A compiled `introspection:`.
pub struct Introspection {
    url: Uri,
    /// `Basic base64(client_id:secret)`, built once, never logged.
    authorization: HeaderValue,
    cache_for: Nanos,
    max_cached: usize,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    client: Arc<UpstreamClients>,
    clock: SharedClock,
}

#[derive(Clone)]
struct Cached {
    answer: Result<Map<String, Value>, Cow<'static, str>>,
    until: Nanos,
}

impl Introspection {
    /// Errors name the field of `introspection:` at fault.
    pub fn compile(
        config: &IntrospectionConfig,
        client: Arc<UpstreamClients>,
        clock: SharedClock,
    ) -> Result<Introspection, (&'static str, String)> {
        let url = crate::credentials::jwks::parse_url(&config.url).map_err(|e| ("url", e))?;
        let secret = std::env::var(&config.client_secret_env)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                (
                    "client_secret_env",
                    format!(
                        "environment variable `{}` is not set (or empty)",
                        config.client_secret_env
                    ),
                )
            })?;
        let pair = format!("{}:{secret}", config.client_id);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut authorization = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ("client_id", "not usable in a header".to_string()))?;
        authorization.set_sensitive(true);
        if config.max_cached == 0 {
            return Err(("max_cached", "cache at least one answer".into()));
        }
        Ok(Introspection {
            url,
            authorization,
            cache_for: config.cache.0.as_nanos().try_into().unwrap_or(Nanos::MAX),
            max_cached: config.max_cached,
            cache: Mutex::default(),
            client,
            clock,
        })
    }

    /// The claims of an active token, or why it is refused.
    pub async fn check(
        &self,
        token: &str,
        now: Nanos,
    ) -> Result<Map<String, Value>, Cow<'static, str>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.lock().get(&digest).filter(|c| now < c.until) {
            return hit.answer.clone();
        }
        let answer = match self.ask(token).await {
            Ok(claims) => judge(claims, now),
            // Not cached: the next request asks again.
            Err(detail) => return Err(detail),
        };
        let exp = answer
            .as_ref()
            .ok()
            .and_then(|c| c.get("exp"))
            .and_then(Value::as_u64)
            .map(|secs| secs.saturating_mul(SECOND));
        let until = now
            .saturating_add(self.cache_for)
            .min(exp.unwrap_or(Nanos::MAX));
        let now_again = self.clock.now();
        let mut cache = self.cache.lock();
        if cache.len() >= self.max_cached {
            cache.retain(|_, c| now_again < c.until);
        }
        if cache.len() < self.max_cached {
            cache.insert(
                digest,
                Cached {
                    answer: answer.clone(),
                    until,
                },
            );
        }
        answer
    }

    /// One introspection call.
    async fn ask(&self, token: &str) -> Result<Map<String, Value>, Cow<'static, str>> {
        let form = format!(
            "token={}&token_type_hint=access_token",
            percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
        );
        let request = Request::post(self.url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(crate::body::full(form))
            .map_err(|_| "the introspection request could not be made")?;
        let body = tokio::time::timeout(TIMEOUT, async {
            let response = self.client.get().request(request).await.map_err(|e| {
                tracing::warn!(error = %e, "token introspection failed");
                "the authorization server could not be asked about the token"
            })?;
            if response.status() != StatusCode::OK {
                tracing::warn!(status = %response.status(), "token introspection refused");
                return Err("the authorization server did not answer the introspection");
            }
            Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|_| "the introspection answer broke off or is too large")
        })
        .await
        .map_err(|_| "the authorization server did not answer the introspection in time")??;
        match serde_json::from_slice(&body) {
            Ok(Value::Object(claims)) => Ok(claims),
            _ => Err("the introspection answer is not a JSON object".into()),
        }
    }
}

/// RFC 7662 §2.2: `active` must be `true`; an `exp` in the past or an
/// `nbf` in the future refuses it too.
fn judge(claims: Map<String, Value>, now: Nanos) -> Result<Map<String, Value>, Cow<'static, str>> {
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err("the token is not active".into());
    }
    let at = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_u64)
            .map(|s| s.saturating_mul(SECOND))
    };
    if at("exp").is_some_and(|exp| now >= exp) {
        return Err("the token has expired".into());
    }
    if at("nbf").is_some_and(|nbf| nbf > now) {
        return Err("the token is not valid yet".into());
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_active_unexpired_answers_pass() {
        let object = |v: Value| v.as_object().cloned().unwrap_or_default();
        let now = 1_800_000_000 * SECOND;
        assert!(judge(
            object(json!({"active": true, "exp": 1_800_000_060u64})),
            now
        )
        .is_ok());
        assert!(judge(object(json!({"active": false})), now).is_err());
        assert!(judge(object(json!({"active": "true"})), now).is_err());
        assert!(judge(
            object(json!({"active": true, "exp": 1_799_999_999u64})),
            now
        )
        .is_err());
        assert!(judge(
            object(json!({"active": true, "nbf": 1_800_000_100u64})),
            now
        )
        .is_err());
    }
}
