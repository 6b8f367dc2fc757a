//! LoRaWAN frame counters into `lorawan_frames`, in the transaction of the
//! readings they came with, for the completeness scan (which reads them as
//! it reads the CO2 readings' numbers: a session is an epoch, the counter
//! the number).
//!
//! An uplink's epoch is that of the frame before it in time (the network
//! server's receive time) when that frame has the same DevAddr and a lower or
//! equal counter; otherwise the uplink opens an epoch: a new DevAddr is a new
//! session (an OTAA join), a lower counter under the same one a reset (an
//! ABP device restarting, a rejoin that kept the address). The epoch is named
//! from what opened it: its DevAddr and the receive time of its first frame,
//! both in the payload, so a redelivery finds the same epoch. A frame already
//! stored (same device and time) keeps the epoch it was given.

use chrono::NaiveDateTime;
use sqlx::{MySql, Transaction};

use super::super::Item;
use crate::model::Frame;

/// The frames of `items`, each with its device and time, in arrival order.
pub fn of<'a, 'i: 'a>(items: &[&'a Item<'i>]) -> Vec<(&'a str, NaiveDateTime, Frame)> {
    items
        .iter()
        .filter_map(|item| {
            let m = item.message;
            m.frame.map(|frame| (m.device.as_str(), m.time, frame))
        })
        .collect()
}

/// The epoch `frame` belongs to, given the frame stored before it in time:
/// that frame's epoch when the session goes on, else a new one named from
/// this frame's DevAddr and time.
pub fn epoch_of(previous: Option<(&str, u32, u32)>, frame: Frame, time: NaiveDateTime) -> String {
    match previous {
        Some((epoch, dev_addr, f_cnt)) if dev_addr == frame.dev_addr && f_cnt <= frame.f_cnt => {
            epoch.to_owned()
        }
        _ => {
            // Seconds since 1970 fit 32 bits until 2106; later ones wrap,
            // which only renames epochs, never merges two of one device's.
            let seconds =
                u32::try_from(time.and_utc().timestamp().rem_euclid(1 << 32)).unwrap_or_default();
            format!("{:08x}{seconds:08x}", frame.dev_addr)
        }
    }
}

/// Stores one frame of `device` received at `time`, unless it is stored already.
pub async fn record(
    tx: &mut Transaction<'_, MySql>,
    device: &str,
    time: NaiveDateTime,
    frame: Frame,
) -> Result<(), sqlx::Error> {
    let stored: Option<u64> =
        sqlx::query_scalar("SELECT id FROM lorawan_frames WHERE device = ? AND `time` = ?")
            .bind(device)
            .bind(time)
            .fetch_optional(&mut **tx)
            .await?;
    if stored.is_some() {
        sqlx::query("UPDATE lorawan_frames SET redeliveries = redeliveries + 1 WHERE device = ? AND `time` = ?")
            .bind(device)
            .bind(time)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    let previous: Option<(String, u32, u64)> = sqlx::query_as(
        "SELECT CAST(epoch AS CHAR), dev_addr, f_cnt FROM lorawan_frames \
         WHERE device = ? AND `time` < ? ORDER BY `time` DESC LIMIT 1",
    )
    .bind(device)
    .bind(time)
    .fetch_optional(&mut **tx)
    .await?;
    let previous = previous.as_ref().map(|(epoch, dev_addr, f_cnt)| {
        (
            epoch.as_str(),
            *dev_addr,
            u32::try_from(*f_cnt).unwrap_or(u32::MAX),
        )
    });
    let epoch = epoch_of(previous, frame, time);
    sqlx::query(
        "INSERT INTO lorawan_frames (device, `time`, dev_addr, epoch, f_cnt) VALUES (?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE redeliveries = redeliveries + 1",
    )
    .bind(device)
    .bind(time)
    .bind(frame.dev_addr)
    .bind(&epoch)
    .bind(frame.f_cnt)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(seconds, 0)
            .unwrap()
            .naive_utc()
    }

    fn frame(dev_addr: u32, f_cnt: u32) -> Frame {
        Frame { dev_addr, f_cnt }
    }

    #[test]
    fn a_session_goes_on_while_its_address_stays_and_its_counter_does_not_fall() {
        let first = epoch_of(None, frame(0x00BC_B929, 1), at(1_581_520_545));
        assert_eq!(first, "00bcb9295e4416a1");
        let next = epoch_of(
            Some((&first, 0x00BC_B929, 1)),
            frame(0x00BC_B929, 5),
            at(1_581_520_600),
        );
        assert_eq!(next, first);
        // The same counter again is the same session (a duplicate, not a reset).
        assert_eq!(
            epoch_of(
                Some((&first, 0x00BC_B929, 5)),
                frame(0x00BC_B929, 5),
                at(1_581_520_700)
            ),
            first
        );
    }

    #[test]
    fn a_lower_counter_or_another_address_opens_an_epoch_named_from_the_frame() {
        let first = epoch_of(None, frame(0x0018_9440, 40), at(1_658_136_855));
        let reset = epoch_of(
            Some((&first, 0x0018_9440, 40)),
            frame(0x0018_9440, 0),
            at(1_658_136_955),
        );
        assert_ne!(reset, first);
        assert_eq!(
            reset,
            epoch_of(None, frame(0x0018_9440, 0), at(1_658_136_955))
        );
        let joined = epoch_of(
            Some((&first, 0x0018_9440, 40)),
            frame(0x0149_7ECC, 41),
            at(1_658_136_955),
        );
        assert!(joined.starts_with("01497ecc"));
        assert_eq!(joined.len(), 16);
    }
}
