import numpy as np
import torch
from torch import nn

from actors.actor import ActorCore
from common.messages import NO_ACTION, decode_step_batch, encode_step_batch
from tests.support.fakes import CountingEnv


class Spy(nn.Module):
    """A 'Q-network' that prefers action 2 and remembers every stack it was shown."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, obs):
        self.seen.append(obs.clone())
        q = torch.zeros(len(obs), 3)
        q[:, 2] = 1.0
        return q


def make_core(env, eps=0.0, spb=1000, **kw):
    return ActorCore(
        env,
        Spy(),
        lambda s: np.full(env.num_envs, eps),
        [10 + i for i in range(env.num_envs)],
        steps_per_batch=spb,
        frames_per_step=4,
        clip_rewards=True,
        seed=0,
        **kw,
    )


def records(batch):
    b = decode_step_batch(encode_step_batch(batch))
    return [
        (int(f[0, 0]), int(a), float(r), bool(t), bool(u), bool(s))
        for f, a, r, t, u, s in zip(b.frames(), b.actions, b.rewards, b.terminated, b.truncated, b.first)
    ]


def test_records_follow_the_stream_grammar_across_an_episode_end():
    env = CountingEnv([3, 10])
    core = make_core(env)
    for _ in range(5):
        core.step()
    batches = {b.stream_id: b for b in core.flush()}
    # (frame value, action, clipped reward, terminated, truncated, first)
    assert records(batches[10]) == [
        (0, 2, 1.0, False, False, True),
        (1, 2, 1.0, False, False, False),
        (2, 2, 1.0, True, False, False),
        (3, NO_ACTION, 0.0, False, False, False),  # the final frame
        (0, 2, 1.0, False, False, True),  # the next game
        (1, 2, 1.0, False, False, False),
    ]
    assert [r[0] for r in records(batches[11])] == [100, 101, 102, 103, 104]
    assert core.agent_steps == 10 and core.env_frames == 40


def test_stacks_acted_on_restart_with_each_segment():
    env = CountingEnv([3, 10])
    spy = Spy()
    core = ActorCore(env, spy, lambda s: np.zeros(2), [0, 1], 1000, 4, True, 0)
    for _ in range(5):
        core.step()
    env0 = [s[0, :, 0, 0].tolist() for s in spy.seen]
    assert env0 == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 0, 1]]
    env1 = [s[1, :, 0, 0].tolist() for s in spy.seen]
    assert env1[-1] == [101, 102, 103, 104]


def test_truncation_is_not_terminal_and_scores_are_raw():
    env = CountingEnv([2], truncate=True)
    core = make_core(env)
    core.step(), core.step()
    recs = records(core.flush()[0])
    assert recs[1][3:5] == (False, True)  # truncated, not terminated
    assert recs[2][1] == NO_ACTION
    [ep] = core.drain_episodes()
    assert ep.score == 4.0 and ep.agent_steps == 2 and ep.stream_id == 10  # raw 2.0 per step


def test_life_loss_ends_a_segment_but_not_the_game():
    env = CountingEnv([5], lose_life_at=2)
    core = make_core(env)
    for _ in range(5):
        core.step()
    recs = records(core.flush()[0])
    assert recs[1] == (1, 2, 1.0, True, False, False)  # life lost: terminal for learning
    assert recs[2] == (2, NO_ACTION, 0.0, False, False, False)
    assert recs[3] == (2, 2, 1.0, False, False, True)  # the game goes on from the same frame
    [ep] = core.drain_episodes()
    assert ep.score == 10.0  # the whole game, all lives


def test_batches_are_cut_at_steps_per_batch_and_carry_the_policy_version():
    env = CountingEnv([100, 100])
    core = make_core(env, spb=4)
    core.set_weights({}, 7)
    out = []
    for _ in range(9):
        out += core.step()
    assert [len(b) for b in out] == [4, 4, 4, 4]
    assert all((b.policy_version == 7).all() for b in out)
    assert len(core.flush()) == 2  # one leftover record per stream


def test_epsilon_one_explores_uniformly_and_zero_is_greedy():
    env = CountingEnv([1000] * 4)
    core = make_core(env, eps=1.0)
    for _ in range(300):
        core.step()
    acts = np.concatenate(env.actions_seen)
    counts = np.bincount(acts, minlength=3) / len(acts)
    assert np.all(np.abs(counts - 1 / 3) < 0.05)
    env2 = CountingEnv([1000] * 4)
    core2 = make_core(env2, eps=0.0)
    for _ in range(20):
        core2.step()
    assert np.all(np.concatenate(env2.actions_seen) == 2)
