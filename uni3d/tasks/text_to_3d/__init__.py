"""Text to 3D (METHOD.md section 7): prompt -> radiance field optimised by score distillation -> exported asset.

``config`` (:class:`~uni3d.tasks.text_to_3d.config.GenerateConfig`), ``trainer`` (the named stages of a step:
render, encode, teacher, LoRA fake score, ratio head, run by :class:`uni3d.engine.DistillationLoop`), ``run``
(checkpoints, resume, previews, export, metrics), ``batch`` (prompt files), ``bank`` (the ratio head's teacher
samples). ``trainer``, ``run`` and ``bank`` import diffusers; import them explicitly.
"""
