//! The sessions of the MCP handshake era (protocol revisions 2024-11-05 to
//! 2025-11-25): an `initialize` opens one and answers with its id in
//! `Mcp-Session-Id`; every later request names it.
//!
//! The table lives in `Deps`, so a config reload keeps it. It is bounded:
//! at most `max_sessions` entries (opening one more drops the least
//! recently used), and a session idle for `session_idle` (read from the
//! injected clock) is gone. A dropped session answers 404, and the client
//! opens a new one, as the transport specification asks. Sessions are
//! per instance; behind a load balancer, use sticky routing or the
//! stateless current revision, which needs none.
//!
//! A session is not a credential: every request is judged by the
//! credentials it carries. A session opened by an authenticated client is
//! bound to it, so another caller presenting a stolen id is told it does
//! not exist.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Nanos;

/// Every open session of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    /// The protocol revision the handshake settled on.
    version: &'static str,
    /// The client that opened it, when the endpoint authenticated one.
    client: Option<Arc<str>>,
    last_seen: Nanos,
}

/// The bounds of the session table, from `agents:`.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub idle: Duration,
}

/// Why no session id could be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system gave no randomness for a session id")]
pub struct NoRandomness;

impl Sessions {
    /// Opens a session and returns its id: 128 random bits in hex.
    pub fn open(
        &self,
        now: Nanos,
        limits: SessionLimits,
        version: &'static str,
        client: Option<Arc<str>>,
    ) -> Result<String, NoRandomness> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|_| NoRandomness)?;
        let id = hex::encode(bytes);
        let mut open = self.open.lock();
        if open.len() >= limits.max_sessions.max(1) {
            let idle = limits.idle.as_nanos() as Nanos;
            open.retain(|_, s| now.saturating_sub(s.last_seen) < idle);
        }
        while open.len() >= limits.max_sessions.max(1) {
            let oldest = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => open.remove(&oldest),
                None => break,
            };
        }
        open.insert(
            id.clone(),
            Session {
                version,
                client,
                last_seen: now,
            },
        );
        Ok(id)
    }

    /// The session's protocol revision, marking it used now; `None` when
    /// it does not exist, has idled out, or belongs to another client.
    pub fn touch(
        &self,
        id: &str,
        now: Nanos,
        idle: Duration,
        client: Option<&Arc<str>>,
    ) -> Option<&'static str> {
        let mut open = self.open.lock();
        let session = open.get_mut(id)?;
        if now.saturating_sub(session.last_seen) >= idle.as_nanos() as Nanos {
            open.remove(id);
            return None;
        }
        if session.client.as_deref() != client.map(|c| &**c) {
            return None;
        }
        session.last_seen = now;
        Some(session.version)
    }

    /// Ends a session (HTTP DELETE); false when there was none to end.
    pub fn close(&self, id: &str, client: Option<&Arc<str>>) -> bool {
        let mut open = self.open.lock();
        match open.get(id) {
            Some(s) if s.client.as_deref() == client.map(|c| &**c) => {
                open.remove(id);
                true
            }
            _ => false,
        }
    }

    /// How many sessions are held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Nanos = 1_000_000_000;

    fn limits(max_sessions: usize) -> SessionLimits {
        SessionLimits {
            max_sessions,
            idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_session_id_is_128_random_bits_and_finds_its_version() {
        let sessions = Sessions::default();
        let a = sessions
            .open(0, limits(10), "2025-06-18", None)
            .expect("id");
        let b = sessions
            .open(0, limits(10), "2025-03-26", None)
            .expect("id");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let idle = limits(10).idle;
        assert_eq!(sessions.touch(&a, SECOND, idle, None), Some("2025-06-18"));
        assert_eq!(sessions.touch(&b, SECOND, idle, None), Some("2025-03-26"));
        assert_eq!(sessions.touch("nope", SECOND, idle, None), None);
    }

    #[test]
    fn an_idle_session_is_gone_and_use_keeps_one_alive() {
        let sessions = Sessions::default();
        let idle = limits(10).idle;
        let used = sessions
            .open(0, limits(10), "2025-06-18", None)
            .expect("id");
        let unused = sessions
            .open(0, limits(10), "2025-06-18", None)
            .expect("id");
        assert!(sessions.touch(&used, 50 * SECOND, idle, None).is_some());
        assert!(sessions.touch(&used, 100 * SECOND, idle, None).is_some());
        assert!(sessions.touch(&unused, 100 * SECOND, idle, None).is_none());
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn the_table_never_holds_more_than_the_cap_and_drops_the_least_recently_used() {
        let sessions = Sessions::default();
        let idle = limits(3).idle;
        let first = sessions.open(0, limits(3), "2025-06-18", None).expect("id");
        let second = sessions
            .open(SECOND, limits(3), "2025-06-18", None)
            .expect("id");
        let third = sessions
            .open(2 * SECOND, limits(3), "2025-06-18", None)
            .expect("id");
        // `first` is used again, so `second` is now the least recently used.
        assert!(sessions.touch(&first, 3 * SECOND, idle, None).is_some());
        let fourth = sessions
            .open(4 * SECOND, limits(3), "2025-06-18", None)
            .expect("id");
        assert_eq!(sessions.len(), 3);
        assert!(sessions.touch(&second, 5 * SECOND, idle, None).is_none());
        for id in [&first, &third, &fourth] {
            assert!(sessions.touch(id, 5 * SECOND, idle, None).is_some());
        }
        for i in 0..100 {
            sessions
                .open(6 * SECOND + i, limits(3), "2025-06-18", None)
                .expect("id");
        }
        assert_eq!(sessions.len(), 3);
    }

    #[test]
    fn a_session_answers_only_the_client_that_opened_it() {
        let sessions = Sessions::default();
        let idle = limits(10).idle;
        let alice: Arc<str> = "alice".into();
        let mallory: Arc<str> = "mallory".into();
        let id = sessions
            .open(0, limits(10), "2025-06-18", Some(alice.clone()))
            .expect("id");
        assert!(sessions.touch(&id, SECOND, idle, Some(&mallory)).is_none());
        assert!(sessions.touch(&id, SECOND, idle, None).is_none());
        assert!(!sessions.close(&id, Some(&mallory)));
        assert!(sessions.touch(&id, SECOND, idle, Some(&alice)).is_some());
        assert!(sessions.close(&id, Some(&alice)));
        assert!(sessions.touch(&id, SECOND, idle, Some(&alice)).is_none());
    }
}
