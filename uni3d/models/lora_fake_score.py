"""The online fake score ``D_p`` of 3D distillation (METHOD.md section 7).

:class:`LoraFakeScore` is ProlificDreamer's (VSD) estimate of the rendered images' noised marginal: a copy of the
prior's UNet whose base weights stay frozen, with peft LoRA adapters (rank ``r``) on the attention projections
and a camera embedding (an MLP of the flattened camera-to-world matrix, added to the time embedding through
diffusers' ``class_embedding`` slot). The adapters start at zero and the embedding's last layer too, so at step 0
``D_p = D_q`` without guidance. It is a copy, not an adapter on the teacher's own UNet, so the teacher is never
touched (memory: one more UNet; the embedded prior's is small, SD 1.5's is 1.7 GB in fp16).
Every call of :meth:`LoraFakeScore.denoise` keeps the mid-block features (a forward hook, detached) for
:class:`uni3d.models.ratio_heads.PooledRatioHead`.
"""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import Tensor, nn

from uni3d.diffusion.units import denoiser_from_prediction, vp_coefficients
from uni3d.models.stable_diffusion import StableDiffusionPrior

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
"""Attention projections that get LoRA adapters (ProlificDreamer's choice)."""
CAMERA_DIM = 16
"""Camera condition: the flattened ``4 x 4`` camera-to-world matrix (threestudio's ProlificDreamer)."""


class LoraFakeScore(nn.Module):
    """``D_p(x; sigma, text, camera)`` in VE units; only the adapters and the camera embedding train."""

    def __init__(self, prior: StableDiffusionPrior, rank: int) -> None:
        super().__init__()
        self.prior_units = (prior.prediction, prior.timestep_at)
        unet = copy.deepcopy(prior.unet)
        unet = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS), unet)
        width = unet.time_embedding.linear_2.out_features
        embed = nn.Sequential(nn.Linear(CAMERA_DIM, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(embed[2].weight)
        nn.init.zeros_(embed[2].bias)
        unet.class_embedding = embed.to(device=prior.log_sigmas.device)
        for name, param in unet.named_parameters():
            param.requires_grad_("lora_" in name or name.startswith("class_embedding."))
            if param.requires_grad:
                param.data = param.data.float()  # adapters train in fp32 whatever the UNet's dtype
        self.unet = unet
        self.mid_features: Tensor | None = None
        unet.mid_block.register_forward_hook(self._keep_mid)

    def _keep_mid(self, module: nn.Module, inputs: object, output: Tensor) -> None:
        self.mid_features = output.detach().float()

    def trainable_state(self) -> dict[str, Tensor]:
        """The adapter and camera-embedding tensors (the checkpoint of this module)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`trainable_state` returned."""
        missing = self.load_state_dict(state, strict=False).unexpected_keys
        if missing:
            raise KeyError(f"unexpected fake-score keys in checkpoint: {missing[:3]}")

    def denoise(self, x: Tensor, sigma: Tensor, cond: Tensor, camera: Tensor) -> Tensor:
        """``D_p`` (float32) of VE latents ``x (B, 4, h, w)`` at ``sigma (B,)``; ``camera (B, 16)`` (zeros: none).

        Same unit conversion as the teacher (:mod:`uni3d.diffusion.units`): the UNet sees ``alpha x`` at the
        timestep of ``sigma``; gradients flow to ``x`` and to the trainable parameters.
        """
        prediction, timestep_at = self.prior_units
        alpha, _ = vp_coefficients(sigma.float())
        x_vp = alpha.view(-1, 1, 1, 1) * x.float()
        dtype = self.unet.dtype
        out = self.unet(
            x_vp.to(dtype), timestep_at(sigma), encoder_hidden_states=cond.to(dtype), class_labels=camera.float()
        ).sample.float()
        return denoiser_from_prediction(out, x_vp, sigma.float(), prediction)


def camera_condition(c2w: Tensor, drop: float = 0.0) -> Tensor:
    """Flattened camera-to-world matrices ``(B, 16)``; each row zeroed with probability ``drop`` (the LoRA then
    also learns the camera-free score, as ProlificDreamer trains it)."""
    flat = c2w.reshape(len(c2w), CAMERA_DIM).float()
    if drop <= 0:
        return flat
    keep = (torch.rand(len(flat), 1, device=flat.device) >= drop).to(flat.dtype)
    return flat * keep
