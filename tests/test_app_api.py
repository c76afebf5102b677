"""The web app's HTTP API through ``gradio_client``: a short run on the embedded prior returns the files; bad input
returns a message and leaves the server serving."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pytest
import trimesh
from gradio_client import Client
from gradio_client.utils import Status

pytestmark = pytest.mark.slow

TINY = {"steps": 3, "preview_every": 1, "mc_resolution": 32, "texture_size": 64, "turntable_frames": 4}
"""A run small enough for a test: 3 steps, a 32³ marching-cubes grid, a 64 px texture, a 4-frame turntable."""


def test_generate_endpoint_returns_the_asset(app_server: tuple[str, Path]) -> None:
    url, out = app_server
    client = Client(url, verbose=False)
    assert {"/generate", "/cancel"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    status, preview, glb, video, files = client.predict(prompt="a blue sphere", **TINY, api_name="/generate")
    assert 'data-phase="done"' in status and "3 steps" in status, status
    mesh = trimesh.load(glb, force="mesh")
    assert len(mesh.faces) > 0
    assert Path(preview).is_file() and Path(video).suffix == ".mp4" and Path(video).stat().st_size > 0
    names = sorted(Path(f).name for f in files)
    assert names == ["model.glb", "model_obj.zip"]
    with zipfile.ZipFile(next(f for f in files if f.endswith(".zip"))) as zf:
        assert "model.obj" in zf.namelist() and "model.mtl" in zf.namelist()
    (run,) = [p for p in out.iterdir() if p.name.startswith("a-blue-sphere")]
    assert json.loads((run / "metrics.json").read_text())["status"] == "done"
    # the same request again: the finished run is returned, not trained again
    again = client.predict(prompt="a blue sphere", **TINY, api_name="/generate")
    assert 'data-phase="done"' in again[0] and again[2].endswith("model.glb")
    assert len([p for p in out.iterdir() if p.name.startswith("a-blue-sphere")]) == 1
    note = client.predict(api_name="/cancel")
    assert "Nothing of yours is running" in note


def test_cancel_stops_after_a_step_and_keeps_the_partial_result(app_server: tuple[str, Path]) -> None:
    url, out = app_server
    client = Client(url, verbose=False)
    job = client.submit(prompt="a green torus", **{**TINY, "steps": 500}, api_name="/generate")
    deadline = time.monotonic() + 120
    while not any("step " in o[0] and "Training" in o[0] for o in job.outputs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    other = Client(url, verbose=False).submit(prompt="", **TINY, api_name="/generate")  # another user
    while other.status().code != Status.IN_QUEUE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert other.status().code == Status.IN_QUEUE and other.status().rank == 0  # waits: one job at a time
    assert "Cancelling" in client.predict(api_name="/cancel")  # the same client: the same session
    status, preview, glb, video, files = job.result(timeout=180)
    assert 'data-phase="cancelled"' in status and "cancelled at step" in status, status
    assert len(trimesh.load(glb, force="mesh").faces) > 0 and len(files) == 2
    (run,) = [p for p in out.iterdir() if p.name.startswith("a-green-torus")]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "cancelled" and 1 <= metrics["cancelled_at_step"] < 500
    assert "the prompt is empty" in other.result(timeout=60)[0]  # then the queued request runs


def test_bad_input_is_a_message_and_the_server_keeps_serving(app_server: tuple[str, Path]) -> None:
    url, out = app_server
    client = Client(url, verbose=False)
    for prompt, needle in (("   ", "the prompt is empty"), ("a" * 400, "at most 300")):
        status = client.predict(prompt=prompt, **TINY, api_name="/generate")[0]
        assert 'data-phase="error"' in status and needle in status, status
        assert "Traceback" not in status
    for changes, needle in (({"steps": 0}, "steps must be from 1 to 5000"), ({"seed": -1}, "seed must be from 0")):
        status = client.predict(prompt="a red cube", **{**TINY, **changes}, api_name="/generate")[0]
        assert 'data-phase="error"' in status and needle in status, status  # said, never clamped
    status = client.predict(prompt="a red cube", prior=str(out / "no-such-prior"), **TINY, api_name="/generate")[0]
    assert 'data-phase="error"' in status and "no-such-prior" in status, status
    assert "/generate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False"
