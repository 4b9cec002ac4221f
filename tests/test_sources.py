"""Tests for tubetune.sources: real yt-dlp against file:// URLs and a local HTTP server.

Nothing here reaches the internet: media are generated with the imageio ffmpeg binary and
served from 127.0.0.1 (tests/helpers/http_server.py, which supports Range requests).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import pandas as pd
import pytest

from helpers.http_server import MediaServer
from tubetune import sources
from tubetune.items import ItemReport, StageError
from tubetune.params import DownloadParams, parse_params
from tubetune.sources import MANIFEST_COLUMNS, download_source

VTT = "WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n"


# ------------------------------------------------------------------------------ fixtures


def _tone(path: Path, seconds: float, *codec: str) -> bytes:
    """Generate a sine tone with ffmpeg; return the file's bytes."""
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}", *codec, str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small test media, generated once per session."""
    root = tmp_path_factory.mktemp("media")
    return {
        "mp3": _tone(root / "tone.mp3", 3, "-b:a", "32k"),
        "m4a": _tone(root / "tone.m4a", 3, "-c:a", "aac", "-b:a", "32k", "-movflags", "+faststart"),
        "webm": _tone(root / "tone.webm", 3, "-c:a", "libopus", "-b:a", "24k"),
        "long_m4a": _tone(root / "long.m4a", 20, "-c:a", "aac", "-b:a", "32k"),
    }


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer() as srv:
        yield srv


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def _reasons(out: Path, kind: str) -> dict[str, str]:
    return {f["item"]: f["reason"] for f in _report(out)[kind]}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _media_requests(server: MediaServer) -> list[str]:
    return [r.path for r in server.requests if not r.path.endswith(".html")]


# ---------------------------------------------------------------------------- downloads


def test_http_media_and_html_page(media: dict[str, bytes], server: MediaServer, tmp_path: Path):
    urls = [
        server.add("/speech.mp3", media["mp3"], "audio/mpeg"),
        server.add("/talk.webm", media["webm"], "audio/webm"),
        server.add(
            "/page.html",
            "<html><head><title>A talk</title></head><body>"
            '<audio src="/embedded.m4a"><track kind="subtitles" srclang="en-US" src="/talk.srt">'
            "</audio></body></html>",
            "text/html",
        ),
    ]
    server.add("/embedded.m4a", media["m4a"], "audio/mp4")
    server.add("/talk.srt", "1\n00:00:00,000 --> 00:00:01,000\nhello\n\n", "application/x-subrip")
    out = tmp_path / "raw"

    report = download_source("web", urls, out, language="en")

    frame = _manifest(out)
    assert tuple(frame.columns) == MANIFEST_COLUMNS
    assert list(frame["item"]) == ["generic-speech", "generic-talk", "html5-page-1"]
    assert report.ok == list(frame["item"]) and not report.failed and not report.skipped
    rows = frame.set_index("item")
    assert list(rows["media"]) == ["generic-speech.mp3", "generic-talk.webm", "html5-page-1.m4a"]
    assert list(rows["input_url"]) == urls
    assert list(rows["sha256"]) == [_sha(media[k]) for k in ("mp3", "webm", "m4a")]
    assert list(rows["size"]) == [str(len(media[k])) for k in ("mp3", "webm", "m4a")]
    assert all(abs(float(d) - 3.0) < 0.1 for d in rows["duration_s"])
    assert set(rows["language"]) == {"en"}
    assert rows.loc["html5-page-1", "title"] == "A talk (1)"
    assert rows.loc["html5-page-1", "extractor"] == "html5"
    # the page's SRT track (en-US matches "en") is converted to WebVTT
    assert rows.loc["html5-page-1", "subtitles"] == "html5-page-1.en-US.vtt"
    assert (out / "html5-page-1.en-US.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
    info = json.loads((out / "generic-speech.info.json").read_text(encoding="utf-8"))
    assert info["id"] == "speech" and info["extractor"] == "generic"
    assert info["webpage_url"] == urls[0]
    assert "epoch" not in info and "formats" not in info


def test_local_folder_unicode_names_and_sidecar_subtitles(media: dict[str, bytes], tmp_path: Path):
    folder = tmp_path / "talks"
    folder.mkdir()
    (folder / "my clip 🎵 說話.mp3").write_bytes(media["mp3"])
    (folder / "my clip 🎵 說話.vtt").write_text(VTT, encoding="utf-8")
    (folder / "b.m4a").write_bytes(media["m4a"])
    (folder / "b.vtt").write_text(VTT + "plain\n", encoding="utf-8")
    (folder / "b.en.vtt").write_text(VTT + "english\n", encoding="utf-8")
    (folder / "b.de.vtt").write_text(VTT + "german\n", encoding="utf-8")
    (folder / "notes.txt").write_text("not media", encoding="utf-8")
    out = tmp_path / "raw"

    download_source("local", str(folder), out, language="en")

    rows = _manifest(out).set_index("item")
    clip = sources.item_stem("generic", "my clip 🎵 說話")
    assert clip.startswith("generic-my_clip_-") and clip.isascii()
    assert sorted(rows.index) == sorted(["generic-b", clip])
    assert rows.loc[clip, "title"] == "my clip 🎵 說話"
    assert rows.loc[clip, "media"] == f"{clip}.mp3"
    assert rows.loc[clip, "input_url"] == (folder / "my clip 🎵 說話.mp3").resolve().as_uri()
    assert rows.loc[clip, "subtitles"] == f"{clip}.en.vtt"
    assert rows.loc["generic-b", "subtitles"] == "generic-b.en.vtt"  # explicit beats plain
    assert (out / "generic-b.en.vtt").read_text(encoding="utf-8").endswith("english\n")
    assert not list(out.glob("*.de.vtt"))  # not the wanted language
    assert (out / f"{clip}.mp3").read_bytes() == media["mp3"]

    other = tmp_path / "und"
    download_source("local", [str(folder / "b.m4a")], other)  # no language: keep all
    assert _manifest(other)["subtitles"].tolist() == [
        "generic-b.de.vtt;generic-b.en.vtt;generic-b.und.vtt"
    ]


def test_file_urls_and_same_source_listed_twice(
    media: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "a.mp3").write_bytes(media["mp3"])
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    uri = (tmp_path / "a.mp3").as_uri()
    out = tmp_path / "raw"

    report = download_source("twice", [uri, "a.mp3", "./sub/../a.mp3", uri], out)

    assert _manifest(out)["item"].tolist() == ["generic-a"]
    assert _manifest(out)["input_url"].tolist() == ["file:./a.mp3"]  # portable across clones
    assert report.ok == ["generic-a"] and not report.skipped and not report.failed


def test_same_file_name_in_two_folders_does_not_collide(media: dict[str, bytes], tmp_path: Path):
    for name, data in (("one", media["mp3"]), ("two", media["webm"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "clip.mp3").write_bytes(data)
    out = tmp_path / "raw"

    download_source("two", [str(tmp_path / "one"), str(tmp_path / "two")], out)

    rows = _manifest(out)
    assert len(rows) == 2 and rows["item"].iloc[0] == "generic-clip"
    assert rows["item"].iloc[1].startswith("generic-clip-")
    assert sorted(rows["sha256"]) == sorted([_sha(media["mp3"]), _sha(media["webm"])])


def test_html_page_with_several_media_is_a_playlist(
    media: dict[str, bytes], server: MediaServer, tmp_path: Path
):
    page = server.add(
        "/show.html",
        '<html><body><audio src="/e1.mp3"></audio><audio src="/e2.webm"></audio>'
        '<audio src="/e3.m4a"></audio></body></html>',
        "text/html",
    )
    server.add("/e1.mp3", media["mp3"], "audio/mpeg")
    server.add("/e2.webm", media["webm"], "audio/webm")
    server.add("/e3.m4a", media["m4a"], "audio/mp4")
    out = tmp_path / "raw"

    download_source("show", page, out, options=DownloadParams(max_videos=2))
    assert _manifest(out)["item"].tolist() == ["html5-show-1", "html5-show-2"]
    info = json.loads((out / "html5-show-1.info.json").read_text(encoding="utf-8"))
    assert info["playlist_id"] == "show"

    # a rerun enumerates the playlist again (new videos) but downloads only the new one
    server.requests.clear()
    download_source("show", page, out)
    assert _manifest(out)["item"].tolist() == ["html5-show-1", "html5-show-2", "html5-show-3"]
    assert set(_media_requests(server)) == {"/e3.m4a"}

    # the page is gone this time: its items stay as they were, the failure is reported
    del server.routes["/show.html"]
    report = download_source("show", page, out)
    assert report.ok == ["html5-show-1", "html5-show-2", "html5-show-3"]
    assert _reasons(out, "failed") == {page: "HTTP Error 404: Not Found"}
    assert (out / "html5-show-3.m4a").read_bytes() == media["m4a"]


def test_podcast_feed_entries_are_resolved_and_filtered_early(
    media: dict[str, bytes], server: MediaServer, tmp_path: Path
):
    base = server.url("")
    items = "".join(
        f"<item><title>Episode {i}</title><guid>ep-{i}</guid>"
        f'<enclosure url="{base}/ep{i}.mp3" type="audio/mpeg" length="1"/>'
        f"<itunes:duration>{length}</itunes:duration></item>"
        for i, length in ((1, "00:00:03"), (2, "00:01:03"))
    )
    feed = server.add(
        "/feed.xml",
        '<?xml version="1.0"?><rss version="2.0" '
        'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">'
        f"<channel><title>Pod</title><link>{base}/</link>{items}</channel></rss>",
        "application/rss+xml",
    )
    for i in (1, 2):
        server.add(f"/ep{i}.mp3", media["mp3"], "audio/mpeg")
    out = tmp_path / "raw"

    download_source("pod", feed, out, options=DownloadParams(max_duration_s=30))

    rows = _manifest(out)
    assert rows["item"].tolist() == ["generic-ep-1"]
    assert rows["title"].tolist() == ["Episode 1"]
    assert rows["webpage_url"].tolist() == [f"{base}/ep1.mp3"]
    assert _reasons(out, "skipped") == {f"{base}/ep2.mp3": "duration 63 s > max_duration_s=30"}
    assert "/ep2.mp3" not in _media_requests(server)  # filtered before any request


# ------------------------------------------------------------------------------ failures


def test_bad_items_fail_clearly_and_good_items_are_kept(
    media: dict[str, bytes], server: MediaServer, tmp_path: Path
):
    good = server.add("/good.mp3", media["mp3"], "audio/mpeg")
    missing = server.url("/missing.mp3")
    html = server.add("/article.html", "<html><body>no video here</body></html>", "text/html")
    fake = server.add("/fake.mp3", "<html><body>login first</body></html>", "audio/mpeg")
    cut_m4a = server.add("/cut.m4a", media["m4a"][: len(media["m4a"]) // 2], "audio/mp4")
    cut_mp3 = server.add("/cut.mp3", media["mp3"][: len(media["mp3"]) // 2], "audio/mpeg")
    page = server.add(
        "/pl.html", '<audio src="/good.mp3"></audio><audio src="/x.webm"></audio>', "text/html"
    )
    out = tmp_path / "raw"

    report = download_source("mixed", [good, missing, html, fake, cut_m4a, cut_mp3, page], out)

    assert report.ok == ["generic-good", "html5-pl-1"]
    failed = _reasons(out, "failed")
    assert failed[missing] == "HTTP Error 404: Not Found"
    assert failed[f"{page} [pl-2]"] == "HTTP Error 404: Not Found"  # one entry of a page
    assert failed[html].startswith("not a media file:")
    assert failed[fake].startswith("not a media file: it holds a web page"), failed[fake]
    for url in (cut_m4a, cut_mp3):
        assert failed[url].startswith("truncated/undecodable media:"), failed[url]
    assert "decoded 1.5 s of the 3.0 s" in failed[cut_mp3]
    assert _manifest(out)["item"].tolist() == ["generic-good", "html5-pl-1"]
    leftovers = {p.name for p in out.iterdir()} - {"manifest.csv", "report.json"}
    assert leftovers == {
        "generic-good.mp3",
        "generic-good.info.json",
        "html5-pl-1.mp3",
        "html5-pl-1.info.json",
    }


def test_silent_video_and_empty_file_get_clear_reasons(tmp_path: Path):
    video = tmp_path / "no-sound.mp4"  # a video track and no audio track
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x64:rate=5:duration=2", "-an", str(video)], check=True)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    out = tmp_path / "raw"

    download_source("bad", [str(video), str(empty)], out)

    failed = _reasons(out, "failed")
    assert sorted(r.split(" (")[0] for r in failed.values()) == ["empty file",
                                                                  "no audio stream"], failed


def test_missing_local_path_and_empty_folder_fail(media: dict[str, bytes], tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "ok.mp3").write_bytes(media["mp3"])
    out = tmp_path / "raw"
    missing = str(tmp_path / "nope.mp3")
    remote = "file://elsewhere" + (tmp_path / "ok.mp3").as_posix()  # never the local file

    download_source("paths", [missing, str(tmp_path / "empty"), remote,
                              str(tmp_path / "ok.mp3")], out)

    failed = _reasons(out, "failed")
    assert failed[missing].startswith("no such file or folder")
    assert failed[str(tmp_path / "empty")].startswith("no media files in folder")
    assert failed[remote].startswith("file URL on another host")


def test_transient_errors_are_retried(
    media: dict[str, bytes], server: MediaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sources, "_BACKOFF_S", 0.0)
    url = server.add("/busy.mp3", media["mp3"], "audio/mpeg", fail_first=2)

    report = download_source("busy", url, tmp_path / "raw", options=DownloadParams(retries=2))

    assert report.ok == ["generic-busy"]
    assert server.routes["/busy.mp3"].fail_first == 0


def test_strict_mode_raises(media: dict[str, bytes], server: MediaServer, tmp_path: Path):
    urls = [server.add("/ok.mp3", media["mp3"], "audio/mpeg"), server.url("/gone.mp3")]
    out = tmp_path / "raw"

    with pytest.raises(StageError, match="strict") as err:
        download_source("strict", urls, out, options=DownloadParams(strict=True))

    assert "\n" not in str(err.value)
    assert _manifest(out)["item"].tolist() == ["generic-ok"]  # good work is still kept


def test_a_dead_source_leaves_an_empty_reported_output(server: MediaServer, tmp_path: Path):
    report = download_source("none", [server.url("/gone.mp3")], tmp_path / "raw")
    assert not report.ok and "HTTP Error 404" in report.failed[0].reason
    assert _manifest(tmp_path / "raw").empty
    failed = json.loads((tmp_path / "raw" / "report.json").read_text())["failed"]
    assert "HTTP Error 404" in failed[0]["reason"]

    with pytest.raises(StageError) as err:  # strict: the stage fails, in one line
        download_source("none", [server.url("/gone.mp3")], tmp_path / "strict",
                        options=DownloadParams(strict=True))
    assert "HTTP Error 404" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------- filters


def test_licence_filter_skips_unknown_licence(media: dict[str, bytes], tmp_path: Path):
    (tmp_path / "talk.mp3").write_bytes(media["mp3"])
    out = tmp_path / "raw"

    report = download_source(
        "cc",
        str(tmp_path / "talk.mp3"),
        out,
        options=DownloadParams(licenses=["Creative Commons"]),
    )

    assert report.ok == [] and not report.failed
    (reason,) = _reasons(out, "skipped").values()
    assert reason.startswith("unknown licence") and "Creative Commons" in reason
    assert _manifest(out).empty


def test_duration_filter_uses_decoded_length(media: dict[str, bytes], tmp_path: Path):
    (tmp_path / "short.mp3").write_bytes(media["mp3"])
    out = tmp_path / "raw"

    download_source(
        "long", str(tmp_path / "short.mp3"), out, options=DownloadParams(min_duration_s=10)
    )

    (reason,) = _reasons(out, "skipped").values()
    assert reason == "duration 3 s < min_duration_s=10"
    assert not list(out.glob("generic-short*"))


# ------------------------------------------------------------------------- incremental runs


def test_interrupted_download_resumes_with_range(
    media: dict[str, bytes], server: MediaServer, tmp_path: Path
):
    data = media["long_m4a"]
    url = server.add("/long.m4a", data, "audio/mp4")
    out = tmp_path / "raw"
    out.mkdir()
    half = len(data) // 2
    (out / "generic-long.m4a.part").write_bytes(data[:half])

    download_source("resume", url, out)

    assert any(r.path == "/long.m4a" and r.range == f"bytes={half}-" for r in server.requests)
    assert _manifest(out)["sha256"].tolist() == [_sha(data)]
    assert (out / "generic-long.m4a").read_bytes() == data
    assert not list(out.glob("*.part"))


def test_second_run_of_20_items_is_fast_and_offline(
    media: dict[str, bytes], server: MediaServer, tmp_path: Path
):
    urls = [server.add(f"/clip{i:02d}.mp3", media["mp3"], "audio/mpeg") for i in range(20)]
    out = tmp_path / "raw"
    download_source("many", urls, out)
    manifest = (out / "manifest.csv").read_bytes()
    server.requests.clear()

    started = time.monotonic()
    report = download_source("many", list(reversed(urls)), out)
    elapsed = time.monotonic() - started

    assert server.requests == []
    assert elapsed < 2.0, elapsed
    assert len(report.ok) == 20
    assert (out / "manifest.csv").read_bytes() == manifest  # deterministic bytes


def test_changed_files_are_fetched_again_and_dropped_urls_removed(
    media: dict[str, bytes], server: MediaServer, tmp_path: Path
):
    urls = [server.add(f"/t{i}.mp3", media["mp3"], "audio/mpeg") for i in range(3)]
    out = tmp_path / "raw"
    download_source("edit", urls, out)
    (out / "generic-t0.mp3").unlink()
    with open(out / "generic-t1.mp3", "ab") as fh:
        fh.write(b"junk")
    server.requests.clear()

    download_source("edit", urls, out)
    assert sorted(set(_media_requests(server))) == ["/t0.mp3", "/t1.mp3"]
    assert _manifest(out)["sha256"].tolist() == [_sha(media["mp3"])] * 3
    assert (out / "generic-t1.mp3").read_bytes() == media["mp3"]

    report = download_source("edit", urls[1:], out)
    assert report.ok == ["generic-t1", "generic-t2"]
    assert _manifest(out)["item"].tolist() == ["generic-t1", "generic-t2"]
    assert not list(out.glob("generic-t0*"))


# ---------------------------------------------------------------------------- validation


def test_item_stem_is_safe_and_collision_free():
    assert sources.item_stem("Youtube", "dQw4w9WgX-_") == "youtube-dQw4w9WgX-_"
    assert sources.item_stem("twitter:broadcast", "1") == "twitter_broadcast-1"
    stems = {sources.item_stem("generic", i) for i in ("a b", "a_b", "a/b", "a\\b", "說話")}
    assert len(stems) == 5
    assert all(s.isascii() and "/" not in s and " " not in s for s in stems)
    assert len(sources.item_stem("generic", "x" * 500)) < 120


def test_a_params_entry_downloads_with_its_merged_options(
    media: dict[str, bytes], tmp_path: Path
):
    """The download stage's path: a validated entry, its language and merged options."""
    (tmp_path / "a.mp3").write_bytes(media["mp3"])
    params = parse_params({
        "sources": {"entry": {"url": [str(tmp_path / "a.mp3"), f" {tmp_path / 'a.mp3'} "],
                              "language": "de", "options": {"max_videos": 1}}},
        "download": {"retries": 2},
    })
    options = params.download_of("entry")
    assert (options.max_videos, options.retries) == (1, 2)

    report = download_source("entry", params.sources["entry"].urls, tmp_path / "raw",
                             params.language_of("entry"), options)

    assert isinstance(report, ItemReport) and report.ok == ["generic-a"]  # listed once
    assert _manifest(tmp_path / "raw")["language"].tolist() == ["de"]
