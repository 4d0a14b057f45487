"""Client on Python `websockets`, the peer for tests/interop.rs (against our RxWSServer).

Usage: python client.py [--mode checks|handshake|interactive] [-H 'Name: value']...
                        [--subprotocol P]... [--ca ROOT.pem]
                        ws://127.0.0.1:PORT/PATH[?QUERY] | wss://localhost:PORT/PATH

For wss://, --ca is the CA certificate to trust (only it: the system's roots are not loaded).
-H adds a request header and --subprotocol offers a subprotocol (both repeatable, in order).

In every mode, a refused handshake prints
  {"event": "handshake", "status": S, "body": "...", "subprotocol": null}
(S the HTTP status the server answered with) and the script exits 0; an accepted one prints
  {"event": "handshake", "status": 101, "subprotocol": P or null, "headers": [[name, value]...]}
(the response headers) before anything else.

--mode handshake: only that; an accepted connection is then closed with 1000 and "closed"
(below) is printed.

--mode interactive: each stdin line is sent as one text message and each message received is
printed as {"event": "message", "data": "..."} (text) or {"event": "message", "len": N}
(binary). At stdin EOF the client closes with 1000. When the connection ends, either way,
"closed" (below) is printed and the script exits 0.

--mode checks (the default) runs the checks, printing one JSON object per line on stdout:
  {"event": "result", "text": B, "binary": B, "big_binary": B, "big_text": B, "order": B,
   "extensions": [...], "tls": "TLSv1.3" or null for ws://}
then waits (up to 60 s) for the server to close the connection and prints
  {"event": "closed", "rcvd_code": C, "rcvd_reason": R, "sent_code": S, "clean": B,
   "exchanged": B}
  (clean: websockets' ConnectionClosedOK, i.e. both codes 1000 or 1001; exchanged: a close
  frame was both received and sent, whatever the codes)
(or {"event": "unexpected", ...} for any message that arrives meanwhile).
"""

import argparse
import asyncio
import json
import random
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus


def emit(**kv):
    print(json.dumps(kv), flush=True)


async def roundtrip(ws, msg):
    await ws.send(msg)
    return await ws.recv()


def emit_closed(e):
    emit(
        event="closed",
        rcvd_code=e.rcvd.code if e.rcvd else None,
        rcvd_reason=e.rcvd.reason if e.rcvd else None,
        sent_code=e.sent.code if e.sent else None,
        clean=isinstance(e, ConnectionClosedOK),
        exchanged=e.rcvd is not None and e.sent is not None,
    )


def header_pair(text):
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not 'Name: value'")
    return (name.strip(), value.strip())


async def main(args):
    tls = None
    if args.ca:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the certificate and host name
        tls.load_verify_locations(cafile=args.ca)
    # Default compression: the client offers permessage-deflate, which the server must decline.
    try:
        ws = await connect(
            args.url,
            max_size=None,
            ping_interval=None,
            open_timeout=10,
            ssl=tls,
            additional_headers=args.header or None,
            subprotocols=args.subprotocol or None,
        )
    except InvalidStatus as e:
        body = (e.response.body or b"").decode("utf-8", "replace").strip()
        emit(event="handshake", status=e.response.status_code, body=body, subprotocol=None)
        return
    async with ws:
        emit(
            event="handshake",
            status=ws.response.status_code,
            subprotocol=ws.subprotocol,
            headers=[[k, v] for k, v in ws.response.headers.raw_items()],
        )
        if args.mode == "checks":
            await checks(ws)
        elif args.mode == "interactive":
            await interactive(ws)
        else:
            await ws.close()
            await wait_closed(ws)


async def wait_closed(ws):
    try:
        while True:
            extra = await ws.recv()
            emit(event="unexpected", kind=type(extra).__name__, len=len(extra))
    except ConnectionClosed as e:
        emit_closed(e)


async def interactive(ws):
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def send_lines():
        while line := await stdin.readline():
            await ws.send(line.decode().rstrip("\n"))
        await ws.close()

    sender = asyncio.create_task(send_lines())
    try:
        while True:
            msg = await ws.recv()
            if isinstance(msg, str):
                emit(event="message", data=msg)
            else:
                emit(event="message", len=len(msg))
    except ConnectionClosed as e:
        emit_closed(e)
    finally:
        sender.cancel()


async def checks(ws):
    rng = random.Random(7)
    res = {}
    got = await roundtrip(ws, "hello, ünïcode ✓")
    res["text"] = isinstance(got, str) and got == "hello, ünïcode ✓"
    payload = bytes([0, 1, 2, 0xFE, 0xFF])
    got = await roundtrip(ws, payload)
    res["binary"] = isinstance(got, bytes) and got == payload
    big = rng.randbytes(4 << 20)
    got = await roundtrip(ws, big)
    res["big_binary"] = isinstance(got, bytes) and got == big
    big_text = "".join(rng.choice("abcdé✓") for _ in range(1 << 20)) * 2
    got = await roundtrip(ws, big_text)
    res["big_text"] = isinstance(got, str) and got == big_text
    sent = [f"py-{i}" for i in range(1000)]
    for m in sent:
        await ws.send(m)
    got = [await ws.recv() for _ in sent]
    res["order"] = got == sent
    res["extensions"] = [type(e).__name__ for e in ws.protocol.extensions]
    tls_object = ws.transport.get_extra_info("ssl_object")
    res["tls"] = tls_object.version() if tls_object else None
    emit(event="result", **res)
    await wait_closed(ws)


parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--ca", help="PEM CA certificate to trust for wss://")
parser.add_argument(
    "--mode", choices=["checks", "handshake", "interactive"], default="checks"
)
parser.add_argument(
    "-H", "--header", action="append", default=[], type=header_pair,
    help="request header 'Name: value' (repeatable)",
)
parser.add_argument(
    "--subprotocol", action="append", default=[], help="offer this subprotocol (repeatable)"
)
ARGS = parser.parse_args()
asyncio.run(asyncio.wait_for(main(ARGS), timeout=60))
