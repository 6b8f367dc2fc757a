//! Sensirion SCD40/SCD41 over I²C, written against embedded-hal 1.0.
//!
//! Every word the sensor sends is followed by a CRC-8 (polynomial 0x31,
//! init 0xFF); a word whose CRC does not match is refused, never guessed.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

const START_PERIODIC_MEASUREMENT: u16 = 0x21B1;
const STOP_PERIODIC_MEASUREMENT: u16 = 0x3F86;
const GET_DATA_READY_STATUS: u16 = 0xE4B8;
const READ_MEASUREMENT: u16 = 0xEC05;
/// The datasheet's execution times: reads need 1 ms, stopping 500 ms.
const READ_DELAY_MS: u32 = 1;
const STOP_DELAY_MS: u32 = 500;

/// Sensirion's CRC-8: polynomial 0x31, init 0xFF, no reflection, no final XOR.
pub fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0xFFu8;
    for byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Why an exchange with the sensor failed.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::fmt::Debug> {
    /// The bus failed (NACK, arbitration loss, no such device...).
    #[error("I2C bus: {0:?}")]
    Bus(E),
    /// A word arrived with a CRC that does not match it.
    #[error("CRC mismatch in word {word}: got {actual:#04x}, computed {expected:#04x}")]
    Crc {
        /// Index of the word in the response.
        word: usize,
        /// CRC computed over the word.
        expected: u8,
        /// CRC the sensor sent.
        actual: u8,
    },
    /// No new measurement became ready in time.
    #[error("no measurement ready after {polls} polls")]
    NotReady {
        /// How often the data-ready status was asked.
        polls: u32,
    },
}

/// One measurement of an SCD4x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// CO2 in ppm.
    pub co2_ppm: u16,
    /// Temperature in °C.
    pub temperature_c: f32,
    /// Relative humidity in %.
    pub humidity_pct: f32,
}

/// An SCD4x on an I²C bus.
pub struct Scd4x<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
}

impl<I2C: I2c, D: DelayNs> Scd4x<I2C, D> {
    /// A sensor at `address` (normally [`SCD4X_ADDRESS`](crate::config::SCD4X_ADDRESS)).
    pub fn new(i2c: I2C, delay: D, address: u8) -> Self {
        Self {
            i2c,
            delay,
            address,
        }
    }

    /// Gives the bus and delay back (tests check the script ran to its end).
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }

    /// Stops periodic measurement. The sensor ignores most commands while
    /// measuring, and it may still be measuring from before a restart.
    pub fn stop_periodic_measurement(&mut self) -> Result<(), Error<I2C::Error>> {
        self.command(STOP_PERIODIC_MEASUREMENT)?;
        self.delay.delay_ms(STOP_DELAY_MS);
        Ok(())
    }

    /// Starts a measurement every 5 seconds.
    pub fn start_periodic_measurement(&mut self) -> Result<(), Error<I2C::Error>> {
        self.command(START_PERIODIC_MEASUREMENT)
    }

    /// Whether a new measurement is waiting to be read.
    pub fn data_ready(&mut self) -> Result<bool, Error<I2C::Error>> {
        let [status] = self.read_words::<1, 3>(GET_DATA_READY_STATUS)?;
        // The low 11 bits are all zero while no data is ready.
        Ok(status & 0x07FF != 0)
    }

    /// Reads the latest measurement (call after [`Self::data_ready`] said so).
    pub fn read_measurement(&mut self) -> Result<Measurement, Error<I2C::Error>> {
        let [co2, t, rh] = self.read_words::<3, 9>(READ_MEASUREMENT)?;
        Ok(Measurement {
            co2_ppm: co2,
            temperature_c: -45.0 + 175.0 * f32::from(t) / 65535.0,
            humidity_pct: 100.0 * f32::from(rh) / 65535.0,
        })
    }

    /// Waits for the next measurement, asking every `poll_ms` up to `max_polls` times.
    pub fn wait_and_read(
        &mut self,
        poll_ms: u32,
        max_polls: u32,
    ) -> Result<Measurement, Error<I2C::Error>> {
        for _ in 0..max_polls {
            if self.data_ready()? {
                return self.read_measurement();
            }
            self.delay.delay_ms(poll_ms);
        }
        Err(Error::NotReady { polls: max_polls })
    }

    fn command(&mut self, command: u16) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address, &command.to_be_bytes())
            .map_err(Error::Bus)
    }

    /// Sends `command`, waits its execution time, reads `N` CRC-checked words
    /// (`B` = 3 * N bytes: const generics cannot compute it yet).
    fn read_words<const N: usize, const B: usize>(
        &mut self,
        command: u16,
    ) -> Result<[u16; N], Error<I2C::Error>> {
        self.command(command)?;
        self.delay.delay_ms(READ_DELAY_MS);
        let mut buf = [0u8; B];
        self.i2c.read(self.address, &mut buf).map_err(Error::Bus)?;
        let mut words = [0u16; N];
        for (i, (chunk, word)) in buf.chunks_exact(3).zip(words.iter_mut()).enumerate() {
            let expected = crc8(&chunk[..2]);
            if chunk[2] != expected {
                return Err(Error::Crc {
                    word: i,
                    expected,
                    actual: chunk[2],
                });
            }
            *word = u16::from_be_bytes([chunk[0], chunk[1]]);
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    const A: u8 = crate::config::SCD4X_ADDRESS;

    /// A read-measurement answer: 0x01F4 = 500 ppm, 0x6667 ≈ 25 °C, 0x5EB9 ≈ 37 %RH.
    fn measurement_frame() -> Vec<u8> {
        let mut frame = Vec::new();
        for word in [0x01F4u16, 0x6667, 0x5EB9] {
            let b = word.to_be_bytes();
            frame.extend_from_slice(&b);
            frame.push(crc8(&b));
        }
        frame
    }

    fn finish(sensor: Scd4x<Mock, NoopDelay>) {
        let (mut i2c, _) = sensor.release();
        i2c.done();
    }

    #[test]
    fn crc_matches_the_datasheet_example() {
        assert_eq!(crc8(&[0xBE, 0xEF]), 0x92);
        // The read_measurement example of the datasheet (500 ppm, 25 °C, 37 %RH).
        assert_eq!(
            measurement_frame(),
            [0x01, 0xF4, 0x33, 0x66, 0x67, 0xA2, 0x5E, 0xB9, 0x3C]
        );
    }

    #[test]
    fn start_poll_and_read() {
        let script = [
            T::write(A, vec![0x3F, 0x86]),
            T::write(A, vec![0x21, 0xB1]),
            // Not ready yet: low 11 bits zero (0x8000 has only the high bit).
            T::write(A, vec![0xE4, 0xB8]),
            T::read(A, vec![0x80, 0x00, crc8(&[0x80, 0x00])]),
            T::write(A, vec![0xE4, 0xB8]),
            T::read(A, vec![0x80, 0x06, crc8(&[0x80, 0x06])]),
            T::write(A, vec![0xEC, 0x05]),
            T::read(A, measurement_frame()),
        ];
        let mut s = Scd4x::new(Mock::new(&script), NoopDelay::new(), A);
        s.stop_periodic_measurement().unwrap();
        s.start_periodic_measurement().unwrap();
        let m = s.wait_and_read(100, 5).unwrap();
        assert_eq!(m.co2_ppm, 500);
        assert!((m.temperature_c - 25.0).abs() < 0.01, "{m:?}");
        assert!((m.humidity_pct - 37.0).abs() < 0.01, "{m:?}");
        finish(s);
    }

    #[test]
    fn corrupted_crc_is_refused() {
        let mut frame = measurement_frame();
        frame[4] ^= 0x10; // a flipped bit in the temperature word
        let script = [T::write(A, vec![0xEC, 0x05]), T::read(A, frame)];
        let mut s = Scd4x::new(Mock::new(&script), NoopDelay::new(), A);
        let err = s.read_measurement().unwrap_err();
        assert!(matches!(err, Error::Crc { word: 1, .. }), "{err}");
        finish(s);
    }

    #[test]
    fn not_ready_gives_up_after_max_polls() {
        let not_ready = vec![0x00, 0x00, crc8(&[0x00, 0x00])];
        let script = [
            T::write(A, vec![0xE4, 0xB8]),
            T::read(A, not_ready.clone()),
            T::write(A, vec![0xE4, 0xB8]),
            T::read(A, not_ready),
        ];
        let mut s = Scd4x::new(Mock::new(&script), NoopDelay::new(), A);
        let err = s.wait_and_read(100, 2).unwrap_err();
        assert!(matches!(err, Error::NotReady { polls: 2 }), "{err}");
        finish(s);
    }

    #[test]
    fn bus_errors_pass_through() {
        let script = [T::write(A, vec![0x21, 0xB1]).with_error(ErrorKind::Other)];
        let mut s = Scd4x::new(Mock::new(&script), NoopDelay::new(), A);
        let err = s.start_periodic_measurement().unwrap_err();
        assert!(matches!(err, Error::Bus(ErrorKind::Other)), "{err}");
        finish(s);
    }
}
