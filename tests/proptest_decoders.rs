//! Property tests of every decoder that network input reaches: arbitrary bytes never panic, they
//! decode or give an error; what an encoder writes decodes back to itself; a length that a peer
//! claims is never allocated before it is checked.
//!
//! Pure decoders, through the public API:
//! * the WebSocket datatypes (`Text`, `Binary`, `Json`, `Raw`), for text and binary messages
//!   and for control messages;
//! * the gateway's `DefaultFrame` (`Framing::decode`): HELLO, HELLO_ACK, DATA with and without a
//!   stream header; truncated, extended and bit-flipped frames. It has no length field (one
//!   WebSocket message is one frame), so a truncated DATA frame is a shorter DATA frame;
//! * `NodeId` and `ConnId` from text;
//! * with the `pickle` feature, `Pickle` and `PickleValue` fed pickle-shaped opcode sequences
//!   (lengths claiming gigabytes among them), and `Value`s encoded and decoded back;
//! * the sequence numbers and stream ids a peer sends, as `StreamTable` checks them (the
//!   gateway opens a table entry per stream id a peer names, so the cap must hold).
//!
//! Over loopback, the whole receive path (tungstenite's HTTP and frame parsers under the
//! crate's limits, then the datatype, or the gateway's handshake and framing), with a raw peer:
//! * a server's and a gateway node's HTTP upgrade fed arbitrary requests;
//! * a server's connection fed arbitrary WebSocket frames after the upgrade, some claiming
//!   payloads of up to 2⁶⁴ − 1 bytes; a client fed arbitrary upgrade responses and frames;
//! * a gateway node, accepting and dialing, fed arbitrary messages before, during and after
//!   the HELLO exchange, checked against a model of the handshake.
//!
//! A counting global allocator records the largest single allocation of this test process:
//! a length header claiming 4 GiB must be refused without asking for 4 GiB.
//!
//! The `proptest!` properties run 256 cases (`PROPTEST_CASES` changes that); the loopback ones
//! 64, each case being a connection.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use rxplus::gateway::{
    DefaultFrame, Framing, GatewayConfig, GatewayNode, NodeId, StreamTable, PROTOCOL_VERSION,
};
use rxplus::tungstenite::{self, Message};
use rxplus::ws::{
    Binary, ConnId, Datatype, Json, Raw, RxWSClient, RxWSServer, TaggedData, Text, WSMessage,
};
use support::*;

// ---------------------------------------------------------------------------------------------
// The largest allocation
// ---------------------------------------------------------------------------------------------

/// Passes every call to the system allocator and remembers the largest size asked for.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only a counter is updated besides.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// No allocation in this process may reach this: the default message and frame limits are
/// 16 MiB, nothing in these tests needs more, and a claimed length of gigabytes must be refused
/// before it is allocated.
const ALLOCATION_LIMIT: usize = 64 << 20;

fn assert_no_huge_allocation() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_LIMIT,
        "an allocation of {largest} bytes was made (limit {ALLOCATION_LIMIT})"
    );
}

/// The `proptest!` blocks' config: the default (256 cases, or `PROPTEST_CASES`), failures kept
/// beside this file (`proptest_decoders.proptest-regressions`) and replayed first. (The default
/// place needs a `lib.rs` above the test file, which an integration test has not.)
fn config() -> Config {
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// Bytes that are often valid UTF-8, sometimes broken in one place: most random bytes are not
/// UTF-8 at all, and the interesting inputs are near-misses (a truncated or bad sequence).
fn near_utf8() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(64),
        ".{0,32}".prop_map(String::into_bytes),
        (".{0,32}", any::<prop::sample::Index>(), any::<u8>()).prop_map(|(s, at, b)| {
            let mut v = s.into_bytes();
            if v.is_empty() {
                v.push(b);
            } else {
                let i = at.index(v.len());
                v[i] = b;
            }
            v
        }),
        (".{0,32}", any::<prop::sample::Index>()).prop_map(|(s, at)| {
            // Cut in the middle of a multi-byte character, often.
            let mut v = s.into_bytes();
            let n = at.index(v.len() + 1);
            v.truncate(n);
            v
        }),
    ]
}

/// Text that looks like JSON: the parser's deeper paths (numbers, escapes, nesting) are reached
/// far more often than from random characters.
fn jsonish() -> impl Strategy<Value = String> {
    prop_oneof![
        r#"[\[\]{}",:0-9a-z\\ .eE+\-]{0,64}"#,
        // An object of up to four members: numbers of any size and exponent, strings with
        // escapes (some broken), literals, empty arrays; braces and commas sometimes missing.
        concat!(
            r#"\{("[a-z]{0,3}":("#,
            r#"-?[0-9]{1,25}(\.[0-9]{0,5})?([eE][+\-]?[0-9]{1,4})?"#,
            r#"|"([^"\\]|\\[nrtbf"/\\]|\\u[0-9a-fA-F]{0,4}){0,6}"?"#,
            r#"|true|null|\[\]),?){0,4}\}?"#,
        ),
        ".{0,32}",
        // Valid JSON, and valid JSON cut short or with one character replaced.
        json_value().prop_map(|v| v.to_string()),
        (
            json_value(),
            any::<prop::sample::Index>(),
            any::<char>(),
            any::<bool>()
        )
            .prop_map(|(v, at, c, cut)| {
                let mut t: Vec<char> = v.to_string().chars().collect();
                let i = at.index(t.len());
                if cut {
                    t.truncate(i);
                } else {
                    t[i] = c;
                }
                t.into_iter().collect()
            }),
    ]
}

/// A JSON value with no floats (serde_json's default float parsing is not exact, which is not
/// this crate's concern).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Kind {
    Unit,
    Pair(u8, i16),
    Named { s: String },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Item {
    id: u64,
    delta: i32,
    name: String,
    tags: Vec<String>,
    blob: Vec<u8>,
    maybe: Option<bool>,
    kind: Kind,
}

fn item() -> impl Strategy<Value = Item> {
    let kind = prop_oneof![
        Just(Kind::Unit),
        (any::<u8>(), any::<i16>()).prop_map(|(a, b)| Kind::Pair(a, b)),
        ".{0,8}".prop_map(|s| Kind::Named { s }),
    ];
    (
        any::<u64>(),
        any::<i32>(),
        ".{0,16}",
        proptest::collection::vec(".{0,6}", 0..4),
        bytes(16),
        any::<Option<bool>>(),
        kind,
    )
        .prop_map(|(id, delta, name, tags, blob, maybe, kind)| Item {
            id,
            delta,
            name,
            tags,
            blob,
            maybe,
            kind,
        })
}

fn ws_message() -> impl Strategy<Value = WSMessage> {
    prop_oneof![
        ".{0,32}".prop_map(WSMessage::Text),
        bytes(64).prop_map(WSMessage::Binary),
    ]
}

/// A message as tungstenite hands it to a datatype: data or control.
fn any_message() -> impl Strategy<Value = Message> {
    use tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
    prop_oneof![
        4 => ".{0,32}".prop_map(|s| Message::Text(s.into())),
        4 => near_utf8().prop_map(|b| Message::Binary(b.into())),
        1 => bytes(16).prop_map(|b| Message::Ping(b.into())),
        1 => bytes(16).prop_map(|b| Message::Pong(b.into())),
        1 => proptest::option::of((any::<u16>(), ".{0,16}")).prop_map(|c| {
            Message::Close(c.map(|(code, reason)| CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))
        }),
    ]
}

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 16]>().prop_map(NodeId::from_bytes)
}

fn default_frame() -> impl Strategy<Value = DefaultFrame> {
    prop_oneof![
        (node_id(), any::<u16>()).prop_map(|(n, v)| DefaultFrame::create_hello(n, v)),
        (node_id(), any::<u16>()).prop_map(|(n, v)| DefaultFrame::create_hello_ack(n, v)),
        bytes(64).prop_map(DefaultFrame::data),
        (any::<[u8; 16]>(), any::<u32>(), bytes(64))
            .prop_map(|(id, seq, p)| DefaultFrame::on_stream(id, seq, p)),
    ]
}

/// Bytes shaped like a `DefaultFrame` (the right format byte, a kind near the valid ones,
/// flags near the valid ones) with an arbitrary rest, so that random input gets past the first
/// checks; plus plain random bytes.
fn framish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(48),
        (
            prop_oneof![3 => 1u8..=3, 1 => 0u8..=5],
            any::<u8>(),
            any::<bool>(),
            prop_oneof![bytes(24), bytes(48)],
        )
            .prop_map(|(kind, flags, low, rest)| {
                let flags = if low { flags & 1 } else { flags };
                let mut v = vec![rxplus::gateway::DEFAULT_FORMAT, kind, flags];
                v.extend_from_slice(&rest);
                v
            }),
        (1u8..=2, bytes(24)).prop_map(|(kind, rest)| {
            // HELLO/HELLO_ACK near their one valid length.
            let mut v = vec![rxplus::gateway::DEFAULT_FORMAT, kind];
            v.extend_from_slice(&rest);
            v
        }),
    ]
}

/// Checks one `DefaultFrame::decode` result against the bytes it came from: what decodes is the
/// one frame those bytes encode (the format is canonical), its payload is no bigger than the
/// input, and the accessors agree with the variant.
fn check_decoded(data: &[u8], r: Result<DefaultFrame, rxplus::CodecError>) {
    match r {
        Ok(f) => {
            assert_eq!(f.encode(), data, "{f:?} does not re-encode to its input");
            match &f {
                DefaultFrame::Hello(h) | DefaultFrame::HelloAck(h) => {
                    assert_eq!(data.len(), 20);
                    assert_eq!(f.is_hello(), matches!(f, DefaultFrame::Hello(_)));
                    assert_eq!(f.is_hello_ack(), !f.is_hello());
                    assert_eq!(f.get_hello_node_id(), Some(h.node_id));
                    assert_eq!(f.get_hello_version(), Some(h.version));
                    assert_eq!((f.stream_id(), f.seq(), f.payload()), (None, None, None));
                }
                DefaultFrame::Data { stream, payload } => {
                    assert!(payload.len() <= data.len());
                    assert!(!f.is_hello() && !f.is_hello_ack());
                    assert_eq!(f.get_hello_node_id(), None);
                    assert_eq!(f.stream_id(), stream.map(|(id, _)| id));
                    assert_eq!(f.seq(), stream.map(|(_, seq)| seq));
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A WebSocket frame as a peer may send it: any header bits, any opcode, masked or not, a
/// length written in any of the three encodings (claiming up to 2⁶³ bytes, or more with the
/// reserved top bit), then fewer payload bytes than claimed or exactly as many.
#[derive(Debug, Clone)]
struct RawFrame {
    first: u8,
    masked: bool,
    len: RawLen,
    mask: [u8; 4],
    payload: Vec<u8>,
}

#[derive(Debug, Clone)]
enum RawLen {
    /// The payload's own length, in the shortest encoding.
    Exact,
    /// A 7-bit length 0..=125.
    Short(u8),
    /// 126, then 16 bits.
    Medium(u16),
    /// 127, then 64 bits.
    Long(u64),
}

impl RawFrame {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.first];
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let exact = |n: usize| -> RawLen {
            match n {
                0..=125 => RawLen::Short(n as u8),
                126..=65535 => RawLen::Medium(n as u16),
                _ => RawLen::Long(n as u64),
            }
        };
        let len = match self.len {
            RawLen::Exact => exact(self.payload.len()),
            ref other => other.clone(),
        };
        match len {
            RawLen::Short(n) => out.push(mask_bit | (n & 0x7f)),
            RawLen::Medium(n) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            RawLen::Long(n) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
            RawLen::Exact => unreachable!(),
        }
        if self.masked {
            out.extend_from_slice(&self.mask);
        }
        for (i, b) in self.payload.iter().enumerate() {
            out.push(if self.masked {
                b ^ self.mask[i % 4]
            } else {
                *b
            });
        }
        out
    }
}

/// Frames a client sends are masked, a server's are not; `masked` is how often the frame is.
fn raw_frame(masked: f64) -> impl Strategy<Value = RawFrame> {
    // Mostly FIN with no reserved bits and a known opcode (text, binary, continuation, close,
    // ping, pong), so the parser gets past the first byte; sometimes anything.
    let first = prop_oneof![
        4 => prop::sample::select(vec![0x81u8, 0x82, 0x80, 0x88, 0x89, 0x8a, 0x01, 0x02, 0x00]),
        1 => any::<u8>(),
    ];
    let len = prop_oneof![
        6 => Just(RawLen::Exact),
        1 => (0u8..=125).prop_map(RawLen::Short),
        1 => any::<u16>().prop_map(RawLen::Medium),
        2 => prop_oneof![
            any::<u64>(),
            Just(1u64 << 32),            // 4 GiB
            Just((1u64 << 32) - 1),
            Just(u64::MAX >> 1),
            Just(u64::MAX),
            (15u64 << 20)..=(17u64 << 20), // around the default frame limit
        ]
        .prop_map(RawLen::Long),
    ];
    (
        first,
        prop::bool::weighted(masked),
        len,
        any::<[u8; 4]>(),
        near_utf8(),
    )
        .prop_map(|(first, masked, len, mask, payload)| RawFrame {
            first,
            masked,
            len,
            mask,
            payload,
        })
}

// ---------------------------------------------------------------------------------------------
// Datatypes
// ---------------------------------------------------------------------------------------------

fn text_decode(m: Message) -> Result<String, rxplus::CodecError> {
    Datatype::<String>::decode(&Text, m)
}
fn text_ws_decode(m: Message) -> Result<WSMessage, rxplus::CodecError> {
    Datatype::<WSMessage>::decode(&Text, m)
}
fn binary_decode(m: Message) -> Result<Vec<u8>, rxplus::CodecError> {
    Datatype::<Vec<u8>>::decode(&Binary, m)
}
fn binary_ws_decode(m: Message) -> Result<WSMessage, rxplus::CodecError> {
    Datatype::<WSMessage>::decode(&Binary, m)
}
fn json_decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    m: Message,
) -> Result<T, rxplus::CodecError> {
    Datatype::<T>::decode(&Json, m)
}

proptest! {
    #![proptest_config(config())]

    /// Every datatype takes every message, data or control, without panicking; a control
    /// message is an error for all of them.
    #[test]
    fn every_datatype_takes_any_message(m in any_message()) {
        let data = matches!(m, Message::Text(_) | Message::Binary(_));
        let results = [
            text_decode(m.clone()).is_ok(),
            text_ws_decode(m.clone()).is_ok(),
            binary_decode(m.clone()).is_ok(),
            binary_ws_decode(m.clone()).is_ok(),
            json_decode::<serde_json::Value>(m.clone()).is_ok(),
            json_decode::<Item>(m.clone()).is_ok(),
            Raw.decode(m.clone()).is_ok(),
        ];
        if !data {
            prop_assert_eq!(results, [false; 7], "{:?}", m);
        }
    }

    /// Text: a text message decodes to its text; a binary one to its text exactly when it is
    /// valid UTF-8, and otherwise to an error that says so.
    #[test]
    fn text_decodes_text_and_utf8_binary_only(s in ".{0,64}", b in near_utf8()) {
        prop_assert_eq!(text_decode(Message::Text(s.clone().into())).unwrap(), s.clone());
        prop_assert_eq!(
            text_ws_decode(Message::Text(s.clone().into())).unwrap(),
            WSMessage::Text(s)
        );
        let want = String::from_utf8(b.clone()).ok();
        match text_decode(Message::Binary(b.clone().into())) {
            Ok(got) => prop_assert_eq!(Some(got), want.clone()),
            Err(e) => {
                prop_assert!(want.is_none());
                prop_assert!(e.to_string().contains("UTF-8"), "{}", e);
            }
        }
        prop_assert_eq!(
            text_ws_decode(Message::Binary(b.into())).ok(),
            want.map(WSMessage::Text)
        );
    }

    /// Binary: a binary message decodes to its bytes; a text message is an error.
    #[test]
    fn binary_decodes_binary_and_refuses_text(s in ".{0,64}", b in bytes(256)) {
        prop_assert_eq!(binary_decode(Message::Binary(b.clone().into())).unwrap(), b.clone());
        prop_assert_eq!(
            binary_ws_decode(Message::Binary(b.clone().into())).unwrap(),
            WSMessage::Binary(b)
        );
        prop_assert!(binary_decode(Message::Text(s.clone().into())).is_err());
        prop_assert!(binary_ws_decode(Message::Text(s.into())).is_err());
    }

    /// Raw: both kinds decode, the kind and the payload preserved.
    #[test]
    fn raw_preserves_kind_and_payload(s in ".{0,64}", b in bytes(256)) {
        prop_assert_eq!(Raw.decode(Message::Text(s.clone().into())).unwrap(), WSMessage::Text(s));
        prop_assert_eq!(
            Raw.decode(Message::Binary(b.clone().into())).unwrap(),
            WSMessage::Binary(b)
        );
    }

    /// Json: text or bytes that look like JSON (or not at all) decode exactly when serde_json
    /// parses them, as text and as binary alike.
    #[test]
    fn json_decodes_exactly_what_serde_json_parses(s in jsonish(), b in bytes(64)) {
        type V = serde_json::Value;
        let want = serde_json::from_str::<V>(&s).ok();
        prop_assert_eq!(json_decode::<V>(Message::Text(s.clone().into())).ok(), want.clone());
        let bin = Message::Binary(s.clone().into_bytes().into());
        prop_assert_eq!(json_decode::<V>(bin).ok(), want);
        let want = serde_json::from_slice::<V>(&b).ok();
        prop_assert_eq!(json_decode::<V>(Message::Binary(b.clone().into())).ok(), want);
        // A typed target: any error is an error, never a panic.
        let _ = json_decode::<Item>(Message::Text(s.into()));
        let _ = json_decode::<Item>(Message::Binary(b.into()));
    }

    /// Json: nesting far deeper than the parser's recursion limit is an error, not a stack
    /// overflow (which would abort the process, not fail one test).
    #[test]
    fn json_deep_nesting_is_an_error_not_a_stack_overflow(
        depth in prop_oneof![1usize..200, 200usize..200_000],
        object in any::<bool>(),
        closed in any::<bool>(),
        binary in any::<bool>(),
    ) {
        let (open, close) = if object { (r#"{"a":"#, "}") } else { ("[", "]") };
        let mut s = open.repeat(depth);
        s.push('1');
        if closed {
            s.push_str(&close.repeat(depth));
        }
        let msg = if binary {
            Message::Binary(s.into_bytes().into())
        } else {
            Message::Text(s.into())
        };
        let r = json_decode::<serde_json::Value>(msg);
        // serde_json refuses more than 128 levels; fewer parse when closed.
        prop_assert_eq!(r.is_ok(), closed && depth <= 127, "{:?}", r.err());
    }

    /// Every encoder's output decodes back to the item, for every datatype.
    #[test]
    fn encode_then_decode_is_the_identity(
        s in ".{0,64}",
        b in bytes(256),
        m in ws_message(),
        v in json_value(),
        it in item(),
    ) {
        let wire = Datatype::<String>::encode(&Text, s.clone()).unwrap();
        prop_assert_eq!(text_decode(wire).unwrap(), s.clone());
        let wire = Datatype::<WSMessage>::encode(&Text, WSMessage::Text(s.clone())).unwrap();
        prop_assert_eq!(text_ws_decode(wire).unwrap(), WSMessage::Text(s));
        let wire = Datatype::<Vec<u8>>::encode(&Binary, b.clone()).unwrap();
        prop_assert_eq!(binary_decode(wire).unwrap(), b.clone());
        let wire = Datatype::<WSMessage>::encode(&Binary, WSMessage::Binary(b.clone())).unwrap();
        prop_assert_eq!(binary_ws_decode(wire).unwrap(), WSMessage::Binary(b));
        prop_assert_eq!(Raw.decode(Raw.encode(m.clone()).unwrap()).unwrap(), m.clone());
        let wire = Datatype::<serde_json::Value>::encode(&Json, v.clone()).unwrap();
        prop_assert!(matches!(wire, Message::Text(_)));
        prop_assert_eq!(json_decode::<serde_json::Value>(wire).unwrap(), v);
        let wire = Datatype::<Item>::encode(&Json, it.clone()).unwrap();
        prop_assert_eq!(json_decode::<Item>(wire.clone()).unwrap(), it.clone());
        // The same JSON received as a binary message.
        let bin = Message::Binary(wire.into_data());
        prop_assert_eq!(json_decode::<Item>(bin).unwrap(), it);
        // An item of the wrong kind is an encode error, not a panic.
        match m {
            WSMessage::Text(_) => prop_assert!(Datatype::<WSMessage>::encode(&Binary, m).is_err()),
            WSMessage::Binary(_) => prop_assert!(Datatype::<WSMessage>::encode(&Text, m).is_err()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway framing
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes decode or give an error; what decodes is the frame those bytes encode.
    #[test]
    fn default_frame_decodes_any_bytes_canonically(data in framish()) {
        check_decoded(&data, DefaultFrame::decode(&data));
    }

    /// Every frame decodes back to itself; its wire size is its header plus its payload.
    #[test]
    fn default_frame_round_trips(f in default_frame()) {
        let wire = f.encode();
        prop_assert_eq!(&DefaultFrame::decode(&wire).unwrap(), &f);
        let header = match &f {
            DefaultFrame::Hello(_) | DefaultFrame::HelloAck(_) => 20,
            DefaultFrame::Data { stream: None, .. } => 3,
            DefaultFrame::Data { stream: Some(_), .. } => 23,
        };
        prop_assert_eq!(wire.len(), header + f.payload().map_or(0, |p| p.len()));
    }

    /// HELLO and HELLO_ACK carry the node id and the version through the `Framing` trait.
    #[test]
    fn hello_and_ack_carry_node_and_version(n in node_id(), v in any::<u16>()) {
        let h = DefaultFrame::decode(&DefaultFrame::create_hello(n, v).encode()).unwrap();
        prop_assert!(h.is_hello() && !h.is_hello_ack());
        prop_assert_eq!((h.get_hello_node_id(), h.get_hello_version()), (Some(n), Some(v)));
        let a = DefaultFrame::decode(&DefaultFrame::create_hello_ack(n, v).encode()).unwrap();
        prop_assert!(a.is_hello_ack() && !a.is_hello());
        prop_assert_eq!((a.get_hello_node_id(), a.get_hello_version()), (Some(n), Some(v)));
    }

    /// A valid frame cut at every length: an error, or (DATA only, the message being the frame's
    /// only length) the DATA frame with the shorter payload those bytes encode. Never the wrong
    /// kind, never a HELLO from a prefix.
    #[test]
    fn truncated_frames_err_or_decode_to_the_prefix(f in default_frame()) {
        let wire = f.encode();
        let header = match &f {
            DefaultFrame::Hello(_) | DefaultFrame::HelloAck(_) => wire.len(),
            DefaultFrame::Data { stream: None, .. } => 3,
            DefaultFrame::Data { stream: Some(_), .. } => 23,
        };
        for n in 0..wire.len() {
            let r = DefaultFrame::decode(&wire[..n]);
            if n < header {
                prop_assert!(r.is_err(), "{} bytes of {:?} decoded: {:?}", n, f, r);
            } else {
                let g = r.unwrap();
                prop_assert_eq!(g.stream_id(), f.stream_id());
                prop_assert_eq!(g.seq(), f.seq());
                prop_assert_eq!(&g.payload().unwrap()[..], &f.payload().unwrap()[..n - header]);
            }
        }
    }

    /// Bytes appended to a valid frame: a HELLO or HELLO_ACK of the wrong length is an error; a
    /// DATA frame keeps its header and carries the bytes in its payload.
    #[test]
    fn appended_bytes_err_or_extend_the_payload(f in default_frame(), extra in bytes(32)) {
        prop_assume!(!extra.is_empty());
        let mut wire = f.encode();
        wire.extend_from_slice(&extra);
        let r = DefaultFrame::decode(&wire);
        match f.payload() {
            None => prop_assert!(r.is_err(), "{:?}", r),
            Some(p) => {
                let g = r.unwrap();
                prop_assert_eq!((g.stream_id(), g.seq()), (f.stream_id(), f.seq()));
                let mut want = p.to_vec();
                want.extend_from_slice(&extra);
                prop_assert_eq!(&g.payload().unwrap()[..], &want[..]);
            }
        }
    }

    /// A valid frame with bits flipped anywhere: an error, or the frame the flipped bytes
    /// encode (a flip in the payload, the stream id, the sequence number, the node id or the
    /// version is not detectable: there is no checksum; WebSocket and TCP carry that).
    #[test]
    fn bit_flipped_frames_err_or_decode_canonically(
        f in default_frame(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut wire = f.encode();
        for (at, bit) in flips {
            let i = at.index(wire.len());
            wire[i] ^= 1 << bit;
        }
        check_decoded(&wire, DefaultFrame::decode(&wire));
    }
}

// ---------------------------------------------------------------------------------------------
// Ids from text
// ---------------------------------------------------------------------------------------------

fn is_node_id_text(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

proptest! {
    #![proptest_config(config())]

    /// A node id parses from exactly 32 hex digits (either case) and from nothing else.
    #[test]
    fn node_id_parses_exactly_32_hex_digits(
        s in prop_oneof![".{0,40}", "[0-9a-fA-FgG \\-é]{30,34}", "[0-9a-fA-F]{32}"],
    ) {
        match s.parse::<NodeId>() {
            Ok(id) => {
                prop_assert!(is_node_id_text(&s), "{:?} parsed", s);
                prop_assert_eq!(id.to_string(), s.to_ascii_lowercase());
            }
            Err(e) => {
                prop_assert!(!is_node_id_text(&s), "{:?} refused: {}", s, e);
                prop_assert!(e.to_string().contains("32 hex digits"), "{}", e);
            }
        }
    }

    /// Display then parse is the identity, in either case; the bytes go through unchanged.
    #[test]
    fn node_id_round_trips(n in node_id()) {
        let text = n.to_string();
        prop_assert_eq!(text.parse::<NodeId>().unwrap(), n);
        prop_assert_eq!(text.to_ascii_uppercase().parse::<NodeId>().unwrap(), n);
        prop_assert_eq!(NodeId::from_bytes(*n.as_bytes()), n);
        prop_assert_eq!(format!("{n:?}"), format!("NodeId({text})"));
    }

    /// A connection id parses from any text without panicking; what Display prints parses back.
    #[test]
    fn conn_id_parses_any_text(
        s in prop_oneof![".{0,48}", "[0-9a-fA-F\\-{}urn:uid]{30,48}"],
        u in any::<u128>(),
    ) {
        let _ = s.parse::<ConnId>();
        let id = ConnId::from(uuid::Uuid::from_u128(u));
        prop_assert_eq!(id.to_string().parse::<ConnId>().unwrap(), id);
    }
}

// ---------------------------------------------------------------------------------------------
// Sequence numbers and stream ids from a peer
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// What the gateway does with each DATA frame on a stream (look the stream up; open and
    /// activate it on a miss; check the sequence number), for arbitrary ids and numbers: never
    /// a panic, the table never above its cap, and each check agrees with a model of RFC 1982
    /// numbers; the missing numbers are a range, listed only up to a bound however large.
    #[test]
    fn peer_sequence_numbers_follow_the_model(
        cap in 1usize..8,
        frames in proptest::collection::vec(
            (0u8..12, prop_oneof![any::<u32>(), 0u32..8, (u32::MAX - 4)..=u32::MAX]),
            1..64,
        ),
        closes in proptest::collection::vec(0u8..12, 0..8),
    ) {
        let t = StreamTable::with_capacity_limit(cap);
        let mut model: std::collections::HashMap<u8, u32> = Default::default();
        let sid = |k: u8| [k; 16];
        for (i, (k, seq)) in frames.into_iter().enumerate() {
            // Now and then the application closes a stream.
            if let Some(&c) = closes.get(i % 8) {
                if i % 5 == 4 && t.close(sid(c)).is_ok() {
                    model.remove(&c);
                }
            }
            let r = t.validate_seq(sid(k), seq).or_else(|_| {
                t.open(sid(k))
                    .and_then(|_| t.activate(sid(k)))
                    .and_then(|_| t.validate_seq(sid(k), seq))
            });
            prop_assert!(t.len() <= cap);
            match r {
                Err(_) => {
                    // Refused only when the table is full of live streams.
                    prop_assert!(!model.contains_key(&k));
                    prop_assert_eq!(model.len(), cap);
                }
                Ok(missing) => {
                    let expected = model.get(&k).copied().unwrap_or(0);
                    let ahead = seq.wrapping_sub(expected);
                    if ahead < (1 << 31) {
                        // In order (ahead 0) or a jump: the numbers in between are missing.
                        prop_assert_eq!(missing.len(), ahead);
                        if ahead > 0 {
                            prop_assert_eq!(missing.first(), Some(expected));
                        }
                        model.insert(k, seq.wrapping_add(1));
                    } else {
                        // Behind: late or duplicate; nothing missing, nothing moves.
                        prop_assert!(missing.is_empty());
                        model.insert(k, expected);
                    }
                    let listed = missing.to_vec_bounded(16);
                    prop_assert_eq!(listed.len(), (missing.len() as usize).min(16));
                    for (j, n) in listed.iter().enumerate() {
                        prop_assert_eq!(*n, expected.wrapping_add(j as u32));
                    }
                    prop_assert_eq!(t.get(sid(k)).unwrap().next_seq, model[&k]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Over loopback: the whole receive path
// ---------------------------------------------------------------------------------------------

/// A runner for the loopback properties: fewer cases (each opens a connection), no regression
/// file (no source file is known to a hand-made runner).
fn loopback_runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Reads until the peer closes the socket; the bytes read are dropped.
fn drain(sock: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A server (raw messages, any kind) whose connections get arbitrary frames after the upgrade,
/// then the socket's write half closed. Each connection must end (no thread stuck waiting for a
/// payload that was only claimed), no library thread may panic, nothing may allocate a claimed
/// length, and a good client is served afterwards.
#[test]
fn a_server_survives_arbitrary_frames_after_the_upgrade() {
    let panics = rxws_panics();
    let server = RxWSServer::<WSMessage>::bind_with_config(any_port(), Raw, quiet()).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    server.subscribe(move |m: TaggedData<WSMessage>| g.lock().push(m.data));
    let port = server.local_addr().port();
    let url = format!("ws://127.0.0.1:{port}/fuzz");

    let mut runner = loopback_runner(64);
    runner
        .run(&proptest::collection::vec(raw_frame(0.9), 1..6), |frames| {
            let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let (mut ws, _) = tungstenite::client(url.as_str(), sock).unwrap();
            let mut wire = Vec::new();
            for f in &frames {
                wire.extend_from_slice(&f.to_bytes());
            }
            let sock = ws.get_mut();
            // The server may close first (a protocol error): a failed write is fine.
            let _ = sock.write_all(&wire);
            let _ = sock.shutdown(std::net::Shutdown::Write);
            drain(sock).map_err(|e| {
                TestCaseError::fail(format!("the server never closed: {e} ({frames:?})"))
            })?;
            Ok(())
        })
        .unwrap();

    assert_eq!(rxws_panics(), panics, "a library thread panicked");
    assert_no_huge_allocation();
    // Still serving: a good client's message arrives.
    got.lock().clear();
    let client = RxWSClient::<String>::with_config(local(port, "/fuzz"), Text, quiet()).unwrap();
    assert!(client.wait_connected(WAIT));
    client.on_next("still here".into());
    assert!(wait_until(WAIT, || got
        .lock()
        .contains(&WSMessage::Text("still here".into()))));
    assert!(
        server.stats().decode_errors == 0,
        "Raw decodes every data message"
    );
}

/// A frame header claiming 4 GiB (and one claiming 2⁶³ − 1 bytes) is refused on every receive
/// path without allocating it: a server's connection and a gateway link both close it.
#[test]
fn a_claimed_length_of_gigabytes_is_refused_without_allocating_it() {
    let server = RxWSServer::<Vec<u8>>::bind_with_config(any_port(), Binary, quiet()).unwrap();
    let port = server.local_addr().port();
    let node = GatewayNode::<DefaultFrame>::new(
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .ws(quiet()),
    )
    .unwrap();
    node.start().unwrap();
    let gw = node.local_addr().unwrap();
    for claim in [1u64 << 32, u64::MAX >> 1, (16 << 20) + 1] {
        let frame = RawFrame {
            first: 0x82,
            masked: true,
            len: RawLen::Long(claim),
            mask: [1, 2, 3, 4],
            payload: vec![0xab; 100],
        }
        .to_bytes();

        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let url = format!("ws://127.0.0.1:{port}/big");
        let (mut ws, _) = tungstenite::client(url.as_str(), sock).unwrap();
        ws.get_mut().write_all(&frame).unwrap();
        // The server answers with a close (1009, message too big) without waiting for the
        // claimed bytes.
        match ws.read() {
            Ok(Message::Close(Some(c))) => assert_eq!(u16::from(c.code), 1009, "{claim}"),
            other => panic!("{claim}: expected a close, got {other:?}"),
        }

        // A gateway link, after its handshake.
        let sock = TcpStream::connect(gw).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{gw}/").as_str(), sock).unwrap();
        assert!(matches!(ws.read().unwrap(), Message::Binary(_)), "HELLO");
        let ack = DefaultFrame::create_hello_ack(NodeId::random(), PROTOCOL_VERSION);
        ws.send(Message::Binary(ack.encode().into())).unwrap();
        ws.get_mut().write_all(&frame).unwrap();
        match ws.read() {
            Ok(Message::Close(Some(c))) => assert_eq!(u16::from(c.code), 1009, "{claim}"),
            other => panic!("{claim}: expected a close from the gateway, got {other:?}"),
        }
    }
    assert_no_huge_allocation();
}

/// One message a raw peer sends a gateway node.
#[derive(Debug, Clone)]
enum PeerMsg {
    /// Bytes in a binary message (often shaped like a frame).
    Binary(Vec<u8>),
    /// A text message (gateway frames are binary).
    Text(String),
    /// A valid frame, encoded.
    Frame(DefaultFrame),
}

/// The version the fuzzed gateway nodes speak and require: a HELLO or HELLO_ACK of version 0
/// or 1 is refused (4002), so refusals happen, too.
const MIN_VERSION: u16 = 2;

/// Which side of the handshake the node under test is on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeSide {
    /// The node accepted the link: it sends HELLO and waits for HELLO_ACK.
    Accepting,
    /// The node dialed: it waits for HELLO and answers HELLO_ACK.
    Dialing,
}

impl NodeSide {
    /// The handshake frame the node waits for.
    fn awaited(self, node: NodeId, version: u16) -> DefaultFrame {
        match self {
            NodeSide::Accepting => DefaultFrame::create_hello_ack(node, version),
            NodeSide::Dialing => DefaultFrame::create_hello(node, version),
        }
    }
    fn is_awaited(self, f: &DefaultFrame) -> bool {
        match self {
            NodeSide::Accepting => f.is_hello_ack(),
            NodeSide::Dialing => f.is_hello(),
        }
    }
}

fn peer_msg(side: NodeSide) -> impl Strategy<Value = PeerMsg> {
    prop_oneof![
        4 => framish().prop_map(PeerMsg::Binary),
        1 => ".{0,16}".prop_map(PeerMsg::Text),
        4 => default_frame().prop_map(PeerMsg::Frame),
        // The frame the node waits for, with a version it accepts, so that handshakes complete
        // often, and now and then one it refuses.
        2 => (node_id(), MIN_VERSION..=u16::MAX)
            .prop_map(move |(n, v)| PeerMsg::Frame(side.awaited(n, v))),
        1 => (node_id(), 0..MIN_VERSION)
            .prop_map(move |(n, v)| PeerMsg::Frame(side.awaited(n, v))),
    ]
}

impl PeerMsg {
    fn message(&self) -> Message {
        match self {
            PeerMsg::Binary(b) => Message::Binary(b.clone().into()),
            PeerMsg::Text(s) => Message::Text(s.clone().into()),
            PeerMsg::Frame(f) => Message::Binary(f.encode().into()),
        }
    }
}

/// A node under fuzz: its id, its frames, and how to end a link from its side.
struct Fuzzed<'a> {
    node: &'a GatewayNode<DefaultFrame>,
    rx: crossbeam_channel::Receiver<
        rxplus::Notification<rxplus::gateway::TaggedFrame<DefaultFrame>>,
    >,
}

/// Plays `msgs` to the node from a raw peer on `ws` (the node's HELLO already read, on the
/// accepting side) and checks the outcome against a model of the handshake: before the first
/// acceptable handshake frame nothing is delivered; one below the minimum version is refused
/// with 4002; after the handshake every DATA frame is delivered in order and nothing else is;
/// a last DATA frame proves the link still up. On the dialing side the node answers the
/// handshake with exactly one HELLO_ACK naming itself.
fn play(
    f: &Fuzzed<'_>,
    side: NodeSide,
    ws: &mut tungstenite::WebSocket<TcpStream>,
    link: Option<ConnId>,
    msgs: &[PeerMsg],
) -> Result<(), TestCaseError> {
    let me = f.node.node_id();
    let mut connected = false;
    let mut refused = false;
    let mut want: Vec<DefaultFrame> = Vec::new();
    for m in msgs {
        if refused {
            break;
        }
        if let Message::Binary(b) = m.message() {
            match DefaultFrame::decode(&b) {
                Ok(fr) if !connected && side.is_awaited(&fr) => {
                    let v = fr.get_hello_version().unwrap();
                    if v < MIN_VERSION || fr.get_hello_node_id() == Some(me) {
                        refused = true;
                    } else {
                        connected = true;
                    }
                }
                Ok(fr) if connected && fr.payload().is_some() => want.push(fr),
                _ => {}
            }
        }
    }
    for m in msgs {
        // After a refusal the node closes: later sends may fail.
        if ws.send(m.message()).is_err() {
            prop_assert!(refused);
            break;
        }
    }
    if !refused {
        if !connected {
            let h = side.awaited(NodeId::random(), MIN_VERSION);
            ws.send(Message::Binary(h.encode().into())).unwrap();
        }
        let marker = DefaultFrame::on_stream([0xee; 16], 7, &b"marker"[..]);
        ws.send(Message::Binary(marker.encode().into())).unwrap();
        want.push(marker);
        let mut got = Vec::new();
        while got.len() < want.len() {
            match f.rx.recv_timeout(WAIT) {
                Ok(n) => got.push(n.into_item().unwrap().frame),
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "{e}: got {got:?}, want {want:?}"
                    )))
                }
            }
        }
        prop_assert_eq!(got, want);
        match link {
            Some(id) => f.node.disconnect(id).unwrap(),
            None => {
                let _ = ws.close(None);
            }
        }
    }
    // Until the node closes (a refusal's close frame, its own close, or the answer to ours).
    let mut from_node = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Close(c)) => {
                let code = c.map(|c| u16::from(c.code));
                if refused {
                    prop_assert_eq!(code, Some(4002));
                }
            }
            Ok(Message::Binary(b)) => from_node.push(DefaultFrame::decode(&b).unwrap()),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::Protocol(_)) => {
                break
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                break
            }
            Err(e) => return Err(TestCaseError::fail(format!("the node never closed: {e}"))),
        }
    }
    if let (true, Some(id)) = (refused, link) {
        // A refused dial is not redialed; make sure of it either way (only now: `disconnect`
        // cuts the socket at once, before the node reads the answer to its close).
        let _ = f.node.disconnect(id);
    }
    let ack = DefaultFrame::create_hello_ack(me, MIN_VERSION);
    let answered = if side == NodeSide::Dialing && !refused {
        vec![ack]
    } else {
        vec![]
    };
    prop_assert_eq!(from_node, answered);
    prop_assert!(
        f.rx.try_recv().is_err(),
        "a frame was delivered twice or late"
    );
    Ok(())
}

fn fuzzed_node() -> GatewayNode<DefaultFrame> {
    let node = GatewayNode::<DefaultFrame>::new(
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .versions(MIN_VERSION, MIN_VERSION)
            .ws(quiet()),
    )
    .unwrap();
    node.start().unwrap();
    node
}

/// The node still serves a real peer.
fn still_serves(f: &Fuzzed<'_>) {
    let other = fuzzed_node();
    let id = other
        .connect_to(&format!("ws://{}/", f.node.local_addr().unwrap()))
        .unwrap();
    assert!(other.wait_connected(id, WAIT));
    other.send_to(id, DefaultFrame::data("after")).unwrap();
    let got = f.rx.recv_timeout(WAIT).unwrap().into_item().unwrap().frame;
    assert_eq!(got, DefaultFrame::data("after"));
}

/// A gateway node that accepted a link, fed arbitrary messages around its handshake by the
/// raw peer that dialed it (see [`play`]). No panic, nothing huge allocated, and the node
/// serves the next peer.
#[test]
fn an_accepting_gateway_node_survives_arbitrary_messages_around_its_handshake() {
    let panics = rxws_panics();
    let node = fuzzed_node();
    let f = Fuzzed {
        node: &node,
        rx: node.stream(),
    };
    let addr = node.local_addr().unwrap();
    let url = format!("ws://{addr}/");

    let side = NodeSide::Accepting;
    let mut runner = loopback_runner(64);
    runner
        .run(&proptest::collection::vec(peer_msg(side), 0..12), |msgs| {
            let sock = TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let (mut ws, _) = tungstenite::client(url.as_str(), sock).unwrap();
            match ws.read().unwrap() {
                Message::Binary(b) => {
                    let hello = DefaultFrame::decode(&b).unwrap();
                    prop_assert_eq!(
                        hello,
                        DefaultFrame::create_hello(node.node_id(), MIN_VERSION)
                    );
                }
                other => return Err(TestCaseError::fail(format!("not a HELLO: {other:?}"))),
            }
            play(&f, side, &mut ws, None, &msgs)
        })
        .unwrap();

    assert_eq!(rxws_panics(), panics, "a library thread panicked");
    assert_no_huge_allocation();
    still_serves(&f);
}

/// A gateway node that dialed a raw peer, fed arbitrary messages around its handshake by that
/// peer (see [`play`]); each case dials a fresh listener. No panic, nothing huge allocated,
/// and the node serves the next peer.
#[test]
fn a_dialing_gateway_node_survives_arbitrary_messages_around_its_handshake() {
    let panics = rxws_panics();
    let node = fuzzed_node();
    let f = Fuzzed {
        node: &node,
        rx: node.stream(),
    };

    let side = NodeSide::Dialing;
    let mut runner = loopback_runner(64);
    runner
        .run(&proptest::collection::vec(peer_msg(side), 0..12), |msgs| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let id = node
                .connect_to(&format!("ws://{}/", listener.local_addr().unwrap()))
                .unwrap();
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let mut ws = tungstenite::accept(sock).unwrap();
            play(&f, side, &mut ws, Some(id), &msgs)
        })
        .unwrap();

    assert_eq!(rxws_panics(), panics, "a library thread panicked");
    assert_no_huge_allocation();
    still_serves(&f);
}

/// What a fake server answers one connection of the fuzzed client.
#[derive(Debug, Clone)]
enum Answer {
    /// Bytes in place of the HTTP upgrade response.
    Response(Vec<u8>),
    /// A valid upgrade, then these frames.
    Frames(Vec<RawFrame>),
}

fn answer() -> impl Strategy<Value = Answer> {
    let status_line = prop_oneof![
        Just("HTTP/1.1 101 Switching Protocols\r\n".to_string()),
        "HTTP/1\\.[01] [0-9]{1,4} [A-Za-z ]{0,12}\r\n",
        ".{0,24}",
    ];
    let header = prop_oneof![
        Just("Upgrade: websocket\r\n".to_string()),
        Just("Connection: Upgrade\r\n".to_string()),
        "Sec-WebSocket-Accept: [A-Za-z0-9+/=]{0,30}\r\n",
        "Content-Length: [0-9]{1,20}\r\n",
        "[A-Za-z-]{1,12}: .{0,16}\r\n",
        ".{0,16}\n",
    ];
    prop_oneof![
        1 => bytes(64).prop_map(Answer::Response),
        2 => (status_line, proptest::collection::vec(header, 0..5), any::<bool>(), bytes(16))
            .prop_map(|(status, headers, end, rest)| {
                let mut v = status.into_bytes();
                for h in headers {
                    v.extend_from_slice(h.as_bytes());
                }
                if end {
                    v.extend_from_slice(b"\r\n");
                }
                v.extend_from_slice(&rest);
                Answer::Response(v)
            }),
        4 => proptest::collection::vec(raw_frame(0.1), 1..6).prop_map(Answer::Frames),
    ]
}

/// A client whose connections are answered by a fake server: arbitrary bytes for the HTTP
/// upgrade response, or a valid upgrade and then arbitrary frames (unmasked, as a server's are,
/// mostly). Each connection must end without a library panic or a huge allocation; the client
/// reconnects, and at the end a good server's message is delivered.
#[test]
fn a_client_survives_arbitrary_responses_and_frames() {
    let panics = rxws_panics();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Each case hands the fake server its answer and waits for the connection to end.
    let (answers, next) = crossbeam_channel::bounded::<Answer>(0);
    let (ended_tx, ended) = crossbeam_channel::bounded::<std::io::Result<()>>(0);
    let fake = std::thread::spawn(move || {
        for sock in listener.incoming() {
            let mut sock = sock.unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            let Ok(answer) = next.recv() else { return sock };
            let r = match answer {
                Answer::Response(bytes) => {
                    // Past the client's request, then the answer.
                    let mut req = Vec::new();
                    let mut b = [0u8; 1];
                    while !req.ends_with(b"\r\n\r\n") && sock.read(&mut b).unwrap_or(0) == 1 {
                        req.push(b[0]);
                    }
                    let _ = sock.write_all(&bytes);
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                    drain(&mut sock)
                }
                Answer::Frames(frames) => {
                    let mut ws = tungstenite::accept(sock.try_clone().unwrap()).unwrap();
                    let mut wire = Vec::new();
                    for f in &frames {
                        wire.extend_from_slice(&f.to_bytes());
                    }
                    let _ = ws.get_mut().write_all(&wire);
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                    drain(&mut sock)
                }
            };
            if ended_tx.send(r).is_err() {
                return sock;
            }
        }
        unreachable!()
    });

    // Every case needs a new connection: the client redials whatever the answer was (a 4xx
    // refusal included, which it otherwise takes as final).
    let retry = rxplus::ws::RetryPolicy::default()
        .initial_delay(std::time::Duration::from_millis(1))
        .max_delay(std::time::Duration::from_millis(5))
        .retry_client_errors(true);
    let client =
        RxWSClient::<String>::with_config(local(port, "/fuzz"), Text, quiet().retry(retry))
            .unwrap();
    let rx = client.stream();

    let mut runner = loopback_runner(64);
    runner
        .run(&answer(), |a| {
            answers.send(a.clone()).unwrap();
            match ended.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(TestCaseError::fail(format!(
                    "the client never closed: {e} ({a:?})"
                ))),
                Err(e) => Err(TestCaseError::fail(format!("the fake server died: {e}"))),
            }
        })
        .unwrap();

    assert_eq!(rxws_panics(), panics, "a library thread panicked");
    assert_no_huge_allocation();
    // Whatever text the fuzzed frames carried may have arrived; the client is still working
    // when a good message arrives after them.
    let good = RawFrame {
        first: 0x81,
        masked: false,
        len: RawLen::Exact,
        mask: [0; 4],
        payload: b"still here".to_vec(),
    };
    answers.send(Answer::Frames(vec![good])).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) if n.clone().into_item().as_deref() == Some("still here") => break,
            Ok(_) => continue,
            Err(e) => panic!("the good message never arrived: {e}"),
        }
    }
    assert!(ended.recv_timeout(WAIT).unwrap().is_ok());
    client.dispose();
    drop(answers);
    // Wake the fake server so that it sees the closed channel.
    let _ = TcpStream::connect(("127.0.0.1", port));
    fake.join().unwrap();
}

/// Bytes a client may send in place of (or as) an HTTP upgrade request: request lines, paths
/// and headers near the valid ones, a header far over the handshake's size limit, or anything.
fn upgrade_request() -> impl Strategy<Value = Vec<u8>> {
    let request_line = prop_oneof![
        "GET /[a-z0-9/%?=&#.\\-]{0,16} HTTP/1\\.1\r\n",
        "[A-Z]{1,7} [^\r\n ]{0,16} HTTP/[0-9]\\.[0-9]\r\n",
        "GET (http://[a-z.:0-9]{0,12})?/.{0,12} HTTP/1\\.1\r\n",
        ".{0,24}",
    ];
    let header = prop_oneof![
        Just("Host: localhost\r\n".to_string()),
        Just("Upgrade: websocket\r\n".to_string()),
        Just("Connection: Upgrade\r\n".to_string()),
        Just("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_string()),
        "Sec-WebSocket-Key: [A-Za-z0-9+/=]{0,30}\r\n",
        "Sec-WebSocket-Version: [0-9]{1,3}\r\n",
        Just("Sec-WebSocket-Version: 13\r\n".to_string()),
        "Content-Length: [0-9]{1,20}\r\n",
        "[A-Za-z-]{1,12}: .{0,16}\r\n",
        ".{0,16}\n",
    ];
    // Bytes after the request are junk to tungstenite (400); usually there are none.
    let rest = prop_oneof![3 => Just(Vec::new()), 1 => bytes(24)];
    prop_oneof![
        1 => bytes(64),
        // A valid upgrade with one header left out or replaced, or the path changed: 101, 400
        // or 426.
        3 => (0usize..7, header.clone(), "/[!-~]{0,16}").prop_map(|(at, replace, path)| {
            let mut lines = vec![
                format!("GET {path} HTTP/1.1\r\n"),
                "Host: localhost\r\n".to_string(),
                "Upgrade: websocket\r\n".to_string(),
                "Connection: Upgrade\r\n".to_string(),
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_string(),
                "Sec-WebSocket-Version: 13\r\n".to_string(),
            ];
            if at < lines.len() {
                if at > 0 && replace.len() % 2 == 0 {
                    lines.remove(at);
                } else {
                    lines[at] = replace;
                }
            }
            lines.push("\r\n".to_string());
            lines.concat().into_bytes()
        }),
        6 => (request_line, proptest::collection::vec(header, 0..8), any::<bool>(), rest)
            .prop_map(|(line, headers, end, rest)| {
                let mut v = line.into_bytes();
                for h in headers {
                    v.extend_from_slice(h.as_bytes());
                }
                if end {
                    v.extend_from_slice(b"\r\n");
                }
                v.extend_from_slice(&rest);
                v
            }),
        // A header past tungstenite's 64 KiB handshake limit, never ended.
        1 => (60_000usize..200_000).prop_map(|n| {
            let mut v = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nX-Long: ".to_vec();
            v.resize(v.len() + n, b'a');
            v
        }),
    ]
}

/// A server's and a gateway node's HTTP upgrade fed arbitrary request bytes, then the write
/// half closed: each connection ends (with a 101, 400 or 426, or just closed), no library
/// thread panics, nothing huge is allocated, and both still serve a good client.
#[test]
fn the_http_upgrade_survives_arbitrary_requests() {
    let panics = rxws_panics();
    let (server, got) = collecting_server(0);
    let node = GatewayNode::<DefaultFrame>::new(
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .ws(quiet()),
    )
    .unwrap();
    node.start().unwrap();
    let targets = [server.local_addr(), node.local_addr().unwrap()];

    let mut runner = loopback_runner(64);
    runner
        .run(&(upgrade_request(), any::<bool>()), |(req, gateway)| {
            let mut sock = TcpStream::connect(targets[usize::from(gateway)]).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            // The peer may answer and close before all of a long request is written.
            let _ = sock.write_all(&req);
            let _ = sock.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "no end after {} bytes of answer: {e}",
                            answer.len()
                        )))
                    }
                }
            }
            // Nothing, or an HTTP response.
            prop_assert!(
                answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
            Ok(())
        })
        .unwrap();

    assert_eq!(rxws_panics(), panics, "a library thread panicked");
    assert_no_huge_allocation();
    let client = RxWSClient::<String>::with_config(
        local(server.local_addr().port(), "/after"),
        Text,
        quiet(),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
    client.on_next("after".into());
    assert!(wait_until(WAIT, || got
        .lock()
        .contains(&"after".to_string())));
    let other = GatewayNode::<DefaultFrame>::new(
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .ws(quiet()),
    )
    .unwrap();
    let id = other.connect_to(&format!("ws://{}/", targets[1])).unwrap();
    assert!(other.wait_connected(id, WAIT));
}

// ---------------------------------------------------------------------------------------------
// Python pickle (feature `pickle`)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "pickle")]
mod pickle {
    use super::*;
    use rxplus::ws::pickle::{BigInt, HashableValue, Pickle, PickleValue, Value};

    /// One opcode of a pickle, with an argument of the right shape (or a wrong one, sometimes):
    /// every opcode the decoder knows and some it does not, lengths near the data and claims
    /// of gigabytes.
    fn opcode() -> impl Strategy<Value = Vec<u8>> {
        let simple = prop::sample::select(
            b"N\x88\x89]})\x8f(a s e u \x90 l t d \x91 \x85\x86\x87 0 1 2 \x94 R \x81 \x92 b o \x93 ."
                .iter()
                .copied()
                .filter(|&b| b != b' ')
                .collect::<Vec<u8>>(),
        )
        .prop_map(|b| vec![b]);
        let fixed = (
            prop::sample::select(vec![b'K', b'M', b'J', b'G', b'h', b'j', b'q', b'r', 0x80]),
            bytes(8),
        )
            .prop_map(|(op, arg)| {
                let n = match op {
                    b'K' | b'h' | b'q' | 0x80 => 1,
                    b'M' => 2,
                    b'J' | b'j' | b'r' => 4,
                    _ => 8,
                };
                let mut v = vec![op];
                v.extend(arg.iter().copied().chain(std::iter::repeat(0)).take(n));
                v
            });
        let counted = (
            prop::sample::select(vec![
                b'U', b'C', 0x8c, 0x8a, b'X', b'T', b'B', 0x8b, 0x8e, 0x96,
            ]),
            prop_oneof![0u64..16, Just(u64::from(u32::MAX)), Just(u64::MAX)],
            bytes(16),
        )
            .prop_map(|(op, len, data)| {
                let width = match op {
                    b'U' | b'C' | 0x8c | 0x8a => 1,
                    b'X' | b'T' | b'B' | 0x8b => 4,
                    _ => 8,
                };
                let mut v = vec![op];
                v.extend(&len.to_le_bytes()[..width]);
                v.extend(data);
                v
            });
        let lines = (
            prop::sample::select(vec![b'I', b'L', b'F', b'S', b'V', b'p', b'g', b'c']),
            "[0-9a-z.\\-']{0,8}",
        )
            .prop_map(|(op, text)| {
                let mut v = vec![op];
                v.extend(text.as_bytes());
                v.push(b'\n');
                if op == b'c' {
                    // GLOBAL takes a module line and a name line.
                    v.extend(b"set\n");
                }
                v
            });
        prop_oneof![6 => simple, 2 => fixed, 2 => counted, 1 => lines, 1 => bytes(4)]
    }

    fn picklish() -> impl Strategy<Value = Vec<u8>> {
        (
            2u8..=5,
            proptest::collection::vec(opcode(), 0..24),
            any::<bool>(),
        )
            .prop_map(|(proto, ops, stop)| {
                let mut v = vec![0x80, proto];
                v.extend(ops.concat());
                if stop {
                    v.push(b'.');
                }
                v
            })
    }

    fn hashable() -> impl Strategy<Value = HashableValue> {
        prop_oneof![
            Just(HashableValue::None),
            any::<bool>().prop_map(HashableValue::Bool),
            any::<i64>().prop_map(HashableValue::I64),
            ".{0,8}".prop_map(HashableValue::String),
            bytes(8).prop_map(HashableValue::Bytes),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<[u8; 12]>().prop_map(|b| {
                // Beyond 64 bits (what decodes as I64 never comes back as Int).
                let big = BigInt::from_signed_bytes_le(&b) * BigInt::from(1u64 << 40);
                match i64::try_from(&big) {
                    Ok(i) => Value::I64(i),
                    Err(_) => Value::Int(big),
                }
            }),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Value::F64),
            ".{0,16}".prop_map(Value::String),
            bytes(16).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
                proptest::collection::btree_set(hashable(), 0..6).prop_map(Value::Set),
                proptest::collection::btree_set(hashable(), 0..6).prop_map(Value::FrozenSet),
                proptest::collection::btree_map(hashable(), inner, 0..6).prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Pickle-shaped bytes decode or give an error, never panic, and never ask for the
        /// gigabytes a length claims.
        #[test]
        fn pickle_decoders_take_any_bytes(b in picklish(), raw in bytes(64)) {
            for data in [b, raw] {
                let _ = PickleValue::default().decode(Message::Binary(data.clone().into()));
                let _ = Datatype::<serde_json::Value>::decode(
                    &Pickle::default(),
                    Message::Binary(data.into()),
                );
            }
            assert_no_huge_allocation();
        }

        /// What we encode decodes back to itself.
        #[test]
        fn pickle_values_round_trip(v in value()) {
            let wire = PickleValue::default().encode(v.clone()).unwrap();
            prop_assert_eq!(PickleValue::default().decode(wire).unwrap(), v);
        }
    }
}
