"""One table of tiny trajectories with hand-written n-step transitions (n=3, gamma=0.5).

Acme's ``adders/reverb/test_cases.py`` style: the n-step function (tests/common/test_nstep.py),
the replay (tests/replay_server/test_buffer.py) and the actor's initial priorities
(tests/actors/test_actor_priorities.py) are all checked against the same table.

A record is ``(action, reward, terminated, truncated, first)``; a final-frame record is
``(-1, 0.0, False, False, False)``. Each case maps stream ids to their records and
``(stream, step)`` of every item to ``(return, discount, bootstrap step)``, where step is
the record's index in its stream.
"""

from __future__ import annotations

N, GAMMA = 3, 0.5
FINAL = (-1, 0.0, False, False, False)


def episode(rewards, end=None, first=True):
    """Records of one episode segment: ``end`` is "term", "trunc" or None (still open); an
    ended episode gets its final-frame record."""
    recs = []
    for i, r in enumerate(rewards):
        last = i == len(rewards) - 1
        recs.append((i % 3, r, last and end == "term", last and end == "trunc", first and i == 0))
    if end is not None:
        recs.append(FINAL)
    return recs


# (name, {stream: records}, {(stream, step): (return, discount, bootstrap step)})
CASES = [
    (
        "terminated mid-window",
        {1: episode([1, 2, 4, 8, 16], "term")},
        {(1, 0): (3, 0.125, 3), (1, 1): (6, 0.125, 4), (1, 2): (12, 0, 5), (1, 3): (16, 0, 5), (1, 4): (16, 0, 5)},
    ),
    (
        "truncated mid-window keeps gamma^k",
        {1: episode([1, 2, 4, 8, 16], "trunc")},
        {
            (1, 0): (3, 0.125, 3),
            (1, 1): (6, 0.125, 4),
            (1, 2): (12, 0.125, 5),
            (1, 3): (16, 0.25, 5),
            (1, 4): (16, 0.5, 5),
        },
    ),
    (
        "terminated episode shorter than n",
        {2: episode([1, 2], "term")},
        {(2, 0): (2, 0, 2), (2, 1): (2, 0, 2)},
    ),
    (
        "truncated episode shorter than n",
        {2: episode([1, 2], "trunc")},
        {(2, 0): (2, 0.25, 2), (2, 1): (2, 0.5, 2)},
    ),
    (
        "one-step episode",
        {2: episode([5], "term")},
        {(2, 0): (5, 0, 1)},
    ),
    (
        "open episode: only complete windows",
        {3: episode([1, 2, 4, 8])},
        {(3, 0): (3, 0.125, 3)},
    ),
    (
        "two interleaved streams",
        {7: episode([1, 2, 4, 8, 16], "trunc"), 9: episode([1, 1, 1, 1], "term")},
        {
            (7, 0): (3, 0.125, 3),
            (7, 1): (6, 0.125, 4),
            (7, 2): (12, 0.125, 5),
            (7, 3): (16, 0.25, 5),
            (7, 4): (16, 0.5, 5),
            (9, 0): (1.75, 0.125, 3),
            (9, 1): (1.75, 0, 4),
            (9, 2): (1.5, 0, 4),
            (9, 3): (1, 0, 4),
        },
    ),
    (
        "restart drops pending items",
        {4: episode([1, 2, 4, 8]) + episode([1, 2, 4, 8])},
        {(4, 0): (3, 0.125, 3), (4, 4): (3, 0.125, 7)},
    ),
    (
        "life-loss terminal then a first record",
        {5: episode([1, 2, 4], "term") + episode([8, 16, 32, 64])},
        {(5, 0): (3, 0, 3), (5, 1): (4, 0, 3), (5, 2): (4, 0, 3), (5, 4): (24, 0.125, 7)},
    ),
]
IDS = [case[0] for case in CASES]


def restarts_mid_segment(records) -> bool:
    """True if a segment starts without the previous one having ended (an actor restart):
    replay streams can, an actor playing its env cannot."""
    return any(rec[4] and i > 0 and records[i - 1][0] != -1 for i, rec in enumerate(records))
