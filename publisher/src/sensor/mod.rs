//! CO2 sources: one blocking [`Sensor`] trait, one module per kind.
//!
//! Reads block (serial and I²C waits, a child process), so callers run them on
//! a blocking thread ([`tokio::task::spawn_blocking`]), never on the runtime.

pub mod command;
pub mod mhz19;
#[cfg(feature = "rpi")]
mod rpi;
pub mod scd4x;
pub mod simulated;

use std::time::Duration;

use crate::config::{Profile, SensorKind, SensorSettings};

/// Why a reading could not be taken; logged and counted, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The bus or port failed, or the sensor could not be opened.
    #[error("bus: {0}")]
    Bus(String),
    /// The sensor answered with a frame that failed its checks.
    #[error("bad frame: {0}")]
    Frame(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The sensor has no new measurement yet.
    #[error("no measurement ready: {0}")]
    NotReady(String),
    /// The external program failed or printed no number.
    #[error("command: {0}")]
    Command(String),
    /// This build cannot talk to the configured hardware.
    #[error("sensor kind {0} needs the `rpi` cargo feature, which this build lacks")]
    Unsupported(&'static str),
}

impl<E: std::fmt::Display> From<mhz19::Error<E>> for SensorError {
    fn from(e: mhz19::Error<E>) -> Self {
        match e {
            mhz19::Error::Port(e) => SensorError::Bus(e.to_string()),
            mhz19::Error::ShortRead { .. } => SensorError::Frame(e.to_string()),
            mhz19::Error::Frame(f) => SensorError::Frame(f.to_string()),
        }
    }
}

impl<E: std::fmt::Debug> From<scd4x::Error<E>> for SensorError {
    fn from(e: scd4x::Error<E>) -> Self {
        match e {
            scd4x::Error::Bus(_) => SensorError::Bus(e.to_string()),
            scd4x::Error::Crc { .. } => SensorError::Frame(e.to_string()),
            scd4x::Error::NotReady { .. } => SensorError::NotReady(e.to_string()),
        }
    }
}

/// A source of CO2 values in ppm. `read` may block.
pub trait Sensor: Send {
    /// Takes one measurement.
    fn read(&mut self) -> Result<f64, SensorError>;
    /// A short human description for logs and `read-once`.
    fn describe(&self) -> String;
}

/// Opens the configured sensor (unset kind: simulated). `device` seeds the simulated one.
pub fn open(settings: &SensorSettings, device: &str) -> Result<Box<dyn Sensor>, SensorError> {
    match settings.kind.unwrap_or(SensorKind::Simulated) {
        SensorKind::Simulated => Ok(Box::new(simulated::Simulated::new(
            device,
            Profile {
                base_ppm: settings.simulated.base_ppm,
                amplitude_ppm: settings.simulated.amplitude_ppm,
                noise_ppm: settings.simulated.noise_ppm,
            },
        ))),
        SensorKind::Command => Ok(Box::new(command::CommandSensor::new(
            settings.command.program.clone(),
            settings.command.args.clone(),
            Duration::from_millis(settings.command.timeout_ms),
        ))),
        #[cfg(feature = "rpi")]
        SensorKind::Mhz19 => Ok(Box::new(rpi::open_mhz19(&settings.mhz19.uart)?)),
        #[cfg(feature = "rpi")]
        SensorKind::Scd4x => Ok(Box::new(rpi::open_scd4x(
            settings.scd4x.bus,
            settings.scd4x.address,
        )?)),
        #[cfg(not(feature = "rpi"))]
        SensorKind::Mhz19 => Err(SensorError::Unsupported("mhz19")),
        #[cfg(not(feature = "rpi"))]
        SensorKind::Scd4x => Err(SensorError::Unsupported("scd4x")),
    }
}

/// Whether this machine is a Raspberry Pi (the device tree says so).
pub fn on_raspberry_pi() -> bool {
    std::fs::read_to_string("/proc/device-tree/model")
        .map(|m| m.contains("Raspberry Pi"))
        .unwrap_or(false)
}
