"""Ray for a run: the address probe, the start (or join), the placement check, where to watch.

``learner/main.py`` probes ``--address`` before anything is written (:func:`check_ray_address`:
``ray.init`` itself would wait for an unreachable cluster without end); the fleet
(``learner/fleet.py``) starts or joins Ray (:func:`start_ray`), writes ``ray.json`` (where to
watch the run), and checks that the cluster can hold the run's parts, asking the autoscaler
for more when it can grow (:func:`check_placement`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from common.cli import UsageError
from common.config import Config

RAY_PROBE_TIMEOUT_S = 3.0


class PlacementError(RuntimeError):
    """The cluster cannot hold the run (too few CPUs, even after asking the autoscaler)."""


def last_line(e: BaseException) -> str:
    """The last line of an exception's text (Ray's carry a traceback before it)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[-1]


# ---- the address probe (before anything is written) ---------------------------------------
def check_ray_address(address: str | None, timeout: float = RAY_PROBE_TIMEOUT_S) -> None:
    """UsageError unless a Ray cluster's GCS accepts a connection at ``address`` within
    ``timeout`` seconds. ``ray.init`` itself waits for an unreachable GCS without end
    (measured: still retrying after 2 minutes), so the run would hang before its first line.
    None and 'local' start a local instance: nothing to probe."""
    if address is None or address == "local":
        return
    flag = f"--address={address}"
    target = address.split("://", 1)[1] if "://" in address else address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            target = canonicalize_bootstrap_address_or_die("auto")
        except Exception as e:  # ConnectionError: no cluster on this node (or several)
            raise UsageError(
                f"{flag}: no Ray cluster found on this node ({str(e).split('. ')[0]}); "
                f"start one with 'ray start --head' or name it as HOST:PORT"
            ) from None
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"{flag}: expected HOST:PORT of a Ray cluster's head (e.g. 10.0.0.1:6379), or auto")
    host = host.strip("[]")
    outcome: list = []

    def probe():
        try:
            socket.create_connection((host, int(port_text)), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e.strerror or type(e).__name__)

    # In a thread: a name lookup can outlast the socket's own timeout.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if not outcome:
        raise UsageError(f"{flag}: no answer from {host}:{port_text} within {timeout:g}s (is the Ray head running?)")
    if outcome[0] is not None:
        raise UsageError(f"{flag}: no Ray cluster listens at {host}:{port_text} ({outcome[0]})")
    if "://" not in address:  # ray:// names a Ray client server, not a GCS
        _check_gcs(flag, f"{host}:{port_text}", timeout)


def _check_gcs(flag: str, target: str, timeout: float) -> None:
    """UsageError unless what answers at ``target`` is a Ray GCS (a port that accepts any
    connection, a proxy, another service: ray.init would retry it for a minute, then fail)."""
    from ray._raylet import GcsClient

    outcome: list = []

    def probe():
        try:
            GcsClient(address=target).cluster_id
            outcome.append(None)
        except Exception as e:
            outcome.append(f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}")

    # Ray's C++ client logs each failed attempt straight to fd 2; the user gets our one line.
    saved_stderr = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        worker = threading.Thread(target=probe, daemon=True)
        worker.start()
        worker.join(timeout + 2.0)
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
    if not outcome:
        raise UsageError(f"{flag}: {target} accepts connections but no Ray GCS answered within {timeout + 2.0:g}s")
    if outcome[0] is not None:
        raise UsageError(f"{flag}: {target} answers, but not as a Ray cluster's head ({outcome[0].split('. ')[0]})")


# ---- start, placement ----------------------------------------------------------------------
def cpus_needed(cfg: Config) -> int:
    """One CPU per actor, per replay shard and for the evaluator (when there is one)."""
    return cfg.actors.num_actors + cfg.replay.replay_shards + int(bool(cfg.eval.eval_period))


def start_ray(cfg: Config, namespace: str, run_dir: Path) -> bool:
    """Start a local Ray instance, or join ``--address``; False if Ray was already up."""
    import ray

    if ray.is_initialized():
        return False
    r = cfg.run
    # A namespace per run keeps the parts' names (replay-0, actor-7) apart on a shared cluster.
    kwargs = dict(address=r.address, namespace=namespace, logging_level=logging.WARNING, log_to_driver=True)
    if r.address is None:
        # Always a new local instance: address=None would join whatever Ray instance
        # already runs on this machine (another run, a test) and then fail on num_cpus.
        kwargs["address"] = "local"
        # As many logical CPUs as the run needs, so 16 actors on a 4-core laptop share
        # the cores instead of waiting forever to be placed.
        kwargs["num_cpus"] = r.num_cpus or max(os.cpu_count() or 1, cpus_needed(cfg))
        kwargs["include_dashboard"] = None
        # Ray starts workers at nice 15; on cores the learner (nice 0) shares with the
        # actors, that starved the actors (measured: 0.23 of 2 cores while free-running).
        os.environ.setdefault("RAY_worker_niceness", "0")
        # A quiet start. Ray's token authentication stays on, without its warning that
        # it turned itself on (setting RAY_AUTH_MODE here is too late: Ray has read it at
        # import). The raylet warns once 4x its start-up concurrency (min(cores, CPUs): 2
        # here) of workers have started, i.e. at 16 actors on 2 cores, which this run asks
        # for on purpose: its limit is the run's CPUs.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(kwargs["num_cpus"]))
    try:
        ctx = ray.init(**kwargs)
    except (ConnectionError, RuntimeError) as e:
        if r.address is None:
            raise
        # The cluster went away after main's probe, or is not one Ray can join.
        raise PlacementError(f"--address={r.address}: cannot join the Ray cluster ({last_line(e)})") from None
    describe_cluster(namespace, Path(run_dir), ctx.dashboard_url)
    return True


def describe_cluster(namespace: str, run_dir: Path, dashboard_url: str | None) -> None:
    """ray.json in the run dir: where to watch this run (dashboard, Prometheus endpoint)."""
    import ray

    ports = sorted({n.get("MetricsExportPort") for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")})
    info = {
        "namespace": namespace,
        "dashboard_url": f"http://{dashboard_url}" if dashboard_url else None,
        "metrics_export_ports": ports,
        # Where a tool (the soak, a state query) joins this very instance: 'auto' finds the
        # newest one on the machine, which need not be this run's.
        "gcs_address": ray.get_runtime_context().gcs_address,
    }
    (run_dir / "ray.json").write_text(json.dumps(info, indent=2))
    if dashboard_url:
        print(
            f"dashboard: http://{dashboard_url} (parts named replay-K and actor-N, namespace {namespace})", flush=True
        )


def check_placement(cfg: Config, can_grow: bool) -> None:
    """Ask the autoscaler for what the run needs; PlacementError if it never comes."""
    import ray

    c, need = cfg, cpus_needed(cfg)
    parts = f"{c.actors.num_actors} actors and {c.replay.replay_shards} replay shards need {need}"
    have = ray.cluster_resources().get("CPU", 0)
    if have >= need:
        return
    if not can_grow:
        raise PlacementError(
            f"cannot place the run: this Ray instance has {have:g} CPUs; {parts} "
            f"(raise --num-cpus or lower --num-actors)"
        )
    from ray.autoscaler.sdk import request_resources

    print(
        f"waiting up to {c.run.placement_timeout:g}s for the cluster to grow from {have:g} to {need} CPUs "
        f"({c.actors.num_actors} actors + {c.replay.replay_shards} replay shards)",
        flush=True,
    )
    request_resources(num_cpus=need)
    deadline = time.monotonic() + c.run.placement_timeout
    while time.monotonic() < deadline:
        time.sleep(2)
        have = ray.cluster_resources().get("CPU", 0)
        if have >= need:
            return
    raise PlacementError(
        f"cannot place the run: the Ray cluster has {have:g} CPUs after {c.run.placement_timeout:g}s; "
        f"{parts} (lower --num-actors or add worker nodes)"
    )


def on_this_node():
    """A scheduling strategy that keeps an actor on the driver's node (the replay shards:
    the learner's samples are the largest transfers in the system)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def start_shard(cfg, stack_size: int, run_dir: Path, j: int):
    """Replay shard ``j`` as a Ray actor: 1/K of the replay (``learner.shards``), beside the
    learner (the driver, on the GPU head of a cluster: the learner's samples are the largest
    transfers in the system), restarted by Ray from its snapshot after a crash."""
    from learner.shards import shard_settings, snapshot_path
    from replay_server.remote import make_replay_actor

    # enable_task_events=False here and on the actors: Ray's GCS otherwise records an event
    # for each of the hundreds of add/sample/priority calls a second and grew by 300 MB an
    # hour in the soak (docs/benchmarks.md).
    return make_replay_actor(
        num_cpus=1, name=f"replay-{j}", scheduling_strategy=on_this_node(), max_restarts=-1, enable_task_events=False
    ).remote(
        **shard_settings(cfg, stack_size, j),
        snapshot_path=str(snapshot_path(run_dir, j)) if cfg.replay.snapshot_interval >= 0 else None,
    )
