"""Real Python pickle for tests/pickle.rs: the shapes Python services send, dumped and loaded
by the standard library, offline and over Python `websockets`.

Usage:
  python pickle_peer.py dump          one JSON line per case and protocol 2-5:
                                      {"case": NAME, "protocol": P, "hex": HEX}; the refused
                                      cases too ({"case": NAME, "protocol": P, "hex": HEX,
                                      "refused": true})
  python pickle_peer.py load          reads JSON lines {"case": NAME, "hex": HEX} on stdin and
                                      prints {"case": NAME, "same": B, "type": T, "repr": R}:
                                      B is true when pickle.loads gave back the case's value
                                      with the same types all the way down (a tuple stays a
                                      tuple, a set a set, True is not 1)
  python pickle_peer.py server --protocol P
                                      a websockets server on a free port: prints
                                      {"event": "listening", "port": N}; to each connection it
                                      sends every case as (NAME, VALUE) pickled with protocol
                                      P in a binary frame, with a datetime, a call to
                                      os.system and a text frame among them (each must be a
                                      decode error on the other side), then ("end", None). For
                                      each binary frame received, (NAME, VALUE), it answers
                                      (NAME, SAME, TYPE) and prints {"event": "received",
                                      "case": NAME, "same": B}.
  python pickle_peer.py client URL --protocol P
                                      sends every case as (NAME, VALUE), then the refused
                                      ones, then ("end", None); expects each case echoed back
                                      (checked with SAME); prints {"event": "echoed",
                                      "case": NAME, "same": B} per case and {"event": "done",
                                      "echoed": N} after "end" came back.
"""

import argparse
import asyncio
import datetime
import json
import os
import pickle
import sys


class Evil:
    """Unpickled by Python, this runs a shell command: the classic pickle exploit."""

    def __reduce__(self):
        return (os.system, ("touch /nonexistent/pwned",))


CASES = {
    "dict": {"a": 1, "b": [1, 2], "c": "x"},
    "list": [1, "two", 3.5, None, True, False],
    "tuple": (1, "a", (2, 3)),
    "set": {1, 2, 3},
    "frozenset": frozenset({"x", "y"}),
    "bytes": b"\x00\xffbin",
    "str": "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001f600",
    "int": -42,
    "bigint": 2**100,
    "negbig": -(2**70) - 1,
    "float": 3.141592653589793,
    "none": None,
    "empty": [[], {}, (), ""],
    "nested": {
        "users": [{"name": "ada", "tags": ("x", "y"), "scores": {1, 2}}],
        "meta": {"n": 2**65, "blob": b"\x01\x02", "ratio": -0.5},
        7: [None, (True,)],
    },
    # What a serde struct looks like to Python: a dict with str keys (tests/pickle.rs's
    # `Reading`).
    "reading": {"sensor": "t1", "values": [1.5, 2.0], "ok": True, "note": None},
}

# Decoded as bytes on the Rust side: compared by value only.
ONE_WAY = {"bytearray": bytearray(b"ab\x00")}

# One dict object twice: serde-pickle 1.2 refuses a memoized value inside a value that is
# itself referenced twice ("recursive structure"), a decode error (docs/websocket.md).
ROW = {"k": 1}
SHARED = {"shared": [ROW, ROW]}

REFUSED = {
    "datetime": datetime.datetime(2026, 12, 5, 11, 0),
    "evil": Evil(),
}


def same(a, b):
    """Equal, with the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def emit(**kv):
    print(json.dumps(kv), flush=True)


def dump():
    for p in range(2, 6):
        for name, value in {**CASES, **ONE_WAY}.items():
            emit(case=name, protocol=p, hex=pickle.dumps(value, protocol=p).hex())
        for name, value in {**REFUSED, **SHARED}.items():
            emit(case=name, protocol=p, hex=pickle.dumps(value, protocol=p).hex(), refused=True)


def load():
    for line in sys.stdin:
        req = json.loads(line)
        obj = pickle.loads(bytes.fromhex(req["hex"]))
        name = req["case"]
        expected = CASES.get(name, ONE_WAY.get(name))
        ok = same(obj, expected) if name in CASES else bytes(expected) == obj
        emit(case=name, same=ok, type=type(obj).__name__, repr=repr(obj))


async def server(protocol):
    from websockets.asyncio.server import serve

    async def handler(ws):
        names = list(CASES)
        for i, name in enumerate(names):
            await ws.send(pickle.dumps((name, CASES[name]), protocol=protocol))
            if i == 2:
                await ws.send(pickle.dumps(("datetime", REFUSED["datetime"]), protocol=protocol))
                await ws.send("a text frame is not a pickle")
            if i == 5:
                await ws.send(pickle.dumps(("evil", REFUSED["evil"]), protocol=protocol))
        await ws.send(pickle.dumps(("end", None), protocol=protocol))
        async for msg in ws:
            name, value = pickle.loads(msg)
            ok = same(value, CASES[name])
            emit(event="received", case=name, same=ok)
            await ws.send(pickle.dumps((name, ok, type(value).__name__), protocol=protocol))

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        emit(event="listening", port=port)
        await asyncio.get_running_loop().create_future()


async def client(url, protocol):
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        for name, value in CASES.items():
            await ws.send(pickle.dumps((name, value), protocol=protocol))
        for name, value in REFUSED.items():
            await ws.send(pickle.dumps((name, value), protocol=protocol))
        await ws.send(pickle.dumps(("end", None), protocol=protocol))
        echoed = 0
        while True:
            name, value = pickle.loads(await ws.recv())
            if name == "end":
                break
            ok = name in CASES and same(value, CASES[name])
            echoed += 1
            emit(event="echoed", case=name, same=ok)
        emit(event="done", echoed=echoed)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["dump", "load", "server", "client"])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--protocol", type=int, default=pickle.DEFAULT_PROTOCOL)
    args = parser.parse_args()
    if args.mode == "dump":
        dump()
    elif args.mode == "load":
        load()
    elif args.mode == "server":
        asyncio.run(server(args.protocol))
    else:
        asyncio.run(client(args.url, args.protocol))


main()
