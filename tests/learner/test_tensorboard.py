"""learner.tensorboard: scalars written to run_dir/tb/ and read back from the event files
(TFRecord framing and CRCs checked here, events decoded with the tfevents protobuf);
the metrics-row mapping; logging turned off with one warning when no writer is installed."""

from __future__ import annotations

import struct
import sys
import warnings
from pathlib import Path

import pytest

from learner.run_log import METRIC_FIELDS
from learner.tensorboard import METRIC_TAGS, TensorBoardLogger, tags_from_episode, tags_from_metrics


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every tfevents file in ``log_dir``.

    A TFRecord is: uint64 length, uint32 masked CRC32C of the length, the bytes (one
    serialized Event), uint32 masked CRC32C of the bytes.
    """
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto import event_pb2

    def masked(data: bytes) -> int:
        c = crc32c(data)
        return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            assert length_crc == masked(header)
            body = data[pos + 12 : pos + 12 + length]
            (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
            assert body_crc == masked(body)
            pos += 16 + length
            event = event_pb2.Event()
            event.ParseFromString(body)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_scalars_round_trip_against_env_frames(tmp_path):
    pytest.importorskip("tensorboardX")
    with TensorBoardLogger(tmp_path) as tb:
        assert tb.enabled and tb.log_dir == tmp_path / "tb"
        tb.log(0, {"charts/episodic_return": 1.5, "losses/td_loss": float("nan"), "replay/size": None})
        tb.log(4000, {"charts/episodic_return": 3.25, "losses/td_loss": 0.125})
        tb.log(2**40, {"throughput/env_frames_per_s": 812.5})  # past int32: a 50M-frame run x 20000
    scalars = read_scalars(tmp_path / "tb")
    assert scalars == {
        "charts/episodic_return": [(0, 1.5), (4000, 3.25)],
        "losses/td_loss": [(4000, 0.125)],  # NaN and None are skipped
        "throughput/env_frames_per_s": [(2**40, 812.5)],
    }


def test_a_metrics_row_maps_to_namespaced_tags(tmp_path):
    pytest.importorskip("tensorboardX")
    row = dict.fromkeys(METRIC_FIELDS, 0)
    row.update(
        env_frames=80_000,
        wall_s=12.5,
        loss=0.5,
        mean_q=2.0,
        mean_return_100=17.0,
        mean_return_greedy_20=None,
        env_frames_per_s=1000.0,
        updates_per_s=50.0,
        replay_size=20_000,
    )
    tags = tags_from_metrics(row)
    assert tags["losses/td_loss"] == 0.5 and tags["losses/mean_q"] == 2.0
    assert tags["charts/mean_return_100"] == 17.0 and "charts/mean_return_greedy_20" not in tags
    assert tags["throughput/env_frames_per_s"] == 1000.0 and tags["throughput/updates_per_s"] == 50.0
    assert tags["replay/size"] == 20_000 and tags["progress/wall_s"] == 12.5
    # Every trainer column has a tag of its own, the step column excepted.
    assert set(METRIC_TAGS) == set(METRIC_FIELDS) - {"env_frames"}
    assert all("/" in t and not t.startswith("metrics/") for t in tags)
    # csv.DictReader rows are strings, empty where unknown; new columns still show up.
    assert tags_from_metrics({"env_frames": "8", "loss": "", "mean_q": "nan", "updates_per_s": "2.5", "new": "1"}) == {
        "throughput/updates_per_s": 2.5,
        "metrics/new": 1.0,
    }
    assert tags_from_episode({"score": 21.0, "agent_steps": 800, "epsilon": 0.01, "wall_s": 3.0}) == {
        "charts/episodic_return": 21.0,
        "charts/episodic_length": 800.0,
        "charts/episode_epsilon": 0.01,
    }
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_metrics(row)
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == set(tags)
    assert all(points == [(80_000, pytest.approx(tags[t]))] for t, points in scalars.items())


def test_no_writer_installed_turns_logging_off_with_one_warning(tmp_path, monkeypatch):
    # None in sys.modules makes "import X" raise ImportError.
    for name in ("tensorboardX", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.warns(RuntimeWarning, match="TensorBoard logging is off") as record:
        tb = TensorBoardLogger(tmp_path)
    assert len(record) == 1 and not tb.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing more is said
        tb.log(10, {"charts/episodic_return": 1.0})
        tb.log_metrics({"env_frames": 10, "loss": 0.1})
        tb.close()
    assert not (tmp_path / "tb").exists()


def test_negative_step_is_refused(tmp_path):
    pytest.importorskip("tensorboardX")
    with TensorBoardLogger(tmp_path) as tb, pytest.raises(ValueError, match="step_env_frames"):
        tb.log(-1, {"a/b": 1.0})
