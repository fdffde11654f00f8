"""The driver's one start-up line for every actor's acting network (not one line each)."""

from actors.remote import actors_summary


def test_identical_actors_are_one_description():
    line = actors_summary(["bf16 (3 layers converted) [auto]"] * 16)
    assert line == "actors: 16 acting with bf16 (3 layers converted) [auto]" and "\n" not in line


def test_different_actors_are_counted_by_description():
    line = actors_summary(["int8-static [auto]"] * 3 + ["bf16 [auto]"])
    assert line == "actors: 4 acting with 3 x int8-static [auto]; 1 x bf16 [auto]"
