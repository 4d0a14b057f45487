"""Echo server on Python `websockets`, the peer for tests/interop.rs.

Usage: python echo_server.py [echo|abort-first]

Binds 127.0.0.1 on a free port and prints one JSON object per line on stdout:
  {"event": "listening", "port": N}                   once ready
  {"event": "open", "conn": K, "path": "/..."}        per connection (K counts from 1)
  {"event": "aborted", "conn": K}                     abort-first: TCP dropped, no close frame
  {"event": "closed", "conn": K, "rcvd_code": C, "rcvd_reason": R, "sent_code": S, "clean": B}
Every message is echoed with its kind (str stays text, bytes stay binary). In abort-first
mode, connection 1 echoes its first message and then drops the TCP connection without a
close frame (transport.abort()); later connections echo normally. Runs until killed.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

MODE = sys.argv[1] if len(sys.argv) > 1 else "echo"
if MODE not in ("echo", "abort-first"):
    sys.exit(f"unknown mode {MODE!r}")

conns = 0


def emit(**kv):
    print(json.dumps(kv), flush=True)


async def handler(ws):
    global conns
    conns += 1
    n = conns
    emit(event="open", conn=n, path=ws.request.path)
    try:
        while True:
            msg = await ws.recv()
            await ws.send(msg)
            if MODE == "abort-first" and n == 1:
                # Let the echo reach the socket, then drop TCP without a close frame.
                await asyncio.sleep(0.1)
                ws.transport.abort()
                emit(event="aborted", conn=n)
                return
    except ConnectionClosed as e:
        emit(
            event="closed",
            conn=n,
            rcvd_code=e.rcvd.code if e.rcvd else None,
            rcvd_reason=e.rcvd.reason if e.rcvd else None,
            sent_code=e.sent.code if e.sent else None,
            clean=isinstance(e, ConnectionClosedOK),
        )


async def main():
    # max_size=None: the tests send 4 MiB messages (the default limit is 1 MiB).
    async with serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        emit(event="listening", port=port)
        await asyncio.Future()


asyncio.run(main())
