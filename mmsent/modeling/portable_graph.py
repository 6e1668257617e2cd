"""Make a traced TorchScript graph device- and precision-portable, and check that it is.

``torch.jit.trace`` records every ``device=`` and ``dtype=`` it sees as a graph constant
(pytorch/pytorch#62961, #43134). Our archive is traced on a CPU machine, so on the default model
two ``Device = prim::Constant[value="cpu"]`` fed eight ops (transformers' ``masking_utils``:
``attention_mask.to(cpu)`` and three ``arange(device=cpu)``; our own ``zeros(device=cpu)``), and
``ScalarType`` constants pinned float32 in the attention masks. ``torch.jit.load(map_location=
"cuda:N")`` moves the weights but not those constants, so the first CUDA forward mixed CUDA and
CPU tensors and the worker died in its warm-up; in fp16 the float32 masks would promote the
attention scores back to float32 and break the next half-precision matmul.

Our own model code avoids these constants at the source (``type_as`` / ``*_like``). The ones
inside transformers and ``torch.nn.functional`` are rewired by :func:`make_portable`: one
``prim::device(input_ids)`` and one ``prim::dtype(pixel_values)`` node at the top of the graph
replace every device constant and every float32 ``dtype=`` constant, so each tensor the model
creates takes its device and floating dtype from the inputs at run time; the attention masks'
fill value ``finfo(float32).min``, which float16 cannot hold, becomes float16's own minimum.
:func:`pinned_constants` is the check: the export refuses a graph it reports, and the tests run
it on the saved file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# c10::ScalarType codes as TorchScript stores them (torch.float32 -> 6, and so on). Only the
# floating types are rewired: integer and bool dtypes (token ids, masks) are meant to be fixed.
FLOAT_SCALAR_TYPES = {5: "float16", 6: "float32", 7: "float64", 15: "bfloat16"}
TRACED_FLOAT = 6  # the dtype the model is traced in; the one rewired to the input's dtype
# Factories whose dtype=None means the global default (float32), not the inputs' precision.
DEFAULT_FLOAT_FACTORIES = {"aten::zeros", "aten::ones", "aten::empty", "aten::rand", "aten::randn"}
REWIRED_DTYPES = (FLOAT_SCALAR_TYPES[TRACED_FLOAT], "default (float32)")
# transformers fills masked attention scores with torch.finfo(float32).min, traced as a float
# constant. float16 cannot hold it: torch 2.11 on CUDA refused the first fp16 forward ("value
# cannot be converted to type c10::Half without overflow", measured on an H100), torch 2.14 on
# CPU silently made it -inf. It is rewired to float16's most negative finite value, finite in
# float32, bfloat16 and float16 alike; exp() of it is 0 in each, so masked keys still weigh 0.
HALF_MAX = float(torch.finfo(torch.float16).max)  # 65504.0
TRACED_FLOAT_MAX = float(torch.finfo(torch.float32).max)
OUTSIDE_HALF = "(outside float16)"  # how pinned_constants labels such a float constant
DEVICE_SOURCE = "input_ids"  # every input lives on the serving device
DTYPE_SOURCE = "pixel_values"  # the one float input whose dtype is the serving precision


@dataclass(frozen=True)
class PinnedConstant:
    """One constant argument that fixes a device or a float dtype at trace time."""

    op: str
    argument: str
    value: str
    source: str  # the Python line the tracer recorded, to find who created it

    def __str__(self) -> str:
        return f"{self.op}({self.argument}={self.value}) at {self.source}"


def _arguments(node: torch._C.Node) -> list[str]:
    try:
        return [arg.name for arg in torch._C.parse_schema(node.schema()).arguments]
    except RuntimeError:  # prim:: nodes without a schema take no device/dtype arguments
        return []


def _constant(value: torch._C.Value) -> torch._C.Node | None:
    node = value.node()
    return node if node.kind() == "prim::Constant" and node.hasAttribute("value") else None


def _device_name(const: torch._C.Node) -> str:
    text = str(const)  # %5 : Device = prim::Constant[value="cpu"]()
    return text.split('value="', 1)[1].split('"', 1)[0] if 'value="' in text else text.strip()


def _pinned_inputs(node: torch._C.Node) -> list[tuple[int, str, str]]:
    """(input index, argument name, value) of each device / float-dtype constant ``node`` uses."""
    found = []
    names = _arguments(node)
    for index, value in enumerate(node.inputs()):
        const = _constant(value)
        if const is None:
            continue
        if value.type().kind() == "DeviceObjType":
            argument = names[index] if index < len(names) else "device"
            found.append((index, argument, _device_name(const)))
        elif (
            index < len(names)
            and names[index] == "dtype"
            and value.type().kind() == "IntType"
            and const.i("value") in FLOAT_SCALAR_TYPES
        ):
            found.append((index, "dtype", FLOAT_SCALAR_TYPES[const.i("value")]))
        elif value.type().kind() == "FloatType" and HALF_MAX < abs(const.f("value")) < math.inf:
            argument = names[index] if index < len(names) else "value"
            found.append((index, argument, f"{const.f('value'):.7g} {OUTSIDE_HALF}"))
    if node.kind() in DEFAULT_FLOAT_FACTORIES and "dtype" in names:
        index = names.index("dtype")
        if index < node.inputsSize() and node.inputsAt(index).type().kind() == "NoneType":
            found.append((index, "dtype", "default (float32)"))
    return found


def _source(node: torch._C.Node) -> str:
    text = str(node)
    return text.rsplit("# ", 1)[-1].strip() if "# " in text else "?"


def pinned_constants(graph: torch._C.Graph) -> list[PinnedConstant]:
    """Every device constant, every floating ``dtype=`` constant, and every float constant
    outside float16's finite range (it breaks the fp16 forward; +-inf is fine), that an op consumes.

    Run it on an inlined graph (``module.inlined_graph``) or on a frozen module's graph; an
    empty list means the model creates every tensor on its inputs' device and precision.
    """
    found = []
    for node in graph.nodes():
        for _, argument, value in _pinned_inputs(node):
            found.append(PinnedConstant(node.kind(), argument, value, _source(node)))
    return found


def _graph_input(graph: torch._C.Graph, name: str) -> torch._C.Value:
    for value in graph.inputs():
        if value.debugName().split(".")[0] == name:
            return value
    names = [v.debugName() for v in graph.inputs()]
    raise ValueError(f"graph has no input named {name!r}: {names}")


def _float_constant(graph: torch._C.Graph, before: torch._C.Node, value: float) -> torch._C.Value:
    const = graph.create("prim::Constant")
    const.f_("value", value)
    const.output().setType(torch._C.FloatType.get())
    const.insertBefore(before)
    return const.output()


def make_portable(module: torch.jit.ScriptModule) -> int:
    """Inline ``module.forward`` and rewire its device / float-dtype constants to the inputs.

    Returns the number of op arguments rewired. Only float32 (the traced dtype, explicit or as
    a factory's default) is rewired; a float64 or float16 constant would be a deliberate choice
    and stays, reported by :func:`pinned_constants` so the export fails loudly, not guessing.

    The pass edits the graph that ``torch.jit.save`` serialises; a module that already ran
    keeps executing its cached plan, so run (and check) the saved-and-reloaded file.
    """
    graph = module.graph
    torch._C._jit_pass_inline(graph)  # submodule calls -> one graph, so one pass sees all ops
    first = next(iter(graph.nodes()))
    device = graph.create("prim::device", [_graph_input(graph, DEVICE_SOURCE)], 1)
    device.output().setType(torch._C.DeviceObjType.get())
    device.insertBefore(first)
    dtype = graph.create("prim::dtype", [_graph_input(graph, DTYPE_SOURCE)], 1)
    dtype.output().setType(torch._C.IntType.get())
    dtype.insertBefore(first)
    rewired = 0
    for node in graph.nodes():
        for index, argument, value in _pinned_inputs(node):
            if argument == "dtype" and value not in REWIRED_DTYPES:
                continue
            if value.endswith(OUTSIDE_HALF):
                fill = _constant(node.inputsAt(index)).f("value")
                if abs(fill) != TRACED_FLOAT_MAX:
                    continue  # not the mask-fill idiom: left for pinned_constants to report
                node.replaceInput(index, _float_constant(graph, first, HALF_MAX if fill > 0
                                                         else -HALF_MAX))  # fmt: skip
            else:
                node.replaceInput(index, dtype.output() if argument == "dtype" else device.output())
            rewired += 1
    torch._C._jit_pass_dce(graph)  # drop the now-unused constants
    torch._C._jit_pass_lint(graph)
    return rewired
