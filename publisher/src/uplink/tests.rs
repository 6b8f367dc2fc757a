use super::*;
use crate::link::{LinkError, Matched};
use crate::queue::Queue;
use crate::spool::{Bounds, NewEntry, Spool};
use std::sync::Mutex;

/// A fake broker: connects when told, acks publishes (unless told not to)
/// and can be made to drop the connection after some publishes.
#[derive(Default)]
struct FakeLink {
    events: VecDeque<Result<LinkEvent, LinkError>>,
    /// Payloads in the order they were "sent".
    sent: Arc<Mutex<Vec<String>>>,
    next_pkid: u16,
    ack: bool,
    /// Connection attempts that fail before one succeeds.
    failing_connects: u32,
    /// Publishes after which the connection drops (unacked ones are lost).
    drop_after: Option<usize>,
    connect_attempts: u32,
    disconnected: bool,
    /// The connection dropped: publishes fail until `reconnect`.
    broken: bool,
    /// Each PUBACK arrives this long after the event before it.
    ack_delay: Option<Duration>,
    /// When the PUBACK at the front of `events` is due.
    ack_due: Option<Instant>,
}

impl FakeLink {
    fn new(ack: bool) -> Self {
        let mut link = Self {
            ack,
            ..Default::default()
        };
        link.attempt();
        link
    }

    fn attempt(&mut self) {
        self.connect_attempts += 1;
        if self.failing_connects > 0 {
            self.failing_connects -= 1;
            self.events.push_back(Err(LinkError("refused".into())));
        } else {
            self.events.push_back(Ok(LinkEvent::Connected));
        }
    }
}

impl Link for FakeLink {
    async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        // Cancel-safe like the real link: the delay's end is kept across
        // cancelled polls, and the event is taken only once it is due.
        if let (Some(delay), Some(Ok(LinkEvent::Acked(..)))) = (self.ack_delay, self.events.front())
        {
            let due = *self.ack_due.get_or_insert_with(|| Instant::now() + delay);
            tokio::time::sleep_until(due).await;
            self.ack_due = None;
        }
        match self.events.pop_front() {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    fn publish(&mut self, _topic: &str, payload: Vec<u8>, _meta: Meta) -> Result<(), LinkError> {
        let mut sent = self.sent.lock().unwrap();
        if self.drop_after == Some(sent.len()) {
            self.drop_after = None;
            self.broken = true;
            self.events
                .push_back(Err(LinkError("connection reset".into())));
        }
        if self.broken {
            return Err(LinkError("closed".into()));
        }
        sent.push(String::from_utf8(payload).unwrap());
        self.next_pkid = self.next_pkid % 100 + 1;
        self.events.push_back(Ok(LinkEvent::Sent(self.next_pkid)));
        if self.ack {
            self.events
                .push_back(Ok(LinkEvent::Acked(self.next_pkid, Matched::Yes)));
        }
        Ok(())
    }

    fn reconnect(&mut self) {
        self.events.clear();
        self.broken = false;
        self.attempt();
    }

    fn disconnect(&mut self) -> Result<(), LinkError> {
        self.disconnected = true;
        self.events.push_back(Ok(LinkEvent::Disconnected));
        Ok(())
    }
}

fn timing(window: usize) -> Timing {
    Timing {
        window,
        reconnect_min: Duration::from_millis(1),
        reconnect_max: Duration::from_millis(4),
        drain_timeout: Duration::from_millis(100),
        ack_timeout: None,
    }
}

fn spool_with(n: usize) -> QueueHandle {
    let mut s = Spool::open_in_memory(Bounds {
        max_rows: 1_000_000,
        max_age: None,
    })
    .unwrap();
    let entries: Vec<_> = (1..=n)
        .map(|i| NewEntry::reading("co2/a/emissions", format!("r{i}").into_bytes(), i as i64))
        .collect();
    s.append(&entries, 0).unwrap();
    QueueHandle::new(Queue::for_tests(s))
}

fn done_signals() -> Signals {
    let signals = Signals::default();
    signals.input_done.store(true, Ordering::Release);
    signals
}

fn uplink(
    link: FakeLink,
    spool: &QueueHandle,
    signals: Signals,
    window: usize,
) -> Uplink<FakeLink> {
    Uplink::new(
        link,
        spool.clone(),
        Arc::new(Stats::default()),
        signals,
        timing(window),
    )
}

fn names(n: std::ops::RangeInclusive<usize>) -> Vec<String> {
    n.map(|i| format!("r{i}")).collect()
}

#[tokio::test]
async fn offline_goes_online_on_connack_and_backs_off_on_failure() {
    let spool = spool_with(0);
    let mut up = uplink(FakeLink::new(true), &spool, Signals::default(), 10);
    assert_eq!(up.offline(0).await.unwrap(), State::Online);

    let mut link = FakeLink {
        failing_connects: 2,
        ack: true,
        ..Default::default()
    };
    link.attempt();
    let mut up = uplink(link, &spool, Signals::default(), 10);
    assert_eq!(up.offline(0).await.unwrap(), State::Offline { failures: 1 });
    assert_eq!(up.offline(1).await.unwrap(), State::Offline { failures: 2 });
    assert_eq!(up.offline(2).await.unwrap(), State::Online);
    assert_eq!(up.link.connect_attempts, 3);
}

#[tokio::test]
async fn offline_stops_on_shutdown() {
    let spool = spool_with(0);
    let mut link = FakeLink::new(true);
    link.events.clear();
    let signals = Signals::default();
    signals.shutdown.cancel();
    let mut up = uplink(link, &spool, signals, 10);
    assert_eq!(up.offline(0).await.unwrap(), State::Done);
}

#[tokio::test]
async fn replays_the_queue_oldest_first_and_deletes_on_puback() {
    let spool = spool_with(2500);
    let link = FakeLink::new(true);
    let sent = Arc::clone(&link.sent);
    let up = uplink(link, &spool, done_signals(), 64);
    let stats = Arc::clone(&up.stats);
    let link = up.run().await.unwrap();
    assert_eq!(*sent.lock().unwrap(), names(1..=2500));
    assert!(spool.is_empty());
    assert_eq!(Stats::get(&stats.acked), 2500);
    assert!(link.disconnected, "a clean DISCONNECT at the end");
}

#[tokio::test]
async fn connection_loss_republishes_unacknowledged_readings() {
    let spool = spool_with(10);
    let mut link = FakeLink::new(false);
    link.drop_after = Some(3);
    let sent = Arc::clone(&link.sent);
    let mut up = uplink(link, &spool, done_signals(), 5);
    assert_eq!(up.offline(0).await.unwrap(), State::Online);
    // Nothing is acked; the 4th publish finds the connection gone.
    let next = up.online().await.unwrap();
    assert_eq!(next, State::Offline { failures: 1 });
    assert_eq!(up.outstanding(), 0, "in-flight mapping forgotten");
    assert_eq!(spool.len(), 10, "nothing deleted without a PUBACK");
    // Reconnect; now the broker acks: everything is delivered from r1 on.
    up.link.ack = true;
    assert_eq!(up.offline(1).await.unwrap(), State::Online);
    assert_eq!(up.online().await.unwrap(), State::Draining);
    assert!(spool.is_empty());
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent[..3], names(1..=3)[..]);
    assert_eq!(sent[3..], names(1..=10)[..], "replayed from the oldest");
}

#[tokio::test]
async fn a_broker_that_stops_acknowledging_is_left_and_the_readings_republished() {
    let spool = spool_with(10);
    let link = FakeLink::new(false);
    let sent = Arc::clone(&link.sent);
    let mut up = uplink(link, &spool, done_signals(), 5);
    up.timing.ack_timeout = Some(Duration::from_millis(50));
    assert_eq!(up.offline(0).await.unwrap(), State::Online);
    let started = Instant::now();
    // The connection stays up, but no PUBACK ever comes.
    assert_eq!(up.online().await.unwrap(), State::Offline { failures: 1 });
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(Stats::get(&up.stats.ack_timeouts), 1);
    assert_eq!(up.outstanding(), 0, "in-flight mapping forgotten");
    assert_eq!(spool.len(), 10, "nothing deleted without a PUBACK");
    up.link.ack = true;
    assert_eq!(up.offline(1).await.unwrap(), State::Online);
    assert_eq!(up.link.connect_attempts, 2, "a new connection");
    assert_eq!(up.online().await.unwrap(), State::Draining);
    assert!(spool.is_empty());
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent[..5], names(1..=5)[..]);
    assert_eq!(sent[5..], names(1..=10)[..], "replayed from the oldest");
}

#[tokio::test]
async fn slow_acks_that_keep_coming_never_trip_the_ack_timeout() {
    let spool = spool_with(10);
    let mut link = FakeLink::new(true);
    link.ack_delay = Some(Duration::from_millis(20));
    let mut up = uplink(link, &spool, done_signals(), 1);
    up.timing.ack_timeout = Some(Duration::from_millis(50));
    let started = Instant::now();
    assert_eq!(up.offline(0).await.unwrap(), State::Online);
    assert_eq!(up.online().await.unwrap(), State::Draining);
    // Ten acks 20 ms apart: four times the timeout in all, but never 50 ms without one.
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(Stats::get(&up.stats.ack_timeouts), 0);
    assert!(spool.is_empty());
}

#[tokio::test]
async fn draining_waits_for_outstanding_acks_then_disconnects() {
    let spool = spool_with(5);
    let signals = Signals::default();
    let mut up = uplink(FakeLink::new(false), &spool, signals.clone(), 10);
    up.offline(0).await.unwrap();
    up.fill_window().await.unwrap();
    assert_eq!(up.outstanding(), 5);
    // Sent events are queued; the PUBACKs arrive late, while draining.
    for pkid in 1..=5 {
        up.link
            .events
            .push_back(Ok(LinkEvent::Acked(pkid, Matched::Yes)));
    }
    signals.shutdown.cancel();
    assert_eq!(up.draining().await.unwrap(), State::Done);
    assert!(
        spool.is_empty(),
        "every outstanding reading acked before DISCONNECT"
    );
    assert!(up.link.disconnected);
}

#[tokio::test]
async fn draining_gives_up_at_the_deadline_and_keeps_readings_queued() {
    let spool = spool_with(3);
    let mut up = uplink(FakeLink::new(false), &spool, Signals::default(), 10);
    up.offline(0).await.unwrap();
    up.fill_window().await.unwrap();
    let started = Instant::now();
    assert_eq!(up.draining().await.unwrap(), State::Done);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(spool.len(), 3);
    assert!(up.link.disconnected);
}

#[tokio::test]
async fn shutdown_while_online_drains() {
    let spool = spool_with(0);
    let signals = Signals::default();
    let mut up = uplink(FakeLink::new(true), &spool, signals.clone(), 10);
    up.offline(0).await.unwrap();
    signals.shutdown.cancel();
    assert_eq!(up.online().await.unwrap(), State::Draining);
}

#[test]
fn backoff_doubles_is_capped_and_jittered() {
    let min = Duration::from_millis(100);
    let max = Duration::from_millis(1000);
    for _ in 0..100 {
        let d1 = backoff(1, min, max);
        assert!(d1 >= Duration::from_millis(50) && d1 <= min, "{d1:?}");
        let d3 = backoff(3, min, max);
        assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
        let d30 = backoff(30, min, max);
        assert!(d30 >= Duration::from_millis(500) && d30 <= max, "{d30:?}");
    }
}
