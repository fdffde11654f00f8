"""Against peers, same machine, same game, same settings, same run.

    python -m benchmarks.peers                                   # about 5 min here
    python -m benchmarks.peers --rllib-python /path/to/python    # + RLlib's DQN, measured (about 4 min more)
    python -m benchmarks.peers --quick                           # smoke check, about a minute

raydqn against CleanRL's DQN algorithm as a plain single-process loop (written here) and
RLlib's DQN (``benchmarks._rllib_dqn``; DESIGN.md's recorded figures without RLlib), all at
Breakout, batch 32, replay ratio 8, capacity 100K, learning from 10K, learner on the CPU.
Two comparisons: at the peers' settings with raydqn's default (Ape-X) update, and at equal
work per update (issue 14): ``--preset nature`` with Adam against the loop (CleanRL's
algorithm), ``--preset nature`` as published (RMSProp) against the loop with the same
RMSProp, and raydqn at RLlib's own settings (double, no dueling, n = 1) against RLlib.
Each system's settings, how memory is counted, and the targets:
``docs/benchmark-methods.md`` (peers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.cli import SECONDS, SECONDS_OR_ZERO, parser
from benchmarks.machine import ForeignLoad, describe_machine, loadavg, machine, wait_quiet
from benchmarks.procs import MB, foreign_cores, sample_near
from benchmarks.profiling import print_spy
from benchmarks.report import final_json, table, verdict
from benchmarks.system_run import ROOT, SystemRun, memory_projection, tmp_dir, window_bounds, window_rate

RLLIB_RECORDED = {
    "agent_steps_per_s": 17.6,
    "updates_per_s": 4.4,
    "trained_samples_per_s": 4.4 * 32,
    "memory_mb": 3.9 * 1000,
    "source": "DESIGN.md (recorded on these machines, NOT measured in this run)",
}
TARGETS = {
    "samples_vs_rllib": 3.5,
    "samples_vs_loop": 0.95,
    "memory_vs_rllib": 0.25,
    "memory_full_replay_vs_rllib": 0.25,
    "memory_projected_100k_vs_rllib": 0.25,
    "free_steps_vs_rllib": 20.0,
    "free_learner_vs_standalone": 0.9,
    "equal_work_adam_vs_loop": 0.95,
    "equal_work_rmsprop_vs_loop": 0.95,
    "rllib_settings_vs_rllib": 3.5,
}

# The equal-work rows (issue 14): raydqn doing, per update, what its peer does. Batch 32, replay
# ratio 8 (one update of 32 per 4 agent steps), capacity and learning start come from the shared
# flags. The loop syncs its target every 1,000 agent steps, RLlib every 1,000 sampled env steps
# (target_network_update_freq): 250 updates at one update per 4 steps, hence the period.
LOOP_TARGET_UPDATES = 250
# Every raydqn run here, today's rows too, runs without the evaluator: ``benchmarks.learner.
# system_rate`` passes --eval-period 0 (neither the loop nor RLlib evaluates).
#: CleanRL's algorithm exactly: Nature CNN, max target, n = 1, uniform, MSE, Adam lr 1e-4 eps 1e-8, fp32.
NATURE_ADAM = [
    "--preset",
    "nature",
    "--optimizer",
    "adam",
    "--lr",
    1e-4,
    "--adam-eps",
    1e-8,
    "--loss",
    "mse",
    "--precision",
    "fp32",
    "--target-update-period",
    LOOP_TARGET_UPDATES,
]
#: --preset nature as published (centred RMSProp, Huber), fp32; the loop runs the same RMSProp.
NATURE_RMSPROP = ["--preset", "nature", "--precision", "fp32", "--target-update-period", LOOP_TARGET_UPDATES]
#: RLlib's DQN settings (benchmarks._rllib_dqn): double, no dueling, n = 1, uniform, Adam lr 1e-4,
#: Huber; the learner's precision as shipped (auto: bf16 on a CPU with native bf16).
RLLIB_SETTINGS = [
    "--double-q",
    "on",
    "--dueling",
    "off",
    "--n-step",
    1,
    "--prioritized",
    "off",
    "--optimizer",
    "adam",
    "--lr",
    1e-4,
    "--target-update-period",
    LOOP_TARGET_UPDATES,
]
#: the same update alone (benchmarks.learner.standalone_rate's LearnerConfig values)
NATURE_ADAM_UPDATE = {
    "double_q": False,
    "dueling": False,
    "loss": "mse",
    "optimizer": "adam",
    "lr": 1e-4,
    "adam_eps": 1e-8,
    "grad_clip": 0.0,
    "target_update_period": LOOP_TARGET_UPDATES,
    "precision": "fp32",
}


@contextlib.contextmanager
def extra_flags(flags: list):
    """``benchmarks.learner.system_rate`` with ``flags`` appended to learner.main's command
    line (argparse: the last occurrence wins), so the equal-work runs are measured by exactly
    the code that measures today's rows."""
    from benchmarks import learner as L

    base = L.SystemRun

    class WithFlags(base):
        def __init__(self, argv, run_dir, **kw):
            super().__init__(list(argv) + [str(f) for f in flags], run_dir, **kw)

    L.SystemRun = WithFlags
    try:
        yield
    finally:
        L.SystemRun = base


# --------------------------------------------------------------------------- the single-process loop


def vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cleanrl_qnetwork(n_actions: int):
    """CleanRL's QNetwork of dqn_atari.py: the plain Nature CNN."""
    from torch import nn

    class QNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = nn.Sequential(
                nn.Conv2d(4, 32, 8, stride=4),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, stride=2),
                nn.ReLU(),
                nn.Conv2d(64, 64, 3, stride=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(3136, 512),
                nn.ReLU(),
                nn.Linear(512, n_actions),
            )

        def forward(self, x):
            return self.network(x.float() / 255.0)

    return QNetwork()


def cleanrl_update_step(q_network, target_network, optimizer, batch, gamma: float = 0.99):
    """CleanRL's update: MSE between Q(s, a) and r + gamma * max_a' Q_target(s', a') (1 - done)."""
    import torch
    import torch.nn.functional as F

    b_obs, b_act, b_rew, b_next, b_done = batch
    with torch.no_grad():
        target_max, _ = target_network(b_next).max(dim=1)
        td_target = b_rew + gamma * target_max * (1 - b_done)
    old_val = q_network(b_obs).gather(1, b_act[:, None]).squeeze(1)
    loss = F.mse_loss(td_target, old_val)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def loop_optimizer(name: str, params):
    """CleanRL's Adam (lr 1e-4, torch's defaults otherwise), or for the equal-work RMSProp pair
    raydqn's own :class:`learner.dqn.CentredRMSProp` with the nature preset's values, built as
    raydqn builds it on a CPU (foreach), so both sides run the same optimizer code."""
    import torch

    if name == "adam":
        return torch.optim.Adam(params, lr=1e-4)
    from learner.dqn import NATURE_RMSPROP_EPS, make_optimizer

    return make_optimizer(
        "rmsprop", params, lr=0.00025, rmsprop_decay=0.95, rmsprop_eps=NATURE_RMSPROP_EPS, fused="foreach"
    )


def cleanrl_update_rate(
    batch_size: int, threads: int, seconds: float, device: str = "cpu", seed: int = 0, optimizer: str = "adam"
) -> dict:
    """updates/s of CleanRL's update alone on random batches in memory (the counterpart of
    ``benchmarks.learner.standalone_rate`` for raydqn's double + dueling update)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        dev = torch.device(device)
        q, t = cleanrl_qnetwork(4).to(dev), cleanrl_qnetwork(4).to(dev)
        opt = loop_optimizer(optimizer, q.parameters())
        rng = np.random.default_rng(seed)
        pool = [
            tuple(
                torch.from_numpy(a).to(dev)
                for a in (
                    rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8),
                    rng.integers(0, 4, batch_size).astype(np.int64),
                    rng.normal(size=batch_size).astype(np.float32),
                    rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8),
                    np.zeros(batch_size, np.float32),
                )
            )
            for _ in range(8)
        ]
        for i in range(5):
            float(cleanrl_update_step(q, t, opt, pool[i % 8]))
        n = 0
        foreign = ForeignLoad()
        t0, c0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            float(cleanrl_update_step(q, t, opt, pool[n % 8]))  # float(): waits for the device
            n += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {
            "updates_per_s": n / wall,
            "cpu_per_wall": cpu / wall,
            "foreign_cores": foreign.cores(cpu),
            "updates": n,
            "threads": threads,
            "optimizer": optimizer,
        }
    finally:
        torch.set_num_threads(before)


def cleanrl_loop(
    seconds: float,
    learning_starts: int,
    buffer_size: int,
    batch_size: int,
    train_frequency: int,
    warmup: float,
    seed: int = 1,
    total_timesteps: int = 30_000,
    device: str = "cpu",
    optimizer: str = "adam",
    target_network_frequency: int = 1000,
) -> dict:
    """CleanRL's dqn_atari.py algorithm as a plain loop; measures after learning starts.
    The stored observations stay uint8 (CleanRL's buffer keeps them so; its network divides
    by 255 after the batch reaches the device).

    Runs until ``seconds`` after learning started; the first ``warmup`` seconds of training
    are not measured. ``optimizer``: CleanRL's Adam, or "rmsprop" (:func:`loop_optimizer`);
    ``target_network_frequency``: agent steps between target syncs (CleanRL's 1,000)."""
    import ale_py
    import gymnasium as gym
    import torch
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env = AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True, noop_max=30)
    env = FrameStackObservation(env, 4)
    env.action_space.seed(seed)
    n_actions = env.action_space.n

    class ReplayBuffer:  # SB3's ReplayBuffer(optimize_memory_usage=True), as CleanRL uses it
        def __init__(self, size):
            self.size, self.pos, self.full = size, 0, False
            self.observations = np.zeros((size, 4, 84, 84), np.uint8)  # pages are touched as it fills
            self.actions = np.zeros(size, np.int64)
            self.rewards = np.zeros(size, np.float32)
            self.dones = np.zeros(size, np.float32)

        def add(self, obs, next_obs, action, reward, done):
            self.observations[self.pos] = obs
            self.observations[(self.pos + 1) % self.size] = next_obs
            self.actions[self.pos], self.rewards[self.pos], self.dones[self.pos] = action, reward, done
            self.pos = (self.pos + 1) % self.size
            self.full = self.full or self.pos == 0

        def sample(self, n):
            if self.full:  # the slot at pos holds a next observation only: never sample it
                idx = (np.random.randint(1, self.size, size=n) + self.pos) % self.size
            else:
                idx = np.random.randint(0, self.pos, size=n)
            return tuple(
                torch.from_numpy(a).to(dev)
                for a in (
                    self.observations[idx],
                    self.actions[idx],
                    self.rewards[idx],
                    self.observations[(idx + 1) % self.size],
                    self.dones[idx],
                )
            )

    dev = torch.device(device)
    q_network, target_network = cleanrl_qnetwork(n_actions).to(dev), cleanrl_qnetwork(n_actions).to(dev)
    target_network.load_state_dict(q_network.state_dict())
    optimizer_name, optimizer = optimizer, loop_optimizer(optimizer, q_network.parameters())
    rb = ReplayBuffer(buffer_size)
    gamma, start_e, end_e = 0.99, 1.0, 0.01
    exploration_steps = int(0.1 * total_timesteps)

    obs, _ = env.reset(seed=seed)
    obs = np.asarray(obs)
    step = updates = 0
    t_begin = time.perf_counter()
    t_learn = None
    mark = None  # (time, step, updates, cpu, foreign) when the measurement window opened
    while True:
        eps = max(end_e, start_e + (end_e - start_e) * step / exploration_steps)
        if random.random() < eps:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = int(q_network(torch.from_numpy(obs).to(dev).float()[None]).argmax(dim=1)[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        next_obs = np.asarray(next_obs)
        rb.add(obs, next_obs, action, np.sign(reward), terminated)  # CleanRL clips rewards (ClipRewardEnv)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            obs = np.asarray(obs)
        step += 1
        if step > learning_starts:
            if t_learn is None:
                t_learn = time.perf_counter()
                warmup_rate = step / (t_learn - t_begin)
            if step % train_frequency == 0:
                cleanrl_update_step(q_network, target_network, optimizer, rb.sample(batch_size), gamma)
                updates += 1
            if step % target_network_frequency == 0:
                target_network.load_state_dict(q_network.state_dict())
            now = time.perf_counter()
            if mark is None and now - t_learn >= warmup:
                mark = (now, step, updates, time.process_time(), ForeignLoad())
            if now - t_learn >= seconds:
                break
    t0, s0, u0, c0, foreign = mark
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    env.close()
    return {
        "agent_steps_per_s": (step - s0) / wall,
        "updates_per_s": (updates - u0) / wall,
        "trained_samples_per_s": (updates - u0) * batch_size / wall,
        "window_s": wall,
        "cpu_cores": cpu / wall,
        "foreign_cores": foreign.cores(cpu),
        "warmup_agent_steps_per_s": warmup_rate,
        "learning_started_s": t_learn - t_begin,
        "replay_size": rb.size if rb.full else rb.pos,
        "peak_rss_mb": vm_hwm_mb(),
        "torch_threads": torch.get_num_threads(),
        "optimizer": optimizer_name,
        "batch_size": batch_size,
        "train_frequency": train_frequency,
        "target_network_frequency": target_network_frequency,
    }


def run_cleanrl_child(args, optimizer: str = "adam") -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        "--cleanrl-child",
        "--cleanrl-seconds",
        str(args.warmup + args.window),
        "--warmup",
        str(args.warmup),
        "--learning-starts",
        str(args.learning_starts),
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--replay-capacity",
        str(args.replay_capacity),
        "--cleanrl-optimizer",
        optimizer,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the single-process loop failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["command"] = " ".join(cmd[1:])
    return out


# --------------------------------------------------------------------------- RLlib


def rllib_python(args) -> str | None:
    if args.rllib_python:
        return None if args.rllib_python == "off" else args.rllib_python
    try:
        import ray.rllib  # noqa: F401
        from ray.rllib.algorithms.dqn import DQNConfig  # noqa: F401

        return sys.executable
    except Exception:
        return None


def run_rllib(args, python: str, run_dir) -> dict:
    seconds = args.rllib_seconds
    argv = ["--seconds", seconds, "--learning-starts", args.learning_starts, "--replay-capacity", 100_000]
    run = SystemRun(argv, run_dir, python=python, module="benchmarks._rllib_dqn").start()
    out: dict = {"command": f"{python} " + run.command.replace("python ", "", 1), "source": "measured in this run"}
    try:
        if not run.watch(lambda r: r.first_row(lambda x: x["learner_steps"] > 0) is not None, timeout=seconds + 60):
            raise RuntimeError(f"RLlib did not start learning in time:\n{run.log_tail()}")
        t_learn = run.first_row(lambda x: x["learner_steps"] > 0)["t_local"]
        run.watch(lambda r: not r.alive(), timeout=seconds + 120)
        rows = run.rows
        t0 = t_learn + args.rllib_warmup
        t1 = rows[-1]["t_local"]
        a, b = window_bounds(rows, t0, t1)
        warm = [r for r in rows if r["t_local"] <= t_learn]
        s0, s1 = sample_near(run.samples, a), sample_near(run.samples, b)
        ups = window_rate(rows, "learner_steps", t0, t1)
        out.update(
            agent_steps_per_s=window_rate(rows, "agent_steps", t0, t1),
            updates_per_s=ups,
            trained_samples_per_s=ups * 32,
            window_s=b - a,
            warmup_agent_steps_per_s=(warm[-1]["agent_steps"] - warm[0]["agent_steps"])
            / max(warm[-1]["t_local"] - warm[0]["t_local"], 1e-9)
            if len(warm) > 1
            else None,
            foreign_cores=foreign_cores(s0, s1) if s0 and s1 else None,
            memory_peak_mb={k: v / MB for k, v in run.sampler.peak.items()},
            memory_by_kind_mb=run.sampler.peak_by_kind,
            replay_steps_end=rows[-1]["agent_steps"],
            # fitted from the first rows on: the warm-up fills 10K steps, enough to fit
            memory_projection=memory_projection(
                run, "agent_steps", ("driver",), rows[0]["t_local"] + 5, 100_000, size_cap=100_000
            ),
        )
    finally:
        out["exit_code"] = run.stop()
    return out


# --------------------------------------------------------------------------- equal work


def equal_work_report(
    args, eq: dict, loop: dict, rllib: dict, py, eq_alone: list, eq_clean: list, ratios: dict, m: dict
) -> list:
    """Prints the equal-work table (issue 14) and its targets; adds the ratios to ``ratios``."""

    def cpu(r):  # raydqn: learner (driver) / actors / replay cores in the window; the loop: its one process
        c = r.get("cpu_cores")
        return (
            f"{c['learner (driver)']:.2f}/{c['actors']:.2f}/{c['replay']:.2f}"
            if isinstance(c, dict)
            else (f"{c:.2f}" if c is not None else "-")
        )

    rows = []
    pairs = [
        (
            "adam",
            "Adam, fp32 (CleanRL's algorithm)",
            loop,
            "single-process loop, Adam",
            "raydqn " + " ".join(map(str, NATURE_ADAM)),
            "equal_work_adam_vs_loop",
        )
    ]
    if "rmsprop" in eq:
        pairs.append(
            (
                "rmsprop",
                "centred RMSProp, fp32 (--preset nature)",
                eq["rmsprop"]["loop"],
                "single-process loop, same RMSProp",
                "raydqn " + " ".join(map(str, NATURE_RMSPROP)),
                "equal_work_rmsprop_vs_loop",
            )
        )
    pairs.append(
        (
            "rllib_settings",
            "RLlib's: double, no dueling, n=1, Adam",
            rllib,
            "RLlib 2.60 DQN " + ("(measured)" if py else "(RECORDED in DESIGN.md, not measured)"),
            "raydqn " + " ".join(map(str, RLLIB_SETTINGS)) + " (precision auto)",
            "rllib_settings_vs_rllib",
        )
    )
    tgt = []
    for key, settings, peer, peer_name, ours_name, ratio_key in pairs:
        ours = eq[key]
        ratio = ours["trained_samples_per_s"] / peer["trained_samples_per_s"]
        ratios[ratio_key] = ratio
        rows.append(
            [
                settings,
                peer_name,
                peer["agent_steps_per_s"],
                peer["updates_per_s"],
                peer["trained_samples_per_s"],
                cpu(peer),
                peer.get("foreign_cores"),
                None,
                "",
            ]
        )
        rows.append(
            [
                "",
                ours_name,
                ours["agent_steps_per_s"],
                ours["updates_per_s"],
                ours["trained_samples_per_s"],
                cpu(ours),
                ours["foreign_cores"],
                ratio,
                f">= {TARGETS[ratio_key]:g} {verdict(ratio, TARGETS[ratio_key])}",
            ]
        )
        tgt.append(
            [
                f"equal work, {settings}: raydqn / peer trained samples/s",
                ratio,
                f">= {TARGETS[ratio_key]:g}",
                verdict(ratio, TARGETS[ratio_key]),
            ]
        )
    a = sum(r["updates_per_s"] for r in eq_alone) / len(eq_alone)
    c = sum(r["updates_per_s"] for r in eq_clean) / len(eq_clean)
    rows.append(
        [
            f"the Adam pair's update alone, {args.threads} thread(s)",
            "CleanRL's update",
            None,
            c,
            c * args.batch_size,
            f"{sum(r['cpu_per_wall'] for r in eq_clean) / len(eq_clean):.2f}",
            sum(r["foreign_cores"] for r in eq_clean) / len(eq_clean),
            None,
            "",
        ]
    )
    rows.append(
        [
            "",
            "raydqn's DQNLearner.update, same settings",
            None,
            a,
            a * args.batch_size,
            f"{sum(r['cpu_per_wall'] for r in eq_alone) / len(eq_alone):.2f}",
            sum(r["foreign_cores"] for r in eq_alone) / len(eq_alone),
            a / c,
            "(update cost)",
        ]
    )
    ratios["equal_work_update_alone_vs_cleanrl"] = a / c
    ratios["equal_work_adam_vs_own_update"] = eq["adam"]["updates_per_s"] / a
    print()
    print(
        table(
            [
                "settings",
                "system",
                "agent steps/s",
                "updates/s",
                "trained samples/s",
                "CPU cores",
                "foreign CPU",
                "ratio",
                "target",
            ],
            rows,
            title=f"Equal work per update (Breakout, batch {args.batch_size}, replay ratio {args.replay_ratio:g} = one update per "
            f"{args.batch_size / max(args.replay_ratio, 1e-9):g} agent steps, capacity {args.replay_capacity:,}, learning from {args.learning_starts:,}; "
            f"raydqn {args.num_actors} actors x {args.envs_per_actor} env, {args.threads} learner thread(s))",
        )
    )
    print(
        "CPU cores: raydqn learner (driver)/actors/replay over the window; the loop its one process; the updates alone "
        "their own. 'foreign CPU': cores other work on this shared machine used meanwhile. ratio: raydqn's trained "
        f"samples/s over the peer's in the row above. Machine: {m['cores']} cores, {m['cpu']}; load average now {loadavg()}."
    )
    print(
        f"raydqn nature/Adam in the system does {ratios['equal_work_adam_vs_own_update']:.2f}x its update alone "
        f"({a:.1f}/s at {args.threads} thread(s)); the loop does {loop['updates_per_s'] / c:.2f}x CleanRL's update alone "
        f"at {args.threads} thread(s) (the loop itself runs torch's default {loop.get('torch_threads')} threads)."
    )
    print()
    print(table(["target", "ratio", "target", "verdict"], tgt, title="Equal-work targets (issue 14)"))
    return rows


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    from benchmarks import learner as L

    p = parser(__doc__.splitlines()[0])
    L.add_system_flags(p, batch_size=32, replay_ratio=8.0)
    p.set_defaults(envs_per_actor=1, warmup=10.0, window=40.0, standalone_seconds=10.0)
    p.add_argument(
        "--rllib-python",
        default=None,
        help="an interpreter with ray[rllib] 2.60 (and this project) "
        "to run RLlib's DQN with; 'off' to use DESIGN.md's recorded figures (default: this one if it has RLlib)",
    )
    p.add_argument(
        "--rllib-seconds", type=SECONDS, default=240.0, help="RLlib's whole run, start-up and warm-up included"
    )
    p.add_argument("--rllib-warmup", type=SECONDS_OR_ZERO, default=10.0, help="seconds of RLlib training discarded")
    p.add_argument("--skip-free-running", action="store_true")
    p.add_argument("--cleanrl-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cleanrl-seconds", type=SECONDS, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--cleanrl-optimizer", choices=("adam", "rmsprop"), default="adam", help=argparse.SUPPRESS)
    p.add_argument(
        "--skip-equal-work",
        action="store_true",
        help="skip the equal-work rows (raydqn --preset nature against the loop, raydqn at RLlib's settings)",
    )
    p.add_argument(
        "--skip-rmsprop",
        action="store_true",
        help="skip the equal-work RMSProp pair (--preset nature as "
        "published against the loop with the same centred RMSProp)",
    )
    args = p.parse_args(argv)
    L.check_system_flags(p, args)
    if not args.skip_equal_work:
        from benchmarks.cli import check_learner_flags

        for extra in (NATURE_ADAM, NATURE_RMSPROP, RLLIB_SETTINGS):
            check_learner_flags(p, ["--batch-size", args.batch_size, "--replay-ratio", args.replay_ratio] + extra)
    if args.rllib_python not in (None, "off") and shutil.which(args.rllib_python) is None:
        p.error(f"--rllib-python {args.rllib_python}: no such executable (name an interpreter, or 'off')")
    if args.cleanrl_child:
        out = cleanrl_loop(
            args.cleanrl_seconds,
            args.learning_starts,
            args.replay_capacity,
            args.batch_size,
            4,
            args.warmup,
            device=args.device,
            optimizer=args.cleanrl_optimizer,
        )
        print(json.dumps(out), flush=True)
        return 0
    L.apply_quick(args)
    if args.quick:
        args.rllib_seconds = min(args.rllib_seconds, 90.0)
        args.rllib_warmup = min(args.rllib_warmup, 5.0)
    out_dir = Path(args.out_dir) if args.out_dir else tmp_dir("bench-peers-")
    m = machine()
    print(describe_machine(m), flush=True)
    if args.quick:
        print("QUICK MODE: short windows and learning from 2,000 (not the settings of the targets)", flush=True)
    print(
        f"Breakout, batch {args.batch_size}, replay ratio {args.replay_ratio:g}, capacity {args.replay_capacity:,}, "
        f"learning from {args.learning_starts:,}; raydqn {args.num_actors} actors x {args.envs_per_actor} envs, "
        f"{args.threads} learner threads, Ray worker niceness {L.niceness_text(args)}, pin-cpus {args.pin_cpus}; run dirs under {out_dir}",
        flush=True,
    )

    wait_quiet(timeout=args.quiet_wait)
    import torch

    loop_threads = torch.get_num_threads()  # the single-process loop has the machine to itself: torch's default
    alone1 = L.standalone_rate(args.batch_size, args.threads, args.standalone_seconds, args.device, args.seed)
    print(f"standalone raydqn update loop (before): {alone1['updates_per_s']:.1f} updates/s", flush=True)
    clean1 = cleanrl_update_rate(args.batch_size, loop_threads, args.standalone_seconds, args.device, args.seed)
    print(f"standalone CleanRL update loop (before): {clean1['updates_per_s']:.1f} updates/s", flush=True)
    equal = not args.skip_equal_work
    eq_alone, eq_clean = [], []  # the equal-work update alone, both at raydqn's learner threads (before, after)

    def equal_work_updates(seed):
        eq_alone.append(
            L.standalone_rate(
                args.batch_size, args.threads, args.standalone_seconds, args.device, seed, fast_paths=NATURE_ADAM_UPDATE
            )
        )
        eq_clean.append(cleanrl_update_rate(args.batch_size, args.threads, args.standalone_seconds, args.device, seed))
        print(
            f"equal-work update alone, {args.threads} thread(s): raydqn nature/Adam/fp32 {eq_alone[-1]['updates_per_s']:.1f}, "
            f"CleanRL {eq_clean[-1]['updates_per_s']:.1f} updates/s",
            flush=True,
        )

    if equal:
        equal_work_updates(args.seed)
    wait_quiet(timeout=args.quiet_wait)
    loop = run_cleanrl_child(args)
    print(
        f"single-process loop: {loop['agent_steps_per_s']:.1f} agent steps/s, {loop['updates_per_s']:.1f} updates/s, "
        f"peak RSS {loop['peak_rss_mb']:,.0f} MB (replay {loop['replay_size']:,})",
        flush=True,
    )
    wait_quiet(timeout=args.quiet_wait)
    ray8 = L.system_rate(args, out_dir / "raydqn-r8", args.profile)
    print(
        f"raydqn, replay ratio {args.replay_ratio:g}: {ray8['agent_steps_per_s']:.1f} agent steps/s, "
        f"{ray8['updates_per_s']:.1f} updates/s",
        flush=True,
    )
    eq = {}  # name -> (raydqn run, its peer's figures or None until RLlib runs)
    if equal:
        wait_quiet(timeout=args.quiet_wait)
        with extra_flags(NATURE_ADAM):
            eq["adam"] = L.system_rate(args, out_dir / "raydqn-nature-adam", False)
        print(
            f"raydqn --preset nature, Adam, fp32: {eq['adam']['agent_steps_per_s']:.1f} agent steps/s, "
            f"{eq['adam']['updates_per_s']:.1f} updates/s",
            flush=True,
        )
        if not args.skip_rmsprop:
            wait_quiet(timeout=args.quiet_wait)
            loop_rms = run_cleanrl_child(args, "rmsprop")
            print(
                f"single-process loop, RMSProp: {loop_rms['agent_steps_per_s']:.1f} agent steps/s, "
                f"{loop_rms['updates_per_s']:.1f} updates/s",
                flush=True,
            )
            wait_quiet(timeout=args.quiet_wait)
            with extra_flags(NATURE_RMSPROP):
                eq["rmsprop"] = L.system_rate(args, out_dir / "raydqn-nature-rmsprop", False)
            eq["rmsprop"]["loop"] = loop_rms
            print(
                f"raydqn --preset nature (RMSProp), fp32: {eq['rmsprop']['agent_steps_per_s']:.1f} agent steps/s, "
                f"{eq['rmsprop']['updates_per_s']:.1f} updates/s",
                flush=True,
            )
        wait_quiet(timeout=args.quiet_wait)
        with extra_flags(RLLIB_SETTINGS):
            eq["rllib_settings"] = L.system_rate(args, out_dir / "raydqn-rllib-settings", False)
        print(
            f"raydqn at RLlib's settings: {eq['rllib_settings']['agent_steps_per_s']:.1f} agent steps/s, "
            f"{eq['rllib_settings']['updates_per_s']:.1f} updates/s",
            flush=True,
        )
    free = None
    if not args.skip_free_running:
        wait_quiet(timeout=args.quiet_wait)
        free = L.system_rate(args, out_dir / "raydqn-free", False, replay_ratio=0.0)
        print(
            f"raydqn, free-running: {free['agent_steps_per_s']:,.0f} agent steps/s, {free['updates_per_s']:.1f} updates/s",
            flush=True,
        )
    wait_quiet(timeout=args.quiet_wait)
    alone2 = L.standalone_rate(args.batch_size, args.threads, args.standalone_seconds, args.device, args.seed + 1)
    print(f"standalone raydqn update loop (after): {alone2['updates_per_s']:.1f} updates/s", flush=True)
    clean2 = cleanrl_update_rate(args.batch_size, loop_threads, args.standalone_seconds, args.device, args.seed + 1)
    print(f"standalone CleanRL update loop (after): {clean2['updates_per_s']:.1f} updates/s", flush=True)
    if equal:
        equal_work_updates(args.seed + 1)
    alone = (alone1["updates_per_s"] + alone2["updates_per_s"]) / 2
    clean_alone = (clean1["updates_per_s"] + clean2["updates_per_s"]) / 2
    py = rllib_python(args)
    if py:
        wait_quiet(timeout=args.quiet_wait)
        rllib = run_rllib(args, py, out_dir / "rllib")
        rllib["memory_mb"] = rllib["memory_peak_mb"]["ours_rss"]
        print(
            f"RLlib DQN: {rllib['agent_steps_per_s']:.1f} agent steps/s, {rllib['updates_per_s']:.1f} updates/s",
            flush=True,
        )
    else:
        rllib = dict(RLLIB_RECORDED)

    def mem(r):
        return r["memory_peak_mb"]

    rows = [
        [
            "single-process loop (CleanRL's algorithm)",
            loop["agent_steps_per_s"],
            loop["updates_per_s"],
            loop["trained_samples_per_s"],
            loop["peak_rss_mb"],
            None,
            None,
            loop["replay_size"],
            loop["foreign_cores"],
        ],
        [
            f"raydqn, ratio {args.replay_ratio:g}, {args.num_actors}x{args.envs_per_actor} envs",
            ray8["agent_steps_per_s"],
            ray8["updates_per_s"],
            ray8["trained_samples_per_s"],
            mem(ray8)["ours_rss"],
            mem(ray8)["ours_pss"],
            mem(ray8)["ray_system_rss"],
            ray8.get("replay_size_end"),
            ray8["foreign_cores"],
        ],
    ]
    if free:
        rows.append(
            [
                f"raydqn, free-running, {args.num_actors}x{args.envs_per_actor} envs",
                free["agent_steps_per_s"],
                free["updates_per_s"],
                free["trained_samples_per_s"],
                mem(free)["ours_rss"],
                mem(free)["ours_pss"],
                mem(free)["ray_system_rss"],
                free.get("replay_size_end"),
                free["foreign_cores"],
            ]
        )
    if py:
        rows.append(
            [
                "RLlib 2.60 DQN (measured)",
                rllib["agent_steps_per_s"],
                rllib["updates_per_s"],
                rllib["trained_samples_per_s"],
                mem(rllib)["ours_rss"],
                mem(rllib)["ours_pss"],
                mem(rllib)["ray_system_rss"],
                rllib.get("replay_steps_end"),
                rllib.get("foreign_cores"),
            ]
        )
    else:
        rows.append(
            [
                "RLlib 2.60 DQN (RECORDED in DESIGN.md)",
                rllib["agent_steps_per_s"],
                rllib["updates_per_s"],
                rllib["trained_samples_per_s"],
                rllib["memory_mb"],
                None,
                None,
                None,
                None,
            ]
        )
    rows.append(
        [
            "raydqn update alone (double, dueling; mean before/after)",
            None,
            alone,
            alone * args.batch_size,
            None,
            None,
            None,
            None,
            (alone1["foreign_cores"] + alone2["foreign_cores"]) / 2,
        ]
    )
    rows.append(
        [
            "CleanRL update alone (plain CNN, 1 target pass)",
            None,
            clean_alone,
            clean_alone * args.batch_size,
            None,
            None,
            None,
            None,
            (clean1["foreign_cores"] + clean2["foreign_cores"]) / 2,
        ]
    )
    print()
    print(
        table(
            [
                "system",
                "agent steps/s",
                "updates/s",
                "samples/s",
                "RSS MB (ours)",
                "PSS MB (ours)",
                "Ray daemons RSS MB",
                "replay size",
                "foreign CPU",
            ],
            rows,
            title=f"Peers on Breakout (batch {args.batch_size}, capacity {args.replay_capacity:,}, "
            f"learning from {args.learning_starts:,})",
        )
    )
    print(
        "memory: peak over the run; 'ours' = driver + Ray worker processes (raydqn: learner, replay, actors; RLlib: "
        "driver with learner and replay, env runner); Ray's daemons apart. The loop: its peak RSS (VmHWM). "
        "'foreign CPU': cores used by other work on this shared machine during the window."
    )
    for name, r in (("raydqn ratio run", ray8), ("raydqn free run", free), ("RLlib", rllib if py else None)):
        if r and "memory_by_kind_mb" in r:
            print(
                f"  {name}, RSS by process kind at the run's peak: "
                + ", ".join(
                    f"{k} {v['rss_mb']:,.0f} MB ({v['count']} proc, PSS {v['pss_mb']:,.0f})"
                    for k, v in r["memory_by_kind_mb"].items()
                )
            )
    for name, r in (("raydqn ratio run", ray8), ("RLlib", rllib if py else None)):
        pj = (r or {}).get("memory_projection", {})
        if "projected_ours_rss_mb" in pj:
            print(
                f"  {name}: RSS grows {pj['mb_per_1k_items']:.1f} MB per 1K transitions stored (fitted over "
                f"{pj['fitted_from_items']:,.0f}..{pj['fitted_to_items']:,.0f}); projected at a full {pj['capacity']:,} replay: "
                f"{pj['projected_ours_rss_mb']:,.0f} MB (an estimate)"
            )
        elif r and pj:
            print(f"  {name}: no projection ({pj.get('error')})")
    if not py:
        print(
            "RLlib: NOT measured in this run (ray.rllib is not importable here); its row holds DESIGN.md's recorded figures "
            "(17.6 agent steps/s, 4.4 updates/s, 3.9 GB). Run with --rllib-python PATH to measure it."
        )

    ray_mem = mem(ray8)["ours_rss"]
    ratios = {
        "samples_vs_rllib": ray8["trained_samples_per_s"] / rllib["trained_samples_per_s"],
        "samples_vs_loop": ray8["trained_samples_per_s"] / loop["trained_samples_per_s"],
        "memory_vs_rllib": ray_mem / rllib["memory_mb"],
    }
    if free:
        free_mem = mem(free)["ours_rss"]
        ratios["memory_full_replay_vs_rllib"] = free_mem / rllib["memory_mb"]
        ratios["free_steps_vs_rllib"] = free["agent_steps_per_s"] / rllib["agent_steps_per_s"]
        ratios["free_learner_vs_standalone"] = free["updates_per_s"] / alone
    tgt = [
        ["trained samples/s vs RLlib", ratios["samples_vs_rllib"], ">= 3.5", verdict(ratios["samples_vs_rllib"], 3.5)],
        [
            "trained samples/s vs single-process loop",
            ratios["samples_vs_loop"],
            ">= 0.95",
            verdict(ratios["samples_vs_loop"], 0.95),
        ],
        [
            f"memory (RSS, ratio run, replay {ray8.get('replay_size_end') or 0:,.0f}) vs RLlib",
            ratios["memory_vs_rllib"],
            "<= 0.25",
            verdict(ratios["memory_vs_rllib"], 0.25, higher_is_better=False),
        ],
    ]
    proj_r = ray8.get("memory_projection", {}).get("projected_ours_rss_mb")
    proj_l = rllib.get("memory_projection", {}).get("projected_ours_rss_mb") if py else None
    if proj_r and proj_l:
        ratios["memory_projected_100k_vs_rllib"] = proj_r / proj_l
        tgt.append(
            [
                "memory (RSS) projected to a full 100K replay, both (estimate)",
                ratios["memory_projected_100k_vs_rllib"],
                "<= 0.25",
                verdict(ratios["memory_projected_100k_vs_rllib"], 0.25, higher_is_better=False),
            ]
        )
    if free:
        tgt += [
            [
                f"memory (RSS, free run, replay {free.get('replay_size_end') or 0:,.0f}) vs RLlib",
                ratios["memory_full_replay_vs_rllib"],
                "<= 0.25",
                verdict(ratios["memory_full_replay_vs_rllib"], 0.25, higher_is_better=False),
            ],
            [
                "free-running agent steps/s vs RLlib",
                ratios["free_steps_vs_rllib"],
                ">= 20",
                verdict(ratios["free_steps_vs_rllib"], 20),
            ],
            [
                "free-running learner vs standalone",
                ratios["free_learner_vs_standalone"],
                ">= 0.9",
                verdict(ratios["free_learner_vs_standalone"], 0.9),
            ],
        ]
    print()
    print(
        f"update cost: raydqn's update (double DQN: 3 forward passes, dueling head, Huber, clipping) runs "
        f"{alone:.1f}/s alone, CleanRL's (2 forward passes, plain head, MSE) {clean_alone:.1f}/s: "
        f"{clean_alone / alone:.2f}x more work per update for raydqn. Each system against its own update alone: "
        f"raydqn {ray8['updates_per_s'] / alone:.2f}, single-process loop {loop['updates_per_s'] / clean_alone:.2f}."
    )
    ratios["raydqn_vs_own_update"] = ray8["updates_per_s"] / alone
    ratios["loop_vs_own_update"] = loop["updates_per_s"] / clean_alone
    print()
    print(
        table(
            ["target", "ratio", "target", "verdict"],
            tgt,
            title="Targets (RLlib " + ("measured in this run" if py else "= DESIGN.md's recorded figures") + ")",
        )
    )
    equal_rows = equal_work_report(args, eq, loop, rllib, py, eq_alone, eq_clean, ratios, m) if equal else None
    if args.profile and "py_spy" in ray8:
        for name, title in (
            ("driver", "raydqn learner driver's _loop, py-spy"),
            ("replay", "raydqn replay, py-spy (idle included)"),
            ("actor", "raydqn actor-0's stepping thread, py-spy"),
        ):
            print()
            print_spy(title, ray8["py_spy"].get(name, {}))
    print(f"load average at the end: {loadavg()}")
    final_json(
        {
            "benchmark": "peers",
            "machine": m,
            "settings": {
                "batch_size": args.batch_size,
                "replay_ratio": args.replay_ratio,
                "replay_capacity": args.replay_capacity,
                "learning_starts": args.learning_starts,
                "num_actors": args.num_actors,
                "envs_per_actor": args.envs_per_actor,
                "threads": args.threads,
            },
            "single_process_loop": loop,
            "raydqn": ray8,
            "raydqn_free_running": free,
            "rllib": rllib,
            "standalone_before": alone1,
            "standalone_after": alone2,
            "standalone_updates_per_s": alone,
            "cleanrl_update_before": clean1,
            "cleanrl_update_after": clean2,
            "cleanrl_update_per_s": clean_alone,
            "equal_work": {
                "raydqn": eq,
                "flags": {
                    "nature_adam": NATURE_ADAM,
                    "nature_rmsprop": NATURE_RMSPROP,
                    "rllib_settings": RLLIB_SETTINGS,
                },
                "update_alone_raydqn": eq_alone,
                "update_alone_cleanrl": eq_clean,
                "rows": equal_rows,
            }
            if equal
            else None,
            "ratios": ratios,
            "targets": TARGETS,
            "met": {
                k: (v <= TARGETS[k] if k.startswith("memory") else v >= TARGETS[k])
                for k, v in ratios.items()
                if k in TARGETS
            },
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
