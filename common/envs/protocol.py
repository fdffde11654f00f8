"""The Atari evaluation protocol's numbers, written once: every default that follows it reads them here.

Nature DQN, Ape-X and the papers that compare with them play each Atari game the same way:
an episode is at most 108,000 emulator frames (30 minutes at 60 Hz), starts with up to 30
no-op actions, repeats each action for 4 frames, shows the network 84x84 grayscale frames, 4
of them stacked, and has no sticky actions. Every default that follows the protocol (the
env modules', ``make_vector_env``'s, the run configuration's) reads it here, so the protocol
is changed or checked in one place; MinAtar's games take the same episode cap, counted in
agent steps. The emulator's seed range is here too, for the same readers. The module
imports nothing, so that the configuration (standard library only) can read it without
loading numpy, OpenCV or the emulators.
"""

#: Emulator frames before an Atari episode is truncated: 30 minutes at 60 frames a second.
ATARI_MAX_EPISODE_FRAMES = 108_000
#: The most no-op actions played after a reset (a random 1..30 each game).
ATARI_NOOP_MAX = 30
#: Emulator frames per agent step: each action repeated 4 times, the last two frames max-pooled.
ATARI_FRAME_SKIP = 4
#: (height, width) of the grayscale frame the network sees.
ATARI_FRAME_SHAPE = (84, 84)
#: Frames the actor stacks into one observation.
ATARI_STACK_SIZE = 4
#: No sticky actions: the Nature DQN / Ape-X protocol (Machado et al. 2018 recommend 0.25).
ATARI_REPEAT_ACTION_PROBABILITY = 0.0
#: ALE's ``random_seed`` is a signed 32-bit int: env i's seed ``seed + i`` is taken modulo this.
ALE_SEED_LIMIT = 2**31
