"""The deployment files in deploy/, checked offline: no cloud account, no cluster, no Docker.

- Ray cluster-launcher configs (every deploy/*.yaml with a ``provider``) go through what
  ``ray up`` does to a config before it contacts a cloud: ``prepare_config`` (merge with
  the provider's defaults.yaml) and ``validate_config`` (Ray's own ray-schema.json plus
  its cross-field checks), both from the installed Ray. Deliberately broken copies must
  be rejected by the same validator, so these tests can fail.
- The KubeRay manifest, the Dockerfile and the commands in deploy/README.md are checked
  for what this project needs: a GPU head, ``--address auto``, token authentication,
  enough CPUs for learner.main's start-up check, flags that exist.
"""

from __future__ import annotations

import copy
import inspect
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private import commands as ray_up_commands
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
YAMLS = sorted(DEPLOY.glob("*.yaml"))


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _is_launcher_config(path: Path) -> bool:
    docs = _docs(path)
    return len(docs) == 1 and isinstance(docs[0], dict) and "provider" in docs[0]


def _is_k8s_manifest(path: Path) -> bool:
    return all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in _docs(path))


LAUNCHER_CONFIGS = [p for p in YAMLS if _is_launcher_config(p)]
K8S_MANIFESTS = [p for p in YAMLS if _is_k8s_manifest(p)]


def ray_up_validate(config: dict) -> dict:
    """The offline part of ``ray up``'s ``_bootstrap_config``: defaults merged, then validated.

    (``ray up`` also asks the cloud provider to fill in undeclared node resources between
    the two steps; every node type here declares its resources, so nothing is skipped
    that the schema would need.)
    """
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def load(path: Path) -> dict:
    (config,) = _docs(path)
    return config


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _head_and_workers(config: dict):
    types = config["available_node_types"]
    head = config["head_node_type"]
    return types[head], {name: t for name, t in types.items() if name != head}


def _a_worker_type(config: dict) -> dict:
    return next(iter(_head_and_workers(config)[1].values()))


# ---- every file is accounted for ---------------------------------------------------------


def test_every_deploy_yaml_is_a_launcher_config_or_a_k8s_manifest():
    assert {p.name for p in LAUNCHER_CONFIGS} >= {"aws.yaml", "gcp.yaml"}
    assert {p.name for p in K8S_MANIFESTS} >= {"kuberay.yaml"}
    unknown = set(YAMLS) - set(LAUNCHER_CONFIGS) - set(K8S_MANIFESTS)
    assert not unknown, f"neither a cluster-launcher config nor a Kubernetes manifest: {unknown}"


def test_the_validator_is_the_one_ray_up_uses():
    """Guards the premise of this file: `ray up` runs prepare_config and validate_config."""
    source = inspect.getsource(ray_up_commands._bootstrap_config)
    assert "prepare_config(" in source and "validate_config(" in source
    schema = Path(ray.autoscaler.__file__).with_name("ray-schema.json")
    assert schema.is_file()
    assert "ray-schema.json" in inspect.getsource(validate_config)


# ---- cluster-launcher configs: Ray's own validator ------------------------------------------


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_passes_rays_validator(path):
    prepared = ray_up_validate(load(path))
    assert prepared["provider"]["type"] in {"aws", "gcp"}


BREAKAGES = {
    # name: (how to break a config, the error Ray's validator raises)
    "misspelled top-level key": (lambda c: c.update(idle_timeout_minute=5), jsonschema.ValidationError),
    "misspelled node-type key": (lambda c: _a_worker_type(c).update(max_worker=3), jsonschema.ValidationError),
    "fractional resource": (lambda c: _head_and_workers(c)[0]["resources"].update(CPU=0.5), jsonschema.ValidationError),
    "resource given as a string": (
        lambda c: _head_and_workers(c)[0]["resources"].update(GPU="1"),
        jsonschema.ValidationError,
    ),
    "node type without resources": (lambda c: _a_worker_type(c).pop("resources"), jsonschema.ValidationError),
    "negative idle timeout": (lambda c: c.update(idle_timeout_minutes=-1), jsonschema.ValidationError),
    "misspelled auth key": (lambda c: c["auth"].update(ssh_usr="ubuntu"), jsonschema.ValidationError),
    "setup command that is not a string": (
        lambda c: c["setup_commands"].append({"pip": "install"}),
        jsonschema.ValidationError,
    ),
    "head type that does not exist": (lambda c: c.update(head_node_type="no_such_type"), ValueError),
    "min_workers above max_workers": (lambda c: _a_worker_type(c).update(min_workers=c["max_workers"] + 1), ValueError),
}


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_copy_is_rejected(path, breakage):
    config = load(path)
    ray_up_validate(config)  # the original passes ...
    broken = copy.deepcopy(config)
    break_it, error = BREAKAGES[breakage]
    break_it(broken)
    with pytest.raises(error):  # ... the broken copy does not
        ray_up_validate(broken)


# ---- cluster-launcher configs: what this project needs ----------------------------------------


def readme_replay_shards() -> int:
    """Replay shards of the README's cluster runs (each one a num_cpus=1 actor)."""
    shards = {
        cfg.replay.replay_shards
        for cfg in map(parse_learner_argv, readme_learner_argvs())
        if cfg is not None and cfg.run.address == "auto"
    }
    assert len(shards) == 1, shards
    return shards.pop()


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_head_is_the_gpu_learner_node_with_a_slot_per_replay_shard(path):
    head, _ = _head_and_workers(load(path))
    res = head["resources"]
    assert res.get("GPU", 0) >= 1, "the learner runs on the head's GPU"
    assert res.get("learner") == 1, "the custom resource that marks the learner's node"
    # A CPU slot per replay shard and no more: more would let actors onto the GPU node.
    assert res.get("CPU") == readme_replay_shards()


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_workers_are_autoscaled_cpu_nodes_for_actors(path):
    config = ray_up_validate(load(path))
    _, workers = _head_and_workers(config)
    assert workers
    for name, t in workers.items():
        assert t["resources"].get("CPU", 0) >= 1, name
        assert "GPU" not in t["resources"] and "learner" not in t["resources"], name
        assert t["min_workers"] < t["max_workers"], f"{name}: not autoscaled"
    assert config["idle_timeout_minutes"] > 0


def readme_learner_argvs() -> list[list[str]]:
    return [argv for tool, argv in readme_commands() if tool == "learner.main"]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_the_cluster_can_grow_to_the_readme_run(path):
    """learner.main needs a CPU per actor and per replay shard in the cluster."""
    config = ray_up_validate(load(path))
    head, workers = _head_and_workers(config)
    most = head["resources"]["CPU"] + sum(t["max_workers"] * t["resources"]["CPU"] for t in workers.values())
    biggest_run = max(
        int(argv[argv.index("--num-actors") + 1]) for argv in readme_learner_argvs() if "--num-actors" in argv
    )
    assert most >= biggest_run + readme_replay_shards(), f"at most {most} CPUs; the README runs {biggest_run} actors"


def _start_commands(config: dict) -> list[str]:
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_dashboard_is_local_and_token_auth_is_on(path):
    config = load(path)
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--head" in head_start
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head_start), head_start
    for value in _strings(config):
        assert "0.0.0.0" not in value, value
        assert not re.search(r"RAY_AUTH_MODE=['\"]?disabled", value), value
    for start in _start_commands(config):
        assert "RAY_AUTH_MODE=token" in start, start
    # Every node gets the locally generated token (Ray's recipe for `ray up`).
    mounts = config["file_mounts"]
    assert any(
        remote.endswith("/.ray/auth_token") and local == "~/.ray/auth_token" for remote, local in mounts.items()
    ), mounts


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_every_node_installs_torch_then_the_project(path):
    config = ray_up_validate(load(path))  # merges setup_commands into the head/worker lists
    (repo,) = [remote for remote, local in config["file_mounts"].items() if (ROOT / local).resolve() == ROOT]
    assert (ROOT / "pyproject.toml").is_file()
    for kind, cuda in (("head_setup_commands", True), ("worker_setup_commands", False)):
        cmds = config[kind]
        project = [i for i, c in enumerate(cmds) if re.search(rf"pip install .*-e {re.escape(repo)}(\s|$)", c)]
        torch = [i for i, c in enumerate(cmds) if re.search(r"pip install .*\btorch\b", c)]
        assert project and torch, f"{kind}: {cmds}"
        assert torch[0] < project[0], f"{kind}: torch must be installed before the project"
        index = re.search(r"download\.pytorch\.org/whl/(\w+)", cmds[torch[0]]).group(1)
        assert index.startswith("cu") == cuda, f"{kind}: torch from the {index} index"


AUTOSCALER_PACKAGE = {"aws": "boto3", "gcp": "google-api-python-client"}


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_head_has_the_cloud_client_the_autoscaler_needs(path):
    config = load(path)
    package = AUTOSCALER_PACKAGE[config["provider"]["type"]]
    assert any(re.search(rf"pip install .*\b{re.escape(package)}\b", c) for c in config["head_setup_commands"])


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_every_command_is_valid_shell(path):
    """A YAML comment marker inside a plain scalar silently cuts a command short; bash -n sees it."""
    config = load(path)
    keys = [
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ]
    cmds = [c for k in keys for c in config.get(k, [])]
    assert cmds
    for cmd in cmds:
        shlex.split(cmd)
        check = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert check.returncode == 0, f"{cmd!r}: {check.stderr}"


# ---- KubeRay --------------------------------------------------------------------------------

KUBERAY = DEPLOY / "kuberay.yaml"


def rayjob() -> dict:
    jobs = [d for d in _docs(KUBERAY) if d["kind"] == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def _container(pod_template: dict, name: str) -> dict:
    (c,) = [c for c in pod_template["spec"]["containers"] if c["name"] == name]
    return c


def test_kuberay_is_a_rayjob_with_a_gpu_head():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]
    limits = _container(head["template"], "ray-head")["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    params = head["rayStartParams"]
    cfg = parse_learner_argv(kuberay_entrypoint()[3:])
    assert int(params["num-cpus"]) == cfg.replay.replay_shards, "a CPU slot per replay shard on the head"
    assert "learner" in params["resources"]


def test_kuberay_workers_are_an_autoscaled_cpu_group():
    spec = rayjob()["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["minReplicas"] < g["maxReplicas"], g[
            "groupName"
        ]
        for c in g["template"]["spec"]["containers"]:
            assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), g["groupName"]


def kuberay_entrypoint() -> list[str]:
    return shlex.split(rayjob()["spec"]["entrypoint"])


def test_kuberay_entrypoint_runs_learner_main_on_the_cluster():
    argv = kuberay_entrypoint()
    assert argv[:3] == ["python", "-m", "learner.main"]
    cfg = parse_learner_argv(argv[3:])
    assert cfg.run.address == "auto"
    # The run directory must outlive the pods: it is on a mounted volume of the head.
    run_dir = Path(cfg.run.run_dir)
    head = rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    mounts = [Path(m["mountPath"]) for m in _container(head, "ray-head").get("volumeMounts", [])]
    assert run_dir.is_absolute() and any(m in run_dir.parents for m in mounts), (run_dir, mounts)


def test_kuberay_cluster_has_the_cpus_learner_main_checks_for_at_start():
    """learner.main stops at once if the cluster lacks a CPU per actor and per replay shard."""
    cfg = parse_learner_argv(kuberay_entrypoint()[3:])
    spec = rayjob()["spec"]["rayClusterSpec"]
    cpus = int(spec["headGroupSpec"]["rayStartParams"]["num-cpus"])
    for g in spec["workerGroupSpecs"]:
        (c,) = g["template"]["spec"]["containers"]
        cpus += g["minReplicas"] * int(g["rayStartParams"].get("num-cpus", c["resources"]["limits"]["cpu"]))
    assert cpus >= cfg.actors.num_actors + cfg.replay.replay_shards


def test_kuberay_keeps_token_auth_on_and_one_image():
    job = rayjob()
    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    for value in _strings(job):
        assert not re.search(r"RAY_AUTH_MODE", value) or "disabled" not in value, value
    images = {_container(spec["headGroupSpec"]["template"], "ray-head")["image"]}
    images |= {c["image"] for g in spec["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1, images
    assert spec["rayVersion"] == ray.__version__ == dockerfile_base_ray_version()


def test_kuberay_volume_claims_exist():
    docs = _docs(KUBERAY)
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    head = rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    used = {v["persistentVolumeClaim"]["claimName"] for v in head.get("volumes", []) if "persistentVolumeClaim" in v}
    assert used and used <= claims


# ---- Dockerfile -----------------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def dockerfile_base_ray_version() -> str:
    (base,) = [rest for op, rest in dockerfile_instructions() if op == "FROM"]
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-gpu", base)
    assert m, base
    return m.group(1)


def test_dockerfile_installs_the_project_as_a_non_root_user():
    steps = dockerfile_instructions()
    assert dockerfile_base_ray_version() == ray.__version__
    copy_at = next(i for i, (op, rest) in enumerate(steps) if op == "COPY" and re.search(r"(^|\s)\. /app$", rest))
    project_at = next(
        i for i, (op, rest) in enumerate(steps) if op == "RUN" and re.search(r"pip install .*-e /app\b", rest)
    )
    torch_at = next(
        i for i, (op, rest) in enumerate(steps) if op == "RUN" and re.search(r"pip install .*\btorch==", rest)
    )
    assert torch_at < copy_at < project_at
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_dockerignore_keeps_local_environments_out_of_the_image():
    ignored = {line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runs"} <= ignored


# ---- README commands --------------------------------------------------------------------------

README = DEPLOY / "README.md"


def readme_commands() -> list[tuple[str, list[str]]]:
    """(tool, argv) for every `ray ...` and `python -m learner.main ...` in README code blocks.

    A `ray job submit ... -- python -m learner.main ...` line gives both.
    """
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if not argv:
                continue
            if argv[0] == "ray":
                out.append(("ray", argv[1 : argv.index("--")] if "--" in argv else argv[1:]))
            # Wherever it is started: directly, after `ray job submit --`, in `docker run`.
            for i in range(len(argv) - 2):
                if argv[i : i + 3] == ["python", "-m", "learner.main"]:
                    out.append(("learner.main", argv[i + 3 :]))
    return out


def parse_learner_argv(argv: list[str]):
    """Flags checked by learner.main's own parser; the config is built unless it is a --resume."""
    from common.cli import OneLineParser
    from common.config import build_arg_parser
    from learner import main as learner_main

    ns = build_arg_parser(parser_class=OneLineParser).parse_args(argv)
    if getattr(ns, "run.resume") is not None:
        return None
    cfg, _ = learner_main.parse(argv)
    return cfg


def test_readme_has_the_walkthrough():
    subcommands = {" ".join(argv[:2]) for tool, argv in readme_commands() if tool == "ray"}
    for needed in (
        "up deploy/aws.yaml",
        "dashboard deploy/aws.yaml",
        "job submit",
        "rsync-down deploy/aws.yaml",
        "down deploy/aws.yaml",
    ):
        assert needed in subcommands, needed
    text = README.read_text()
    assert "kubectl apply -f deploy/kuberay.yaml" in text and "docker build -f deploy/Dockerfile" in text
    assert "https://docs.ray.io/en/latest/ray-security/token-auth.html" in text


def test_readme_learner_commands_parse():
    argvs = readme_learner_argvs()
    assert argvs
    for argv in argvs:
        cfg = parse_learner_argv(argv)
        assert cfg is None or cfg.run.address == "auto" or "--address" not in argv


def _click_command(argv: list[str]):
    import click
    from ray.scripts.scripts import cli

    cmd, rest = cli, list(argv)
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    assert not isinstance(cmd, click.Group), f"ray {' '.join(argv)}: no such command"
    return cmd, rest


def test_readme_ray_commands_use_flags_that_exist():
    """No invented flags: each `ray ...` line in the README against Ray's own CLI."""
    ray_lines = [argv for tool, argv in readme_commands() if tool == "ray"]
    assert ray_lines
    for argv in ray_lines:
        cmd, rest = _click_command(argv)
        known = {o for p in cmd.params for o in list(p.opts) + list(p.secondary_opts)}
        for token in rest:
            if token.startswith("-"):
                assert token.split("=", 1)[0] in known, (
                    f"ray {' '.join(argv)}: {token} is not an option of `{cmd.name}`"
                )


def test_readme_ray_job_submit_joins_the_cluster_from_the_tunnel():
    submits = [argv for tool, argv in readme_commands() if tool == "ray" and argv[:2] == ["job", "submit"]]
    assert submits
    for argv in submits:
        assert argv[argv.index("--address") + 1] == "http://127.0.0.1:8265"


def test_readme_python_one_liners_compile_and_import():
    """The `ray exec ... 'python -c "..."'` snippets: valid Python, names that exist in Ray."""
    snippets = []
    for tool, argv in readme_commands():
        if tool == "ray" and argv[0] == "exec":
            inner = shlex.split(argv[2])
            if inner[:2] == ["python", "-c"]:
                snippets.append(inner[2])
    assert snippets
    for code in snippets:
        compile(code, "<README>", "exec")
        for module, names in re.findall(r"from ([\w.]+) import ([\w, ]+)", code):
            imported = __import__(module, fromlist=["_"])
            for name in names.split(","):
                assert hasattr(imported, name.strip()), f"{module}.{name.strip()}"
