"""Reference implementations for *Importance Sampling in Reinforcement Learning*.

Every public name of the submodules is re-exported here, so a chapter can write
``import companion as cp`` and call ``cp.trajectory_is(...)``. The modules that need PyTorch
(``rl``, ``ppo``, ``trpo``) are imported on first use of one of their names, so
``import companion`` does not load torch.
"""

import ast as _ast
from importlib import import_module as _import_module
from pathlib import Path as _Path

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
    "continuous",
    "blackjack",
    "one_state",
    "wis_experiments",
    "traces",
    "marginalized",
    "confidence",
    "notebook",
)
_TORCH_MODULES = ("rl", "ppo", "trpo")

__all__ = ["__version__"]
_LAZY: dict[str, str] = {}


def _public_names(module_name: str) -> list[str]:
    """A module's ``__all__``, read from its source without importing it."""
    tree = _ast.parse((_Path(__file__).parent / f"{module_name}.py").read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, _ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, _ast.Name) and t.id == "__all__" for t in targets):
            return list(_ast.literal_eval(node.value))
    raise ImportError(f"companion.{module_name} defines no __all__")


for _name in _MODULES:
    _module = _import_module(f"{__name__}.{_name}")
    for _public in _module.__all__:
        globals()[_public] = getattr(_module, _public)
        if _public not in __all__:
            __all__.append(_public)
for _name in _TORCH_MODULES:
    for _public in _public_names(_name):
        _LAZY.setdefault(_public, _name)
        if _public not in __all__:
            __all__.append(_public)
del _name, _module, _public


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
