"""Client on Python `websockets`, the peer for tests/interop.rs (against our RxWSServer).

Usage: python client.py [--ca ROOT.pem] ws://127.0.0.1:PORT/PATH | wss://localhost:PORT/PATH

For wss://, --ca is the CA certificate to trust (only it: the system's roots are not loaded).

Runs the checks, printing one JSON object per line on stdout:
  {"event": "result", "text": B, "binary": B, "big_binary": B, "big_text": B, "order": B,
   "extensions": [...], "tls": "TLSv1.3" or null for ws://}
then waits (up to 60 s) for the server to close the connection and prints
  {"event": "closed", "rcvd_code": C, "rcvd_reason": R, "sent_code": S, "clean": B}
(or {"event": "unexpected", ...} for any message that arrives meanwhile).
"""

import argparse
import asyncio
import json
import random
import ssl

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK


def emit(**kv):
    print(json.dumps(kv), flush=True)


async def roundtrip(ws, msg):
    await ws.send(msg)
    return await ws.recv()


async def main(url, ca):
    rng = random.Random(7)
    tls = None
    if ca:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the certificate and host name
        tls.load_verify_locations(cafile=ca)
    # Default compression: the client offers permessage-deflate, which the server must decline.
    async with connect(
        url, max_size=None, ping_interval=None, open_timeout=10, ssl=tls
    ) as ws:
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
        try:
            while True:
                extra = await ws.recv()
                emit(event="unexpected", kind=type(extra).__name__, len=len(extra))
        except ConnectionClosed as e:
            emit(
                event="closed",
                rcvd_code=e.rcvd.code if e.rcvd else None,
                rcvd_reason=e.rcvd.reason if e.rcvd else None,
                sent_code=e.sent.code if e.sent else None,
                clean=isinstance(e, ConnectionClosedOK),
            )


parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--ca", help="PEM CA certificate to trust for wss://")
ARGS = parser.parse_args()
asyncio.run(asyncio.wait_for(main(ARGS.url, ARGS.ca), timeout=60))
