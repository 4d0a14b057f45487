//! Resumable links: the settings ([`ResumeConfig`]), what the events say
//! ([`ResumeFailure`]), the link format 2 frames, the upgrade header that negotiates them, and a
//! link's session (sequence numbers and the bounded resend buffer).
//!
//! `docs/gateway.md` ("Resume") describes the protocol; the design is in
//! `ADR/2026-12-05-gateway-resume.md`.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::gateway::NodeId;
use crate::overflow::OverflowStrategy;
use crate::CodecError;

/// Resume settings of a node ([`GatewayConfig::resume`](crate::gateway::GatewayConfig)):
/// off by default. A link is resumable when both of its nodes have it on.
///
/// ```
/// use rxplus::gateway::{GatewayConfig, ResumeConfig};
/// use std::time::Duration;
///
/// let cfg = GatewayConfig::default().resume(
///     ResumeConfig::enabled()
///         .buffer(10_000, 16 << 20)
///         .ack(64, Duration::from_millis(20))
///         .session_expiry(Duration::from_secs(30)),
/// );
/// assert!(cfg.resume.enabled);
/// cfg.validate()?;
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeConfig {
    /// Offer (dialing) and accept (listening) resumable links. Default off.
    pub enabled: bool,
    /// Unacknowledged frames kept for a replay, at most, per link. Default 16,384 (the window
    /// of frames in flight: `rxplus-bench` g1 measured 0.71× the plain link's throughput with
    /// 4,096 and acknowledgements every 64 frames, 0.86× with these defaults). When full,
    /// the link's overflow policy decides: `drop-new` refuses the send, `drop-old` gives up the
    /// oldest unacknowledged frame (a later resume that needs it fails, and says how many
    /// frames were lost), `buffer-k` and `disconnect` end the link.
    pub buffer_frames: usize,
    /// Bytes of unacknowledged frames kept, at most, per link. Default 16 MiB (held only while
    /// frames are unacknowledged; an emptied buffer gives large memory back).
    pub buffer_bytes: usize,
    /// A receiver acknowledges after this many frames... Default 1,024.
    pub ack_every: u32,
    /// ...or this long after an unacknowledged frame, whichever comes first. Default 20 ms.
    pub ack_interval: Duration,
    /// How long a link waits to be resumed after its transport dropped; then it ends with
    /// [`ResumeFailure::Expired`]. Default 60 s.
    pub session_expiry: Duration,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        ResumeConfig {
            enabled: false,
            buffer_frames: 16_384,
            buffer_bytes: 16 << 20,
            ack_every: 1024,
            ack_interval: Duration::from_millis(20),
            session_expiry: Duration::from_secs(60),
        }
    }
}

impl ResumeConfig {
    /// The defaults, turned on.
    pub fn enabled() -> Self {
        ResumeConfig {
            enabled: true,
            ..ResumeConfig::default()
        }
    }
    /// The resend buffer's bounds.
    pub fn buffer(mut self, frames: usize, bytes: usize) -> Self {
        self.buffer_frames = frames;
        self.buffer_bytes = bytes;
        self
    }
    /// Acknowledge every `every` frames or `interval` after an unacknowledged one.
    pub fn ack(mut self, every: u32, interval: Duration) -> Self {
        self.ack_every = every;
        self.ack_interval = interval;
        self
    }
    /// How long an interrupted link may wait for its resume.
    pub fn session_expiry(mut self, d: Duration) -> Self {
        self.session_expiry = d;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let zero = |field: &'static str| Error::config(field, "must be above zero");
        if self.buffer_frames == 0 {
            return Err(zero("resume.buffer_frames"));
        }
        if self.buffer_bytes == 0 {
            return Err(zero("resume.buffer_bytes"));
        }
        if self.ack_every == 0 {
            return Err(zero("resume.ack_every"));
        }
        if self.ack_interval.is_zero() {
            return Err(zero("resume.ack_interval"));
        }
        if self.session_expiry.is_zero() {
            return Err(zero("resume.session_expiry"));
        }
        Ok(())
    }
}

/// Why a link could not be resumed ([`GatewayEvent::ResumeFailed`](crate::gateway::GatewayEvent)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResumeFailure {
    /// The other node does not know the session: it restarted, or it ended the session (its
    /// expiry ran out first), or it no longer offers resume.
    UnknownSession,
    /// A resend buffer (this side's or the other's) gave up frames the other side still
    /// needed.
    Overflow,
    /// The transport stayed down longer than `session_expiry`.
    Expired,
}

impl fmt::Display for ResumeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResumeFailure::UnknownSession => "unknown-session",
            ResumeFailure::Overflow => "overflow",
            ResumeFailure::Expired => "expired",
        })
    }
}

/// A link's session id: 16 random bytes, 32 hex digits in logs and headers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionId(pub(crate) [u8; 16]);

impl SessionId {
    pub(crate) fn random() -> Self {
        SessionId(*NodeId::random().as_bytes())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        NodeId::from_bytes(self.0).fmt(f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// The upgrade request header a resuming dialer sends; the accepting node answers it with
/// [`RESUME_FORMAT`] when the link is resumable.
pub(crate) const RESUME_HEADER: &str = "x-rxplus-resume";
/// The link format of a resumable link, and the accepting node's answer in [`RESUME_HEADER`].
pub(crate) const RESUME_FORMAT: u8 = 2;

/// What a dialer's [`RESUME_HEADER`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeRequest {
    /// A resumable link with a new session.
    New,
    /// Resume `session`, whose frames up to `recv` (in order) the dialer has.
    Resume { session: SessionId, recv: u64 },
}

impl ResumeRequest {
    pub(crate) fn header_value(&self) -> String {
        match self {
            ResumeRequest::New => "new".into(),
            ResumeRequest::Resume { session, recv } => format!("{session} {recv}"),
        }
    }

    /// `None` for a malformed value (the link is then not resumable).
    pub(crate) fn parse(v: &str) -> Option<Self> {
        let v = v.trim();
        if v == "new" {
            return Some(ResumeRequest::New);
        }
        let (session, recv) = v.split_once(' ')?;
        let session: NodeId = session.parse().ok()?;
        Some(ResumeRequest::Resume {
            session: SessionId(*session.as_bytes()),
            recv: recv.trim().parse().ok()?,
        })
    }
}

/// HELLO / HELLO_ACK status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// A new session (the first handshake, or a fresh link after a failed resume; see
    /// `failed`).
    Fresh,
    /// The session named is resumed.
    Resumed,
    /// The session named in the request is unknown here: a fresh one follows.
    Unknown,
    /// This side cannot replay what the other needs: a fresh session follows.
    Overflow,
}

impl Status {
    fn byte(self) -> u8 {
        match self {
            Status::Fresh => 0,
            Status::Resumed => 1,
            Status::Unknown => 2,
            Status::Overflow => 3,
        }
    }
    fn from_byte(b: u8) -> std::result::Result<Self, CodecError> {
        Ok(match b {
            0 => Status::Fresh,
            1 => Status::Resumed,
            2 => Status::Unknown,
            3 => Status::Overflow,
            other => return Err(CodecError::msg(format!("unknown resume status {other}"))),
        })
    }
    /// The failure a status reports about an earlier session.
    pub(crate) fn failure(self) -> Option<ResumeFailure> {
        match self {
            Status::Fresh | Status::Resumed => None,
            Status::Unknown => Some(ResumeFailure::UnknownSession),
            Status::Overflow => Some(ResumeFailure::Overflow),
        }
    }
}

/// A format 2 HELLO or HELLO_ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkHello {
    pub(crate) node_id: NodeId,
    pub(crate) version: u16,
    pub(crate) session: SessionId,
    /// The highest sequence number received in order on `session` (0: none).
    pub(crate) recv: u64,
    pub(crate) status: Status,
}

/// A format 2 frame: the resumable link's own framing around the application's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkFrame<'a> {
    Hello(LinkHello),
    HelloAck(LinkHello),
    /// Link sequence number, then the application frame's own encoding.
    Data {
        seq: u64,
        frame: &'a [u8],
    },
    /// Everything up to this sequence number arrived.
    Ack(u64),
}

const KIND_HELLO: u8 = 1;
const KIND_HELLO_ACK: u8 = 2;
const KIND_DATA: u8 = 3;
const KIND_ACK: u8 = 4;
/// format, kind, node id, version, session, recv, status.
const HELLO_LEN: usize = 2 + 16 + 2 + 16 + 8 + 1;
/// format, kind, sequence number.
pub(crate) const DATA_HEADER: usize = 2 + 8;
const ACK_LEN: usize = 2 + 8;

impl LinkFrame<'_> {
    pub(crate) fn encode(&self) -> Bytes {
        match self {
            LinkFrame::Hello(h) | LinkFrame::HelloAck(h) => {
                let mut b = BytesMut::with_capacity(HELLO_LEN);
                b.put_u8(RESUME_FORMAT);
                b.put_u8(if matches!(self, LinkFrame::Hello(_)) {
                    KIND_HELLO
                } else {
                    KIND_HELLO_ACK
                });
                b.put_slice(h.node_id.as_bytes());
                b.put_u16(h.version);
                b.put_slice(&h.session.0);
                b.put_u64(h.recv);
                b.put_u8(h.status.byte());
                b.freeze()
            }
            LinkFrame::Data { seq, frame } => data(*seq, frame),
            LinkFrame::Ack(seq) => {
                let mut b = BytesMut::with_capacity(ACK_LEN);
                b.put_u8(RESUME_FORMAT);
                b.put_u8(KIND_ACK);
                b.put_u64(*seq);
                b.freeze()
            }
        }
    }

    /// Never panics: anything malformed is a [`CodecError`] saying what.
    pub(crate) fn decode(data: &[u8]) -> std::result::Result<LinkFrame<'_>, CodecError> {
        let (&format, rest) = data
            .split_first()
            .ok_or_else(|| CodecError::msg("empty link frame"))?;
        if format != RESUME_FORMAT {
            return Err(CodecError::msg(format!(
                "link format {format} on a resumable link (expected {RESUME_FORMAT})"
            )));
        }
        let (&kind, body) = rest
            .split_first()
            .ok_or_else(|| CodecError::msg("link frame of 1 byte: no kind"))?;
        let u64_at = |b: &[u8]| b.first_chunk::<8>().map(|c| u64::from_be_bytes(*c));
        match kind {
            KIND_HELLO | KIND_HELLO_ACK => {
                if data.len() != HELLO_LEN {
                    return Err(CodecError::msg(format!(
                        "resume HELLO of {} bytes, expected {HELLO_LEN}",
                        data.len()
                    )));
                }
                let bad = || CodecError::msg("resume HELLO truncated");
                let (id, b) = body.split_first_chunk::<16>().ok_or_else(bad)?;
                let (version, b) = b.split_first_chunk::<2>().ok_or_else(bad)?;
                let (session, b) = b.split_first_chunk::<16>().ok_or_else(bad)?;
                let (recv, b) = b.split_first_chunk::<8>().ok_or_else(bad)?;
                let status = Status::from_byte(*b.first().ok_or_else(bad)?)?;
                let h = LinkHello {
                    node_id: NodeId::from_bytes(*id),
                    version: u16::from_be_bytes(*version),
                    session: SessionId(*session),
                    recv: u64::from_be_bytes(*recv),
                    status,
                };
                Ok(if kind == KIND_HELLO {
                    LinkFrame::Hello(h)
                } else {
                    LinkFrame::HelloAck(h)
                })
            }
            KIND_DATA => {
                let seq = u64_at(body).ok_or_else(|| {
                    CodecError::msg(format!("link DATA of {} bytes: no sequence", data.len()))
                })?;
                Ok(LinkFrame::Data {
                    seq,
                    frame: body.get(8..).unwrap_or_default(),
                })
            }
            KIND_ACK => {
                if data.len() != ACK_LEN {
                    return Err(CodecError::msg(format!(
                        "link ACK of {} bytes, expected {ACK_LEN}",
                        data.len()
                    )));
                }
                Ok(LinkFrame::Ack(u64_at(body).unwrap_or_default()))
            }
            other => Err(CodecError::msg(format!("unknown link frame kind {other}"))),
        }
    }
}

/// A DATA link frame around `frame` (the application frame's encoding).
pub(crate) fn data(seq: u64, frame: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(DATA_HEADER + frame.len());
    b.put_u8(RESUME_FORMAT);
    b.put_u8(KIND_DATA);
    b.put_u64(seq);
    b.put_slice(frame);
    b.freeze()
}

/// What the resend buffer made of one more frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Kept (the oldest frames given up first under `drop-old`: how many).
    Kept(usize),
    /// Refused (`drop-new`).
    Refused,
    /// The link must end (`buffer-k`, `disconnect`).
    Disconnect,
}

/// One link's session: the sequence numbers both ways and the frames sent but not yet
/// acknowledged.
///
/// The unacknowledged frames are copied into one byte ring (with their lengths alongside)
/// rather than kept as shared buffers: sending costs a copy of the frame and no allocation, and
/// an acknowledgement only moves the ring's start. (Keeping a second reference to each frame
/// cost an allocation per frame, freed later on the reader thread: 0.68× the plain link's
/// throughput in `rxplus-bench` g1.)
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    /// The sequence number of the next frame sent (the first is 1).
    next: u64,
    /// The highest sequence number the other side acknowledged.
    acked: u64,
    /// The sequence number of the oldest frame held (`next` when none is).
    first: u64,
    /// Unacknowledged frames, oldest first: their lengths, and their bytes back to back.
    lens: VecDeque<u32>,
    ring: VecDeque<u8>,
    policy: OverflowStrategy,
    max_frames: usize,
    max_bytes: usize,
    /// Frames given up unacknowledged by `drop-old`.
    pub(crate) evicted: u64,
}

/// A ring that grew beyond this and emptied gives its memory back (`trim`).
const RING_KEEP: usize = 256 << 10;

impl Session {
    pub(crate) fn new(
        id: SessionId,
        policy: OverflowStrategy,
        max_frames: usize,
        max_bytes: usize,
    ) -> Self {
        Session {
            id,
            next: 1,
            acked: 0,
            first: 1,
            lens: VecDeque::new(),
            ring: VecDeque::new(),
            policy,
            max_frames,
            max_bytes,
            evicted: 0,
        }
    }

    /// The highest sequence number sent (0: none).
    pub(crate) fn last(&self) -> u64 {
        self.next - 1
    }

    /// Frames held for a replay.
    pub(crate) fn held(&self) -> usize {
        self.lens.len()
    }

    /// Drops the `n` oldest frames held.
    fn pop(&mut self, n: usize) {
        let bytes: usize = self.lens.drain(..n).map(|l| l as usize).sum();
        self.ring.drain(..bytes);
        self.first += n as u64;
    }

    /// Gives back the memory of a ring that grew beyond `RING_KEEP` and is empty now (called
    /// on the resume thread's tick, not on every acknowledgement: a busy link would free and
    /// grow its ring over and over).
    pub(crate) fn trim(&mut self) {
        if self.lens.is_empty() && self.ring.capacity() > RING_KEEP {
            self.ring = VecDeque::new();
            self.lens = VecDeque::new();
        }
    }

    /// Applies the bounds to one more frame of `len` bytes (the link frame's length).
    /// `keep_old`: a replay is being prepared, so `drop-old` refuses instead of giving up frames
    /// the other side was just told are here.
    pub(crate) fn admit(&mut self, len: usize, keep_old: bool) -> Admit {
        let full = |s: &Self| {
            !s.lens.is_empty() && (s.lens.len() >= s.max_frames || s.ring.len() + len > s.max_bytes)
        };
        if !full(self) {
            return Admit::Kept(0);
        }
        match self.policy {
            OverflowStrategy::DropNew => Admit::Refused,
            OverflowStrategy::DropOld if keep_old => Admit::Refused,
            OverflowStrategy::DropOld => {
                let mut n = 0;
                while full(self) {
                    self.pop(1);
                    self.evicted += 1;
                    n += 1;
                }
                Admit::Kept(n)
            }
            _ => Admit::Disconnect,
        }
    }

    /// Numbers `frame`, keeps it, and returns it as a link DATA frame (call `admit` first).
    #[cfg(test)]
    pub(crate) fn push(&mut self, frame: &[u8]) -> Bytes {
        let mut v = vec![0; DATA_HEADER];
        v.extend_from_slice(frame);
        self.push_framed(v)
    }

    /// Numbers a link DATA frame built in place (`DATA_HEADER` bytes reserved at its start,
    /// then the application frame), keeps a copy and returns it (call `admit` first).
    pub(crate) fn push_framed(&mut self, mut framed: Vec<u8>) -> Bytes {
        let seq = self.next;
        self.next += 1;
        if let Some(h) = framed.first_chunk_mut::<DATA_HEADER>() {
            h[0] = RESUME_FORMAT;
            h[1] = KIND_DATA;
            h[2..].copy_from_slice(&seq.to_be_bytes());
        }
        // A frame is at most a WebSocket message, far below 4 GiB (`max_message_size`).
        self.lens
            .push_back(u32::try_from(framed.len()).unwrap_or(u32::MAX));
        self.ring.extend(framed.iter());
        Bytes::from(framed)
    }

    /// The other side has everything up to `upto`. Acknowledgements of frames never sent are
    /// ignored (`false`).
    pub(crate) fn ack(&mut self, upto: u64) -> bool {
        if upto > self.last() {
            return false;
        }
        self.acked = self.acked.max(upto);
        if upto >= self.first {
            let n = usize::try_from(upto - self.first + 1)
                .unwrap_or(usize::MAX)
                .min(self.lens.len());
            self.pop(n);
        }
        true
    }

    /// Whether every frame after `recv` is still here to replay.
    pub(crate) fn can_replay_from(&self, recv: u64) -> bool {
        recv <= self.last() && recv + 1 >= self.first
    }

    /// Frames the other side will never get when the session ends now, given it has every
    /// frame up to `recv` (the acknowledged ones when its count is not known).
    pub(crate) fn lost(&self, recv: Option<u64>) -> u64 {
        self.last()
            .saturating_sub(recv.unwrap_or(self.acked).max(self.acked))
    }

    /// Acknowledges `recv` and returns the frames after it, in order, for a replay.
    pub(crate) fn replay_from(&mut self, recv: u64) -> Vec<Bytes> {
        self.ack(recv);
        let mut at = 0;
        self.lens
            .iter()
            .map(|&l| {
                let l = l as usize;
                let b: Vec<u8> = self.ring.range(at..at + l).copied().collect();
                at += l;
                Bytes::from(b)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(status: Status) -> LinkHello {
        LinkHello {
            node_id: NodeId::from_bytes([7; 16]),
            version: 1,
            session: SessionId([9; 16]),
            recv: 1 << 40,
            status,
        }
    }

    #[test]
    fn link_frames_round_trip() {
        for f in [
            LinkFrame::Hello(hello(Status::Fresh)),
            LinkFrame::HelloAck(hello(Status::Resumed)),
            LinkFrame::Hello(hello(Status::Unknown)),
            LinkFrame::HelloAck(hello(Status::Overflow)),
            LinkFrame::Data {
                seq: 42,
                frame: b"abc",
            },
            LinkFrame::Data { seq: 1, frame: b"" },
            LinkFrame::Ack(u64::MAX),
        ] {
            let wire = f.encode();
            assert_eq!(wire[0], RESUME_FORMAT);
            assert_eq!(LinkFrame::decode(&wire).unwrap(), f);
        }
    }

    #[test]
    fn malformed_link_frames_are_errors() {
        let good = LinkFrame::Hello(hello(Status::Fresh)).encode();
        for bad in [
            &[][..],
            &[2][..],
            &[1, 3, 0][..],
            &[2, 9][..],
            &[2, 3, 0, 0][..],
            &[2, 4, 0][..],
            &good[..good.len() - 1],
        ] {
            assert!(LinkFrame::decode(bad).is_err(), "{bad:?}");
        }
        let mut status = good.to_vec();
        *status.last_mut().unwrap() = 9;
        assert!(LinkFrame::decode(&status).is_err());
    }

    #[test]
    fn request_header_round_trips() {
        let r = ResumeRequest::Resume {
            session: SessionId([0xab; 16]),
            recv: 77,
        };
        assert_eq!(ResumeRequest::parse(&r.header_value()), Some(r));
        assert_eq!(ResumeRequest::parse("new"), Some(ResumeRequest::New));
        for bad in ["", "old", "abab 1", "abababababababababababababababab x"] {
            assert_eq!(ResumeRequest::parse(bad), None, "{bad}");
        }
    }

    fn session(policy: OverflowStrategy, frames: usize) -> Session {
        Session::new(SessionId([1; 16]), policy, frames, 1 << 20)
    }

    fn send(s: &mut Session, n: usize) -> Vec<Admit> {
        (0..n)
            .map(|_| {
                let a = s.admit(DATA_HEADER + 3, false);
                if a != Admit::Refused && a != Admit::Disconnect {
                    s.push(b"abc");
                }
                a
            })
            .collect()
    }

    #[test]
    fn acks_free_the_buffer_and_replay_starts_after_recv() {
        let mut s = session(OverflowStrategy::DropNew, 10);
        send(&mut s, 6);
        assert_eq!((s.last(), s.held()), (6, 6));
        assert!(s.ack(2));
        assert!(!s.ack(7), "an ack beyond what was sent is ignored");
        assert_eq!(s.held(), 4);
        assert!(s.can_replay_from(2) && s.can_replay_from(6));
        assert!(!s.can_replay_from(1), "frame 2 is gone");
        assert!(!s.can_replay_from(7));
        assert_eq!(s.lost(Some(4)), 2);
        assert_eq!(s.lost(None), 4);
        let replay = s.replay_from(4);
        assert_eq!(replay.len(), 2);
        assert_eq!(
            LinkFrame::decode(&replay[0]).unwrap(),
            LinkFrame::Data {
                seq: 5,
                frame: b"abc"
            }
        );
    }

    #[test]
    fn full_buffer_follows_the_policy() {
        let mut s = session(OverflowStrategy::DropNew, 3);
        assert_eq!(send(&mut s, 4)[3], Admit::Refused);
        assert_eq!(s.last(), 3);

        let mut s = session(OverflowStrategy::DropOld, 3);
        assert_eq!(send(&mut s, 5)[3..], [Admit::Kept(1), Admit::Kept(1)]);
        assert_eq!((s.last(), s.held(), s.evicted), (5, 3, 2));
        assert!(!s.can_replay_from(1) && s.can_replay_from(2));

        let mut s = session(OverflowStrategy::Disconnect, 2);
        assert_eq!(send(&mut s, 3)[2], Admit::Disconnect);

        // Bytes bound: one frame over it still goes when the buffer is empty.
        let mut s = Session::new(SessionId([1; 16]), OverflowStrategy::DropNew, 100, 20);
        assert_eq!(s.admit(500, false), Admit::Kept(0));
        s.push(&[0; 490]);
        assert_eq!(s.admit(20, false), Admit::Refused);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = LinkFrame::decode(&data);
        }

        #[test]
        fn any_data_frame_round_trips(seq in proptest::prelude::any::<u64>(), body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let wire = data(seq, &body);
            proptest::prop_assert_eq!(LinkFrame::decode(&wire).unwrap(), LinkFrame::Data { seq, frame: &body });
        }

        #[test]
        fn any_format_2_prefix_decodes_without_panic(kind in 0u8..6, rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut wire = vec![RESUME_FORMAT, kind];
            wire.extend_from_slice(&rest);
            let _ = LinkFrame::decode(&wire);
        }
    }
}
