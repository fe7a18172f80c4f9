"""CLaD training windows and normalisation statistics (synthetic files, no simulator)."""

import json
import pickle

import numpy as np
import pytest
import torch

from clad_lite.demos import hdf5 as H
from clad_lite.demos.fixtures import synthetic_demo, write_official_style, write_ours
from clad_lite.demos.windows import (
    NOOP_ACTION,
    ArrayEmbeddings,
    Normalizer,
    WindowDataset,
    load_or_compute_norm_stats,
    proprio_dim,
)

TAU = 6


@pytest.fixture
def ours(tmp_path):
    return write_ours(tmp_path / "ours_demo.hdf5", lengths=(30, 20))


@pytest.fixture
def official(tmp_path):
    (tmp_path / "off").mkdir()
    return write_official_style(tmp_path / "off" / "official_demo.hdf5", lengths=(25,))


def test_batch_keys_and_shapes(ours):
    ds = WindowDataset([ours])
    assert len(ds) == 50 and ds.num_demos == 2 and ds.proprio_dim == 16 == proprio_dim("paper")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    for key in ("proprio_prev", "proprio", "proprio_next"):
        assert batch[key].shape == (5, 16) and batch[key].dtype == torch.float32
    for key in ("actions_past", "actions"):
        assert batch[key].shape == (5, TAU, 7) and batch[key].dtype == torch.float32
    assert batch["actions_is_pad"].shape == (5, TAU) and batch["actions_is_pad"].dtype == torch.bool
    for camera in H.IMAGE_KEYS:
        for suffix in ("_prev", "", "_next"):
            assert batch[camera + suffix].shape == (5, 3, 16, 16) and batch[camera + suffix].dtype == torch.uint8
    assert batch["task_id"].tolist() == [0] * 5 and batch["instruction"] == [ds.instructions[0]] * 5


def _raw(path, demo):
    with H.DemoFile(path) as f:
        return f.read(demo, ["actions", "obs/joint_states", "obs/gripper_states", "obs/joint_vel",
                             "obs/agentview_rgb", "robot_states"])


def test_window_contents_and_edge_rule(ours):
    ds = WindowDataset([ours], normalize=False, upright=False)
    raw = _raw(ours, "demo_0")
    a = raw["actions"]
    proprio = np.hstack([raw["obs/joint_states"], raw["obs/gripper_states"], raw["obs/joint_vel"]])
    # inside the episode: exact slices
    item = ds[10]
    assert int(item["t"]) == 10
    np.testing.assert_allclose(item["actions_past"], a[4:10], rtol=1e-6)
    np.testing.assert_allclose(item["actions"], a[10:16], rtol=1e-6)
    for key, frame in (("proprio_prev", 4), ("proprio", 10), ("proprio_next", 16)):
        np.testing.assert_allclose(item[key], proprio[frame], rtol=1e-6)
    np.testing.assert_array_equal(item["agentview_rgb_next"].numpy().transpose(1, 2, 0), raw["obs/agentview_rgb"][16])
    assert not item["actions_past_is_pad"].any() and not item["actions_is_pad"].any()
    # start: past actions are the settling no-op, the earlier frame is clamped to 0
    item = ds[2]
    np.testing.assert_allclose(item["actions_past"][:4], np.tile(NOOP_ACTION, (4, 1)))
    np.testing.assert_allclose(item["actions_past"][4:], a[0:2], rtol=1e-6)
    assert item["actions_past_is_pad"].tolist() == [True] * 4 + [False] * 2
    np.testing.assert_allclose(item["proprio_prev"], proprio[0], rtol=1e-6)
    # end: future actions hold still with the last gripper command, later frame clamped
    item = ds[27]
    hold = np.zeros(7)
    hold[6] = a[-1, 6]
    np.testing.assert_allclose(item["actions"][:3], a[27:30], rtol=1e-6)
    np.testing.assert_allclose(item["actions"][3:], np.tile(hold, (3, 1)))
    assert item["actions_is_pad"].tolist() == [False] * 3 + [True] * 3
    np.testing.assert_allclose(item["proprio_next"], proprio[29], rtol=1e-6)
    # second demo starts at index 30
    assert int(ds[30]["demo_index"]) == 1 and int(ds[30]["t"]) == 0


def test_inside_edge_rule_has_no_padding(ours):
    ds = WindowDataset([ours], edge="inside", normalize=False)
    assert len(ds) == (30 - 2 * TAU) + (20 - 2 * TAU)
    ts = [int(ds[i]["t"]) for i in range(len(ds))]
    assert min(ts) == TAU and max(ts) == 30 - 1 - TAU
    assert not any(ds[i]["actions_is_pad"].any() or ds[i]["actions_past_is_pad"].any() for i in range(len(ds)))


def test_a_longer_target_chunk_reads_further_ahead_and_pads_the_end(ours):
    """future = L > τ (PolicyConfig.extra_actions): ``actions`` = a^{t:t+L}; the past, the frames and
    the window positions stay those of τ, and "inside" drops the windows whose L actions overrun."""
    L = 2 * TAU
    ds = WindowDataset([ours], normalize=False, future=L)
    plain = WindowDataset([ours], normalize=False)
    a = _raw(ours, "demo_0")["actions"]
    assert len(ds) == len(plain)
    item, reference = ds[10], plain[10]
    assert item["actions"].shape == (L, 7) and item["actions_is_pad"].shape == (L,)
    np.testing.assert_allclose(item["actions"], a[10:22], rtol=1e-6)
    for key in ("actions_past", "proprio_prev", "proprio", "proprio_next", "agentview_rgb_next"):
        torch.testing.assert_close(item[key], reference[key])
    item = ds[22]  # 8 real actions left in the 30-step demo, then the hold
    hold = np.zeros(7)
    hold[6] = a[-1, 6]
    np.testing.assert_allclose(item["actions"][:8], a[22:30], rtol=1e-6)
    np.testing.assert_allclose(item["actions"][8:], np.tile(hold, (4, 1)))
    assert item["actions_is_pad"].tolist() == [False] * 8 + [True] * 4
    inside = WindowDataset([ours], normalize=False, future=L, edge="inside")
    ts = [int(inside[i]["t"]) for i in range(len(inside)) if int(inside[i]["demo_index"]) == 0]
    assert ts == list(range(TAU, 30 - L + 1))
    assert not any(inside[i]["actions_is_pad"].any() for i in range(len(inside)))
    with pytest.raises(ValueError, match="future"):
        WindowDataset([ours], future=0)


def test_images_upright_by_default(ours):
    raw = _raw(ours, "demo_0")["obs/agentview_rgb"]
    item = WindowDataset([ours], normalize=False)[7]
    np.testing.assert_array_equal(item["agentview_rgb"].numpy().transpose(1, 2, 0), raw[7][::-1])


def test_official_files_authors_code_proprio(official):
    with pytest.raises(H.DemoFormatError, match=r"data/demo_0/obs/joint_vel: missing: proprio='paper'"):
        WindowDataset([official])
    ds = WindowDataset([official], proprio="authors_code", normalize=False)
    assert ds.proprio_dim == 9 and len(ds) == 25
    robot_states = _raw_official(official)
    np.testing.assert_allclose(ds[12]["proprio"], robot_states[12], rtol=1e-6)
    np.testing.assert_allclose(ds[12]["proprio_next"], robot_states[18], rtol=1e-6)


def test_no_joint_vel_proprio_is_the_paper_vector_without_velocities(ours, official):
    paper = WindowDataset([ours])
    ablation = WindowDataset([ours], proprio="no_joint_vel")
    assert ablation.proprio_dim == 9 == proprio_dim("no_joint_vel")
    for key in ("proprio_prev", "proprio", "proprio_next"):   # same statistics: the first 9 columns
        np.testing.assert_allclose(ablation[17][key], paper[17][key][:9], rtol=1e-6)
    # official files lack joint velocities, which this mode does not need
    assert WindowDataset([official], proprio="no_joint_vel", normalize=False).proprio_dim == 9


def _raw_official(path):
    with H.DemoFile(path) as f:
        return f.read("demo_0", ["robot_states"])["robot_states"]


def test_mixed_files_give_task_ids(ours, official, tmp_path):
    other = write_ours(tmp_path / "other_demo.hdf5", lengths=(15,), instruction="open the drawer")
    ds = WindowDataset([ours, official, other], proprio="authors_code", cameras=("agentview_rgb",), stats=None)
    assert len(ds.instructions) == 2  # ours and official share the synthetic instruction
    assert int(ds[len(ds) - 1]["task_id"]) == 1 and ds[len(ds) - 1]["instruction"] == "open the drawer"
    assert "eye_in_hand_rgb" not in ds[0]


def test_normalisation_saved_next_to_data_and_reused(ours, tmp_path):
    ds = WindowDataset([ours])
    stats_path = ours.parent / "norm_stats.json"
    assert stats_path.exists()
    saved = json.loads(stats_path.read_text())
    assert set(saved["keys"]) >= {"actions", "robot_states", "obs/joint_states", "obs/joint_vel"}
    mtime = stats_path.stat().st_mtime_ns
    WindowDataset([ours], proprio="authors_code")  # same files: loaded, not rewritten
    assert stats_path.stat().st_mtime_ns == mtime
    # every normalised action lies in [-1, 1]; the data's extremes map to ±1
    all_actions = torch.stack([ds[i]["actions"] for i in range(len(ds))])
    real = ~torch.stack([ds[i]["actions_is_pad"] for i in range(len(ds))])
    values = all_actions[real]
    assert values.min() >= -1 - 1e-5 and values.max() <= 1 + 1e-5
    assert torch.allclose(values.amax(0)[:6], torch.ones(6), atol=1e-5)
    # round trip
    norm = Normalizer(saved, "paper")
    raw = _raw(ours, "demo_1")["actions"]
    np.testing.assert_allclose(norm.unnormalize_actions(norm.normalize_actions(raw)), raw, atol=1e-12)
    # a new file set recomputes
    write_ours(tmp_path / "more_demo.hdf5", lengths=(9,))
    stats = load_or_compute_norm_stats(sorted(tmp_path.glob("*.hdf5")))
    assert len(stats["files"]) == 2 and json.loads(stats_path.read_text())["files"] == stats["files"]


def test_embedding_source_and_text_embeddings(ours):
    arrays = {}
    for demo, T in (("demo_0", 30), ("demo_1", 20)):
        for camera in H.IMAGE_KEYS:
            arrays[(ours.name, demo, camera)] = np.arange(T)[:, None] * np.ones((1, 5)) + (camera == "eye_in_hand_rgb")
    ds = WindowDataset([ours], embeddings=ArrayEmbeddings(arrays),
                       text_embeddings={ds_text: np.ones(3) for ds_text in ["put the synthetic block in the synthetic basket"]})
    item = ds[28]
    assert item["agentview_rgb"].shape == (5,) and item["agentview_rgb"].dtype == torch.float32
    assert item["agentview_rgb_prev"][0] == 22 and item["agentview_rgb"][0] == 28 and item["agentview_rgb_next"][0] == 29
    assert item["eye_in_hand_rgb"][0] == 29
    assert item["instruction_emb"].tolist() == [1.0, 1.0, 1.0]
    calls = []

    def source(file, demo, t, camera):
        calls.append((file, demo, tuple(t), camera))
        return np.zeros((len(t), 4))

    WindowDataset([ours], embeddings=source, cameras=("agentview_rgb",))[3]
    assert calls == [(str(ours), "demo_0", (0, 3, 9), "agentview_rgb")]


def test_pass1_file_works_with_embeddings_but_not_images(tmp_path):
    path = write_ours(tmp_path / "p1_demo.hdf5", images=False)
    with pytest.raises(H.DemoFormatError, match="obs/agentview_rgb: missing"):
        WindowDataset([path])
    assert len(WindowDataset([path], cameras=())) == 54


def test_dataset_pickles_for_loader_workers(ours):
    ds = WindowDataset([ours])
    ds[0]  # opens a file handle
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    np.testing.assert_array_equal(clone[5]["agentview_rgb"], ds[5]["agentview_rgb"])


def test_bad_arguments(ours):
    with pytest.raises(ValueError, match="edge"):
        WindowDataset([ours], edge="wrap")
    with pytest.raises(ValueError, match="proprio"):
        WindowDataset([ours], proprio="joints")
    with pytest.raises(ValueError, match="cameras"):
        WindowDataset([ours], cameras=("frontview",))


def test_synthetic_demo_is_structured():
    demo = synthetic_demo(8)
    assert demo["obs"]["joint_states"][:, 0].tolist() == list(range(8))


class FakeCache:  # the shape of clad_lite.encoders.cache.EmbeddingCache's reading API
    calls = 0

    def frames(self, file, demo, camera):
        FakeCache.calls += 1
        return np.arange(30 if demo == "demo_0" else 20)[:, None] * np.ones((1, 4), np.float16)

    def text(self, instruction):
        return np.full(2, len(instruction), np.float32)


def test_cache_like_embedding_source(ours):
    FakeCache.calls = 0
    ds = WindowDataset([ours], embeddings=FakeCache(), text_embeddings=FakeCache(), cameras=("agentview_rgb",))
    assert ds[3]["agentview_rgb_next"].tolist() == [9.0] * 4 and ds[4]["agentview_rgb"].dtype == torch.float32
    assert FakeCache.calls == 1  # per-demo arrays are memoised
    assert ds[0]["instruction_emb"].tolist() == [float(len(ds.instructions[0]))] * 2
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[3]["agentview_rgb_next"].tolist() == [9.0] * 4


def test_strided_images_give_windows_only_at_rendered_steps(tmp_path):
    path = write_ours(tmp_path / "strided_demo.hdf5", lengths=(31, 20), image_stride=3)
    ds = WindowDataset(path, tau=TAU, cameras=("agentview_rgb",), normalize=False, upright=False)
    ts = [int(ds[i]["t"]) for i in range(len(ds)) if int(ds[i]["demo_index"]) == 0]
    assert ts == list(range(0, 31, 3))
    for i in range(len(ds)):
        item = ds[i]
        t, T = int(item["t"]), (31, 20)[int(item["demo_index"])]
        last = ((T - 1) // 3) * 3  # the last rendered step (30 and 18)
        expected = np.clip([t - TAU, t, t + TAU], 0, last)
        # the synthetic images carry their step in the green channel: every image read is a rendered one
        shown = [int(item[k][1, 0, 0]) for k in ("agentview_rgb_prev", "agentview_rgb", "agentview_rgb_next")]
        assert shown == list(expected)
        assert int(item["proprio_next"][0]) == expected[2]  # joint_states[:, 0] = t, unnormalised
    # without cameras the stride does not matter: every step is a window
    assert len(WindowDataset(path, tau=TAU, cameras=(), normalize=False)) == 31 + 20
    inside = WindowDataset(path, tau=TAU, cameras=("agentview_rgb",), edge="inside", normalize=False)
    assert [int(inside[i]["t"]) for i in range(len(inside)) if int(inside[i]["demo_index"]) == 0] == list(range(6, 25, 3))
    with pytest.raises(ValueError, match="not a multiple"):
        WindowDataset(path, tau=4, cameras=("agentview_rgb",), normalize=False)


def test_strided_file_layout(tmp_path):
    path = write_ours(tmp_path / "strided_demo.hdf5", lengths=(10,), image_stride=4)
    with H.DemoFile(path) as f:
        assert f.image_stride == 4
        np.testing.assert_array_equal(f.image_frames("demo_0"), [0, 4, 8])
        images = f.read("demo_0", ["obs/agentview_rgb"])["obs/agentview_rgb"]
        assert images.shape[0] == 10 and images[[1, 2, 3, 5, 9]].max() == 0
        assert [int(images[t, 0, 0, 1]) for t in (0, 4, 8)] == [0, 4, 8]
        assert f.dataset("demo_0", "obs/agentview_rgb").id.get_storage_size() < images[:3].nbytes  # 3 of 10 stored
    assert H.validate_file(path, require_images=True, deep=True).image_size == (16, 16)
    with pytest.raises(ValueError, match="expected 3"):
        import h5py

        with h5py.File(tmp_path / "x.h5", "w") as f:
            H.write_strided_images(f, "agentview_rgb", np.zeros((2, 4, 4, 3), np.uint8), 10, 4)
