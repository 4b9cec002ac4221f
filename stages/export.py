"""Stage export: the fine-tuned model as CTranslate2 int8, for fast inference and serving."""

from pathlib import Path

from tubetune import stage
from tubetune.models import convert_hf_to_ct2


def main(argv: list[str]) -> None:
    convert_hf_to_ct2(Path("models/finetuned"), Path("models/export/ct2"), quantization="int8")


if __name__ == "__main__":
    stage.run(main)
