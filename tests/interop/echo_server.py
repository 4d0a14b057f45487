"""Echo server on Python `websockets`, the peer for tests/interop.rs.

Usage: python echo_server.py [echo|abort-first|close-first] [--tls-cert CHAIN.pem --tls-key KEY.pem]
                             [--subprotocols P1,P2] [--close-code C] [--close-reason R]

Binds 127.0.0.1 on a free port (serving wss:// with that certificate chain and key when
--tls-cert and --tls-key are given) and prints one JSON object per line on stdout:
  {"event": "listening", "port": N}                   once ready
  {"event": "open", "conn": K, "path": "/...", "tls": V, "subprotocol": P,
   "headers": [[name, value], ...]}                  per connection (K counts from 1;
                                                      V: "TLSv1.3" etc., null for ws://; P the
                                                      subprotocol chosen or null; the request
                                                      headers as sent)
  {"event": "aborted", "conn": K}                     abort-first: TCP dropped, no close frame
  {"event": "closed", "conn": K, "rcvd_code": C, "rcvd_reason": R, "sent_code": S, "clean": B,
   "exchanged": B}
  (clean: websockets' ConnectionClosedOK, i.e. both codes 1000 or 1001; exchanged: a close
  frame was both received and sent, whatever the codes)
Every message is echoed with its kind (str stays text, bytes stay binary). In abort-first
mode, connection 1 echoes its first message and then drops the TCP connection without a
close frame (transport.abort()); later connections echo normally. In close-first mode,
connection 1 echoes nothing: at its first message it closes with --close-code and
--close-reason (default 4002 "go"); later connections echo normally.

--subprotocols P1,P2 serves these subprotocols (websockets' `subprotocols=`): the first in
this list that the client offers is chosen, and a client offering none of them is refused
with 400. Runs until killed.
"""

import argparse
import asyncio
import json
import ssl

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

parser = argparse.ArgumentParser()
parser.add_argument(
    "mode", nargs="?", default="echo", choices=["echo", "abort-first", "close-first"]
)
parser.add_argument("--subprotocols", help="comma-separated subprotocols served")
parser.add_argument("--close-code", type=int, default=4002, help="close-first: the code")
parser.add_argument("--close-reason", default="go", help="close-first: the reason")
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
        subprotocol=ws.subprotocol,
        headers=[[k, v] for k, v in ws.request.headers.raw_items()],
    )
    try:
        while True:
            msg = await ws.recv()
            if MODE == "close-first" and n == 1:
                await ws.close(ARGS.close_code, ARGS.close_reason)
                continue
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
            exchanged=e.rcvd is not None and e.sent is not None,
        )


async def main():
    tls = None
    if ARGS.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
    # max_size=None: the tests send 4 MiB messages (the default limit is 1 MiB).
    subprotocols = ARGS.subprotocols.split(",") if ARGS.subprotocols else None
    async with serve(
        handler,
        "127.0.0.1",
        0,
        max_size=None,
        ping_interval=None,
        ssl=tls,
        subprotocols=subprotocols,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        emit(event="listening", port=port)
        await asyncio.Future()


asyncio.run(main())
