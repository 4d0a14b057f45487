//! The read half of a connection: frames parsed from one read buffer, payloads handed out as
//! slices of it (no copy), RFC 6455 checked as each header arrives (see
//! `ADR/2026-12-06-own-frame-parser.md`).
//!
//! It replaces tungstenite's reader after the opening handshake and keeps its contract: the
//! same `Message` values and the same `tungstenite::Error` for each violation, so the close
//! code the reader answers with (`reader::fail_code`) is unchanged.

use std::io::{self, Read};

use bytes::{Buf, BytesMut};
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Bytes, Error, Message, Utf8Bytes};

use super::frame::apply_mask;

/// The smallest read offered between frames.
const MIN_CHUNK: usize = 4 << 10;
/// The longest frame header: 2 bytes, a 64-bit length, a mask.
const MAX_HEADER: usize = 14;
/// The most reserved at once for one frame (the default `max_frame_size`).
const RESERVE_AT_ONCE: usize = 16 << 20;
/// The largest read offered to a streaming peer (unless `read_buffer_size` is larger): what a
/// server connection reads towards one message before drawing on the inbound budget.
const MAX_CHUNK: usize = 64 << 10;

/// A frame's header, parsed from the front of the buffer.
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Header bytes (2 to 14).
    size: usize,
    len: u64,
}

/// A fragmented data message under way.
struct Partial {
    text: bool,
    data: BytesMut,
    /// For text: the length of the prefix known to be valid UTF-8 (the rest is at most one
    /// incomplete character).
    valid: usize,
}

/// Inbound frame state: the read buffer, the limits, a fragmented message under way, and
/// whether the peer's close frame has arrived.
pub(crate) struct Frames {
    buf: BytesMut,
    role: Role,
    /// Bytes offered to the next read: from `read_buffer_size` (`min_chunk`) up to
    /// `max_chunk` while the peer streams.
    chunk: usize,
    min_chunk: usize,
    max_chunk: usize,
    max_frame: usize,
    max_message: usize,
    accept_unmasked: bool,
    partial: Option<Partial>,
    peer_closed: bool,
}

impl Frames {
    pub(crate) fn new(role: Role, cfg: &WebSocketConfig) -> Self {
        Frames {
            buf: BytesMut::new(),
            role,
            chunk: cfg.read_buffer_size.max(MIN_CHUNK),
            min_chunk: cfg.read_buffer_size.max(MIN_CHUNK),
            max_chunk: cfg.read_buffer_size.max(MAX_CHUNK),
            max_frame: cfg.max_frame_size.unwrap_or(usize::MAX),
            max_message: cfg.max_message_size.unwrap_or(usize::MAX),
            accept_unmasked: cfg.accept_unmasked_frames,
            partial: None,
            peer_closed: false,
        }
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Bytes read past the end of the opening handshake's HTTP header: the first frames.
    pub(crate) fn push_early(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next message (data, ping, pong or close), reading from `src` as needed. After the
    /// peer's close frame a server's next read is `ConnectionClosed` at once; a client's reads
    /// on to the end of the stream, as the server closes TCP first (RFC 6455 7.1.1).
    pub(crate) fn read(&mut self, src: &mut impl Read) -> Result<Message, Box<Error>> {
        if self.peer_closed && self.role == Role::Server {
            return fail(Error::ConnectionClosed);
        }
        loop {
            match self.next_frame()? {
                Step::Message(m) => return Ok(m),
                Step::Fragment => continue,
                Step::Need(n) => {
                    if self.fill(src, n)? == 0 {
                        return fail(if self.peer_closed {
                            Error::ConnectionClosed
                        } else {
                            Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
                        });
                    }
                }
            }
        }
    }

    /// Reads once into the buffer's spare room, offering at most `chunk` bytes (or what the
    /// frame under way still needs, up to `max_chunk`), making room for `need` more bytes first
    /// (a whole frame's are reserved at once, as tungstenite does). A read that fills the
    /// offer doubles `chunk` (the peer is streaming: fewer calls per message); one that brings
    /// less than a quarter of it halves it. An empty buffer gives back an allocation well above
    /// `max_chunk` (one a large frame needed).
    fn fill(&mut self, src: &mut impl Read, need: usize) -> Result<usize, Box<Error>> {
        let len = self.buf.len();
        let offer = self.chunk.max(need.min(self.max_chunk));
        if len == 0 && self.buf.capacity() > 2 * self.max_chunk.max(offer) {
            self.buf = BytesMut::new();
        }
        let spare = self.buf.capacity() - len;
        // Room for what the frame under way still needs (reserved once, when its header
        // arrives: a frame's last read never grows the buffer again), or, between frames, for
        // a read of at least `MIN_CHUNK`.
        if spare < need || (need <= MAX_HEADER && spare < offer.min(MIN_CHUNK)) {
            // Reuses the allocation once every payload handed out from it has been dropped.
            // A frame beyond `RESERVE_AT_ONCE` (only with raised limits) grows as it arrives.
            self.buf.reserve(offer.max(need.min(RESERVE_AT_ONCE)));
        }
        let end = self.buf.capacity().min(len + offer);
        self.buf.resize(end, 0);
        let read = src.read(&mut self.buf[len..]);
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        if n == end - len {
            self.chunk = (self.chunk * 2).min(self.max_chunk);
        } else if n < (end - len) / 4 {
            self.chunk = (self.chunk / 2).max(self.min_chunk);
        }
        match read {
            Ok(n) => Ok(n),
            Err(e) if self.peer_closed && e.kind() == io::ErrorKind::ConnectionReset => {
                fail(Error::ConnectionClosed)
            }
            Err(e) => fail(Error::Io(e)),
        }
    }

    /// Parses one frame from the front of the buffer, or says how many more bytes it needs.
    fn next_frame(&mut self) -> Result<Step, Box<Error>> {
        let Some(h) = parse_header(&self.buf) else {
            return Ok(Step::Need(header_need(&self.buf)));
        };
        self.check(&h)?;
        let Some(total) = (h.size as u64)
            .checked_add(h.len)
            .filter(|&t| t <= usize::MAX as u64)
        else {
            return fail(too_long(h.len, self.max_frame));
        };
        if (self.buf.len() as u64) < total {
            return Ok(Step::Need((total - self.buf.len() as u64) as usize));
        }
        self.buf.advance(h.size);
        let mut payload = self.buf.split_to(h.len as usize);
        if let Some(mask) = h.mask {
            apply_mask(&mut payload, mask);
        }
        self.frame(h.fin, h.opcode, payload)
    }

    /// What the header alone breaks: checked before the payload is waited for.
    fn check(&self, h: &Header) -> Result<(), Box<Error>> {
        if self.peer_closed {
            return fail(Error::Protocol(ProtocolError::ReceivedAfterClosing));
        }
        let rsv = self.buf[0] & 0x70;
        if rsv != 0 {
            return fail(Error::Protocol(ProtocolError::NonZeroReservedBits));
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) if !self.accept_unmasked => {
                return fail(Error::Protocol(ProtocolError::UnmaskedFrameFromClient))
            }
            (Role::Client, true) => {
                return fail(Error::Protocol(ProtocolError::MaskedFrameFromServer))
            }
            _ => {}
        }
        if h.len > self.max_frame as u64 {
            return fail(Error::Capacity(CapacityError::MessageTooLong {
                size: usize::try_from(h.len).unwrap_or(usize::MAX),
                max_size: self.max_frame,
            }));
        }
        if h.opcode >= 8 {
            if !h.fin {
                return fail(Error::Protocol(ProtocolError::FragmentedControlFrame));
            }
            if h.len > 125 {
                return fail(Error::Protocol(ProtocolError::ControlFrameTooBig));
            }
            if h.opcode > 10 {
                return fail(Error::Protocol(ProtocolError::UnknownControlFrameType(
                    h.opcode,
                )));
            }
            return Ok(());
        }
        match (h.opcode, &self.partial) {
            (0, None) => fail(Error::Protocol(ProtocolError::UnexpectedContinueFrame)),
            (1 | 2, Some(_)) => fail(Error::Protocol(ProtocolError::ExpectedFragment(
                if h.opcode == 1 {
                    OpData::Text
                } else {
                    OpData::Binary
                },
            ))),
            (3..=7, _) => fail(Error::Protocol(ProtocolError::UnknownDataFrameType(
                h.opcode,
            ))),
            (0, Some(p))
                if (p.data.len() as u64).saturating_add(h.len) > self.max_message as u64 =>
            {
                fail(too_long(
                    (p.data.len() as u64).saturating_add(h.len),
                    self.max_message,
                ))
            }
            (1 | 2, None) if h.len > self.max_message as u64 => {
                fail(too_long(h.len, self.max_message))
            }
            _ => Ok(()),
        }
    }

    /// A whole frame, unmasked: a message, or a fragment taken into the one under way.
    fn frame(&mut self, fin: bool, opcode: u8, payload: BytesMut) -> Result<Step, Box<Error>> {
        let msg = match opcode {
            1 | 2 if fin => {
                let payload = payload.freeze();
                if opcode == 1 {
                    Message::Text(Utf8Bytes::try_from(payload).map_err(utf8)?)
                } else {
                    Message::Binary(payload)
                }
            }
            1 | 2 => {
                let mut p = Partial {
                    text: opcode == 1,
                    data: BytesMut::new(),
                    valid: 0,
                };
                p.extend(&payload)?;
                self.partial = Some(p);
                return Ok(Step::Fragment);
            }
            0 => {
                let Some(p) = &mut self.partial else {
                    return fail(Error::Protocol(ProtocolError::UnexpectedContinueFrame));
                };
                p.extend(&payload)?;
                if !fin {
                    return Ok(Step::Fragment);
                }
                let Some(p) = self.partial.take() else {
                    return fail(Error::Protocol(ProtocolError::UnexpectedContinueFrame));
                };
                p.complete()?
            }
            8 => {
                self.peer_closed = true;
                Message::Close(close_frame(payload.freeze())?)
            }
            9 => Message::Ping(payload.freeze()),
            _ => Message::Pong(payload.freeze()),
        };
        Ok(Step::Message(msg))
    }
}

enum Step {
    Message(Message),
    /// A fragment was taken; parse on.
    Fragment,
    /// This many more bytes are needed.
    Need(usize),
}

impl Partial {
    /// Appends a fragment; text is checked as it comes, so invalid UTF-8 fails at the fragment
    /// that holds it (an incomplete character at the end waits for the next one).
    fn extend(&mut self, frag: &[u8]) -> Result<(), Box<Error>> {
        self.data.extend_from_slice(frag);
        if self.text {
            match std::str::from_utf8(&self.data[self.valid..]) {
                Ok(_) => self.valid = self.data.len(),
                Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
                Err(e) => return Err(utf8(e)),
            }
        }
        Ok(())
    }

    fn complete(self) -> Result<Message, Box<Error>> {
        let data = self.data.freeze();
        Ok(if self.text {
            Message::Text(Utf8Bytes::try_from(data).map_err(utf8)?)
        } else {
            Message::Binary(data)
        })
    }
}

/// Errors are boxed inside the parser: the hot path moves only the small `Ok` values.
#[cold]
fn fail<T>(e: Error) -> Result<T, Box<Error>> {
    Err(Box::new(e))
}

#[cold]
fn utf8(e: std::str::Utf8Error) -> Box<Error> {
    Box::new(e.into())
}

fn too_long(size: u64, max_size: usize) -> Error {
    Error::Capacity(CapacityError::MessageTooLong {
        size: usize::try_from(size).unwrap_or(usize::MAX),
        max_size,
    })
}

/// A close frame's payload: none, or a code and a UTF-8 reason; a code no endpoint may send
/// is answered as a protocol violation (as tungstenite does).
fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, Box<Error>> {
    match payload.len() {
        0 => Ok(None),
        1 => fail(Error::Protocol(ProtocolError::InvalidCloseSequence)),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
            let reason = Utf8Bytes::try_from(payload.slice(2..)).map_err(utf8)?;
            Ok(Some(if code.is_allowed() {
                CloseFrame { code, reason }
            } else {
                CloseFrame {
                    code: CloseCode::Protocol,
                    reason: Utf8Bytes::from_static("Protocol violation"),
                }
            }))
        }
    }
}

/// The header at the front of `b`, or None while it is incomplete.
fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let (b0, b1) = (b[0], b[1]);
    let masked = b1 & 0x80 != 0;
    let (ext, len) = match b1 & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let size = 2 + ext + if masked { 4 } else { 0 };
    if b.len() < size {
        return None;
    }
    let len = match len {
        Some(n) => n,
        None if ext == 2 => u64::from(u16::from_be_bytes([b[2], b[3]])),
        None => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            u64::from_be_bytes(l)
        }
    };
    let mask = masked.then(|| [b[size - 4], b[size - 3], b[size - 2], b[size - 1]]);
    Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask,
        size,
        len,
    })
}

/// Bytes still missing from an incomplete header at the front of `b`.
fn header_need(b: &[u8]) -> usize {
    if b.len() < 2 {
        return 2 - b.len();
    }
    let ext = match b[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let size: usize = 2 + ext + if b[1] & 0x80 != 0 { 4 } else { 0 };
    size.saturating_sub(b.len()).max(1)
}

/// Finds the end of the opening handshake's HTTP header across reads: an empty line after at
/// least one line with content (`\r\n\r\n`, or bare `\n` line ends, which httparse accepts
/// too; empty lines before the first one are skipped, as httparse does).
#[derive(Default)]
pub(super) struct HeaderScan {
    /// 0: inside a line; 1: just after a line end; 2: after a line end and a `\r`.
    state: u8,
    content: bool,
}

impl HeaderScan {
    /// The index just after the header's end in `b`, if it ends there.
    pub(super) fn end(&mut self, b: &[u8]) -> Option<usize> {
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'\n' if self.state >= 1 && self.content => return Some(i + 1),
                b'\n' => self.state = 1,
                b'\r' if self.state == 1 => self.state = 2,
                b'\r' => {}
                _ => {
                    self.state = 0;
                    self.content = true;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` at most `step` bytes per read, then the end of the stream.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    const KEY: Option<[u8; 4]> = Some([1, 2, 3, 250]);

    fn all(
        role: Role,
        cfg: &WebSocketConfig,
        data: Vec<u8>,
        step: usize,
    ) -> Vec<Result<Message, Error>> {
        let mut f = Frames::new(role, cfg);
        let mut src = Trickle { data, at: 0, step };
        let mut out = Vec::new();
        loop {
            match f.read(&mut src) {
                Ok(m) => out.push(Ok(m)),
                Err(e) => {
                    out.push(Err(*e));
                    return out;
                }
            }
        }
    }

    fn cfg() -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(4096)
            .max_frame_size(Some(100_000))
            .max_message_size(Some(200_000))
    }

    fn mixed() -> (Vec<u8>, Vec<Message>) {
        let big = vec![7u8; 70_000];
        let text = "ßπ€𝄞".repeat(40);
        let tb = text.as_bytes();
        let mut d = frame(true, 1, b"hello", KEY);
        d.extend(frame(true, 2, &big, KEY));
        d.extend(frame(false, 1, &tb[..5], KEY));
        d.extend(frame(true, 9, b"p", KEY));
        d.extend(frame(false, 0, &tb[5..11], KEY));
        d.extend(frame(true, 0, &tb[11..], KEY));
        d.extend(frame(true, 10, b"", KEY));
        d.extend(frame(true, 8, &[3, 232, b'o', b'k'], KEY));
        let want = vec![
            Message::Text("hello".into()),
            Message::Binary(big.into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Text(text.into()),
            Message::Pong(Bytes::new()),
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "ok".into(),
            })),
        ];
        (d, want)
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let (data, want) = mixed();
        for step in [1, 2, 3, 7, 13, 100, 4096, usize::MAX] {
            let got = all(Role::Server, &cfg(), data.clone(), step);
            let (last, msgs) = got.split_last().unwrap();
            let msgs: Vec<Message> = msgs.iter().map(|m| m.as_ref().unwrap().clone()).collect();
            assert_eq!(msgs, want, "step {step}");
            // A server reads nothing after the peer's close.
            assert!(matches!(last, Err(Error::ConnectionClosed)), "{last:?}");
        }
    }

    #[test]
    fn payloads_handed_out_stay_intact_while_the_buffer_is_reused() {
        let mut data = Vec::new();
        for i in 0..5_000u32 {
            data.extend(frame(
                true,
                2,
                &i.to_be_bytes().repeat(i as usize % 50 + 1),
                KEY,
            ));
        }
        let got = all(Role::Server, &cfg(), data, 1500);
        for (i, m) in got[..5_000].iter().enumerate() {
            let want = (i as u32).to_be_bytes().repeat(i % 50 + 1);
            assert_eq!(m.as_ref().unwrap(), &Message::Binary(want.into()));
        }
        assert!(matches!(
            got[5_000],
            Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))
        ));
    }

    #[test]
    fn a_client_reads_to_the_end_after_the_close_and_refuses_frames_after_it() {
        let mut d = frame(true, 1, b"a", None);
        d.extend(frame(true, 8, &[], None));
        let got = all(Role::Client, &cfg(), d.clone(), 3);
        assert!(matches!(got[1], Ok(Message::Close(None))));
        assert!(matches!(got[2], Err(Error::ConnectionClosed)));
        d.extend(frame(true, 1, b"late", None));
        let got = all(Role::Client, &cfg(), d, 3);
        assert!(matches!(
            got[2],
            Err(Error::Protocol(ProtocolError::ReceivedAfterClosing))
        ));
        // A server frame that is masked is refused.
        let got = all(Role::Client, &cfg(), frame(true, 1, b"m", KEY), 64);
        assert!(matches!(
            got[0],
            Err(Error::Protocol(ProtocolError::MaskedFrameFromServer))
        ));
    }

    /// The error for `data`, given only its first `cut` bytes: header errors need no payload.
    fn first_error(data: &[u8], cut: usize) -> Error {
        let got = all(
            Role::Server,
            &cfg(),
            data[..cut.min(data.len())].to_vec(),
            64,
        );
        match got.into_iter().last() {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn violations_are_the_errors_tungstenite_gives_and_header_ones_need_no_payload() {
        let p = |e: Error| match e {
            Error::Protocol(p) => p,
            other => panic!("expected a protocol error, got {other:?}"),
        };
        let long_ping = frame(true, 9, &[0; 126], KEY);
        assert_eq!(
            p(first_error(&long_ping, 8)),
            ProtocolError::ControlFrameTooBig
        );
        let frag_ping = frame(false, 9, b"x", KEY);
        assert_eq!(
            p(first_error(&frag_ping, 6)),
            ProtocolError::FragmentedControlFrame
        );
        let rsv = [0xc1, 0x81, 0, 0, 0, 0, b'x'];
        assert_eq!(p(first_error(&rsv, 6)), ProtocolError::NonZeroReservedBits);
        let unmasked = frame(true, 1, b"x", None);
        assert_eq!(
            p(first_error(&unmasked, 2)),
            ProtocolError::UnmaskedFrameFromClient
        );
        assert_eq!(
            p(first_error(&frame(true, 5, b"", KEY), 99)),
            ProtocolError::UnknownDataFrameType(5)
        );
        assert_eq!(
            p(first_error(&frame(true, 12, b"", KEY), 99)),
            ProtocolError::UnknownControlFrameType(12)
        );
        assert_eq!(
            p(first_error(&frame(true, 0, b"x", KEY), 99)),
            ProtocolError::UnexpectedContinueFrame
        );
        let mut again = frame(false, 2, b"x", KEY);
        again.extend(frame(true, 2, b"y", KEY));
        assert_eq!(
            p(first_error(&again, 99)),
            ProtocolError::ExpectedFragment(OpData::Binary)
        );
        assert_eq!(
            p(first_error(&frame(true, 8, &[3], KEY), 99)),
            ProtocolError::InvalidCloseSequence
        );
        let too_big = frame(true, 2, &vec![0; 100_001], KEY);
        assert!(matches!(
            first_error(&too_big, 14),
            Error::Capacity(CapacityError::MessageTooLong {
                max_size: 100_000,
                ..
            })
        ));
        // Three fragments of 90,000 bytes: each within the frame limit, the message not.
        let mut long = frame(false, 2, &vec![0; 90_000], KEY);
        long.extend(frame(false, 0, &vec![0; 90_000], KEY));
        long.extend(frame(true, 0, &vec![0; 90_000], KEY));
        // The third header (14 bytes: a 64-bit length and the mask) is all it takes.
        let at = 2 * (90_000 + 14) + 14;
        assert!(matches!(
            first_error(&long, at),
            Error::Capacity(CapacityError::MessageTooLong {
                max_size: 200_000,
                ..
            })
        ));
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_holds_it() {
        // An incomplete character at a fragment's end waits for the next fragment.
        let mut ok = frame(false, 1, &[b'a', 0xe2, 0x82], KEY);
        ok.extend(frame(true, 0, &[0xac], KEY));
        let got = all(Role::Server, &cfg(), ok, 64);
        assert_eq!(got[0].as_ref().unwrap(), &Message::Text("a€".into()));
        // A byte that can never start or continue a character fails at once, before the
        // message's last fragment has arrived.
        let bad = frame(false, 1, &[b'a', 0xff], KEY);
        assert!(matches!(first_error(&bad, 99), Error::Utf8(_)));
        // A message that ends inside a character fails at its end.
        let mut cut = frame(false, 1, b"a", KEY);
        cut.extend(frame(true, 0, &[0xe2, 0x82], KEY));
        assert!(matches!(first_error(&cut, 99), Error::Utf8(_)));
        // A close reason must be UTF-8; a code no endpoint may send becomes a protocol error.
        assert!(matches!(
            first_error(&frame(true, 8, &[3, 232, 0xff], KEY), 99),
            Error::Utf8(_)
        ));
        let got = all(Role::Server, &cfg(), frame(true, 8, &[3, 237], KEY), 64);
        match &got[0] {
            Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Protocol),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_64_bit_length_and_an_early_tail_are_read() {
        let payload = vec![9u8; 70_000];
        let mut f = Frames::new(Role::Client, &cfg());
        let data = frame(true, 2, &payload, None);
        assert_eq!(data[1], 127);
        f.push_early(&data[..100]);
        let mut src = Trickle {
            data: data[100..].to_vec(),
            at: 0,
            step: 1000,
        };
        assert_eq!(f.read(&mut src).unwrap(), Message::Binary(payload.into()));
    }

    #[test]
    fn reads_grow_while_the_peer_streams_and_a_large_frame_s_buffer_is_given_back() {
        let mut f = Frames::new(
            Role::Server,
            &WebSocketConfig::default().read_buffer_size(4096),
        );
        let mut data = frame(true, 2, &vec![1; 1 << 20], KEY);
        for _ in 0..2_000 {
            data.extend(frame(true, 1, b"small", KEY));
        }
        let mut src = Trickle {
            data,
            at: 0,
            step: usize::MAX,
        };
        assert_eq!(f.read(&mut src).unwrap().len(), 1 << 20);
        // The frame's last read did not grow the buffer again.
        assert!(f.buf.capacity() < 2 << 20, "{}", f.buf.capacity());
        for _ in 0..2_000 {
            assert_eq!(f.read(&mut src).unwrap(), Message::Text("small".into()));
        }
        // Streaming: the offer grew.
        assert!(f.chunk > 4096);
        // The next read finds the buffer drained: the megabyte goes back.
        assert!(f.read(&mut src).is_err());
        assert!(f.buf.capacity() <= 2 * MAX_CHUNK, "{}", f.buf.capacity());
    }

    #[test]
    fn lengths_near_the_top_of_u64_are_refused_or_waited_for_without_overflow() {
        let unlimited = WebSocketConfig::default()
            .max_frame_size(None)
            .max_message_size(None);
        for len in [u64::MAX, u64::MAX - 13, 1 << 62] {
            let mut d = vec![0x82, 0x80 | 127];
            d.extend_from_slice(&len.to_be_bytes());
            d.extend_from_slice(&[1, 2, 3, 4, 5]);
            let got = all(Role::Server, &unlimited, d, 64);
            // Either refused as too long, or waited for (only 16 MiB reserved) until the end.
            assert!(
                matches!(
                    got.last(),
                    Some(Err(Error::Capacity(_)
                        | Error::Protocol(
                            ProtocolError::ResetWithoutClosingHandshake
                        )))
                ),
                "{len}: {got:?}"
            );
        }
    }

    #[test]
    fn the_header_end_is_found_across_reads() {
        let end = |parts: &[&[u8]]| {
            let mut scan = HeaderScan::default();
            parts.iter().map(|p| scan.end(p)).collect::<Vec<_>>()
        };
        assert_eq!(end(&[b"GET / HTTP/1.1\r\n\r\nxyz"]), [Some(18)]);
        assert_eq!(end(&[b"a\r\n\r", b"\nrest"]), [None, Some(1)]);
        assert_eq!(end(&[b"a\r\n", b"\r\n"]), [None, Some(2)]);
        assert_eq!(
            end(&[b"a\r\nb: c\r", b"\n\r", b"\nx"]),
            [None, None, Some(1)]
        );
        // Bare line feeds end a header too.
        assert_eq!(end(&[b"HTTP/1.1 101 x\nA: b\n\nframes"]), [Some(21)]);
        assert_eq!(end(&[b"a\r\n\nz"]), [Some(4)]);
        // Empty lines before the request line are not its end.
        assert_eq!(end(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), [Some(22)]);
        assert_eq!(
            end(&[b"\r\n", b"\r\n", b"G\r\n\r\n"]),
            [None, None, Some(5)]
        );
    }
}
