//! The shared vocabulary every layer speaks: why a message was refused
//! ([`Reason`]), what a delivery becomes ([`Record`], [`DeadLetter`]), a
//! decoded [`Message`] and how it maps to rows ([`Layout`]), and where a
//! delivery came from ([`Origin`]). It imports nothing else of the bridge.

mod layout;
mod message;
mod origin;
mod reason;
mod record;

pub use layout::{Column, Layout};
pub use message::{Field, Frame, Message, Value};
pub use origin::{KafkaOrigin, Origin};
pub use reason::Reason;
pub use record::{DeadLetter, Record};

/// A route's position in the configured routes.
pub type RouteId = usize;
