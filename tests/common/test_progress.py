import io

from common.progress import Status


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_redraws_in_place_on_a_terminal():
    out = Tty()
    s = Status(out, min_interval=0)
    s.update("episode 1/3")
    s.update("ep 2/3")
    s.done("done")
    text = out.getvalue()
    assert text.startswith("\repisode 1/3") and "\rep 2/3     " in text and text.endswith("\rdone  \n")


def test_silent_when_not_a_terminal():
    out = io.StringIO()
    s = Status(out, min_interval=0)
    s.update("episode 1/3")
    s.done("done")
    assert out.getvalue() == ""


def test_updates_are_rate_limited_but_forced_ones_show():
    out = Tty()
    s = Status(out, min_interval=3600)
    s.update("a", force=True)
    s.update("b")
    s.update("c", force=True)
    assert "b" not in out.getvalue() and out.getvalue().endswith("\rc")
