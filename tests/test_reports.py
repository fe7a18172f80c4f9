"""clad_lite.reports and clad_lite.paper_numbers: table builders, the paper's transcription, IG."""

import torch

from clad_lite import paper_numbers as P
from clad_lite import reports


def _results(ks=(1, 0), n=2):
    from clad_lite.evaluate import wilson_interval

    return {"suite": "libero_10", "profile": "ci", "per_task": [
        {"task_id": t, "instruction": "x", "successes": k, "episodes": n, "rate": k / n,
         "ci95": list(wilson_interval(k, n))} for t, k in zip((0, 2), ks)]}


def test_table1_has_paper_columns_and_wilson():
    text = reports.table1(_results(), "ci", "somewhere/results.json")
    header = text.splitlines()[0]
    assert "paper CLaD‡" in header and "paper OpenVLA" in header and "project CLaD (ci)" in header
    assert "50.0% [9.5, 90.5] (1/2)" in text          # task 1: 1/2 with its Wilson interval
    assert "25.0% [4.6, 69.9] (1/4) over 2 task(s)" in text  # pooled average
    assert "not run" in text and "SMALL profile" in text and "somewhere/results.json" in text
    assert "94.7" in text


def test_foresight_gain_table():
    text = reports.foresight_gain_table(_results((2, 1), n=2), _results((1, 0), n=2), "cpu", {"CLaD": "a.json"})
    lines = text.splitlines()
    assert "CLaD (cpu)" in lines[0] and "policy only (cpu)" in lines[0]
    assert "| +50 |" in lines[2] and "| +50 |" in lines[3]  # 2/2 vs 1/2 and 1/2 vs 0/2
    # pooled 3/4 vs 1/4: +50 points, se = sqrt(2 * 0.75 * 0.25 / 4) = 0.306 -> [-10.0, +110.0]
    assert "+50.0 [-10.0, +110.0]" in text and "a.json" in text
    # with each episode's success from the same init states the interval is paired (clad_lite.compare)
    clad, base = _results((2, 1), n=2), _results((1, 0), n=2)
    for results, outcomes in ((clad, ([1, 1], [1, 0])), (base, ([1, 0], [0, 0]))):
        for task, episode_success in zip(results["per_task"], outcomes):
            task["episode_success"] = episode_success
    assert reports.episode_pairs(base, clad) == [(True, True), (False, True), (False, True), (False, False)]
    from clad_lite.compare import newcombe_paired_interval

    lo, hi = newcombe_paired_interval(both=1, only_a=0, only_b=2, neither=1)
    assert f"+50.0 [{100 * lo:+.1f}, {100 * hi:+.1f}] (paired)" in reports.foresight_gain_table(clad, base, "cpu")
    base["protocol"] = {"init_states": "episode i starts from training demo i"}
    assert reports.episode_pairs(base, clad) is None  # different starts: unpaired again
    assert "(paired)" not in reports.foresight_gain_table(clad, base, "cpu")


def test_runs_table_reads_settings_from_provenance(tmp_path):
    import json

    folder = tmp_path / "figures" / "results"
    folder.mkdir(parents=True)

    def write(name, ks, foresight, steps, weights=None, proprio=None, data=None, samples=None, prediction=None,
              past_actions=None, latch=None, query_every=None, obs_noise=None, cond_injection=None,
              extra_actions=None, dropout=None, seed=None, ensemble=False, sampler=None):
        policy = dict({"foresight": foresight}, **({"prediction": prediction} if prediction else {}),
                      **({"past_actions": past_actions} if past_actions is not None else {}),
                      **({"obs_noise": obs_noise} if obs_noise is not None else {}),
                      **({"cond_injection": cond_injection} if cond_injection is not None else {}),
                      **({"horizon": 6, "extra_actions": extra_actions} if extra_actions is not None else {}),
                      **({"dropout": dropout} if dropout is not None else {}))
        config = {"policy": policy, "stage2": dict({"steps": steps, "batch_size": 64, "ema_decay": 0.999},
                                                   **({"seed": seed} if seed is not None else {}))}
        if proprio or data:
            config["data"] = dict(data or {}, **({"proprio": proprio} if proprio else {}))
        results = dict(_results(ks, n=10), profile="cpu", provenance={"git_sha": "0123456789abc", "config": config})
        protocol = dict({"weights": weights} if weights else {}, **({"action_samples": samples} if samples else {}),
                        **({"gripper_hysteresis": latch} if latch else {}),
                        **({"query_every": query_every, "replan_every": 6} if query_every else {}),
                        **({"temporal_ensembling": True} if ensemble else {}),
                        **(dict(zip(("sampler", "sampling_steps"), sampler)) if sampler else {}))
        if protocol:
            results["protocol"] = protocol
        (folder / f"libero_10_cpu{name}.json").write_text(json.dumps(results))

    write("", (1, 0), "both", 10_000)
    write("_policy_only", (0, 0), "none", 10_000)
    write("_stage2_40k_ema", (5, 3), "both", 40_000, "ema")
    write("_stage2_20k_eef", (2, 1), "both", 20_000, proprio="authors_code", data={"image_stride": 6})
    write("_stage2_20k_state_oracle", (9, 8), "none", 20_000, data={"vision_source": "sim_state", "image_stride": 1})
    write("_stage2_40k_mean8", (6, 4), "both", 40_000, "raw", samples=8)
    write("_stage2_40k_x0", (7, 4), "both", 40_000, samples=8, prediction="sample")
    write("_stage2_40k_x0_past", (3, 4), "both", 40_000, prediction="sample", past_actions=True, latch=0.5)
    write("_stage2_40k_x0_fb", (6, 4), "both", 40_000, prediction="sample",
          data={"expert_motion": "feedback", "demos_per_task": 100, "recovery_demos": 25, "dagger_demos": 10,
                "image_stride": 3})
    write("_stage2_40k_x0_q3", (2, 4), "both", 40_000, prediction="sample", query_every=3, sampler=("ddim", 5))
    write("_stage2_40k_x0_q6", (2, 5), "both", 40_000, prediction="sample", query_every=6,  # = tau: not shown
          ensemble=True, sampler=("ddpm", 25))  # the paper's sampler: not shown
    write("_stage2_40k_x0_noise", (4, 5), "both", 40_000, prediction="sample", obs_noise=0.1, extra_actions=0,
          dropout=0.0, seed=3407)  # the defaults: not shown
    write("_stage2_40k_x0_noise_drop", (3, 5), "both", 40_000, prediction="sample", obs_noise=0.1, dropout=0.1,
          seed=1)
    write("_stage2_40k_x0_film", (5, 5), "both", 40_000, prediction="sample", cond_injection="every_block",
          extra_actions=6)
    (folder / "libero_10_cpu_pipeline.json").write_text(json.dumps({"steps": []}))  # not an evaluation
    (folder / "libero_10_ci.json").write_text(json.dumps(dict(_results(), profile="ci")))  # another profile
    runs = reports.committed_runs("cpu", root=tmp_path)
    assert list(runs) == ["main", "policy_only", "stage2_20k_eef", "stage2_20k_state_oracle", "stage2_40k_ema",
                          "stage2_40k_mean8", "stage2_40k_x0", "stage2_40k_x0_fb", "stage2_40k_x0_film", "stage2_40k_x0_noise", "stage2_40k_x0_noise_drop", "stage2_40k_x0_past", "stage2_40k_x0_q3",
                          "stage2_40k_x0_q6"]
    lines = reports.runs_table(runs, "cpu").splitlines()
    # a file without data.proprio / vision_source in its provenance predates the field: the paper's
    # 16-D vector and the encoder; without action_samples / prediction, one draw of an eps model
    assert "`main` | CLaD | paper (16-D) | encoder | 10K x 64 | raw | 1 draw | 5.0% [0.9, 23.6] (1/20) | 1,0 | 0123456" in lines[2]
    assert "`policy_only` | none | paper (16-D) | encoder | 10K x 64 | raw | 1 draw | 0.0%" in lines[3]
    assert "`stage2_20k_eef` | CLaD | authors_code (9-D) | encoder (every 6th step) | 20K x 64 | raw | 1 draw | 15.0%" in lines[4]
    assert "`stage2_20k_state_oracle` | none | paper (16-D) | sim state (oracle) (every step) | 20K x 64 | raw | 1 draw | 85.0%" in lines[5]
    assert "`stage2_40k_ema` | CLaD | paper (16-D) | encoder | 40K x 64 | EMA 0.999 | 1 draw | 40.0%" in lines[6] and "| 5,3 |" in lines[6]
    assert "`stage2_40k_mean8` | CLaD | paper (16-D) | encoder | 40K x 64 | raw | mean of 8 draws | 50.0%" in lines[7]
    assert "`stage2_40k_x0` | CLaD | paper (16-D) | encoder | 40K x 64 | raw | x0-pred, mean of 8 draws | 55.0%" in lines[8]
    assert "`stage2_40k_x0_fb` | CLaD | paper (16-D) | encoder (every 3rd step), feedback-expert demos, 100 demos/task, + 25 recovery demos/task, + 10 on-policy (DAgger) demos/task | 40K x 64 | raw | x0-pred, 1 draw | 50.0%" in lines[9]
    assert "`stage2_40k_x0_film` | CLaD, FiLM per block, chunk 12 (first 6 executed) | paper (16-D) | encoder | 40K x 64 | raw | x0-pred, 1 draw | 50.0%" in lines[10]
    assert "`stage2_40k_x0_noise` | CLaD, obs. noise 0.1 | paper (16-D) | encoder | 40K x 64 | raw | x0-pred, 1 draw | 45.0%" in lines[11]
    assert "`stage2_40k_x0_noise_drop` | CLaD, obs. noise 0.1, dropout 0.1, stage-2 seed 1 | paper (16-D) | encoder | 40K x 64 | raw | x0-pred, 1 draw | 40.0%" in lines[12]
    assert "`stage2_40k_x0_past` | CLaD + past actions | paper (16-D) | encoder | 40K x 64 | raw | x0-pred, 1 draw, gripper latch 0.5 | 35.0%" in lines[13]
    assert "`stage2_40k_x0_q3` | CLaD | paper (16-D) | encoder | 40K x 64 | raw | x0-pred, 1 draw, DDIM 5 steps, query every 3 | 30.0%" in lines[14]
    assert "`stage2_40k_x0_q6` | CLaD | paper (16-D) | encoder | 40K x 64 | raw | x0-pred, 1 draw, temporal ensembling | 35.0%" in lines[15]


def test_window_spacing_reads_as_an_ordinal():
    assert [reports._ordinal(n) for n in (1, 2, 3, 4, 6, 11, 12, 13, 21, 22, 23, 112)] == [
        "1st", "2nd", "3rd", "4th", "6th", "11th", "12th", "13th", "21st", "22nd", "23rd", "112th"]


def test_runs_figure_orders_runs_and_marks_the_oracle():
    def run(ks, foresight, vision="encoder"):
        results = _results(ks, n=10)
        results["provenance"] = {"config": {"policy": {"foresight": foresight}, "data": {"vision_source": vision}}}
        return results, "x.json"

    runs = {"clad": run((6, 2), "both"), "policy_only": run((1, 0), "none"), "oracle": run((3, 0), "none", "sim_state"),
            "tie_b": run((2, 2), "both"), "tie_a": run((4, 0), "both")}
    fig = reports.runs_figure(runs, "cpu", target=80)
    ax = fig.axes[0]
    # worst at the bottom (y = 0), best at the top; equal rates in label order
    assert [t.get_text() for t in ax.get_yticklabels()] == ["policy_only", "oracle", "tie_a", "tie_b", "clad"]
    assert [t.get_text() for t in ax.texts] == ["1/20", "3/20", "4/20", "4/20", "8/20"]
    lines = [line for line in ax.get_lines() if line.get_marker() in ("o", "s")]  # the rows (not the caps)
    assert [line.get_marker() for line in lines] == ["o", "s", "o", "o", "o"]
    assert [line.get_color() for line in lines] == ["tab:orange", "tab:orange", "tab:blue", "tab:blue", "tab:blue"]
    assert lines[-1].get_xdata()[0] == 40.0 and lines[-1].get_ydata()[0] == 4
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "paper CLaD‡ 94.7% (its scale)" in legend and "target of the 'cpu' profile, 80%" in legend


def test_modality_figure_with_zero_and_full_success():
    """A 0% or 100% bar has a one-sided interval (the errorbar must not get a negative length)."""
    zero, full = _results((0, 0), n=100), _results((100, 100), n=100)
    fig = reports.modality_figure({"policy_only": zero, "clad_p": None, "clad_s": None, "clad": full}, "cpu")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0/200" in texts and "200/200" in texts and texts.count("not run") == 2


def test_ablation_and_table6():
    text = reports.ablation_table({"clad": (_results(), "a.json"), "no_recon": (None, None)}, P.TABLE4 | {"clad": 94.7,
                                  "no_recon": 86.1}, "ci")
    assert "paper avg. SR (%)" in text and "86.1" in text and "no project run" in text and "(1/4)" in text
    t6 = reports.table6()
    assert "paper libero_spatial" in t6 and "no project run" in t6 and "97.3" in t6


def test_paper_numbers_consistent():
    for col, values in P.TABLE1["per_task"].items():
        assert len(values) == 10
        off = abs(sum(values) / 10 - P.TABLE1["average"][col])
        assert off <= 0.06 or ("table1", col) in P.KNOWN_INCONSISTENCIES, (col, off)
    assert P.TABLE3["CLaD"]["avg_sr"] == P.TABLE1["average"]["CLaD‡"] == P.TABLE4["latent + recon (CLaD)"]
    assert P.TABLE5["p_queries_s"] == P.TABLE7["clad"] == P.FIGURE3["clad"] == P.TABLE6["rows"]["CLaD"][3]
    assert abs(sum(P.CLAD_PARAMS_B[k] for k in ("vlm", "clad", "policy")) - P.CLAD_PARAMS_B["total"]) < 1e-9
    assert P.TABLE2["CLaD"]["params_b"] == P.CLAD_PARAMS_B["total"]


def test_integrated_gradients_shape_on_tiny_random_encoder():
    from clad_lite.clad import CLaD, make_dummy_batch
    from clad_lite.configuration_clad import MODEL_PRESETS
    from clad_lite.encoders.config import EncoderConfig
    from clad_lite.encoders.lite import DecisionNCELite, LiteEncoder

    torch.manual_seed(0)
    config = EncoderConfig(embed_dim=64, image_size=16, widths=(4, 8), blocks=(1, 1))
    encoder = LiteEncoder(DecisionNCELite(config))
    clad = CLaD(MODEL_PRESETS["ci"][0]).freeze()
    batch = make_dummy_batch(clad.config, 2, generator=torch.Generator().manual_seed(0))
    forward = reports.alignment_forward(clad, encoder, batch, camera_index=0, n_cameras=2)
    image = torch.rand(1, 3, 16, 16)
    assert forward(image).shape == (1,)
    attribution, delta = reports.integrated_gradients(forward, image, steps=8)
    assert attribution.shape == image.shape and torch.isfinite(attribution).all() and attribution.abs().sum() > 0
    # completeness: the attributions sum to f(x) - f(baseline), up to the Riemann error
    gap = float(forward(image) - forward(torch.zeros_like(image)))
    assert abs(float(attribution.sum()) - gap) <= abs(delta) + 1e-4


def test_goal_table_shows_partial_progress_and_old_files():
    results = _results((0, 1), n=2)
    results["per_task"][0]["goals"] = [{"predicate": "In(a, b)", "reached": 2, "final": 1, "episodes": 2},
                                       {"predicate": "In(c, b)", "reached": 0, "final": 0, "episodes": 2}]
    lines = reports.goal_table(results, "cpu", "r.json").splitlines()
    assert lines[2].endswith("| 0/2 | In(a, b): 2/2 (1); In(c, b): 0/2 (0) |")
    assert lines[3].endswith(f"| 1/2 | {reports.MISSING} |") and "r.json" in lines[-1]


def test_grasp_table_shows_held_closes_and_old_files():
    results = _results((0, 1), n=2)
    results["per_task"][0]["grasps"] = {"episodes": 2, "grasps": 3, "held": 1, "by_object": {
        "can": {"grasps": 2, "held": 1, "median_distance": 0.012}, "box": {"grasps": 1, "held": 0, "median_distance": 0.0304}}}
    lines = reports.grasp_table(results, "cpu", "r.json").splitlines()
    assert lines[2].endswith("| 0/2 | 1/3 | can: 1/2 held, 12 mm; box: 0/1 held, 30 mm |")
    assert lines[3].endswith(f"| 1/2 | {reports.MISSING} | {reports.MISSING} |") and "r.json" in lines[-1]
    expert = {"tasks": {"0": {"successes": 2, "attempts": 2, "grasps": {"episodes": 2, "grasps": 2, "held": 2,
                                                                       "by_object": {"can": {"grasps": 2, "held": 2, "median_distance": 0.004}}}}}}
    lines = reports.grasp_table(results, "cpu", "r.json", expert=expert, expert_source="x.json").splitlines()
    assert lines[0].endswith("| expert success | expert held/closes | expert per object |")
    assert lines[2].endswith("| 2/2 | 2/2 | can: 2/2 held, 4 mm |") and "x.json" in lines[-1]
    assert lines[3].endswith(f"| {reports.MISSING} | {reports.MISSING} | {reports.MISSING} |")
