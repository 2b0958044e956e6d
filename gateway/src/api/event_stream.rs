//! One `WatchEvents` stream: a task moves matching events from an [`EventSubscription`] into a
//! per-stream queue that the gRPC response reads. The queue is bounded twice, by events and by
//! encoded bytes (an SDP offer of a long Room can be hundreds of KB, so a count alone would let
//! one stalled backend hold gigabytes); past either bound the stream ends with DATA_LOSS.
//! It owns no state beyond the queue and never blocks a publisher.

use std::sync::Arc;

use prost::Message;
use switchboard::v1 as pb;
use tokio::sync::{Semaphore, TryAcquireError, mpsc};
use tokio_stream::StreamExt;
use tonic::Status;

use super::convert::ToProto;
use super::service::EventStream;
use super::status::{events_lost, events_unread};
use crate::events::{EventBody, EventStreamError, EventSubscription};

/// Bounds of one stream's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    /// Most events queued.
    pub(crate) events: usize,
    /// Most encoded bytes queued (one event larger than this still passes an empty queue).
    pub(crate) bytes: usize,
}

/// Starts forwarding `sub` and returns the response stream. The forwarding task ends when the
/// subscription ends, the stream overflows (after queueing DATA_LOSS) or the reader goes away,
/// at once, even while no event comes (a Room-filtered stream of a deleted Room gets none: the
/// task and its subscription would otherwise stay for the life of the process).
///
/// Live events never wait: a full queue ends the stream. Replayed events (a resume) wait for
/// the reader instead, since they are held by the replay ring anyway; live events published
/// meanwhile wait in the bus, and a reader too slow to catch up ends with DATA_LOSS there.
pub(crate) fn spawn(mut sub: EventSubscription, limits: StreamLimits) -> EventStream {
    // One slot more than the bound, kept for the final status.
    let (tx, rx) = mpsc::channel::<(u32, Result<pb::Event, Status>)>(limits.events + 1);
    // One permit per queued byte; an event larger than the whole budget needs all of it (an
    // empty queue).
    let budget_max = limits
        .bytes
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    let budget = Arc::new(Semaphore::new(budget_max));
    let returned = budget.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                () = tx.closed() => break,
                next = sub.next() => next,
            };
            let (item, last) = match next {
                Ok(ev) => (Ok((&*ev).to_proto()), ev.body == EventBody::Draining),
                Err(EventStreamError::Lagged { missed }) => (Err(events_lost(missed)), true),
                Err(EventStreamError::Closed) => break,
            };
            // Still catching up after returning it: it came from the ring.
            let replayed = sub.catching_up();
            if tx.is_closed() {
                break;
            }
            // Clamped to the budget, which fits in u32.
            let size = item
                .as_ref()
                .map_or(0, Message::encoded_len)
                .min(budget_max) as u32;
            let sent = if replayed {
                replay_one(&tx, &budget, size, item).await
            } else {
                live_one(&tx, &budget, size, item)
            };
            match sent {
                Sent::Ok => {}
                Sent::Closed => break,
                Sent::Overflow(limit) => {
                    // A full queue means the backend is not reading: end the stream rather
                    // than hold events without bound.
                    let _ = tx.try_send((0, Err(events_unread(limit))));
                    break;
                }
            }
            if last {
                break;
            }
        }
    });
    Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(move |(size, item)| {
            returned.add_permits(size as usize);
            item
        }),
    )
}

enum Sent {
    Ok,
    Closed,
    /// Which limit was reached.
    Overflow(&'static str),
}

type Item = (u32, Result<pb::Event, Status>);

/// Queues a live event now or reports the limit that is full.
fn live_one(
    tx: &mpsc::Sender<Item>,
    budget: &Semaphore,
    size: u32,
    item: Result<pb::Event, Status>,
) -> Sent {
    if tx.capacity() <= 1 {
        return Sent::Overflow("limits.event_buffer");
    }
    match budget.try_acquire_many(size) {
        Ok(p) => p.forget(),
        Err(TryAcquireError::NoPermits) => return Sent::Overflow("limits.event_stream_bytes"),
        Err(TryAcquireError::Closed) => return Sent::Closed,
    }
    if tx.try_send((size, item)).is_err() {
        // Only this task sends and it keeps a slot free, so this is a closed reader.
        return Sent::Closed;
    }
    Sent::Ok
}

/// Queues a replayed event once the reader made room (or gives up when it went away).
async fn replay_one(
    tx: &mpsc::Sender<Item>,
    budget: &Semaphore,
    size: u32,
    item: Result<pb::Event, Status>,
) -> Sent {
    let room = async {
        let bytes = budget.acquire_many(size).await.ok()?;
        // Two slots: one for this event, one kept free for a final status.
        let mut slots = tx.reserve_many(2).await.ok()?;
        bytes.forget();
        slots.next().map(|s| s.send((size, item)))
    };
    tokio::select! {
        sent = room => if sent.is_some() { Sent::Ok } else { Sent::Closed },
        () = tx.closed() => Sent::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BootId, EventBus, EventBusLimits, EventFilter};
    use switchboard_core::{EventKind, RoomId, SfuEvent};

    fn offer(bytes: usize) -> EventBody {
        EventBody::Sfu(SfuEvent {
            room: RoomId::parse("r").unwrap(),
            session: None,
            kind: EventKind::NegotiationNeeded {
                offer_id: 7,
                sdp: "a".repeat(bytes),
            },
        })
    }

    fn bus() -> EventBus {
        EventBus::with_boot_id(
            EventBusLimits {
                live_events: 4096,
                replay_events: 16,
                replay_bytes: 1 << 20,
                stream_bytes: 1 << 20,
            },
            BootId::from_u128(9),
        )
    }

    /// The next item, failing the test rather than waiting forever.
    async fn next(stream: &mut EventStream) -> Option<Result<pb::Event, Status>> {
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("the stream yields or ends within 5 s")
    }

    /// Waits until the forwarding task has taken every published event (it runs on the same
    /// runtime; yielding lets it run).
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_task_ends_when_the_reader_goes_away_even_if_no_event_comes() {
        let bus = bus();
        let limits = StreamLimits {
            events: 16,
            bytes: 1 << 20,
        };
        let quiet = EventFilter {
            room: Some(RoomId::parse("deleted-long-ago").unwrap()),
            ..EventFilter::default()
        };
        let stream = spawn(bus.subscribe(quiet), limits);
        settle().await;
        assert_eq!(bus.live_subscribers(), 1);
        // Other Rooms' events pass by; none matches.
        bus.publish(offer(10));
        settle().await;
        drop(stream);
        settle().await;
        assert_eq!(
            bus.live_subscribers(),
            0,
            "the forwarding task ended and dropped its subscription"
        );
    }

    #[tokio::test]
    async fn a_stalled_reader_is_bounded_by_bytes_and_ends_with_data_loss() {
        let bus = bus();
        let limits = StreamLimits {
            events: 4096,
            bytes: 2 << 20,
        };
        let mut stream = spawn(bus.subscribe(EventFilter::default()), limits);
        // 40 offers of 321 KB (~12.8 MB) to a reader that does not read: far below 4,096 events.
        for _ in 0..40 {
            bus.publish(offer(321_000));
            settle().await;
        }
        // Now read what was kept: only what fits in 2 MiB, then DATA_LOSS naming the limit.
        let mut bytes = 0;
        let mut n = 0;
        let status = loop {
            match next(&mut stream).await {
                Some(Ok(e)) => {
                    assert_eq!(e.sequence, n + 1, "no gap before the end");
                    bytes += e.encoded_len();
                    n += 1;
                }
                Some(Err(s)) => break s,
                None => panic!("the stream ended without DATA_LOSS after {n} events"),
            }
        };
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(
            status.message().contains("limits.event_stream_bytes"),
            "{status:?}"
        );
        assert!(bytes <= 2 << 20, "{bytes} bytes were held");
        assert_eq!(n, 6, "2 MiB holds six 321 KB offers");
        assert!(
            next(&mut stream).await.is_none(),
            "the stream ends after DATA_LOSS"
        );
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_every_large_event() {
        let bus = bus();
        let limits = StreamLimits {
            events: 4096,
            bytes: 1 << 20,
        };
        let mut stream = spawn(bus.subscribe(EventFilter::default()), limits);
        for i in 0..20u64 {
            bus.publish(offer(321_000));
            let e = next(&mut stream).await.unwrap().unwrap();
            assert_eq!(e.sequence, i + 1);
            assert_eq!(e.boot_id, BootId::from_u128(9).to_string());
        }
    }

    #[tokio::test]
    async fn a_replay_larger_than_the_stream_bounds_reaches_a_reader_that_reads() {
        let bus = Arc::new(EventBus::with_boot_id(
            EventBusLimits {
                live_events: 4096,
                replay_events: 1000,
                replay_bytes: 64 << 20,
                stream_bytes: 1 << 20,
            },
            BootId::from_u128(9),
        ));
        for _ in 0..100 {
            bus.publish(offer(321_000));
        }
        let sub = bus
            .subscribe_after(0, None, EventFilter::default())
            .unwrap();
        // 100 offers (~32 MB) to replay through a queue of 16 events and 1 MiB: the replay waits
        // for the reader instead of overflowing.
        let limits = StreamLimits {
            events: 16,
            bytes: 1 << 20,
        };
        let mut stream = spawn(sub, limits);
        settle().await;
        for i in 1..=100u64 {
            let e = next(&mut stream).await.unwrap().unwrap();
            assert_eq!(e.sequence, i);
        }
        bus.publish(offer(10));
        assert_eq!(next(&mut stream).await.unwrap().unwrap().sequence, 101);
    }

    #[tokio::test]
    async fn a_stalled_reader_is_bounded_by_events() {
        let bus = bus();
        let limits = StreamLimits {
            events: 16,
            bytes: 1 << 30,
        };
        let mut stream = spawn(bus.subscribe(EventFilter::default()), limits);
        for _ in 0..40 {
            bus.publish(offer(10));
        }
        settle().await;
        let mut n = 0;
        let status = loop {
            match next(&mut stream).await {
                Some(Ok(_)) => n += 1,
                Some(Err(s)) => break s,
                None => panic!("no DATA_LOSS"),
            }
        };
        assert_eq!(n, 16);
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(
            status.message().contains("limits.event_buffer"),
            "{status:?}"
        );
    }
}
