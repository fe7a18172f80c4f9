"""clad_lite: an educational reference implementation of CLaD.

CLaD (cross-modal latent dynamics with grounded latent foresight) learns how proprioceptive
and semantic states co-evolve under actions (stage 1) and conditions a diffusion policy on
the predicted latent foresight (stage 2). See ``README.md`` and the notebooks.

Heavy modules (torch models, the LIBERO simulator) are imported lazily, so that
``python -m clad_lite info`` and ``import clad_lite.sim`` stay cheap and so that
``clad_lite.sim`` can choose the OpenGL backend before robosuite is imported.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "DDPM": "clad_lite.ddpm",
    "CLaD": "clad_lite.clad",
    "ForesightPolicy": "clad_lite.policy",
    "CLaDConfig": "clad_lite.configuration_clad",
    "PolicyConfig": "clad_lite.configuration_clad",
    "Foresight": "clad_lite.clad",
    "MODEL_PRESETS": "clad_lite.configuration_clad",
    "ABLATIONS": "clad_lite.configuration_clad",
    "apply_ablation": "clad_lite.configuration_clad",
    "parameter_counts": "clad_lite.params",
    "LiberoEnv": "clad_lite.sim",
    "Profile": "clad_lite.config",
    "get_profile": "clad_lite.config",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clad_lite' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["__version__"]
