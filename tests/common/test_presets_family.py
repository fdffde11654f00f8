"""The presets of issue 21 (rainbow, iqn, btr) and the two before them (apex, nature): each
resolves, through the real argument parser, to its paper's table for Atari and for MinAtar;
the resolved settings build the network and the loss the paper describes; typed flags still
win, and a typed flag the preset's head cannot take is refused by name."""

from types import SimpleNamespace

import pytest

from common.config import ConfigError, build_arg_parser, config_from_args, resolve
from common.config.presets import describe_auto
from common.networks import ImpalaCNN, MinAtarCNN, NatureCNN, head_spec_for, q_network_for, signature_for

ATARI, MINATAR = "ALE/Breakout-v5", "MinAtar/Breakout-v1"


def resolved(*argv, env=ATARI, cuda=False):
    cfg = config_from_args(build_arg_parser().parse_args(["--env", env, *argv]))
    return resolve(cfg, atari=env.startswith("ALE/"), cuda=cuda)


def flat(cfg) -> dict:
    return {f"{s}.{k}": v for s, fields in cfg.to_dict().items() if isinstance(fields, dict) for k, v in fields.items()}


NO_EPSILON = {"actors.epsilon_schedule": "linear", "actors.epsilon_final": 0.0, "actors.epsilon_decay_agent_steps": 1}
EXPECTED_HEAD = {
    "learner.head": "expected",
    "learner.noisy": False,
    "learner.munchausen": False,
    "learner.torso": "nature",
    "learner.spectral_norm": False,
}

# Hessel et al. 2018, Table 1 (frames / 4 = agent steps, agent steps / 4 = updates):
# target period 32K frames = 2,000 updates; learning starts 80K frames = 20K transitions.
RAINBOW_ATARI = {
    **NO_EPSILON,
    "learner.head": "c51",
    "learner.num_atoms": 51,
    "learner.v_min": -10.0,
    "learner.v_max": 10.0,
    "learner.noisy": True,
    "learner.noisy_sigma0": 0.5,
    "learner.dueling": True,
    "learner.double_q": True,
    "learner.munchausen": False,
    "learner.torso": "nature",
    "learner.optimizer": "adam",
    "learner.lr": 6.25e-5,
    "learner.adam_eps": 1.5e-4,
    "learner.batch_size": 32,
    "learner.target_update_period": 2_000,
    "learner.gamma": 0.99,
    "replay.n_step": 3,
    "replay.prioritized": True,
    "replay.priority_alpha": 0.5,
    "replay.priority_beta_start": 0.4,
    "replay.learning_starts": 20_000,
    "replay.replay_capacity": 1_000_000,
    "replay.replay_ratio": 8.0,  # a batch of 32 every 4 agent steps
}
# Obando-Ceron & Castro 2021 (Revisiting Rainbow) on MinAtar: v_max 100, Adam 1e-4,
# replay 100K, learning from 1K, target every 1K agent steps (250 updates).
RAINBOW_MINATAR = {
    **RAINBOW_ATARI,
    "learner.v_min": -100.0,
    "learner.v_max": 100.0,
    "learner.lr": 1e-4,
    "learner.target_update_period": 250,
    "replay.learning_starts": 1_000,
    "replay.replay_capacity": 100_000,
}
# Dabney et al. 2018b as Dopamine runs it (iqn.gin): N = N' = 64, K = 32, embedding 64, n 3,
# uniform replay, no double Q, Adam 5e-5 with eps 0.01 / 32, target every 2,000 updates.
IQN_ATARI = {
    "actors.epsilon_schedule": "linear",
    "actors.epsilon_final": 0.01,
    "actors.epsilon_decay_agent_steps": 250_000,
    "learner.head": "iqn",
    "learner.iqn_tau_samples": 64,
    "learner.iqn_target_samples": 64,
    "learner.iqn_acting_samples": 32,
    "learner.iqn_embedding": 64,
    "learner.kappa": 1.0,
    "learner.noisy": False,
    "learner.munchausen": False,
    "learner.double_q": False,
    "learner.dueling": False,
    "learner.lr": 5e-5,
    "learner.adam_eps": 0.01 / 32,
    "learner.batch_size": 32,
    "learner.target_update_period": 2_000,
    "replay.n_step": 3,
    "replay.prioritized": False,
    "replay.learning_starts": 20_000,
    "replay.replay_ratio": 8.0,
}
IQN_MINATAR = {
    **IQN_ATARI,
    "learner.lr": 1e-4,
    "learner.target_update_period": 250,
    "replay.learning_starts": 1_000,
    "replay.replay_capacity": 100_000,
}
# Clark et al. 2024 (Beyond The Rainbow): IQN + Munchausen + IMPALA x2 + spectral norm +
# dueling + noisy, gamma 0.997, batch 256 every 64 agent steps, Adam 1e-4, alpha 0.2, target 500.
BTR_ATARI = {
    **NO_EPSILON,
    "learner.head": "iqn",
    "learner.munchausen": True,
    "learner.munchausen_tau": 0.03,
    "learner.munchausen_alpha": 0.9,
    "learner.munchausen_l0": -1.0,
    "learner.noisy": True,
    "learner.dueling": True,
    "learner.torso": "impala",
    "learner.torso_width": 2,
    "learner.spectral_norm": True,
    "learner.gamma": 0.997,
    "learner.batch_size": 256,
    "learner.lr": 1e-4,
    "learner.adam_eps": 0.005 / 256,
    "learner.target_update_period": 500,
    "replay.n_step": 3,
    "replay.prioritized": True,
    "replay.priority_alpha": 0.2,
    "replay.replay_ratio": 4.0,  # 256 per 64 agent steps
}
# On MinAtar the family's own network (its torso takes no 10x10 states), with BTR's head.
BTR_MINATAR = {
    **{k: v for k, v in BTR_ATARI.items() if k not in ("learner.adam_eps",)},
    "learner.torso": "nature",
    "learner.gamma": 0.99,
    "learner.batch_size": 32,
    "learner.target_update_period": 250,
    "replay.learning_starts": 1_000,
}
APEX_ATARI_CPU = {
    **EXPECTED_HEAD,
    "actors.epsilon_schedule": "apex",
    "replay.n_step": 3,
    "replay.priority_alpha": 0.6,
    "learner.double_q": True,
    "learner.dueling": True,
    "learner.lr": 1e-4,
    "learner.batch_size": 64,
    "learner.target_update_period": 2_500,
}
APEX_MINATAR = {**APEX_ATARI_CPU, "learner.lr": 2.5e-4, "learner.target_update_period": 1_000}
NATURE_ATARI = {
    **EXPECTED_HEAD,
    "replay.n_step": 1,
    "replay.prioritized": False,
    "learner.double_q": False,
    "learner.dueling": False,
    "learner.optimizer": "rmsprop",
    "learner.batch_size": 32,
    "learner.target_update_period": 10_000,
}
NATURE_MINATAR = {**NATURE_ATARI, "learner.target_update_period": 1_000}

TABLES = [
    ("apex", ATARI, APEX_ATARI_CPU),
    ("apex", MINATAR, APEX_MINATAR),
    ("nature", ATARI, NATURE_ATARI),
    ("nature", MINATAR, NATURE_MINATAR),
    ("rainbow", ATARI, RAINBOW_ATARI),
    ("rainbow", MINATAR, RAINBOW_MINATAR),
    ("iqn", ATARI, IQN_ATARI),
    ("iqn", MINATAR, IQN_MINATAR),
    ("btr", ATARI, BTR_ATARI),
    ("btr", MINATAR, BTR_MINATAR),
]


@pytest.mark.parametrize("preset,env,expected", TABLES, ids=[f"{p}-{e.split('/')[0]}" for p, e, _ in TABLES])
def test_each_preset_resolves_to_its_table(preset, env, expected):
    got = flat(resolved("--preset", preset, env=env))
    assert {k: got[k] for k in expected} == expected
    assert got["run.preset"] == preset


def test_gpu_changes_only_the_batch_where_the_paper_fixes_it():
    # apex scales its batch on a GPU; the later presets keep their paper's batch
    assert resolved("--preset", "apex", cuda=True).learner.batch_size == 512
    for preset, batch in (("rainbow", 32), ("iqn", 32), ("btr", 256)):
        assert resolved("--preset", preset, cuda=True).learner.batch_size == batch


@pytest.mark.parametrize("preset", ["rainbow", "iqn", "btr"])
def test_a_resolved_preset_round_trips_through_config_json(preset):
    from common.config import Config

    cfg = resolved("--preset", preset, env=MINATAR)
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg
    assert resolve(again, atari=False, cuda=False) == cfg


def test_the_resolved_presets_build_their_papers_networks():
    from common.envs import describe_env

    minatar = describe_env(MINATAR)
    rainbow = resolved("--preset", "rainbow", env=MINATAR).learner
    spec = head_spec_for(rainbow)
    assert (spec.kind, spec.num_atoms, spec.v_min, spec.v_max, spec.noisy, spec.dueling) == (
        "c51",
        51,
        -100.0,
        100.0,
        True,
        True,
    )
    net = q_network_for(minatar, rainbow)
    assert isinstance(net, MinAtarCNN) and net.kind == "c51" and net.noisy
    assert net.atoms.numel() == 51 and net.atoms[0].item() == -100 and net.atoms[-1].item() == 100
    sig = signature_for(minatar, rainbow)
    assert sig["head"] == "c51" and sig["num_atoms"] == 51 and sig["noisy"] is True and sig["torso"] == "minatar"

    iqn = resolved("--preset", "iqn", env=MINATAR).learner
    spec = head_spec_for(iqn)
    assert (spec.kind, spec.embedding_dim, spec.acting_samples, spec.dueling, spec.noisy) == (
        "iqn",
        64,
        32,
        False,
        False,
    )

    btr_net = q_network_for(minatar, resolved("--preset", "btr", env=MINATAR).learner)
    assert isinstance(btr_net, MinAtarCNN) and btr_net.kind == "iqn" and btr_net.noisy


def test_btr_on_atari_builds_the_wide_impala_network_with_spectral_norm():
    from common.torsos import SpectralNormConv2d

    btr = resolved("--preset", "btr").learner
    atari = SimpleNamespace(frame_shape=(84, 84), stack_size=4, num_actions=4)  # an EnvSpec's network facts
    net = q_network_for(atari, btr)
    assert isinstance(net, ImpalaCNN) and net.torso.features == 32 * 2 * 36
    assert sum(isinstance(m, SpectralNormConv2d) for m in net.modules()) == 12
    sig = signature_for(atari, btr)
    assert (sig["torso"], sig["width"], sig["spectral_norm"], sig["head"]) == ("impala", 2, True, "iqn")
    rainbow_net = q_network_for(atari, resolved("--preset", "rainbow").learner)
    assert isinstance(rainbow_net, NatureCNN) and rainbow_net.kind == "c51"


def test_the_presets_loss_settings():
    from learner.dqn import loss_spec_for

    btr = resolved("--preset", "btr").learner
    spec = loss_spec_for(btr, "iqn")
    assert spec.munchausen == (0.03, 0.9, -1.0) and (spec.tau_samples, spec.target_samples) == (8, 8)
    iqn = loss_spec_for(resolved("--preset", "iqn").learner, "iqn")
    assert iqn.munchausen is None and (iqn.tau_samples, iqn.target_samples, iqn.double_q) == (64, 64, False)
    rainbow = loss_spec_for(resolved("--preset", "rainbow").learner, "c51")
    assert rainbow.munchausen is None and rainbow.double_q is True


def test_typed_flags_win_over_the_family_presets():
    cfg = resolved("--preset", "rainbow", "--head", "qr", "--noisy", "off", "--v-max", "20", env=MINATAR).learner
    assert (cfg.head, cfg.noisy, cfg.v_max, cfg.v_min) == ("qr", False, 20.0, -100.0)
    assert resolved("--preset", "btr", "--torso-width", "1").learner.torso_width == 1
    assert resolved("--preset", "iqn", "--iqn-acting-samples", "8").learner.iqn_acting_samples == 8


@pytest.mark.parametrize(
    "argv,env,needle",
    [
        (["--preset", "rainbow", "--munchausen", "on"], MINATAR, "--munchausen=on"),  # the preset's head is c51
        (["--preset", "rainbow", "--v-min", "200"], MINATAR, "--v-min=200"),  # above the preset's v_max 100
        (["--preset", "btr", "--torso", "impala"], MINATAR, "--torso=impala"),
        (["--preset", "apex", "--head", "qr", "--munchausen", "on"], ATARI, "--munchausen=on"),
    ],
)
def test_a_typed_flag_the_preset_cannot_take_is_refused_by_name(argv, env, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        resolved(*argv, env=env)
    assert "\n" not in str(err.value)


def test_help_gives_each_family_presets_value():
    assert "rainbow preset c51" in describe_auto("learner", "head")
    assert "btr preset iqn" in describe_auto("learner", "head")
    assert "100 for MinAtar" in describe_auto("learner", "v_max")
    assert "btr preset impala for Atari" in describe_auto("learner", "torso")
