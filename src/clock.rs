//! Time, injected. Limiters, quotas, bans and key expiry read the time only
//! through a [`Clock`], so tests move it by hand and stay exact and
//! sleep-free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch. Wall-clock based so that several
/// instances sharing Redis agree on windows and calendar periods.
pub type Nanos = u64;

/// Now, on the monotonic clock: for measuring how long something took and
/// for deadlines, never for a decision a test must control (those read an
/// injected [`Clock`]). The one reader of `Instant::now` outside tests.
#[allow(clippy::disallowed_methods)]
pub fn monotonic() -> Instant {
    Instant::now()
}

/// Now, on the wall clock: for timestamps written out (log lines). The one
/// reader of `SystemTime::now` outside [`SystemClock`].
#[allow(clippy::disallowed_methods)]
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// A source of the current time, injected into limiters, quotas, bans and sessions so tests
/// can move time exactly.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now(&self) -> Nanos;
}

/// The clock as shared by the gateway and its policies.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock: the wall time read once at start, advanced by a
/// monotonic clock, so it never steps backwards under NTP adjustments.
#[derive(Debug)]
pub struct SystemClock {
    wall_at_start: Nanos,
    start: Instant,
}

impl SystemClock {
    /// A clock starting at the wall time now.
    #[allow(clippy::disallowed_methods)]
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        SystemClock {
            wall_at_start: wall.as_nanos() as Nanos,
            start: Instant::now(),
        }
    }

    /// A new system clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        self.wall_at_start + self.start.elapsed().as_nanos() as Nanos
    }
}

/// A clock that only moves when told to: for tests.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start` until moved.
    pub fn new(start: Nanos) -> Arc<Self> {
        Arc::new(ManualClock(AtomicU64::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `to` (forward or back).
    pub fn set(&self, to: Nanos) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(Duration::from_micros(2));
        assert_eq!(clock.now(), 3_000);
    }

    #[test]
    fn system_clock_is_near_the_wall_clock_and_monotonic() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        let wall = wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64);
        assert!(wall.map(|w| w.abs_diff(a) < 1_000_000_000).unwrap_or(false));
    }
}
