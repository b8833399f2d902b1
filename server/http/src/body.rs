//! Streaming, zero-copy request body decoding for `Content-Length` and
//! `chunked` framing (RFC 9112 §6.2 and §7.1).

use crate::error::BodyError;
use crate::framing::BodyFraming;

/// Most bytes of chunk extensions (everything between a chunk size and its
/// CRLF) accepted over a whole body. Extensions are ignored, so this only
/// bounds the work a peer can make us do without sending payload.
pub const EXTENSIONS_BYTES_MAX: usize = 16 * 1024;
/// Most bytes accepted in the trailer section of a chunked body (trailer
/// fields are skipped, never stored).
pub const TRAILERS_BYTES_MAX: usize = 16 * 1024;
/// Most hex digits accepted in a chunk size (16 digits always fit a `u64`).
pub const CHUNK_SIZE_DIGITS_MAX: u8 = 16;

/// The result of one [`BodyDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// How many bytes of the input were consumed (framing and payload). The
    /// next call must start at `input[consumed..]`.
    pub consumed: usize,
    /// Payload bytes found: one contiguous sub-slice of the input (possibly
    /// empty), located within `input[..consumed]`.
    pub data: &'a [u8],
    /// Whether the whole body has now been consumed (for chunked bodies:
    /// including the last chunk and the trailer section).
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length body with this many bytes still to come (> 0).
    Length { remaining: u64 },
    /// Reading the hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// Whitespace after the chunk size.
    SizeWs { value: u64 },
    /// Inside chunk extensions (ignored) up to the CR.
    Ext { value: u64 },
    /// CR of the chunk-size line seen; LF expected.
    SizeLf { value: u64 },
    /// Chunk payload with this many bytes still to come (> 0).
    Data { remaining: u64 },
    /// CR expected after chunk data.
    DataCr,
    /// LF expected after chunk data.
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// CR seen in the trailer section; LF expected. `last` when it ends the
    /// final empty line.
    TrailerLf { last: bool },
    /// The whole body has been consumed.
    Done,
}

/// Streaming decoder for one request body.
///
/// Feed it the bytes after the head, in any pieces: the payload it returns
/// is the same however the input is split. It never reads past the end of
/// the body, so bytes of a pipelined next request are left unconsumed.
/// Chunk extensions are ignored and trailer fields skipped (both bounded,
/// see [`EXTENSIONS_BYTES_MAX`] and [`TRAILERS_BYTES_MAX`]); bare LF is
/// rejected in all chunk framing.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    ext_bytes: usize,
    trailer_bytes: usize,
}

impl BodyDecoder {
    /// A decoder for a body with the given framing. [`BodyFraming::None`] and
    /// `Length(0)` give a decoder that is already done.
    pub fn new(framing: &BodyFraming) -> Self {
        let state = match *framing {
            BodyFraming::None | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length { remaining: n },
            BodyFraming::Chunked => State::Size {
                value: 0,
                digits: 0,
            },
        };
        BodyDecoder {
            state,
            ext_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Decodes as much of `input` as possible.
    ///
    /// Returns the number of input bytes consumed and the payload found, as
    /// ONE contiguous sub-slice of `input` (zero copy); call again with the
    /// rest. A call consumes leading framing, at most one run of payload, and
    /// the framing after it up to the next payload byte, so `consumed` is 0
    /// only when `input` is empty or the body is already done. `done` is true
    /// once the whole body (including final chunk and trailers) has been
    /// consumed. After an error the decoder must not be used again.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, BodyError> {
        let mut pos = 0usize;
        let mut data: &'a [u8] = &[];
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            match self.state {
                State::Done => break,
                State::Length { remaining } | State::Data { remaining } => {
                    if !data.is_empty() || rest.is_empty() {
                        break;
                    }
                    let n = remaining.min(rest.len() as u64);
                    data = rest.get(..n as usize).unwrap_or(&[]);
                    pos += data.len();
                    let left = remaining - n;
                    self.state = match (self.state, left) {
                        (State::Length { .. }, 0) => State::Done,
                        (State::Length { .. }, _) => State::Length { remaining: left },
                        (_, 0) => State::DataCr,
                        _ => State::Data { remaining: left },
                    };
                }
                _ => {
                    let Some(&b) = rest.first() else { break };
                    pos += 1;
                    self.step(b)?;
                }
            }
        }
        Ok(Decoded {
            consumed: pos,
            data,
            done: self.is_done(),
        })
    }

    /// Advances a framing state by one byte.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        self.state = match self.state {
            State::Size { value, digits } => match hex_value(b) {
                Some(_) if digits >= CHUNK_SIZE_DIGITS_MAX => {
                    return Err(BodyError::ChunkSizeTooLarge)
                }
                Some(d) => State::Size {
                    value: (value << 4) | u64::from(d),
                    digits: digits + 1,
                },
                None if digits == 0 => return Err(BodyError::InvalidChunkSize),
                None => match b {
                    b'\r' => State::SizeLf { value },
                    b';' => self.ext(value)?,
                    b' ' | b'\t' => State::SizeWs { value },
                    _ => return Err(BodyError::InvalidChunkSize),
                },
            },
            State::SizeWs { value } => match b {
                b'\r' => State::SizeLf { value },
                b';' => self.ext(value)?,
                b' ' | b'\t' => State::SizeWs { value },
                _ => return Err(BodyError::InvalidChunkSize),
            },
            State::Ext { value } => match b {
                b'\r' => State::SizeLf { value },
                b'\n' => return Err(BodyError::InvalidChunkSize),
                _ => self.ext(value)?,
            },
            State::SizeLf { value } => match (b, value) {
                (b'\n', 0) => State::TrailerStart,
                (b'\n', n) => State::Data { remaining: n },
                _ => return Err(BodyError::InvalidChunkSize),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return Err(BodyError::InvalidChunkTerminator),
            State::TrailerStart => match b {
                b'\r' => State::TrailerLf { last: true },
                b'\n' => return Err(BodyError::InvalidTrailers),
                _ => self.trailer(State::TrailerLine)?,
            },
            State::TrailerLine => match b {
                b'\r' => self.trailer(State::TrailerLf { last: false })?,
                b'\n' => return Err(BodyError::InvalidTrailers),
                _ => self.trailer(State::TrailerLine)?,
            },
            State::TrailerLf { last } => match (b, last) {
                (b'\n', true) => State::Done,
                (b'\n', false) => self.trailer(State::TrailerStart)?,
                _ => return Err(BodyError::InvalidTrailers),
            },
            // Payload states and Done never reach `step`; keep them unchanged.
            s @ (State::Length { .. } | State::Data { .. } | State::Done) => s,
        };
        Ok(())
    }

    /// Counts one extension byte against the budget.
    fn ext(&mut self, value: u64) -> Result<State, BodyError> {
        self.ext_bytes += 1;
        if self.ext_bytes > EXTENSIONS_BYTES_MAX {
            return Err(BodyError::ExtensionsTooLarge);
        }
        Ok(State::Ext { value })
    }

    /// Counts one trailer byte against the budget.
    fn trailer(&mut self, next: State) -> Result<State, BodyError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > TRAILERS_BYTES_MAX {
            return Err(BodyError::TrailersTooLarge);
        }
        Ok(next)
    }

    /// Whether the whole body has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes still expected: `Some(n)` for a `Content-Length` body,
    /// `Some(0)` once done, `None` for a chunked body in progress (its length
    /// is unknown).
    pub fn remaining_hint(&self) -> Option<u64> {
        match self.state {
            State::Length { remaining } => Some(remaining),
            State::Done => Some(0),
            _ => None,
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
