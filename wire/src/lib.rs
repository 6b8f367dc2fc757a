//! The `datetime|emissions` payload shared by the CO2 publisher and the bridge.
//!
//! This crate does no I/O: it turns bytes into a validated [`Reading`] (or a
//! [`Rejection`] with a reason a metric can carry) and a [`Reading`] back into
//! its canonical bytes. Both programs use it, so what one writes the other reads.
//! It also holds the little both need to reach a server that may be one node
//! of a cluster: the endpoint list ([`endpoint`]) and the retry schedule
//! ([`backoff`]), so the two programs fail over alike, and what their
//! doctors share ([`doctor`]), so both diagnose the path in the same words.

pub mod backoff;
mod clock_offset;
mod datetime;
pub mod doctor;
pub mod endpoint;
mod event;
mod progress;
mod reading;
mod sequence;
mod topic;
mod unix_time;
mod zone;

pub use clock_offset::{arrival_words, explain as explain_offset, ClockOffset, ZONE_TOLERANCE_S};
pub use datetime::WallTime;
pub use event::{
    DeviceEvent, DropCause, EventError, EventId, EventKind, EVENTS_TOPIC_LEVEL, EVENT_VERSION,
    MAX_EVENT_BYTES, MAX_RANGES,
};
pub use progress::{Progress, Update as ProgressUpdate};
pub use reading::{Decoder, Limits, Reading, Rejection, MAX_TIME_MILLIS, MIN_TIME_MILLIS};
pub use sequence::{ranges_of, Epoch, Seq, SeqError, SeqRange, MAX_SEQ_LEN, SEQ_PROPERTY};
pub use topic::{DeviceId, DeviceIdError, TopicFilter, TopicFilterError, TopicMatch};
pub use unix_time::UnixUnit;
pub use zone::{Localize, UtcOffset, Zone, ZoneError};
