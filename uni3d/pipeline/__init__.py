"""Text to 3D (METHOD.md section 7): prompt -> radiance field optimised by score distillation -> exported asset.

``config`` (:class:`~uni3d.pipeline.config.GenerateConfig`), ``trainer`` (one step: render, encode, teacher and
LoRA fake score, preset loss, ratio head; rollback state), ``run`` (checkpoints, resume, previews, export,
metrics), ``batch`` (prompt files), ``cli`` (``uni3d generate``, ``uni3d batch``). ``trainer``, ``run``,
``fake_score`` and ``bank`` import diffusers; import them explicitly.
"""
