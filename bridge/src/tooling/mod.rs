//! Entry points for the project's tools, not for the bridge's own run: the
//! instruction-count benchmark drives the decode → batch → row-building
//! path without a broker or database ([`offline`]); the HTTP fuzz target
//! drives the listeners without sockets ([`exchange`]). They sit above the
//! app, which they build on, and nothing of the bridge imports them.

pub mod exchange;
pub mod offline;
