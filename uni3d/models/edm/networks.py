"""EDM's raw networks ``F(x_in, c_noise, class)``: SongUNet (DDPM++ / NCSN++) and DhariwalUNet (ADM).

Written for uni3d after the architectures of Song et al. 2021 (DDPM++ / NCSN++, "Score-Based Generative
Modeling through SDEs", appendix H) and Dhariwal & Nichol 2021 (ADM) as configured in EDM (Karras et al.
2022, appendix F.2); module names and constructor arguments are those of EDM's ``training/networks.py``, so
``state_dict``s of EDM's ``network-snapshot-*.pkl`` files load with ``strict=True``
(:mod:`uni3d.models.edm.pickle_teacher`).

Both expose the interface of :class:`uni3d.models.edm.unet.UNet` that :class:`~uni3d.models.edm.denoiser.EDMDenoiser`
and the distiller use: ``cfg`` (``in_channels``, ``resolution``, ``num_classes``, ``channels``),
``embedding(c_noise, class_labels)``, ``encode(x_in, emb) -> (bottleneck, skips)`` and ``forward(x_in,
c_noise, class_labels) -> (output, bottleneck)``. The bottleneck is the lowest resolution after the two
middle blocks (``dec.{r}x{r}_in0``, ``_in1``). Class labels are integers ``[B]`` (one-hot inside, as EDM's
preconditioning passes them); augmentation labels are never passed (EDM's samplers do not either), so
``map_augment`` is loaded but unused. ``label_dropout`` only matters for training and is not applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uni3d.models.edm.layers import Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding, UNetBlock

ARCHITECTURES = ("SongUNet", "DhariwalUNet")


@dataclass(frozen=True)
class EDMNetConfig:
    """An EDM architecture name and its constructor keyword arguments (``img_resolution``, ``in_channels``, ...)."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.kwargs["in_channels"])

    @property
    def resolution(self) -> int:
        return int(self.kwargs["img_resolution"])

    @property
    def num_classes(self) -> int:
        return int(self.kwargs.get("label_dim", 0))

    @property
    def channels(self) -> tuple[int, ...]:
        """Width of each resolution level (the last one is the bottleneck's)."""
        default = (1, 2, 2, 2) if self.arch == "SongUNet" else (1, 2, 3, 4)
        base = int(self.kwargs.get("model_channels", 128 if self.arch == "SongUNet" else 192))
        return tuple(base * int(m) for m in self.kwargs.get("channel_mult", default))

    def as_dict(self) -> dict[str, Any]:
        """Plain Python values only (lists, numbers, strings), so ``torch.load(weights_only=True)`` reads them."""
        return {"arch": self.arch, "kwargs": {k: _plain(v) for k, v in self.kwargs.items()}}


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def _one_hot(class_labels: Tensor | None, label_dim: int) -> Tensor:
    if class_labels is None:
        raise ValueError("this network is class-conditional: pass class_labels")
    if class_labels.dtype.is_floating_point:
        return class_labels.reshape(-1, label_dim)
    return F.one_hot(class_labels.long(), label_dim).float()


class _EDMUNet(nn.Module):
    """Shared encoder / middle / decoder walk over ``enc`` and ``dec`` (``ModuleDict``s in EDM's order)."""

    enc: nn.ModuleDict
    dec: nn.ModuleDict
    cfg: EDMNetConfig

    def _middle_names(self) -> list[str]:
        res = self.cfg.resolution >> (len(self.cfg.channels) - 1)
        return [f"{res}x{res}_in0", f"{res}x{res}_in1"]

    def encode(self, x_in: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder and middle blocks: ``(bottleneck, skips)``."""
        x, skips = self._encoder(x_in, emb)
        for name in self._middle_names():
            x = self.dec[name](x, emb)
        return x, skips

    def _encoder(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips: list[Tensor] = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        return x, skips

    def _decoder_block(self, x: Tensor, block: UNetBlock, skips: list[Tensor], emb: Tensor) -> Tensor:
        if x.shape[1] != block.in_channels:  # the resolution's blocks concatenate an encoder skip
            x = torch.cat([x, skips.pop()], dim=1)
        return block(x, emb)

    def forward(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        emb = self.embedding(c_noise, class_labels)
        bottleneck, skips = self.encode(x_in, emb)
        return self.decode(bottleneck, skips, emb), bottleneck

    def embedding(self, c_noise: Tensor, class_labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def decode(self, x: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        raise NotImplementedError


class SongUNet(_EDMUNet):
    """DDPM++ (``positional`` embedding, ``standard`` encoder, filter ``[1, 1]``) and NCSN++ (``fourier``,
    ``residual``, ``[1, 3, 3, 1]``) as in EDM: blocks with additive embedding, ``skip_scale = sqrt(1/2)``,
    one attention head at ``attn_resolutions`` and in the first middle block; the ``skip`` encoder adds a
    downsampled-input branch, the ``residual`` encoder a strided-conv branch; the output comes from
    ``aux_norm`` / ``aux_conv`` at the full resolution (``skip`` decoder: summed over all resolutions)."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: tuple[int, ...] | list[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: tuple[int, ...] | list[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: tuple[int, ...] | list[int] = (1, 1),
    ) -> None:
        super().__init__()
        for name, value, valid in (
            ("embedding_type", embedding_type, ("positional", "fourier")),
            ("encoder_type", encoder_type, ("standard", "skip", "residual")),
            ("decoder_type", decoder_type, ("standard", "skip")),
        ):
            if value not in valid:
                raise ValueError(f"SongUNet {name} {value!r} is not one of {', '.join(valid)}")
        kwargs = dict(locals())
        self.cfg = EDMNetConfig("SongUNet", {k: kwargs[k] for k in _SONG_ARGS})
        self.label_dim = label_dim
        emb_ch, noise_ch = model_channels * channel_mult_emb, model_channels * channel_mult_noise

        def block(c_in: int, c_out: int, attention: bool = False, **kw: bool) -> UNetBlock:
            return UNetBlock(
                c_in, c_out, emb_ch, num_heads=int(attention), dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                resample_filter=resample_filter, resample_proj=True, adaptive_scale=False, **kw,
            )  # fmt: skip

        if embedding_type == "positional":
            self.map_noise: nn.Module = PositionalEmbedding(noise_ch, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_ch)
        self.map_label = Linear(label_dim, noise_ch) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_ch, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_ch, emb_ch)
        self.map_layer1 = Linear(emb_ch, emb_ch)

        self.enc = nn.ModuleDict()
        c, c_aux = in_channels, in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(c, model_channels, 3)
                c = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = block(c, c, down=True)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(
                        c_aux, c_aux, 0, down=True, resample_filter=resample_filter
                    )
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(c_aux, c, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        c_aux, c, 3, down=True, resample_filter=resample_filter, fused_resample=True
                    )
                    c_aux = c
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = block(c, model_channels * mult, attention=res in attn_resolutions)
                c = model_channels * mult
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = block(c, c, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(c, c)
            else:
                self.dec[f"{res}x{res}_up"] = block(c, c, up=True)
            for idx in range(num_blocks + 1):
                attention = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = block(c + skips.pop(), model_channels * mult, attention)
                c = model_channels * mult
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(
                        out_channels, out_channels, 0, up=True, resample_filter=resample_filter
                    )
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(c, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(c, out_channels, 3, init_scale=1e-5)

    def embedding(self, c_noise: Tensor, class_labels: Tensor | None) -> Tensor:
        """``silu(L1(silu(L0(e))))`` of ``e = [sin, cos](c_noise) + L_label(sqrt(label_dim) onehot)``."""
        emb = self.map_noise(c_noise)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)  # EDM's DDPM++ order: sin first
        if self.map_label is not None:
            emb = emb + self.map_label(_one_hot(class_labels, self.label_dim).to(emb.dtype) * math.sqrt(self.label_dim))
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def _encoder(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips: list[Tensor] = []
        aux = x
        for name, layer in self.enc.items():
            if name.endswith("_aux_down"):
                aux = layer(aux)
            elif name.endswith("_aux_skip"):
                x = skips[-1] = x + layer(aux)
            elif name.endswith("_aux_residual"):
                x = skips[-1] = aux = (x + layer(aux)) / math.sqrt(2)
            else:
                x = layer(x, emb) if isinstance(layer, UNetBlock) else layer(x)
                skips.append(x)
        return x, skips

    def decode(self, x: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        """Decoder after the middle blocks; the output is the sum of the ``aux_conv`` heads (upsampled)."""
        middle = set(self._middle_names())
        out: Tensor | None = None
        for name, layer in self.dec.items():
            if name in middle:
                continue
            if name.endswith("_aux_up"):
                out = layer(out)
            elif name.endswith("_aux_norm"):
                head = layer(x)
            elif name.endswith("_aux_conv"):
                head = layer(F.silu(head))
                out = head if out is None else head + out
            else:
                x = self._decoder_block(x, layer, skips, emb)
        assert out is not None
        return out


_SONG_ARGS = (
    "img_resolution in_channels out_channels label_dim augment_dim model_channels channel_mult channel_mult_emb "
    "num_blocks attn_resolutions dropout label_dropout embedding_type channel_mult_noise encoder_type decoder_type "
    "resample_filter"
).split()


class DhariwalUNet(_EDMUNet):
    """ADM as in EDM: blocks with adaptive scale/shift, ``channels_per_head = 64`` attention at
    ``attn_resolutions`` (and the first middle block), resampling without projection, label embedding added
    after the first mapping layer, output ``out_conv(silu(out_norm(x)))``."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: tuple[int, ...] | list[int] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: tuple[int, ...] | list[int] = (32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kwargs = dict(locals())
        self.cfg = EDMNetConfig("DhariwalUNet", {k: kwargs[k] for k in _SONG_ARGS[:12]})
        self.label_dim = label_dim
        emb_ch = model_channels * channel_mult_emb

        def block(c_in: int, c_out: int, attention: bool = False, **kw: bool) -> UNetBlock:
            return UNetBlock(c_in, c_out, emb_ch, num_heads=c_out // 64 if attention else 0, dropout=dropout, **kw)

        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_ch)
        self.map_layer1 = Linear(emb_ch, emb_ch)
        self.map_label = Linear(label_dim, emb_ch, bias=False) if label_dim else None

        self.enc = nn.ModuleDict()
        c = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(c, model_channels * mult, 3)
                c = model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = block(c, c, down=True)
            for idx in range(num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = block(c, model_channels * mult, res in attn_resolutions)
                c = model_channels * mult
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = block(c, c, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(c, c)
            else:
                self.dec[f"{res}x{res}_up"] = block(c, c, up=True)
            for idx in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = block(
                    c + skips.pop(), model_channels * mult, res in attn_resolutions
                )
                c = model_channels * mult
        self.out_norm = GroupNorm(c)
        self.out_conv = Conv2d(c, out_channels, 3, init_scale=0.0)

    def embedding(self, c_noise: Tensor, class_labels: Tensor | None) -> Tensor:
        """``silu(L1(silu(L0(e))) + L_label(onehot))`` of the positional features ``e`` of ``c_noise``."""
        emb = self.map_layer1(F.silu(self.map_layer0(self.map_noise(c_noise))))
        if self.map_label is not None:
            emb = emb + self.map_label(_one_hot(class_labels, self.label_dim).to(emb.dtype))
        return F.silu(emb)

    def decode(self, x: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        middle = set(self._middle_names())
        for name, layer in self.dec.items():
            if name not in middle:
                x = self._decoder_block(x, layer, skips, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def build_edm_net(cfg: EDMNetConfig) -> SongUNet | DhariwalUNet:
    """The network of ``cfg`` (fresh weights); ``ValueError`` for another architecture or a bad argument."""
    if cfg.arch == "SongUNet":
        return SongUNet(**cfg.kwargs)
    if cfg.arch == "DhariwalUNet":
        return DhariwalUNet(**cfg.kwargs)
    raise ValueError(f"no uni3d implementation of EDM's {cfg.arch!r} (implemented: {', '.join(ARCHITECTURES)})")
