"""A real uvicorn server on 127.0.0.1 inside the test's event loop, to stop and restart."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI

from tests.wait import until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    def __init__(self, app: FastAPI, port: int, *, lifespan: str = "off") -> None:
        self.app = app
        self.port = port
        self.lifespan = lifespan
        self.url = f"http://127.0.0.1:{port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan=self.lifespan,  # type: ignore[arg-type]
        )
        server = self._server = uvicorn.Server(config)
        task = self._task = asyncio.create_task(server.serve())
        await until(lambda: server.started or task.done(), what="uvicorn started")
        if task.done():
            task.result()  # why it did not start
        assert server.started

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task
        self._server = None
