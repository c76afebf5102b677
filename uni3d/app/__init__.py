"""``uni3d app``: the Gradio web app around :func:`uni3d.tasks.text_to_3d.run.generate`.

Modules, one job each: :mod:`~uni3d.app.settings` (page inputs -> a validated :class:`GenerateConfig`),
:mod:`~uni3d.app.priors` (priors offered in the page), :mod:`~uni3d.app.jobs` (the job runner: a background
thread with a progress and cancel bridge), :mod:`~uni3d.app.runs` (run folders: results, downloads, the gallery),
:mod:`~uni3d.app.ui` (the page) and :mod:`~uni3d.cli.app` (the ``uni3d app`` command). Only ``ui`` and ``cli``
import gradio.
"""
