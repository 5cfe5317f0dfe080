//! Waiting in line for a slot, and the sweeper that times out expired waiters.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::fence;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::Manager;
use super::shared::{Node, NodeState, Outcome, Shared};
use crate::slots::Taken;
use crate::{Error, Result};

/// Waits in the queue for a slot. Dropping it before it completes gives back a slot
/// already granted to it, or leaves the queue.
pub(super) struct Waiter<'a, M: Manager> {
    pub(super) shared: &'a Arc<Shared<M>>,
    pub(super) node: Option<Arc<Node<M::Object>>>,
    pub(super) deadline: Instant,
}

impl<'a, M: Manager> Waiter<'a, M> {
    pub(super) fn new(shared: &'a Arc<Shared<M>>, deadline: Instant) -> Self {
        Self {
            shared,
            node: None,
            deadline,
        }
    }
}

impl<M: Manager> Future for Waiter<'_, M> {
    type Output = Result<Taken<M::Object>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let s = this.shared;
        let Some(node) = &this.node else {
            let mut list = s.lock_waiters();
            if list.closed {
                return Poll::Ready(Err(Error::Closed));
            }
            s.waiting.fetch_add(1, SeqCst);
            // Pairs with the fence in `Shared::put`.
            fence(SeqCst);
            if let Some(t) = s.slots.take() {
                s.waiting.fetch_sub(1, SeqCst);
                return Poll::Ready(Ok(t));
            }
            let node = Arc::new(Node {
                state: Mutex::new(NodeState {
                    waker: Some(cx.waker().clone()),
                    outcome: None,
                }),
                deadline: this.deadline,
            });
            list.queue.push_back(Arc::clone(&node));
            let deadline = this.deadline;
            if !list.sweeping {
                list.sweeping = true;
                list.sweep_at = Some(deadline);
                drop(list);
                tokio::spawn(sweep(Arc::downgrade(this.shared)));
            } else if list.sweep_at.is_none_or(|at| deadline < at) {
                // A shorter timeout than the sweeper is sleeping for: wake it early.
                list.sweep_at = Some(deadline);
                drop(list);
                s.sweeper.notify_one();
            } else {
                drop(list);
            }
            this.node = Some(node);
            return Poll::Pending;
        };
        let mut st = node.lock();
        match st.outcome.take() {
            Some(outcome) => {
                drop(st);
                this.node = None;
                match outcome {
                    Outcome::Granted(t) => Poll::Ready(Ok(t)),
                    Outcome::Closed => Poll::Ready(Err(Error::Closed)),
                    Outcome::TimedOut => Poll::Ready(Err(Error::Timeout {
                        waited: Duration::ZERO,
                        max: s.config.max_size,
                    })),
                }
            }
            None => {
                match &mut st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<M: Manager> Drop for Waiter<'_, M> {
    fn drop(&mut self) {
        let Some(node) = self.node.take() else { return };
        let s = self.shared;
        let mut list = s.lock_waiters();
        let outcome = node.lock().outcome.take();
        match outcome {
            Some(Outcome::Granted(t)) => {
                drop(list);
                s.put(t);
            }
            Some(Outcome::Closed | Outcome::TimedOut) => {}
            None => {
                if let Some(i) = list.queue.iter().position(|n| Arc::ptr_eq(n, &node)) {
                    list.queue.remove(i);
                    s.waiting.fetch_sub(1, SeqCst);
                }
            }
        }
    }
}

/// Times out expired waiters of one pool: one task and one timer for all of them,
/// sleeping until the earliest deadline. It ends when no waiter is left (the next
/// waiter starts another) or the pool is gone.
pub(super) async fn sweep<M: Manager>(pool: std::sync::Weak<Shared<M>>) {
    loop {
        let (next, notified) = {
            let Some(s) = pool.upgrade() else { return };
            let now = Instant::now();
            let mut expired = Vec::new();
            let mut list = s.lock_waiters();
            if list.closed || list.queue.is_empty() {
                list.sweeping = false;
                list.sweep_at = None;
                return;
            }
            let before = list.queue.len();
            list.queue.retain(|node| {
                let keep = node.deadline > now;
                if !keep {
                    expired.push(Arc::clone(node));
                }
                keep
            });
            s.waiting.fetch_sub(before - list.queue.len(), SeqCst);
            let next = list.queue.iter().map(|n| n.deadline).min();
            list.sweep_at = next;
            if next.is_none() {
                list.sweeping = false;
            }
            drop(list);
            for node in expired {
                if let Some(w) = node.finish(Outcome::TimedOut) {
                    w.wake();
                }
            }
            let Some(next) = next else { return };
            // `notify_one` keeps a permit while the sweeper is not waiting yet, so a
            // nudge sent before it sleeps is not lost. Only the `Notify` is held while
            // asleep: holding the pool would keep a dropped pool and its objects alive
            // until the deadline.
            let sweeper = Arc::clone(&s.sweeper);
            (next, async move { sweeper.notified().await })
        };
        let _ = tokio::time::timeout_at(next, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Waker;

    use super::*;
    use crate::object::Pool;

    struct Nums;

    impl Manager for Nums {
        type Object = u64;
        type Error = std::io::Error;

        async fn create(&self) -> std::result::Result<u64, std::io::Error> {
            Ok(7)
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let pool = Pool::builder(Nums).max_size(1).build().unwrap();
        let held = pool.acquire().await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        {
            let mut w = pin!(Waiter::new(&pool.shared, far()));
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert_eq!(pool.shared.waiting.load(SeqCst), 1);
            assert_eq!(pool.shared.lock_waiters().queue.len(), 1);
        }
        assert_eq!(pool.shared.waiting.load(SeqCst), 0);
        assert!(pool.shared.lock_waiters().queue.is_empty());
        drop(held);
        assert_eq!(pool.shared.slots.idle(), 1);
    }

    #[tokio::test]
    async fn a_slot_granted_to_a_waiter_dropped_unpolled_goes_back_to_the_pool() {
        let pool = Pool::builder(Nums).max_size(1).build().unwrap();
        let held = pool.acquire().await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        {
            let mut w = pin!(Waiter::new(&pool.shared, far()));
            assert!(w.as_mut().poll(&mut cx).is_pending());
            // Returning the object grants its slot to the queued waiter...
            drop(held);
            assert_eq!(pool.shared.slots.idle(), 0);
        }
        // ...and dropping the waiter before it saw the grant gives the slot back.
        assert_eq!(pool.shared.slots.idle(), 1);
        assert_eq!(*pool.try_acquire().await.unwrap(), 7);
    }

    #[tokio::test]
    async fn the_sweeper_times_out_an_expired_waiter() {
        let pool = Pool::builder(Nums).max_size(1).build().unwrap();
        let _held = pool.acquire().await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        let got = Waiter::new(&pool.shared, deadline).await;
        assert!(matches!(got, Err(Error::Timeout { .. })), "{:?}", got.err());
        assert_eq!(pool.shared.waiting.load(SeqCst), 0);
        assert!(pool.shared.lock_waiters().queue.is_empty());
    }

    #[tokio::test]
    async fn closing_the_pool_ends_a_wait() {
        let pool = Pool::builder(Nums).max_size(1).build().unwrap();
        let _held = pool.acquire().await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut w = pin!(Waiter::new(&pool.shared, far()));
        assert!(w.as_mut().poll(&mut cx).is_pending());
        pool.close();
        assert!(matches!(
            w.as_mut().poll(&mut cx),
            Poll::Ready(Err(Error::Closed))
        ));
    }
}
