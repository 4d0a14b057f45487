//! The envelope a path message crosses instances in, and the receiving side's per-instance
//! sequence check. Pure: no I/O, tested alone.
//!
//! ```text
//! offset  size  field
//! 0       1     version (1)
//! 1       1     kind: 1 text, 2 binary
//! 2       16    publishing instance id (UUID bytes)
//! 18      8     sequence number, big-endian, per publishing instance (all paths together)
//! 26      ..    the payload: the encoded WebSocket message's bytes, as the path's datatype
//!               produced them
//! ```
//!
//! The path is not in the envelope: it is the channel (`prefix + path`). See
//! `ADR/2026-12-05-redis-scale-out.md`.

use std::collections::HashMap;

use tungstenite::{Bytes, Message, Utf8Bytes};

use crate::error::CodecError;

/// The envelope format's version (its first byte).
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 26;
const TEXT: u8 = 1;
const BINARY: u8 = 2;

/// A publishing instance's id: 16 bytes (a UUID).
pub type InstanceId = [u8; 16];

/// One path message as it crosses instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Who published it.
    pub instance: InstanceId,
    /// Its place in the publishing instance's stream (all paths together), from 1.
    pub seq: u64,
    /// The WebSocket message, text or binary.
    pub message: Message,
}

impl Envelope {
    /// The envelope's bytes.
    ///
    /// # Errors
    /// A message that is not text or binary (ping, pong, close, frame) has no envelope.
    pub fn encode(
        instance: &InstanceId,
        seq: u64,
        message: &Message,
    ) -> Result<Vec<u8>, CodecError> {
        let (kind, payload): (u8, &[u8]) = match message {
            Message::Text(t) => (TEXT, t.as_bytes()),
            Message::Binary(b) => (BINARY, b),
            _ => {
                return Err(CodecError::msg(
                    "only text and binary messages cross instances",
                ))
            }
        };
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(instance);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(out)
    }

    /// Reads an envelope; the payload is shared with `bytes`, not copied.
    ///
    /// # Errors
    /// Too short, another version, an unknown kind, or a text payload that is not UTF-8.
    pub fn decode(bytes: Bytes) -> Result<Envelope, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::msg(format!(
                "envelope of {} bytes, shorter than its {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if bytes[0] != VERSION {
            return Err(CodecError::msg(format!(
                "envelope version {}, expected {VERSION}",
                bytes[0]
            )));
        }
        let mut instance = [0u8; 16];
        instance.copy_from_slice(&bytes[2..18]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[18..26]);
        let kind = bytes[1];
        let payload = bytes.slice(HEADER_LEN..);
        let message = match kind {
            TEXT => Message::Text(
                Utf8Bytes::try_from(payload).map_err(|e| CodecError::context("text payload", e))?,
            ),
            BINARY => Message::Binary(payload),
            k => return Err(CodecError::msg(format!("unknown message kind {k}"))),
        };
        Ok(Envelope {
            instance,
            seq: u64::from_be_bytes(seq),
            message,
        })
    }
}

/// The receiving side's view of each publishing instance's sequence: messages that never
/// arrived (Redis pub/sub is at-most-once) are counted from the numbers skipped.
///
/// Bounded: it remembers up to `capacity` instances; past that it forgets them all and starts
/// over (the next message of each only sets its baseline).
#[derive(Debug)]
pub struct Gaps {
    last: HashMap<InstanceId, u64>,
    capacity: usize,
}

impl Gaps {
    /// A tracker of up to `capacity` instances (at least 1).
    pub fn new(capacity: usize) -> Self {
        Gaps {
            last: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `seq` from `instance`; returns how many of its messages were skipped since the
    /// last one seen. The first message of an instance sets its baseline (0). A number at or
    /// below the last one (the instance restarted its count, or a publication whose reply was
    /// lost was delivered after all) sets a new baseline, 0 too.
    pub fn record(&mut self, instance: &InstanceId, seq: u64) -> u64 {
        if !self.last.contains_key(instance) && self.last.len() >= self.capacity {
            self.last.clear();
        }
        match self.last.insert(*instance, seq) {
            Some(prev) if seq > prev => seq - prev - 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_round_trip_and_the_payload_is_not_copied() {
        let id = [7u8; 16];
        for m in [
            Message::Text("héllo".into()),
            Message::Binary(Bytes::from_static(&[0, 1, 255])),
            Message::Text("".into()),
        ] {
            let bytes = Bytes::from(Envelope::encode(&id, 42, &m).unwrap());
            assert_eq!(bytes.len(), HEADER_LEN + m.len());
            let e = Envelope::decode(bytes.clone()).unwrap();
            assert_eq!((e.instance, e.seq, &e.message), (id, 42, &m));
            if let Message::Binary(b) = &e.message {
                assert_eq!(b.as_ptr(), bytes[HEADER_LEN..].as_ptr());
            }
        }
    }

    #[test]
    fn bad_envelopes_are_errors_never_panics() {
        let id = [1u8; 16];
        assert!(Envelope::encode(&id, 1, &Message::Ping(Bytes::new())).is_err());
        assert!(Envelope::decode(Bytes::from_static(b"short")).is_err());
        let mut v = Envelope::encode(&id, 1, &Message::Text("x".into())).unwrap();
        v[0] = 9;
        assert!(Envelope::decode(Bytes::from(v.clone()))
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        v[0] = VERSION;
        v[1] = 3;
        assert!(Envelope::decode(Bytes::from(v.clone())).is_err());
        v[1] = TEXT;
        v.truncate(HEADER_LEN);
        v.push(0xff);
        assert!(
            Envelope::decode(Bytes::from(v)).is_err(),
            "text must be UTF-8"
        );
    }

    #[test]
    fn gaps_count_skipped_numbers_per_instance_and_stay_bounded() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let mut g = Gaps::new(2);
        assert_eq!(g.record(&a, 5), 0, "first message: baseline");
        assert_eq!(g.record(&a, 6), 0);
        assert_eq!(g.record(&a, 10), 3);
        assert_eq!(g.record(&b, 1), 0);
        assert_eq!(g.record(&b, 3), 1);
        assert_eq!(g.record(&a, 2), 0, "a restarted count is a new baseline");
        assert_eq!(g.record(&a, 4), 1);
        // A third instance over capacity 2: everything is forgotten, baselines again.
        assert_eq!(g.record(&[3u8; 16], 9), 0);
        assert_eq!(g.last.len(), 1);
        assert_eq!(g.record(&a, 100), 0);
    }
}
