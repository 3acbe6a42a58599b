"""PPO on CartPole-v1: companion.ppo against Stable-Baselines3, side by side in one run.

The protocol (evaluation schedule and seeds, what is timed, what is reported) is the one of
``protocol.py``: every 2,000 environment steps a deterministic evaluation of 10
episodes, excluded from the wall clock; per seed the steps and wall-clock to a return of 475 and
the return at the end of the 100,000-step budget; one torch thread; seeds alternate.

SB3 uses the rl-baselines3-zoo hyperparameters for CartPole-v1 (hyperparams/ppo.yml): n_envs 8,
n_timesteps 1e5, MlpPolicy, n_steps 32, batch_size 256, gae_lambda 0.8, gamma 0.98, n_epochs 20,
ent_coef 0.0, learning_rate lin_0.001, clip_range lin_0.2; ours uses ``PPOConfig()`` defaults.

Run from the repository root (needs ``pip install -r requirements-bench.txt``)::

    python benchmarks/ppo_cartpole.py            # 5 seeds each
    python benchmarks/ppo_cartpole.py --seeds 0 1 --json results.json
    python benchmarks/ppo_cartpole.py --only ours --seeds 0
"""

from __future__ import annotations

import protocol

from companion.ppo import PPOConfig, train_ppo


def run_ours(seed: int) -> dict:
    cfg = PPOConfig(total_timesteps=protocol.CARTPOLE.budget,
                    eval_every=protocol.CARTPOLE.eval_every,
                    eval_episodes=protocol.CARTPOLE.eval_episodes)
    return protocol.run_ours(protocol.CARTPOLE, train_ppo, cfg, seed)[0]


def run_sb3(seed: int) -> dict:
    from stable_baselines3 import PPO

    def linear(initial):  # rl-baselines3-zoo's "lin_<value>": progress_remaining * value
        return lambda progress_remaining: progress_remaining * initial

    def make_model(env):
        return PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                   n_epochs=20, ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2),
                   seed=seed, device="cpu", verbose=0)

    return protocol.run_sb3(protocol.CARTPOLE, make_model, n_envs=8, seed=seed)


def warm_up(with_sb3: bool) -> None:
    if with_sb3:  # SB3's modules, imported before any clock starts
        import stable_baselines3  # noqa: F401
        from stable_baselines3.common.env_util import make_vec_env  # noqa: F401


if __name__ == "__main__":
    protocol.main(protocol.CARTPOLE, __doc__, run_ours, run_sb3, peer="SB3", peer_row="sb3",
                  warm_up=warm_up)
