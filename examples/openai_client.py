"""Call a parakeet-runtime server with the official ``openai`` Python client.

    parakeet-runtime serve --port 8000 &
    python examples/openai_client.py http://127.0.0.1:8000/v1 clip.wav
"""

from __future__ import annotations

import sys

from openai import OpenAI


def main(base_url: str, path: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed")
    with open(path, "rb") as audio:
        result = client.audio.transcriptions.create(
            model="parakeet", file=audio, response_format="verbose_json", timestamp_granularities=["word"]
        )
    print(result.text)
    for word in result.words or []:
        print(f"{word.start:7.2f} {word.end:7.2f}  {word.word}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/v1",
         sys.argv[2] if len(sys.argv) > 2 else "engine/data/sample.wav")
