//! The MQTT task: an explicit state machine over a [`Link`] and the spool.
//!
//! - **Offline**: wait for a connection; after a failure, back off (capped,
//!   jittered) first. Nothing is in flight.
//! - **Online**: publish queued readings oldest first, up to `window` awaiting
//!   PUBACK; delete each from the queue on its PUBACK (deletes are batched).
//!   On a connection error, forget the in-flight mapping: the next session
//!   republishes from the queue, and the bridge deduplicates on
//!   (device, date_time). No PUBACK for `ack_timeout` while some are due
//!   counts as a connection error: MQTT re-sends an unacknowledged publish
//!   only on a new connection, so a half-open connection, or a broker that
//!   dropped a publish it could not store (NATS during a JetStream leader
//!   election), would otherwise hold those readings for as long as the
//!   connection lives. When the queue switches store (disk to memory and
//!   back, a damaged file replaced) its ids change meaning: the uplink starts
//!   over from the new store's oldest entry, and acks for publishes of the
//!   old store are dropped (those readings are simply sent again).
//! - **Draining** (shutdown, or `max_readings` delivered): publish nothing
//!   new, wait (bounded) for outstanding PUBACKs, flush deletes, DISCONNECT.
//!   Disconnecting with PUBACKs outstanding is how "publish then disconnect"
//!   loses readings.
//!
//! Each state is an `async fn` returning the next one, so each can be tested alone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backlog::{self, Backlog, Note};
use crate::link::{Link, LinkEvent, Meta};
use crate::queue::QueueHandle;
use crate::spool::SpoolError;
use crate::store::{Entry, Kind};

/// Queue rows fetched per read: large enough to keep a big window full
/// while draining a backlog, small enough to bound memory.
const FETCH_BATCH: usize = 1000;
/// Acks are deleted from the queue in batches of this many, or after
/// [`ACK_FLUSH_INTERVAL`]: one transaction instead of one per reading.
const ACK_FLUSH_ROWS: usize = 2000;
const ACK_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// How long to wait for the DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::stats::Stats;

/// Signals from the rest of the program.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Stop: drain and disconnect.
    pub shutdown: CancellationToken,
    /// Something was appended to the queue.
    pub spool_grew: Arc<Notify>,
    /// The sampler will append nothing more (`max_readings` reached): deliver
    /// the queue, then drain.
    pub input_done: Arc<AtomicBool>,
}

/// Timing of the uplink.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Most publishes awaiting PUBACK.
    pub window: usize,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Longest wait for outstanding PUBACKs at shutdown.
    pub drain_timeout: Duration,
    /// Publishes outstanding and no PUBACK for this long: reconnect (`None`: never).
    pub ack_timeout: Option<Duration>,
}

/// The state machine's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected; `failures` consecutive attempts failed so far.
    Offline {
        /// Consecutive failed attempts (0: first attempt, no delay).
        failures: u32,
    },
    /// Connected and publishing.
    Online,
    /// Finishing: waiting for PUBACKs, then disconnecting.
    Draining,
    /// Stopped.
    Done,
}

/// A queue entry as the uplink tracks it: the queue generation it belongs to, and its id there.
type Tracked = (u64, i64);

/// The MQTT task.
pub struct Uplink<L> {
    link: L,
    spool: QueueHandle,
    stats: Arc<Stats>,
    signals: Signals,
    timing: Timing,
    /// The queue generation `cursor` and `unsent` belong to.
    generation: u64,
    /// Fetched from the queue, not yet handed to the link.
    unsent: VecDeque<Entry>,
    /// Highest queue id fetched so far in this session.
    cursor: i64,
    /// No queue rows beyond `cursor` as of the last fetch.
    caught_up: bool,
    /// Handed to the link, waiting for their packet id, in order.
    requested: VecDeque<Tracked>,
    /// Packet id -> queue entry, waiting for PUBACK.
    inflight: HashMap<u16, Tracked>,
    /// Acknowledged, not yet deleted from the queue.
    acked: Vec<Tracked>,
    /// Since when publishes have been outstanding with no PUBACK (or refusal) arriving.
    unanswered_since: Option<Instant>,
    last_flush: Instant,
    /// A backlog being delivered, for the progress lines.
    backlog: Backlog,
    /// A refusal was logged this session (one error line per session, not per message).
    refusal_logged: bool,
}

/// Delay before reconnect attempt `failures` (1-based): the schedule the
/// bridge uses too (`co2_wire::backoff`), doubling from `min`, capped at
/// `max`, jittered so that many Pis behind one broker do not reconnect in
/// lockstep.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    co2_wire::backoff::delay(failures.saturating_sub(1), min, max)
}

impl<L: Link> Uplink<L> {
    /// An uplink over `link`, publishing from `spool`.
    pub fn new(
        link: L,
        spool: QueueHandle,
        stats: Arc<Stats>,
        signals: Signals,
        timing: Timing,
    ) -> Self {
        Self {
            link,
            spool,
            stats,
            signals,
            timing,
            generation: 0,
            unsent: VecDeque::new(),
            cursor: 0,
            caught_up: false,
            requested: VecDeque::new(),
            inflight: HashMap::new(),
            acked: Vec::new(),
            unanswered_since: None,
            last_flush: Instant::now(),
            backlog: Backlog::new(timing.window),
            refusal_logged: false,
        }
    }

    /// Runs from `Offline` to `Done`.
    pub async fn run(mut self) -> Result<L, SpoolError> {
        let mut state = State::Offline { failures: 0 };
        loop {
            state = match state {
                State::Offline { failures } => self.offline(failures).await?,
                State::Online => self.online().await?,
                State::Draining => self.draining().await?,
                State::Done => return Ok(self.link),
            };
        }
    }

    /// Publishes awaiting PUBACK (or their packet id).
    pub fn outstanding(&self) -> usize {
        self.requested.len() + self.inflight.len()
    }

    /// Offline: wait (after a failure, back off first) for a connection.
    pub async fn offline(&mut self, failures: u32) -> Result<State, SpoolError> {
        self.flush_acks().await?;
        if failures > 0 {
            let delay = backoff(
                failures,
                self.timing.reconnect_min,
                self.timing.reconnect_max,
            );
            tracing::debug!(
                failures,
                delay_ms = delay.as_millis() as u64,
                "Reconnecting after a delay"
            );
            tokio::select! {
                _ = self.signals.shutdown.cancelled() => return Ok(State::Done),
                _ = tokio::time::sleep(delay) => {}
            }
            self.link.reconnect();
        }
        loop {
            tokio::select! {
                _ = self.signals.shutdown.cancelled() => return Ok(State::Done),
                event = self.link.poll() => match event {
                    Ok(LinkEvent::Connected) => {
                        Stats::add(&self.stats.connects, 1);
                        self.stats.connected.store(true, Ordering::Relaxed);
                        let queued = self.spool.len();
                        tracing::info!(queued, "Connected to the broker");
                        self.new_session();
                        if let Some(note) = self.backlog.connected(queued, Instant::now().into_std()) {
                            log_backlog(note);
                        }
                        return Ok(State::Online);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // First failure of a series at warn, the repeats at debug.
                        if failures == 0 {
                            self.stats.note_error(format!("broker: {e}"));
                            tracing::warn!(error = %e, queued = self.spool.len(), "Cannot connect to the broker; readings stay queued");
                        } else {
                            tracing::debug!(error = %e, failures = failures + 1, "Still cannot connect to the broker");
                        }
                        return Ok(State::Offline { failures: failures + 1 });
                    }
                },
            }
        }
    }

    /// Online: publish from the queue, track PUBACKs.
    pub async fn online(&mut self) -> Result<State, SpoolError> {
        loop {
            self.fill_window().await?;
            if self.delivered_everything().await? {
                tracing::info!("Every queued reading is delivered");
                return Ok(State::Draining);
            }
            let flush_at = self.last_flush + ACK_FLUSH_INTERVAL;
            let answer_by = self.answer_deadline();
            tokio::select! {
                biased;
                _ = self.signals.shutdown.cancelled() => return Ok(State::Draining),
                event = self.link.poll() => match event {
                    Ok(event) => self.on_event(event),
                    Err(e) => {
                        self.stats.connected.store(false, Ordering::Relaxed);
                        self.stats.note_error(format!("broker: {e}"));
                        tracing::warn!(error = %e, in_flight = self.outstanding(), queued = self.spool.len(), "Connection to the broker lost; unacknowledged readings will be republished");
                        self.flush_acks().await?;
                        self.forget_in_flight();
                        self.backlog.interrupted();
                        return Ok(State::Offline { failures: 1 });
                    }
                },
                _ = self.signals.spool_grew.notified(), if self.caught_up => {
                    self.caught_up = false;
                }
                _ = tokio::time::sleep_until(flush_at), if !self.acked.is_empty() => {
                    self.flush_acks().await?;
                }
                _ = sleep_until_some(answer_by) => {
                    let in_flight = self.outstanding();
                    let timeout_s = self.timing.ack_timeout.map_or(0, |t| t.as_secs());
                    Stats::add(&self.stats.ack_timeouts, 1);
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.stats.note_error(format!("broker: no PUBACK for {timeout_s} s with {in_flight} readings in flight"));
                    tracing::warn!(in_flight, timeout_s, queued = self.spool.len(), "No acknowledgement from the broker in time; reconnecting, and the unacknowledged readings will be republished (mqtt.ack_timeout_s)");
                    self.flush_acks().await?;
                    self.forget_in_flight();
                    self.backlog.interrupted();
                    return Ok(State::Offline { failures: 1 });
                }
                // No acks for an interval while a backlog waits: a stall,
                // which the progress line should say rather than fall silent.
                _ = tokio::time::sleep_until(self.last_flush + backlog::INTERVAL), if self.backlog.active() => {
                    self.flush_acks().await?;
                }
            }
            if self.acked.len() >= ACK_FLUSH_ROWS {
                self.flush_acks().await?;
            }
        }
    }

    /// Draining: no new publishes; wait for outstanding PUBACKs, then disconnect.
    pub async fn draining(&mut self) -> Result<State, SpoolError> {
        let deadline = Instant::now() + self.timing.drain_timeout;
        let waiting = self.outstanding();
        if waiting > 0 {
            tracing::info!(
                in_flight = waiting,
                "Waiting for outstanding acknowledgements before disconnecting"
            );
        }
        let mut connected = true;
        while self.outstanding() > 0 {
            tokio::select! {
                event = self.link.poll() => match event {
                    Ok(event) => self.on_event(event),
                    Err(e) => {
                        tracing::warn!(error = %e, in_flight = self.outstanding(), "Connection lost while draining; unacknowledged readings stay queued");
                        connected = false;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(in_flight = self.outstanding(), timeout_ms = self.timing.drain_timeout.as_millis() as u64, "Gave up waiting for acknowledgements; those readings stay queued");
                    break;
                }
            }
        }
        self.flush_acks().await?;
        self.forget_in_flight();
        self.stats.connected.store(false, Ordering::Relaxed);
        if connected && self.link.disconnect().is_ok() {
            let sent = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
                loop {
                    match self.link.poll().await {
                        Ok(LinkEvent::Disconnected) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if sent.is_err() {
                tracing::warn!("DISCONNECT not confirmed in time");
            }
        }
        tracing::info!(queued = self.spool.len(), "Disconnected from the broker");
        Ok(State::Done)
    }

    fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Sent(pkid) => match self.requested.pop_front() {
                Some(id) => {
                    Stats::add(&self.stats.published, 1);
                    if let Some(old) = self.inflight.insert(pkid, id) {
                        // The client reused a packet id still awaiting PUBACK: cannot
                        // happen with a compliant client; the old reading is republished later.
                        tracing::warn!(pkid, queue_id = old.1, "Packet id reused while in flight");
                    }
                }
                None => tracing::warn!(pkid, "Publish sent that this session did not request"),
            },
            // The broker has it; whether anyone subscribes is the doctor's question.
            LinkEvent::Acked(pkid, _) => {
                if let Some(id) = self.inflight.remove(&pkid) {
                    self.answered();
                    Stats::add(&self.stats.acked, 1);
                    self.acked.push(id);
                    self.stats
                        .note(|n| n.last_puback = Some(chrono::Utc::now()));
                }
            }
            LinkEvent::Refused(pkid, reason) => {
                // Not delivered: it stays queued and goes again next session.
                if let Some((_, id)) = self.inflight.remove(&pkid) {
                    self.answered();
                    Stats::add(&self.stats.refused, 1);
                    if !self.refusal_logged {
                        self.refusal_logged = true;
                        self.stats
                            .note_error(format!("broker refused a publish: {reason}"));
                        tracing::error!(queue_id = id, %reason, refused_total = Stats::get(&self.stats.refused), "The broker refused a publish; it stays queued (check the broker's ACL allows <prefix>/<device>/#)");
                    }
                }
            }
            LinkEvent::Connected => {
                // A link reconnects only when told to; treat it as a new session anyway.
                self.forget_in_flight();
                self.new_session();
            }
            LinkEvent::Disconnected | LinkEvent::Received(_) | LinkEvent::Other => {}
        }
    }

    /// Hands queued readings to the link until the window is full.
    async fn fill_window(&mut self) -> Result<(), SpoolError> {
        while self.outstanding() < self.timing.window {
            if self.unsent.is_empty() {
                if self.caught_up {
                    return Ok(());
                }
                let (generation, after) = (self.generation, self.cursor);
                let fetched = self
                    .spool
                    .with(move |q| q.fetch(generation, after, FETCH_BATCH))
                    .await?;
                if fetched.stale {
                    // The queue changed store: start over from its oldest entry.
                    self.generation = fetched.generation;
                    self.new_session();
                    continue;
                }
                self.caught_up = fetched.entries.len() < FETCH_BATCH;
                if let Some(last) = fetched.entries.last() {
                    self.cursor = last.id;
                }
                self.unsent.extend(fetched.entries);
                if self.unsent.is_empty() {
                    return Ok(());
                }
            }
            let Some(entry) = self.unsent.pop_front() else {
                return Ok(());
            };
            let id = entry.id;
            let meta = Meta {
                seq: entry.seq,
                json: entry.kind == Kind::Event,
            };
            if let Err(e) = self.link.publish(&entry.topic, entry.payload, meta) {
                // The link is failing; its error event follows and the reading stays queued.
                tracing::debug!(error = %e, "Publish not accepted by the client");
                self.caught_up = false;
                self.cursor = id - 1;
                self.unsent.clear();
                return Ok(());
            }
            self.requested.push_back((self.generation, id));
        }
        Ok(())
    }

    /// True once the sampler is done and the queue is empty and fully acknowledged.
    async fn delivered_everything(&mut self) -> Result<bool, SpoolError> {
        if !self.signals.input_done.load(Ordering::Acquire)
            || self.outstanding() > 0
            || !self.unsent.is_empty()
        {
            return Ok(false);
        }
        self.flush_acks().await?;
        // Drops not yet announced are part of what must be delivered.
        let announced = self.spool.with(|q| q.announce_pending()).await?;
        if self.spool.is_empty() && !announced {
            return Ok(true);
        }
        // Rows beyond the cursor, or the last reading appended after the last
        // fetch, or the announcement just queued: send them now, since no
        // event may come to wake the loop.
        self.caught_up = false;
        self.fill_window().await?;
        Ok(false)
    }

    async fn flush_acks(&mut self) -> Result<(), SpoolError> {
        self.last_flush = Instant::now();
        if self.acked.is_empty() && !self.backlog.active() {
            return Ok(());
        }
        let acked = std::mem::take(&mut self.acked);
        let count = acked.len() as u64;
        // The queue's length, read in the same job as the deletes: the
        // uplink never waits for the queue's lock on its own.
        let left = self
            .spool
            .with(move |q| {
                // Acks of an older generation are dropped by the queue itself.
                let mut by_generation: Vec<(u64, Vec<i64>)> = Vec::new();
                for (generation, id) in acked {
                    match by_generation.last_mut() {
                        Some((g, ids)) if *g == generation => ids.push(id),
                        _ => by_generation.push((generation, vec![id])),
                    }
                }
                for (generation, ids) in by_generation {
                    q.ack(generation, &ids);
                }
                q.len()
            })
            .await?;
        self.backlog.acked(count);
        if let Some(note) = self.backlog.tick(left, Instant::now().into_std()) {
            log_backlog(note);
        }
        Ok(())
    }

    fn forget_in_flight(&mut self) {
        self.requested.clear();
        self.inflight.clear();
        self.unanswered_since = None;
    }

    /// When the connection is to be given up if no answer comes: `ack_timeout`
    /// after the last answer, or after publishing into an empty window.
    fn answer_deadline(&mut self) -> Option<Instant> {
        let timeout = self.timing.ack_timeout?;
        if self.outstanding() == 0 {
            self.unanswered_since = None;
            return None;
        }
        let since = *self.unanswered_since.get_or_insert_with(Instant::now);
        Some(since + timeout)
    }

    /// An answer (PUBACK or refusal) came: the broker is alive.
    fn answered(&mut self) {
        self.unanswered_since = Some(Instant::now());
    }

    fn new_session(&mut self) {
        self.unsent.clear();
        self.cursor = 0;
        self.caught_up = false;
        self.refusal_logged = false;
    }
}

/// Sleeps until `at`, or for ever without one (a `select!` branch that never fires).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One line per backlog note, with its figures as fields.
fn log_backlog(note: Note) {
    match note {
        Note::Started(queued) => tracing::info!(
            queued,
            every_s = backlog::INTERVAL.as_secs(),
            "Delivering a backlog; reporting progress at intervals"
        ),
        Note::Progress(u) => tracing::info!(
            delivered = u.done,
            left = u.left.unwrap_or(0),
            rate_per_s = u.rate_per_s.round() as u64,
            eta_s = u.eta.map(|d| d.as_secs()),
            progress = %u,
            "Delivering the backlog"
        ),
        Note::Drained(delivered, took) => tracing::info!(
            delivered,
            took_ms = took.as_millis() as u64,
            "Backlog delivered"
        ),
    }
}

#[cfg(test)]
mod tests;
