"""Q-networks: a dueling Nature CNN for Atari frames, a dueling MLP for flat vectors.

Both take the stacked observation as it comes from the replay or the actor's stacker
(``uint8[B, 4, 84, 84]`` or ``float32[B, 1, D]``) and return ``float32[B, num_actions]``.
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


class NatureDuelingCNN(nn.Module):
    """The Nature DQN torso (Mnih et al. 2015) with a dueling head. Input uint8[B, S, 84, 84]."""

    def __init__(self, stack_size: int, num_actions: int):
        super().__init__()
        self.torso = nn.Sequential(
            nn.Conv2d(stack_size, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.head = DuelingHead(64 * 7 * 7, num_actions, 512)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float() / 255.0))


class DuelingMLP(nn.Module):
    """Two hidden layers and a dueling head. Input float32[B, S, D]."""

    def __init__(self, in_features: int, num_actions: int, hidden: int = 128):
        super().__init__()
        self.torso = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = DuelingHead(hidden, num_actions, hidden)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float()))


def build_q_network(frame_shape: tuple[int, ...], stack_size: int, num_actions: int) -> nn.Module:
    """The network for this observation: CNN for 84x84 frames, MLP for flat vectors."""
    if len(frame_shape) == 2:
        if tuple(frame_shape) != (84, 84):
            raise ValueError(f"the Nature CNN needs 84x84 frames, got {frame_shape}")
        return NatureDuelingCNN(stack_size, num_actions)
    if len(frame_shape) == 1:
        return DuelingMLP(stack_size * frame_shape[0], num_actions)
    raise ValueError(f"no Q-network for frames of shape {frame_shape}")


def network_signature(frame_shape, stack_size: int, num_actions: int) -> dict:
    """What a checkpoint must match to be loaded into this network."""
    return {"frame_shape": list(frame_shape), "stack_size": int(stack_size), "num_actions": int(num_actions)}


def q_network_for(spec, learner_cfg=None) -> nn.Module:
    """The Q-network for an :class:`~common.env_spec.EnvSpec` with the learner's settings.

    The one place the trainer, the actors and the evaluator build a network from, so all
    three always build the same one (``learner_cfg`` is a ``LearnerConfig`` or None)."""
    return build_q_network(spec.frame_shape, spec.stack_size, spec.num_actions)


def signature_for(spec, learner_cfg=None) -> dict:
    """The signature a checkpoint of :func:`q_network_for`'s network carries."""
    return network_signature(spec.frame_shape, spec.stack_size, spec.num_actions)
