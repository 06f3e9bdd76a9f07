"""Stand-in stage commands for runner tests: each writes its stage's declared outputs and logs that it ran.

Like a real stage, a stand-in's output is a function of its inputs: the stage name plus the sha256 of its
needs' output files. The pipeline logic (skip, redo, provenance, locks) runs for real on them;
tests/test_runner_e2e.py runs the real CLIs. prepare-data's stand-in links a few stand-in images into
``dataset/images/val`` and writes a real dataset fingerprint, so the fingerprint checks run too.
Environment knobs:

* ``FAIL_STAGE``: that stage exits 3;
* ``STAND_IN_VERSION``: written into every file, so a rerun can produce different bytes than the last;
* ``WAIT_STAGE`` + ``WAIT_FILE``: that stage prints ``waiting now`` and blocks until the file exists.

Ray's workers keep the environment they started with, so the executor tests steer stand-ins through a
control file beside the call log instead (``<calls>.json``: ``fail``, ``train_sleep_s``); every stand-in also
logs the thread count it was given to ``<calls>.threads``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

WRITE_OUTPUTS = """
import hashlib, json, os, sys, time
from pathlib import Path
stage, log = sys.argv[1], Path(sys.argv[2])
split = sys.argv.index("--out")
inputs, outputs = sys.argv[3:split], sys.argv[split + 1:]
control = json.loads(log.with_suffix(".json").read_text()) if log.with_suffix(".json").exists() else {}
with open(log, "a") as calls:
    calls.write(stage + "\\n")
with open(log.with_suffix(".threads"), "a") as threads:
    threads.write(f"{stage} {os.environ.get('OMP_NUM_THREADS')}\\n")
if "-train-" in stage:
    time.sleep(control.get("train_sleep_s", 0))
if stage in (os.environ.get("FAIL_STAGE"), control.get("fail")):
    print("stand-in failure"); sys.exit(3)
if stage == os.environ.get("WAIT_STAGE"):
    print("wait" + "ing now", flush=True)  # split: the log's echo of this command must not match
    while not Path(os.environ["WAIT_FILE"]).exists():
        time.sleep(0.05)
built_from = hashlib.sha256(b"".join(Path(p).read_bytes() for p in inputs if Path(p).is_file())).hexdigest()
for out in map(Path, outputs):
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name == "fingerprint.json":
        from auto_quantize_model.data.fingerprint import write_fingerprint
        source = log.parent / "source-images"
        source.mkdir(exist_ok=True)
        for i in range(4):
            image, link = source / f"{i}.jpg", out.parent / "images" / "val" / f"{i}.jpg"
            if not image.exists():
                image.write_bytes(b"jpg" * (i + 1))
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(image)
        write_fingerprint(out.parent)
    else:
        out.write_text(f"{stage} {os.environ.get('STAND_IN_VERSION', '')} {built_from}")
"""


def stand_in(stages, calls: Path):
    """``stages`` with each command replaced by the stand-in (``calls`` collects the names of stages that ran)."""
    outputs = {stage.name: [str(path) for path in stage.outputs] for stage in stages}
    replaced = []
    for s in stages:
        inputs = [path for need in s.needs for path in outputs.get(need, [])]
        argv = (sys.executable, "-c", WRITE_OUTPUTS, s.name, str(calls), *inputs, "--out", *outputs[s.name])
        replaced.append(dataclasses.replace(s, argv=argv))
    return replaced


def ran(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []
