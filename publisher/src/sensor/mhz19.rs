//! Winsen MH-Z19B over UART: the 9-byte "read CO2" exchange.
//!
//! The frame codec is pure (no I/O) and tested with recorded bytes; the driver
//! talks to any [`BytePort`], so tests script the serial line and the Pi uses
//! rppal's UART (9600 8N1).

use std::time::Duration;

/// Length of every command and response frame.
pub const FRAME_LEN: usize = 9;

/// "Read CO2 concentration" (command 0x86), checksum included.
pub const READ_CO2: [u8; FRAME_LEN] = [0xFF, 0x01, 0x86, 0x00, 0x00, 0x00, 0x00, 0x00, 0x79];

/// Why a response frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first byte is not 0xFF: the stream is out of step.
    #[error("response does not start with 0xFF (got {0:#04x})")]
    InvalidStartByte(u8),
    /// The response answers another command.
    #[error("response is for command {0:#04x}, not 0x86")]
    UnexpectedCommand(u8),
    /// The checksum byte does not match the frame.
    #[error("checksum mismatch: frame says {actual:#04x}, computed {expected:#04x}")]
    InvalidChecksum {
        /// The checksum computed over bytes 1..8.
        expected: u8,
        /// The checksum the frame carries.
        actual: u8,
    },
}

/// The datasheet checksum: two's complement of the sum of bytes 1 to 7.
pub fn checksum(frame: &[u8; FRAME_LEN]) -> u8 {
    let sum = frame[1..8].iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    (!sum).wrapping_add(1)
}

/// Decodes a response to [`READ_CO2`] into ppm.
pub fn parse_read_co2(frame: &[u8; FRAME_LEN]) -> Result<u16, FrameError> {
    if frame[0] != 0xFF {
        return Err(FrameError::InvalidStartByte(frame[0]));
    }
    if frame[1] != 0x86 {
        return Err(FrameError::UnexpectedCommand(frame[1]));
    }
    let expected = checksum(frame);
    if frame[8] != expected {
        return Err(FrameError::InvalidChecksum {
            expected,
            actual: frame[8],
        });
    }
    Ok(u16::from_be_bytes([frame[2], frame[3]]))
}

/// A serial line, as little of it as the driver needs.
pub trait BytePort {
    /// The port's error.
    type Error: std::fmt::Display;
    /// Drops whatever is waiting in the receive buffer (a late answer to an
    /// earlier, timed-out request would otherwise be taken for this one's).
    fn discard_input(&mut self) -> Result<(), Self::Error>;
    /// Writes every byte.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// Reads what arrives within the port's timeout; `Ok(0)` means it timed out.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

/// Why one measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::fmt::Display> {
    /// The port failed.
    #[error("serial port: {0}")]
    Port(E),
    /// Fewer than 9 bytes arrived before the port timed out.
    #[error("short read: {got} of 9 bytes")]
    ShortRead {
        /// Bytes received.
        got: usize,
    },
    /// A full frame arrived but is not valid.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// An MH-Z19B on a [`BytePort`].
pub struct Mhz19<P> {
    port: P,
}

impl<P: BytePort> Mhz19<P> {
    /// Serial timeout rppal is configured with; the sensor answers in ~10 ms.
    pub const READ_TIMEOUT: Duration = Duration::from_millis(500);

    /// Wraps `port`.
    pub fn new(port: P) -> Self {
        Self { port }
    }

    /// Gives the port back (tests check the script ran to its end).
    pub fn release(self) -> P {
        self.port
    }

    /// Sends the read command and decodes the answer in ppm.
    pub fn read_co2(&mut self) -> Result<u16, Error<P::Error>> {
        self.port.discard_input().map_err(Error::Port)?;
        self.port.write_all(&READ_CO2).map_err(Error::Port)?;
        let mut frame = [0u8; FRAME_LEN];
        let mut got = 0;
        while got < FRAME_LEN {
            let n = self.port.read(&mut frame[got..]).map_err(Error::Port)?;
            if n == 0 {
                return Err(Error::ShortRead { got });
            }
            got += n;
        }
        Ok(parse_read_co2(&frame)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Recorded from the datasheet: 0x0260 = 608 ppm.
    const DATASHEET_608: [u8; 9] = [0xFF, 0x86, 0x02, 0x60, 0x47, 0x00, 0x00, 0x00, 0xD1];
    /// 0x01C5 = 453 ppm, with the temperature byte (0x3F) real sensors fill in.
    const FRAME_453: [u8; 9] = [0xFF, 0x86, 0x01, 0xC5, 0x3F, 0x00, 0x00, 0x00, 0x75];

    /// A serial line that answers with scripted chunks (an empty chunk is a timeout).
    #[derive(Default)]
    struct ScriptedPort {
        chunks: VecDeque<Vec<u8>>,
        written: Vec<u8>,
        discards: usize,
        fail_write: bool,
    }

    impl BytePort for ScriptedPort {
        type Error = String;
        fn discard_input(&mut self) -> Result<(), String> {
            self.discards += 1;
            Ok(())
        }
        fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
            if self.fail_write {
                return Err("EIO".into());
            }
            self.written.extend_from_slice(bytes);
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
            let Some(mut chunk) = self.chunks.pop_front() else {
                return Ok(0);
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.chunks.push_front(chunk.split_off(n));
            }
            Ok(n)
        }
    }

    fn sensor(chunks: &[&[u8]]) -> Mhz19<ScriptedPort> {
        Mhz19::new(ScriptedPort {
            chunks: chunks.iter().map(|c| c.to_vec()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn command_checksum_matches_the_datasheet() {
        assert_eq!(checksum(&READ_CO2), 0x79);
    }

    #[test]
    fn recorded_frames_decode() {
        assert_eq!(parse_read_co2(&DATASHEET_608), Ok(608));
        assert_eq!(parse_read_co2(&FRAME_453), Ok(453));
    }

    #[test]
    fn reads_a_frame_split_over_several_reads() {
        let mut s = sensor(&[&DATASHEET_608[..4], &DATASHEET_608[4..]]);
        assert_eq!(s.read_co2().unwrap(), 608);
        let port = s.release();
        assert_eq!(port.written, READ_CO2);
        assert_eq!(port.discards, 1);
        assert!(port.chunks.is_empty());
    }

    #[test]
    fn corrupted_checksum_is_refused() {
        let mut bad = DATASHEET_608;
        bad[3] ^= 0x01; // one flipped bit in the value
        let err = sensor(&[&bad]).read_co2().unwrap_err();
        assert!(matches!(
            err,
            Error::Frame(FrameError::InvalidChecksum {
                expected: 0xD0,
                actual: 0xD1
            })
        ));
    }

    #[test]
    fn wrong_start_byte_and_command_are_refused() {
        let mut shifted = [0u8; 9];
        shifted[1..].copy_from_slice(&DATASHEET_608[..8]);
        assert!(matches!(
            sensor(&[&shifted]).read_co2().unwrap_err(),
            Error::Frame(FrameError::InvalidStartByte(0x00))
        ));
        let mut other = DATASHEET_608;
        other[1] = 0x99;
        assert_eq!(
            parse_read_co2(&other),
            Err(FrameError::UnexpectedCommand(0x99))
        );
    }

    #[test]
    fn short_read_and_timeout_are_reported() {
        let err = sensor(&[&DATASHEET_608[..5]]).read_co2().unwrap_err();
        assert!(matches!(err, Error::ShortRead { got: 5 }), "{err}");
        let err = sensor(&[]).read_co2().unwrap_err();
        assert!(matches!(err, Error::ShortRead { got: 0 }), "{err}");
    }

    #[test]
    fn port_errors_pass_through() {
        let mut s = Mhz19::new(ScriptedPort {
            fail_write: true,
            ..Default::default()
        });
        assert_eq!(s.read_co2().unwrap_err().to_string(), "serial port: EIO");
    }
}
