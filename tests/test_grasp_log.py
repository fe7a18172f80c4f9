"""GraspLog: which object each close landed at, the hand's offset, and whether the object rose."""

import numpy as np
import pytest

from clad_lite.grasp_log import GraspLog, grasp_counts


class World:
    """Two objects; ``carry`` makes the named one follow the hand's height."""

    def __init__(self):
        self.objects = {"can": np.array([0.10, 0.00, 0.50]), "box": np.array([0.30, 0.00, 0.50])}
        self.carry = None

    def positions(self):
        return {name: p.copy() for name, p in self.objects.items()}


def run(world, log, commands, heights, carry_from=None):
    for t, (command, z) in enumerate(zip(commands, heights)):
        eef = np.array([0.105, 0.003, z])
        if carry_from is not None and t >= carry_from:
            world.objects["can"][2] = z - 0.02
        log.step(t, command, eef)
    return log.finish(len(commands))


def test_held_grasp_records_object_offset_and_rise():
    world = World()
    log = GraspLog(world.positions, lift_steps=5, lift_height=0.01)
    # open 3 steps at the can, close at t = 3, then rise 1 cm per step while carrying it
    heights = [0.52] * 4 + [0.52 + 0.01 * k for k in range(1, 9)]
    grasps = run(world, log, [-1, -1, -1] + [1] * 9, heights, carry_from=4)
    assert len(grasps) == 1
    g = grasps[0]
    assert g["t"] == 3 and g["object"] == "can" and g["t_check"] == 8
    assert g["offset"] == pytest.approx([0.005, 0.003, 0.02]) and g["distance"] == pytest.approx(0.0208, abs=1e-4)
    assert g["rise"] == pytest.approx(0.05) and g["held"]


def test_missed_grasp_and_early_release_are_not_held():
    world = World()
    log = GraspLog(world.positions, lift_steps=5)
    # close at t = 1 (the hand rises, the can stays), open at t = 3, close again at t = 5 till the end (t = 7)
    commands = [-1, 1, 1, -1, -1, 1, 1]
    grasps = run(world, log, commands, [0.52 + 0.01 * t for t in range(7)])
    assert [g["t"] for g in grasps] == [1, 5]
    assert [g["t_check"] for g in grasps] == [3, 7]  # measured at the release, then at the episode's end
    assert [g["held"] for g in grasps] == [False, False] and grasps[0]["rise"] == 0.0


def test_no_close_no_grasp_and_bad_settings():
    world = World()
    assert run(world, GraspLog(world.positions), [-1] * 4, [0.5] * 4) == []
    with pytest.raises(ValueError, match="lift_steps"):
        GraspLog(world.positions, lift_steps=0)


def test_grasp_counts_sums_per_object():
    def grasp(name, held, distance):
        return {"object": name, "held": held, "distance": distance}

    records = [{"grasps": [grasp("can", True, 0.01), grasp("can", False, 0.03)]},
               {"grasps": [grasp("box", False, 0.05)]}, {"grasps": []}]
    counts = grasp_counts(records)
    assert counts == {"episodes": 3, "grasps": 3, "held": 1,
                      "by_object": {"box": {"grasps": 1, "held": 0, "median_distance": 0.05},
                                    "can": {"grasps": 2, "held": 1, "median_distance": 0.02}}}
    assert grasp_counts(records + [{"success": True}]) == {} and grasp_counts([]) == {}
