"""``batch``: one ``generate`` run per prompt of a file; resumable, failure-tolerant, shardable.

Prompt files hold one prompt per line; blank lines are skipped and ``#`` starts a comment (a whole line, or the
rest of a line after whitespace). Each prompt runs in ``OUT/<slug>-<hash>`` (:func:`run_folder`); a finished
folder is skipped, an unfinished one resumes from its checkpoint, a failing prompt is recorded (its folder
gets ``error.txt``) and the batch goes on. ``--shard K/N`` keeps prompts ``K, K + N, K + 2N, ...`` (1-based), so
the N shards partition the file. A summary table is printed and saved as ``OUT/batch[-K-of-N].json``.

Launchers: under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or in a SLURM array
(``SLURM_ARRAY_TASK_ID`` from ``SLURM_ARRAY_TASK_MIN``, ``SLURM_ARRAY_TASK_COUNT``) each worker takes its own shard
(:func:`shard_from_env`) and its own GPU (``cuda:LOCAL_RANK``); :func:`merge_reports` writes the combined
``OUT/batch.json`` from the shards' reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uni3d.errors import UsageError
from uni3d.io import atomic_write, check_output_folder, save_json
from uni3d.prompt_text import check_prompt, is_blank
from uni3d.tasks.text_to_3d.config import GenerateConfig
from uni3d.tasks.text_to_3d.preflight import preflight

_COMMENT = re.compile(r"(^|\s)#.*$")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_REPORT = re.compile(r"^batch-(\d+)-of-(\d+)\.json$")
SUMMARY_PROMPT_WIDTH = 80
"""Prompt characters shown per row of the batch summary."""


@dataclass(frozen=True)
class PromptLine:
    """A prompt and its 1-based line number in the file."""

    line: int
    prompt: str


@dataclass
class BatchRow:
    """One prompt's outcome: ``done`` (ran now), ``skipped`` (finished before) or ``failed`` (with ``error``)."""

    line: int
    prompt: str
    status: str
    folder: str
    seconds: float = 0.0
    steps: int | None = None
    rollbacks: int | None = None
    error: str | None = None


def read_prompts(path: Path) -> list[PromptLine]:
    """The prompts of ``path`` (first occurrence of each); one-line errors name the file and line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read prompt file {path}: {err.strerror or err}") from None
    prompts: dict[str, PromptLine] = {}
    for number, data in enumerate(raw.splitlines(), 1):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path}:{number}: the line is not UTF-8 text") from None
        text = _COMMENT.sub("", text).strip()
        check_prompt(text, what=f"{path}:{number}: the prompt", allow_blank=True)
        if not is_blank(text) and text not in prompts:
            prompts[text] = PromptLine(number, text)
    if not prompts:
        raise UsageError(f"{path} holds no prompts (one per line; # starts a comment)")
    return list(prompts.values())


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``; ``None`` -> ``(1, 1)``."""
    if text is None:
        return 1, 1
    match = _SHARD.match(text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise UsageError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard a launcher gives this process: ``torchrun``'s ``(RANK + 1, WORLD_SIZE)``, else a SLURM array's
    ``(TASK_ID - TASK_MIN + 1, TASK_COUNT)``; ``None`` outside both (or for a world of one)."""
    env = os.environ if env is None else env
    try:
        if "WORLD_SIZE" in env and "RANK" in env:
            k, n = int(env["RANK"]) + 1, int(env["WORLD_SIZE"])
        elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            k, n = int(env["SLURM_ARRAY_TASK_ID"]) - first + 1, int(env["SLURM_ARRAY_TASK_COUNT"])
        else:
            return None
    except ValueError:
        raise UsageError("the launcher's RANK/WORLD_SIZE or SLURM_ARRAY_TASK_* variables are not integers") from None
    if not 1 <= k <= n:
        raise UsageError(f"the launcher puts this worker at shard {k} of {n}; expected 1 <= K <= N")
    return (k, n) if n > 1 else None


def merge_reports(out: Path) -> list[BatchRow]:
    """``OUT/batch.json`` from every ``batch-K-of-N.json`` in ``out`` (one N; every shard present), rows in file
    order; a missing shard or reports of different N are one-line errors."""
    reports = {int(m[1]): int(m[2]) for f in Path(out).glob("batch-*-of-*.json") if (m := _REPORT.match(f.name))}
    if not reports:
        raise UsageError(f"{out} holds no shard reports (batch-K-of-N.json) to merge")
    counts = set(reports.values())
    if len(counts) != 1:
        raise UsageError(f"{out} holds shard reports of different shard counts ({sorted(counts)}); merge one run")
    n = counts.pop()
    missing = sorted(set(range(1, n + 1)) - set(reports))
    if missing:
        raise UsageError(f"{out} lacks the reports of shard(s) {', '.join(map(str, missing))} of {n}; wait or rerun")
    rows = [
        BatchRow(**r) for k in range(1, n + 1) for r in json.loads((Path(out) / f"batch-{k}-of-{n}.json").read_text())
    ]
    rows.sort(key=lambda r: r.line)
    save_json(Path(out) / "batch.json", [asdict(r) for r in rows])
    return rows


def select_shard(prompts: list[PromptLine], k: int, n: int) -> list[PromptLine]:
    """Prompts ``k, k + n, ...`` (1-based): the ``n`` shards are disjoint and cover the file."""
    return prompts[k - 1 :: n]


def run_folder(out: Path, prompt: str) -> Path:
    """``out / "<slug>-<6 hex of sha1(prompt)>"``: readable, and distinct for prompts with the same slug."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "prompt"
    return Path(out) / f"{slug}-{hashlib.sha1(prompt.encode()).hexdigest()[:6]}"


def run_batch(
    path: Path,
    out: Path,
    settings: dict[str, Any],
    shard: tuple[int, int] = (1, 1),
    progress: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> list[BatchRow]:
    """Run every prompt of the shard with ``settings`` (a :class:`GenerateConfig` mapping without ``prompt``)."""
    lines = select_shard(read_prompts(path), *shard)
    configs = [GenerateConfig.from_dict({**settings, "prompt": p.prompt}) for p in lines]  # bad settings fail now
    check_output_folder(out)
    if configs:
        preflight(configs[0])  # the device and the prior's files, shared by every prompt
    from uni3d.tasks.text_to_3d.run import (  # diffusers: imported once the input is known to be good
        finished_metrics,
        generate,
        load_prior,
    )

    prior = None
    rows: list[BatchRow] = []
    suffix = "" if shard == (1, 1) else f"-{shard[0]}-of-{shard[1]}"
    save_json(Path(out) / f"batch{suffix}.json", [])  # a shard with no prompts still reports
    for i, (item, cfg) in enumerate(zip(lines, configs, strict=True), 1):
        folder = run_folder(out, item.prompt)
        row = BatchRow(item.line, item.prompt, "skipped", str(folder))
        try:
            finished = finished_metrics(cfg, folder) is not None
        except UsageError as err:  # finished with other settings: reported, never taken as this run
            row.status, row.error, finished = "failed", str(err), True
        if not finished:
            log(f"[{i}/{len(lines)}] {item.prompt!r} -> {folder}")
            start = time.perf_counter()
            try:
                prior = prior if prior is not None else load_prior(cfg)
                metrics = generate(cfg, folder, prior=prior, progress=progress, log=log)
                row.status, row.steps, row.rollbacks = "done", metrics["steps"], metrics["rollbacks"]
            except UsageError as err:
                if prior is None:  # the prior itself cannot load: every prompt would fail the same way
                    raise
                row.status, row.error = "failed", str(err)
            except Exception as err:  # one prompt's failure never stops the batch; the traceback is kept
                row.status, row.error = "failed", f"{type(err).__name__}: {err}".splitlines()[0]
                atomic_write(folder / "error.txt", traceback.format_exc())
            row.seconds = round(time.perf_counter() - start, 1)
        rows.append(row)
        save_json(Path(out) / f"batch{suffix}.json", [asdict(r) for r in rows])
    return rows


def shorten(text: str, width: int = SUMMARY_PROMPT_WIDTH) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis and the full length."""
    return text if len(text) <= width else f"{text[: width - 12].rstrip()}... ({len(text)} chars)"


def format_summary(rows: list[BatchRow]) -> str:
    """A fixed-width table: line, status, seconds, steps, rollbacks, prompt (shortened: :func:`shorten`; the
    report's JSON keeps it whole) and the error of failures."""
    lines = [f"{'line':>5}  {'status':<8} {'seconds':>8} {'steps':>6} {'rollb':>5}  prompt"]
    for r in rows:
        steps = "" if r.steps is None else str(r.steps)
        rollbacks = "" if r.rollbacks is None else str(r.rollbacks)
        seconds = f"{r.seconds:.1f}" if r.status != "skipped" else ""
        lines.append(f"{r.line:>5}  {r.status:<8} {seconds:>8} {steps:>6} {rollbacks:>5}  {shorten(r.prompt)}")
        if r.error:
            lines.append(f"{'':>5}  error: {r.error}")
    counts = {s: sum(r.status == s for r in rows) for s in ("done", "skipped", "failed")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
