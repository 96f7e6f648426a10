"""Echo: answers with what it was sent and does nothing else."""

from __future__ import annotations

from typing import Any

import grpc

from memsim.echo.v1 import echo_pb2 as pb
from memsim.echo.v1 import echo_pb2_grpc
from memsim.runtime.server import Service


class EchoServicer(echo_pb2_grpc.EchoServicer):
    async def Echo(
        self, request: pb.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EchoResponse:
        return pb.EchoResponse(payload=request.payload)


def echo_service() -> Service:
    servicer = EchoServicer()
    return Service(
        name="echo",
        service_names=[pb.DESCRIPTOR.services_by_name["Echo"].full_name],
        add_to_server=lambda server: echo_pb2_grpc.add_EchoServicer_to_server(servicer, server),
    )
