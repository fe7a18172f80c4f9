"""The CLaD paper's reported numbers, transcribed by hand (THE PAPER'S, not this project's).

Every value below is copied from the paper's text (tables 1-7, figure 3) and is used only in
columns labelled "paper" by :mod:`clad_lite.reports`. Success rates are in percent. Nothing
here was measured by this project.

Keys are the paper's table / figure ids (``"table1"`` ... ``"table7"``, ``"figure3"``).
"""

from __future__ import annotations

SOURCE = "CLaD paper (LIBERO-LONG), transcribed from its tables; percent success unless stated"

# LIBERO-LONG task names of table 1's caption, task ids 1..10 (the project's task_id is 0..9)
TASK_NAMES = (
    "put soup and sauce in basket", "put box and butter in basket", "turn on stove and put pot",
    "put bowl in drawer and close it", "put mugs on left and right plates", "pick book and place it in back",
    "put mug on plate and put pudding to right", "put soup and box in basket", "put both pots on stove",
    "put mug in microwave and close it",
)

# Table 1: per-task success (%) on LIBERO-LONG. "†": mean over 20 rollouts from the top-3 checkpoints;
# "‡": 50 rollouts, one checkpoint. Parameter counts in the column header, billions.
TABLE1 = {
    "columns": {  # name -> (protocol mark, parameters in B)
        "SuSIE": ("†", 0.86), "Seer": ("†", 0.32), "LBP": ("†", 0.19), "pi0": ("‡", 3.3),
        "pi0.5": ("‡", 3.3), "OpenVLA": ("‡", 7.0), "CLaD†": ("†", 0.66), "CLaD‡": ("‡", 0.66),
    },
    "per_task": {  # column -> success of tasks 1..10
        "SuSIE": (83.3, 63.3, 96.6, 100.0, 83.3, 83.3, 83.3, 39.9, 53.3, 76.6),
        "Seer": (88.3, 90.0, 98.3, 100.0, 91.7, 93.3, 85.0, 91.7, 61.7, 71.7),
        "LBP": (90.0, 100.0, 100.0, 100.0, 76.6, 86.6, 90.0, 86.6, 60.0, 96.6),
        "pi0": (74.0, 94.0, 88.0, 22.0, 100.0, 88.0, 98.0, 86.0, 76.0, 94.0),
        "pi0.5": (92.0, 98.0, 98.0, 98.0, 100.0, 94.0, 96.0, 100.0, 62.0, 94.0),
        "OpenVLA": (98.0, 96.0, 100.0, 78.0, 84.0, 100.0, 94.0, 96.0, 92.0, 100.0),
        "CLaD†": (100.0, 100.0, 98.3, 93.7, 92.0, 100.0, 94.3, 100.0, 81.7, 85.0),
        "CLaD‡": (100.0, 100.0, 98.0, 94.0, 91.0, 100.0, 95.0, 100.0, 82.0, 87.0),
    },
    "average": {"SuSIE": 76.3, "Seer": 87.7, "LBP": 88.6, "pi0": 82.0, "pi0.5": 93.2, "OpenVLA": 93.8,
                "CLaD†": 94.5, "CLaD‡": 94.7},
    "rollouts": {"†": "20 rollouts x top-3 checkpoints per task", "‡": "50 rollouts per task, one checkpoint"},
}

# Where the paper's own numbers disagree (kept as printed; the tests check everything else).
KNOWN_INCONSISTENCIES = {
    ("table1", "Seer"): "per-task values average to 87.17, the printed Avg. SR is 87.7",
    ("text", "task 9"): "section 5.2 / 7 say 81.3% on task 9; table 1 prints 81.7 (†) and 82.0 (‡)",
}

# Table 2: computational requirements.
TABLE2 = {
    "OpenVLA": {"inference_hz": 6, "memory_gb": 15, "params_b": 7.0},
    "pi0.5": {"inference_hz": 10, "memory_gb": 19, "params_b": 3.3},
    "CLaD": {"inference_hz": 25, "memory_gb": 4, "params_b": 0.66},
}
# CLaD's parameter split (section 5.1), billions
CLAD_PARAMS_B = {"vlm": 0.1, "clad": 0.33, "policy": 0.23, "total": 0.66}

# Table 3: latent planners.
TABLE3 = {
    "UVA": {"params_b": 0.5, "planning_s": 0.195, "avg_sr": 90.0},
    "LBP": {"params_b": 0.19, "planning_s": 0.008, "avg_sr": 88.6},
    "CLaD": {"params_b": 0.66, "planning_s": 0.012, "avg_sr": 94.7},
}

# Table 4: the reconstruction loss (average success, %).
TABLE4 = {"latent only (no L_recon)": 86.1, "latent + recon (CLaD)": 94.7}

# Table 5: cross-attention configurations (average success, %).
TABLE5 = {"self_attention": 86.7, "s_queries_p": 93.8, "p_queries_s": 94.7}

# Table 6: average success (%) over 50 rollouts on the four LIBERO suites.
TABLE6 = {
    "columns": ("libero_spatial", "libero_object", "libero_goal", "libero_10"),
    "rows": {
        "pi0": (97.2, 97.8, 91.6, 82.0),
        "UniVLA": (96.5, 96.8, 95.6, 92.0),
        "pi0.5": (97.6, 98.4, 97.2, 93.2),
        "OpenVLA": (98.2, 98.6, 97.6, 93.8),
        "CLaD": (97.3, 95.7, 94.3, 94.7),
    },
}

# Table 7: action-free training variants (average success, %).
TABLE7 = {"heavy_mask": 88.2, "action_free": 90.8, "curriculum": 85.1, "clad": 94.7}

# Figure 3: modality contribution (average success, %; section 5.3 text).
FIGURE3 = {"policy_only": 84.8, "clad_p": 50.4, "clad_s": 91.5, "clad": 94.7}

PAPER = {"table1": TABLE1, "table2": TABLE2, "table3": TABLE3, "table4": TABLE4, "table5": TABLE5,
         "table6": TABLE6, "table7": TABLE7, "figure3": FIGURE3}

__all__ = ["SOURCE", "TASK_NAMES", "TABLE1", "TABLE2", "TABLE3", "TABLE4", "TABLE5", "TABLE6", "TABLE7",
           "FIGURE3", "CLAD_PARAMS_B", "PAPER", "KNOWN_INCONSISTENCIES"]
