"""CleanRL's DQN for Atari as a plain single-process loop: the peer ``benchmarks.peers`` runs.

This reproduces the algorithm of CleanRL's ``cleanrl/dqn_atari.py``
(https://github.com/vwxyzjn/cleanrl, the script the recorded CleanRL figure of
``docs/peers.md`` was taken with): one gymnasium ``ALE/Breakout-v5`` in
``AtariPreprocessing`` + ``FrameStackObservation(4)``; SB3's ``ReplayBuffer`` with
``optimize_memory_usage`` (uint8 stacks, the next observation in the next slot); the plain
Nature-CNN ``QNetwork``; Adam lr 1e-4; an MSE TD loss against a max-target network synced
every 1,000 agent steps; epsilon from 1 to 0.01 over 10 % of 30,000 steps; clipped rewards.
It is written here rather than imported so that it runs in this project's environment
(CleanRL is a set of scripts, not a library) and so that the loop can be timed after
learning starts. ``cleanrl_update_rate`` times its update alone, the counterpart of
``benchmarks.learner.standalone_rate``. Method: ``docs/benchmark-methods.md`` (peers).
"""

from __future__ import annotations

import random
import time

import numpy as np

from benchmarks.machine import ForeignLoad

GAMMA, START_E, END_E = 0.99, 1.0, 0.01


def vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
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


def cleanrl_update_step(q_network, target_network, optimizer, batch, gamma: float = GAMMA):
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
    from learner.optimizers import NATURE_RMSPROP_EPS, make_optimizer

    return make_optimizer(
        "rmsprop", params, lr=0.00025, rmsprop_decay=0.95, rmsprop_eps=NATURE_RMSPROP_EPS, fused="foreach"
    )


def random_batches(batch_size: int, device, seed: int, count: int = 8) -> list[tuple]:
    """``count`` batches of random Atari stacks, actions and rewards, already on ``device``."""
    import torch

    rng = np.random.default_rng(seed)
    return [
        tuple(
            torch.from_numpy(a).to(device)
            for a in (
                rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8),
                rng.integers(0, 4, batch_size).astype(np.int64),
                rng.normal(size=batch_size).astype(np.float32),
                rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8),
                np.zeros(batch_size, np.float32),
            )
        )
        for _ in range(count)
    ]


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
        pool = random_batches(batch_size, dev, seed)
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


class ReplayBuffer:
    """SB3's ReplayBuffer(optimize_memory_usage=True), as CleanRL uses it: one uint8 stack per
    slot, the next observation in the next slot (whose pages are touched as it fills)."""

    def __init__(self, size: int, device):
        self.size, self.pos, self.full, self.device = size, 0, False, device
        self.observations = np.zeros((size, 4, 84, 84), np.uint8)
        self.actions = np.zeros(size, np.int64)
        self.rewards = np.zeros(size, np.float32)
        self.dones = np.zeros(size, np.float32)

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(self, obs, next_obs, action, reward, done) -> None:
        self.observations[self.pos] = obs
        self.observations[(self.pos + 1) % self.size] = next_obs
        self.actions[self.pos], self.rewards[self.pos], self.dones[self.pos] = action, reward, done
        self.pos = (self.pos + 1) % self.size
        self.full = self.full or self.pos == 0

    def sample(self, n: int) -> tuple:
        import torch

        if self.full:  # the slot at pos holds a next observation only: never sample it
            idx = (np.random.randint(1, self.size, size=n) + self.pos) % self.size
        else:
            idx = np.random.randint(0, self.pos, size=n)
        return tuple(
            torch.from_numpy(a).to(self.device)
            for a in (
                self.observations[idx],
                self.actions[idx],
                self.rewards[idx],
                self.observations[(idx + 1) % self.size],
                self.dones[idx],
            )
        )


def make_env(seed: int):
    """CleanRL's Breakout: ALE v5 without sticky actions, Atari preprocessing, 4 frames stacked."""
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env = AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True, noop_max=30)
    env = FrameStackObservation(env, 4)
    env.action_space.seed(seed)
    return env


class _Clock:
    """When learning started and when the measurement window opened, for :func:`cleanrl_loop`."""

    def __init__(self, warmup: float):
        self.warmup, self.t_begin, self.t_learn, self.mark = warmup, time.perf_counter(), None, None

    def start(self, step: int) -> None:
        """Learning starts now (at its first step; later calls change nothing)."""
        if self.t_learn is None:
            self.t_learn = time.perf_counter()
            self.warmup_rate = step / (self.t_learn - self.t_begin)

    def learning(self, step: int, updates: int) -> float:
        """Seconds since learning started; opens the window (time, step, updates, CPU, foreign
        load) once ``warmup`` has passed."""
        now = time.perf_counter()
        if self.mark is None and now - self.t_learn >= self.warmup:
            self.mark = (now, step, updates, time.process_time(), ForeignLoad())
        return now - self.t_learn


def _setup(seed: int, device: str, optimizer: str) -> tuple:
    """Seeds, the env, the device, the Q and target networks (equal) and the optimizer."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    env, dev = make_env(seed), torch.device(device)
    q_network = cleanrl_qnetwork(env.action_space.n).to(dev)
    target_network = cleanrl_qnetwork(env.action_space.n).to(dev)
    target_network.load_state_dict(q_network.state_dict())
    return env, dev, q_network, target_network, loop_optimizer(optimizer, q_network.parameters())


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
    import torch

    env, dev, q_network, target_network, opt = _setup(seed, device, optimizer)
    rb = ReplayBuffer(buffer_size, dev)
    exploration_steps = int(0.1 * total_timesteps)
    obs = np.asarray(env.reset(seed=seed)[0])
    step = updates = 0
    clock = _Clock(warmup)
    while True:
        eps = max(END_E, START_E + (END_E - START_E) * step / exploration_steps)
        if random.random() < eps:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = int(q_network(torch.from_numpy(obs).to(dev).float()[None]).argmax(dim=1)[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        next_obs = np.asarray(next_obs)
        rb.add(obs, next_obs, action, np.sign(reward), terminated)  # CleanRL clips rewards (ClipRewardEnv)
        obs = next_obs if not (terminated or truncated) else np.asarray(env.reset()[0])
        step += 1
        if step > learning_starts:
            clock.start(step)
            if step % train_frequency == 0:
                cleanrl_update_step(q_network, target_network, opt, rb.sample(batch_size), GAMMA)
                updates += 1
            if step % target_network_frequency == 0:
                target_network.load_state_dict(q_network.state_dict())
            if clock.learning(step, updates) >= seconds:
                break
    result = _loop_result(
        clock, step, updates, len(rb), batch_size, train_frequency, target_network_frequency, optimizer
    )
    env.close()
    return result


def _loop_result(
    clock: _Clock, step, updates, replay_size, batch_size, train_frequency, target_network_frequency, optimizer
) -> dict:
    import torch

    t0, s0, u0, c0, foreign = clock.mark
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "agent_steps_per_s": (step - s0) / wall,
        "updates_per_s": (updates - u0) / wall,
        "trained_samples_per_s": (updates - u0) * batch_size / wall,
        "window_s": wall,
        "cpu_cores": cpu / wall,
        "foreign_cores": foreign.cores(cpu),
        "warmup_agent_steps_per_s": clock.warmup_rate,
        "learning_started_s": clock.t_learn - clock.t_begin,
        "replay_size": replay_size,
        "peak_rss_mb": vm_hwm_mb(),
        "torch_threads": torch.get_num_threads(),
        "optimizer": optimizer,
        "batch_size": batch_size,
        "train_frequency": train_frequency,
        "target_network_frequency": target_network_frequency,
    }
