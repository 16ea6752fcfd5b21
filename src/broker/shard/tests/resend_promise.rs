//! A resend answered from an earlier store of the same batch (an idempotent producer's
//! sequence, a scheduled send's unique id) makes the promise a first send's answer makes:
//! SEND_OK on a sync master only once the in-sync set confirmed the batch, waited for as a
//! produce waits; FLUSH_SLAVE_TIMEOUT when it was not confirmed in time.

use super::replication::{fetched, joined, master_configured};
use super::*;

use crate::protocol::message::Delivery;
use crate::replication::config::Mode;
use crate::storage::FlushMode;

/// How long the master waits for its replica here: the replica below never confirms on its
/// own, so every wait runs to this timeout.
const TIMEOUT_MS: u64 = 300;

fn status(r: Reply) -> (SendStatus, u64) {
    match r {
        Ok(Response::Produce { status, base_offset, .. }) => (status, base_offset),
        other => panic!("{other:?}"),
    }
}

/// A sync master whose replication timer runs (it answers produces past their deadline),
/// one replica joined (its stream session): the test's body, then the timer stopped.
async fn on_a_sync_master<F: std::future::Future<Output = ()>>(
    flush: FlushMode,
    body: impl FnOnce(Rc<Shard<SimLog>>, u64) -> F,
) {
    let tweak = |st: &mut crate::storage::StorageConfig| st.flush_mode = flush;
    let s = master_configured(SimDir::new(3), tweak, Mode::Sync, TIMEOUT_MS, None).await;
    let (mut stop_handle, stop) = crate::broker::shutdown::stop_pair();
    let timer = runtime::spawn(s.clone().replication_loop(stop));
    let session = joined(&s, 0).await;
    body(s, session).await;
    stop_handle.fire();
    timer.await;
}

/// The replica fetches everything the master holds and confirms it.
async fn replica_confirms_all(s: &Rc<Shard<SimLog>>, session: u64) {
    let (next, _) = fetched(s, session, 0).await;
    fetched(s, session, next).await;
}

#[test]
fn a_resent_idempotent_batch_is_not_send_ok_before_the_replicas_confirm_it() {
    run(|| resent_idempotent_batches(FlushMode::Async));
}

/// With sync flush the resend waits for the disk as a first send does; a batch durable here
/// and not confirmed is FLUSH_SLAVE_TIMEOUT, not FLUSH_DISK_TIMEOUT (the master's consumers
/// see only confirmed data, but the disk has it).
#[test]
fn with_sync_flush_a_resend_of_a_durable_unconfirmed_batch_is_flush_slave_timeout() {
    run(|| resent_idempotent_batches(FlushMode::Sync));
}

async fn resent_idempotent_batches(flush: FlushMode) {
    on_a_sync_master(flush, |s, session| async move {
        // Stored on the master; the replica never fetched it.
        let first = status(call(&s, idempotent(0, 7, 0, 2)).await);
        assert_eq!(first, (SendStatus::FlushSlaveTimeout, 0));
        // The producer resends it (its reply was late): the same place, the same promise.
        let again = status(call(&s, idempotent(0, 7, 0, 2)).await);
        assert_eq!(again, (SendStatus::FlushSlaveTimeout, 0), "not confirmed: not SEND_OK");
        // A resend sent while the first send still waits gets what the first gets.
        let before = s.log.append_end();
        let me = s.clone();
        let pending = runtime::spawn(async move { call(&me, idempotent(0, 7, 2, 1)).await });
        while s.log.append_end() == before {
            runtime::yield_once().await;
        }
        let resend = status(call(&s, idempotent(0, 7, 2, 1)).await);
        assert_eq!(status(pending.await.unwrap()), (SendStatus::FlushSlaveTimeout, 2));
        assert_eq!(resend, (SendStatus::FlushSlaveTimeout, 2));
        // Once the replica holds them, a resend is SEND_OK.
        replica_confirms_all(&s, session).await;
        assert_eq!(status(call(&s, idempotent(0, 7, 0, 2)).await), (SendStatus::SendOk, 0));
        assert_eq!(status(call(&s, idempotent(0, 7, 2, 1)).await), (SendStatus::SendOk, 2));
    })
    .await
}

fn scheduled_with_id(id: &str) -> Request {
    let mut b = BatchBuilder::new(1 << 16);
    let props: &[(&[u8], &[u8])] = &[(b"UNIQ_KEY", id.as_bytes())];
    let rec = Record { key: b"u", tag: b"", properties: props, body: b"held", timestamp_ms: 5 };
    b.push(&rec).unwrap();
    Request::ProduceScheduled {
        topic: "t".into(),
        queue_id: 0,
        delivery: Delivery::Level(3),
        batch: b.finish(-1, -1).into(),
    }
}

#[test]
fn a_resent_scheduled_send_is_not_send_ok_before_the_replicas_confirm_it() {
    run(|| {
        on_a_sync_master(FlushMode::Sync, |s, session| async move {
            s.start_schedule().await.unwrap();
            let before = s.log.append_end();
            // The first send is stored and waits for the replica; its resend comes meanwhile.
            let me = s.clone();
            let pending = runtime::spawn(async move { call(&me, scheduled_with_id("id-1")).await });
            while s.log.append_end() == before {
                runtime::yield_once().await;
            }
            let resend = status(call(&s, scheduled_with_id("id-1")).await);
            let first = status(pending.await.unwrap());
            assert_eq!(first.0, SendStatus::FlushSlaveTimeout);
            assert_eq!(resend, first, "the resend makes no promise the first send could not");
            // Later, unconfirmed still.
            assert_eq!(status(call(&s, scheduled_with_id("id-1")).await), first);
            // Once the replica holds it, a resend is SEND_OK at the same place.
            replica_confirms_all(&s, session).await;
            assert_eq!(
                status(call(&s, scheduled_with_id("id-1")).await),
                (SendStatus::SendOk, first.1)
            );
        })
    });
}
