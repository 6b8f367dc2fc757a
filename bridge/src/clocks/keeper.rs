//! The task that keeps learned offsets on disk and hands the devices'
//! clocks to whoever shows them (the metrics), every few seconds.

use std::sync::Arc;
use std::time::Duration;

use co2_wire::DeviceId;
use tokio_util::sync::CancellationToken;

use super::{ClockView, DeviceClocks};

/// Every `every` until `stop`: hands every device's view to `publish` and
/// saves learned offsets that changed; saves once more at the end. A save
/// that fails is logged and tried again next time: it never stops the bridge.
pub async fn keep(
    clocks: Arc<DeviceClocks>,
    every: Duration,
    publish: impl Fn(&[(DeviceId, ClockView)]) + Send,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        publish(&clocks.views());
        save(&clocks);
    }
    save(&clocks);
}

/// The file is small and changes only when an offset is learned, so it is
/// written in place on the runtime rather than handed to a blocking thread.
fn save(clocks: &DeviceClocks) {
    if let Err(e) = clocks.save_if_changed() {
        tracing::warn!(
            error = %e,
            "Cannot save the learned time zones; trying again shortly (they are learned again after a restart)"
        );
    }
}
