#!/usr/bin/env bash
# The main job in one command: install, build the default archive, serve it, answer a request.
# Leaves TorchServe running; prints how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. .venv/bin/activate

mar=model_store/fusion_sentiment.mar
# rebuild when anything that goes into the archive changed since it was built
if [ ! -f "$mar" ] || [ -n "$(find weights mmsent handlers -newer "$mar" -type f -print -quit)" ]; then
  python scripts/build_archive.py
fi
python scripts/serve.py start
echo
echo "[quickstart] POST /predictions/fusion_sentiment  text + image (JSON, base64 image):"
python scripts/predict.py --text "${TEXT:-Best concert ever, I loved every minute}" \
  --image "${IMAGE:-examples/party_popper.png}"
echo
echo "[quickstart] same image with sarcastic text (multipart form):"
python scripts/predict.py --multipart --text "Oh great, another Monday" \
  --image examples/angry_face.png
echo
echo "TorchServe is still running (REST :8080, management :8081, metrics :8082, gRPC :7070)."
echo "Stop it with:  .venv/bin/torchserve --stop"
