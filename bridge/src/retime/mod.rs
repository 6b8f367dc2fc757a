//! `co2-bridge retime`: moves the stored times of one device's rows by a
//! fixed shift, to repair readings stored at the wrong time (a device that
//! sends its local time without an offset to a bridge reading it in another
//! zone, or a device whose clock was off).

mod shift;

pub use shift::{Shift, ShiftError, TimeBound, TimeError, MAX_SHIFT_S};
