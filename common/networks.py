"""Q-networks: the Nature CNN for Atari frames, MinAtar's small CNN for its 10x10 states,
an MLP for flat vectors, each with a dueling head (Wang et al. 2016, Ape-X) or the plain one
of Nature DQN (Mnih et al. 2015).

All take the stacked observation as it comes from the replay or the actor's stacker
(``uint8[B, 4, 84, 84]``, ``uint8[B, 1, C, 10, 10]`` or ``float32[B, 1, D]``) and return
``float32[B, num_actions]``.
uint8 frames are converted to float and scaled on whatever device the network is on, so
batches cross to a GPU as bytes, a quarter of the float32 size.
"""

from __future__ import annotations

import torch
from torch import nn


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) - mean_a A(s, a) (Wang et al. 2016)."""

    def __init__(self, in_features: int, num_actions: int, hidden: int):
        super().__init__()
        self.value = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.advantage = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adv = self.advantage(x)
        return self.value(x) + adv - adv.mean(dim=1, keepdim=True)


def q_head(in_features: int, num_actions: int, hidden: int, dueling: bool) -> nn.Module:
    """The dueling head, or Nature's plain one: Linear(in, hidden)-ReLU-Linear(hidden, A)."""
    if dueling:
        return DuelingHead(in_features, num_actions, hidden)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))


class NatureCNN(nn.Module):
    """The Nature DQN torso (Mnih et al. 2015) and a 512-unit head. Input uint8[B, S, 84, 84]."""

    def __init__(self, stack_size: int, num_actions: int, dueling: bool = True):
        super().__init__()
        self.torso = nn.Sequential(
            nn.Conv2d(stack_size, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = q_head(64 * 7 * 7, num_actions, 512, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float() / 255.0))


class MinAtarCNN(nn.Module):
    """MinAtar's DQN network (Young & Tian 2019): one Conv(16, 3x3, stride 1)-ReLU over the
    10x10 state, then Linear(128)-ReLU and the output, here the head (plain: Linear(1024,
    128)-ReLU-Linear(128, A), the paper's; dueling: value and advantage streams of 128).
    Input uint8[B, S, C, 10, 10] of 0/1 (S stacked states, folded into the channels)."""

    def __init__(self, channels: int, stack_size: int, num_actions: int, dueling: bool = True, side: int = 10):
        super().__init__()
        self.torso = nn.Sequential(
            nn.Flatten(1, 2), nn.Conv2d(stack_size * channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten()
        )
        self.head = q_head(16 * (side - 2) ** 2, num_actions, 128, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float()))


class MLP(nn.Module):
    """Two hidden layers and a head. Input float32[B, S, D]."""

    def __init__(self, in_features: int, num_actions: int, hidden: int = 128, dueling: bool = True):
        super().__init__()
        self.torso = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = q_head(hidden, num_actions, hidden, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float()))


def build_q_network(frame_shape: tuple[int, ...], stack_size: int, num_actions: int, dueling: bool = True) -> nn.Module:
    """The network for this observation: the Nature CNN for 84x84 frames, MinAtar's CNN for
    ``(C, 10, 10)`` states, an MLP for flat vectors."""
    if len(frame_shape) == 3:
        if tuple(frame_shape[1:]) != (10, 10):
            raise ValueError(f"the MinAtar CNN needs (C, 10, 10) frames, got {frame_shape}")
        return MinAtarCNN(frame_shape[0], stack_size, num_actions, dueling)
    if len(frame_shape) == 2:
        if tuple(frame_shape) != (84, 84):
            raise ValueError(f"the Nature CNN needs 84x84 frames, got {frame_shape}")
        return NatureCNN(stack_size, num_actions, dueling)
    if len(frame_shape) == 1:
        return MLP(stack_size * frame_shape[0], num_actions, dueling=dueling)
    raise ValueError(f"no Q-network for frames of shape {frame_shape}")


def network_signature(frame_shape, stack_size: int, num_actions: int, dueling: bool = True) -> dict:
    """What a checkpoint must match to be loaded into this network."""
    return {
        "frame_shape": list(frame_shape),
        "stack_size": int(stack_size),
        "num_actions": int(num_actions),
        "dueling": bool(dueling),
    }


def upgrade_signature(signature: dict) -> dict:
    """A signature in today's form: checkpoints written before the head was a setting have
    no ``dueling`` key, and all of them had the dueling head."""
    return {"dueling": True, **signature}


def _dueling(learner_cfg) -> bool:
    # None (no config, or one not yet resolved) is the default preset's head: dueling.
    return learner_cfg is None or learner_cfg.dueling is not False


def q_network_for(spec, learner_cfg=None) -> nn.Module:
    """The Q-network for an :class:`~common.env_spec.EnvSpec` with the learner's settings.

    The one place the trainer, the actors and the evaluator build a network from, so all
    three always build the same one (``learner_cfg`` is a resolved ``LearnerConfig`` or None)."""
    return build_q_network(spec.frame_shape, spec.stack_size, spec.num_actions, _dueling(learner_cfg))


def signature_for(spec, learner_cfg=None) -> dict:
    """The signature a checkpoint of :func:`q_network_for`'s network carries."""
    return network_signature(spec.frame_shape, spec.stack_size, spec.num_actions, _dueling(learner_cfg))
