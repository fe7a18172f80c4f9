"""A scripted expert with privileged simulator state for LIBERO tasks.

    expert = make_expert(env, rng)      # after env.reset(...)/reset_to_init_state(...) and settle(env)
    action = expert.act(obs)            # (7,) in [-1, 1]
    expert.done                         # True once the plan has finished

The plan comes from the task's BDDL goal predicates (``plans.plan_for``), built from the
primitives in ``primitives.py``; ``control.py`` converts target poses to OSC_POSE deltas.
"""

from __future__ import annotations

import numpy as np

from .control import GRIPPER_OPEN
from .plans import plan_for
from .primitives import Scene

# LIBERO-LONG tasks the expert has plans for (suite -> task ids)
SUPPORTED = {"libero_10": tuple(range(10))}


class UnsupportedTaskError(ValueError):
    pass


class ScriptedExpert:
    """``resume=True`` plans from the scene as the first ``act`` finds it, mid-task included
    (``plans.plan_for``): the expert that takes over in recovery demonstrations."""

    def __init__(self, env, rng: np.random.Generator, motion: str = "min_jerk", resume: bool = False):
        task = env.task
        if task.task_id not in SUPPORTED.get(task.suite, ()):
            raise UnsupportedTaskError(
                f"the scripted expert has no plan for {task.suite} task {task.task_id} ({task.name}); "
                f"supported: {SUPPORTED}"
            )
        self.env = env
        self.scene = Scene(env, rng, motion)
        self.resume = resume
        self._plan = None
        self.done = False
        self.steps = 0

    def act(self, obs: dict) -> np.ndarray:
        self.scene.obs = obs
        if self._plan is None:
            self._plan = plan_for(self.scene, resume=self.resume)
        self.steps += 1
        if not self.done:
            try:
                return np.asarray(next(self._plan), dtype=np.float64)
            except StopIteration:
                self.done = True
        # after the plan: hold still, gripper as it was
        sc = self.scene
        if sc.goal_pos is None:
            return np.array([0, 0, 0, 0, 0, 0, GRIPPER_OPEN], dtype=np.float64)
        return sc.action(sc.goal_pos, sc.goal_R)


def make_expert(env, rng: np.random.Generator, motion: str = "min_jerk", resume: bool = False) -> ScriptedExpert:
    return ScriptedExpert(env, rng, motion, resume)


def make_feedback_expert(env, rng: np.random.Generator) -> ScriptedExpert:
    """The expert with Markovian, state-feedback motions (``primitives.MOTIONS``), as a
    ``generate --policy clad_lite.expert:make_feedback_expert`` factory."""
    return ScriptedExpert(env, rng, "feedback")


# generate's fingerprint records this (clad_lite.demos.generate.policy_revision): data sets of an
# older revision are refused. 2: each pick rises its first 2 cm slowly, so the fingers close before
# the hand leaves (revision 1 missed the moka-pot and bowl grasps of tasks 2, 3 and 8)
make_feedback_expert.revision = 2


def make_recovery_expert(env, rng: np.random.Generator):
    """Recovery demonstrations (``recovery.RecoveryExpert``): the expert fumbles one grasp the way the
    lite policies do, and ``generate`` records only how it recovers from there."""
    from .recovery import RecoveryExpert

    return RecoveryExpert(env, rng, "min_jerk")


make_recovery_expert.revision = 1

# on-policy recovery data: a trained policy drives, the expert takes over (``dagger``); imported
# after make_expert, which it calls, and cheap (torch loads only when a checkpoint does)
from .dagger import make_dagger_expert  # noqa: E402

__all__ = ["SUPPORTED", "ScriptedExpert", "UnsupportedTaskError", "make_dagger_expert", "make_expert",
           "make_feedback_expert", "make_recovery_expert"]
