#!/usr/bin/env bash
# Call a parakeet-runtime server with curl.
#   parakeet-runtime serve --port 8000 &
#   examples/curl.sh http://127.0.0.1:8000 engine/data/sample.wav
set -euo pipefail
URL="${1:-http://127.0.0.1:8000}"
FILE="${2:-engine/data/sample.wav}"
curl -sS --fail-with-body "$URL/v1/audio/transcriptions" -F "file=@$FILE" -F model=parakeet -F response_format=text
echo
curl -sS --fail-with-body "$URL/v1/audio/transcriptions" -F "file=@$FILE" -F model=parakeet \
    -F response_format=verbose_json -F "timestamp_granularities[]=word"
echo
