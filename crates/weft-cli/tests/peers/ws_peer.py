#!/usr/bin/python3
"""A real WebSocket peer (python websockets, asyncio API of 10.x as in Debian bookworm) for
Weft's end-to-end tests.

Usage:
    ws_peer.py server PORT_FILE
        Echo server on 127.0.0.1:<port the OS picks>: every text or binary message comes back
        unchanged. Writes the port to PORT_FILE (atomically), serves until SIGTERM or SIGINT.
    ws_peer.py client URL [--connect HOST:PORT] [--timeout S]
        Connects to URL (ws://host:port/path, straight at the server or at the proxy's plain
        HTTP port), sends 3 text messages and 1 binary, checks each echo, closes with 1000.
        Prints one line of JSON, e.g.
        {"ok": true, "url": "ws://...", "messages": ["one", "two", "three", "<256 bytes>"],
         "close_code": 1000}
        and exits 0 on success, 1 otherwise, 2 on bad usage.
        --connect opens the TCP connection to HOST:PORT while the Host header still comes from
        URL, so a test can route by host name through a proxy (like curl --connect-to).

Tested directly, server against client:
    /usr/bin/python3 ws_peer.py server /tmp/ws.port &
    while [ ! -s /tmp/ws.port ]; do sleep 0.1; done
    /usr/bin/python3 ws_peer.py client ws://127.0.0.1:$(cat /tmp/ws.port)/chat
    /usr/bin/python3 ws_peer.py client ws://echo.weft/chat --connect 127.0.0.1:$(cat /tmp/ws.port)
    kill %1
"""

import argparse
import asyncio
import json
import os
import signal
import sys

import websockets

TEXT_MESSAGES = ["one", "two", "three"]
BINARY_MESSAGE = bytes(range(256))


# === server ===


async def echo(ws):
    # Ends quietly when the client closes, cleanly or not: either is the client's business.
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


def write_port(port_file, port):
    tmp = f"{port_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, port_file)


async def serve(port_file):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        write_port(port_file, port)
        await stop
    return 0


# === client ===


def describe(message):
    if isinstance(message, bytes):
        return f"<{len(message)} bytes>"
    return message


async def exchange(args, result):
    kwargs = {"open_timeout": args.timeout, "close_timeout": args.timeout}
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        kwargs.update(host=host, port=int(port))
    async with websockets.connect(args.url, **kwargs) as ws:
        for message in [*TEXT_MESSAGES, BINARY_MESSAGE]:
            await ws.send(message)
            got = await asyncio.wait_for(ws.recv(), args.timeout)
            result["messages"].append(describe(got))
            # Same type too: a text frame must not come back as binary, nor the reverse.
            if type(got) is not type(message) or got != message:
                result["error"] = f"sent {describe(message)!r}, got {describe(got)!r}"
                return False
        await ws.close()
        result["close_code"] = ws.close_code
        return ws.close_code == 1000


async def client(args):
    result = {"url": args.url, "messages": []}
    try:
        ok = await exchange(args, result)
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
        ok = False
        result["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps({"ok": ok, **result}), flush=True)
    return 0 if ok else 1


def main(argv):
    parser = argparse.ArgumentParser(description="WebSocket peer for Weft's end-to-end tests")
    sub = parser.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("port_file")
    cli = sub.add_parser("client")
    cli.add_argument("url", help="ws://host:port/path")
    cli.add_argument("--connect", help="HOST:PORT to open the TCP connection to instead")
    cli.add_argument("--timeout", type=float, default=10.0, help="seconds per step")
    args = parser.parse_args(argv)
    if args.role == "server":
        return asyncio.run(serve(args.port_file))
    return asyncio.run(client(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
