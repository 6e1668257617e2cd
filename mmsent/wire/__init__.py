"""Wire facts shared by the serving core, the KServe gateway and the clients.

Each fact lives here once: the Open Inference BYTES codec (:mod:`.v2_bytes`), the JSON helpers
every strict request parser uses (:mod:`.json_fields`) and the "worker is READY" check of
TorchServe's management API (:mod:`.workers`). Only the standard library and
:mod:`mmsent.errors` are imported, so every layer may import this package (import-linter
contract in pyproject.toml).
"""
