"""NVlabs EDM network pickles (``network-snapshot-*.pkl``) read with a restricted unpickler.

An EDM snapshot is a plain ``pickle`` of ``{"ema": net, "loss_fn": ..., "augment_pipe": ...,
"dataset_kwargs": {...}}``. Its networks are ``torch_utils.persistence`` objects: each is stored as a call
``_reconstruct_persistent_obj(meta)`` with ``meta = {type: "class", version, module_src, class_name,
state}``, where ``module_src`` is the Python source of ``training/networks.py`` and ``state`` the module's
``__dict__`` (``_init_kwargs``, ``_parameters``, ``_modules``, ...). Tensors are stored as
``torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(bytes), ...)``.

The unpickler below resolves only the names listed in :data:`_GLOBALS` and never executes ``module_src``:
a persistent object becomes a :class:`PersistentRecord` (class name, state) if its class is one of EDM's
network, loss or augmentation classes, storages are read with ``torch.load(weights_only=True)``, and any
other global (``os.system``, ``builtins.eval``, an unknown class, ...) is a one-line :class:`UsageError`
before anything runs. :func:`read_edm_network` then flattens the ``ema`` network into its constructor
arguments and a ``state_dict``.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from uni3d.errors import UsageError

EDM_CLASSES: frozenset[str] = frozenset(
    {
        "EDMPrecond",
        "VPPrecond",
        "VEPrecond",
        "iDDPMPrecond",
        "SongUNet",
        "DhariwalUNet",
        "UNetBlock",
        "Linear",
        "Conv2d",
        "GroupNorm",
        "PositionalEmbedding",
        "FourierEmbedding",
        "EDMLoss",
        "VPLoss",
        "VELoss",
        "AugmentPipe",
    }
)
"""Class names of ``training/networks.py``, ``training/loss.py`` and ``training/augment.py`` that may appear."""
PRECOND_CLASSES: frozenset[str] = frozenset({"EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond"})


@dataclass
class PersistentRecord:
    """A ``torch_utils.persistence`` object as data: its class name and its ``__dict__`` (``state``)."""

    class_name: str
    state: dict[str, Any]


class ModuleRecord:
    """A plain ``torch.nn`` container (``ModuleDict``, ``ModuleList``, ``Sequential``) as data.

    Pickle builds it as ``ModuleRecord.__new__(ModuleRecord)`` and hands the module's ``__dict__`` to
    :meth:`__setstate__`.
    """

    state: dict[str, Any]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` (a ``dict`` with attribute access upstream): read as a plain dict."""


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> PersistentRecord:
    """``torch_utils.persistence._reconstruct_persistent_obj`` without executing ``meta["module_src"]``."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UsageError("not an EDM network pickle: a persistent object without class metadata")
    name = str(meta.get("class_name"))
    if name not in EDM_CLASSES:
        raise UsageError(f"refusing to load persistent class {name!r}: not one of EDM's network classes")
    state = meta.get("state")
    return PersistentRecord(name, dict(state) if isinstance(state, dict) else {})


def _load_storage(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` (no code can run while reading it)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("torch.nn.modules.container", "ModuleDict"): ModuleRecord,
    ("torch.nn.modules.container", "ModuleList"): ModuleRecord,
    ("torch.nn.modules.container", "Sequential"): ModuleRecord,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in :data:`_GLOBALS`; anything else stops the load before it can run."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise UsageError(f"refusing to load {module}.{name}: not part of an NVlabs EDM network pickle") from None


def load_edm_pickle(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of an EDM snapshot, every network a :class:`PersistentRecord`."""
    try:
        with open(path, "rb") as fh:
            data = _RestrictedUnpickler(fh).load()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UsageError(
            f"{path} is not a readable pickle ({type(err).__name__}: {str(err).splitlines()[:1]})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("ema"), PersistentRecord):
        raise UsageError(f"{path} is not an EDM network snapshot (no 'ema' network inside)")
    return data


@dataclass(frozen=True)
class EDMNetwork:
    """An EDM network read from a pickle: its preconditioning class, constructor arguments and parameters.

    ``init_kwargs`` are those of the preconditioning wrapper (``img_resolution``, ``img_channels``,
    ``label_dim``, ``sigma_data``, ``model_type``, ...); ``state_dict`` uses the parameter names of the
    original ``torch.nn`` modules (``model.enc.32x32_conv.weight``, ...).
    """

    class_name: str
    init_kwargs: dict[str, Any]
    state_dict: dict[str, Tensor]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of the inner ``model`` (``SongUNet(img_resolution=..., in_channels=..., ...)``)."""

    @property
    def resolution(self) -> int:
        return int(self.init_kwargs["img_resolution"])

    @property
    def channels(self) -> int:
        return int(self.init_kwargs["img_channels"])

    @property
    def label_dim(self) -> int:
        return int(self.init_kwargs.get("label_dim", 0))

    @property
    def model_type(self) -> str:
        return str(self.init_kwargs.get("model_type", "DhariwalUNet" if self.class_name == "iDDPMPrecond" else ""))


def _flatten(node: Any, prefix: str, out: dict[str, Tensor]) -> None:
    """Collect ``_parameters`` and ``_buffers`` of a record tree under dotted names."""
    state = node.state if isinstance(node, PersistentRecord | ModuleRecord) else None
    if state is None:
        raise UsageError(f"unexpected {type(node).__name__} among the modules of the network at {prefix or 'root'}")
    for key in ("_parameters", "_buffers"):
        for name, value in (state.get(key) or {}).items():
            if isinstance(value, Tensor):
                out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", out)


PRECOND_ONLY_KWARGS = frozenset(
    {"img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max", "sigma_data"}
    | {"model_type", "beta_d", "beta_min", "M", "epsilon_t", "C_1", "C_2"}
)
"""Arguments the preconditioning classes keep; the rest of their ``_init_kwargs`` goes to the inner model."""


def _model_kwargs(record: PersistentRecord, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The inner model's ``_init_kwargs`` when the pickle stores them, else what the wrapper passes it (EDM's
    ``*Precond.__init__``: ``img_resolution``, ``in_channels = out_channels = img_channels`` (twice that out
    for iDDPM), ``label_dim`` and every argument the wrapper does not keep)."""
    model = (record.state.get("_modules") or {}).get("model")
    stored = model.state.get("_init_kwargs") if isinstance(model, PersistentRecord) else None
    if isinstance(stored, dict) and stored:
        return dict(stored)
    out_scale = 2 if record.class_name == "iDDPMPrecond" else 1
    derived = {k: v for k, v in kwargs.items() if k not in PRECOND_ONLY_KWARGS}
    derived.update(img_resolution=kwargs["img_resolution"], in_channels=kwargs["img_channels"])
    derived.update(out_channels=out_scale * kwargs["img_channels"], label_dim=kwargs.get("label_dim", 0))
    return derived


def read_edm_network(path: str | Path, resolution: int | None = None, channels: int | None = None) -> EDMNetwork:
    """The ``ema`` network of an EDM snapshot; one-line errors for a foreign file or a shape mismatch."""
    record = load_edm_pickle(path)["ema"]
    if record.class_name not in PRECOND_CLASSES:
        raise UsageError(f"{path}: the 'ema' network is a {record.class_name}, not an EDM preconditioned network")
    kwargs = dict(record.state.get("_init_kwargs") or {})
    for key in ("img_resolution", "img_channels"):
        kwargs.setdefault(key, record.state.get(key))
        if not isinstance(kwargs[key], int):
            raise UsageError(f"{path}: the network does not say its {key}")
    kwargs.setdefault("sigma_data", record.state.get("sigma_data", 0.5))
    kwargs.setdefault("label_dim", record.state.get("label_dim", 0))
    state: dict[str, Tensor] = {}
    _flatten(record, "", state)
    net = EDMNetwork(record.class_name, kwargs, state, _model_kwargs(record, kwargs))
    if resolution is not None and net.resolution != resolution:
        raise UsageError(
            f"{path}: the network is for {net.resolution}x{net.resolution} images, the data is "
            f"{resolution}x{resolution} (resolution mismatch)"
        )
    if channels is not None and net.channels != channels:
        raise UsageError(f"{path}: the network has {net.channels} image channels, the data {channels}")
    return net
