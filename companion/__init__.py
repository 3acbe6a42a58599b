"""Reference implementations for *Importance Sampling in Reinforcement Learning*.

Every public name of the submodules is re-exported here, so a chapter can write
``import companion as cp`` and call ``cp.trajectory_is(...)``.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

# Submodules whose ``__all__`` is re-exported, in the order of the chapters that introduce them.
_MODULES = (
    "weights",
    "estimators",
    "diagnostics",
    "mdp",
    "bandits",
    "policy_gradient",
    "variance",
    "rl",
    "ppo",
    "trpo",
    "blackjack",
    "weighted",
    "traces",
)

__all__ = ["__version__"]


def _reexport(name):
    try:
        module = _import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:  # a module not written yet, while the package grows
        if err.name != f"{__name__}.{name}":
            raise
        return
    for public in module.__all__:
        globals()[public] = getattr(module, public)
    __all__.extend(name for name in module.__all__ if name not in __all__)


for _name in _MODULES:
    _reexport(_name)
del _name
