"""Where the gateway and TorchServe listen in the KServe pod. One place, read by the gateway's CLI
and by mmsent.packaging.kserve (which generates the runtime and the bundle's config), so the
command line, the manifests and the config cannot disagree. No kserve import here: packaging
imports this module at build time.
"""

from __future__ import annotations

from mmsent.config import DEFAULT_MODEL_NAME

MODEL_NAME = DEFAULT_MODEL_NAME
# KServe routes traffic only to these two (its TorchServe runtime's wrapper used them too).
GATEWAY_HTTP_PORT = 8080
GATEWAY_GRPC_PORT = 8081
# TorchServe behind the gateway: REST inference AND management share 8085, on loopback.
TORCHSERVE_REST_PORT = 8085
TORCHSERVE_URL = f"http://127.0.0.1:{TORCHSERVE_REST_PORT}"
# Seconds. Startup covers a cold pod loading the default model (14 s measured) with margin; the
# request timeout defaults above the model-config's responseTimeout (120 s) so TorchServe's own
# timeout answer, not the gateway's, is what a client sees.
STARTUP_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 130.0
# How long one readiness answer from TorchServe's management API is reused: every infer asks
# the model whether it is healthy (kserve's DataPlane), so this bounds the extra calls.
HEALTH_TTL_S = 1.0
