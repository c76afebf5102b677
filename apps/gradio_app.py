"""``python apps/gradio_app.py [--host H] [--port P] [--out DIR]``: the same web app as ``uni3d app``."""

from __future__ import annotations

import sys

from uni3d.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
