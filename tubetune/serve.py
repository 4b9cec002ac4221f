"""Serve a model of the pipeline over HTTP: an OpenAI-compatible transcription API and a page.

    python -m tubetune.serve models/export/ct2 --port 8000
    curl -F file=@talk.mp3 -F model=whisper-1 http://127.0.0.1:8000/v1/audio/transcriptions

MODEL is anything ``tubetune.transcribe`` accepts (a CTranslate2 dir, a Hugging Face dir, a
``bundled:`` spec); it is loaded once. ``POST /v1/audio/transcriptions`` takes OpenAI's
multipart fields (``file``, ``model``, ``language``, ``prompt``, ``response_format`` json /
text / srt / vtt / verbose_json, ``temperature``); ``GET /health`` says whether it is ready;
``GET /`` is a page to upload or record audio and read the timed transcript.

Limits: at most ``max_concurrency`` model calls at once and ``max_queue`` more requests
admitted (uploading, decoding or waiting); beyond that 429 at once, before the body is read.
The request body is capped (413 from Content-Length before reading, and while streaming),
audio longer than ``max_duration_s`` is refused (400), as are empty, non-audio, corrupt and
truncated uploads (400). While shutting down, new and queued requests get 503; running ones
finish. Errors use OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from tubetune.audio import MediaError, load_audio, probe, resample_to_wav
from tubetune.constants import FALLBACK_TEMPERATURES, SAMPLE_RATE
from tubetune.transcribe import Segment, load_whisper, render

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger("tubetune.serve")  # also when run as __main__

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TRANSCRIPTIONS = "/v1/audio/transcriptions"
# A declared duration this much longer than what decodes means a cut-off upload.
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_TOLERANCE_FRACTION = 0.1
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_ERROR_TYPES = {429: "rate_limit_error", 500: "server_error", 503: "server_error"}


@dataclass(frozen=True)
class Limits:
    """How much work the server accepts."""

    max_concurrency: int = 1
    max_queue: int = 8
    max_upload_bytes: int = 25 * 1024 * 1024
    max_duration_s: float = 3600.0


@dataclass(frozen=True)
class Options:
    """The decoding options of one request."""

    response_format: str = "json"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0


@dataclass(frozen=True)
class Transcription:
    """The result of one request: faster-whisper segments, language code, seconds of audio."""

    segments: list[Any]
    language: str
    duration: float


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers

    def response(self) -> JSONResponse:
        """The JSON error response."""
        kind = _ERROR_TYPES.get(self.status, "invalid_request_error")
        body = {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds {limit} bytes", "file_too_large", "file",
                    headers={"Connection": "close"})


class Service:
    """One loaded model behind a bounded queue; the HTTP layer only parses and renders."""

    def __init__(
        self, whisper: WhisperModel, model_name: str, limits: Limits | None = None,
        beam_size: int = 5, tmp_dir: Path | None = None,
    ) -> None:
        limits = limits or Limits()
        self.whisper, self.model_name, self.limits = whisper, model_name, limits
        self.beam_size, self.tmp_dir = beam_size, tmp_dir
        self.ready = True
        self.started = int(time.time())  # Unix time, as OpenAI's model list reports it
        self.admitted = 0  # requests between admission and response (event-loop only)
        self.running = 0
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._model_pool = ThreadPoolExecutor(limits.max_concurrency, "tubetune-model")
        self._decode_pool = ThreadPoolExecutor(max(2, limits.max_concurrency), "tubetune-decode")

    @property
    def capacity(self) -> int:
        """Requests admitted at most: running plus queued."""
        return self.limits.max_concurrency + self.limits.max_queue

    def check_ready(self) -> None:
        """ApiError 503 unless the server takes requests."""
        if not self.ready:
            raise ApiError(503, "the server is shutting down", "unavailable")

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a queue place for one request; ApiError 429 when the queue is full."""
        self.check_ready()
        if self.admitted >= self.capacity:
            raise ApiError(429, f"server busy: {self.admitted} requests in progress or queued; "
                           "retry later", "rate_limit_exceeded", headers={"Retry-After": "1"})
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    def health(self) -> dict[str, Any]:
        """Readiness and load, for ``GET /health``."""
        return {"status": "ok" if self.ready else "shutting_down", "model": self.model_name,
                "running": self.running, "admitted": self.admitted, "capacity": self.capacity}

    def begin_shutdown(self) -> None:
        """Refuse new requests; queued ones get 503 when their turn comes."""
        self.ready = False

    def close(self) -> None:
        """Stop the worker threads (after the server drained)."""
        self._model_pool.shutdown(wait=True, cancel_futures=True)
        self._decode_pool.shutdown(wait=True, cancel_futures=True)

    async def decode(self, upload: UploadFile) -> np.ndarray:
        """16 kHz mono float32 samples of an upload (decoded off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode_pool, self._decode, upload)

    def _decode(self, upload: UploadFile) -> np.ndarray:
        suffix = Path(upload.filename or "").suffix
        name = "upload" + (suffix if _SAFE_SUFFIX.match(suffix) else "")
        max_s = self.limits.max_duration_s
        with tempfile.TemporaryDirectory(prefix="tubetune-serve-", dir=self.tmp_dir) as tmp:
            src, wav = Path(tmp) / name, Path(tmp) / "audio.wav"
            with src.open("wb") as fh:
                upload.file.seek(0)
                shutil.copyfileobj(upload.file, fh)
            try:
                declared = probe(src).duration_s
                if declared > max_s:
                    raise ApiError(400, f"audio is {declared:.0f} s long; the limit is "
                                   f"{max_s:.0f} s", "audio_too_long", "file")
                decoded = resample_to_wav(src, wav, SAMPLE_RATE).duration_s
            except MediaError as err:
                raise ApiError(400, f"invalid audio file: {err}", "invalid_audio", "file") from err
            if decoded > max_s:
                raise ApiError(400, f"audio is {decoded:.0f} s long; the limit is {max_s:.0f} s",
                               "audio_too_long", "file")
            tolerance = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * declared)
            if declared - decoded > tolerance:
                raise ApiError(400, f"invalid audio file: truncated or corrupt: decoded "
                               f"{decoded:.1f} s of the {declared:.1f} s declared",
                               "invalid_audio", "file")
            return load_audio(wav, sample_rate=SAMPLE_RATE)

    async def transcribe(
        self, audio: np.ndarray, options: Options,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> Transcription:
        """Wait for a model slot, then transcribe in a worker thread.

        503 if the server began shutting down meanwhile; a client that hung up while queued
        (``gone``) is dropped without running the model.
        """
        self.check_ready()
        await self._slots.acquire()
        try:
            self.check_ready()
            if gone is not None and await gone():
                raise ApiError(400, "client disconnected while queued", "disconnected")
        except BaseException:
            self._slots.release()
            raise
        self.running += 1

        def release(_: object) -> None:
            self.running -= 1
            self._slots.release()

        future = asyncio.get_running_loop().run_in_executor(
            self._model_pool, self._transcribe, audio, options
        )
        future.add_done_callback(release)  # the slot stays taken until the thread is done
        return await asyncio.shield(future)

    def _transcribe(self, audio: np.ndarray, options: Options) -> Transcription:
        temperature = FALLBACK_TEMPERATURES if options.temperature == 0 else options.temperature
        segments, info = self.whisper.transcribe(
            audio, language=options.language, beam_size=self.beam_size, temperature=temperature,
            initial_prompt=options.prompt, vad_filter=True, condition_on_previous_text=False,
        )
        kept = [s for s in segments if s.text.strip()]  # decoding happens while iterating
        return Transcription(kept, info.language, len(audio) / SAMPLE_RATE)


def _limited(receive: Receive, limit: int) -> Callable[[], Awaitable[Message]]:
    """``receive`` that raises ApiError 413 once more than ``limit`` body bytes arrived."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return wrapped


def _content_length(request: Request, limit: int) -> None:
    """ApiError 413 when the declared body is over ``limit`` (nothing has been read yet)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, str):
        return (value or "").strip() or None
    raise ApiError(400, f"{name} must be a form field, not a file", "invalid_value", name)


def _options(form: Any, supported_languages: list[str]) -> Options:
    """Validate the request's fields (400 naming the field on a bad value)."""
    fmt = _field(form, "response_format") or "json"
    if fmt not in FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}, got {fmt!r}",
                       "invalid_value", "response_format")
    language = _field(form, "language")
    if language is not None:
        language = language.split("-")[0].split("_")[0].lower()  # zh-TW -> zh
        if language not in supported_languages:
            raise ApiError(400, f"unsupported language {language!r}", "invalid_value",
                           "language")
    raw = _field(form, "temperature") or "0"
    try:
        temperature = float(raw)
    except ValueError:
        temperature = -1.0
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(400, f"temperature must be a number from 0 to 1, got {raw!r}",
                       "invalid_value", "temperature")
    for granularity in form.getlist("timestamp_granularities[]"):
        if granularity != "segment":
            raise ApiError(400, "only segment timestamps are supported", "invalid_value",
                           "timestamp_granularities")
    return Options(fmt, language, _field(form, "prompt"), temperature)


def _language_name(code: str) -> str:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return LANGUAGES.get(code, code)


def _respond(result: Transcription, fmt: str) -> Response:
    """The transcription in ``fmt``, as OpenAI answers it."""
    duration = round(result.duration, 3)
    timed = [Segment(round(s.start, 3), round(min(s.end, duration), 3), s.text.strip())
             for s in result.segments]
    text = " ".join(s.text for s in timed)
    if fmt == "json":
        return JSONResponse({"text": text})
    if fmt == "verbose_json":
        segments = [
            {"id": i, "seek": s.seek, "start": t.start, "end": t.end, "text": t.text,
             "tokens": list(s.tokens), "temperature": s.temperature,
             "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
             "no_speech_prob": s.no_speech_prob}
            for i, (s, t) in enumerate(zip(result.segments, timed, strict=True))
        ]
        return JSONResponse({"task": "transcribe", "language": _language_name(result.language),
                             "duration": duration, "text": text, "segments": segments})
    media = "text/vtt" if fmt == "vtt" else "text/plain"
    return PlainTextResponse(render(timed, fmt), media_type=media)


async def _read_upload(request: Request, service: Service) -> tuple[UploadFile, Options, Any]:
    """Read the multipart body under the size limit: (file, options, form to close)."""
    limit = service.limits.max_upload_bytes
    limited = Request(request.scope, _limited(request.receive, limit))
    try:
        form = await limited.form(max_files=1, max_fields=16)
    except ClientDisconnect as err:
        raise ApiError(400, "client disconnected while uploading", "disconnected") from err
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "expected a multipart/form-data body with an audio 'file'",
                           "missing_file", "file")
        return upload, _options(form, service.whisper.supported_languages), form
    except BaseException:
        await form.close()
        raise


def create_app(service: Service) -> FastAPI:
    """The FastAPI application around ``service``."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.begin_shutdown()
        service.close()

    app = FastAPI(title="tubetune", summary="OpenAI-compatible Whisper transcription",
                  lifespan=lifespan)
    app.state.service = service
    page = (files("tubetune") / "static" / "index.html").read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        log.info("%s %s: %d %s", request.method, request.url.path, exc.status, exc.message)
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail), None, None, exc.headers).response()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(service.health(), status_code=200 if service.ready else 503)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        """OpenAI's model list (clients call it to check the server): the one served model."""
        return JSONResponse({"object": "list", "data": [
            {"id": service.model_name, "object": "model", "created": service.started,
             "owned_by": "tubetune"}]})

    @app.post(TRANSCRIPTIONS)
    async def transcriptions(request: Request) -> Response:
        start = time.monotonic()
        service.check_ready()
        _content_length(request, service.limits.max_upload_bytes)
        with service.admit():
            upload, options, form = await _read_upload(request, service)
            try:
                audio = await service.decode(upload)
            finally:
                await form.close()
            result = await service.transcribe(audio, options, request.is_disconnected)
        log.info("%s: %.1f s of audio (%s) as %s in %.1f s", upload.filename, result.duration,
                 result.language, options.response_format, time.monotonic() - start)
        return _respond(result, options.response_format)

    return app


class Server(uvicorn.Server):
    """uvicorn that stops admitting requests as soon as shutdown begins."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self.servers[0].sockets[0].getsockname()[1]

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        """Refuse new and queued requests first, then let uvicorn drain running ones."""
        self.service.begin_shutdown()
        await super().shutdown(sockets)


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000) -> Server:
    """A uvicorn server for ``service`` (not started)."""
    config = uvicorn.Config(create_app(service), host=host, port=port, ws="none",
                            log_level="info", log_config=None)
    return Server(config, service)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tubetune.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="CTranslate2 or Hugging Face model dir, or bundled:NAME")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--max-concurrency", type=int, default=1,
                        help="model calls at once (default 1)")
    parser.add_argument("--max-queue", type=int, default=8,
                        help="requests waiting beyond those running; more get 429 (default 8)")
    parser.add_argument("--max-upload-mb", type=float, default=25.0,
                        help="request body limit in MiB; more gets 413 (default 25)")
    parser.add_argument("--max-duration-s", type=float, default=3600.0,
                        help="longest audio accepted; longer gets 400 (default 3600)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--cpu-threads", type=int, default=0, help="0: CTranslate2's default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.max_concurrency < 1 or args.max_queue < 0 or args.max_upload_mb <= 0:
        parser.error("--max-concurrency must be >= 1, --max-queue >= 0, --max-upload-mb > 0")
    limits = Limits(args.max_concurrency, args.max_queue, int(args.max_upload_mb * 1024 * 1024),
                    args.max_duration_s)
    try:
        whisper = load_whisper(args.model, args.device, args.compute_type, args.cpu_threads,
                               num_workers=args.max_concurrency)
    except Exception as exc:  # a CLI answers with one line, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    service = Service(whisper, args.model, limits, args.beam_size)
    server = make_server(service, args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after draining
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
