"""Print the pipeline's headline results (metrics/headline.json) as a short table, and
how far each set's change could be luck (metrics/eval.json beside it).

    python scripts/results.py [metrics/headline.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tubetune.evaluation import render_headline, render_intervals


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "metrics/headline.json")
    if not path.is_file():
        print(f"{path}: not found; run `dvc repro` first", file=sys.stderr)
        return 1
    print(render_headline(json.loads(path.read_text())))
    if (full := path.with_name("eval.json")).is_file():
        print(render_intervals(json.loads(full.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
