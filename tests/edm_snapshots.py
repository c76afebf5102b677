"""EDM-format network snapshots for tests: pickled as ``torch_utils.persistence`` does (calls of
``_reconstruct_persistent_obj(meta)``), so uni3d's restricted unpickler reads them like NVlabs' files. Needs the
``persistence`` fixture of ``conftest.py`` (a stand-in module the pickle can name)."""

from __future__ import annotations

import math
import pickle
import types
from collections import OrderedDict
from pathlib import Path

import torch


class Persistent:
    """Pickles as ``torch_utils.persistence`` does: a call ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, reconstruct: types.FunctionType, class_name: str, state: dict[str, object]) -> None:
        self.reconstruct, self.class_name, self.state = reconstruct, class_name, state

    def __reduce__(self) -> tuple[object, tuple[dict[str, object]]]:
        meta = {"type": "class", "version": 6, "module_src": "raise SystemExit('module_src must never be executed')"}
        return self.reconstruct, ({**meta, "class_name": self.class_name, "state": self.state},)


def module_dict(children: dict[str, object]) -> torch.nn.ModuleDict:
    """A real ``ModuleDict`` (pickled as EDM's are: NEWOBJ, then its ``__dict__``) holding persistent records."""
    container = torch.nn.ModuleDict()
    container._modules.update(children)  # records, not modules: bypasses add_module's type check on purpose
    container.training = False
    return container


def records(module: torch.nn.Module, reconstruct: types.FunctionType, init_kwargs: dict | None = None) -> object:
    """A module tree as EDM's pickle holds it: persistent records named by class, ModuleDicts in between."""
    children = OrderedDict((k, None if m is None else records(m, reconstruct)) for k, m in module._modules.items())
    if isinstance(module, torch.nn.ModuleDict):
        return module_dict(children)
    state = {"training": False, "_parameters": OrderedDict(module._parameters), "_modules": children}
    state["_buffers"] = OrderedDict(module._buffers)
    if init_kwargs is not None:
        state["_init_kwargs"] = init_kwargs
    return Persistent(reconstruct, type(module).__name__, state)


def write_snapshot(
    path: Path, reconstruct: types.FunctionType, net: torch.nn.Module, precond: str = "EDMPrecond", **extra: object
) -> Path:
    """``network-snapshot-*.pkl`` of ``precond(model_type=type(net))`` around ``net``'s weights (``inner``:
    store the model's own ``_init_kwargs`` too, as EDM does; otherwise they are derived from the wrapper's)."""
    kwargs = dict(net.cfg.kwargs)
    inner = extra.pop("inner", True)
    outer = {"img_resolution": kwargs.pop("img_resolution"), "img_channels": kwargs.pop("in_channels")}
    kwargs.pop("out_channels")
    u = extra.pop("u", iddpm_table() if precond == "iDDPMPrecond" else None)
    kwargs.update(label_dim=kwargs["label_dim"], use_fp16=False, model_type=type(net).__name__)
    outer.update({**kwargs, **extra})
    model = records(net, reconstruct, dict(net.cfg.kwargs) if inner else None)
    state = {"_init_kwargs": outer, "_modules": OrderedDict(model=model), "_buffers": OrderedDict(u=u)}
    ema = Persistent(reconstruct, precond, state)
    path.write_bytes(pickle.dumps({"ema": ema, "loss_fn": None, "augment_pipe": None, "dataset_kwargs": {}}))
    return path


def iddpm_table(c_1: float = 0.001, c_2: float = 0.008, m: int = 1000) -> torch.Tensor:
    """iDDPMPrecond's buffer ``u`` as EDM computes it (float32 torch ops)."""

    def alpha_bar(j: int) -> torch.Tensor:
        return (0.5 * math.pi * torch.as_tensor(j) / m / (c_2 + 1)).sin() ** 2

    u = torch.zeros(m + 1)
    for j in range(m, 0, -1):
        u[j - 1] = ((u[j] ** 2 + 1) / (alpha_bar(j - 1) / alpha_bar(j)).clip(min=c_1) - 1).sqrt()
    return u
