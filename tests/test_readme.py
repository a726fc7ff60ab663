"""Every command block of README.md runs as written, in order, on a fresh copy of the project.

The blocks after "Set-up" are read from README.md itself, so a README edit that breaks a sequence
fails here. Each line runs as written, with these test-only changes: Lightning commands get options
that keep them to seconds (two training batches of short inputs, two evaluation batches); a GPU
line runs its command on one CPU process (a multi-node line is left out); set-up lines (pip, the
test command) are skipped. Lightning commands run in this process through ``tasks.cli.main`` (the
same entry point as ``python -m tasks``), except a DDP line, which needs its own processes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUIET_TRAINER_ARGS, run_cli

ROOT = Path(__file__).resolve().parents[1]
LIGHTNING = ("fit", "validate", "test", "predict")
FAST = {
    "fit": [
        "--trainer.limit_train_batches",
        "2",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "2",
        "--data.batch_size",
        "4",
        "--data.max_seq_length",
        "64",
    ],
    "validate": ["--trainer.limit_val_batches", "2"],
    "test": ["--trainer.limit_test_batches", "2"],
    "predict": ["--trainer.limit_predict_batches", "2"],
}


def readme_commands() -> list[tuple[int, str]]:
    """(block number, command line) for every line of README's bash blocks after the set-up."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = text[text.index("## Quick start") :]
    commands = []
    for number, block in enumerate(re.findall(r"```bash\n(.*?)```", text, re.S)):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append((number, line))
    return commands


def adapted(words: list[str]) -> list[str] | None:
    """The command as this test runs it (None: a line it leaves out)."""
    if words[:1] == ["pip"] or words[:3] == ["python", "-m", "pytest"]:
        return None
    if "--trainer.num_nodes" in words:
        return None  # multi-node needs a launcher and several machines
    if "gpu" in words:  # the same command on one CPU process
        at = words.index("--trainer.accelerator")
        words = [w for i, w in enumerate(words) if not (at <= i <= at + 1)]
        for option in ("--trainer.devices", "--trainer.precision"):
            if option in words:
                at = words.index(option)
                del words[at : at + 2]
    if words[:3] == ["python", "-m", "tasks"] and len(words) > 3 and words[3] in LIGHTNING:
        given = set(words)
        extra = FAST[words[3]]
        pairs = [extra[i : i + 2] for i in range(0, len(extra), 2)]
        words = words + [w for pair in pairs if pair[0] not in given for w in pair] + list(QUIET_TRAINER_ARGS)
    return words


@pytest.mark.readme
def test_every_readme_block_runs_as_written_in_order(tmp_path: Path, monkeypatch):
    for name in ("configs", "data"):
        shutil.copytree(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    ran = 0
    for block, line in readme_commands():
        words = adapted(shlex.split(line, comments=True))
        if words is None:
            continue
        where = f"README block {block}: {line.strip()}"
        if words[:3] == ["python", "-m", "tasks"] and "ddp" not in words:
            assert run_cli(*words[3:]) == 0, where
        else:
            shell = shlex.join(words) if words[:3] == ["python", "-m", "tasks"] else line
            shell = shell.replace("python ", f"{shlex.quote(sys.executable)} ", 1)
            done = subprocess.run(
                shell, shell=True, cwd=tmp_path, env=os.environ, capture_output=True, text=True
            )
            assert done.returncode == 0, f"{where}\n{done.stderr[-3000:]}"
        ran += 1
    assert ran >= 15
    # What the blocks promise is there.
    for path in (
        "outputs/sst2/checkpoints/best.ckpt",
        "outputs/sst2/metrics.json",
        "outputs/sst2/report.html",
        "outputs/sst2/eval/validation/metrics.json",
        "outputs/sst2/predict/my_texts/predictions.jsonl",
        "outputs/distill_sst2/eval/validation/metrics.json",
        "outputs/pretrain/pretrained/model.safetensors",
        "outputs/sst2-pruned/checkpoints/best.ckpt",
        "exported/sst2-hf/config.json",
        "out.npy",
    ):
        assert (tmp_path / path).exists(), path
