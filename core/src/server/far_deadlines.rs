//! Deadlines far off, watched per I/O thread without a tokio timer per call.
//!
//! A call that waits (a host call always does) needs waking at its deadline.
//! A `tokio::time::Sleep` per call costs a timer-wheel entry, and whenever the
//! new entry is the earliest, tokio wakes its own driver through the eventfd:
//! a `write(2)` for about one host call in five (measured on the Go binding:
//! 21k writes/s at 114k calls/s, 84% of the I/O thread's writes). Most calls
//! end long before their deadline (gRPC deadlines are seconds; calls are
//! milliseconds), so a call whose deadline is more than [`NEAR`] away only
//! registers here: one sweeper task per I/O thread looks at the registered
//! deadlines every [`SWEEP`] and wakes the calls that came within [`NEAR`];
//! they then arm their own timer, which fires on time.

use std::cell::RefCell;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Deadlines closer than this get a timer of their own.
pub(crate) const NEAR: Duration = Duration::from_millis(100);
/// How often the sweeper looks; below [`NEAR`], so no deadline is missed.
const SWEEP: Duration = Duration::from_millis(25);

struct Slots {
    /// `(deadline, waker)`; the waker is taken when the sweeper wakes the call.
    slots: Vec<Option<(Instant, Option<Waker>)>>,
    free: Vec<usize>,
    live: usize,
    sweeping: bool,
}

thread_local! {
    static SLOTS: RefCell<Slots> = const { RefCell::new(Slots { slots: Vec::new(), free: Vec::new(), live: 0, sweeping: false }) };
}

/// A call's registration; dropping it unregisters.
pub(crate) struct FarWatch(usize);

/// Registers `deadline` (or updates the waker of `watch`): the call is woken
/// once its deadline is within [`NEAR`]. Call on an I/O thread, from a task.
pub(crate) fn watch(watch: &mut Option<FarWatch>, deadline: Instant, waker: &Waker) {
    let start_sweeper = SLOTS.with(|s| {
        let s = &mut *s.borrow_mut();
        if let Some(FarWatch(i)) = watch {
            if let Some((_, w)) = &mut s.slots[*i] {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    w => *w = Some(waker.clone()),
                }
            }
            return false;
        }
        let slot = Some((deadline, Some(waker.clone())));
        let i = match s.free.pop() {
            Some(i) => {
                s.slots[i] = slot;
                i
            }
            None => {
                s.slots.push(slot);
                s.slots.len() - 1
            }
        };
        *watch = Some(FarWatch(i));
        s.live += 1;
        !std::mem::replace(&mut s.sweeping, true)
    });
    if start_sweeper {
        tokio::spawn(sweep());
    }
}

impl Drop for FarWatch {
    fn drop(&mut self) {
        // `try_with`: a task dropped while its thread exits finds no slots.
        let _ = SLOTS.try_with(|s| {
            let s = &mut *s.borrow_mut();
            if s.slots[self.0].take().is_some() {
                s.free.push(self.0);
                s.live -= 1;
            }
        });
    }
}

async fn sweep() {
    loop {
        tokio::time::sleep(SWEEP).await;
        let near = Instant::now() + NEAR;
        let (wake, done) = SLOTS.with(|s| {
            let s = &mut *s.borrow_mut();
            let mut wake = Vec::new();
            for (deadline, waker) in s.slots.iter_mut().flatten() {
                if *deadline <= near {
                    wake.extend(waker.take());
                }
            }
            let done = s.live == 0;
            if done {
                s.sweeping = false;
                // Nothing registered: give the memory of a burst back.
                s.slots = Vec::new();
                s.free = Vec::new();
            }
            (wake, done)
        });
        // Woken outside the borrow: a waker may run code that registers.
        wake.into_iter().for_each(Waker::wake);
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_far_deadline_is_woken_once_it_comes_near() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let t0 = Instant::now();
        let mut w = None;
        watch(&mut w, t0 + Duration::from_millis(300), &waker);
        let mut gone = None;
        watch(&mut gone, t0 + Duration::from_millis(150), &waker);
        drop(gone.take());
        // Not before it is within NEAR (at 200 ms), nor for the dropped one.
        tokio::time::sleep_until((t0 + Duration::from_millis(170)).into()).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        // Woken by the first sweep after that (every 25 ms).
        tokio::time::sleep_until((t0 + Duration::from_millis(280)).into()).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // Once only; then the registration goes and the sweeper stops.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        drop(w);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(SLOTS.with(|s| !s.borrow().sweeping));
    }
}
