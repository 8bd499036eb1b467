"""The seed's production setup, for comparison: FastAPI + NeMo ``transcribe`` behind a semaphore.

NeMo's ``transcribe`` is not thread-safe, so requests are serialised with an ``asyncio.Semaphore(1)``
and run in the thread pool. Started by ``benchmarks/server_load.py`` with ``NEMO_CHECKPOINT`` set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile

from fastapi import FastAPI, UploadFile
from fastapi.concurrency import run_in_threadpool

for name in ("nemo_logger", "nemo", "lightning", "pytorch_lightning"):
    logging.getLogger(name).setLevel(logging.ERROR)

from nemo.collections.asr.models import ASRModel  # noqa: E402
from nemo.utils import logging as nemo_logging  # noqa: E402

nemo_logging.setLevel(logging.ERROR)
model = ASRModel.restore_from(os.environ["NEMO_CHECKPOINT"], map_location="cpu")
model.eval()
semaphore = asyncio.Semaphore(1)
app = FastAPI()


def _transcribe(path: str) -> str:
    hyps = model.transcribe([path], batch_size=1, timestamps=True, verbose=False)
    model.eval()
    return str(hyps[0].text)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/audio/transcriptions")
async def transcriptions(file: UploadFile) -> dict[str, str]:
    data = await file.read()
    with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
        handle.write(data)
        handle.flush()
        async with semaphore:
            text = await run_in_threadpool(_transcribe, handle.name)
    return {"text": text}
