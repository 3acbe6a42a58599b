"""PPO on Pendulum-v1: companion.ppo against Stable-Baselines3, side by side in one run.

The protocol is the one of ``protocol.py`` (task ``PENDULUM``): every 4,000 environment steps a
deterministic evaluation of 10 episodes (the mean action, clipped to the bounds), excluded from
the wall clock; per seed the steps and wall-clock to a return of -200 and the return at the end
of the 100,000-step budget; one torch thread; seeds alternate.

SB3 uses the rl-baselines3-zoo hyperparameters for Pendulum-v1 (hyperparams/ppo.yml): n_envs 4,
n_timesteps 1e5, MlpPolicy, n_steps 1024, gae_lambda 0.95, gamma 0.9, n_epochs 10, ent_coef 0.0,
learning_rate 1e-3, clip_range 0.2, use_sde True, sde_sample_freq 4 (batch_size at SB3's default
of 64). Ours uses ``PPOConfig.pendulum()``: a state-independent log standard deviation, no gSDE.

Run from the repository root (needs ``pip install -r requirements-bench.txt``)::

    python benchmarks/ppo_pendulum.py            # 5 seeds each
    python benchmarks/ppo_pendulum.py --seeds 0 1 --json results.json
    python benchmarks/ppo_pendulum.py --only ours --seeds 0
"""

from __future__ import annotations

import protocol

from companion.ppo import PPOConfig, train_ppo

TASK = protocol.PENDULUM


def run_ours(seed: int) -> dict:
    cfg = PPOConfig.pendulum(total_timesteps=TASK.budget, eval_every=TASK.eval_every,
                             eval_episodes=TASK.eval_episodes)
    return protocol.run_ours(TASK, train_ppo, cfg, seed)[0]


def run_sb3(seed: int) -> dict:
    from stable_baselines3 import PPO

    def make_model(env):
        return PPO("MlpPolicy", env, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10,
                   ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, use_sde=True,
                   sde_sample_freq=4, seed=seed, device="cpu", verbose=0)

    return protocol.run_sb3(TASK, make_model, n_envs=4, seed=seed)


def warm_up(with_sb3: bool) -> None:
    if with_sb3:  # SB3's modules, imported before any clock starts
        import stable_baselines3  # noqa: F401
        from stable_baselines3.common.env_util import make_vec_env  # noqa: F401


if __name__ == "__main__":
    protocol.main(TASK, __doc__, run_ours, run_sb3, peer="SB3", peer_row="sb3", warm_up=warm_up)
