"""Echo server on Python `websockets`, the peer for tests/interop.rs.

Usage: python echo_server.py [echo|abort-first] [--tls-cert CHAIN.pem --tls-key KEY.pem]

Binds 127.0.0.1 on a free port (serving wss:// with that certificate chain and key when
--tls-cert and --tls-key are given) and prints one JSON object per line on stdout:
  {"event": "listening", "port": N}                   once ready
  {"event": "open", "conn": K, "path": "/...", "tls": V}  per connection (K counts from 1;
                                                      V: "TLSv1.3" etc., null for ws://)
  {"event": "aborted", "conn": K}                     abort-first: TCP dropped, no close frame
  {"event": "closed", "conn": K, "rcvd_code": C, "rcvd_reason": R, "sent_code": S, "clean": B}
Every message is echoed with its kind (str stays text, bytes stay binary). In abort-first
mode, connection 1 echoes its first message and then drops the TCP connection without a
close frame (transport.abort()); later connections echo normally. Runs until killed.
"""

import argparse
import asyncio
import json
import ssl

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

parser = argparse.ArgumentParser()
parser.add_argument("mode", nargs="?", default="echo", choices=["echo", "abort-first"])
parser.add_argument("--tls-cert", help="PEM certificate chain: serve wss://")
parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
ARGS = parser.parse_args()
if (ARGS.tls_cert is None) != (ARGS.tls_key is None):
    parser.error("--tls-cert and --tls-key go together")
MODE = ARGS.mode

conns = 0


def emit(**kv):
    print(json.dumps(kv), flush=True)


async def handler(ws):
    global conns
    conns += 1
    n = conns
    tls_object = ws.transport.get_extra_info("ssl_object")
    emit(
        event="open",
        conn=n,
        path=ws.request.path,
        tls=tls_object.version() if tls_object else None,
    )
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
    tls = None
    if ARGS.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
    # max_size=None: the tests send 4 MiB messages (the default limit is 1 MiB).
    async with serve(
        handler, "127.0.0.1", 0, max_size=None, ping_interval=None, ssl=tls
    ) as server:
        port = server.sockets[0].getsockname()[1]
        emit(event="listening", port=port)
        await asyncio.Future()


asyncio.run(main())
