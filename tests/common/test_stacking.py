import numpy as np

from common.stacking import FrameStacker


def frames(*vals):
    return np.array(vals, dtype=np.uint8)[:, None]  # E frames of shape (1,)


def test_episode_start_repeats_first_frame_then_shifts():
    s = FrameStacker(1, 4, (1,), np.uint8)
    s.start(frames(7))
    assert s.stacks[0, :, 0].tolist() == [7, 7, 7, 7]
    s.push(frames(8))
    s.push(frames(9))
    assert s.stacks[0, :, 0].tolist() == [7, 7, 8, 9]
    s.push(frames(10))
    s.push(frames(11))
    assert s.stacks[0, :, 0].tolist() == [8, 9, 10, 11]


def test_interleaved_streams_stay_apart():
    s = FrameStacker(3, 4, (1,), np.uint8)
    s.start(frames(0, 100, 200))
    s.push(frames(1, 101, 201))
    mask = np.array([False, True, False])
    s.start(frames(0, 150, 0), mask)  # stream 1 starts a new episode
    s.push(frames(2, 151, 202), ~mask)  # the others go on; stream 1 not pushed
    assert s.stacks[0, :, 0].tolist() == [0, 0, 1, 2]
    assert s.stacks[1, :, 0].tolist() == [150, 150, 150, 150]
    assert s.stacks[2, :, 0].tolist() == [200, 200, 201, 202]
