"""Bad input to ``learner.plot``: one line on stderr naming the flag or file and the value,
exit code 2, and nothing written (the run directories and the --out path as they were)."""

import pytest

from learner.plot import main

METRICS = "wall_s,env_frames,loss\n1,100,0.5\n2,200,0.4\n"


def tree(d):
    return {str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


def good_run(d):
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text(METRICS)
    return d


RUNS = {
    "missing": (lambda d: None, ["run", "nothing there"]),
    "a file": (lambda d: d.write_text("x"), ["run", "a file"]),
    "no metrics.csv": (lambda d: d.mkdir(), ["run", "no metrics.csv"]),
    "metrics.csv a directory": (lambda d: (d / "metrics.csv").mkdir(parents=True), ["run", "no metrics.csv"]),
    "empty metrics.csv": (lambda d: (d.mkdir(), (d / "metrics.csv").write_text("")), ["metrics.csv", "no column"]),
    "header only": (
        lambda d: (d.mkdir(), (d / "metrics.csv").write_text("wall_s,env_frames\n")),
        ["metrics.csv", "no complete rows"],
    ),
    "another schema": (
        lambda d: (d.mkdir(), (d / "metrics.csv").write_text("time,frames\n1,2\n")),
        ["metrics.csv", "wall_s"],
    ),
    "binary metrics.csv": (
        lambda d: (d.mkdir(), (d / "metrics.csv").write_bytes(b"\xff\xfe\x00\x01garbage")),
        ["metrics.csv", "cannot be read"],
    ),
    "garbage rows": (
        lambda d: (d.mkdir(), (d / "metrics.csv").write_text("wall_s,env_frames\nx,y\n1,2,3\n")),
        ["metrics.csv", "no complete rows"],
    ),
    "broken episodes.csv": (
        lambda d: (good_run(d), (d / "episodes.csv").write_text("wall_s\n1\n")),
        ["episodes.csv", "score"],
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_bad_run_dirs(capsys, tmp_path, name):
    make, needles = RUNS[name]
    make(tmp_path / "run")
    before = tree(tmp_path)
    code = main([str(tmp_path / "run"), "--out", str(tmp_path / "curve.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--out", "OUT/curve.bmpx"], ["--out", ".bmpx"]),
        (["--out", "OUT/curve"], ["--out", "no suffix"]),
        (["--out", "OUT/nodir/curve.png"], ["--out", "does not exist"]),
        (["--out", "OUT/adir.png"], ["--out", "is a directory"]),
        (["--out", "OUT/curve.png", "--dpi", "0"], ["--dpi=0"]),
        (["--out", "OUT/curve.png", "--dpi", "many"], ["--dpi", "many"]),
        (["--out", "OUT/curve.png", "--size", "big"], ["--size", "big"]),
        (["--out", "OUT/curve.png", "--size", "10x10"], ["--size", "10x10"]),
        ([], ["--out"]),
        (["--out", "OUT/curve.png", "--frobnicate"], ["--frobnicate"]),
    ],
)
def test_bad_flags(capsys, tmp_path, argv, needles):
    run = good_run(tmp_path / "run")
    (tmp_path / "adir.png").mkdir()
    before = tree(tmp_path)
    code = main([str(run), *[a.replace("OUT", str(tmp_path)) for a in argv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert tree(tmp_path) == before


def test_no_run_dir_at_all(capsys):
    assert main(["--out", "x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RUN_DIR" in err[0]
