"""The transcription server: a real uvicorn on 127.0.0.1 serving the bundled whisper-base.

One in-process server (concurrency 1, queue 3, 1 MiB bodies, 30 s of audio) answers the API
tests, the load test and the page driven by headless Chromium; the command line is tested in
a subprocess, from the Hugging Face layout, through a graceful shutdown.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tubetune.audio import ffmpeg_exe
from tubetune.serve import (
    ApiError,
    Limits,
    Options,
    Service,
    Transcription,
    _options,
    _respond,
)

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests/data/models/speech_en.wav"
WORDS = ("door", "light", "kitchen")
CHROMIUM = Path("/usr/bin/chromium")
MAX_UPLOAD = 1024 * 1024


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def error_code(self) -> str | None:
        """The ``code`` of an OpenAI-shaped error, after checking the shape."""
        error = self.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        return error["code"]


def _multipart(fields: dict[str, str], file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if file is not None:
        name, data = file
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n')
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 120) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                     response.read())
    finally:
        conn.close()


def transcribe(port: int, file: tuple[str, bytes] | None, **fields: str) -> Reply:
    body, content_type = _multipart({"model": "whisper-1", **fields}, file)
    return request(port, "POST", "/v1/audio/transcriptions", body,
                   {"Content-Type": content_type})


def has_words(text: str) -> bool:
    return all(word in text.lower() for word in WORDS)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bundled whisper-base in both layouts: (hf, ct2)."""
    from tubetune.models import prepare_base_model

    root = tmp_path_factory.mktemp("serve-model")
    prepare_base_model("bundled:whisper-base", root / "hf", root / "ct2")
    return root / "hf", root / "ct2"


@dataclass
class Running:
    port: int
    service: Service
    tmp: Path  # where the server writes its temporary files: must end up empty

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def assert_clean(self) -> None:
        """No temporary file left and no request still counted."""
        deadline = time.monotonic() + 5
        while self.service.admitted and time.monotonic() < deadline:
            time.sleep(0.05)  # the last response can be read before its handler returns
        assert self.service.admitted == 0 and self.service.running == 0
        assert list(self.tmp.iterdir()) == []


@pytest.fixture(scope="module")
def server(model_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Running]:
    from tubetune.serve import make_server
    from tubetune.transcribe import load_whisper

    tmp = tmp_path_factory.mktemp("serve-tmp")
    whisper = load_whisper(str(model_dirs[1]), "cpu", "int8", cpu_threads=2)
    limits = Limits(max_concurrency=1, max_queue=3, max_upload_bytes=MAX_UPLOAD,
                    max_duration_s=30)
    service = Service(whisper, "whisper-base", limits, beam_size=1, tmp_dir=tmp)
    uv = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield Running(uv.port, service, tmp)
    uv.should_exit = True
    thread.join(60)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Uploads that must be refused: empty, text, a cut-off mp3, a 40 s FLAC of silence."""
    tmp = tmp_path_factory.mktemp("bad-files")
    ffmpeg("-i", str(SPEECH), "-c:a", "libmp3lame", "-b:a", "64k", str(tmp / "full.mp3"))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "40", str(tmp / "long.flac"))
    mp3 = (tmp / "full.mp3").read_bytes()
    return {"empty.wav": b"", "notes.txt": b"just some text, not audio\n" * 40,
            "cut.mp3": mp3[: len(mp3) // 2], "long.flac": (tmp / "long.flac").read_bytes()}


# ------------------------------------------------------------------------------ unit


def test_options_are_validated() -> None:
    from starlette.datastructures import FormData

    langs = ["en", "zh"]
    opts = _options(FormData([("language", "zh-TW"), ("temperature", "0.4")]), langs)
    assert opts == Options("json", "zh", None, 0.4)
    for field, value in [("response_format", "docx"), ("language", "xx"),
                         ("temperature", "hot"), ("temperature", "2"),
                         ("timestamp_granularities[]", "word")]:
        with pytest.raises(ApiError, match=field.split("_")[0]) as err:
            _options(FormData([(field, value)]), langs)
        assert err.value.status == 400


def test_verbose_json_shape() -> None:
    from types import SimpleNamespace

    seg = SimpleNamespace(seek=0, start=0.0, end=4.0, text=" Hi there.", tokens=[1, 2],
                          temperature=0.0, avg_logprob=-0.2, compression_ratio=1.1,
                          no_speech_prob=0.01)
    body = json.loads(_respond(Transcription([seg], "en", 3.5812), "verbose_json").body)
    assert body["language"] == "english" and body["duration"] == 3.581
    assert body["text"] == "Hi there."
    assert body["segments"][0] | {"tokens": None} == {
        "id": 0, "seek": 0, "start": 0.0, "end": 3.581, "text": "Hi there.", "tokens": None,
        "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1,
        "no_speech_prob": 0.01}


# ------------------------------------------------------------------------------ API


@pytest.mark.slow
def test_health_and_page(server: Running) -> None:
    health = request(server.port, "GET", "/health")
    assert health.status == 200 and health.json()["status"] == "ok"
    page = request(server.port, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b'id="record"' in page.body and b"MediaRecorder" in page.body
    listed = request(server.port, "GET", "/v1/models").json()
    assert [m["id"] for m in listed["data"]] == [health.json()["model"]]
    assert listed["object"] == "list" and listed["data"][0]["object"] == "model"
    missing = request(server.port, "GET", "/nope")
    assert missing.status == 404 and missing.error_code() is None


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_response_formats(server: Running, fmt: str) -> None:
    # verbose_json without a language: the language is detected.
    extra = {} if fmt == "verbose_json" else {"language": "en"}
    reply = transcribe(server.port, ("speech.wav", SPEECH.read_bytes()), response_format=fmt,
                       **extra)
    assert reply.status == 200, reply.body
    text = reply.body.decode()
    assert has_words(text)
    if fmt == "json":
        assert set(reply.json()) == {"text"}
    elif fmt == "text":
        assert reply.headers["content-type"].startswith("text/plain") and "-->" not in text
    elif fmt == "srt":
        assert re.match(r"1\n00:00:00,\d{3} --> 00:00:0\d,\d{3}\n", text)
    elif fmt == "vtt":
        assert reply.headers["content-type"].startswith("text/vtt")
        assert re.match(r"WEBVTT\n\n00:00:00\.\d{3} --> 00:00:0\d\.\d{3}\n", text)
    else:
        body = reply.json()
        assert body["task"] == "transcribe" and body["language"] == "english"
        assert body["duration"] == pytest.approx(3.58, abs=0.01)
        assert body["segments"] and has_words(body["text"])
        for seg in body["segments"]:
            assert 0 <= seg["start"] < seg["end"] <= body["duration"] and seg["text"]
    server.assert_clean()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "fields", "status", "code", "message"), [
    ("empty.wav", {}, 400, "invalid_audio", "empty file"),
    ("notes.txt", {}, 400, "invalid_audio", "invalid audio file"),
    ("cut.mp3", {}, 400, "invalid_audio", "truncated"),
    ("long.flac", {}, 400, "audio_too_long", "limit is 30 s"),
    (None, {}, 400, "missing_file", "file"),
    ("speech.wav", {"response_format": "docx"}, 400, "invalid_value", "response_format"),
    ("speech.wav", {"language": "klingon"}, 400, "invalid_value", "language"),
])
def test_bad_requests_get_a_clear_4xx(
    server: Running, bad_files: dict[str, bytes], name: str | None, fields: dict[str, str],
    status: int, code: str, message: str,
) -> None:
    data = SPEECH.read_bytes() if name == "speech.wav" else bad_files.get(name or "", b"")
    reply = transcribe(server.port, (name, data) if name else None, **fields)
    assert reply.status == status, reply.body
    assert reply.error_code() == code and message in reply.json()["error"]["message"]
    server.assert_clean()


@pytest.mark.slow
def test_declared_body_over_the_limit_is_refused_unread(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 2000000000\r\n\r\n--b\r\n")  # then nothing: never sent
        head, _, body = _read_response(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "file_too_large"
    server.assert_clean()


@pytest.mark.slow
def test_streamed_body_over_the_limit_is_cut_off(server: Running) -> None:
    """No Content-Length (chunked): the limit is enforced while the body streams in."""
    boundary = b"b"
    head = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    part = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n")
    chunk = b"\0" * 65536
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        replies: list[bytes] = []
        reader = threading.Thread(target=lambda: replies.append(_read_response(sock)))
        reader.start()
        try:
            sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
            for _ in range(4 * MAX_UPLOAD // len(chunk)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and hung up mid-upload: expected
        reader.join(10)
    assert replies and replies[0].startswith(b"HTTP/1.1 413"), replies
    server.assert_clean()


def _read_response(sock: socket.socket) -> bytes:
    """Bytes until the server closes the connection (or resets it)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


@pytest.mark.slow
def test_50_concurrent_requests_get_answers_or_clean_refusals(server: Running) -> None:
    audio = SPEECH.read_bytes()
    start = threading.Barrier(50)

    def one(_: int) -> Reply:
        start.wait()
        return transcribe(server.port, ("speech.wav", audio), language="en")

    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(one, range(50)))
    counts = {s: sum(r.status == s for r in replies) for s in {r.status for r in replies}}
    assert set(counts) <= {200, 429, 503}, counts
    assert counts.get(200, 0) >= server.service.capacity and counts.get(429, 0) > 0, counts
    for reply in replies:
        if reply.status == 200:
            assert has_words(reply.json()["text"])
        else:
            assert reply.error_code() in ("rate_limit_exceeded", "unavailable")
    assert request(server.port, "GET", "/health").json()["status"] == "ok"
    server.assert_clean()


# ------------------------------------------------------------------------------ the page


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Headless Debian Chromium whose fake microphone plays the speech clip."""
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium (scripts/setup.sh installs it with apt-get)")
    from playwright.sync_api import sync_playwright

    # Chromium loops the fake microphone's file; a second of silence marks the seam.
    mic = tmp_path_factory.mktemp("mic") / "speech.wav"
    ffmpeg("-i", str(SPEECH), "-af", "apad=pad_dur=1", "-ar", "48000", str(mic))
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}"]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield chromium
        chromium.close()


@pytest.mark.slow
def test_page_transcribes_an_upload_and_a_recording(
    server: Running, browser: object, bad_files: dict[str, bytes], tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    expect(page.locator("#model")).to_have_text("whisper-base")

    page.set_input_files("#file", str(SPEECH))
    page.select_option("#language", "en")
    page.click("#submit")
    segments = page.locator("#segments li")
    expect(segments.first).to_be_visible()
    assert has_words(" ".join(segments.locator(".text").all_inner_texts()))
    assert re.fullmatch(r"00:00\.\d\d → 00:0\d\.\d\d", segments.first.locator(".ts").inner_text())
    expect(page.locator("#summary")).to_contain_text("english")

    page.click("#record")  # the fake microphone says the sentence in 3.6 s
    expect(page.locator("#record")).to_have_text("Stop")
    page.wait_for_timeout(4000)
    page.click("#record")
    expect(page.locator("#status")).to_contain_text("recording.")
    page.select_option("#format", "srt")
    page.click("#submit")
    expect(page.locator("#raw")).to_contain_text("-->")
    assert "kitchen" in page.locator("#raw").inner_text().lower()

    bad = tmp_path / "notes.txt"
    bad.write_bytes(bad_files["notes.txt"])
    page.set_input_files("#file", str(bad))
    page.click("#submit")
    expect(page.locator("#status")).to_contain_text("Error 400: invalid audio file")
    page.close()
    server.assert_clean()


# ------------------------------------------------------------------------------ command line


@pytest.mark.slow
def test_cli_serves_a_hf_model_and_drains_on_ctrl_c(
    model_dirs: tuple[Path, Path], tmp_path: Path,
) -> None:
    """From the HF layout (converted in a temp dir): queued requests get 503 at Ctrl-C,
    the running one finishes, the process exits 0 and leaves no temporary file."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "tubetune.serve", str(model_dirs[0]), "--port", "0",
           "--beam-size", "1", "--cpu-threads", "2", "--max-queue", "3"]
    proc = subprocess.Popen(cmd, env={**os.environ, "TMPDIR": str(tmp)},
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    try:
        port = _wait_for_port(proc, lines)
        audio = SPEECH.read_bytes()
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(transcribe, port, ("s.wav", audio), language="en")
                       for _ in range(3)]
            deadline = time.monotonic() + 60
            while (health := request(port, "GET", "/health").json())["admitted"] < 3 or (
                not health["running"]
            ):  # all three in, the first in the model
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            replies = [f.result() for f in futures]
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        proc.kill()
    statuses = sorted(r.status for r in replies)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    assert all(has_words(r.json()["text"]) for r in replies if r.status == 200)
    assert all(r.error_code() == "unavailable" for r in replies if r.status == 503)
    # Importing onnxruntime (Silero VAD) writes its own $TMPDIR/.ses once; nothing else stays.
    assert [p.name for p in tmp.iterdir() if p.name != ".ses"] == []


def _wait_for_port(proc: subprocess.Popen, lines: list[str]) -> int:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for line in list(lines):
            if match := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                return int(match.group(1))
        assert proc.poll() is None, "".join(lines)
        time.sleep(0.1)
    raise AssertionError("server did not start:\n" + "".join(lines))
