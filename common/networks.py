"""Q-networks: a torso (``common/torsos.py``) and a head (``common/heads.py``).

The torsos: the Nature CNN or the IMPALA CNN for Atari frames, MinAtar's small CNN for its
10x10 states, an MLP for flat vectors. The heads: expected Q (DQN), C51, QR-DQN or IQN, each
plain or dueling, with plain or noisy linear layers.

All take the stacked observation as it comes from the replay or the actor's stacker
(``uint8[B, 4, 84, 84]``, ``uint8[B, 1, C, 10, 10]`` or ``float32[B, 1, D]``). ``forward``
returns the expected Q-values ``float32[B, A]`` (what acting and evaluation need, whatever the
head); :meth:`QNetwork.outputs` returns the head's own outputs (what the learner's loss needs).
uint8 frames are converted to float and scaled on whatever device the network is on, so
batches cross to a GPU as bytes, a quarter of the float32 size.
"""

from __future__ import annotations

import torch
from torch import nn

from common.config.fields import TORSOS
from common.heads import DuelingHead, HeadSpec, TauEmbedding, expected_q, q_head, support
from common.noisy import noisy_layers
from common.torsos import ImpalaTorso, minatar_torso, mlp_torso, nature_torso

__all__ = ["DuelingHead", "HeadSpec", "QNetwork", "NatureCNN", "ImpalaCNN", "MinAtarCNN", "MLP", "build_q_network"]


class QNetwork(nn.Module):
    """``torso`` (``feature_dim`` features) and a head of ``hidden`` units per ``head`` spec.

    ``divisor``: the observation is divided by it after the cast to float (255 for frames)."""

    def __init__(self, torso: nn.Module, feature_dim: int, num_actions: int, hidden: int, head: HeadSpec, divisor=1.0):
        super().__init__()
        self.spec, self.num_actions, self.divisor = head, num_actions, float(divisor)
        self.torso = torso
        if head.kind == "iqn":
            self.embedding = TauEmbedding(head.embedding_dim, feature_dim)
        self.head = q_head(
            feature_dim, num_actions, hidden, head.dueling, head.outputs_per_action, head.noisy, head.sigma0
        )
        atoms = support(head) if head.kind == "c51" else torch.zeros(0)
        self.register_buffer("atoms", atoms, persistent=False)

    @property
    def kind(self) -> str:
        return self.spec.kind

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        return self.torso(x / self.divisor if self.divisor != 1.0 else x)

    def outputs(self, obs: torch.Tensor, taus: torch.Tensor | None = None) -> torch.Tensor:
        """The head's outputs: Q ``[B, A]`` (expected), logits ``[B, A, atoms]`` (c51),
        quantile values ``[B, A, N]`` (qr) or ``[B, A, T]`` at ``taus float[B, T]`` (iqn; None:
        ``acting_samples`` fractions drawn uniformly from torch's generator)."""
        x = self.features(obs)
        if self.spec.kind != "iqn":
            return self.head(x)
        if taus is None:
            taus = torch.rand(x.shape[0], self.spec.acting_samples, device=x.device)
        t = taus.shape[1]
        mixed = (x.unsqueeze(1) * self.embedding(taus).to(x.dtype)).flatten(0, 1)  # [B * T, F]
        return self.head(mixed).view(x.shape[0], t, self.num_actions).transpose(1, 2)

    def q(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected Q ``float32[B, A]`` from :meth:`outputs`."""
        return expected_q(self.spec.kind, outputs, self.atoms)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(self.outputs(obs))

    @property
    def noisy(self) -> bool:
        return bool(noisy_layers(self))


class NatureCNN(QNetwork):
    """The Nature DQN torso (Mnih et al. 2015) and a 512-unit head. Input uint8[B, S, 84, 84]."""

    def __init__(self, stack_size: int, num_actions: int, dueling: bool = True, head: HeadSpec | None = None):
        head = head or HeadSpec(dueling=dueling)
        super().__init__(nature_torso(stack_size), 64 * 7 * 7, num_actions, 512, head, divisor=255.0)


class ImpalaCNN(QNetwork):
    """The IMPALA torso (``common.torsos.ImpalaTorso``) and a 512-unit head. Input uint8[B, S, H, W]."""

    def __init__(self, stack_size: int, num_actions: int, head: HeadSpec, width: int = 1, spectral_norm=False):
        torso = ImpalaTorso(stack_size, width, spectral_norm)
        super().__init__(torso, torso.features, num_actions, 512, head, divisor=255.0)


class MinAtarCNN(QNetwork):
    """MinAtar's DQN network (Young & Tian 2019): one Conv(16, 3x3, stride 1)-ReLU over the
    10x10 state, then Linear(128)-ReLU and the output, here the head (plain: Linear(1024,
    128)-ReLU-Linear(128, A), the paper's; dueling: value and advantage streams of 128).
    Input uint8[B, S, C, 10, 10] of 0/1 (S stacked states, folded into the channels)."""

    def __init__(self, channels, stack_size, num_actions, dueling=True, side=10, head: HeadSpec | None = None):
        head = head or HeadSpec(dueling=dueling)
        super().__init__(minatar_torso(channels, stack_size), 16 * (side - 2) ** 2, num_actions, 128, head)


class MLP(QNetwork):
    """Two hidden layers and a head. Input float32[B, S, D]."""

    def __init__(self, in_features, num_actions, hidden=128, dueling=True, head: HeadSpec | None = None):
        head = head or HeadSpec(dueling=dueling)
        super().__init__(mlp_torso(in_features, hidden), hidden, num_actions, hidden, head)


def torso_name(frame_shape, torso: str = "nature") -> str:
    """The torso built for these frames: ``torso`` for 84x84 frames, else the family's own."""
    return {3: "minatar", 2: torso, 1: "mlp"}.get(len(frame_shape), "none")


def build_q_network(
    frame_shape: tuple[int, ...],
    stack_size: int,
    num_actions: int,
    dueling: bool = True,
    head: HeadSpec | None = None,
    torso: str = "nature",
    width: int = 1,
    spectral_norm: bool = False,
) -> QNetwork:
    """The network for this observation: the Nature or IMPALA CNN for 84x84 frames, MinAtar's
    CNN for ``(C, 10, 10)`` states, an MLP for flat vectors; ``head`` (default: expected Q,
    ``dueling``) on top."""
    head = head or HeadSpec(dueling=dueling)
    if torso not in TORSOS:
        raise ValueError(f"torso must be one of {TORSOS}, got {torso!r}")
    if torso != "nature" and len(frame_shape) != 2:
        raise ValueError(f"the {torso} torso needs 84x84 frames, got {tuple(frame_shape)}")
    if len(frame_shape) == 3:
        if tuple(frame_shape[1:]) != (10, 10):
            raise ValueError(f"the MinAtar CNN needs (C, 10, 10) frames, got {frame_shape}")
        return MinAtarCNN(frame_shape[0], stack_size, num_actions, head=head)
    if len(frame_shape) == 2:
        if tuple(frame_shape) != (84, 84):
            raise ValueError(f"the Nature CNN needs 84x84 frames, got {frame_shape}")
        if torso == "impala":
            return ImpalaCNN(stack_size, num_actions, head, width, spectral_norm)
        return NatureCNN(stack_size, num_actions, head=head)
    if len(frame_shape) == 1:
        return MLP(stack_size * frame_shape[0], num_actions, head=head)
    raise ValueError(f"no Q-network for frames of shape {frame_shape}")


def network_signature(
    frame_shape, stack_size: int, num_actions: int, dueling: bool = True, head: HeadSpec | None = None, **torso
) -> dict:
    """What a checkpoint must match to be loaded into this network: the env's shapes, the
    head (kind and its sizes, dueling, noisy) and the torso (name; IMPALA's width and
    spectral norm). ``torso``: ``torso=``, ``width=``, ``spectral_norm=`` as :func:`build_q_network`."""
    head = head or HeadSpec(dueling=dueling)
    sig = {
        "frame_shape": list(frame_shape),
        "stack_size": int(stack_size),
        "num_actions": int(num_actions),
        "dueling": bool(head.dueling),
        "head": head.kind,
        "noisy": bool(head.noisy),
        "torso": torso_name(frame_shape, torso.get("torso", "nature")),
    }
    if head.kind == "c51":
        sig.update(num_atoms=head.num_atoms, v_min=float(head.v_min), v_max=float(head.v_max))
    elif head.kind == "qr":
        sig.update(num_quantiles=head.num_quantiles)
    elif head.kind == "iqn":
        sig.update(embedding_dim=head.embedding_dim)
    if sig["torso"] == "impala":
        sig.update(width=int(torso.get("width", 1)), spectral_norm=bool(torso.get("spectral_norm", False)))
    return sig


def upgrade_signature(signature: dict) -> dict:
    """A signature in today's form: checkpoints written before the head was a setting have
    no ``dueling`` key (all had the dueling head); before the distributional heads, no
    ``head``, ``noisy`` or ``torso`` (all were expected-Q, plain linear layers, the family's
    own torso)."""
    shape = signature.get("frame_shape", [])
    defaults = {"dueling": True, "head": "expected", "noisy": False, "torso": torso_name(shape)}
    return {**defaults, **signature}


def _setting(learner_cfg, name: str, default):
    """A learner setting, or ``default`` without a config or while the setting is auto (None)."""
    value = getattr(learner_cfg, name, None) if learner_cfg is not None else None
    return default if value is None else value


def head_spec_for(learner_cfg=None) -> HeadSpec:
    """The head of a resolved ``LearnerConfig`` (None, or 'auto' values still None: the
    default preset's, a dueling expected-Q head)."""

    return HeadSpec(
        kind=_setting(learner_cfg, "head", "expected"),
        dueling=_setting(learner_cfg, "dueling", True) is not False,
        noisy=bool(_setting(learner_cfg, "noisy", False)),
        sigma0=_setting(learner_cfg, "noisy_sigma0", 0.5),
        num_atoms=_setting(learner_cfg, "num_atoms", 51),
        v_min=_setting(learner_cfg, "v_min", -10.0),
        v_max=_setting(learner_cfg, "v_max", 10.0),
        num_quantiles=_setting(learner_cfg, "num_quantiles", 200),
        embedding_dim=_setting(learner_cfg, "iqn_embedding", 64),
        acting_samples=_setting(learner_cfg, "iqn_acting_samples", 32),
    )


def _torso_settings(learner_cfg) -> dict:
    return {
        "torso": _setting(learner_cfg, "torso", "nature"),
        "width": _setting(learner_cfg, "torso_width", 1),
        "spectral_norm": bool(_setting(learner_cfg, "spectral_norm", False)),
    }


def q_network_for(spec, learner_cfg=None) -> QNetwork:
    """The Q-network for an :class:`~common.env_spec.EnvSpec` with the learner's settings.

    The one place the trainer, the actors and the evaluator build a network from, so all
    three always build the same one (``learner_cfg`` is a resolved ``LearnerConfig`` or None)."""
    head = head_spec_for(learner_cfg)
    return build_q_network(
        spec.frame_shape, spec.stack_size, spec.num_actions, head=head, **_torso_settings(learner_cfg)
    )


def signature_for(spec, learner_cfg=None) -> dict:
    """The signature a checkpoint of :func:`q_network_for`'s network carries."""
    head = head_spec_for(learner_cfg)
    return network_signature(
        spec.frame_shape, spec.stack_size, spec.num_actions, head=head, **_torso_settings(learner_cfg)
    )
