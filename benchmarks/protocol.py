"""The measurement protocol shared by ``ppo_cartpole.py``, ``trpo_cartpole.py`` and
``ppo_pendulum.py``.

Each script compares a trainer of the companion with its Stable-Baselines3 counterpart on one
:class:`Task` (``CARTPOLE`` or ``PENDULUM``: the environment, the target return, the budget and the
evaluation schedule), in one process, with one torch thread, seed by seed (ours seed 0, theirs seed 0,
ours seed 1, ...) so that a change in machine load affects both alike:

* every ``eval_every`` environment steps (at the first point at or after each multiple where the
  implementation can stop: after an update for ours, after a vector step for SB3) the
  deterministic policy is evaluated with ``companion.rl.evaluate_policy`` (``eval_episodes``
  episodes, mean return) on the same seeded evaluation environments; evaluation time is excluded
  from the wall clock;
* reported per seed: environment steps and training wall-clock (from just before the model and
  environments are built) when the evaluation return first reaches ``target``, the evaluation
  return at the end of the ``budget``-step budget, and the smallest evaluation return after first
  reaching ``target``;
* the table also prints the machine's load average (1, 5 and 15 minutes) at the start and at the
  end of the run: on a shared machine a load above the number of cores inflates every time, so
  compare only the ratios of one run, and only when the load stayed low.

Not a script: run ``ppo_cartpole.py``, ``trpo_cartpole.py`` or ``ppo_pendulum.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from companion.rl import evaluate_policy


@dataclass(frozen=True)
class Task:
    """What is measured: the environment, the evaluation return that counts as solved, the
    environment-step budget, and the evaluation schedule (every ``eval_every`` steps, the mean
    return of ``eval_episodes`` deterministic episodes)."""

    env_id: str
    target: float
    budget: int
    eval_every: int
    eval_episodes: int


CARTPOLE = Task("CartPole-v1", target=475.0, budget=100_000, eval_every=2_000, eval_episodes=10)
PENDULUM = Task("Pendulum-v1", target=-200.0, budget=100_000, eval_every=4_000, eval_episodes=10)


def eval_seed(seed: int, k: int) -> int:
    """Seed of the k-th evaluation of a run (the scheme the companion's trainers use)."""
    return 10_000 * (seed + 1) + k


def summarise(task: Task, evals, wall_at_end) -> dict:
    """evals: list of (env_steps, wall_seconds, mean_return) in order."""
    first = next((e for e in evals if e[2] >= task.target), None)
    after = [e[2] for e in evals if first is not None and e[0] >= first[0]]
    return {
        "steps_to_target": None if first is None else int(first[0]),
        "wall_to_target": None if first is None else float(first[1]),
        "final_steps": int(evals[-1][0]),
        "final_return": float(evals[-1][2]),
        "min_return_after_target": None if first is None else float(min(after)),
        "train_wall_total": float(wall_at_end),
        "n_evals": len(evals),
    }


def run_ours(task: Task, train: Callable, config, seed: int) -> tuple[dict, object]:
    """Train with a companion trainer, which evaluates on the protocol's schedule itself.

    Returns the summary (with the config) and the training history.
    """
    policy, history = train(task.env_id, config, seed=seed, progress=False)
    evals = [(r["env_steps"], r["wall_time"], r["eval_return"]) for r in history
             if not np.isnan(r["eval_return"])]
    if history[-1]["env_steps"] != evals[-1][0]:  # make sure the end of the budget is evaluated
        mean, _ = evaluate_policy(policy, task.env_id, task.eval_episodes,
                                  eval_seed(seed, len(evals)))
        evals.append((history[-1]["env_steps"], history[-1]["wall_time"], mean))
    out = summarise(task, evals, history[-1]["wall_time"])
    out["config"] = dict(vars(config))
    return out, history


class _SB3Actor:
    """Adapter so that ``evaluate_policy`` can run an SB3 model exactly like ours."""

    def __init__(self, model):
        self.model = model

    def act(self, obs, deterministic=True, generator=None):
        return self.model.predict(np.asarray(obs), deterministic=deterministic)[0]


def run_sb3(task: Task, make_model: Callable, n_envs: int, seed: int) -> dict:
    """Train ``make_model(env)`` (an SB3 algorithm) for the budget, evaluating on the schedule."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class EvalClock(BaseCallback):
        def __init__(self):
            super().__init__()
            self.excluded = 0.0
            self.next_eval = task.eval_every
            self.evals = []

        def _on_step(self):
            if self.num_timesteps >= self.next_eval:
                t0 = time.perf_counter()
                wall = t0 - t_start - self.excluded
                mean, _ = evaluate_policy(_SB3Actor(self.model), task.env_id,
                                          task.eval_episodes, eval_seed(seed, len(self.evals)))
                self.evals.append((self.num_timesteps, wall, mean))
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += task.eval_every
                self.excluded += time.perf_counter() - t0
            return True

    t_start = time.perf_counter()
    env = make_vec_env(task.env_id, n_envs=n_envs, seed=seed)
    model = make_model(env)
    clock = EvalClock()
    model.learn(total_timesteps=task.budget, callback=clock)
    t_end = time.perf_counter() - t_start - clock.excluded
    evals = clock.evals
    if evals[-1][0] != model.num_timesteps:
        mean, _ = evaluate_policy(_SB3Actor(model), task.env_id, task.eval_episodes,
                                  eval_seed(seed, len(evals)))
        evals.append((model.num_timesteps, t_end, mean))
    env.close()
    return summarise(task, evals, t_end)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(task: Task, description: str, run_ours: Callable, run_sb3: Callable, peer: str,
         peer_row: str | None = None, extra: Callable[[dict], str] | None = None,
         warm_up: Callable[[bool], None] | None = None, argv=None) -> None:
    """Parse ``--seeds``, ``--only``, ``--json``; run both sides seed by seed; print the table.

    ``peer`` names SB3's side in the ratio line (``peer_row`` in the table, default ``peer``);
    ``extra(result)`` adds to our per-seed line; ``warm_up(with_sb3)`` pays one-time imports
    before any clock starts.
    """
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", choices=["ours", "sb3"], default=None)
    parser.add_argument("--json", default=None, help="write the per-seed results here")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    torch.set_num_threads(1)
    # The first torch.optim.Adam of a process imports torch._dynamo (about 2 s here): paid once,
    # before any clock starts, so that it does not land on whichever run happens to go first.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    if warm_up is not None:
        warm_up(args.only != "ours")

    runners = {"ours": run_ours, "sb3": run_sb3}
    target = f"{task.target:g}"
    names = [args.only] if args.only else ["ours", "sb3"]
    rows = {"ours": "ours", "sb3": peer_row or peer}
    results = {name: {} for name in names}
    for seed in args.seeds:
        for name in names:
            r = runners[name](seed)
            results[name][seed] = r
            more = extra(r) if (extra is not None and name == "ours") else ""
            print(f"{name:4s} seed {seed}: steps to {target} {_fmt(r['steps_to_target'], 'd'):>6s}  "
                  f"wall to {target} {_fmt(r['wall_to_target'], '.2f'):>6s} s  "
                  f"final return {r['final_return']:.1f} at {r['final_steps']} steps  "
                  f"min after {target} {_fmt(r['min_return_after_target'], '.1f')}  "
                  f"train wall {r['train_wall_total']:.1f} s{more}", flush=True)

    load_end = os.getloadavg()
    print()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, seeds {args.seeds}")
    print("load average (1, 5, 15 min): start " + " ".join(f"{x:.2f}" for x in load_start)
          + ", end " + " ".join(f"{x:.2f}" for x in load_end))
    header = ("impl", "solved", f"median steps to {target}", f"median wall to {target} (s)",
              "median final return", "min final return",
              f"median train wall {task.budget // 1000}k (s)")
    print(" | ".join(header))
    med = {}
    for name in names:
        rs = list(results[name].values())
        med[name] = {
            "steps": _median([r["steps_to_target"] for r in rs]),
            "wall": _median([r["wall_to_target"] for r in rs]),
            "total": _median([r["train_wall_total"] for r in rs]),
        }
        solved = sum(r["steps_to_target"] is not None for r in rs)
        print(" | ".join([
            rows[name], f"{solved}/{len(rs)}", _fmt(med[name]["steps"], ".0f"),
            _fmt(med[name]["wall"], ".2f"),
            f"{statistics.median(r['final_return'] for r in rs):.1f}",
            f"{min(r['final_return'] for r in rs):.1f}", f"{med[name]['total']:.1f}",
        ]))
    if len(names) == 2 and med["sb3"]["wall"] and med["ours"]["wall"]:
        print(f"ratio ours / {peer}: wall to {target} {med['ours']['wall'] / med['sb3']['wall']:.2f}, "
              f"steps to {target} {med['ours']['steps'] / med['sb3']['steps']:.2f}, "
              f"train wall for the full budget {med['ours']['total'] / med['sb3']['total']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seeds": args.seeds, "load_start": load_start, "load_end": load_end,
                       "results": results}, fh, indent=1, default=str)
