//! [`WhenWoken`]: a side future (a timer, a shutdown signal) raced beside a
//! busy one, polled only when it woke the task itself.
//!
//! A connection's task is woken for every read and write, and a `select!`
//! polls every branch each time: an idle timer that fires once in minutes
//! was polled (about a hundred instructions of tokio's timer code each time)
//! two or three times per request. Polled through its own waker, which
//! notes that it fired and then wakes the task, the side future costs a
//! flag check per wake-up until it has something to say.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

pin_project_lite::pin_project! {
    /// `inner`, polled on its first poll and after each time it woke its
    /// waker; otherwise `Pending` at once.
    pub struct WhenWoken<F> {
        #[pin]
        inner: F,
        signal: Arc<Signal>,
        waker: Waker,
    }
}

/// The waker `inner` sees: it notes the wake-up, then wakes the task.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> WhenWoken<F> {
    /// Wraps `inner`; it is polled the first time this is.
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        WhenWoken {
            inner,
            signal,
            waker,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake-up in between finds
        // the task's current waker.
        this.signal.task.register(cx.waker());
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking whoever polled
    /// it when `fire` is called.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<parking_lot::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock() = Some(cx.waker().clone());
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_first_and_then_only_after_it_woke() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(parking_lot::Mutex::new(None::<Waker>));
        let mut side = Box::pin(WhenWoken::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        }));
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(side.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled on the first poll");
        // The task is woken by something else: the side future is not polled.
        for _ in 0..5 {
            assert!(side.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "not polled without its own wake-up"
        );

        // It wakes: the task is woken, and the next poll reaches it.
        ready.store(true, Ordering::SeqCst);
        let registered = inner_waker
            .lock()
            .take()
            .expect("the inner future kept a waker");
        registered.wake();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "its wake-up wakes the task"
        );
        assert!(side.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_raced_beside_a_busy_future_still_fires() {
        let timer = WhenWoken::new(tokio::time::sleep(std::time::Duration::from_millis(4500)));
        tokio::pin!(timer);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                () = &mut timer => break,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => ticks += 1,
            }
        }
        assert_eq!(ticks, 4, "the 4.5 s timer fires after four 1 s ticks");
    }
}
