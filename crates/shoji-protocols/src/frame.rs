//! The guest-to-host span frame (vsock port 10240):
//!
//! ```text
//! magic "SHJT" (4) | version u8 | flags u8 | reserved u16 | length u32 BE | payload
//! ```
//!
//! The payload is one OTLP `ExportTraceServiceRequest` in protobuf. The header is fixed-size and
//! checked in full before a single payload byte is allocated, so a hostile guest cannot make the
//! host reserve more than [`MAX_PAYLOAD_LEN`] bytes per connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"SHJT";
/// The only frame version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Largest payload the host accepts (4 MiB).
pub const MAX_PAYLOAD_LEN: u32 = 4 * 1024 * 1024;
/// Flags this version defines; any other bit set is an error. None are defined yet.
pub const KNOWN_FLAGS: u8 = 0;

/// Why a frame was rejected. Any of these closes the connection it arrived on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {found:02x?}, expected \"SHJT\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported frame version {found}, this host speaks version {VERSION}")]
    UnsupportedVersion { found: u8 },
    #[error("unknown frame flags {found:#04x}")]
    UnknownFlags { found: u8 },
    #[error("non-zero reserved field {found:#06x}")]
    NonZeroReserved { found: u16 },
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: u32, max: u32 },
    #[error("connection closed inside a frame ({have} of {need} bytes received)")]
    Truncated { have: usize, need: usize },
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u8,
    pub flags: u8,
    pub len: u32,
}

impl FrameHeader {
    /// Parses and validates a header against `max_len`.
    pub fn parse(raw: &[u8; HEADER_LEN], max_len: u32) -> Result<Self, FrameError> {
        let mut b = &raw[..];
        let mut magic = [0u8; 4];
        b.copy_to_slice(&mut magic);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        let version = b.get_u8();
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { found: version });
        }
        let flags = b.get_u8();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::UnknownFlags { found: flags });
        }
        let reserved = b.get_u16();
        if reserved != 0 {
            return Err(FrameError::NonZeroReserved { found: reserved });
        }
        let len = b.get_u32();
        if len > max_len {
            return Err(FrameError::TooLong { len, max: max_len });
        }
        Ok(Self {
            version,
            flags,
            len,
        })
    }
}

/// Encodes `payload` as one frame. Fails if the payload is over [`MAX_PAYLOAD_LEN`]: the sender
/// must split its batch rather than have the host reject it.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD_LEN)
        .ok_or(FrameError::TooLong {
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            max: MAX_PAYLOAD_LEN,
        })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(0);
    out.put_u16(0);
    out.put_u32(len);
    out.put_slice(payload);
    Ok(out)
}

/// Incremental decoder for a byte stream of frames: feed it whatever the socket returned, take
/// out complete payloads. Memory held is bounded by one header plus one payload of at most
/// `max_len` bytes, and the payload buffer is only reserved once its header has been validated.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    header: Option<FrameHeader>,
    max_len: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_PAYLOAD_LEN)
    }
}

impl FrameDecoder {
    pub fn new(max_len: u32) -> Self {
        Self {
            buf: BytesMut::with_capacity(HEADER_LEN),
            header: None,
            max_len,
        }
    }

    /// How many more bytes the decoder wants before it can make progress. Callers read at most
    /// this much, which keeps the buffer bounded even if the peer floods.
    pub fn wanted(&self) -> usize {
        match self.header {
            None => HEADER_LEN - self.buf.len(),
            Some(h) => h.len as usize - self.buf.len(),
        }
    }

    /// Appends bytes. Callers must not pass more than [`Self::wanted`] bytes at once.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete payload, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            match self.header {
                None => {
                    if self.buf.len() < HEADER_LEN {
                        return Ok(None);
                    }
                    let mut raw = [0u8; HEADER_LEN];
                    raw.copy_from_slice(&self.buf[..HEADER_LEN]);
                    let header = FrameHeader::parse(&raw, self.max_len)?;
                    self.buf.advance(HEADER_LEN);
                    self.buf.reserve(header.len as usize);
                    self.header = Some(header);
                }
                Some(h) => {
                    if self.buf.len() < h.len as usize {
                        return Ok(None);
                    }
                    self.header = None;
                    let payload = self.buf.split_to(h.len as usize).freeze();
                    return Ok(Some(payload));
                }
            }
        }
    }

    /// Call at end of stream: errors if a frame was cut short.
    pub fn finish(&self) -> Result<(), FrameError> {
        let need = match self.header {
            None if self.buf.is_empty() => return Ok(()),
            None => HEADER_LEN,
            Some(h) => h.len as usize,
        };
        Err(FrameError::Truncated {
            have: self.buf.len(),
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], chunk: usize) -> Result<Vec<Bytes>, FrameError> {
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = d.wanted().min(chunk).min(rest.len());
            d.extend(&rest[..n]);
            rest = &rest[n..];
            while let Some(p) = d.next_frame()? {
                out.push(p);
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trips_in_any_chunking() {
        let mut stream = encode(b"hello").unwrap();
        stream.extend(encode(b"").unwrap());
        stream.extend(encode(&[7u8; 1000]).unwrap());
        for chunk in [1, 3, 12, 13, 4096] {
            let frames = decode_all(&stream, chunk).unwrap();
            assert_eq!(frames.len(), 3);
            assert_eq!(&frames[0][..], b"hello");
            assert!(frames[1].is_empty());
            assert_eq!(frames[2].len(), 1000);
        }
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let mut raw = encode(b"").unwrap();
        raw[8..12].copy_from_slice(&(MAX_PAYLOAD_LEN + 1).to_be_bytes());
        let mut d = FrameDecoder::default();
        d.extend(&raw);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLong {
                len: MAX_PAYLOAD_LEN + 1,
                max: MAX_PAYLOAD_LEN
            })
        );
        assert!(d.buf.capacity() < 1024, "payload must not be reserved");
    }

    #[test]
    fn bad_magic_version_flags_reserved_are_rejected() {
        let good = encode(b"x").unwrap();
        let cases: [(usize, u8); 4] = [(0, b'X'), (4, 2), (5, 0x80), (6, 1)];
        for (at, val) in cases {
            let mut raw = good.clone();
            raw[at] = val;
            assert!(decode_all(&raw, 64).is_err(), "byte {at} = {val}");
        }
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let raw = encode(b"hello").unwrap();
        assert_eq!(
            decode_all(&raw[..15], 64),
            Err(FrameError::Truncated { have: 3, need: 5 })
        );
        assert!(matches!(
            decode_all(&raw[..5], 64),
            Err(FrameError::Truncated { .. })
        ));
    }
}
