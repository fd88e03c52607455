#!/usr/bin/python3
"""A real gRPC peer (python grpcio) for Weft's end-to-end tests.

No generated code: the service `weft.test.Echo` is served through a generic handler with raw
bytes in and out, so the script needs nothing but the Debian package python3-grpcio.

    Echo  (unary)             returns the request bytes
    Fail  (unary)             aborts with the status named in the request (b"UNAVAILABLE")
    Count (server streaming)  returns N messages b"0" .. b"N-1", N = int(request)
    Chat  (bidi streaming)    echoes each message as it arrives

Usage:
    grpc_peer.py server PORT_FILE
        Serves on 127.0.0.1:<port the OS picks>, writes the port to PORT_FILE (atomically, so a
        reader polling for the file never sees half of it), serves until SIGTERM or SIGINT.
    grpc_peer.py client TARGET CASE [--authority NAME] [--status NAME] [--count N] [--timeout S]
        CASE is unary, fail, count or chat. Prints one line of JSON, e.g.
        {"ok": true, "case": "unary", "code": "OK", "messages": ["hello weft"]}
        {"ok": true, "case": "fail", "code": "UNAVAILABLE", "details": "failing as asked: ..."}
        and exits 0 when the call behaved as the case expects (for fail: the asked-for non-OK
        code and its message), 1 otherwise, 2 on bad usage.
        TARGET is host:port, straight at the server or at an HTTP/2 plaintext proxy; grpc sends
        TARGET as :authority unless --authority overrides it (channel option
        grpc.default_authority), which is how a test picks a route by host name.

Tested directly, server against client:
    /usr/bin/python3 grpc_peer.py server /tmp/grpc.port &
    while [ ! -s /tmp/grpc.port ]; do sleep 0.1; done
    for c in unary fail count chat; do
        /usr/bin/python3 grpc_peer.py client 127.0.0.1:$(cat /tmp/grpc.port) $c; done
    /usr/bin/python3 grpc_peer.py client 127.0.0.1:$(cat /tmp/grpc.port) unary --authority echo.weft
    kill %1
"""

import argparse
import json
import os
import queue
import signal
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "weft.test.Echo"
UNARY_MESSAGE = b"hello weft"
CHAT_MESSAGES = [b"one", b"two", b"three"]


# === server ===


def echo(request, _context):
    return request


def fail(request, context):
    name = request.decode("utf-8", "replace").strip().upper()
    code = getattr(grpc.StatusCode, name, None)
    # A status that is not a failure cannot be aborted with; say so with a status that is.
    if not isinstance(code, grpc.StatusCode) or code == grpc.StatusCode.OK:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a failure status: {name!r}")
    context.abort(code, f"failing as asked: {name}")


def count(request, context):
    try:
        n = int(request)
    except ValueError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a count: {request!r}")
    for i in range(n):
        yield str(i).encode()


def chat(request_iterator, _context):
    for message in request_iterator:
        yield message


def write_port(port_file, port):
    tmp = f"{port_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, port_file)


def serve(port_file):
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    # Enough workers that a test's concurrent streaming calls never queue behind each other.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), handlers=(handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        print("grpc_peer: could not bind 127.0.0.1:0", file=sys.stderr)
        return 1
    server.start()
    stopped = threading.Event()

    def stop(_signum, _frame):
        server.stop(grace=0.5)
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_port(port_file, port)
    # Signal handlers run on the main thread only while it is in Python code, so wait in slices.
    while not stopped.wait(0.2):
        pass
    return 0


# === client ===


def messages_json(messages):
    return [m.decode("utf-8", "replace") for m in messages]


def call_unary(channel, args):
    rsp = channel.unary_unary(f"/{SERVICE}/Echo")(UNARY_MESSAGE, timeout=args.timeout)
    return rsp == UNARY_MESSAGE, {"messages": messages_json([rsp])}


def call_fail(channel, args):
    want = args.status.upper()
    try:
        rsp = channel.unary_unary(f"/{SERVICE}/Fail")(want.encode(), timeout=args.timeout)
    except grpc.RpcError as e:
        code, details = e.code().name, e.details() or ""
        ok = code == want and f"failing as asked: {want}" in details
        return ok, {"code": code, "details": details}
    return False, {"code": "OK", "messages": messages_json([rsp])}


def call_count(channel, args):
    stream = channel.unary_stream(f"/{SERVICE}/Count")(str(args.count).encode(), timeout=args.timeout)
    got = list(stream)
    want = [str(i).encode() for i in range(args.count)]
    return got == want, {"messages": messages_json(got)}


def call_chat(channel, args):
    echoed = queue.Queue()

    def requests():
        # Wait for each echo before sending the next message, so a proxy that buffers a whole
        # stream instead of forwarding frames as they come fails here with a deadline.
        for message in CHAT_MESSAGES:
            yield message
            echoed.get(timeout=args.timeout)

    got = []
    for rsp in channel.stream_stream(f"/{SERVICE}/Chat")(requests(), timeout=args.timeout):
        got.append(rsp)
        echoed.put(rsp)
    return got == CHAT_MESSAGES, {"messages": messages_json(got)}


CASES = {"unary": call_unary, "fail": call_fail, "count": call_count, "chat": call_chat}


def client(args):
    # http_proxy in a test runner's environment must not reroute the call around the proxy
    # under test.
    options = [("grpc.enable_http_proxy", 0)]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    result = {"case": args.case}
    with grpc.insecure_channel(args.target, options=options) as channel:
        try:
            ok, details = CASES[args.case](channel, args)
            result.update({"code": "OK"}, **details)
        except grpc.RpcError as e:
            ok = False
            result.update({"code": e.code().name, "details": e.details() or ""})
        except queue.Empty:
            ok = False
            result.update({"code": "TIMEOUT", "details": "no echo within the timeout"})
    print(json.dumps({"ok": ok, **result}), flush=True)
    return 0 if ok else 1


def main(argv):
    parser = argparse.ArgumentParser(description="gRPC peer for Weft's end-to-end tests")
    sub = parser.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("port_file")
    cli = sub.add_parser("client")
    cli.add_argument("target", help="host:port")
    cli.add_argument("case", choices=sorted(CASES))
    cli.add_argument("--authority", help="override :authority (grpc.default_authority)")
    cli.add_argument("--status", default="UNAVAILABLE", help="status the fail case asks for")
    cli.add_argument("--count", type=int, default=5, help="messages the count case asks for")
    cli.add_argument("--timeout", type=float, default=10.0, help="deadline of each call (s)")
    args = parser.parse_args(argv)
    if args.role == "server":
        return serve(args.port_file)
    return client(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
