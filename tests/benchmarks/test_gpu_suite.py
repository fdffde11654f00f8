"""The device suite (``benchmarks.gpu_suite``) on the CPU with tiny sizes: every phase, and
runs cut short. The GPU machine gives one command of a few minutes, so a run killed
part-way must leave a valid JSON of the phases it finished, and a SIGTERM must be written
down, with the phase it cut short, before the clean-up."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu_suite import derive

ROOT = Path(__file__).resolve().parents[2]
TINY = [sys.executable, "-m", "benchmarks.gpu_suite", "--device", "cpu", "--tiny"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*TINY, "--out", str(out), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_record(out: Path, until, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    """The record once ``until(record)`` holds (read as a reader would: any moment's file is whole)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists():
            data = json.loads(out.read_text())
            if until(data):
                return data
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the record never showed the state awaited: {out.read_text()[-2000:] if out.exists() else None}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie nobody has reaped yet is gone too
        return f.read().split(") ")[-1].startswith("Z")


def test_sigkill_after_the_first_phase_keeps_it(tmp_path):
    out = tmp_path / "suite.json"
    proc = start(out, "--phases", "standalone,presets")
    wait_for_record(out, lambda d: d["phases"]["standalone"]["status"] == "done", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    data = json.loads(out.read_text())  # strict JSON, no NaN
    assert data["status"] == "running" and data["device"] == "cpu"
    standalone = data["phases"]["standalone"]
    assert standalone["status"] == "done" and standalone["seconds"] > 0
    figures = standalone["figures"]
    assert figures["auto_on_device"]["status"] == "done" and figures["auto_on_device"]["updates_per_s"] > 0
    assert figures["cudagraphs"]["status"] == "skipped"  # CUDA only
    assert {v["status"] for v in figures.values()} == {"done", "skipped"}
    assert data["phases"]["presets"]["status"] in ("pending", "running")
    assert [p.name for p in tmp_path.iterdir()] == ["suite.json"]


def test_sigterm_mid_phase_keeps_the_variants_done_and_exits_143(tmp_path):
    out = tmp_path / "suite.json"
    proc = start(out)
    first_done = wait_for_record(
        out,
        lambda d: any(v.get("status") == "done" for v in d["phases"]["standalone"].get("figures", {}).values()),
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted (SIGTERM)"
    standalone = data["phases"]["standalone"]
    assert standalone["status"] == "interrupted" and standalone["reason"] == "SIGTERM"
    kept = {k: v for k, v in standalone["figures"].items() if v["status"] == "done"}
    assert kept and all(v["updates_per_s"] > 0 for v in kept.values())
    assert set(kept) >= {k for k, v in first_done["phases"]["standalone"]["figures"].items() if v["status"] == "done"}
    for name in ("system", "feed", "presets"):
        assert data["phases"][name]["status"] == "skipped" and "interrupted (SIGTERM)" in data["phases"][name]["reason"]


@pytest.mark.ray
def test_sigterm_in_the_system_phase_stops_the_system(tmp_path):
    out = tmp_path / "suite.json"
    proc = start(out, "--phases", "system")
    running = wait_for_record(out, lambda d: "pid" in d["phases"]["system"].get("figures", {}), proc)
    time.sleep(3)  # inside learner.main's start-up, Ray starting
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    data = json.loads(out.read_text())
    system = data["phases"]["system"]
    assert system["status"] == "interrupted" and data["status"] == "interrupted (SIGTERM)"
    assert system["figures"]["command"].startswith("python3 -m learner.main")
    assert "exit_code" in system["figures"]  # the clean-up ran after the record was written
    assert gone(running["phases"]["system"]["figures"]["pid"])


@pytest.mark.ray
def test_tiny_cpu_run_writes_every_phase(tmp_path):
    out = tmp_path / "suite.json"
    t0 = time.monotonic()
    proc = subprocess.run([*TINY, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    suite = json.loads(out.read_text())
    assert suite["status"] == "complete" and suite["elapsed_s"] <= time.monotonic() - t0
    phases = suite["phases"]
    assert {name: p["status"] for name, p in phases.items()} == dict.fromkeys(phases, "done")
    done = {k: v for k, v in phases["standalone"]["figures"].items() if v["status"] == "done"}
    assert "auto_on_device" in done and "packed_copy" in done and "bf16_eager_host_feed" in done
    assert all(v["updates_per_s"] > 0 for v in done.values())
    system = phases["system"]["figures"]
    assert system["exit_code"] == 0 and system["updates_per_s"] > 0
    assert system["feed"] == "stacked" and system["replay_shards"] == 1  # a CPU learner
    assert suite["derived"]["system_reference"] == "auto_host_feed" and suite["derived"]["system_vs_standalone"] > 0
    feed = phases["feed"]["figures"]["result"]["in_process"]
    assert feed["mirror"]["bytes"] < feed["stacked"]["bytes"]
    assert set(phases["presets"]["figures"]) >= {"apex", "nature"}
    assert f"wrote {out} (complete)" in proc.stdout


def test_derived_figures_compare_like_with_like():
    def done(rate):
        return {"status": "done", "updates_per_s": rate}

    data = {
        "phases": {
            "standalone": {
                "figures": {
                    "auto_on_device": done(400.0),
                    "eager_on_device": done(100.0),
                    "auto_host_feed": done(200.0),
                    "bf16_eager_host_feed": done(80.0),
                    "cudagraphs": {"status": "skipped", "reason": "x"},
                }
            },
            "system": {"figures": {"updates_per_s": 360.0, "feed": "mirror"}},
            "feed": {
                "figures": {"result": {"ray": {"mirror": {"batches_per_s": 900}, "stacked": {"batches_per_s": 300}}}}
            },
        }
    }
    d = derive(data)
    assert d["eager_on_device_vs_auto_on_device"] == 0.25 and d["cudagraphs_vs_auto_on_device"] is None
    assert d["system_reference"] == "auto_on_device" and d["system_vs_standalone"] == 0.9
    assert d["system_vs_bf16_eager_host_feed"] == 4.5 and d["feed_mirror_vs_stacked"] == 3.0
    data["phases"]["system"]["figures"]["feed"] = "stacked"
    assert derive(data)["system_vs_standalone"] == 1.8 and derive(data)["system_reference"] == "auto_host_feed"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--phases", "standalone,warp"], "--phases standalone,warp: unknown phase warp"),
        (["--phases", ","], "--phases ,: no phase named"),
        (["--deadline", "0"], "--deadline"),
        (["--deadline", "soon"], "--deadline"),
        (["--frobnicate"], "--frobnicate"),
        (["--replay-shards", "0"], "--replay-shards"),
        (["--replay-shards", "many"], "--replay-shards"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, argv, needle):
    from benchmarks import gpu_suite

    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(["--device", "cpu", "--out", str(tmp_path / "suite.json"), *argv])
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and needle in err[0], out.err
    assert out.out == "" and list(tmp_path.iterdir()) == []


def test_help_names_python3():
    proc = subprocess.run([*TINY[:3], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python3 -m benchmarks.gpu_suite")
    import benchmarks.gpu_suite as suite

    commands = [line for line in suite.__doc__.splitlines() if "-m benchmarks.gpu_suite" in line]
    assert commands and all("python3 -m" in line for line in commands)


def test_the_system_phase_takes_the_shard_count_given():
    from benchmarks.gpu_suite import TINY as SIZES
    from benchmarks.gpu_suite import Suite, parse, system_flags

    for given in ("auto", "3"):
        args = parse(["--device", "cpu", "--tiny", "--out", "suite.json", "--replay-shards", given])
        flags = [str(f) for f in system_flags(Suite(args, SIZES, None), 60)]
        assert flags[flags.index("--replay-shards") + 1] == given
