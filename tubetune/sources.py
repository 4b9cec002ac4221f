"""Download the media of one source (videos, playlists, channels, local files) with yt-dlp.

This is the library behind the ``download@<name>`` DVC stage. One source is a list of URLs
(any yt-dlp site, ``file://`` URLs, local files or folders); its items land in one output
directory, named ``<extractor>-<safe id>.<ext>`` (never by title), next to their WebVTT
subtitles and a trimmed ``<stem>.info.json``. ``manifest.csv`` lists the good items and
``report.json`` every failed or skipped one with its reason.

The directory persists between runs (DVC ``persist: true``), so a rerun only does the new work:

* a single-video URL whose manifest rows are intact (files present, sizes equal) is kept
  without calling yt-dlp at all, so a rerun of an unchanged source touches no network;
* a playlist or channel URL is enumerated again (to find new videos), but entries whose id is
  already intact in the manifest are not downloaded again;
* intact means the files exist with the manifest's sizes; the sha256 is not recomputed, since
  hashing gigabytes on every rerun would defeat the cheap rerun and DVC itself checks the
  directory's content hash (``dvc status``);
* items whose URL left the source are dropped from the manifest and their files deleted, while
  the rows of a URL that failed this time (e.g. network down) are kept as they were.

Local folders are read non-recursively (their media files sorted by name): a recursive walk
would sweep up unrelated trees and make file-name ids collide; list sub-folders explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import imageio_ffmpeg
import pandas as pd
import yt_dlp
from tqdm import tqdm
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import ContentTooShortError, DownloadError, parse_bytes, unsmuggle_url

from tubetune.fsutil import atomic_path, atomic_write_text, safe_stem, sha256_file
from tubetune.items import MANIFEST_COLUMNS, ItemReport
from tubetune.params import DownloadParams

log = logging.getLogger(__name__)

T = TypeVar("T")

MEDIA_EXTENSIONS = frozenset(
    {".3gp", ".aac", ".aif", ".aiff", ".amr", ".avi", ".flac", ".flv", ".m4a", ".m4v", ".mka",
     ".mkv", ".mov", ".mp3", ".mp4", ".mpeg", ".mpg", ".oga", ".ogg", ".ogv", ".opus", ".ts",
     ".wav", ".weba", ".webm", ".wma", ".wmv"}
)  # fmt: skip

_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_STEM_KEY = "tubetune_stem"  # extra info-dict field naming the output file (see outtmpl)
_PLAYLIST_TYPES = ("playlist", "multi_video")
_URL_DERIVED_IDS = frozenset({"generic", "html5"})  # extractors whose ids are URL basenames
_TRANSIENT_HTTP = frozenset({408, 425, 429})
_BACKOFF_S = 1.0  # first retry delay; doubles on each retry
_MAX_BACKOFF_S = 60.0
# url_transparent results keep these from the inner result (mirrors yt-dlp's own merge)
_TRANSPARENT_KEEP = frozenset({"_type", "url", "ie_key", "id", "extractor", "extractor_key"})
_PLAYLIST_EXTRAS = ("playlist_id", "playlist_title")


# ------------------------------------------------------------------------------ naming


def item_stem(extractor: str, video_id: str) -> str:
    """``<extractor>-<safe id>``: a safe ASCII file stem that never depends on the title.

    The id keeps ``[A-Za-z0-9_-]``; runs of other characters become ``_`` and then a short
    hash of the original id is appended, so distinct ids never share a stem.
    """
    safe_extractor = re.sub(r"[^a-z0-9]+", "_", extractor.lower()).strip("_") or "unknown"
    return f"{safe_extractor}-{safe_stem(video_id)}"


# ----------------------------------------------------------------------------- entries


def download_source(
    name: str,
    urls: str | list[str],
    out_dir: Path,
    language: str | None = None,
    options: DownloadParams | None = None,
) -> ItemReport:
    """Download every item of one source into ``out_dir``; return the per-item report.

    ``urls``, ``language`` and ``options`` are taken as tubetune.params validated them (a
    source's ``url``, ``language_of`` and ``download_of``); entries are stripped and listed
    once. Writes media, subtitles, ``<stem>.info.json``, ``manifest.csv`` and
    ``report.json``. Raises ``ValueError`` when the cookies file is missing and, in strict
    mode, ``StageError`` when an item failed; without strict a source where nothing
    succeeded ends empty and reported. Without ``options``, the ``download`` defaults.
    """
    options = DownloadParams() if options is None else options
    url_list = list(dict.fromkeys(u.strip() for u in ([urls] if isinstance(urls, str) else urls)))
    if options.cookies and not Path(options.cookies).is_file():
        raise ValueError(f"download option 'cookies': no such file {options.cookies!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ItemReport("download", name)
    run = _SourceRun(out_dir, language, options, report, _read_manifest(out_dir))
    started = time.monotonic()
    for entry in tqdm(url_list, desc=f"download {name}", unit="url", disable=None):
        run.add_entry(entry)
    removed = run.finish()
    log.info(
        "download %s: %d kept, %d downloaded, %d removed in %.1f s",
        name,
        len(run.rows) - run.downloaded,
        run.downloaded,
        removed,
        time.monotonic() - started,
    )
    report.ok.extend(sorted(run.rows))
    report.finish(out_dir / "report.json", options.strict)
    return report


def _local_urls(entry: str) -> list[str] | str:
    """``file://`` URLs for a local path, file URL or folder; a reason string when it fails."""
    if "://" in entry and urllib.parse.urlsplit(entry).scheme.lower() != "file":
        return [entry]
    if "://" in entry and urllib.parse.urlsplit(entry).netloc not in ("", "localhost"):
        return f"file URL on another host: {entry!r}"  # its path would name a local file
    path = _file_url_path(entry) if "://" in entry else Path(entry).expanduser()
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS
        )
        if not files:
            return f"no media files in folder {str(path)!r}"
        return [p.resolve().as_uri() for p in files]
    if path.is_file():
        return [path.resolve().as_uri()]
    hint = "" if "://" in entry else " (web URLs need http:// or https://)"
    return f"no such file or folder: {str(path)!r}{hint}"


# ------------------------------------------------------------------------------ the run


class _SkipItem(Exception):
    """The item is left out on purpose (filter, duplicate); the message says why."""


class _BadMedia(Exception):
    """The downloaded file does not decode as the media it claims to be."""


class _YtdlpLog:
    """Route yt-dlp's messages to ``logging`` instead of the terminal."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        log.warning("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        # errors are raised as DownloadError and recorded per item by the report
        log.debug("yt-dlp: %s", msg)


@dataclass
class _SourceRun:
    """State of one ``download_source`` call: old and new manifest rows, the yt-dlp handle."""

    out_dir: Path
    language: str | None
    options: DownloadParams
    report: ItemReport
    old: dict[str, dict[str, Any]]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    downloaded: int = 0
    _seen: set[str] = field(default_factory=set)  # input URLs done in this run
    _ydl: yt_dlp.YoutubeDL | None = None
    _count: int = 0  # items accepted for the current input URL (max_videos)

    # ---- per input URL

    def add_entry(self, entry: str) -> None:
        """Expand one source entry (local folder → files) and process each URL."""
        urls = _local_urls(entry)
        if isinstance(urls, str):
            self.report.fail(entry, urls)
            return
        for url in urls:
            if url not in self._seen:
                self._seen.add(url)
                self.add_url(url)

    def add_url(self, url: str) -> None:
        """Keep the URL's intact items without network, or ask yt-dlp for its videos."""
        previous = [row for row in self.old.values() if row["input_url"] == _portable_url(url)]
        intact = [row for row in previous if self._intact(row)]
        if previous and len(intact) == len(previous) and not _is_playlist(self.out_dir, previous):
            for row in previous:
                self._keep(row, url)
            return
        self._count = 0
        complete = False
        try:
            result = self._retrying(
                lambda: self.ydl.extract_info(url, download=False, process=False)
            )
            self._handle(result, url)
            complete = True
        except _StopUrl:
            complete = True
        except Exception as exc:  # one broken URL must not sink the others
            self.report.fail(url, _reason(exc))
        if not complete:  # keep what this URL had: the source still lists it
            for row in intact:
                if row["item"] not in self.rows:
                    self._keep(row, url)

    def _handle(self, result: dict[str, Any], url: str) -> None:
        """Process a video, or every entry of a (nested) playlist, lazily."""
        if result.get("_type") in _PLAYLIST_TYPES:
            extras = {"playlist_id": result.get("id"), "playlist_title": result.get("title")}
            for entry in result.get("entries") or ():
                if entry:
                    entry = {**extras, **entry}
                    if entry.get("_type", "video") == "video":  # embedded media of a page
                        entry.setdefault("webpage_url", result.get("webpage_url"))
                        entry.setdefault("original_url", result.get("original_url"))
                    self._handle(entry, url)
            return
        try:
            self._video(result, url)
        except _StopUrl:
            raise
        except _SkipItem as skip:
            self.report.skip(_entry_label(result, url), str(skip))
        except Exception as exc:  # one broken video must not sink the others
            self.report.fail(_entry_label(result, url), _reason(exc))

    def _video(self, entry: dict[str, Any], url: str) -> None:
        """Keep, filter or download one video-level entry (resolving URL results first)."""
        stem = self._stem(entry)
        if stem is None or not self._reuse(stem, url):
            _skip_unless_wanted(entry, self.options, final=False)
            if entry.get("_type") in ("url", "url_transparent"):
                entry = self._retrying(lambda: _resolve(self.ydl, entry))
                if entry.get("_type") in _PLAYLIST_TYPES:
                    self._handle(entry, url)
                    return
            stem = self._stem(entry)
            if stem is None:
                raise RuntimeError("yt-dlp returned no video id")
            if not self._reuse(stem, url):
                _skip_unless_wanted(entry, self.options, final=True)
                self._download(entry, stem, url)
        self._count += 1
        if self.options.max_videos and self._count >= self.options.max_videos:
            raise _StopUrl

    def _stem(self, entry: dict[str, Any]) -> str | None:
        """The entry's file stem, or None while its extractor or id is unknown.

        Ids that the generic extractors derive from a URL (a file name, a page name) are not
        identities: ``a/clip.mp3`` and ``b/clip.mp3`` both get id ``clip``. When such a stem
        is already taken by another page or file, a short hash of this entry's URL is added.
        """
        if entry.get("id") is None:
            return None
        extractor = entry.get("extractor")
        if extractor is None and entry.get("ie_key"):
            extractor = self.ydl.get_info_extractor(entry["ie_key"]).IE_NAME
        if not extractor:
            return None
        stem = item_stem(extractor, str(entry["id"]))
        page = _plain_url(entry.get("webpage_url"))
        if extractor.lower() in _URL_DERIVED_IDS and page:
            owner = self.rows.get(stem) or self.old.get(stem)
            if owner is not None and owner["webpage_url"] != page:
                stem += "-" + hashlib.sha256(page.encode("utf-8")).hexdigest()[:8]
        return stem

    def _reuse(self, stem: str, url: str) -> bool:
        """True when ``stem`` needs no download: done in this run or intact from the last."""
        if stem in self.rows:
            if self.rows[stem]["input_url"] != _portable_url(url):
                raise _SkipItem(f"same video as {self.rows[stem]['input_url']} ({stem})")
            return True
        row = self.old.get(stem)
        if row is not None and self._intact(row):
            self._keep(row, url)
            return True
        return False

    # ---- one download

    def _download(self, entry: dict[str, Any], stem: str, url: str) -> None:
        """Download one resolved video with retries, check it, write its files and row.

        Stale files of the item go first (yt-dlp would keep a changed file); on any failure
        the new ones are removed too. Partial ``.part`` downloads stay, to be resumed.
        """
        self._remove_files(stem)
        try:
            info = self._retrying(
                lambda: self.ydl.process_ie_result({**entry, _STEM_KEY: stem}, download=True)
            )
            downloads = info.get("requested_downloads") or []
            if not downloads or not Path(downloads[0]["filepath"]).is_file():
                raise RuntimeError("yt-dlp saved no media file")
            media = Path(downloads[0]["filepath"])
            duration = _decoded_duration(media)
            _skip_unless_wanted({**info, "duration": duration}, self.options, final=True)
            local = info.get("url") or downloads[0].get("url") or ""
            if local.startswith("file:"):
                self._copy_sidecars(_file_url_path(local), stem)
            atomic_write_text(self.out_dir / f"{stem}.info.json", _info_json(info))
            self.rows[stem] = self._row(info, stem, media, duration, url)
        except Exception:
            self._remove_files(stem)
            raise
        self.downloaded += 1

    def _row(
        self, info: Mapping[str, Any], stem: str, media: Path, duration: float, url: str
    ) -> dict[str, Any]:
        """The manifest row of a freshly downloaded item."""
        subtitles = sorted(p.name for p in self.out_dir.glob(f"{stem}.*.vtt"))
        return {
            "item": stem,
            "media": media.name,
            "id": str(info["id"]),
            "extractor": info.get("extractor") or "",
            "title": info.get("title") or "",
            "uploader": info.get("uploader") or "",
            "channel": info.get("channel") or "",
            "license": info.get("license") or "",
            "duration_s": round(duration, 3),
            "upload_date": "" if _is_file_url(url) else info.get("upload_date") or "",
            "webpage_url": _portable_url(_plain_url(info.get("webpage_url"))) or "",
            "input_url": _portable_url(url),
            "language": self.language or info.get("language") or "",
            "subtitles": ";".join(subtitles),
            "size": media.stat().st_size,
            "sha256": sha256_file(media),
        }

    def _copy_sidecars(self, media: Path, stem: str) -> None:
        """Copy ``<media stem>[.<lang>].vtt`` next to a local file as ``<stem>.<lang>.vtt``."""
        found: dict[str, Path] = {}
        for path in sorted(media.parent.glob(f"{_glob_escape(media.stem)}*.vtt")):
            middle = path.name[len(media.stem) : -len(".vtt")]
            if middle == "":
                found.setdefault(self.language or "und", path)
            elif middle.startswith(".") and _LANGUAGE_RE.fullmatch(middle[1:]):
                lang = middle[1:]
                if self.language is None or lang == self.language:
                    found[lang] = path  # an explicit language wins over a plain .vtt
        for lang, path in found.items():
            target = self.out_dir / f"{stem}.{lang}.vtt"
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)

    # ---- manifest rows and files

    def _intact(self, row: Mapping[str, Any]) -> bool:
        """Files of a manifest row still there with the recorded size (and language)."""
        media = self.out_dir / row["media"]
        subtitles = [name for name in row["subtitles"].split(";") if name]
        return (
            media.is_file()
            and media.stat().st_size == row["size"]
            and (self.out_dir / f"{row['item']}.info.json").is_file()
            and all((self.out_dir / name).is_file() for name in subtitles)
            and (self.language is None or row["language"] == self.language)
        )

    def _keep(self, row: Mapping[str, Any], url: str) -> None:
        self.rows[row["item"]] = {**row, "input_url": _portable_url(url)}

    def _remove_files(self, stem: str, keep_partial: bool = True) -> None:
        """Delete an item's media, subtitles and info; partial downloads stay to be resumed."""
        for path in self.out_dir.glob(f"{stem}.*"):
            partial = ".part" in path.name or path.name.endswith(".ytdl")
            if path.is_file() and not (keep_partial and partial):
                path.unlink()

    def finish(self) -> int:
        """Write the manifest, delete the files of dropped items; return how many were dropped."""
        dropped = [stem for stem in self.old if stem not in self.rows]
        for stem in dropped:
            self._remove_files(stem, keep_partial=False)
        frame = pd.DataFrame(
            [self.rows[stem] for stem in sorted(self.rows)], columns=list(MANIFEST_COLUMNS)
        )
        with atomic_path(self.out_dir / "manifest.csv") as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
        if self._ydl is not None:
            self._ydl.close()
        return len(dropped)

    # ---- yt-dlp

    @property
    def ydl(self) -> yt_dlp.YoutubeDL:
        """The yt-dlp handle, created on first use (a fully kept source never needs it)."""
        if self._ydl is None:
            self._ydl = yt_dlp.YoutubeDL(_ydl_params(self.out_dir, self.language, self.options))
        return self._ydl

    def _retrying(self, call: Callable[[], T]) -> T:
        """Run ``call``, retrying transient network errors with exponential backoff."""
        for attempt in range(self.options.retries + 1):
            try:
                return call()
            except DownloadError as exc:
                if attempt == self.options.retries or not _is_transient(exc):
                    raise
                delay = _backoff(attempt)
                log.warning(
                    "retry %d/%d in %.1f s: %s",
                    attempt + 1,
                    self.options.retries,
                    delay,
                    _reason(exc),
                )
                time.sleep(delay)
        raise AssertionError("unreachable")


class _StopUrl(Exception):
    """Enough videos for this URL."""


def _ydl_params(out_dir: Path, language: str | None, options: DownloadParams) -> dict[str, Any]:
    """yt-dlp parameters: quiet, resumable, audio-only unless asked, no re-encoding."""
    sleep = {"http": _backoff, "fragment": _backoff, "extractor": _backoff}
    want_subs = options.subtitles or options.auto_subtitles
    if options.auto_subtitles and language is None:
        log.warning("auto_subtitles needs the source's language; automatic captions skipped")
    params: dict[str, Any] = {
        "format": "bestvideo+bestaudio/best" if options.keep_video else "bestaudio/best",
        "outtmpl": {"default": f"%({_STEM_KEY})s.%(ext)s"},
        "paths": {"home": str(out_dir), "temp": str(out_dir)},
        "enable_file_urls": True,
        "noplaylist": False,
        "quiet": True,
        "noprogress": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "logger": _YtdlpLog(),
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
        "retries": options.retries,
        "fragment_retries": options.retries,
        "extractor_retries": options.retries,
        "retry_sleep_functions": sleep,
        "continuedl": True,
        "updatetime": False,
        "socket_timeout": options.socket_timeout_s,
        "ratelimit": parse_bytes(options.rate_limit) if options.rate_limit else None,
        "cookiefile": options.cookies,
        "writesubtitles": options.subtitles,
        "writeautomaticsub": options.auto_subtitles and language is not None,
        "subtitleslangs": [language, f"{language}-.+"] if language else ["all", "-live_chat"],
        "subtitlesformat": "vtt/best",
    }
    if want_subs:
        params["postprocessors"] = [
            {"key": "FFmpegSubtitlesConvertor", "format": "vtt", "when": "before_dl"}
        ]
    return params


def _resolve(ydl: yt_dlp.YoutubeDL, entry: dict[str, Any]) -> dict[str, Any]:
    """Follow ``url``/``url_transparent`` results until a video or playlist comes out."""
    while entry.get("_type") in ("url", "url_transparent"):
        inner = ydl.extract_info(
            entry["url"], download=False, process=False, ie_key=entry.get("ie_key")
        )
        if entry["_type"] == "url_transparent":
            outer = {k: v for k, v in entry.items() if v is not None and k not in _TRANSPARENT_KEEP}
            inner = {**inner, **outer}
        for key in _PLAYLIST_EXTRAS:
            if entry.get(key) is not None:
                inner.setdefault(key, entry[key])
        entry = inner
    return entry


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): 1, 2, 4, … capped."""
    return min(_BACKOFF_S * 2**attempt, _MAX_BACKOFF_S)


def _is_transient(exc: BaseException) -> bool:
    """Whether a yt-dlp error was caused by the network (retry) or is final (404, private…)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, HTTPError):
            return err.status in _TRANSIENT_HTTP or err.status >= 500
        if isinstance(err, (TransportError, ContentTooShortError, TimeoutError, ConnectionError)):
            return True
        exc_info = getattr(err, "exc_info", None)
        todo += [getattr(err, "cause", None), err.__cause__, err.__context__]
        if exc_info:
            todo.append(exc_info[1])
    return False


def _reason(exc: BaseException) -> str:
    """A one-line, user-facing reason for a failed item."""
    if isinstance(exc, _BadMedia):
        known = str(exc).startswith(("no audio stream", "empty file", "not a media file"))
        return str(exc) if known else f"truncated/undecodable media: {exc}"
    text = " ".join(str(exc).split())
    if "Did not get any data blocks" in text:
        return "empty file (0 bytes): the server or the file sent no data"
    text = re.sub(r"^ERROR:\s*", "", text)
    text = re.sub(r"^\[[^\]]+\]\s+(?:\S+:\s+)?", "", text)  # "[extractor] id: "
    text = re.sub(r"\s*\(caused by .*$|;\s*please report this issue.*$", "", text)
    if "Unsupported URL" in text:
        return "not a media file: the URL served a page with no video or audio in it"
    if match := re.search(r"HTTP Error \d{3}\b.*", text):
        return match[0]
    if not isinstance(exc, (yt_dlp.utils.YoutubeDLError, RuntimeError, OSError)):
        return f"{type(exc).__name__}: {text}"  # an unexpected error: name it
    return text or type(exc).__name__


def _entry_label(entry: Mapping[str, Any], url: str) -> str:
    """The most specific URL for an entry, for reports (plus its id inside a playlist page)."""
    if entry.get("_type") in ("url", "url_transparent"):
        return _plain_url(entry.get("url")) or url
    label = _plain_url(entry.get("webpage_url")) or url
    if entry.get("playlist_id") is not None and entry.get("id") is not None:
        label += f" [{entry['id']}]"
    return label


def _is_file_url(url: str) -> bool:
    return url.lower().startswith("file:")


def _portable_url(url: str | None) -> str | None:
    """A ``file://`` URL under the working directory as a relative path, else ``url``.

    Manifests then stay byte-identical across clones of the project in different folders.
    """
    if not url or not _is_file_url(url) or url.lower().startswith("file:./"):
        return url
    path = _file_url_path(url)
    try:
        return "file:./" + path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return url


def _plain_url(url: str | None) -> str | None:
    """``url`` without the data yt-dlp smuggles into URL fragments between extractors."""
    return unsmuggle_url(url)[0] if url else url


def _skip_unless_wanted(info: Mapping[str, Any], options: DownloadParams, final: bool) -> None:
    """Raise ``_SkipItem`` when the duration/date/licence filters reject the video.

    Unknown values pass while ``final`` is false (a playlist entry before extraction); at the
    final check an unknown date or licence is rejected when its filter is set. The duration
    is checked again after download with the decoded length when the site did not give it.
    """
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise _SkipItem("live or upcoming stream")
    duration = info.get("duration")
    if duration is not None:
        if duration < options.min_duration_s:
            raise _SkipItem(
                f"duration {duration:.0f} s < min_duration_s={options.min_duration_s:g}"
            )
        if options.max_duration_s and duration > options.max_duration_s:
            raise _SkipItem(
                f"duration {duration:.0f} s > max_duration_s={options.max_duration_s:g}"
            )
    date = info.get("upload_date")
    if options.date_after or options.date_before:
        if date is None and final:
            raise _SkipItem("unknown upload date (a date filter is set)")
        if date is not None and options.date_after and date < options.date_after:
            raise _SkipItem(f"uploaded {date}, before date_after={options.date_after}")
        if date is not None and options.date_before and date > options.date_before:
            raise _SkipItem(f"uploaded {date}, after date_before={options.date_before}")
    if options.licenses:
        licence = info.get("license")
        allowed = " or ".join(repr(s) for s in options.licenses)
        if licence is None and final:
            raise _SkipItem(f"unknown licence (licenses filter: {allowed})")
        if licence is not None and not any(s.lower() in licence.lower() for s in options.licenses):
            raise _SkipItem(f"licence {licence!r} is not {allowed}")


def _decoded_duration(path: Path) -> float:
    """Decode the first audio stream with ffmpeg; return its length in seconds.

    Raises ``_BadMedia`` when ffmpeg cannot open or decode it, finds no audio, hits a
    premature end, or decodes clearly less than the container declares (a truncated file).
    """
    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats",
         "-progress", "pipe:1", "-loglevel", "level+info", "-i", str(path),
         "-map", "0:a:0", "-f", "null", "-"],
        capture_output=True, text=True, errors="replace", check=False,
    )  # fmt: skip
    errors = [
        re.sub(r"^(?:\[[^\]]*@[^\]]*\]\s*)*\[error\]\s*", "", line)
        for line in proc.stderr.splitlines()
        if "[error]" in line
    ]
    if proc.returncode != 0:
        if "matches no streams" in proc.stderr or "0:a:0' for option 'map'" in proc.stderr:
            raise _BadMedia("no audio stream (a video without sound?)")
        if path.stat().st_size == 0:
            raise _BadMedia("empty file (0 bytes)")
        if _looks_like_text(path):
            raise _BadMedia("not a media file: it holds a web page or other text "
                            "(a login, cookie or error page served in place of the media?)")
        raise _BadMedia(errors[0] if errors else f"ffmpeg exit status {proc.returncode}")
    premature = [e for e in errors if re.search(r"partial file|prematurely|truncat", e, re.I)]
    if premature:
        raise _BadMedia(premature[0])
    times = re.findall(r"^out_time_us=(\d+)$", proc.stdout, re.M)
    decoded = int(times[-1]) / 1e6 if times else 0.0
    if decoded <= 0:
        raise _BadMedia("no audio could be decoded")
    declared = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", proc.stderr)
    if declared and "Estimating duration from bitrate" not in proc.stderr:
        hours, minutes, seconds = declared.groups()
        expected = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        if decoded < expected - max(0.5, 0.01 * expected):
            raise _BadMedia(f"decoded {decoded:.1f} s of the {expected:.1f} s it declares")
    return decoded


def _looks_like_text(path: Path) -> bool:
    """True when a file starts like HTML, XML, JSON or plain text rather than media."""
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"{", b"[")):
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(head) and all(b >= 32 or b in b"\t\r\n" for b in head)


def _info_json(info: Mapping[str, Any]) -> str:
    """A trimmed, deterministic JSON of the yt-dlp info dict (no timestamps, sorted keys)."""
    keep = ("id", "extractor", "title", "uploader", "channel", "license", "duration",
            "upload_date", "webpage_url", "original_url", "language", "playlist_id")  # fmt: skip
    data = {key: info.get(key) for key in keep}
    data["webpage_url"] = _portable_url(_plain_url(data["webpage_url"]))
    data["original_url"] = _portable_url(_plain_url(data["original_url"]))
    if _is_file_url(data["original_url"] or data["webpage_url"] or ""):
        data["upload_date"] = None  # a file's mtime, not a publication date
    data["subtitles"] = sorted(info.get("subtitles") or {})
    data["automatic_captions"] = sorted(info.get("automatic_captions") or {})
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _is_playlist(out_dir: Path, rows: list[dict[str, Any]]) -> bool:
    """Whether the rows came from a playlist (their info.json names one): re-enumerate it.

    An unreadable info.json also answers True, so yt-dlp is asked again.
    """
    for row in rows:
        try:
            info = json.loads((out_dir / f"{row['item']}.info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return True
        if info.get("playlist_id") is not None:
            return True
    return False


def _file_url_path(url: str) -> Path:
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _read_manifest(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of the previous run's manifest by item (empty when missing or unreadable)."""
    path = out_dir / "manifest.csv"
    if not path.is_file():
        return {}
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if tuple(frame.columns) != MANIFEST_COLUMNS:
            raise ValueError(f"unexpected columns {list(frame.columns)}")
        rows = frame.to_dict("records")
        for row in rows:
            row["size"] = int(row["size"])
            row["duration_s"] = float(row["duration_s"])
    except (ValueError, pd.errors.ParserError) as exc:
        log.warning("ignoring unreadable %s (items will be checked again): %s", path, exc)
        return {}
    return {row["item"]: row for row in rows}
