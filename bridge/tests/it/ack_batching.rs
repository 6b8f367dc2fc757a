//! The rumqttc patch (vendor/README.md): acks queued while the event loop
//! was busy go out in one write. Counted as the write system calls of the
//! test's thread (`syscw` in /proc/thread-self/io: rumqttc flushes with
//! `writev`; other tests in this binary run on other threads) while a
//! single-threaded runtime turns 200 queued PUBACKs into packets for a real
//! Mosquitto; with the batch off (upstream's behaviour) it is one each.

use std::time::Duration;

use co2_testkit::{unique, Broker};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;

const MESSAGES: usize = 200;

fn write_syscalls() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

fn options(broker: &Broker, client_id: &str, batch: usize) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", broker.port());
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(600))
        .set_manual_acks(true)
        .set_receive_maximum(Some(1000))
        .set_request_channel_capacity(1000)
        .set_max_request_batch(batch);
    o
}

async fn poll_until(eventloop: &mut EventLoop, mut done: impl FnMut(&Event) -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = eventloop.poll().await.unwrap();
            if done(&event) {
                return;
            }
        }
    })
    .await
    .unwrap();
}

/// Write calls made while `MESSAGES` acks, queued all at once, are sent.
async fn writes_for_queued_acks(batch: usize) -> u64 {
    let broker = Broker::start("max_inflight_messages 1000").await.unwrap();
    let topic = unique("acks");
    let id = unique("acks-sub");

    // A persistent session with the subscription, then away.
    let (client, mut eventloop) = AsyncClient::new(options(&broker, &id, batch), 1000);
    client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut eventloop, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await;
    client.disconnect().await.unwrap();
    poll_until(&mut eventloop, |e| {
        matches!(e, Event::Outgoing(Outgoing::Disconnect))
    })
    .await;
    drop((client, eventloop));

    // The broker queues the messages for the session.
    let (publisher, mut pub_loop) = AsyncClient::new(
        MqttOptions::new(unique("acks-pub"), "127.0.0.1", broker.port()),
        1000,
    );
    for i in 0..MESSAGES {
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    let mut acked = 0;
    poll_until(&mut pub_loop, |e| {
        acked += usize::from(matches!(e, Event::Incoming(Packet::PubAck(_))));
        acked == MESSAGES
    })
    .await;
    drop((publisher, pub_loop));

    // Back: all of them arrive; every ack is queued before any is sent.
    let (client, mut eventloop) = AsyncClient::new(options(&broker, &id, batch), 1000);
    let mut received = Vec::new();
    poll_until(&mut eventloop, |e| {
        if let Event::Incoming(Packet::Publish(p)) = e {
            received.push(p.clone());
        }
        received.len() == MESSAGES
    })
    .await;
    for p in &received {
        client.ack(p).await.unwrap();
    }
    let before = write_syscalls();
    let mut sent = 0;
    poll_until(&mut eventloop, |e| {
        sent += usize::from(matches!(e, Event::Outgoing(Outgoing::PubAck(_))));
        sent == MESSAGES
    })
    .await;
    write_syscalls() - before
}

#[tokio::test(flavor = "current_thread")]
async fn queued_pubacks_share_one_write_and_upstream_writes_each() {
    let batched = writes_for_queued_acks(256).await;
    let upstream = writes_for_queued_acks(0).await;
    assert!(
        upstream >= MESSAGES as u64,
        "without the batch each ack should be its own write: {upstream} writes for {MESSAGES} acks"
    );
    assert!(
        batched <= 5,
        "{batched} writes for {MESSAGES} queued acks with the batch (upstream: {upstream})"
    );
    eprintln!("{MESSAGES} queued PUBACKs: {batched} writes batched, {upstream} upstream");
}
