"""Ape-X initial priorities computed by the actor (ActorCore(initial_priorities=True)).

The stand-in network makes Q a known function of the stack: Q(s)[a] = (a+1) * v / 100 with
v the value of the newest frame (CountingEnv frames are constant images), so with eps = 0
the actor always takes action 2 (ties at v = 0 pick action 0, whose Q is 0 too) and
Q(s_t, a_t) = max_a Q(s_t) = q(v) = 3 v / 100. gamma = 0.5 keeps the arithmetic exact.
CountingEnv pays 2.0 per step, clipped to 1.0.
"""

import numpy as np
import pytest
import torch
from torch import nn

from actors.actor import ActorCore
from common.messages import NO_ACTION, decode_step_batch, encode_step_batch
from replay_server.buffer import ReplayBuffer
from tests.support.fakes import CountingEnv, ScriptedEnv
from tests.support.nstep_cases import CASES, N, restarts_mid_segment

G = 0.5


def q(v):
    return 3 * v / 100


class NewestFrameQ(nn.Module):
    """Q(s)[a] = (a+1) * mean(newest frame) / 100 (+ offset); remembers every batch it saw."""

    def __init__(self, scale=1.0, offset=0.0):
        super().__init__()
        self.scale, self.offset = scale, offset
        self.seen = []

    def forward(self, obs):
        self.seen.append(obs.clone())
        v = obs[:, -1].float().reshape(len(obs), -1).mean(dim=1)
        return self.scale * v[:, None] * torch.arange(1, 4, dtype=torch.float32)[None] / 100 + self.offset


def make_core(env, net=None, eps=0.0, spb=1000, n=3, gamma=G, clip=True, **kw):
    net = NewestFrameQ() if net is None else net
    core = ActorCore(
        env,
        net,
        lambda s: np.full(env.num_envs, eps),
        list(range(env.num_envs)),
        steps_per_batch=spb,
        frames_per_step=4,
        clip_rewards=clip,
        seed=0,
        initial_priorities=True,
        n_step=n,
        gamma=gamma,
        **kw,
    )
    return core, net


def run(core, steps):
    out = []
    for _ in range(steps):
        out += core.step()
    return out


def prios(batch):
    b = decode_step_batch(encode_step_batch(batch))  # priorities survive the wire format
    assert b.priorities is not None and b.priorities.dtype == np.float32
    return b.priorities.tolist()


def frame_values(batch):
    return [int(f[0, 0]) for f in batch.frames()]


# The shared table, played by an env (an actor cannot restart a segment without an end).
PLAYABLE = [case for case in CASES if not any(restarts_mid_segment(r) for r in case[1].values())]


@pytest.mark.parametrize("name,streams,expected", PLAYABLE, ids=[case[0] for case in PLAYABLE])
def test_priorities_follow_the_table(name, streams, expected):
    """p_t = |R_t + discount_t * max_a Q(s_b) - Q(s_t, a_t)| with the table's R, discount and
    bootstrap record b; frames hold the record's index, so Q(s_i) = q(i)."""
    assert G == 0.5
    for sid, records in streams.items():
        env = ScriptedEnv(records)
        core, _ = make_core(env, spb=1, n=N, clip=False)
        sent = [(v, p) for b in run(core, len(env.acted)) for v, p in zip(frame_values(b), prios(b))]
        items = {(sid, v) for v, _ in sent if records[v][0] != NO_ACTION}
        assert items == {key for key in expected if key[0] == sid}  # sent: the complete windows
        for v, p in sent:
            if records[v][0] == NO_ACTION:
                assert p == 0
                continue
            ret, disc, boot = expected[(sid, v)]
            assert p == pytest.approx(abs(ret + disc * q(boot) - q(v)), rel=1e-6), (sid, v)


def test_full_window_inside_an_episode():
    core, net = make_core(CountingEnv([100]), spb=1)
    out = run(core, 5)  # records t = 0..4; t = 0, 1 have record t+3
    assert [frame_values(b) for b in out] == [[0], [1]]
    # R = 1 + .5 + .25 = 1.75, discount .5^3, bootstrap max Q(s_{t+3}) = q(t+3)
    assert prios(out[0]) == pytest.approx([1.75 + 0.125 * q(3) - q(0)]) == [1.76125]
    assert prios(out[1]) == pytest.approx([1.75 + 0.125 * q(4) - q(1)]) == [1.735]
    assert len(net.seen) == 5  # one forward per step, nothing extra


def test_records_are_held_back_until_their_window_completes():
    core, _ = make_core(CountingEnv([100, 100]), spb=2)
    sizes = []
    for _ in range(8):
        sizes.append([len(b) for b in core.step()])
    # Record t is ready at step t+4 (after record t+3 exists): 2 ready at step 5, 4 at step 7.
    assert sizes == [[], [], [], [], [2, 2], [], [2, 2], []]
    assert [len(r) for r in core.records] == [4, 4]  # t = 4..7: 1 ready, 3 still open
    assert [len(r.prios) for r in core.records] == [1, 1]


def test_window_cut_by_termination_bootstraps_zero():
    core, net = make_core(CountingEnv([3, 100]), spb=1)
    out = run(core, 3)
    [b] = [b for b in out if b.stream_id == 0]
    assert frame_values(b) == [0, 1, 2, 3] and b.actions[-1] == NO_ACTION and b.terminated[2]
    assert prios(b) == pytest.approx([1.75 - q(0), 1.5 - q(1), 1.0 - q(2), 0.0])
    assert len(net.seen) == 3  # terminated: no extra forward


def test_window_cut_by_truncation_bootstraps_from_the_final_frame():
    core, net = make_core(CountingEnv([3, 100], truncate=True), spb=1)
    out = run(core, 3)
    [b] = [b for b in out if b.stream_id == 0]
    assert frame_values(b) == [0, 1, 2, 3] and b.truncated[2] and b.actions[-1] == NO_ACTION
    boot = q(3)  # the final frame's stack [0, 1, 2, 3], never acted on
    assert prios(b) == pytest.approx(
        [1.75 + 0.125 * boot - q(0), 1.5 + 0.25 * boot - q(1), 1.0 + 0.5 * boot - q(2), 0.0]
    )
    # Three action forwards over both envs, plus one extra over the truncated env only.
    assert [len(s) for s in net.seen] == [2, 2, 2, 1]
    assert net.seen[3][0, :, 0, 0].tolist() == [0, 1, 2, 3]


def test_life_loss_ends_the_segment_like_termination():
    core, _ = make_core(CountingEnv([100], lose_life_at=2), spb=1)
    out = run(core, 7)
    recs = [(v, p) for b in out for v, p in zip(frame_values(b), prios(b))]
    # t=0,1 then the final frame 2; the new segment starts at frame 2 (the game goes on).
    assert [v for v, _ in recs] == [0, 1, 2, 2, 3]
    p = [p for _, p in recs]
    assert p[:3] == pytest.approx([1.5 - q(0), 1.0 - q(1), 0.0])
    assert p[3] == pytest.approx(1.75 + 0.125 * q(5) - q(2))  # new segment's first record: full window
    assert p[4] == pytest.approx(1.75 + 0.125 * q(6) - q(3))


def test_flush_sends_everything_with_cut_windows():
    core, net = make_core(CountingEnv([100, 100]), spb=1000)
    run(core, 4)  # records t = 0..3; only t = 0 is complete; the envs now sit on s_4
    forwards = len(net.seen)
    b0, b1 = core.flush()
    assert len(net.seen) == forwards + 1 and len(net.seen[-1]) == 2  # one forward for both streams
    assert frame_values(b0) == [0, 1, 2, 3]
    assert prios(b0) == pytest.approx(
        [
            1.75 + 0.125 * q(3) - q(0),  # complete
            1.75 + 0.125 * q(4) - q(1),  # cut at the newest record = its full window: exact
            1.5 + 0.25 * q(4) - q(2),  # approximation: k = 2, bootstrap from the current stack s_4
            1.0 + 0.5 * q(4) - q(3),  # approximation: k = 1
        ]
    )
    assert prios(b1)[3] == pytest.approx(abs(1.0 + 0.5 * q(104) - q(103)))
    assert all(len(r) == 0 for r in core.records) and core.flush() == []


def test_after_a_flush_the_segment_goes_on_with_exact_windows():
    core, _ = make_core(CountingEnv([100]), spb=1000)
    run(core, 4)
    [b] = core.flush()
    core.steps_per_batch = 1
    assert frame_values(b) == [0, 1, 2, 3]
    out = run(core, 4)  # records 4..7; record 4 is complete once record 7 exists
    assert [frame_values(b) for b in out] == [[4]] and not out[0].first[0]
    assert prios(out[0]) == pytest.approx([1.75 + 0.125 * q(7) - q(4)])


def test_final_frame_records_get_priority_zero_and_priorities_cover_every_record():
    core, _ = make_core(CountingEnv([2, 3, 4], truncate=True), eps=0.5, spb=1)
    batches = run(core, 20) + core.flush()
    for b in batches:
        p = np.asarray(prios(b))
        assert len(p) == len(b)
        assert np.all(p[b.actions == NO_ACTION] == 0)
        assert np.all(np.isfinite(p) & (p >= 0))
    assert sum(int(np.sum(b.actions == NO_ACTION)) for b in batches) >= 10


def test_off_means_no_priorities_and_unchanged_cutting():
    env = CountingEnv([3, 100])
    core = ActorCore(env, NewestFrameQ(), lambda s: np.zeros(2), [0, 1], 4, 4, True, 0)
    out = run(core, 9)
    assert all(b.priorities is None for b in out)
    assert [len(b) for b in out] == [4, 4, 4, 4, 4]  # cut at steps_per_batch, as before
    assert all(b.priorities is None for b in core.flush())


def test_priority_is_dropped_when_q_is_not_finite():
    core, _ = make_core(CountingEnv([100]), net=NewestFrameQ(offset=float("nan")), spb=1)
    out = run(core, 5)
    assert len(out) == 2 and all(b.priorities is None for b in out)


# ---------------------------------------------------------------- cross-check with the replay


def replay_showing_sent_priorities(n, gamma):
    """A replay whose sampling weights are the priorities actors sent (alpha 1, eps 0, no updates)."""
    return ReplayBuffer(capacity=10_000, stack_size=4, n_step=n, gamma=gamma, alpha=1.0, priority_eps=0.0, seed=0)


def _stream_of_batches(net, gamma, n, **env_kw):
    """Step-only batches (no flush: every sent window completed normally) of a busy mix of envs."""
    core, _ = make_core(CountingEnv([2, 3, 5, 7, 11], **env_kw), net=net, eps=0.3, spb=3, n=n, gamma=gamma)
    return run(core, 60)


@pytest.mark.parametrize("env_kw", [{}, {"truncate": True}, {"lose_life_at": 3}])
@pytest.mark.parametrize("n", [1, 3])
def test_returns_and_discounts_equal_the_replays(env_kw, n):
    gamma = 0.9
    buffers = {}
    for name, net in {"zero": NewestFrameQ(scale=0.0), "const": NewestFrameQ(scale=0.0, offset=-10.0)}.items():
        buf = replay_showing_sent_priorities(n, gamma)
        for b in _stream_of_batches(net, gamma, n, **env_kw):
            buf.add(decode_step_batch(encode_step_batch(b)))
        ids = buf.sampleable_ids()
        assert ids.size > 100
        items = buf.gather(ids)
        buffers[name] = (items, buf.sampling_weights(ids))
    items, p_zero = buffers["zero"]
    # Q = 0: the priority is |R| = R (rewards are +1): bit-for-bit the replay's float32 return.
    np.testing.assert_array_equal(p_zero, items.returns)
    # Q = -10 everywhere: p = |R - 10 discount + 10| = R + 10 (1 - discount).
    items_c, p_const = buffers["const"]
    np.testing.assert_array_equal(items_c.returns, items.returns)
    np.testing.assert_allclose(p_const, items.returns + 10 * (1 - items.discounts), rtol=1e-6)
    if env_kw.get("truncate"):
        assert np.all(items.discounts > 0)  # truncation is never terminal
        assert n == 1 or np.any(items.discounts > gamma**n + 1e-6)  # windows cut by truncation keep gamma^k, k < n
    else:
        assert np.any(items.discounts == 0)


@pytest.mark.parametrize("env_kw", [{}, {"truncate": True}, {"lose_life_at": 3}])
def test_priorities_equal_the_td_error_on_the_replays_items(env_kw):
    """|R + discount * max_a Q(next_obs) - Q(obs, a)| with the replay's own items."""
    gamma, n = 0.9, 3
    net = NewestFrameQ()
    buf = replay_showing_sent_priorities(n, gamma)
    for b in _stream_of_batches(net, gamma, n, **env_kw):
        buf.add(b)
    ids = buf.sampleable_ids()
    items = buf.gather(ids)
    with torch.no_grad():
        q_obs = net(torch.from_numpy(items.obs)).double().numpy()
        q_next = net(torch.from_numpy(items.next_obs)).double().numpy()
    td = items.returns + items.discounts * q_next.max(axis=1) - q_obs[np.arange(len(ids)), items.actions]
    np.testing.assert_allclose(buf.sampling_weights(ids), np.abs(td), rtol=1e-5, atol=1e-6)


# ------------------------------------------------- distributional heads: the learner's loss


def _distributional_net(kind):
    from common.heads import HeadSpec
    from common.networks import QNetwork
    from common.torsos import mlp_torso

    torch.manual_seed(3)
    head = HeadSpec(kind=kind, num_atoms=11, v_min=-2.0, v_max=4.0, num_quantiles=8, acting_samples=8)
    return QNetwork(mlp_torso(16, 32), 32, 3, 32, head, divisor=255.0)


@pytest.mark.parametrize("env_kw", [{}, {"truncate": True}, {"lose_life_at": 3}])
@pytest.mark.parametrize("kind", ["c51", "qr"])
def test_distributional_priorities_equal_the_learners_loss_on_the_replays_items(kind, env_kw):
    """One rule: the actor's initial priority of each item is the per-item loss the learner
    computes for it (online = target = the actor's network, double Q, Rainbow's rule)."""
    from learner.losses import LossSpec, batch_loss

    gamma, n = 0.9, 3
    net = _distributional_net(kind).eval()
    buf = replay_showing_sent_priorities(n, gamma)
    for b in _stream_of_batches(net, gamma, n, **env_kw):
        buf.add(b)
    ids = buf.sampleable_ids()
    items = buf.gather(ids)
    assert ids.size > 100
    t = {k: torch.from_numpy(np.asarray(getattr(items, k))) for k in ("obs", "next_obs", "returns", "discounts")}
    with torch.no_grad():
        _, learner_prios, _ = batch_loss(
            net,
            net,
            t["obs"],
            t["next_obs"],
            torch.from_numpy(items.actions.astype(np.int64)),
            t["returns"].float(),
            t["discounts"].float(),
            torch.ones(len(ids)),
            LossSpec(kind=kind),
            lambda: torch.autocast("cpu", enabled=False),
        )
    sent = buf.sampling_weights(ids)
    assert np.all(sent > 0)
    np.testing.assert_allclose(sent, learner_prios.numpy(), rtol=2e-4, atol=1e-5)


def test_iqn_priorities_are_its_quantile_loss_and_final_frames_get_zero():
    core, net = make_core(CountingEnv([2, 3, 5]), net=_distributional_net("iqn"), eps=0.3, spb=3)
    batches = run(core, 40) + core.flush()
    for b in batches:
        p = np.asarray(prios(b))
        final = b.actions == NO_ACTION
        assert np.all(np.isfinite(p)) and np.all(p[final] == 0) and np.all(p[~final] > 0)
