//! The `pickle` feature against real Python pickle (`tests/interop/pickle_peer.py`, the
//! interop virtual environment, created on first use):
//!
//! * `python_pickles_of_every_protocol_decode_and_round_trip`: what `pickle.dumps` writes
//!   with protocols 2 to 5 for the common shapes (dict, list, tuple, set, frozenset, bytes,
//!   bytearray, non-ASCII str, ints beyond 64 bits, float, None, nested) decodes to the
//!   expected `Value`; our encoding of it is what `pickle.loads` gives back, types and all.
//! * `serde_types_cross_to_python_and_back`: a serde struct from Python's dict and back.
//! * `globals_are_refused_and_never_run`: a `datetime` and an `os.system` call (Python's
//!   classic `__reduce__` payload) are decode errors naming the unresolved global.
//! * `malformed_pickles_are_errors_never_panics`: every truncation and byte flip of real
//!   pickles is an `Ok` or an `Err`.
//! * `rx_client_and_python_server_exchange_pickles`,
//!   `python_client_and_rx_server_exchange_pickles`: over real sockets with Python
//!   `websockets`, in binary frames; refused messages are counted decode errors and the
//!   connection keeps going.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::py::{python, script, Py};
use rxplus::tungstenite::Message;
use rxplus::ws::pickle::{BigInt, HashableValue, Pickle, PickleValue, Value};
use rxplus::ws::{Datatype, RxWSClient, RxWSServer, TaggedData, WSConfig, WSConnectionConfig};
use rxplus::{Error, Notification};

const WAIT: Duration = Duration::from_secs(20);

/// One line of `pickle_peer.py dump`.
struct Dumped {
    case: String,
    protocol: u64,
    bytes: Vec<u8>,
    refused: bool,
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn dump() -> Vec<Dumped> {
    let out = Command::new(python())
        .arg(script("pickle_peer.py"))
        .arg("dump")
        .output()
        .expect("run pickle_peer.py dump");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            Dumped {
                case: v["case"].as_str().expect("case").to_owned(),
                protocol: v["protocol"].as_u64().expect("protocol"),
                bytes: unhex(v["hex"].as_str().expect("hex")),
                refused: v["refused"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// `pickle.loads` of each `(case, pickle)`: `(case, same, type)` per line.
fn python_loads(items: &[(String, Vec<u8>)]) -> Vec<serde_json::Value> {
    let mut child = Command::new(python())
        .arg(script("pickle_peer.py"))
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run pickle_peer.py load");
    let mut stdin = child.stdin.take().expect("stdin");
    for (case, bytes) in items {
        let line = serde_json::json!({"case": case, "hex": hex(bytes)});
        writeln!(stdin, "{line}").expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn s(x: &str) -> Value {
    Value::String(x.to_owned())
}
fn hs(x: &str) -> HashableValue {
    HashableValue::String(x.to_owned())
}
fn big(x: &str) -> Value {
    Value::Int(x.parse::<BigInt>().expect("bigint"))
}

/// What each case must decode to (the Python source is in `pickle_peer.py`).
fn expected(case: &str) -> Value {
    match case {
        "dict" => Value::Dict(BTreeMap::from([
            (hs("a"), Value::I64(1)),
            (hs("b"), Value::List(vec![Value::I64(1), Value::I64(2)])),
            (hs("c"), s("x")),
        ])),
        "list" => Value::List(vec![
            Value::I64(1),
            s("two"),
            Value::F64(3.5),
            Value::None,
            Value::Bool(true),
            Value::Bool(false),
        ]),
        "tuple" => Value::Tuple(vec![
            Value::I64(1),
            s("a"),
            Value::Tuple(vec![Value::I64(2), Value::I64(3)]),
        ]),
        "set" => Value::Set(BTreeSet::from([
            HashableValue::I64(1),
            HashableValue::I64(2),
            HashableValue::I64(3),
        ])),
        "frozenset" => Value::FrozenSet(BTreeSet::from([hs("x"), hs("y")])),
        "bytes" => Value::Bytes(b"\x00\xffbin".to_vec()),
        "bytearray" => Value::Bytes(b"ab\x00".to_vec()),
        "str" => s("héllo wörld ✓ 日本語 😀"),
        "int" => Value::I64(-42),
        "bigint" => big("1267650600228229401496703205376"),
        "negbig" => big("-1180591620717411303425"),
        "float" => Value::F64(std::f64::consts::PI),
        "none" => Value::None,
        "empty" => Value::List(vec![
            Value::List(vec![]),
            Value::Dict(BTreeMap::new()),
            Value::Tuple(vec![]),
            s(""),
        ]),
        "nested" => Value::Dict(BTreeMap::from([
            (
                hs("users"),
                Value::List(vec![Value::Dict(BTreeMap::from([
                    (hs("name"), s("ada")),
                    (hs("tags"), Value::Tuple(vec![s("x"), s("y")])),
                    (
                        hs("scores"),
                        Value::Set(BTreeSet::from([
                            HashableValue::I64(1),
                            HashableValue::I64(2),
                        ])),
                    ),
                ]))]),
            ),
            (
                hs("meta"),
                Value::Dict(BTreeMap::from([
                    (hs("n"), big("36893488147419103232")),
                    (hs("blob"), Value::Bytes(vec![1, 2])),
                    (hs("ratio"), Value::F64(-0.5)),
                ])),
            ),
            (
                HashableValue::I64(7),
                Value::List(vec![Value::None, Value::Tuple(vec![Value::Bool(true)])]),
            ),
        ])),
        "reading" => Value::Dict(BTreeMap::from([
            (hs("sensor"), s("t1")),
            (
                hs("values"),
                Value::List(vec![Value::F64(1.5), Value::F64(2.0)]),
            ),
            (hs("ok"), Value::Bool(true)),
            (hs("note"), Value::None),
        ])),
        other => panic!("no expected value for case {other:?}"),
    }
}

fn binary(b: Vec<u8>) -> Message {
    Message::Binary(b.into())
}

#[test]
fn python_pickles_of_every_protocol_decode_and_round_trip() {
    let dumped = dump();
    let mut cases = 0;
    let mut ours = Vec::new();
    for d in dumped.iter().filter(|d| !d.refused) {
        let v = PickleValue::default()
            .decode(binary(d.bytes.clone()))
            .unwrap_or_else(|e| panic!("{} protocol {}: {e}", d.case, d.protocol));
        assert_eq!(v, expected(&d.case), "{} protocol {}", d.case, d.protocol);
        let wire = PickleValue::default().encode(v).expect("encode");
        let Message::Binary(b) = wire else {
            panic!("{}: not a binary frame", d.case)
        };
        ours.push((d.case.clone(), b.to_vec()));
        cases += 1;
    }
    assert_eq!(cases, 16 * 4, "16 cases, protocols 2 to 5");
    let loaded = python_loads(&ours);
    assert_eq!(loaded.len(), ours.len());
    for l in &loaded {
        assert_eq!(l["same"], true, "pickle.loads of our encoding: {l}");
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Reading {
    sensor: String,
    values: Vec<f64>,
    ok: bool,
    note: Option<String>,
}

#[test]
fn serde_types_cross_to_python_and_back() {
    let want = Reading {
        sensor: "t1".into(),
        values: vec![1.5, 2.0],
        ok: true,
        note: None,
    };
    let mut ours = Vec::new();
    for d in dump().iter().filter(|d| d.case == "reading") {
        let r: Reading = Pickle::default()
            .decode(binary(d.bytes.clone()))
            .unwrap_or_else(|e| panic!("protocol {}: {e}", d.protocol));
        assert_eq!(r, want, "protocol {}", d.protocol);
        let Message::Binary(b) = Pickle::default().encode(r).expect("encode") else {
            panic!("not a binary frame")
        };
        ours.push(("reading".to_owned(), b.to_vec()));
    }
    assert_eq!(ours.len(), 4);
    for l in python_loads(&ours) {
        assert_eq!(l["same"], true, "{l}");
        assert_eq!(l["type"], "dict", "{l}");
    }
}

#[test]
fn globals_are_refused_and_never_run() {
    let refused: Vec<_> = dump().into_iter().filter(|d| d.refused).collect();
    assert_eq!(refused.len(), 3 * 4);
    for d in &refused {
        let e = PickleValue::default()
            .decode(binary(d.bytes.clone()))
            .expect_err(&d.case);
        let typed: Result<serde_json::Value, _> = Pickle::default().decode(binary(d.bytes.clone()));
        assert!(typed.is_err(), "{} protocol {}", d.case, d.protocol);
        let msg = e.to_string();
        match d.case.as_str() {
            "datetime" | "evil" => assert!(msg.contains("global"), "{}: {msg}", d.case),
            // The one shape of Python data serde-pickle 1.2 refuses (docs/websocket.md).
            "shared" => assert!(msg.contains("recursive"), "{msg}"),
            other => panic!("unexpected refused case {other}"),
        }
    }
}

#[test]
fn malformed_pickles_are_errors_never_panics() {
    let mut checked = 0;
    for d in dump() {
        for cut in 0..d.bytes.len() {
            let _ = PickleValue::default().decode(binary(d.bytes[..cut].to_vec()));
            let _: Result<serde_json::Value, _> =
                Pickle::default().decode(binary(d.bytes[..cut].to_vec()));
            checked += 1;
        }
        for i in 0..d.bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = d.bytes.clone();
                b[i] ^= flip;
                let _ = PickleValue::default().decode(binary(b));
                checked += 1;
            }
        }
        // A pickle cut short never decodes.
        assert!(PickleValue::default()
            .decode(binary(d.bytes[..d.bytes.len() - 1].to_vec()))
            .is_err());
    }
    assert!(checked > 10_000, "{checked}");
}

/// The `(NAME, VALUE)` pairs `pickle_peer.py` sends.
fn pair(v: &Value) -> (String, Value) {
    match v {
        Value::Tuple(t) if t.len() == 2 => match &t[0] {
            Value::String(name) => (name.clone(), t[1].clone()),
            other => panic!("not a name: {other:?}"),
        },
        other => panic!("not a (NAME, VALUE) pair: {other:?}"),
    }
}

#[test]
fn rx_client_and_python_server_exchange_pickles() {
    for protocol in ["2", "4", "5"] {
        let mut py = Py::start("pickle_peer.py", &["server", "--protocol", protocol]);
        let port = py.event("listening", WAIT)["port"].as_u64().expect("port");
        let url = format!("ws://127.0.0.1:{port}/objects");
        let (err_tx, errors) = crossbeam_channel::unbounded();
        let mut rx = None;
        // Subscribed before the connection starts: the server sends at once.
        let client = RxWSClient::<Value>::with_setup(
            WSConnectionConfig::from_url(&url).expect("url"),
            PickleValue::default(),
            WSConfig::default(),
            |c| {
                rx = Some(c.stream());
                c.subscribe_errors(move |e| {
                    let _ = err_tx.send(e);
                });
            },
        )
        .expect("client");
        let rx = rx.expect("stream");
        let mut got = Vec::new();
        loop {
            match rx.recv_timeout(WAIT) {
                Ok(Notification::Next(v)) => {
                    let (name, value) = pair(&v);
                    if name == "end" {
                        break;
                    }
                    assert_eq!(value, expected(&name), "protocol {protocol}: {name}");
                    got.push(name);
                }
                other => panic!("protocol {protocol}: {other:?} after {got:?}"),
            }
        }
        assert_eq!(got.len(), 15, "every case, in order: {got:?}");
        // The datetime, the os.system call and the text frame: three decode errors, counted;
        // the connection went on (the cases after them arrived).
        let mut decode_errors = 0;
        while let Ok(e) = errors.recv_timeout(Duration::from_millis(200)) {
            assert!(matches!(e, Error::Decode { .. }), "{e}");
            decode_errors += 1;
        }
        assert_eq!(decode_errors, 3, "protocol {protocol}");
        assert_eq!(client.stats().decode_errors, 3);
        // Our pickles, read by pickle.loads and checked by type.
        for name in &got {
            client.on_next(Value::Tuple(vec![s(name), expected(name)]));
        }
        for name in &got {
            let Ok(Notification::Next(reply)) = rx.recv_timeout(WAIT) else {
                panic!("no reply for {name}")
            };
            assert_eq!(
                reply,
                Value::Tuple(vec![
                    s(name),
                    Value::Bool(true),
                    s(python_type(&expected(name)))
                ]),
                "protocol {protocol}"
            );
        }
        client.dispose();
        drop(py);
    }
}

fn python_type(v: &Value) -> &'static str {
    match v {
        Value::None => "NoneType",
        Value::Bool(_) => "bool",
        Value::I64(_) | Value::Int(_) => "int",
        Value::F64(_) => "float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "str",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Set(_) => "set",
        Value::FrozenSet(_) => "frozenset",
        Value::Dict(_) => "dict",
    }
}

#[test]
fn python_client_and_rx_server_exchange_pickles() {
    let server = RxWSServer::<Value>::bind("127.0.0.1:0", PickleValue::default()).expect("bind");
    let echo = server.handle();
    server.subscribe(move |m: TaggedData<Value>| echo.on_next(m.reply(m.data.clone())));
    let url = format!("ws://{}/objects", server.local_addr());
    for protocol in ["2", "3", "4", "5"] {
        let before = server.stats().decode_errors;
        let mut py = Py::start("pickle_peer.py", &["client", &url, "--protocol", protocol]);
        let done = py.event("done", WAIT);
        // The datetime and the os.system call were decode errors, not echoed; the rest came
        // back the same, types and all.
        assert_eq!(done["echoed"], 15, "protocol {protocol}: {}", py.out.seen());
        for line in py.out.seen().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            if v["event"] == "echoed" {
                assert_eq!(v["same"], true, "protocol {protocol}: {v}");
            }
        }
        assert_eq!(server.stats().decode_errors - before, 2);
        assert!(py.proc.wait_timeout(WAIT).is_some_and(|s| s.success()));
    }
}
