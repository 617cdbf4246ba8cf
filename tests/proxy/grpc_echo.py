"""A local grpcio server for the HTTP/2 tests: one TLS port, one insecure port.

Methods (raw bytes, no protobuf): ``/t.Echo/Unary`` answers ``echo:`` + the
request, ``/t.Echo/Stream`` answers each request message with ``s:`` + it,
``/t.Echo/Fail`` aborts with PERMISSION_DENIED (its status travels in the
trailers), ``/t.Echo/Big`` answers a message of the requested size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import trustme

#: Worker threads of the server: enough for the concurrent streams tested.
WORKERS = 8
#: Largest message either side accepts: the flow-control test sends 8 MiB.
MAX_MESSAGE = 16 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


def _same(data: bytes) -> bytes:
    return data


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"echo:" + request


def _stream(requests: Iterable[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in requests:
        yield b"s:" + request


def _fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "nope")
    raise AssertionError("abort returns only by raising")


def _big(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"b" * int(request)


@dataclass(frozen=True)
class GrpcEcho:
    tls_port: int
    plain_port: int


@contextlib.contextmanager
def serve_grpc(ca: trustme.CA) -> Iterator[GrpcEcho]:
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, _same, _same),
        "Stream": grpc.stream_stream_rpc_method_handler(_stream, _same, _same),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail, _same, _same),
        "Big": grpc.unary_unary_rpc_method_handler(_big, _same, _same),
    }
    server = grpc.server(futures.ThreadPoolExecutor(WORKERS), options=OPTIONS)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Echo", handlers)])
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    credentials = grpc.ssl_server_credentials(
        [(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())]
    )
    tls_port = server.add_secure_port("127.0.0.1:0", credentials)
    plain_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield GrpcEcho(tls_port, plain_port)
    finally:
        server.stop(0).wait()
