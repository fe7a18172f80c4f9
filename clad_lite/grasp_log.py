"""Where each grasp of a rollout landed, and whether it held: a diagnostic of closed-loop precision.

Most failed libero_10 rollouts of the lite policies end in a missed grasp: the fingers close off
the object and the hand rises empty (figures/results/README.md, "Where the failures happen").
A :class:`GraspLog` records, at every step where the executed gripper command turns from open
(< 0) to closed (> 0), the hand position, the nearest movable object and the hand's offset from
that object's origin; ``lift_steps`` steps later (or at the next opening, or at the episode's
end, whichever comes first) it checks whether that object rose at least ``lift_height`` metres.
``evaluate`` stores the list per episode (``grasps``) and :func:`grasp_counts` sums a task's.

Only movable objects count (LIBERO's ``objects_dict``; not fixtures such as a stove knob or a
drawer handle): a close on a knob or handle is a push or a pull, and "held" would not mean lifted.
So ``nearest`` is the nearest *movable* object, and a close at a handle shows as a far one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# twenty control steps (1 s at 20 Hz) after closing, a held object has left its support by > 1 cm:
# the scripted expert lifts 2 cm at a quarter speed in ~8 steps (feedback) or faster (min-jerk)
LIFT_STEPS = 20
LIFT_HEIGHT = 0.01


class GraspLog:
    """Grasps of one rollout.

    Args:
        object_positions: returns ``{name: (3,) world position}`` of the movable objects now.
        lift_steps: steps after a close at which the grasped object's rise is measured.
        lift_height: rise (m) that counts as held.
    """

    def __init__(self, object_positions: Callable[[], dict[str, np.ndarray]], lift_steps: int = LIFT_STEPS,
                 lift_height: float = LIFT_HEIGHT):
        if lift_steps < 1 or lift_height <= 0:
            raise ValueError(f"lift_steps must be >= 1 and lift_height > 0, got {lift_steps}, {lift_height}")
        self.object_positions = object_positions
        self.lift_steps = int(lift_steps)
        self.lift_height = float(lift_height)
        self.grasps: list[dict] = []
        self._closed = False
        self._pending: dict | None = None  # the last grasp, until its lift is measured

    def step(self, t: int, gripper_command: float, eef_pos) -> None:
        """Call after each executed action ``t`` with its gripper command and the hand position after it."""
        closing = float(gripper_command) > 0
        if self._pending is not None and (not closing or t - self._pending["t"] >= self.lift_steps):
            self._measure(t)
        if closing and not self._closed:
            objects = self.object_positions()
            if objects:
                eef = np.asarray(eef_pos, np.float64)
                name = min(objects, key=lambda n: float(np.linalg.norm(objects[n] - eef)))
                offset = eef - np.asarray(objects[name], np.float64)
                self._pending = {"t": int(t), "object": name, "eef": _round(eef), "offset": _round(offset),
                                 "distance": round(float(np.linalg.norm(offset)), 4),
                                 "_z0": float(objects[name][2])}
        self._closed = closing

    def finish(self, t: int) -> list[dict]:
        """Measure the last grasp (if still open) and return every grasp as a JSON-ready dict:
        ``t``, ``object``, ``eef`` and ``offset`` (hand minus object origin, m), ``distance``,
        ``rise`` (m the object rose by ``t_check``), ``held`` (rise >= ``lift_height``)."""
        if self._pending is not None:
            self._measure(t)
        return self.grasps

    def _measure(self, t: int) -> None:
        grasp, self._pending = self._pending, None
        z0 = grasp.pop("_z0")
        position = self.object_positions().get(grasp["object"])
        rise = None if position is None else float(position[2]) - z0
        grasp.update(t_check=int(t), rise=None if rise is None else round(rise, 4),
                     held=bool(rise is not None and rise >= self.lift_height))
        self.grasps.append(grasp)


def _round(vector) -> list[float]:
    return [round(float(v), 4) for v in vector]


def grasp_counts(records: list[dict]) -> dict:
    """A task's grasps over its episodes: ``{"episodes", "grasps", "held", "by_object":
    {name: {"grasps", "held", "median_distance"}}}``; empty when the records predate grasp logging."""
    if not records or not all("grasps" in r for r in records):
        return {}
    grasps = [g for r in records for g in r["grasps"]]
    by_object = {}
    for name in sorted({g["object"] for g in grasps}):
        mine = [g for g in grasps if g["object"] == name]
        by_object[name] = {"grasps": len(mine), "held": sum(g["held"] for g in mine),
                           "median_distance": round(float(np.median([g["distance"] for g in mine])), 4)}
    return {"episodes": len(records), "grasps": len(grasps), "held": sum(g["held"] for g in grasps),
            "by_object": by_object}
