"""Recovery demonstrations: the expert fumbles a grasp the way the lite policies do, then shows
how to recover from there.

Behaviour cloning from clean demonstrations never sees a state off the expert's path, so a policy
that closes its fingers a centimetre beside an object has no data for what to do next (DAgger,
Ross et al. 2011; DART, Laskey et al. 2017; not the paper). The lite policies' failures are such
grasps (figures/results/README.md: the hand lands 5-15 mm off in xy or stops up to 4 cm high, closes, and rises empty).
A :class:`RecoveryExpert` reproduces them with privileged state instead of a learned policy:

1. the scripted expert runs its plan (``lead``) up to the moment it would close the gripper on
   the chosen pick (a random one of the task's placements);
2. it *fumbles*: the open hand slides to a displaced grasp point (``MISS_XY`` in xy, ``MISS_DZ``
   higher) and either stays there open (``"misaligned"``) or closes there and rises as if the
   object were held (``"missed"``);
3. a fresh expert takes over with ``resume=True`` (``plans.plan_for``): it opens and lifts the
   hand, grasps again, and finishes the task.

``recording`` is False until the hand-over: ``generate`` executes those steps but stores only
the recovery, so no fumble is ever a training label. A demonstration thus starts mid-task, at a
policy-like mistake, and its first action is the expert's correction.
"""

from __future__ import annotations

import numpy as np

from .control import GRIPPER_OPEN
from .primitives import SLOW, close_gripper, move

# the fumble's displacement of the grasp point (m): a random direction in xy at this distance,
# plus a rise of the hand (the lite policies' misses: figures/results/README.md, "Where the failures happen")
MISS_XY = (0.008, 0.025)
MISS_DZ = (0.0, 0.04)
# after a missed close the hand rises this much, as if it were lifting the object
MISS_RISE = (0.02, 0.06)
VARIANTS = ("misaligned", "missed")


class RecoveryExpert:
    """``act(obs) -> (7,)`` like :class:`~clad_lite.expert.ScriptedExpert`, plus ``recording``
    (False until the resumed expert takes over) and ``fumble`` (what was done, for the record)."""

    def __init__(self, env, rng: np.random.Generator, motion: str = "min_jerk"):
        from . import ScriptedExpert
        from .plans import placed_objects

        self.env, self.motion = env, motion
        lead_rng, self._follow_rng, fumble_rng = rng.spawn(3)
        self.lead = ScriptedExpert(env, lead_rng, motion)
        # the objects the plan picks to place them (a tall object moved out of the hand's way is not one)
        self._placed = placed_objects(env.robosuite_env)
        picks = len(self._placed)
        angle = fumble_rng.uniform(-np.pi, np.pi)
        xy = fumble_rng.uniform(*MISS_XY) * np.array([np.cos(angle), np.sin(angle)])
        self.fumble = {"pick": int(fumble_rng.integers(0, max(picks, 1))),
                       "variant": VARIANTS[int(fumble_rng.integers(0, len(VARIANTS)))],
                       "offset": [float(xy[0]), float(xy[1]), float(fumble_rng.uniform(*MISS_DZ))],
                       "rise": float(fumble_rng.uniform(*MISS_RISE)), "handover_step": None}
        self.follower = None
        self.recording = False
        self.steps = 0
        self._picks_seen = 0
        self._last_grip = GRIPPER_OPEN
        self._fumbling = None

    @property
    def done(self) -> bool:
        return self.follower.done if self.follower is not None else self.lead.done

    def act(self, obs: dict) -> np.ndarray:
        self.steps += 1
        if self.follower is not None:
            return self.follower.act(obs)
        if self._fumbling is None:
            action = self.lead.act(obs)
            closing = action[-1] > 0 and self._last_grip <= 0
            self._last_grip = action[-1]
            if not (closing and self.lead.scene.closing_on in self._placed):
                return action
            self._picks_seen += 1
            if self._picks_seen - 1 != self.fumble["pick"]:
                return action
            self._fumbling = self._fumble(self.lead.scene)
        self.lead.scene.obs = obs
        try:
            return np.asarray(next(self._fumbling), dtype=np.float64)
        except StopIteration:
            return self._hand_over(obs)

    def _fumble(self, sc):
        """The hand slides to the displaced grasp point, open; a ``missed`` fumble closes there and rises."""
        R = sc.goal_R if sc.goal_R is not None else sc.eef_R
        target = sc.eef_pos + np.asarray(self.fumble["offset"])
        yield from move(sc, target, R, grip=GRIPPER_OPEN, speed=SLOW, tol=0.004, settle=8)
        if self.fumble["variant"] == "missed":
            yield from close_gripper(sc)
            yield from move(sc, sc.eef_pos + [0.0, 0.0, self.fumble["rise"]], R, speed=SLOW * 1.5, settle=0)

    def _hand_over(self, obs: dict) -> np.ndarray:
        from . import ScriptedExpert

        self.follower = ScriptedExpert(self.env, self._follow_rng, self.motion, resume=True)
        self.recording = True
        self.fumble["handover_step"] = self.steps - 1  # steps executed before the first recorded one
        return self.follower.act(obs)
