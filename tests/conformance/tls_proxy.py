"""A TLS-originating TCP relay for tests/conformance.rs: kosoku 0.1.0 dials ws:// only (its
fuzzingclient refuses a wss:// URL: `invalid url scheme "wss": expected ws or http (or none)`),
so it dials this relay, which opens a TLS connection to the server under test for each
connection it accepts and copies bytes both ways unchanged. Standard library only.

Usage: python tls_proxy.py UPSTREAM_PORT CA.pem
Connects to localhost:UPSTREAM_PORT over TLS, trusting only CA.pem (host name `localhost`
checked). Binds 127.0.0.1 on a free port and prints it on stdout, then runs until killed.
An end of stream on one side is passed on: EOF to the runner, close (with close_notify) to
the server.
"""

import asyncio
import socket
import ssl
import sys

UPSTREAM = int(sys.argv[1])
TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
TLS.load_verify_locations(cafile=sys.argv[2])


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (ConnectionError, ssl.SSLError, RuntimeError):
            pass


async def handle(client_r, client_w):
    client_w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        up_r, up_w = await asyncio.open_connection(
            "localhost", UPSTREAM, ssl=TLS, server_hostname="localhost"
        )
    except (OSError, ssl.SSLError) as e:
        print(f"tls_proxy: upstream: {e}", file=sys.stderr, flush=True)
        client_w.close()
        return
    up_w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
    client_w.close()
    up_w.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
