"""Stage label-report: counts and hours of kept/rejected labels per reason and per source."""

from pathlib import Path

from tubetune import stage
from tubetune.labels import label_report
from tubetune.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    label_report(Path("data/labels"), sorted(params.sources), Path("metrics/labels.json"))


if __name__ == "__main__":
    stage.run(main)
