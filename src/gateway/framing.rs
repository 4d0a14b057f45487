//! Gateway frames: the [`Framing`] a gateway carries, and the ready [`DefaultFrame`], whose
//! doc holds the wire format (module docs of this private module are not rendered).

use bytes::Bytes;

use super::node_id::NodeId;
use super::stream::StreamId;
use crate::ws::ConnId;
use crate::CodecError;

/// What a HELLO or HELLO_ACK carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HelloPayload {
    /// The sender's node id.
    pub node_id: NodeId,
    /// The protocol version the sender speaks.
    pub version: u16,
}

/// The gateway protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The format byte that starts every [`DefaultFrame`].
pub const DEFAULT_FORMAT: u8 = 1;

/// A frame type the gateway can carry.
///
/// The gateway needs to build and recognise the handshake (HELLO, answered by HELLO_ACK, each
/// naming the sender's node); everything else is the application's. Frames that belong to a
/// stream say so through [`stream_id`](Self::stream_id) and [`seq`](Self::seq).
/// [`decode`](Self::decode) gets whatever a peer sent: it must return an error, never panic,
/// on malformed input.
///
/// A tiny text framing (one frame per message, a letter then the rest):
///
/// ```
/// use rxplus::gateway::{Framing, NodeId, PROTOCOL_VERSION};
/// use rxplus::CodecError;
///
/// #[derive(Debug, Clone, PartialEq)]
/// enum Line {
///     Hello(NodeId),
///     HelloAck(NodeId),
///     Text(String),
/// }
///
/// impl Framing for Line {
///     fn encode(&self) -> Vec<u8> {
///         match self {
///             Line::Hello(id) => format!("H{id}"),
///             Line::HelloAck(id) => format!("A{id}"),
///             Line::Text(t) => format!("T{t}"),
///         }
///         .into_bytes()
///     }
///     fn decode(data: &[u8]) -> Result<Self, CodecError> {
///         let text = std::str::from_utf8(data).map_err(|e| CodecError::context("line", e))?;
///         let id = |s: &str| s.parse::<NodeId>().map_err(CodecError::new);
///         if let Some(rest) = text.strip_prefix('H') {
///             Ok(Line::Hello(id(rest)?))
///         } else if let Some(rest) = text.strip_prefix('A') {
///             Ok(Line::HelloAck(id(rest)?))
///         } else if let Some(rest) = text.strip_prefix('T') {
///             Ok(Line::Text(rest.to_string()))
///         } else {
///             Err(CodecError::msg(format!("unknown line {text:?}")))
///         }
///     }
///     // This framing has no version field: it speaks version 1 (the default
///     // `get_hello_version`).
///     fn create_hello(node_id: NodeId, _version: u16) -> Self {
///         Line::Hello(node_id)
///     }
///     fn create_hello_ack(node_id: NodeId, _version: u16) -> Self {
///         Line::HelloAck(node_id)
///     }
///     fn is_hello(&self) -> bool {
///         matches!(self, Line::Hello(_))
///     }
///     fn is_hello_ack(&self) -> bool {
///         matches!(self, Line::HelloAck(_))
///     }
///     fn get_hello_node_id(&self) -> Option<NodeId> {
///         match self {
///             Line::Hello(id) | Line::HelloAck(id) => Some(*id),
///             Line::Text(_) => None,
///         }
///     }
/// }
///
/// let me = NodeId::random();
/// let hello = Line::create_hello(me, PROTOCOL_VERSION);
/// let back = Line::decode(&hello.encode())?;
/// assert!(back.is_hello());
/// assert_eq!(back.get_hello_node_id(), Some(me));
/// assert_eq!(back.get_hello_version(), Some(1));
/// assert_eq!(Line::decode(b"Thi")?, Line::Text("hi".into()));
/// assert_eq!(Line::decode(b"Thi")?.stream_id(), None);
/// assert!(Line::decode(b"Hnot-an-id").is_err());
/// assert!(Line::decode(&[0xff]).is_err());
/// # Ok::<(), CodecError>(())
/// ```
pub trait Framing: Clone + Send + Sync + Sized + 'static {
    /// The frame as one binary WebSocket message.
    fn encode(&self) -> Vec<u8>;
    /// Appends what [`encode`](Self::encode) returns to `out`. The gateway calls this when it
    /// puts a header of its own first (a resumable link's sequence number); the default copies
    /// `encode`'s bytes, an override that writes them in place saves that copy.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode());
    }
    /// The length [`encode`](Self::encode) will return, when known without encoding; `0`
    /// (the default) when not. The gateway sizes a frame's allocation with it (up to 1 MiB), so
    /// the frame is allocated once: return the exact length or `0`; a wrong value costs a
    /// reallocation or unused memory, never a wrong frame.
    fn encoded_len(&self) -> usize {
        0
    }
    /// A frame from one binary WebSocket message; an error (never a panic) on malformed input.
    fn decode(data: &[u8]) -> std::result::Result<Self, CodecError>;
    /// A HELLO announcing `node_id`, speaking `version`.
    fn create_hello(node_id: NodeId, version: u16) -> Self;
    /// The answer to a HELLO, announcing `node_id`, speaking `version`.
    fn create_hello_ack(node_id: NodeId, version: u16) -> Self;
    /// Whether this is a HELLO.
    fn is_hello(&self) -> bool;
    /// Whether this is a HELLO_ACK.
    fn is_hello_ack(&self) -> bool;
    /// The node id a HELLO or HELLO_ACK carries; `None` for other frames.
    fn get_hello_node_id(&self) -> Option<NodeId>;
    /// The version a HELLO/HELLO_ACK carries; frame types without one speak version 1.
    fn get_hello_version(&self) -> Option<u16> {
        self.get_hello_node_id().map(|_| PROTOCOL_VERSION)
    }
    /// The stream this frame belongs to, if any.
    fn stream_id(&self) -> Option<StreamId> {
        None
    }
    /// The frame's sequence number on its stream, if any.
    fn seq(&self) -> Option<u32> {
        None
    }
}

/// A frame tagged with the gateway connection it came from or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedFrame<F> {
    /// The connection.
    pub conn_id: ConnId,
    /// The frame.
    pub frame: F,
}

impl<F> TaggedFrame<F> {
    /// `frame` tagged with `conn_id`.
    pub fn new(conn_id: ConnId, frame: F) -> Self {
        TaggedFrame { conn_id, frame }
    }
}

/// The ready framing.
///
/// The wire format: one binary WebSocket message per frame, integers big-endian.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | format: [`DEFAULT_FORMAT`] (1) |
/// | 1 | 1 | kind: 1 HELLO, 2 HELLO_ACK, 3 DATA |
///
/// HELLO and HELLO_ACK, exactly 20 bytes:
///
/// | offset | size | field |
/// |---|---|---|
/// | 2 | 16 | node id |
/// | 18 | 2 | protocol version ([`PROTOCOL_VERSION`]) |
///
/// DATA:
///
/// | offset | size | field |
/// |---|---|---|
/// | 2 | 1 | flags: bit 0 "has stream"; the other bits must be 0 |
/// | 3 | 16 | stream id (only with bit 0) |
/// | 19 | 4 | sequence number (only with bit 0) |
/// | 3 or 23 | rest | payload, possibly empty |
///
/// Anything else (another format or kind, a wrong length, unknown flag bits, a truncated
/// stream header) fails to decode with a [`CodecError`] saying what; decoding never panics.
///
/// ```
/// use rxplus::gateway::{DefaultFrame, Framing};
///
/// let frame = DefaultFrame::on_stream([9; 16], 41, "hello");
/// let wire = frame.encode();
/// assert_eq!(&wire[..3], [1, 3, 1]);
/// let back = DefaultFrame::decode(&wire)?;
/// assert_eq!(back, frame);
/// assert_eq!(back.stream_id(), Some([9; 16]));
/// assert_eq!(back.seq(), Some(41));
/// assert_eq!(back.payload().map(|p| &p[..]), Some(&b"hello"[..]));
/// # Ok::<(), rxplus::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultFrame {
    /// Kind 1: opens the handshake.
    Hello(HelloPayload),
    /// Kind 2: answers a HELLO.
    HelloAck(HelloPayload),
    /// Kind 3: application data, on a stream (id and sequence number) or not.
    Data {
        /// The stream id and sequence number, when the frame belongs to a stream.
        stream: Option<(StreamId, u32)>,
        /// The application's bytes.
        payload: Bytes,
    },
}

const KIND_HELLO: u8 = 1;
const KIND_HELLO_ACK: u8 = 2;
const KIND_DATA: u8 = 3;
const FLAG_STREAM: u8 = 0x01;
const HELLO_LEN: usize = 20;
const DATA_HEADER_LEN: usize = 3;
const STREAM_HEADER_LEN: usize = 20;

impl DefaultFrame {
    /// DATA on no stream.
    pub fn data(payload: impl Into<Bytes>) -> Self {
        DefaultFrame::Data {
            stream: None,
            payload: payload.into(),
        }
    }

    /// DATA on stream `stream_id` with sequence number `seq`.
    pub fn on_stream(stream_id: StreamId, seq: u32, payload: impl Into<Bytes>) -> Self {
        DefaultFrame::Data {
            stream: Some((stream_id, seq)),
            payload: payload.into(),
        }
    }

    /// The payload of a DATA frame; `None` for HELLO and HELLO_ACK.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            DefaultFrame::Data { payload, .. } => Some(payload),
            _ => None,
        }
    }

    fn hello_payload(&self) -> Option<&HelloPayload> {
        match self {
            DefaultFrame::Hello(h) | DefaultFrame::HelloAck(h) => Some(h),
            DefaultFrame::Data { .. } => None,
        }
    }
}

fn decode_hello(name: &str, data: &[u8]) -> Result<HelloPayload, CodecError> {
    let bad = || {
        CodecError::msg(format!(
            "{name} of {} bytes, expected {HELLO_LEN}",
            data.len()
        ))
    };
    if data.len() != HELLO_LEN {
        return Err(bad());
    }
    let body = data.get(2..).ok_or_else(bad)?;
    let (id, rest) = body.split_first_chunk::<16>().ok_or_else(bad)?;
    let version = rest.first_chunk::<2>().ok_or_else(bad)?;
    Ok(HelloPayload {
        node_id: NodeId::from_bytes(*id),
        version: u16::from_be_bytes(*version),
    })
}

fn decode_data(data: &[u8]) -> Result<DefaultFrame, CodecError> {
    let (&flags, rest) = data
        .get(2..)
        .and_then(|b| b.split_first())
        .ok_or_else(|| CodecError::msg(format!("DATA of {} bytes: no flags", data.len())))?;
    if flags & !FLAG_STREAM != 0 {
        return Err(CodecError::msg(format!(
            "DATA flags {flags:#04x}: unknown bits"
        )));
    }
    let (stream, payload) = if flags & FLAG_STREAM != 0 {
        let truncated = || {
            CodecError::msg(format!(
                "DATA with stream header truncated at {} bytes, expected at least {}",
                data.len(),
                DATA_HEADER_LEN + STREAM_HEADER_LEN
            ))
        };
        let (id, rest) = rest.split_first_chunk::<16>().ok_or_else(truncated)?;
        let (seq, payload) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        (Some((*id, u32::from_be_bytes(*seq))), payload)
    } else {
        (None, rest)
    };
    Ok(DefaultFrame::Data {
        stream,
        payload: Bytes::copy_from_slice(payload),
    })
}

impl Framing for DefaultFrame {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            DefaultFrame::Hello(h) | DefaultFrame::HelloAck(h) => {
                let kind = if matches!(self, DefaultFrame::Hello(_)) {
                    KIND_HELLO
                } else {
                    KIND_HELLO_ACK
                };
                out.reserve_exact(HELLO_LEN);
                out.push(DEFAULT_FORMAT);
                out.push(kind);
                out.extend_from_slice(h.node_id.as_bytes());
                out.extend_from_slice(&h.version.to_be_bytes());
            }
            DefaultFrame::Data { stream, payload } => {
                let header = DATA_HEADER_LEN + stream.map_or(0, |_| STREAM_HEADER_LEN);
                out.reserve_exact(header + payload.len());
                out.push(DEFAULT_FORMAT);
                out.push(KIND_DATA);
                match stream {
                    Some((id, seq)) => {
                        out.push(FLAG_STREAM);
                        out.extend_from_slice(id);
                        out.extend_from_slice(&seq.to_be_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(payload);
            }
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            DefaultFrame::Hello(_) | DefaultFrame::HelloAck(_) => HELLO_LEN,
            DefaultFrame::Data { stream, payload } => {
                DATA_HEADER_LEN + stream.map_or(0, |_| STREAM_HEADER_LEN) + payload.len()
            }
        }
    }

    fn decode(data: &[u8]) -> Result<Self, CodecError> {
        let (&format, rest) = data
            .split_first()
            .ok_or_else(|| CodecError::msg("empty frame"))?;
        if format != DEFAULT_FORMAT {
            return Err(CodecError::msg(format!("unknown format {format}")));
        }
        let &kind = rest
            .first()
            .ok_or_else(|| CodecError::msg("frame of 1 byte: no kind"))?;
        match kind {
            KIND_HELLO => decode_hello("HELLO", data).map(DefaultFrame::Hello),
            KIND_HELLO_ACK => decode_hello("HELLO_ACK", data).map(DefaultFrame::HelloAck),
            KIND_DATA => decode_data(data),
            other => Err(CodecError::msg(format!("unknown kind {other}"))),
        }
    }

    fn create_hello(node_id: NodeId, version: u16) -> Self {
        DefaultFrame::Hello(HelloPayload { node_id, version })
    }

    fn create_hello_ack(node_id: NodeId, version: u16) -> Self {
        DefaultFrame::HelloAck(HelloPayload { node_id, version })
    }

    fn is_hello(&self) -> bool {
        matches!(self, DefaultFrame::Hello(_))
    }

    fn is_hello_ack(&self) -> bool {
        matches!(self, DefaultFrame::HelloAck(_))
    }

    fn get_hello_node_id(&self) -> Option<NodeId> {
        self.hello_payload().map(|h| h.node_id)
    }

    fn get_hello_version(&self) -> Option<u16> {
        self.hello_payload().map(|h| h.version)
    }

    fn stream_id(&self) -> Option<StreamId> {
        match self {
            DefaultFrame::Data {
                stream: Some((id, _)),
                ..
            } => Some(*id),
            _ => None,
        }
    }

    fn seq(&self) -> Option<u32> {
        match self {
            DefaultFrame::Data {
                stream: Some((_, seq)),
                ..
            } => Some(*seq),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        let mut bytes = [0u8; 16];
        for (i, x) in bytes.iter_mut().enumerate() {
            *x = b.wrapping_add(i as u8);
        }
        NodeId::from_bytes(bytes)
    }

    fn err(data: &[u8]) -> String {
        match DefaultFrame::decode(data) {
            Err(e) => e.to_string(),
            Ok(f) => panic!("{data:?} decoded as {f:?}"),
        }
    }

    fn round_trip(f: &DefaultFrame) -> Vec<u8> {
        let wire = f.encode();
        // One allocation, exactly sized, and the length known before encoding.
        assert_eq!(wire.capacity(), wire.len(), "{f:?}");
        assert_eq!(f.encoded_len(), wire.len(), "{f:?}");
        assert_eq!(&DefaultFrame::decode(&wire).unwrap(), f);
        wire
    }

    fn samples() -> Vec<DefaultFrame> {
        vec![
            DefaultFrame::create_hello(node(0), PROTOCOL_VERSION),
            DefaultFrame::create_hello(node(7), 65535),
            DefaultFrame::create_hello_ack(node(200), 0),
            DefaultFrame::create_hello_ack(NodeId::random(), 2),
            DefaultFrame::data(Bytes::new()),
            DefaultFrame::data(&b"x"[..]),
            DefaultFrame::data(vec![0u8; 1000]),
            DefaultFrame::on_stream([0; 16], 0, Bytes::new()),
            DefaultFrame::on_stream([0xff; 16], u32::MAX, &b"payload"[..]),
            DefaultFrame::on_stream([3; 16], 12345, vec![1u8; 300]),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for f in samples() {
            round_trip(&f);
        }
    }

    #[test]
    fn accessors() {
        let me = node(1);
        let h = DefaultFrame::create_hello(me, 65535);
        assert!(h.is_hello() && !h.is_hello_ack());
        assert_eq!(h.get_hello_node_id(), Some(me));
        assert_eq!(h.get_hello_version(), Some(65535));
        assert_eq!((h.stream_id(), h.seq(), h.payload()), (None, None, None));
        let a = DefaultFrame::create_hello_ack(me, 3);
        assert!(a.is_hello_ack() && !a.is_hello());
        assert_eq!(a.get_hello_node_id(), Some(me));
        assert_eq!(a.get_hello_version(), Some(3));
        let d = DefaultFrame::data("abc");
        assert!(!d.is_hello() && !d.is_hello_ack());
        assert_eq!(d.get_hello_node_id(), None);
        assert_eq!(d.get_hello_version(), None);
        assert_eq!((d.stream_id(), d.seq()), (None, None));
        assert_eq!(d.payload(), Some(&Bytes::from_static(b"abc")));
        let s = DefaultFrame::on_stream([4; 16], 9, "z");
        assert_eq!((s.stream_id(), s.seq()), (Some([4; 16]), Some(9)));

        let conn = ConnId::from(uuid::Uuid::from_u128(5));
        let t = TaggedFrame::new(conn, d.clone());
        assert_eq!(t.conn_id, conn);
        assert_eq!(t.frame, d);
        assert_eq!(t.clone(), t);
    }

    #[test]
    fn trait_defaults() {
        #[derive(Clone)]
        struct Bare(Option<NodeId>);
        impl Framing for Bare {
            fn encode(&self) -> Vec<u8> {
                Vec::new()
            }
            fn decode(_: &[u8]) -> Result<Self, CodecError> {
                Ok(Bare(None))
            }
            fn create_hello(node_id: NodeId, _: u16) -> Self {
                Bare(Some(node_id))
            }
            fn create_hello_ack(node_id: NodeId, _: u16) -> Self {
                Bare(Some(node_id))
            }
            fn is_hello(&self) -> bool {
                self.0.is_some()
            }
            fn is_hello_ack(&self) -> bool {
                false
            }
            fn get_hello_node_id(&self) -> Option<NodeId> {
                self.0
            }
        }
        let h = Bare::create_hello(node(0), 9);
        assert_eq!(h.get_hello_version(), Some(PROTOCOL_VERSION));
        assert_eq!((h.stream_id(), h.seq()), (None, None));
        assert_eq!(Bare(None).get_hello_version(), None);
    }

    #[test]
    fn the_wire_format_is_pinned() {
        let hello = DefaultFrame::create_hello(node(0x10), 1);
        assert_eq!(
            round_trip(&hello),
            [
                1, 1, // format, kind HELLO
                0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
                0x1e, 0x1f, // node id
                0, 1, // version
            ]
        );
        let ack = DefaultFrame::create_hello_ack(node(0xa0), 0x0102);
        assert_eq!(
            round_trip(&ack),
            [
                1, 2, // format, kind HELLO_ACK
                0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad,
                0xae, 0xaf, // node id
                1, 2, // version
            ]
        );
        assert_eq!(round_trip(&DefaultFrame::data("hi")), [1, 3, 0, b'h', b'i']);
        assert_eq!(round_trip(&DefaultFrame::data(Bytes::new())), [1, 3, 0]);
        let mut id = [0u8; 16];
        id[0] = 0xee;
        id[15] = 0x01;
        assert_eq!(
            round_trip(&DefaultFrame::on_stream(id, 0x0a0b0c0d, "ok")),
            [
                1, 3, 1, // format, kind DATA, flags: has stream
                0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // stream id
                0x0a, 0x0b, 0x0c, 0x0d, // seq
                b'o', b'k', // payload
            ]
        );
        assert_eq!(
            round_trip(&DefaultFrame::on_stream([0; 16], 1, Bytes::new())).len(),
            23
        );
    }

    #[test]
    fn malformed_frames_err_with_a_reason() {
        assert_eq!(err(&[]), "empty frame");
        assert_eq!(err(&[1]), "frame of 1 byte: no kind");
        assert_eq!(err(&[7]), "unknown format 7");
        assert_eq!(err(&[0, 1]), "unknown format 0");
        assert_eq!(err(&[2, 3, 0]), "unknown format 2");
        assert_eq!(err(&[1, 9]), "unknown kind 9");
        assert_eq!(err(&[1, 0, 0]), "unknown kind 0");
        assert_eq!(err(&[1, 255]), "unknown kind 255");

        let hello = DefaultFrame::create_hello(node(1), 1).encode();
        let ack = DefaultFrame::create_hello_ack(node(1), 1).encode();
        for (name, wire) in [("HELLO", &hello), ("HELLO_ACK", &ack)] {
            for n in 2..=19 {
                assert_eq!(err(&wire[..n]), format!("{name} of {n} bytes, expected 20"));
            }
            let mut long = wire.clone();
            long.push(0);
            assert_eq!(err(&long), format!("{name} of 21 bytes, expected 20"));
        }

        assert_eq!(err(&[1, 3]), "DATA of 2 bytes: no flags");
        for bit in 1..8 {
            let flags = 1u8 << bit;
            assert_eq!(
                err(&[1, 3, flags, 0, 0]),
                format!("DATA flags {flags:#04x}: unknown bits")
            );
            assert_eq!(
                err(&[1, 3, flags | 1]),
                format!("DATA flags {:#04x}: unknown bits", flags | 1)
            );
        }
        assert_eq!(err(&[1, 3, 0x02]), "DATA flags 0x02: unknown bits");
        assert_eq!(err(&[1, 3, 0xff]), "DATA flags 0xff: unknown bits");

        let full = DefaultFrame::on_stream([5; 16], 77, Bytes::new()).encode();
        assert_eq!(full.len(), 23);
        for n in 3..=22 {
            assert_eq!(
                err(&full[..n]),
                format!("DATA with stream header truncated at {n} bytes, expected at least 23")
            );
        }
    }

    #[test]
    fn every_prefix_of_a_valid_frame_decodes_or_errs() {
        for f in samples() {
            let wire = f.encode();
            for n in 0..=wire.len() {
                if let Ok(g) = DefaultFrame::decode(&wire[..n]) {
                    // A prefix that decodes is a DATA frame with a shorter payload.
                    assert_eq!(g.encode(), &wire[..n]);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift64: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decoded = 0;
        let mut buf = Vec::with_capacity(64);
        for i in 0..100_000u32 {
            buf.clear();
            let len = (next() % 48) as usize;
            for _ in 0..len {
                buf.push(next() as u8);
            }
            // Bias most inputs towards a valid format and kind so the deeper paths are hit.
            if i % 4 != 0 {
                if let Some(b) = buf.get_mut(0) {
                    *b = DEFAULT_FORMAT;
                }
                if let Some(b) = buf.get_mut(1) {
                    *b = 1 + (*b % 3);
                }
                if i % 2 == 0 {
                    if let Some(b) = buf.get_mut(2) {
                        *b &= FLAG_STREAM;
                    }
                }
            }
            if let Ok(f) = DefaultFrame::decode(&buf) {
                decoded += 1;
                // The format is canonical: what decodes re-encodes to the same bytes.
                assert_eq!(f.encode(), buf);
            }
        }
        assert!(decoded > 1000, "{decoded}");
    }
}
