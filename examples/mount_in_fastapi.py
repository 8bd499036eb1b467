"""Mount parakeet-runtime's OpenAI-compatible API inside an existing FastAPI application.

    pip install '.[server]' fastapi        # in a checkout of parakeet-runtime
    uvicorn examples.mount_in_fastapi:app --port 8000
    curl -F file=@clip.wav -F model=parakeet http://127.0.0.1:8000/asr/v1/audio/transcriptions

Set PARAKEET_MODEL to a converted model directory (default: the bundled demo model).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI

from parakeet_runtime.engine import Engine
from parakeet_runtime.engine.serving.server import create_app

engine = Engine.load(os.environ.get("PARAKEET_MODEL") or None)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    engine.close(drain=True)  # the host app owns the engine: finish queued requests on shutdown


app = FastAPI(title="my service", lifespan=lifespan)


@app.get("/")
def index() -> dict[str, str]:
    """The host application's own routes keep working beside the mounted API."""
    return {"service": "my service", "asr": "/asr/v1/audio/transcriptions"}


app.mount("/asr", create_app(engine))
