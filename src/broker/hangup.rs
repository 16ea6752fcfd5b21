//! A connection's hang-up: the signal its long polls watch, fired when the connection's
//! reader ends (the peer closed or half-closed, the connection broke, framing broke, or the
//! shard stops).
//!
//! Requests run as tasks of their own and outlive the reader; a FETCH, FETCH_MULTI,
//! WATCH_GROUP or CHECK_TRANSACTIONS parked for up to 30 s would otherwise keep its waiter
//! slot (bounded per queue, per shard), and, when forwarded, a forwarded-request permit, for a
//! client that is gone. A client reconnecting in a loop could fill a queue's waiter list that
//! way, and every other consumer's long poll there would be answered empty at once. On the
//! hang-up such a request is answered as if its wait had ended: handled again without the
//! wait ([`Request::without_wait`]). A peer that only closed its sending side still reads that
//! answer, and the writer drops it for a peer that is gone. A request forwarded to another
//! shard stops there too: the owner stops a long poll whose sender no longer waits
//! (`forwarding`).

use std::future::Future;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{select, Either, FutureExt, Shared};

use super::shard::{LocalReply, Shard};
use super::shard_log::ShardLog;
use crate::protocol::Request;

/// Resolves when the connection hung up. Cheap to clone; all clones resolve together.
pub type HungUp = Shared<oneshot::Receiver<()>>;

/// Fires the connection's [`HungUp`] when dropped.
pub struct Hangup {
    _fire: oneshot::Sender<()>,
}

pub fn pair() -> (Hangup, HungUp) {
    let (tx, rx) = oneshot::channel();
    (Hangup { _fire: tx }, rx.shared())
}

/// Whether the connection has hung up.
pub fn is_hung_up(hung_up: &HungUp) -> bool {
    hung_up.peek().is_some()
}

/// `fut`'s output, or None when the connection hangs up first (`fut` is dropped then).
pub async fn unless_hung_up<F: Future + Unpin>(hung_up: &HungUp, fut: F) -> Option<F::Output> {
    match select(fut, hung_up.clone()).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// Handles `request` on `shard`; a long poll still waiting when the connection hangs up is
/// answered then, with what there is (see the module docs).
pub async fn handle<L: ShardLog>(
    shard: &Rc<Shard<L>>,
    request: Request,
    hung_up: &HungUp,
) -> LocalReply {
    // Boxed: the handling future is about 3 KiB, and the task holding it is moved several
    // times on its way into the executor.
    let Some(quick) = request.without_wait() else {
        return Box::pin(shard.handle(request)).await;
    };
    match unless_hung_up(hung_up, Box::pin(shard.handle(request))).await {
        Some(reply) => reply,
        None => Box::pin(shard.handle(quick)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_hangup_fires_every_clone_and_a_ready_answer_wins() {
        fn now<T>(f: impl Future<Output = T>) -> T {
            futures::FutureExt::now_or_never(Box::pin(f)).expect("ready")
        }
        let (hangup, hung_up) = pair();
        let other = hung_up.clone();
        assert!(!is_hung_up(&hung_up));
        assert_eq!(now(unless_hung_up(&hung_up, std::future::ready(5))), Some(5));
        drop(hangup);
        assert_eq!(now(unless_hung_up(&other, std::future::pending::<u8>())), None);
        assert!(is_hung_up(&hung_up) && is_hung_up(&other));
        // Both ready: the answer is taken, not thrown away.
        assert_eq!(now(unless_hung_up(&hung_up, std::future::ready(6))), Some(6));
    }
}
