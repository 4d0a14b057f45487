//! Python pickle in binary frames: the Python `rxplus` package's `object` datatype
//! (`WSObject`), so a Rust program can talk to existing Python services. Needs the `pickle`
//! feature.
//!
//! * [`Pickle`] sends and receives any serde type (`Serialize + DeserializeOwned`): structs
//!   and maps become dicts, sequences lists, `Option::None` becomes `None`.
//! * [`PickleValue`] sends and receives the dynamic [`Value`], for payloads whose shape is not
//!   known: it keeps what serde cannot (tuples apart from lists, sets and frozensets, `bytes`,
//!   integers beyond 64 bits as [`BigInt`]).
//!
//! Both send protocol 3 (read by every Python 3) in binary frames, and read protocols 0 to 5
//! (Python writes 4 by default, 5 from Python 3.14). A text frame is a decode error, as on the
//! Python side (`WSObject expects binary frame`).
//!
//! # Security
//!
//! Python's `pickle.loads` runs code: a pickle names any importable callable and calls it.
//! Decoding here never does. Only Python's built-in data types are rebuilt (`None`, `bool`,
//! `int`, `float`, `str`, `bytes`, `bytearray`, `list`, `tuple`, `dict`, `set`, `frozenset`);
//! any other global the pickle names (`datetime.datetime`, `os.system`, a class of the
//! sender's) is a decode error, as are persistent ids, extension codes and protocol 5's
//! out-of-band buffers. Before decoding, every message is walked against [`PickleLimits`]
//! by a model of the decoder's stack and memo: a pickle that would nest deeper than
//! `max_depth` (a stack overflow in a recursive decoder), expand beyond `max_expanded` bytes
//! through shared references or copies (the pickle form of a "billion laughs"), or change a
//! value after placing it in another (which would let the nesting grow behind the walk's back)
//! is refused without being built. Like every decode error, a refused
//! message is logged, counted and reported on the errors stream
//! ([`Error::Decode`](crate::Error::Decode)), and the connection keeps going.
//!
//! A Python peer must still not `pickle.loads` what it receives from an untrusted sender: the
//! risk is on the Python side of the wire.
//!
//! ```
//! use rxplus::ws::pickle::{Pickle, PickleValue, Value};
//! use rxplus::ws::Datatype;
//! use std::collections::BTreeMap;
//!
//! // serde types: a map in, a dict on the wire, the map back.
//! let mut m = BTreeMap::new();
//! m.insert("temp".to_string(), 21.5);
//! let frame = Pickle::default().encode(m.clone()).unwrap();
//! assert!(frame.is_binary());
//! let back: BTreeMap<String, f64> = Pickle::default().decode(frame).unwrap();
//! assert_eq!(back, m);
//!
//! // Dynamic values keep tuples apart from lists.
//! let v = Value::Tuple(vec![Value::I64(1), Value::String("é".into())]);
//! let frame = PickleValue::default().encode(v.clone()).unwrap();
//! assert_eq!(PickleValue::default().decode(frame).unwrap(), v);
//!
//! // What Python's `pickle.dumps(datetime.date(2026, 1, 1), 4)` sends is refused, not run.
//! let date = b"\x80\x04\x95 \x00\x00\x00\x00\x00\x00\x00\x8c\x08datetime\x94\x8c\x04date\x94\
//!              \x93\x94C\x04\x07\xea\x01\x01\x94\x85\x94R\x94.";
//! let frame = rxplus::tungstenite::Message::Binary(date.to_vec().into());
//! let err = PickleValue::default().decode(frame).unwrap_err();
//! assert!(err.to_string().contains("unresolved global"), "{err}");
//! ```

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tungstenite::Message;

use super::datatype::{Datatype, Datatypes};
use crate::error::CodecError;

pub use num_bigint::BigInt;
pub use serde_pickle::{HashableValue, Value};

/// How far a received pickle may go before it is refused unbuilt.
///
/// ```
/// use rxplus::ws::pickle::{Pickle, PickleLimits};
///
/// let p = Pickle::default().limits(PickleLimits { max_depth: 16, max_expanded: 1 << 20 });
/// # let _ = p;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickleLimits {
    /// The deepest nesting of containers (a list in a list is depth 2). Default 16: decoding
    /// runs on the connection's thread and recurses per level, about 2.2 KiB of stack each
    /// for the nesting Python writes (every container memoized; measured in a release
    /// build); connection threads have small stacks
    /// ([`WSConfig::thread_stack_size`](crate::ws::WSConfig::thread_stack_size): 256 KiB by
    /// default, 64 KiB at the least), and 16 levels fit in 48 KiB. For deeper data raise
    /// both, about 3 KiB of stack per level.
    pub max_depth: usize,
    /// The most the decoded value may take, in bytes (each value counts 48 bytes plus its
    /// string, bytes or integer payload; a value referenced twice counts twice, as it is
    /// copied twice). Default 64 MiB.
    pub max_expanded: u64,
}

impl Default for PickleLimits {
    fn default() -> Self {
        PickleLimits {
            max_depth: 16,
            max_expanded: 64 << 20,
        }
    }
}

/// Python pickle for serde types, in binary frames. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pickle {
    limits: PickleLimits,
}

/// Python pickle for dynamic [`Value`]s, in binary frames: tuples, sets, `bytes` and big
/// integers kept. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct PickleValue {
    limits: PickleLimits,
}

impl Pickle {
    /// Replaces the limits a received pickle is checked against.
    pub fn limits(mut self, limits: PickleLimits) -> Self {
        self.limits = limits;
        self
    }
}

impl PickleValue {
    /// Replaces the limits a received pickle is checked against.
    pub fn limits(mut self, limits: PickleLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The payload of a binary frame, after the limits check.
fn received<'m>(
    msg: &'m Message,
    who: &str,
    limits: &PickleLimits,
) -> Result<&'m [u8], CodecError> {
    match msg {
        Message::Binary(b) => check(b, limits).map(|()| &b[..]),
        Message::Text(_) => Err(CodecError::msg(format!(
            "{who} datatype expects a binary frame, got text"
        ))),
        other => Err(CodecError::msg(format!("not a data message: {other:?}"))),
    }
}

/// An encoder's result as a binary frame.
fn sent(r: serde_pickle::Result<Vec<u8>>) -> Result<Message, CodecError> {
    r.map(|v| Message::Binary(v.into()))
        .map_err(|e| CodecError::context("cannot pickle", e))
}

// Unresolved globals stay errors (the default); no option that replaces them with None.
fn de_options() -> serde_pickle::DeOptions {
    serde_pickle::DeOptions::new()
}

impl<T: Serialize + DeserializeOwned> Datatype<T> for Pickle {
    fn name(&self) -> &'static str {
        "pickle"
    }
    fn encode(&self, item: T) -> Result<Message, CodecError> {
        sent(serde_pickle::to_vec(&item, serde_pickle::SerOptions::new()))
    }
    fn decode(&self, msg: Message) -> Result<T, CodecError> {
        serde_pickle::from_slice(received(&msg, "Pickle", &self.limits)?, de_options())
            .map_err(|e| CodecError::context("invalid pickle", e))
    }
}

impl Datatype<Value> for PickleValue {
    fn name(&self) -> &'static str {
        "pickle"
    }
    fn encode(&self, item: Value) -> Result<Message, CodecError> {
        sent(serde_pickle::value_to_vec(
            &item,
            serde_pickle::SerOptions::new(),
        ))
    }
    fn decode(&self, msg: Message) -> Result<Value, CodecError> {
        serde_pickle::value_from_slice(received(&msg, "PickleValue", &self.limits)?, de_options())
            .map_err(|e| CodecError::context("invalid pickle", e))
    }
}

impl<T: Serialize + DeserializeOwned + 'static> From<Pickle> for Datatypes<T> {
    fn from(d: Pickle) -> Self {
        Datatypes::same(d)
    }
}
impl From<PickleValue> for Datatypes<Value> {
    fn from(d: PickleValue) -> Self {
        Datatypes::same(d)
    }
}

/// What one value counts towards [`PickleLimits::max_expanded`], besides its payload.
const VALUE_COST: u64 = 48;
/// The longest decimal integer accepted (Python's own `int` string limit, 4300 digits, plus
/// sign and suffix): parsing a longer one is quadratic.
const MAX_DECIMAL_INT: usize = 4310;

/// Walks the pickle's opcodes with a model of the decoder's stack and memo, without building
/// anything: each value is its depth and its cost. Refuses a pickle that exceeds `limits`,
/// names an opcode the decoder does not support, or is cut short; the decoder checks
/// everything else.
///
/// The decoder shares a memoized value by reference until the end, so a value changed after
/// it was placed in another would change every place that holds it, after the walk counted
/// it. The walk refuses that (a value is frozen once placed), as it refuses binding a memo
/// key twice, memoizing a value twice and placing a value in itself: Python's pickler never
/// writes any of these for data the decoder accepts. With those refused, a placed value's
/// depth and cost are final, and a container's are the sum over what it holds, each shared
/// value counted once per place (the decoder copies it once per place). Copies the decoder
/// makes while parsing (`DUP`, the arguments of `REDUCE` and `STACK_GLOBAL`) and every new
/// value count towards a total for the message, bounded by the same `max_expanded`.
fn check(data: &[u8], limits: &PickleLimits) -> Result<(), CodecError> {
    Walk {
        data,
        pos: 0,
        limits,
        objs: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
        total: 0,
    }
    .run()
}

#[derive(Clone, Copy)]
struct Obj {
    depth: usize,
    cost: u64,
    /// Held by another value: frozen.
    placed: bool,
    /// In the memo (under one key).
    memoized: bool,
}

/// A stack slot: a mark, or an index into `Walk::objs`.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Obj(usize),
}

struct Walk<'a> {
    data: &'a [u8],
    pos: usize,
    limits: &'a PickleLimits,
    objs: Vec<Obj>,
    stack: Vec<Slot>,
    memo: HashMap<u64, usize>,
    /// What the decoder allocates and copies while parsing.
    total: u64,
}

fn refuse(reason: String) -> CodecError {
    CodecError::msg(format!("pickle refused: {reason}"))
}

impl Walk<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| refuse(format!("cut short at byte {}", self.pos)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, CodecError> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn line(&mut self) -> Result<&[u8], CodecError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| refuse(format!("unterminated line at byte {}", self.pos)))?;
        self.take(n + 1)
    }

    /// A payload of `len` bytes: skipped, and a value costing them.
    fn counted(&mut self, len: u64) -> Result<(), CodecError> {
        let n = usize::try_from(len).map_err(|_| refuse(format!("length {len} too large")))?;
        self.take(n)?;
        self.push(1, VALUE_COST + len)
    }

    /// A new value on the stack (new, or a copy of one).
    fn push(&mut self, depth: usize, cost: u64) -> Result<(), CodecError> {
        self.bound(depth, cost)?;
        self.charge(cost)?;
        self.objs.push(Obj {
            depth,
            cost,
            placed: false,
            memoized: false,
        });
        self.stack.push(Slot::Obj(self.objs.len() - 1));
        Ok(())
    }

    /// Counts `cost` towards the message's total.
    fn charge(&mut self, cost: u64) -> Result<(), CodecError> {
        self.total = self.total.saturating_add(cost);
        if self.total > self.limits.max_expanded {
            return Err(refuse(format!(
                "would take more than {} bytes to decode",
                self.limits.max_expanded
            )));
        }
        Ok(())
    }

    fn bound(&self, depth: usize, cost: u64) -> Result<(), CodecError> {
        if depth > self.limits.max_depth {
            return Err(refuse(format!(
                "nested deeper than {} levels",
                self.limits.max_depth
            )));
        }
        if cost > self.limits.max_expanded {
            return Err(refuse(format!(
                "would expand beyond {} bytes",
                self.limits.max_expanded
            )));
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<usize, CodecError> {
        match self.stack.pop() {
            Some(Slot::Obj(i)) => Ok(i),
            Some(Slot::Mark) => Err(refuse(format!("unexpected mark at byte {}", self.pos))),
            None => Err(refuse(format!("stack underflow at byte {}", self.pos))),
        }
    }

    fn top(&self) -> Result<usize, CodecError> {
        match self.stack.last() {
            Some(Slot::Obj(i)) => Ok(*i),
            _ => Err(refuse(format!(
                "no value on the stack at byte {}",
                self.pos
            ))),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<usize>, CodecError> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| refuse(format!("no mark at byte {}", self.pos)))?;
        let items = self
            .stack
            .drain(at..)
            .filter_map(|s| match s {
                Slot::Obj(i) => Some(i),
                Slot::Mark => None,
            })
            .collect();
        Ok(items)
    }

    /// `child` placed in the value `into`.
    fn add(&mut self, into: usize, child: usize) -> Result<(), CodecError> {
        if into == child {
            return Err(refuse("a value placed in itself".into()));
        }
        if self.objs[into].placed {
            return Err(refuse(format!(
                "a value changed after it was placed in another, at byte {}",
                self.pos
            )));
        }
        let c = self.objs[child];
        self.objs[child].placed = true;
        let o = &mut self.objs[into];
        o.depth = o.depth.max(c.depth + 1);
        o.cost = o.cost.saturating_add(c.cost);
        let (depth, cost) = (o.depth, o.cost);
        self.bound(depth, cost)
    }

    /// The decoder copies a value it takes as an argument (`REDUCE`, `STACK_GLOBAL`).
    fn copied(&mut self, i: usize) -> Result<(), CodecError> {
        self.charge(self.objs[i].cost)
    }

    /// A new container holding copies of `items`.
    fn build(&mut self, items: &[usize]) -> Result<(), CodecError> {
        self.push(1, VALUE_COST)?;
        let new = self.top()?;
        for &i in items {
            self.add(new, i)?;
        }
        Ok(())
    }

    fn memo_get(&mut self, id: u64) -> Result<(), CodecError> {
        let i = *self
            .memo
            .get(&id)
            .ok_or_else(|| refuse(format!("memo {id} read before it is written")))?;
        self.stack.push(Slot::Obj(i));
        Ok(())
    }

    fn memo_put(&mut self, id: u64) -> Result<(), CodecError> {
        let top = self.top()?;
        if self.objs[top].memoized {
            return Err(refuse("a value memoized twice".into()));
        }
        if self.memo.insert(id, top).is_some() {
            return Err(refuse(format!("memo key {id} bound twice")));
        }
        self.objs[top].memoized = true;
        Ok(())
    }

    fn decimal_id(&mut self) -> Result<u64, CodecError> {
        let line = self.line()?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim_end().parse().ok())
            .ok_or_else(|| refuse("a memo key that is not a number".into()))
    }

    fn run(mut self) -> Result<(), CodecError> {
        loop {
            let op = self.take(1)?[0];
            match op {
                b'.' => return Ok(()),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack
                        .pop()
                        .ok_or_else(|| refuse("stack underflow".into()))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP copies the value (through a memo reference too).
                b'2' => {
                    let top = self.objs[self.top()?];
                    self.push(top.depth, top.cost)?;
                }
                // Scalars.
                b'N' | 0x88 | 0x89 => self.push(1, VALUE_COST)?,
                b'K' => self.counted_fixed(1)?,
                b'M' => self.counted_fixed(2)?,
                b'J' => self.counted_fixed(4)?,
                b'G' => self.counted_fixed(8)?,
                b'I' | b'L' | b'F' => {
                    let n = self.line()?.len();
                    if n > MAX_DECIMAL_INT {
                        return Err(refuse(format!("a {n}-character number")));
                    }
                    self.push(1, VALUE_COST + n as u64)?;
                }
                b'S' | b'V' => {
                    let n = self.line()?.len() as u64;
                    self.push(1, VALUE_COST + n)?;
                }
                b'U' | b'C' | 0x8c | 0x8a => {
                    let n = self.uint(1)?;
                    self.counted(n)?;
                }
                b'T' | b'X' | b'B' | 0x8b => {
                    let n = self.uint(4)?;
                    self.counted(n)?;
                }
                0x8d | 0x8e | 0x96 => {
                    let n = self.uint(8)?;
                    self.counted(n)?;
                }
                // Empty containers, filled by later opcodes.
                b']' | b'}' | b')' | 0x8f => self.push(1, VALUE_COST)?,
                b'a' => {
                    let x = self.pop()?;
                    let top = self.top()?;
                    self.add(top, x)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let top = self.top()?;
                    self.add(top, k)?;
                    self.add(top, v)?;
                }
                b'e' | b'u' | 0x90 => {
                    let items = self.pop_mark()?;
                    let top = self.top()?;
                    for i in items {
                        self.add(top, i)?;
                    }
                }
                b'l' | b't' | b'd' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.build(&items)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    self.build(&items)?;
                }
                // The memo.
                b'p' => {
                    let id = self.decimal_id()?;
                    self.memo_put(id)?;
                }
                b'q' => {
                    let id = self.uint(1)?;
                    self.memo_put(id)?;
                }
                b'r' => {
                    let id = self.uint(4)?;
                    self.memo_put(id)?;
                }
                0x94 => {
                    let id = self.memo.len() as u64;
                    self.memo_put(id)?;
                }
                b'g' => {
                    let id = self.decimal_id()?;
                    self.memo_get(id)?;
                }
                b'h' => {
                    let id = self.uint(1)?;
                    self.memo_get(id)?;
                }
                b'j' => {
                    let id = self.uint(4)?;
                    self.memo_get(id)?;
                }
                // Globals and object construction: the decoder accepts the built-in types
                // (set, bytearray, ...) and refuses every other global.
                b'c' => {
                    let n = self.line()?.len() + self.line()?.len();
                    self.push(1, VALUE_COST + n as u64)?;
                }
                // STACK_GLOBAL and REDUCE take copies of their arguments; REDUCE's result
                // (a set, a list, bytes ...) holds what its arguments held.
                0x93 | b'R' => {
                    let items = [self.pop()?, self.pop()?];
                    for &i in &items {
                        self.copied(i)?;
                    }
                    self.build(&items)?;
                }
                // Objects of classes: the decoder drops the arguments and pushes an empty
                // dict (OBJ also pops the class below the mark).
                0x81 => {
                    self.pop()?;
                    self.pop()?;
                    self.push(1, VALUE_COST)?;
                }
                0x92 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.push(1, VALUE_COST)?;
                }
                b'o' => {
                    self.pop_mark()?;
                    self.pop()?;
                    self.push(1, VALUE_COST)?;
                }
                b'i' => {
                    self.line()?;
                    self.line()?;
                    self.pop_mark()?;
                    self.push(1, VALUE_COST)?;
                }
                // BUILD replaces the object with its state.
                b'b' => {
                    let state = self.pop()?;
                    self.pop()?;
                    self.stack.push(Slot::Obj(state));
                }
                // Framing.
                0x80 => {
                    self.take(1)?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'P' | b'Q' => return Err(refuse("persistent ids are not supported".into())),
                0x82..=0x84 => return Err(refuse("extension codes are not supported".into())),
                0x97 | 0x98 => return Err(refuse("out-of-band buffers are not supported".into())),
                other => {
                    return Err(refuse(format!(
                        "unknown opcode 0x{other:02x} at byte {}",
                        self.pos - 1
                    )))
                }
            }
        }
    }

    /// A fixed-size scalar of `n` bytes.
    fn counted_fixed(&mut self, n: usize) -> Result<(), CodecError> {
        self.take(n)?;
        self.push(1, VALUE_COST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn frame(b: Vec<u8>) -> Message {
        Message::Binary(b.into())
    }

    /// `depth` lists nested in each other, the way Python pickles them (protocol 4: each one
    /// memoized, which costs the decoder more stack per level).
    fn nested(depth: usize) -> Vec<u8> {
        let mut p = vec![0x80, 4];
        for _ in 0..depth {
            p.extend([b']', 0x94]);
        }
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.push(b'.');
        p
    }

    /// A list referencing one `len`-byte string `refs` times: the decoder copies the string
    /// for each reference.
    fn shared(len: usize, refs: usize) -> Vec<u8> {
        let mut p = vec![0x80, 4, b'X'];
        p.extend((len as u32).to_le_bytes());
        p.extend(std::iter::repeat_n(b'a', len));
        p.extend([0x94, b'0', b'(']);
        for _ in 0..refs {
            p.extend([b'h', 0]);
        }
        p.extend([b'l', b'.']);
        p
    }

    #[test]
    fn round_trips_serde_types_and_values() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), vec![1i64, -2, 3]);
        let f =
            Datatype::<BTreeMap<String, Vec<i64>>>::encode(&Pickle::default(), m.clone()).unwrap();
        assert_eq!(
            Datatype::<BTreeMap<String, Vec<i64>>>::decode(&Pickle::default(), f).unwrap(),
            m
        );
        let big: BigInt = "123456789012345678901234567890".parse().unwrap();
        let v = Value::List(vec![
            Value::Int(big),
            Value::Bytes(vec![0, 255]),
            Value::None,
        ]);
        let f = PickleValue::default().encode(v.clone()).unwrap();
        assert_eq!(PickleValue::default().decode(f).unwrap(), v);
    }

    #[test]
    fn text_frames_are_refused() {
        let e = PickleValue::default()
            .decode(Message::Text("x".into()))
            .unwrap_err();
        assert!(e.to_string().contains("binary frame"), "{e}");
    }

    #[test]
    fn nesting_up_to_the_limit_decodes_on_the_smallest_thread_stack() {
        let limits = PickleLimits::default();
        let ok = nested(limits.max_depth);
        let too_deep = nested(limits.max_depth + 1);
        // Below the smallest stack a connection thread may have (64 KiB), leaving the
        // connection's own frames 16 KiB. Debug builds take several times the stack.
        let stack = if cfg!(debug_assertions) {
            1 << 20
        } else {
            48 << 10
        };
        let t = std::thread::Builder::new()
            .stack_size(stack)
            .spawn(move || {
                let v = PickleValue::default().decode(frame(ok.clone())).unwrap();
                drop(v);
                let v: serde_json::Value = Pickle::default().decode(frame(ok)).unwrap();
                drop(v);
                PickleValue::default()
                    .decode(frame(too_deep))
                    .unwrap_err()
                    .to_string()
            })
            .unwrap();
        let e = t.join().unwrap();
        assert!(e.contains("nested deeper than 16"), "{e}");
        // Far deeper: refused before anything is built, no stack overflow.
        let e = PickleValue::default()
            .decode(frame(nested(1_000_000)))
            .unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn shared_references_cannot_expand_without_bound() {
        // 100 copies of 1 KiB: decodes.
        let v = PickleValue::default()
            .decode(frame(shared(1024, 100)))
            .unwrap();
        assert!(matches!(v, Value::List(ref l) if l.len() == 100));
        // 200 KB that would be 100,000 copies of 1 MiB (100 GiB).
        let e = PickleValue::default()
            .decode(frame(shared(1 << 20, 100_000)))
            .unwrap_err();
        assert!(e.to_string().contains("expand beyond"), "{e}");
        let small = PickleValue::default().limits(PickleLimits {
            max_depth: 16,
            max_expanded: 50_000,
        });
        assert!(small.decode(frame(shared(1024, 100))).is_err());
    }

    /// 250 memoized empty lists, then `step(i)` for each, then the first list: each step
    /// tries to hang list i+1 under list i after i was placed, which the decoder would
    /// resolve at the end into 250 levels of nesting from a few KB.
    fn chain(step: fn(u8) -> Vec<u8>) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        for i in 0..250u8 {
            p.extend([b']', b'q', i, b'0']);
        }
        for i in 0..249u8 {
            p.extend(step(i));
        }
        p.extend([b'h', 0, b'.']);
        p
    }

    #[test]
    fn values_changed_after_they_are_placed_are_refused() {
        let steps: [fn(u8) -> Vec<u8>; 3] = [
            // APPEND through memo references.
            |i| vec![b'h', i, b'h', i + 1, b'a', b'0'],
            // BUILD leaves the state (a memo reference) where the object was.
            |i| vec![b'N', b'h', i, b'b', b'h', i + 1, b'a', b'0'],
            // OBJ pops the class below the mark; the stack must stay in step.
            |i| {
                vec![
                    b'(',
                    b'h',
                    i,
                    b'N',
                    b'(',
                    b'o',
                    b'0',
                    b'h',
                    i + 1,
                    b'a',
                    b'0',
                    b'0',
                ]
            },
        ];
        for step in steps {
            let e = PickleValue::default()
                .decode(frame(chain(step)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("pickle refused"), "{e}");
        }
        // A list placed in another, then appended to through its memo key.
        let mut p = vec![
            0x80, 4, b']', 0x94, b'(', b'h', 0, b'l', 0x94, b'h', 0, b'N', b'a',
        ];
        p.extend([b'0', b'h', 1, b'.']);
        let e = PickleValue::default().decode(frame(p)).unwrap_err();
        assert!(e.to_string().contains("after it was placed"), "{e}");
        // A memo key bound twice, a value memoized twice, a list placed in itself.
        for bad in [
            &b"\x80\x02]q\x00]q\x00h\x00."[..],
            b"\x80\x02]q\x00q\x01.",
            b"\x80\x02]q\x00h\x00a.",
        ] {
            let e = PickleValue::default()
                .decode(frame(bad.to_vec()))
                .unwrap_err();
            assert!(e.to_string().contains("pickle refused"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn copies_made_while_parsing_count() {
        // DUP copies: 1 MiB duplicated 100 times is 100 MiB.
        let mut p = vec![0x80, 4, b'B'];
        p.extend((1u32 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(0, 1 << 20));
        p.extend(std::iter::repeat_n(b'2', 100));
        p.push(b'.');
        let e = PickleValue::default().decode(frame(p)).unwrap_err();
        assert!(e.to_string().contains("would take more than"), "{e}");
    }

    #[test]
    fn unsupported_and_malformed_pickles_are_errors() {
        for bad in [
            &b""[..],
            b"\x80",
            b"\x80\x04",
            b"\x80\x04X\xff\xff\xff\xff",
            b"\x80\x04a.",
            b"\x80\x04h\x07.",
            b"\x80\x04(e.",
            b"\x80\x04N\x97.",
            b"\x80\x04NQ.",
            b"\x80\x04\xff.",
            b"\x80\x04cos\nsystem\n\x8c\x02id\x85R.",
        ] {
            assert!(
                PickleValue::default().decode(frame(bad.to_vec())).is_err(),
                "{bad:?}"
            );
        }
        let long = format!("L{}L\n.", "9".repeat(5000));
        let e = PickleValue::default()
            .decode(frame(long.into_bytes()))
            .unwrap_err();
        assert!(e.to_string().contains("5002-character number"), "{e}");
    }
}
