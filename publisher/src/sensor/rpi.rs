//! The Pi's buses (rppal) plugged into the hardware-free drivers.

use std::path::Path;
use std::time::Duration;

use embedded_hal::delay::DelayNs;
use rppal::i2c::I2c;
use rppal::uart::{Parity, Queue, Uart};

use super::mhz19::{BytePort, Mhz19};
use super::scd4x::Scd4x;
use super::{Sensor, SensorError};

/// A UART as the MH-Z19 driver's [`BytePort`]: reads return 0 after the timeout.
pub struct RppalUart(Uart);

impl BytePort for RppalUart {
    type Error = rppal::uart::Error;

    fn discard_input(&mut self) -> Result<(), Self::Error> {
        self.0.flush(Queue::Input)
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), Self::Error> {
        while !bytes.is_empty() {
            let n = self.0.write(bytes)?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.read(buf)
    }
}

/// Sleeps the thread: rppal's own `Delay` spin-waits the tail of each delay,
/// which these millisecond waits do not need.
pub struct ThreadDelay;

impl DelayNs for ThreadDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// An MH-Z19B on the Pi's UART.
pub struct Mhz19Sensor {
    driver: Mhz19<RppalUart>,
    path: String,
}

/// Opens `uart` (e.g. `/dev/serial0`) at 9600 8N1 with the driver's read timeout.
pub fn open_mhz19(uart: &Path) -> Result<Mhz19Sensor, SensorError> {
    let bus = |e: rppal::uart::Error| SensorError::Bus(format!("{}: {e}", uart.display()));
    let mut port = Uart::with_path(uart, 9600, Parity::None, 8, 1).map_err(bus)?;
    // min_length 0 + timeout: read returns what came within the timeout, or 0.
    port.set_read_mode(0, Mhz19::<RppalUart>::READ_TIMEOUT)
        .map_err(bus)?;
    port.set_write_mode(true).map_err(bus)?;
    Ok(Mhz19Sensor {
        driver: Mhz19::new(RppalUart(port)),
        path: uart.display().to_string(),
    })
}

impl Sensor for Mhz19Sensor {
    fn read(&mut self) -> Result<f64, SensorError> {
        Ok(f64::from(self.driver.read_co2()?))
    }

    fn describe(&self) -> String {
        format!("MH-Z19B on {}", self.path)
    }
}

/// An SCD4x on one of the Pi's I²C buses.
pub struct Scd4xSensor {
    driver: Scd4x<I2c, ThreadDelay>,
    bus: u8,
    address: u8,
    /// Whether periodic measurement runs; cleared on any error so the next
    /// read restarts it (the sensor may have lost power).
    started: bool,
}

/// Opens I²C bus `bus` (1 on a Pi's header) for a sensor at `address`.
pub fn open_scd4x(bus: u8, address: u8) -> Result<Scd4xSensor, SensorError> {
    let i2c = I2c::with_bus(bus).map_err(|e| SensorError::Bus(format!("i2c-{bus}: {e}")))?;
    Ok(Scd4xSensor {
        driver: Scd4x::new(i2c, ThreadDelay, address),
        bus,
        address,
        started: false,
    })
}

impl Scd4xSensor {
    fn try_read(&mut self) -> Result<f64, SensorError> {
        if !self.started {
            // Stop first: start is refused while a previous run still measures.
            self.driver.stop_periodic_measurement()?;
            self.driver.start_periodic_measurement()?;
            self.started = true;
        }
        // A measurement comes every 5 s; ask every 100 ms for up to 6 s.
        let m = self.driver.wait_and_read(100, 60)?;
        Ok(f64::from(m.co2_ppm))
    }
}

impl Sensor for Scd4xSensor {
    fn read(&mut self) -> Result<f64, SensorError> {
        let result = self.try_read();
        if result.is_err() {
            self.started = false;
        }
        result
    }

    fn describe(&self) -> String {
        format!("SCD4x on i2c-{} at {:#04x}", self.bus, self.address)
    }
}
