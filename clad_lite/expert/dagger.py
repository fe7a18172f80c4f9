"""On-policy recovery data: a trained policy drives, the scripted expert takes over.

DAgger (Ross et al., 2011; not the paper) trains on the states the *learned* policy visits,
labelled by the expert, because a policy cloned from clean demonstrations drifts to states its
data never showed. The scripted expert cannot label one arbitrary state (its motions are planned
segments), but it can plan from any scene (``plans.plan_for(resume=True)``), so the labels here
are whole continuations, as in HG-DAgger's hand-overs (Kelly et al., 2019):

1. the policy of a stage-2 run (``checkpoint``) drives from the attempt's random placement
   (never LIBERO's fixed init states, the evaluation set), exactly as in an evaluation
   (``clad_lite.evaluate.Agent.act``: cameras rendered, encoded, chunks sampled);
2. at a hand-over step drawn uniformly from ``handover`` (per attempt), a fresh expert with
   ``resume=True`` takes over from wherever the policy left the scene: a fumbled grasp, a hand
   hovering beside its target, an object dropped half-way, or a scene still on track;
3. ``recording`` turns on at the hand-over, so ``generate`` stores only the expert's steps: a
   demonstration that starts in the policy's own state distribution.

An attempt where the policy completes the task before its hand-over leaves no demonstration
(``done`` while not recording; there is nothing to correct). Compared with
``clad_lite.expert.recovery`` (the expert fumbles the way the policies were seen to), these
mistakes are the policy's own.

    python -m clad_lite generate --policy clad_lite.expert:make_dagger_expert \\
        --policy-arg checkpoint=runs/RUN/policy --policy-arg handover=20-400 \\
        --budget 900 --kind dagger --out data/libero_10/dagger --seed 2 ...

The pass-1 environment renders (``reads_cameras``), at ``generate --image-size``, which must be
the run's ``data.image_size``; a longer ``--budget`` than the suite's leaves room for both parts.
"""

from __future__ import annotations

import numpy as np

# the hand-over step's range (policy steps after settling), drawn per attempt: the lite policies
# make their first grasp 40-120 steps in and run out of the 520-step budget when they fail
HANDOVER = (20, 400)
HANDOVER_TEXT = f"{HANDOVER[0]}-{HANDOVER[1]}"  # as --policy-arg handover= and data.dagger_handover spell it

_AGENTS: dict[str, object] = {}  # this process's loaded policy (one checkpoint at a time)


def parse_handover(text) -> tuple[int, int]:
    """``"20-400"`` (or ``"150"``) -> (20, 400): the inclusive range of the hand-over step."""
    from clad_lite.cli import UserError

    lo, sep, hi = str(text).partition("-")
    try:
        lo, hi = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise UserError(f"handover must look like 20-400 (policy steps), got {text!r}") from None
    if not 0 <= lo <= hi:
        raise UserError(f"handover must be a range 0 <= lo <= hi, got {text!r}")
    return lo, hi


def agent_for(checkpoint: str, sha256: str | None = None):
    """The :class:`clad_lite.evaluate.Agent` of a stage-2 checkpoint, loaded once per process.

    Rolls out as ``evaluate`` does by default: one query every τ steps, no ensembling, one chunk
    per query, the raw gripper command, the weight EMA when the run kept one; on the CPU with one
    torch thread (``generate``'s workers are one process per core).
    """
    if checkpoint not in _AGENTS:
        import torch

        from clad_lite.encoders.base import file_sha256
        from clad_lite.evaluate import Agent, load_run

        if sha256 is not None and file_sha256(checkpoint) != sha256:
            from clad_lite.cli import UserError

            raise UserError(f"{checkpoint} changed since this data set was started (sha256 differs): "
                            "use another --out for the new checkpoint")
        torch.set_num_threads(1)
        _AGENTS.clear()
        spec = dict(load_run(checkpoint), max_steps=0, warmup_steps=0, query_every=None, ensemble=False,
                    start_actions="noop", action_samples=1, gripper_hysteresis=None, device="cpu")
        _AGENTS[checkpoint] = Agent(spec)
    return _AGENTS[checkpoint]


class PolicyThenExpert:
    """``act(obs) -> (7,)`` like the scripted expert, with ``recording`` (False while the policy
    drives) and ``done`` (the expert's, or True when the policy alone completed the task).

    ``agent``: a :class:`clad_lite.evaluate.Agent`; ``handover``: (lo, hi) inclusive range of the
    hand-over step. ``rng`` draws the hand-over step and the policy's sampler seed; the expert gets
    its own child generator.
    """

    def __init__(self, env, rng: np.random.Generator, agent, handover: tuple[int, int] = HANDOVER,
                 motion: str = "min_jerk"):
        image_size = agent.profile.data.image_size
        if env.image_size != image_size or not env.rendering:
            raise ValueError(f"the policy reads {image_size}x{image_size} camera images, but the environment "
                             f"{'renders ' + str(env.image_size) if env.rendering else 'does not render'}: "
                             f"generate with --image-size {image_size}")
        own_rng, self._expert_rng = rng.spawn(2)
        self.env, self.agent, self.motion = env, agent, motion
        self.handover_step = int(own_rng.integers(handover[0], handover[1] + 1))
        self.episode = agent.begin_episode(env.task.instruction, int(own_rng.integers(0, 2**31 - 1)))
        self.expert = None
        self.solved_by_policy = False
        self.steps = 0

    @property
    def recording(self) -> bool:
        return self.expert is not None

    @property
    def done(self) -> bool:
        return self.expert.done if self.expert is not None else self.solved_by_policy

    def act(self, obs: dict) -> np.ndarray:
        from . import make_expert

        if self.expert is None:
            if self.env.check_success():  # nothing left to correct: no demonstration
                self.solved_by_policy = True
                return np.array([0, 0, 0, 0, 0, 0, -1.0])
            if self.steps >= self.handover_step:
                self.expert = make_expert(self.env, self._expert_rng, self.motion, resume=True)
        self.steps += 1
        if self.expert is not None:
            return self.expert.act(obs)
        env_action, _ = self.agent.act(self.episode, self.env, obs)
        return np.asarray(env_action, dtype=np.float64)


def make_dagger_expert(env, rng: np.random.Generator, checkpoint: str, handover: str = HANDOVER_TEXT,
                       checkpoint_sha256: str | None = None) -> PolicyThenExpert:
    """``generate --policy clad_lite.expert:make_dagger_expert --policy-arg checkpoint=RUN``: the
    run's policy drives until a random hand-over step, the scripted expert finishes (recorded)."""
    return PolicyThenExpert(env, rng, agent_for(checkpoint, checkpoint_sha256), parse_handover(handover))


def canonical_args(args: dict) -> dict:
    """Check ``--policy-arg``s in the main process and pin them down for the data set's fingerprint:
    the checkpoint file as an absolute path with its sha256 (a retrained run under the same path is
    another data set), the hand-over range as ``"lo-hi"``."""
    from clad_lite.cli import UserError
    from clad_lite.encoders.base import file_sha256
    from clad_lite.evaluate import load_run

    unknown = set(args) - {"checkpoint", "handover", "checkpoint_sha256"}
    if unknown or "checkpoint" not in args:
        raise UserError(f"make_dagger_expert takes --policy-arg checkpoint=RUN (required) and handover=LO-HI; "
                        f"got {sorted(args)}")
    run = load_run(args["checkpoint"], need_encoder=True)  # a readable stage-2 run whose encoder exists
    lo, hi = parse_handover(args.get("handover", HANDOVER_TEXT))
    return {"checkpoint": run["checkpoint"], "handover": f"{lo}-{hi}",
            "checkpoint_sha256": file_sha256(run["checkpoint"])}


make_dagger_expert.canonical_args = canonical_args
make_dagger_expert.reads_cameras = True  # generate's pass 1 renders for it
make_dagger_expert.revision = 1
