"""The end-to-end lite run: ``python -m clad_lite pipeline --profile NAME --out DIR``.

::

    python -m clad_lite pipeline --profile ci --out runs/quickstart          # minutes on 2 CPU cores
    python -m clad_lite pipeline --profile cpu --out runs/pipeline_cpu --baseline --parallel
    python -m clad_lite pipeline --profile ci --set stage2.steps=100 --skip-eval

Six steps for ``libero_10``, each skipped when its output is already there *and complete*:

=====  ==============  ==============================================  ===============================
 #     step            output                                          complete when
=====  ==============  ==============================================  ===============================
 1     data            ``profile.data.path`` (``--set data.root=...``)  ``summary.json`` of ``generate``
                                                                       covers every task, rendered
 2     encoder         ``OUT/encoder.pt`` (DecisionNCE-lite)           the checkpoint is at its last
                                                                       step and holds its summary
 3     embeddings      ``DATA/embeddings/<hash>/``                     ``cache.json`` and every file
                                                                       fresh (``embed`` decides)
 4     stage 1         ``OUT/clad/`` (CLaD)                            ``last.pt`` at ``stage1.steps``
 5     stage 2         ``OUT/policy/`` (the foresight policy)          ``last.pt`` at ``stage2.steps``
 6     eval            ``OUT/eval_policy/`` (LIBERO rollouts, videos)  ``results.json``
=====  ==============  ==============================================  ===============================

``--set data.recovery_demos=N`` (not the paper) adds a step after *data*: N recovery
demonstrations per task in ``DATA/recovery`` (``clad_lite.expert.recovery``: the expert fumbles
one grasp, only its recovery is recorded); ``--set data.dagger_demos=N --set
data.dagger_policy=RUN/policy`` one more: N on-policy ones in ``DATA/dagger``
(``clad_lite.expert.dagger``: RUN's policy drives, the expert takes over at a random step, only
the expert is recorded). Each set is embedded into its own cache and read by both
training stages; the encoder keeps training on the clean demonstrations only.

``--baseline`` adds the policy-only baseline (``policy.foresight=none``) with the same data and
budget: ``OUT/policy_only/`` and ``OUT/eval_policy_only/``. ``--parallel`` trains and evaluates
it in a second process while CLaD's stage 1, stage 2 and evaluation run (one torch thread and
one simulator worker each): the way to use both cores of a 2-core machine.

**Skipping.** A killed step is never taken as done: each step's own completion marker decides
(a training run stopped before its last step is *resumed* from ``last.pt``; ``generate`` and
``embed`` resume by themselves). Each finished step also leaves a stamp,
``OUT/.pipeline/<step>.json``, with the fingerprint of what it was made from (the profile
sections it depends on, the data files, the encoder hash, the upstream checkpoint). When a
stamp no longer matches (``--set stage1.steps=...`` on an existing OUT, a re-generated data
set, a retrained encoder with other weights), the step is *stale*: its old output is moved to
``<output>.stale`` and the step is redone, and so is everything downstream of it (their
stamps name the upstream outputs). Retraining a deleted encoder with the same seed, data and
threads gives the same weights, hence the same hash, and nothing downstream is redone.

**Python** (what the notebooks use)::

    from clad_lite.pipeline import Pipeline

    pipe = Pipeline("ci", out="runs/pipeline_ci")     # or a Profile; overrides=["stage1.steps=60"]
    pipe.data()          # the data directory
    pipe.encoder()       # the encoder checkpoint (a decisionnce:... spec for the paper profile)
    pipe.embeddings()    # the embedding-cache folder
    pipe.stage1()        # OUT/clad
    pipe.stage2()        # OUT/policy            (stage2(name, overrides, clad="clad"))
    pipe.evaluate()      # OUT/eval_policy/results.json
    summary = pipe.run(baseline=False)   # all of it; summary["steps"], summary["table"]
    pipe.steps           # [StepRecord(step, status, seconds, output, detail), ...]

Every method returns its output path and runs what it needs first (``pipe.stage1()`` makes
sure the data, the encoder and the embeddings exist). ``pipe.run()`` also writes
``OUT/pipeline.json`` (the step report and the results) and prints the summary table.

**Threads.** ``--threads N`` sets torch's intra-op threads (and ``OMP_NUM_THREADS`` for
processes started afterwards); on the shared 2-core machine ``--threads 1`` is often faster.
Training uses no DataLoader worker processes here (``train_workers=0``): the data set is the
in-memory embedding cache, and the pipeline process may hold a GL context from the
simulator, which must not be forked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clad_lite.cli import UserError

SUITE = "libero_10"
STAMP_DIR = ".pipeline"
ENCODER_NAME = "encoder.pt"
# the extra sets (train.EXTRA_SETS, DATA/<folder>): who makes them and their seed's offset from data.seed,
# so that their scenes are not the clean demonstrations'; files <task>_<folder>.hdf5
RECOVERY_POLICY = "clad_lite.expert:make_recovery_expert"
DAGGER_POLICY = "clad_lite.expert:make_dagger_expert"
EXTRA_SEED_OFFSETS = {"recovery": 1, "dagger": 2}
# generate's step budget for an on-policy set: up to 400 policy steps before the hand-over, then the
# expert's whole remaining plan (the suite's 505 would cut late hand-overs short)
DAGGER_BUDGET = 900
RESULTS_NAME = "results.json"
REPORT_NAME = "pipeline.json"
BASELINE_OVERRIDES = ("policy.foresight=none",)
# fields that change how fast a step runs, not what it produces
_NOT_CONTENT = {"data": ("workers",), "encoder": ("threads", "save_every", "log_every"),
                "stage1": ("checkpoint_every", "log_every"), "stage2": ("checkpoint_every", "log_every"),
                "eval": ("workers", "videos_per_task")}
# fields added after runs were stamped: at this value they change nothing that was made, so they
# are left out of the fingerprint (older stamps, which lack them, still match)
_OMIT_AT = {"stage1": {"ema_decay": 0.0}, "stage2": {"ema_decay": 0.0},
            "data": {"vision_source": "encoder", "action_noise": 0.0, "success_hold": 0, "expert_motion": "min_jerk",
                     "recovery_demos": 0, "dagger_demos": 0, "dagger_policy": "", "dagger_handover": "20-400",
                     "oracle_velocities": True},
            "eval": {"action_samples": 1}, "encoder": {"crop_ratio": (3 / 4, 4 / 3)}}


@dataclass
class StepRecord:
    """One step of a pipeline run, as printed in its progress line."""

    step: str            # "data", "encoder", "embeddings", "stage1", "stage2:policy", "eval:policy", ...
    status: str          # "reused" | "done" | "resumed" | "redone (stale)" | "skipped"
    seconds: float       # wall time of this step in this run (checks included)
    output: str | None   # its output path
    detail: str = ""     # what was reused / made

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def reused(self) -> bool:
        return self.status == "reused"


# =========================================================================== helpers
def _content(name: str, values: dict) -> dict:
    """The values of profile section ``name`` that decide what a step makes."""
    # tuples -> lists, as in a stamp or a saved configuration read back, before any comparison
    values = json.loads(json.dumps({k: v for k, v in values.items() if k not in _NOT_CONTENT.get(name, ())}))
    for key, neutral in _OMIT_AT.get(name, {}).items():
        neutral = json.loads(json.dumps(neutral))
        if values.get(key, neutral) == neutral:
            values.pop(key, None)
    return values


def _section(profile, name: str) -> dict:
    return _content(name, dataclasses.asdict(getattr(profile, name)))


def _normal(value):
    """Compare as a stamp read back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def _file_identity(path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _move_aside(path: Path) -> Path | None:
    """Move a stale output to ``<path>.stale`` (replacing an older one); return where it went."""
    path = Path(path)
    if not path.exists():
        return None
    target = path.with_name(path.name + ".stale")
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(path, target)
    return target


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _final_checkpoint(run_dir: Path):
    """(checkpoint dict, numbered final checkpoint path) of a training run, or (None, None)."""
    from clad_lite.train import load_checkpoint, newest_checkpoint

    newest = newest_checkpoint(run_dir)
    if newest is None:
        return None, None
    try:
        checkpoint = load_checkpoint(newest)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is an incomplete run
        return None, None
    numbered = Path(run_dir) / f"ckpt_{int(checkpoint['step']):06d}.pt"
    return checkpoint, numbered if numbered.exists() else newest


# =========================================================================== the pipeline
class Pipeline:
    """data -> encoder -> embeddings -> stage 1 -> stage 2 -> eval, each step skipped when done.

    ``profile``: a ``Profile`` or a profile name (``ci``, ``cpu``, ``paper``; None: ``$CLAD_PROFILE``).
    ``out``: the folder of everything but the data (default ``runs/pipeline_<profile>``).
    ``overrides``: ``section.key=value`` profile overrides for every step.
    ``data_dir``: the demonstrations (default ``profile.data.path``).
    ``threads``: torch threads (None: leave as is). ``eval_workers``: simulator processes of the
    evaluation (None: ``eval.workers``). ``train_workers``: DataLoader workers (default 0).
    """

    STEPS = ("data", "encoder", "embeddings", "stage1", "stage2", "eval")

    def __init__(self, profile=None, out: str | os.PathLike | None = None, *, overrides=(), data_dir=None,
                 threads: int | None = None, progress: bool = True, verbose: bool = True,
                 train_workers: int = 0, eval_workers: int | None = None):
        from clad_lite.config import ConfigError, Profile, apply_overrides, get_profile, project_root

        # what a second process needs to rebuild this pipeline (run(parallel=True))
        self._init_args = {"profile": profile, "out": out, "overrides": list(overrides or ()), "data_dir": data_dir,
                           "threads": threads, "progress": False, "verbose": verbose,
                           "train_workers": train_workers, "eval_workers": eval_workers}

        try:
            base = profile if isinstance(profile, Profile) else get_profile(profile)
            self.overrides = [str(o) for o in overrides or ()]
            self.profile = apply_overrides(base, self.overrides)
        except ConfigError as error:
            raise UserError(str(error)) from error
        if self.profile.data.suite != SUITE:
            raise UserError(f"the pipeline runs {SUITE}; data.suite is {self.profile.data.suite!r}")
        # the default hangs off the project folder, so notebooks (run from notebooks/) share it
        self.out = Path(out) if out is not None else Path(project_root()) / "runs" / f"pipeline_{self.profile.name}"
        self.data_dir = Path(data_dir if data_dir is not None else self.profile.data.path)
        driver = Path(self.profile.data.dagger_policy)
        if self.profile.data.dagger_demos and driver.resolve().is_relative_to(self.out.resolve()):
            raise UserError(f"data.dagger_policy {driver} lies in this pipeline's OUT {self.out}, whose training "
                            "would rewrite the policy its on-policy demonstrations came from: point it at another "
                            "run's policy (e.g. runs/<previous OUT>/policy)")
        self.threads = threads
        self.progress, self.verbose = progress, verbose
        self.train_workers, self.eval_workers = train_workers, eval_workers
        # the privileged-state oracle (clad_lite.state_oracle) reads simulator states: no encoder, no
        # embeddings, and demonstrations need no images (physics only)
        from clad_lite.state_oracle import SIM_STATE

        self.oracle = self.profile.data.vision_source == SIM_STATE
        self.steps: list[StepRecord] = []
        self._memo: dict[str, object] = {}
        self._planned = self._steps_planned()
        if threads:
            self._set_threads(threads)

    # ------------------------------------------------------------------ bookkeeping
    def _steps_planned(self, baseline: bool = False) -> int:
        """Steps a run announces: the six, one per extra set, and the baseline's stage 2 and eval."""
        return len(self.STEPS) + len(self.extra_sets) + (2 if baseline else 0)

    @staticmethod
    def _set_threads(threads: int) -> None:
        import torch

        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(int(threads))  # processes started from here on

    def _stamp_path(self, key: str) -> Path:
        return self.out / STAMP_DIR / f"{key.replace(':', '_')}.json"

    def _stamp(self, key: str) -> dict | None:
        return _read_json(self._stamp_path(key))

    def _write_stamp(self, key: str, inputs: dict, output, seconds: float) -> None:
        _write_json(self._stamp_path(key), {"step": key, "inputs": inputs, "output": str(output),
                                           "seconds": round(seconds, 2), "finished": time.time()})

    def _label(self, key: str) -> str:
        kind, _, name = key.partition(":")
        pretty = {"stage1": "stage 1", "stage2": "stage 2"}.get(kind, kind)
        default = {"stage1": "clad", "stage2": "policy", "eval": "policy"}.get(kind)
        return pretty if not name or name == default else f"{pretty} ({name})"

    def _record(self, key: str, status: str, start: float, output, detail: str = "") -> StepRecord:
        record = StepRecord(key, status, round(time.perf_counter() - start, 2), None if output is None else str(output),
                            detail)
        self.steps.append(record)
        if self.verbose:
            index = len(self.steps)
            if not detail:
                text = status
            elif status in ("reused", "skipped"):
                text = f"{status} ({detail})"
            else:
                text = detail if status == "done" else f"{status}: {detail}"
            print(f"[{index}/{max(self._planned, index)}] {self._label(key)}: {text}", flush=True)
        return record

    def _announce(self, key: str, what: str) -> None:
        if self.verbose:
            index = len(self.steps) + 1
            print(f"[{index}/{max(self._planned, index)}] {self._label(key)}: {what} ...", flush=True)

    def _check_stamp(self, key: str, inputs: dict, output: Path) -> str:
        """'match' | 'missing' | 'stale' for a step whose completion marker holds."""
        stamp = self._stamp(key)
        if stamp is None:
            return "missing"
        return "match" if _normal(stamp.get("inputs")) == _normal(inputs) else "stale"

    # ------------------------------------------------------------------ 1. data
    def data_fingerprint(self, extras: bool = False) -> list[dict]:
        """The demonstration files (name, size, mtime); with ``extras`` also the extra sets' (recovery,
        dagger), which the training stages read but the encoder does not."""
        from clad_lite.demos import hdf5 as H

        folders = [self.data_dir] + ([self.data_dir / name for name in self.extra_sets] if extras else [])
        return [{"name": p.name, "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
                for p in H.find_demo_files(folders)]

    @property
    def extra_sets(self) -> list[str]:
        """The extra demonstration sets the profile asks for (``DATA/<name>``; ``train.EXTRA_SETS``)."""
        from clad_lite.train import extra_sets

        return extra_sets(self.profile.data)

    def _data_set(self, extra: str | None = None) -> dict:
        """What ``generate`` makes for the profile's demonstrations, or for the extra set ``extra``
        ("recovery", "dagger"): ``GenerateConfig`` fields (what :meth:`_data_complete` checks)."""
        d = self.profile.data
        if extra is not None:
            if extra not in EXTRA_SEED_OFFSETS:
                raise ValueError(f"unknown extra demonstration set {extra!r}; expected one of {tuple(EXTRA_SEED_OFFSETS)}")
            data_set = {"out": self.data_dir / extra, "seed": d.seed + EXTRA_SEED_OFFSETS[extra], "kind": extra}
            if extra == "recovery":
                return {**data_set, "demos": d.recovery_demos, "policy": RECOVERY_POLICY}
            return {**data_set, "demos": d.dagger_demos, "policy": DAGGER_POLICY, "budget": DAGGER_BUDGET,
                    "policy_args": {"checkpoint": d.dagger_policy, "handover": d.dagger_handover}}
        return {"out": self.data_dir, "demos": d.demos_per_task, "policy": d.expert_policy, "seed": d.seed,
                "kind": "demo"}

    def _data_complete(self, extra: str | None = None) -> tuple[bool, str]:
        """Whether ``generate``'s ``summary.json`` says the profile's data set (or its extra set
        ``extra``) is all there."""
        d = self.profile.data
        wanted_set = self._data_set(extra)
        data_dir, demos_per_task = wanted_set["out"], wanted_set["demos"]
        policy, seed = wanted_set["policy"], wanted_set["seed"]
        summary = _read_json(data_dir / "summary.json")
        if not isinstance(summary, dict):
            return False, "no summary.json"
        config = summary.get("config", {})
        if config.get("image_size") != d.image_size:
            if (data_dir / "summary.json").exists() and config.get("image_size") is not None:
                raise UserError(f"{data_dir} holds {config.get('image_size')} px images, the profile wants "
                                f"{d.image_size} px: use another data.root (--set data.root=...) or delete that folder")
            return False, "other image size"
        if config.get("suite") != d.suite or config.get("seed") != seed:
            return False, "other suite or seed"
        from clad_lite.demos import hdf5 as H
        from clad_lite.demos.generate import _FINGERPRINT_DEFAULTS, DEFAULT_POLICY, RENDER_REVISION, policy_revision

        for key in ("action_noise", "success_hold"):  # summaries from before an option: made at its default
            made = config.get(key, _FINGERPRINT_DEFAULTS[key])
            if made != getattr(d, key):
                return False, f"demonstrations made with {key.replace('_', ' ')} {made}, the profile wants {getattr(d, key)}"
        if config.get("policy", DEFAULT_POLICY) != policy:
            return False, f"demonstrations made by {config.get('policy', DEFAULT_POLICY)}, the profile wants {policy}"
        made, wanted = config.get("policy_revision", _FINGERPRINT_DEFAULTS["policy_revision"]), policy_revision(policy)
        if made != wanted:
            return False, f"demonstrations made by revision {made} of {policy}, it is now at revision {wanted}"
        if "policy_args" in wanted_set:  # e.g. the driving checkpoint (its sha256) of an on-policy set
            from clad_lite.demos.generate import resolve_policy

            wanted_args = resolve_policy(policy).canonical_args(wanted_set["policy_args"])
            if config.get("policy_args", {}) != wanted_args:
                return False, f"demonstrations made with {config.get('policy_args')}, the profile wants {wanted_args}"
        if config.get("image_stride", 1) != d.image_stride and not self.oracle:  # the oracle reads no image
            return False, f"images rendered with stride {config.get('image_stride', 1)}, the profile wants {d.image_stride}"
        rows = {row["task_id"]: row for row in summary.get("tasks", [])}
        for task in d.tasks:
            row = rows.get(task)
            if row is None or not (data_dir / row["file"]).exists() or not (row.get("images_rendered") or self.oracle):
                return False, f"task {task} missing"
            if not self.oracle:
                with H.DemoFile(data_dir / row["file"]) as demo_file:
                    if demo_file.render_revision != RENDER_REVISION:  # generate renders them again
                        return False, (f"task {task}: images of render revision {demo_file.render_revision}, "
                                       f"now {RENDER_REVISION} (fixtures placed as pass 1 had them)")
            short = row["demos"] < demos_per_task
            exhausted = row["attempts"] >= int(config.get("max_attempts") or 4 * demos_per_task)
            if row["demos"] > demos_per_task or (short and not exhausted) or row["demos"] == 0:
                return False, f"task {task}: {row['demos']} of {demos_per_task} demos"
        return True, f"{sum(rows[t]['demos'] for t in d.tasks)} demos of {len(d.tasks)} tasks"

    def data(self) -> Path:
        """Demonstrations of the profile's tasks (``generate``, resumed where it stopped), and each
        extra set the profile asks for (:meth:`extra_data`)."""
        if "data" not in self._memo:
            self._demonstrations()
            for name in self.extra_sets:
                self.extra_data(name)
        return self._memo["data"]

    def extra_data(self, name: str) -> Path:
        """An extra set in ``DATA/<name>`` (not the paper), files ``<task>_<name>.hdf5``, with its own
        seed (``data.seed`` + ``EXTRA_SEED_OFFSETS[name]``): ``"recovery"``, ``data.recovery_demos``
        per task (``clad_lite.expert.recovery``: the expert fumbles one grasp, only its recovery is
        recorded), or ``"dagger"``, ``data.dagger_demos`` per task (``clad_lite.expert.dagger``: the
        policy of ``data.dagger_policy`` drives, the expert takes over, only the expert is recorded)."""
        start = time.perf_counter()
        data_set = self._data_set(name)
        out = data_set["out"]
        complete, why = self._data_complete(name)
        if complete:
            self._record(name, "reused", start, out, why)
            return out
        self._announce(name, f"generating {data_set['demos']} {name} demos x tasks {list(self.profile.data.tasks)} "
                             f"into {out}")
        summary = self._generate(name)
        self._record(name, "done", start, out,
                     f"{summary['total_demos']} {name} demos generated in {_seconds(time.perf_counter() - start)}")
        return out

    def _generate(self, extra: str | None = None) -> dict:
        """``generate`` the profile's demonstrations (or an extra set), resumed where it stopped;
        a task without any kept demonstration is an error, fewer than asked a warning."""
        from clad_lite.demos.generate import GenerateConfig, generate

        d = self.profile.data
        data_set = self._data_set(extra)
        out = data_set["out"]
        summary = generate(GenerateConfig(
            suite=d.suite, tasks=list(d.tasks), workers=d.workers, image_size=d.image_size,
            image_stride=d.image_stride, render=not self.oracle, action_noise=d.action_noise,
            success_hold=d.success_hold, progress=self.progress, **{**data_set, "out": str(out)}))
        what = f"{extra} demonstration" if extra else "demonstration"
        empty = [r["task_id"] for r in summary["tasks"] if r["demos"] == 0]
        if empty:
            raise UserError(f"generate kept no {what} of task(s) {empty} (see {out}/summary.json)")
        short = [f"task {r['task_id']}: {r['demos']}/{r['demos_requested']}" for r in summary["tasks"]
                 if r["demos"] < r["demos_requested"]]
        if short:
            print(f"warning: fewer {what}s than asked ({', '.join(short)})", file=sys.stderr)
        return summary

    def _demonstrations(self) -> Path:
        start = time.perf_counter()
        d = self.profile.data
        has_files = self.data_dir.is_dir() and any(p.suffix in (".hdf5", ".h5") for p in self.data_dir.iterdir())
        generated_here = (self.data_dir / "summary.json").exists() or (self.data_dir / ".parts").exists()
        if has_files and not generated_here:  # someone's own files (e.g. LIBERO's): use, never overwrite
            self._write_stamp("data", {"data": self.data_fingerprint()}, self.data_dir, 0.0)
            self._memo["data"] = self.data_dir
            self._record("data", "reused", start, self.data_dir, f"{len(self.data_fingerprint())} files, not generated here")
            return self.data_dir
        complete, why = self._data_complete()
        if complete:
            self._memo["data"] = self.data_dir
            self._record("data", "reused", start, self.data_dir, why)
            return self.data_dir
        self._announce("data", f"generating {d.demos_per_task} demos x tasks {list(d.tasks)} at {d.image_size} px "
                               f"(images every {d.image_stride} steps) into {self.data_dir}")
        summary = self._generate()
        self._memo["data"] = self.data_dir
        self._write_stamp("data", {"data": self.data_fingerprint()}, self.data_dir, time.perf_counter() - start)
        self._record("data", "done", start, self.data_dir,
                     f"{summary['total_demos']} demos generated in {_seconds(time.perf_counter() - start)}")
        return self.data_dir

    # ------------------------------------------------------------------ 2. encoder
    def encoder_spec(self) -> str:
        """What ``load_encoder`` takes: the lite checkpoint, or ``decisionnce:CKPT[,vocab=V]``."""
        e = self.profile.encoder
        if e.kind == "decisionnce":
            if not e.decisionnce_checkpoint:
                raise UserError("the profile's encoder is the real DecisionNCE: set "
                                "--set encoder.decisionnce_checkpoint=PATH (and encoder.decisionnce_vocab=PATH)")
            return f"decisionnce:{e.decisionnce_checkpoint}" + (f",vocab={e.decisionnce_vocab}" if e.decisionnce_vocab else "")
        return str(self.out / ENCODER_NAME)

    def _encoder_complete(self, path: Path) -> tuple[bool, dict | None]:
        import torch

        if not path.is_file():
            return False, None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - unreadable: not complete
            return False, None
        if not isinstance(payload, dict) or payload.get("summary") is None:
            return False, None  # an intermediate (save_every) checkpoint has no summary
        complete = int(payload.get("step", -1)) >= int(payload["config"].get("steps", 1 << 62))
        return complete, payload.get("config")

    def encoder(self) -> str:
        """The frozen encoder: DecisionNCE-lite trained on the data (``OUT/encoder.pt``)."""
        if "encoder" in self._memo:
            return self._memo["encoder"]
        data_dir = self.data()
        start = time.perf_counter()
        if self.oracle:
            self._memo["encoder"] = None
            self._record("encoder", "skipped", start, None, "data.vision_source=sim_state reads no images")
            return None
        spec = self.encoder_spec()
        if self.profile.encoder.kind != "lite":
            self._memo["encoder"] = spec
            self._record("encoder", "reused", start, spec, "pretrained DecisionNCE weights")
            return spec
        path = Path(spec)
        inputs = {"encoder": _section(self.profile, "encoder"), "data": self.data_fingerprint()}
        complete, config = self._encoder_complete(path)
        status = "done"
        if complete:
            stamp = self._check_stamp("encoder", inputs, path)
            if stamp == "missing":  # made outside the pipeline: judge by its configuration
                stamp = "match" if _content("encoder", config or {}) == inputs["encoder"] else "stale"
                if stamp == "match":
                    self._write_stamp("encoder", inputs, path, 0.0)
            if stamp == "match":
                self._memo["encoder"] = spec
                self._record("encoder", "reused", start, spec, f"hash {self.encoder_hash()[:16]}")
                return spec
            _move_aside(path)
            status = "redone (stale)"
        from clad_lite.encoders.decision_nce import train_encoder

        cfg = self.profile.encoder
        self._announce("encoder", f"training DecisionNCE-lite, {cfg.steps} steps")
        summary = train_encoder(data_dir, path, cfg, progress=self.progress, profile=self.profile.name)
        seconds = time.perf_counter() - start
        self._write_stamp("encoder", inputs, path, seconds)
        self._memo["encoder"] = spec
        self._memo.pop("encoder_hash", None)
        top1 = summary.get("retrieval_top1")
        self._record("encoder", status, start, spec,
                     f"trained in {_seconds(seconds)}, hash {summary['encoder_hash'][:16]}"
                     + (f", retrieval top-1 {top1:.2f}" if top1 is not None else ""))
        return spec

    def encoder_hash(self) -> str | None:
        if self.oracle:
            return None
        if "encoder_hash" not in self._memo:
            from clad_lite.encoders.base import load_encoder

            self._memo["encoder_hash"] = load_encoder(self.encoder()).hash()
        return self._memo["encoder_hash"]

    # ------------------------------------------------------------------ 3. embeddings
    def embeddings(self) -> Path:
        """The embedding cache of the data for this encoder (``DATA/embeddings/<hash[:16]>``)."""
        if "embeddings" in self._memo:
            return self._memo["embeddings"]
        spec = self.encoder()
        data_dir = self.data()
        start = time.perf_counter()
        if self.oracle:
            self._memo["embeddings"] = None
            self._record("embeddings", "skipped", start, None, "data.vision_source=sim_state reads no images")
            return None
        from clad_lite.encoders.base import load_encoder
        from clad_lite.encoders.cache import cache_dir_for, embed_directory

        encoder = load_encoder(spec)
        encoder_hash = encoder.hash()
        self._memo["encoder_hash"] = encoder_hash
        folder = cache_dir_for(data_dir, encoder_hash)
        if not (folder / "cache.json").exists():
            self._announce("embeddings", f"embedding every frame with encoder {encoder_hash[:16]}")
        # embed_directory reuses every file whose encoder hash and data fingerprint match
        report = embed_directory(data_dir, encoder, cameras=tuple(self.profile.data.cameras), progress=self.progress)
        for name in self.extra_sets:  # each its own cache, DATA/<name>/embeddings/<hash> (train.load_training_data)
            extra = embed_directory(self.data_dir / name, encoder, cameras=tuple(self.profile.data.cameras),
                                    progress=self.progress)
            report = {**report, "computed": report["computed"] + extra["computed"],
                      "reused": report["reused"] + extra["reused"]}
        folder = Path(report["cache_dir"])
        self._memo["embeddings"] = folder
        if not report["computed"]:
            self._record("embeddings", "reused", start, folder, f"hash {encoder_hash[:16]}")
        else:
            self._record("embeddings", "done", start, folder,
                         f"{len(report['computed'])} file(s) embedded in {_seconds(time.perf_counter() - start)}, "
                         f"{len(report['reused'])} reused (hash {encoder_hash[:16]})")
        return folder

    # ------------------------------------------------------------------ 4./5. training
    def _train(self, key: str, stage: int, name: str, overrides, clad_dir: Path | None) -> Path:
        from clad_lite.config import ConfigError, apply_overrides
        from clad_lite.train import profile_from_dict, train

        run_dir = self.out / name
        try:
            profile = apply_overrides(self.profile, list(overrides))
        except ConfigError as error:
            raise UserError(str(error)) from error
        cache_dir = self.embeddings()
        data_dir = self.data()
        sections = ("data", "encoder", "clad", "stage1") if stage == 1 else ("data", "encoder", "policy", "stage2")
        inputs = {"stage": stage, **{s: _section(profile, s) for s in sections},
                  "data_files": self.data_fingerprint(extras=True), "encoder_hash": self.encoder_hash()}
        if clad_dir is not None:
            _, clad_ckpt = _final_checkpoint(clad_dir)
            inputs["clad_checkpoint"] = _file_identity(clad_ckpt)
        steps = (profile.stage1 if stage == 1 else profile.stage2).steps
        start = time.perf_counter()
        checkpoint, _ = _final_checkpoint(run_dir)
        status, resume = "done", False
        if checkpoint is not None:
            stamp = self._stamp(key)
            if stamp is not None:  # written when the step started, completed when it ended
                matches = _normal(stamp.get("inputs")) == _normal(inputs)
            else:  # made outside the pipeline: judge by its configuration
                saved = checkpoint.get("config", {})
                have = {s: _content(s, saved.get(s, {})) for s in sections}
                matches = _normal(have) == _normal({s: inputs[s] for s in sections}) \
                    and checkpoint.get("stage") == stage \
                    and checkpoint.get("data", {}).get("encoder_hash") == self.encoder_hash()
            done_steps = int(checkpoint["step"])
            saved_config = checkpoint["config"]
            del checkpoint
            if matches and done_steps >= steps:
                if stamp is None or stamp.get("status") == "running":  # killed just after its last save
                    self._write_stamp(key, inputs, run_dir, 0.0)
                self._memo[key] = run_dir
                self._record(key, "reused", start, run_dir, f"{done_steps} steps")
                return run_dir
            if matches:
                resume, status = True, f"resumed at step {done_steps}"
                profile = profile_from_dict(saved_config)  # the run's own; equal wherever it matters
            else:
                _move_aside(run_dir)
                status = "redone (stale)"
        elif run_dir.exists() and any(run_dir.iterdir()):
            _move_aside(run_dir)  # a run killed before its first checkpoint
        what = "CLaD" if stage == 1 else ("the policy-only baseline" if not profile.policy.uses_clad else "the foresight policy")
        self._announce(key, f"training {what}, {steps} steps" + (f" ({status})" if resume else ""))
        _write_json(self._stamp_path(key), {"step": key, "status": "running", "inputs": inputs})
        try:
            result = train(profile, stage, run_dir, data_dir=data_dir, cache_dir=cache_dir,
                           clad=str(clad_dir) if clad_dir is not None else None, resume=resume,
                           workers=self.train_workers, progress=self.progress,
                           overrides=[o for o in overrides if not o.strip().startswith("clad.")])
        except ValueError as error:
            raise UserError(str(error)) from error
        seconds = time.perf_counter() - start
        self._write_stamp(key, inputs, run_dir, seconds)
        loss = (result.last_log or {}).get("loss")
        detail = f"trained in {_seconds(seconds)} ({result.steps_done_here} steps" + \
                 (f", final loss {loss:.4f})" if loss is not None else ")")
        self._memo[key] = run_dir
        self._record(key, status, start, run_dir, detail)
        return run_dir

    def _run_path(self, name_or_path) -> Path:
        path = Path(name_or_path)
        return path if path.is_absolute() or len(path.parts) > 1 else self.out / path

    def stage1(self, name: str = "clad", overrides=()) -> Path:
        """CLaD (stage 1) trained into ``OUT/<name>``."""
        key = f"stage1:{name}"
        if key not in self._memo:
            self._memo[key] = self._train(key, 1, name, [str(o) for o in overrides], None)
        return self._memo[key]

    def stage2(self, name: str = "policy", overrides=(), clad: str | os.PathLike | None = "clad") -> Path:
        """The diffusion policy (stage 2) trained into ``OUT/<name>`` on the foresights of ``OUT/<clad>``.

        ``clad``: the stage-1 run's name under OUT (made first with the pipeline's own settings
        when missing) or its path; ignored when ``policy.foresight=none``.
        """
        from clad_lite.config import ConfigError, apply_overrides

        key = f"stage2:{name}"
        if key in self._memo:
            return self._memo[key]
        overrides = [str(o) for o in overrides]
        try:
            uses_clad = apply_overrides(self.profile, overrides).policy.uses_clad
        except ConfigError as error:
            raise UserError(str(error)) from error
        clad_dir = None
        if uses_clad:
            if clad is None:
                raise UserError(f"stage 2 {name!r} uses foresight: name its stage-1 run (clad=...)")
            clad_path = Path(clad)
            if len(clad_path.parts) == 1 and not clad_path.is_absolute():  # a stage-1 run of this pipeline
                clad_dir = self.stage1(str(clad))
            elif (clad_path / "last.pt").exists() or clad_path.is_file():
                clad_dir = clad_path
            else:
                raise UserError(f"clad={clad!r}: no stage-1 run there")
        self._memo[key] = self._train(key, 2, name, overrides, clad_dir)
        return self._memo[key]

    # ------------------------------------------------------------------ 6. evaluation
    def eval_dir(self, run_name: str = "policy") -> Path:
        return self.out / f"eval_{Path(run_name).name}"

    def evaluate(self, run_name: str = "policy") -> Path:
        """LIBERO rollouts of ``OUT/<run_name>`` into ``OUT/eval_<run_name>/`` (results.json, videos)."""
        key = f"eval:{run_name}"
        if key in self._memo:
            return self._memo[key]
        run_dir = self._run_path(run_name)
        if run_dir.parent == self.out and f"stage2:{run_dir.name}" not in self._memo:
            baseline = run_dir.name == "policy_only"
            self.stage2(run_dir.name, BASELINE_OVERRIDES if baseline else (), None if baseline else "clad")
        e = self.profile.eval
        out = self.eval_dir(run_name)
        results_path = out / RESULTS_NAME
        _, policy_ckpt = _final_checkpoint(run_dir)
        if policy_ckpt is None:
            raise UserError(f"{run_dir} holds no trained policy (last.pt)")
        tasks = list(self.profile.data.tasks)
        inputs = {"policy_checkpoint": _file_identity(policy_ckpt), "eval": _section(self.profile, "eval"),
                  "suite": SUITE, "tasks": tasks}
        start = time.perf_counter()
        status = "done"
        stamp = self._stamp(key)
        if results_path.exists():
            check = self._check_stamp(key, inputs, out)
            if check == "match" and stamp.get("status") != "running" or check == "missing":
                if check == "missing":
                    self._write_stamp(key, inputs, results_path, 0.0)
                self._memo[key] = results_path
                self._record(key, "reused", start, results_path, self._rate_text(results_path))
                return results_path
            if check == "stale":
                _move_aside(out)
                status = "redone (stale)"
        elif out.exists():  # a killed evaluation: resume it (episodes.jsonl) if it has the same inputs
            if stamp is not None and _normal(stamp.get("inputs")) == _normal(inputs):
                status = "resumed"
            else:
                _move_aside(out)
        try:
            from clad_lite.evaluate import evaluate
        except ImportError as error:
            raise UserError(f"the evaluation module is not available ({error}); run with --skip-eval") from error
        self._announce(key, f"{e.episodes_per_task} episode(s) x {len(tasks)} task(s), at most {e.max_steps} steps")
        out.mkdir(parents=True, exist_ok=True)
        _write_json(self._stamp_path(key), {"step": key, "status": "running", "inputs": inputs})
        # the pipeline's profile, not the run's saved one, sets the budget (the --set eval.* of this call)
        evaluate(run_dir, out, suite=SUITE, tasks=tasks, episodes=e.episodes_per_task,
                 workers=self.eval_workers if self.eval_workers is not None else e.workers,
                 videos=e.videos_per_task, protocol="single", seed=e.seed, progress=self.progress,
                 encoder=self.encoder(), max_steps=e.max_steps, warmup_steps=e.warmup_steps,
                 fast_reset=e.fast_reset, action_samples=e.action_samples)
        if not results_path.exists():
            raise UserError(f"the evaluation wrote no {results_path}")
        seconds = time.perf_counter() - start
        self._write_stamp(key, inputs, results_path, seconds)
        self._memo[key] = results_path
        self._record(key, status, start, results_path, f"evaluated in {_seconds(seconds)}: "
                                                       f"{self._rate_text(results_path)}")
        return results_path

    @staticmethod
    def _rate_text(results_path: Path) -> str:
        rows, average = _result_rows(_read_json(results_path) or {})
        return "average success " + (f"{average:.0%}" if average is not None else "?") + f" over {len(rows)} task(s)"

    # ------------------------------------------------------------------ all of it
    def run(self, baseline: bool = False, skip_eval: bool = False, parallel: bool = False) -> dict:
        """Every step (and the policy-only baseline); returns ``{"steps", "results", "table", ...}``.

        ``parallel`` (with ``baseline``): once the embeddings exist, train and evaluate the
        baseline in a second (spawned) process while this one does stage 1, stage 2 and the
        evaluation of CLaD - on a 2-core machine with one torch thread and one simulator
        worker each, that halves the wall time. The second process writes the same outputs
        and stamps as a sequential run, so the summary below simply reuses them.
        """
        self.steps, self._memo = [], {}
        self._planned = self._steps_planned(baseline)
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        runs = [("policy", (), "clad")] + ([("policy_only", BASELINE_OVERRIDES, None)] if baseline else [])
        if parallel and baseline:
            self.embeddings()
            import multiprocessing as mp

            # one torch thread and one simulator worker per process unless told otherwise
            if self.eval_workers is None:
                self.eval_workers = 1
            if not self.threads:
                self.threads = 1
                self._set_threads(1)
            init_args = {**self._init_args, "eval_workers": self.eval_workers, "threads": self.threads}
            child = mp.get_context("spawn").Process(target=_baseline_chain, args=(init_args, skip_eval),
                                                    name="clad_lite-baseline")
            child.start()
            try:
                self.stage2("policy", (), "clad")
                if not skip_eval:
                    self.evaluate("policy")
            finally:
                child.join()
            if child.exitcode != 0:
                raise UserError(f"the baseline process failed (exit code {child.exitcode}); its messages are above. "
                                "Re-running the same command resumes it")
        for name, overrides, clad in runs:
            self.stage2(name, overrides, clad)
        results = {}
        for name, _, _ in runs:
            if skip_eval:
                self._record(f"eval:{name}", "skipped", time.perf_counter(), None, "--skip-eval")
            else:
                results[name] = str(self.evaluate(name))
        summary = {
            "profile": self.profile.name, "overrides": self.overrides, "out": str(self.out),
            "data": str(self.data_dir), "encoder": self._memo.get("encoder"),
            "embeddings": str(self._memo.get("embeddings")), "runs": {n: str(self.out / n) for n, _, _ in runs},
            "results": results, "steps": [s.to_dict() for s in self.steps],
            "seconds": round(time.perf_counter() - start, 2),
            "figures": self.figures(), "videos": self.videos(),
        }
        summary["table"] = self.table(summary)
        _write_json(self.out / REPORT_NAME, summary)
        if self.verbose:
            print(summary["table"], flush=True)
        return summary

    def publish(self, dest=None) -> list[str]:
        """Copy the small, committable results of this pipeline into ``dest`` (default
        ``figures/results``), named ``libero_10_<profile>...`` as :mod:`clad_lite.reports` looks
        for them: each evaluation's ``results.json`` (``_policy_only`` for the baseline), each
        training run's loss curve and CSV log, the lite encoder's summary (``encoder_libero_10.json``
        for the ``cpu`` profile, ``encoder_libero_10_<profile>.json`` otherwise), ``pipeline.json``
        (the step report) and a filmstrip of one CLaD rollout per task. Returns the files written.
        """
        import shutil

        from clad_lite.config import project_root

        dest = Path(dest) if dest is not None else Path(project_root()) / "figures" / "results"
        dest.mkdir(parents=True, exist_ok=True)
        stem = f"{SUITE}_{self.profile.name}"
        written = []

        def copy(source: Path, name: str) -> None:
            if source.is_file():
                shutil.copyfile(source, dest / name)
                written.append(str(dest / name))

        for run_dir in sorted(p for p in self.out.iterdir() if p.is_dir() and (p / "last.pt").exists()):
            suffix = "" if run_dir.name == "policy" else f"_{run_dir.name}"
            copy(self.out / f"eval_{run_dir.name}" / RESULTS_NAME, f"{stem}{suffix}.json")
            copy(run_dir / "loss_curve.png", f"{stem}_{run_dir.name}_loss.png")
            copy(run_dir / "train_log.csv", f"{stem}_{run_dir.name}_train_log.csv")
        encoder = self.out / ENCODER_NAME
        if self.profile.encoder.kind == "lite" and encoder.is_file():
            import torch

            summary = torch.load(encoder, map_location="cpu", weights_only=True).get("summary")
            if summary is not None:  # the cpu profile's encoder is the project's reference lite encoder
                name = f"encoder_{SUITE}.json" if self.profile.name == "cpu" else f"encoder_{SUITE}_{self.profile.name}.json"
                _write_json(dest / name, summary)
                written.append(str(dest / name))
        copy(self.out / REPORT_NAME, f"{stem}_pipeline.json")
        # figures 6-9: the first rollout video of each task as a filmstrip (a small PNG, not the videos)
        first = {}
        for video in sorted((self.eval_dir("policy") / "videos").glob("task*_ep*.mp4")):
            first.setdefault(video.name.split("_")[0], video)
        if first:
            import matplotlib.pyplot as plt

            from clad_lite.reports import filmstrip_figure

            fig, _ = filmstrip_figure({video.stem: video for video in first.values()}, count=6,
                                      title=f"CLaD rollouts, profile {self.profile.name} ({self.out.name})")
            fig.savefig(dest / f"{stem}_rollouts.png", dpi=60)
            plt.close(fig)
            written.append(str(dest / f"{stem}_rollouts.png"))
        return written

    def figures(self) -> list[str]:
        return [str(p) for p in sorted(self.out.glob("*/loss_curve.png")) + sorted(self.out.glob("eval_*/*.png"))]

    def videos(self) -> list[str]:
        return [str(p) for p in sorted(self.out.glob("eval_*/**/*.mp4"))]

    def table(self, summary: dict) -> str:
        """The final summary: steps with timings, success per task with 95% intervals, files."""
        lines = ["", f"pipeline {self.profile.name} -> {self.out}  ({summary['seconds']:.0f} s)", ""]
        lines.append(f"{'step':<24} {'status':<16} {'seconds':>8}  output")
        for s in self.steps:
            lines.append(f"{self._label(s.step):<24} {s.status:<16} {s.seconds:>8.1f}  {s.output or '-'}")
        for name, path in summary["results"].items():
            results = _read_json(Path(path)) or {}
            rows, average = _result_rows(results)
            lines += ["", f"success of {name} ({path}):", f"{'task':>4}  {'success':>8}  {'95% interval':>15}  {'n':>3}  instruction"]
            for row in rows:
                ci = row.get("ci95")
                ci_text = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"
                n = row.get("n")
                lines.append(f"{row['task']!s:>4}  {row['rate']:>8.0%}  {ci_text:>15}  {n if n is not None else '-':>3}  "
                             f"{(row.get('instruction') or '')[:60]}")
            if average is not None:
                lines.append(f"{'avg':>4}  {average:>8.0%}")
        if summary["videos"]:
            lines += ["", "videos:"] + [f"  {v}" for v in summary["videos"]]
        if summary["figures"]:
            lines += ["", "figures:"] + [f"  {f}" for f in summary["figures"]]
        return "\n".join(lines)


def _result_rows(results: dict) -> tuple[list[dict], float | None]:
    """Per-task rows {task, rate, ci95, n, instruction} and the average, from a results.json.

    Tolerant of the layout: ``per_task`` as a list of rows or a {task: row | rate} mapping.
    """
    per_task = results.get("per_task") or results.get("tasks") or []
    if isinstance(per_task, dict):
        per_task = [{"task_id": k, **(v if isinstance(v, dict) else {"success_rate": v})} for k, v in per_task.items()]
    rows = []
    for entry in per_task:
        if not isinstance(entry, dict):
            continue
        rate = next((entry[k] for k in ("success_rate", "rate", "success") if isinstance(entry.get(k), (int, float))), None)
        if rate is None:
            continue
        ci = entry.get("ci95") or entry.get("ci")
        if isinstance(ci, dict):
            ci = (ci.get("low", ci.get("lo")), ci.get("high", ci.get("hi")))
        rows.append({"task": entry.get("task_id", entry.get("task")), "rate": float(rate),
                     "ci95": tuple(ci) if ci and None not in tuple(ci) else None,
                     "n": entry.get("episodes", entry.get("n")), "instruction": entry.get("instruction")})
    average = results.get("average", results.get("success_rate", results.get("mean_success")))
    if isinstance(average, dict):
        average = average.get("success_rate", average.get("rate"))
    if not isinstance(average, (int, float)):
        average = sum(r["rate"] for r in rows) / len(rows) if rows else None
    return rows, (float(average) if average is not None and not math.isnan(average) else None)


# =========================================================================== CLI
def _baseline_chain(init_args: dict, skip_eval: bool) -> None:
    """The policy-only baseline's stage 2 and evaluation, in a process of its own (``run(parallel=True)``)."""
    pipe = Pipeline(**init_args)
    pipe.stage2("policy_only", BASELINE_OVERRIDES, None)
    if not skip_eval:
        pipe.evaluate("policy_only")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="the end-to-end lite run: data, encoder, embeddings, stage 1, stage 2, eval (skips what is done)",
        description="Run data -> encoder -> embeddings -> stage 1 -> stage 2 -> eval for libero_10, "
                    "skipping every step whose output is already complete.")
    parser.add_argument("--profile", default=None, help="ci | cpu | paper (default: $CLAD_PROFILE, else cpu)")
    parser.add_argument("--out", default=None, help="output folder (default runs/pipeline_<profile>)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one profile value for every step, e.g. stage2.steps=200 (repeatable)")
    parser.add_argument("--data", default=None, help="demonstrations folder (default: the profile's data.path)")
    parser.add_argument("--baseline", action="store_true",
                        help="also train and evaluate the policy-only baseline (policy.foresight=none), same data and budget")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave as is)")
    parser.add_argument("--parallel", action="store_true",
                        help="with --baseline: train and evaluate the baseline in a second process at the same time")
    parser.add_argument("--skip-eval", action="store_true", help="stop after training")
    parser.add_argument("--publish", nargs="?", const="figures/results", default=None, metavar="DIR",
                        help="afterwards copy results.json files, loss curves and the encoder summary into DIR "
                             "(default figures/results), named as the notebooks look for them")
    parser.add_argument("--eval-workers", type=int, default=None, help="simulator processes for the evaluation "
                                                                       "(default: eval.workers)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (the step lines stay)")
    parser.set_defaults(func=_main)


def _main(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be >= 1")
    pipe = Pipeline(args.profile, out=args.out, overrides=args.set or [], data_dir=args.data, threads=args.threads,
                    progress=not args.no_progress, eval_workers=args.eval_workers)
    if args.parallel and not args.baseline:
        raise UserError("--parallel runs the baseline beside CLaD: it needs --baseline")
    pipe.run(baseline=args.baseline, skip_eval=args.skip_eval, parallel=args.parallel)
    if args.publish is not None:
        for path in pipe.publish(args.publish):
            print(f"published {path}")
    return 0
