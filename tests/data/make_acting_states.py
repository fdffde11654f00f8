"""Writes ``acting_states.npz``: real Breakout states for ``tests/actors/test_acting.py``.

    python tests/data/make_acting_states.py

4 envs (seed 0, the actors' env: DeepMind preprocessing, episodic life) played with
uniformly random actions for 3,000 agent steps each; stacks built by the actor's own
``FrameStacker``. Every 24th step of each env is kept (500 states, spread over many
lives and games), with the action taken there and its Monte-Carlo return under the
random policy: sum_k 0.99^k sign(r_{t+k}) up to the end of the life (a lost life is
terminal, as the learner sees it; a life still going at the end is cut there). The test
fits the network to those returns for a few updates, so its action gaps are those of a
network that has learned something from real data, not a random init's near-ties.
"""

from pathlib import Path

import numpy as np

from common.envs import make_vector_env
from common.stacking import FrameStacker

ENVS, STEPS, EVERY, GAMMA = 4, 3_000, 24, 0.99
BALL_X, PADDLE_X = 99, 72  # Breakout's RAM (AtariARI's annotations)


def main() -> None:
    env = make_vector_env("ALE/Breakout-v5", ENVS, seed=0)
    rng = np.random.default_rng(0)
    stacker = FrameStacker(ENVS, env.stack_size, env.frame_shape, env.frame_dtype)
    stacker.start(env.reset())
    kept, ram, actions, rewards, ends = [], [], [], [], []
    for t in range(STEPS):
        a = rng.integers(0, env.num_actions, ENVS)
        if t % EVERY == 0:
            kept.append(stacker.stacks.copy())
            ram.append([ale.getRAM()[[BALL_X, PADDLE_X]].astype(np.float64) for ale in env._ales])
        out = env.step(a)
        actions.append(a)
        rewards.append(np.sign(out.rewards))
        ended = out.terminated | out.truncated
        ends.append(ended)
        stacker.push(out.restart_frames, ~ended)
        stacker.start(out.restart_frames, ended)
    env.close()
    rewards, ends, actions = np.array(rewards), np.array(ends), np.array(actions)
    returns = np.zeros_like(rewards, dtype=np.float64)
    g = np.zeros(ENVS)
    for t in range(STEPS - 1, -1, -1):
        g = rewards[t] + GAMMA * g * ~ends[t]
        returns[t] = g
    idx = np.arange(0, STEPS, EVERY)
    states = np.concatenate([np.stack(kept)[:, i] for i in range(ENVS)])  # uint8[N, 4, 84, 84]
    out_path = Path(__file__).with_name("acting_states.npz")
    value = np.concatenate([returns[idx, i] for i in range(ENVS)])
    ball_x, paddle_x = (np.concatenate([np.array(ram)[:, i, j] for i in range(ENVS)]) for j in range(2))
    # A ball tracker's preferences (minimal action set NOOP, FIRE, RIGHT, LEFT): move
    # towards the ball, the more the farther it is; FIRE a little below NOOP.
    pull = 0.5 * np.tanh((ball_x - paddle_x - 8.0) / 12.0)
    targets = value[:, None] + np.stack([np.zeros_like(pull), np.full_like(pull, -0.05), pull, -pull], axis=1)
    np.savez_compressed(
        out_path,
        states=states,
        actions=np.concatenate([actions[idx, i] for i in range(ENVS)]),
        returns=value.astype(np.float32),
        targets=targets.astype(np.float32),
        ball_x=ball_x.astype(np.uint8),
        paddle_x=paddle_x.astype(np.uint8),
    )
    print(f"{out_path}: {len(states)} states, {out_path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
