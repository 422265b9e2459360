//! The sessions of the MCP handshake era (protocol revisions 2024-11-05 to
//! 2025-11-25): an `initialize` opens one and answers with its id in
//! `Mcp-Session-Id`; every later request names it.
//!
//! Sessions live in the state store (`state.store`: memory, or Redis so
//! that every replica sharing it serves every session, whichever one a
//! client's next request lands on). A session is bound to its **owner**,
//! the client that opened it (its client id when the endpoint
//! authenticated one, else its address): it is only ever looked up
//! through that owner, so another caller presenting a stolen id is told it
//! does not exist. Each owner holds at most `max_sessions` (opening one
//! more drops that owner's least recently used), so a flood of
//! `initialize` from one client evicts only its own sessions. A session
//! idle for `session_idle` (on the injected clock) is gone. A missing
//! session answers 404, and the client opens a new one, as the transport
//! specification asks.
//!
//! A session is not a credential: every request is judged by the
//! credentials it carries.

use std::net::IpAddr;
use std::time::Duration;

use crate::clock::Nanos;
use crate::state::{AnyStore, SessionKey, Store, StoreError};

/// The sessions of one endpoint, in the gateway's store.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: AnyStore,
    limits: SessionLimits,
}

/// The bounds of the sessions, from `agents:`.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Per owner.
    pub max_sessions: usize,
    /// A session unused this long is forgotten (`agents.session_idle`).
    pub idle: Duration,
}

/// Who a session belongs to.
#[derive(Debug, Clone)]
pub struct Owner(String);

impl Owner {
    /// The authenticated client, else the caller's address.
    pub fn of(client: Option<&str>, ip: IpAddr) -> Owner {
        match client {
            Some(id) => Owner(format!("client:{id}")),
            None => Owner(format!("ip:{ip}")),
        }
    }
}

/// Why no session could be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The OS gave no randomness for a session id.
    #[error("the operating system gave no randomness for a session id")]
    NoRandomness,
    /// The store holds as many owners' sessions as it may.
    #[error("the session store holds as many clients as it may")]
    Full,
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Sessions {
    /// Sessions kept in `store`, within `limits`.
    pub fn new(store: AnyStore, limits: SessionLimits) -> Sessions {
        Sessions { store, limits }
    }

    fn idle(&self) -> Nanos {
        self.limits.idle.as_nanos().try_into().unwrap_or(Nanos::MAX)
    }

    /// Opens a session speaking `version` for `owner`; its id is 128
    /// random bits in hex.
    pub async fn open(
        &self,
        now: Nanos,
        version: &'static str,
        owner: &Owner,
    ) -> Result<String, SessionError> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|_| SessionError::NoRandomness)?;
        let id = hex::encode(bytes);
        let key = SessionKey {
            owner: &owner.0,
            id: &id,
        };
        let max = self.limits.max_sessions.max(1) as u64;
        if self
            .store
            .session_open(key, version, max, self.idle(), now)
            .await?
        {
            Ok(id)
        } else {
            Err(SessionError::Full)
        }
    }

    /// The session's protocol revision (one of `versions`), marking it
    /// used now; `None` when `owner` has no such live session.
    pub async fn touch(
        &self,
        id: &str,
        now: Nanos,
        owner: &Owner,
        versions: &[&'static str],
    ) -> Result<Option<&'static str>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let key = SessionKey {
            owner: &owner.0,
            id,
        };
        let value = self.store.session_touch(key, self.idle(), now).await?;
        Ok(value.and_then(|v| versions.iter().find(|known| **known == v).copied()))
    }

    /// Ends a session (HTTP DELETE); false when `owner` had none to end.
    pub async fn close(&self, id: &str, now: Nanos, owner: &Owner) -> Result<bool, StoreError> {
        if !valid_id(id) {
            return Ok(false);
        }
        let key = SessionKey {
            owner: &owner.0,
            id,
        };
        self.store.session_close(key, self.idle(), now).await
    }
}

/// What this server issues: 32 lower-case hex digits. Anything else is no
/// session of ours (and is never made into a store key).
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Nanos = 1_000_000_000;
    const VERSIONS: &[&str] = &["2025-06-18", "2025-03-26"];

    fn sessions(max_sessions: usize) -> Sessions {
        let limits = SessionLimits {
            max_sessions,
            idle: Duration::from_secs(60),
        };
        Sessions::new(AnyStore::memory(), limits)
    }

    #[tokio::test]
    async fn a_session_id_is_128_random_bits_and_finds_its_version() {
        let s = sessions(10);
        let me = Owner::of(Some("bot"), [127, 0, 0, 1].into());
        let a = s.open(0, "2025-06-18", &me).await.expect("id");
        let b = s.open(0, "2025-03-26", &me).await.expect("id");
        assert!(valid_id(&a), "{a}");
        assert_ne!(a, b);
        let touch = |id: String| {
            let (s, me) = (s.clone(), me.clone());
            async move { s.touch(&id, SECOND, &me, VERSIONS).await.expect("store") }
        };
        assert_eq!(touch(a).await, Some("2025-06-18"));
        assert_eq!(touch(b).await, Some("2025-03-26"));
        assert_eq!(touch("nope".into()).await, None);
    }

    #[tokio::test]
    async fn a_session_answers_only_the_owner_that_opened_it() {
        let s = sessions(10);
        let ip = [10, 0, 0, 1].into();
        let alice = Owner::of(Some("alice"), ip);
        let mallory = Owner::of(Some("mallory"), ip);
        let anonymous = Owner::of(None, ip);
        let id = s.open(0, "2025-06-18", &alice).await.expect("id");
        for other in [&mallory, &anonymous] {
            let found = s.touch(&id, SECOND, other, VERSIONS).await.expect("store");
            assert!(found.is_none());
            assert!(!s.close(&id, SECOND, other).await.expect("store"));
        }
        let found = s.touch(&id, SECOND, &alice, VERSIONS).await.expect("store");
        assert!(found.is_some());
        assert!(s.close(&id, SECOND, &alice).await.expect("store"));
        let found = s.touch(&id, SECOND, &alice, VERSIONS).await.expect("store");
        assert!(found.is_none());
    }
}
