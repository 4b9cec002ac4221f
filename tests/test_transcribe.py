"""The transcribe CLI: output formats, and a real long-form run on a bundled video."""

from __future__ import annotations

from pathlib import Path

import pytest

from tubetune.transcribe import Segment, main, render

ROOT = Path(__file__).resolve().parents[1]


def test_render_formats() -> None:
    segments = [Segment(0.0, 1.5, "Hello there."), Segment(3661.25, 3662.0, "Bye.")]
    assert render(segments, "text") == "Hello there.\nBye.\n"
    assert render(segments, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n01:01:01,250 --> 01:01:02,000\nBye.\n"
    )
    assert render(segments, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")
    with pytest.raises(ValueError, match="format"):
        render(segments, "docx")


@pytest.mark.slow
def test_cli_transcribes_a_video_to_vtt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sky.vtt"
    code = main(["bundled:whisper-base", str(ROOT / "data/sample/sky-science.ogg"),
                 "--format", "vtt", "--language", "en", "--beam-size", "1", "-o", str(out)])
    assert code == 0
    text = out.read_text()
    assert text.startswith("WEBVTT") and "-->" in text
    assert "sky" in text.lower() and "blue" in text.lower()


def test_cli_reports_a_missing_file_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["bundled:whisper-base", "/no/such/file.mp3"]) == 1
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "/no/such/file.mp3" in errors[0]
