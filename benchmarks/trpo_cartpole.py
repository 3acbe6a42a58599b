"""TRPO on CartPole-v1: companion.trpo against sb3-contrib's TRPO, side by side in one run.

The protocol (evaluation schedule and seeds, what is timed, what is reported) is the one of
``protocol.py``, shared with ``ppo_cartpole.py``: every 2,000 environment steps a
deterministic evaluation of 10 episodes, excluded from the wall clock; per seed the steps and
wall-clock to a return of 475 and the return at the end of the 100,000-step budget; one torch
thread; seeds alternate. For ours it also reports the largest mean KL of an accepted step, the
largest per-state KL and the number of rejected steps.

sb3-contrib uses the rl-baselines3-zoo hyperparameters for CartPole-v1 (hyperparams/trpo.yml):
n_envs 2, n_timesteps 1e5, MlpPolicy, n_steps 512, batch_size 512, cg_damping 1e-3,
gae_lambda 0.98, gamma 0.99, learning_rate 1e-3, n_critic_updates 20 (everything else at
sb3-contrib's defaults: target_kl 0.01, cg_max_steps 15, line search shrink 0.8 up to 10 times,
64-64 tanh networks); ours uses ``TRPOConfig()`` defaults.

Run from the repository root (needs ``pip install -r requirements-bench.txt``)::

    python benchmarks/trpo_cartpole.py            # 5 seeds each
    python benchmarks/trpo_cartpole.py --seeds 0 1 --json results.json
    python benchmarks/trpo_cartpole.py --only ours --seeds 0 1 2
"""

from __future__ import annotations

import protocol

from companion.trpo import TRPOConfig, train_trpo


def run_ours(seed: int) -> dict:
    cfg = TRPOConfig(total_timesteps=protocol.CARTPOLE.budget,
                     eval_every=protocol.CARTPOLE.eval_every,
                     eval_episodes=protocol.CARTPOLE.eval_episodes)
    out, history = protocol.run_ours(protocol.CARTPOLE, train_trpo, cfg, seed)
    d = history.to_dict_of_arrays()
    out["max_mean_kl"] = float(d["kl"].max())
    out["max_state_kl"] = float(d["max_kl"].max())
    out["rejected_steps"] = int(d["rejected"].sum())
    return out


def run_sb3(seed: int) -> dict:
    from sb3_contrib import TRPO

    def make_model(env):
        return TRPO("MlpPolicy", env, n_steps=512, batch_size=512, cg_damping=1e-3,
                    gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20,
                    seed=seed, device="cpu", verbose=0)

    return protocol.run_sb3(protocol.CARTPOLE, make_model, n_envs=2, seed=seed)


def warm_up(with_sb3: bool) -> None:
    if with_sb3:  # sb3-contrib's modules, imported before any clock starts
        import sb3_contrib  # noqa: F401
        from stable_baselines3.common.env_util import make_vec_env  # noqa: F401


def kl_columns(r: dict) -> str:
    return (f"  max mean KL {r['max_mean_kl']:.4f}  max per-state KL "
            f"{r['max_state_kl']:.3f}  rejected {r['rejected_steps']}")


if __name__ == "__main__":
    protocol.main(protocol.CARTPOLE, __doc__, run_ours, run_sb3, peer="sb3-contrib",
                  extra=kl_columns, warm_up=warm_up)
