"""An NVlabs EDM ``network-snapshot-*.pkl`` as a uni3d teacher: :class:`EDMDenoiser` around an EDM network.

The restricted unpickler (:mod:`uni3d.models.edm.pickle_reader`) yields the wrapper's class and arguments and the
``ema`` network's ``state_dict``; the wrapper maps to a preconditioning (``EDMPrecond`` -> ``edm`` with its
``sigma_data``, ``VPPrecond`` -> ``vp`` with ``beta_d``, ``beta_min``, ``M``, ``VEPrecond`` -> ``ve``,
``iDDPMPrecond`` -> ``iddpm`` (nearest discrete level; the network's variance output is dropped)), ``model_type`` to
:class:`~uni3d.models.edm.networks.SongUNet` or :class:`~uni3d.models.edm.networks.DhariwalUNet`, built on the
``meta`` device and filled with the pickle's tensors (``load_state_dict(strict=True, assign=True)``: every
name and shape must match; no memory is spent on a throw-away initialisation). ``use_fp16`` is ignored: the
network runs in float32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uni3d.diffusion.edm import iddpm_sigmas
from uni3d.errors import UsageError
from uni3d.models.edm.denoiser import EDMDenoiser
from uni3d.models.edm.networks import ARCHITECTURES, EDMNetConfig, build_edm_net
from uni3d.models.edm.pickle_reader import EDMNetwork, read_edm_network
from uni3d.models.edm.precond import Precond

DEFAULT_MODEL_TYPE = {
    "EDMPrecond": "DhariwalUNet",
    "VPPrecond": "SongUNet",
    "VEPrecond": "SongUNet",
    "iDDPMPrecond": "DhariwalUNet",
}
"""``model_type`` when a pickle's wrapper does not name it (the defaults of EDM's ``*Precond.__init__``)."""


def precond_of(net: EDMNetwork, path: str | Path) -> tuple[Precond, float]:
    """The preconditioning and ``sigma_data`` of the pickle's wrapper class (0.5 for VP / VE / iDDPM, which
    have none). For iDDPM the pickle's table ``u`` of discrete noise levels must equal the one uni3d computes."""
    kw = net.init_kwargs
    if net.class_name == "VPPrecond":
        vp = Precond("vp", float(kw.get("beta_d", 19.9)), float(kw.get("beta_min", 0.1)), int(kw.get("M", 1000)))
        return vp, 0.5
    if net.class_name == "VEPrecond":
        return Precond("ve"), 0.5
    if net.class_name == "iDDPMPrecond":
        iddpm = Precond(
            "iddpm", m=int(kw.get("M", 1000)), c_1=float(kw.get("C_1", 0.001)), c_2=float(kw.get("C_2", 0.008))
        )
        stored = net.state_dict.get("u")
        ours = iddpm_sigmas(iddpm.c_1, iddpm.c_2, iddpm.m)
        if stored is not None and not torch.allclose(stored.float(), ours, rtol=1e-5, atol=1e-7):
            raise UsageError(f"{path}: the iDDPM noise-level table u differs from the one C_1, C_2, M define")
        return iddpm, 0.5
    return Precond("edm"), float(kw.get("sigma_data", 0.5))


def _mismatch(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return "; ".join(parts)


def edm_denoiser(net: EDMNetwork, path: str | Path) -> EDMDenoiser:
    """The frozen, eval-mode denoiser of an EDM network read from ``path``; one-line errors otherwise."""
    precond, sigma_data = precond_of(net, path)
    arch = net.model_type or DEFAULT_MODEL_TYPE.get(net.class_name, "DhariwalUNet")
    if arch not in ARCHITECTURES:
        raise UsageError(f"{path}: EDM model_type {arch!r} is not implemented (uni3d has {', '.join(ARCHITECTURES)})")
    cfg = EDMNetConfig(arch, dict(net.model_kwargs))
    try:
        with torch.device("meta"):
            model = build_edm_net(cfg)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{path}: cannot build the {arch} it describes ({err})") from None
    weights = {k.removeprefix("model."): v for k, v in net.state_dict.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise UsageError(f"{path}: the {arch} weights do not match its arguments: {_mismatch(missing, unexpected)}")
    wrong = [k for k, v in expected.items() if v.shape != weights[k].shape]
    if wrong:
        k = wrong[0]
        raise UsageError(
            f"{path}: the {arch} weights do not match its arguments: {len(wrong)} shape(s) differ "
            f"(e.g. {k}: {tuple(weights[k].shape)} in the file, {tuple(expected[k].shape)} expected)"
        )
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True, assign=True)
    return EDMDenoiser(model, sigma_data, precond).requires_grad_(False).eval()


def load_edm_teacher(
    path: str | Path, resolution: int | None = None, channels: int | None = None, data_name: str = "given"
) -> EDMDenoiser:
    """The EDM network of ``path`` as a denoiser, after checking it is made for the data's image shape (when
    ``resolution`` and ``channels`` are given)."""
    net = read_edm_network(path)
    if resolution is not None and (net.channels, net.resolution) != (channels, resolution):
        raise UsageError(
            f"{path}: the network is made for {net.channels}x{net.resolution}x{net.resolution} images, the "
            f"{data_name} data is {channels}x{resolution}x{resolution} (dataset mismatch: pass the teacher's own "
            "dataset with --data, or --data none for a data-free preset)"
        )
    return edm_denoiser(net, path)
