"""Our KServe model server in front of TorchServe (the "gateway"), replacing pytorch/serve's kfs
wrapper in the KServe pod.

Why: TorchServe 0.12 does not serve the protocol's model metadata or per-model ready routes, its
v2 gRPC service has a package name stock clients do not call, and the kfs wrapper's gRPC path
forwards only the first element of the first input (docs/kubernetes.md "Why we replace the
wrapper"). The gateway is a ``kserve.Model`` that forwards the whole v2 request to TorchServe's
REST ``/v2/models/<name>/infer`` (which our handler implements fully), so KServe's REST and gRPC
front-ends both serve it.

Layering: the gateway imports only ``mmsent.config`` and ``mmsent.errors`` (pyproject.toml's
import-linter contract), so the runtime image needs just those modules. This ``__init__`` and
``defaults`` import no kserve, so packaging can read the port facts cheaply.
"""
