"""Runs the igneous-like CLI (arguments as given) with every write under $STALL_QDIR watched: the
30th task body a process writes there goes half to disk, then the writer stops (as a slow disk or
a SIGKILL would catch it) and creates the marker file $STALL_MARK. Tests SIGKILL it then and look
for partial task files. The watching is set up at module level, so processes a spawn start pool
makes (they import this file as __mp_main__) are watched too."""
import builtins
import itertools
import os
import sys
import time

QDIR, MARK = os.environ["STALL_QDIR"], os.environ["STALL_MARK"]
STALL_AT = 30
real_open, bodies = builtins.open, itertools.count(1)


class Stalling:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def write(self, data):
        if isinstance(data, str) and data.startswith("{") and next(bodies) == STALL_AT:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            real_open(MARK, "w").close()
            time.sleep(600)
        return self.f.write(data)


def watching_open(path, mode="r", *args, **kwargs):
    f = real_open(path, mode, *args, **kwargs)
    return Stalling(f) if str(path).startswith(QDIR) and set(mode) & set("wax") else f


builtins.open = watching_open

if __name__ == "__main__":
    from igneous_like.cli import main

    sys.argv = ["igneous-like", *sys.argv[1:]]
    main()
