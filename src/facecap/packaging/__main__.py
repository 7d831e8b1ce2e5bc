"""`python -m facecap.packaging sync|check`: write or verify the generated Greengrass files.

sync  rewrites every component's recipe.yaml and gdk-config.json, recipes/deployment.json and
      docs/configuration.md from the configuration models and src/facecap/packaging/.
check lists the files that differ from what sync would write, and exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import generated_files, repository_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facecap.packaging", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("sync", "check"))
    parser.add_argument("--root", type=Path, default=None, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = args.root or repository_root()
    stale = []
    for relative, text in generated_files(root).items():
        path = root / relative
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(relative)
        if args.action == "sync":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "updated" if args.action == "sync" else "out of date"
    for relative in stale:
        print(f"{verb}: {relative}")
    if args.action == "check" and stale:
        print("run `python -m facecap.packaging sync`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
