"""Whisper inference engines: transcription of ≤ 30 s clips, with the scores label filters need.

They are the pseudo-labelling teacher (:mod:`tubetune.labels`, :mod:`tubetune.sharding`) and
the evaluator (:mod:`tubetune.evaluation`); the long-form CLI and the server
(:mod:`tubetune.transcribe`, :mod:`tubetune.serve`) share their device and compute-type
choice. Two engines behind one interface (:class:`Teacher`):

* ``faster-whisper`` (CTranslate2, default): int8 on CPU, float16 on GPU. With
  ``batch_size`` > 1 the chunks are encoded and decoded as one batch through CTranslate2
  directly (faster-whisper's own ``BatchedInferencePipeline`` batches the VAD pieces of *one*
  long recording, detects one language for all of them and has no temperature fallback, so
  it does not fit independent chunks); chunks whose batched result fails the fallback
  thresholds are re-decoded alone with the remaining temperatures. Batching pays on GPU; on
  2 CPU cores it gives nothing, so ``batch_size: 1`` there is just as fast.
* ``transformers``: batched ``generate``; the scores are recomputed with one teacher-forced
  decoder pass so that avg log-prob, no-speech and language probabilities mean the same as
  faster-whisper's.

No engine conditions on previous text: each chunk is decoded on its own. faster-whisper
decodes one clip at a time with timestamps (Whisper's own default mode) and keeps the
segment times (``Transcript.timings``), from which training builds timestamped targets; its
batched path and the transformers engine decode without timestamps (timings unknown).

Reproducibility: decoding at temperature 0 uses no random numbers. The sampled fallback
does, so each engine seeds its generator (:data:`SAMPLING_SEED`): CTranslate2's generator
lives in the model's worker thread and cannot be reseeded, so faster-whisper splits the
work into a deterministic :meth:`~FasterWhisperTranscriber.first_pass` and sampled
:meth:`~FasterWhisperTranscriber.retry` calls that a fresh, seeded model must replay in chunk
order (what :mod:`tubetune.sharding` does); transformers reseeds torch for every batch.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tubetune.constants import FALLBACK_TEMPERATURES, SAMPLE_RATE
from tubetune.text import whisper_language

log = logging.getLogger(__name__)

ENGINES = ("faster-whisper", "transformers")
# Whisper's own fallback triggers (openai/whisper transcribe defaults).
FALLBACK_COMPRESSION_RATIO = 2.4
FALLBACK_AVG_LOGPROB = -1.0
FALLBACK_NO_SPEECH = 0.6  # faster-whisper's no_speech_threshold: silence is not re-decoded
SAMPLING_SEED = 0  # the temperature fallback's random draws are the same on every run


@dataclass(frozen=True)
class Transcript:
    """The text of one clip plus the scores the decoder gave it."""

    text: str
    language: str
    language_probability: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    num_tokens: int
    timings: str = ""  # JSON [[start_ms, end_ms, text], ...] of the decoded segments; "" unknown


@dataclass(frozen=True)
class DecodeOptions:
    """How a chunk is decoded: ``language`` None means detect it per chunk."""

    language: str | None = None
    task: str = "transcribe"
    beam_size: int = 5
    temperatures: tuple[float, ...] = FALLBACK_TEMPERATURES


PENDING = Transcript("", "", 0.0, 0.0, 1.0, 0.0, 0)
"""Stands in for a first-pass result that was not decoded (its retry does all the work)."""


@dataclass(frozen=True)
class FirstPass:
    """A clip's deterministic result and the temperatures still to sample (empty: final)."""

    transcript: Transcript
    retry: tuple[float, ...] = ()


class Teacher(Protocol):
    """Anything that turns a batch of 16 kHz float32 clips (≤ 30 s each) into transcripts.

    ``transcribe_batch`` is ``first_pass`` followed by ``retry`` of every clip that asks for
    one, in order; the split lets a sharded run do the first pass anywhere.
    """

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], options: DecodeOptions
    ) -> list[Transcript]:
        """One transcript per clip, in order."""
        ...

    def first_pass(self, audios: Sequence[np.ndarray], options: DecodeOptions) -> list[FirstPass]:
        """Results that use no random numbers, with the sampled retries each clip still needs."""
        ...

    def retry(self, audio: np.ndarray, first: FirstPass, options: DecodeOptions) -> Transcript:
        """The sampled re-decode of one clip (draws from the teacher's seeded generator)."""
        ...


def finish_batch(
    teacher: Teacher, audios: Sequence[np.ndarray], firsts: Sequence[FirstPass],
    options: DecodeOptions,
) -> list[Transcript]:
    """Final transcripts of a batch: its first pass, retried where asked, in clip order."""
    return [
        teacher.retry(audio, first, options) if first.retry else first.transcript
        for audio, first in zip(audios, firsts, strict=True)
    ]


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length; high values mean repetitive text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def needs_fallback(t: Transcript) -> bool:
    """Whisper's rule for re-decoding at a higher temperature."""
    return (
        t.compression_ratio > FALLBACK_COMPRESSION_RATIO or t.avg_logprob < FALLBACK_AVG_LOGPROB
    )


def is_silence(t: Transcript) -> bool:
    """faster-whisper's exception to the fallback: likely no speech, so keep the result."""
    return t.no_speech_prob > FALLBACK_NO_SPEECH and t.avg_logprob < FALLBACK_AVG_LOGPROB


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when CTranslate2 sees a GPU, else ``cpu``."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def pick_beam_size(beam_size: int | str, device: str) -> int:
    """``auto`` -> greedy on CPU, beam 5 on GPU.

    On CPU the decoder is memory-bound (each step reads the cross-attention keys and values of
    all 1,500 encoder frames), so beam 5 costs ~1.4x the labelling time of greedy; on a GPU
    it is nearly free. Greedy plus the temperature fallback is openai/whisper's own default.
    """
    if beam_size != "auto":
        return int(beam_size)
    return 5 if pick_device(device) == "cuda" else 1


def pick_compute_type(compute_type: str, device: str) -> str:
    """``auto`` -> int8 on CPU (fastest there), float16 on GPU."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class FasterWhisperTranscriber:
    """A CTranslate2 Whisper model kept in memory (the default teacher and the evaluator)."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        device_index: int = 0,
        replicas: int = 1,
    ) -> None:
        """``replicas`` > 1: that many CTranslate2 workers share the weights, so as many
        Python threads can decode at once (:mod:`tubetune.sharding` on CPU)."""
        import ctranslate2
        from faster_whisper import WhisperModel

        self.device = pick_device(device)
        self.compute_type = pick_compute_type(compute_type, self.device)
        log.info("loading %s on %s:%d (%s)", model_dir, self.device, device_index,
                 self.compute_type)
        # Read when a model's worker thread first samples: a new model starts a fresh,
        # seeded random stream. Sampled retries only ever run on a one-replica model, whose
        # single worker thread then draws in chunk order.
        ctranslate2.set_random_seed(SAMPLING_SEED)
        self.model = WhisperModel(
            str(model_dir),
            device=self.device,
            device_index=device_index,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            num_workers=replicas,
        )

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        task: str = "transcribe",
        beam_size: int = 5,
        temperatures: Sequence[float] = FALLBACK_TEMPERATURES,
    ) -> Transcript:
        """Transcribe a float32 16 kHz mono clip (≤ 30 s) without previous-text conditioning."""
        segments, info = self.model.transcribe(
            audio,
            language=whisper_language(language),
            task=task,
            beam_size=beam_size,
            temperature=list(temperatures),
            condition_on_previous_text=False,
            vad_filter=False,
        )
        segments = list(segments)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        timings = [[round(s.start * 1000), round(s.end * 1000), s.text.strip()]
                   for s in segments if s.text.strip()]
        tokens = sum(len(s.tokens) for s in segments)
        weighted = sum(s.avg_logprob * max(len(s.tokens), 1) for s in segments)
        weights = sum(max(len(s.tokens), 1) for s in segments)
        return Transcript(
            text=text,
            language=info.language,
            language_probability=float(info.language_probability),
            avg_logprob=float(weighted / weights) if weights else 0.0,
            no_speech_prob=float(segments[0].no_speech_prob) if segments else 1.0,
            compression_ratio=compression_ratio(text),
            num_tokens=tokens,
            timings=json.dumps(timings, ensure_ascii=False) if timings else "",
        )

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], options: DecodeOptions
    ) -> list[Transcript]:
        """Transcribe clips; one at a time for a single clip, else one CTranslate2 batch."""
        return finish_batch(self, audios, self.first_pass(audios, options), options)

    def first_pass(self, audios: Sequence[np.ndarray], options: DecodeOptions) -> list[FirstPass]:
        """Decode at the first temperature and mark the clips that need the fallback.

        A single clip that fails is re-decoded with every temperature (faster-whisper keeps
        the best of all, the first included); a batched one with the remaining ones.
        """
        temperatures = options.temperatures or (0.0,)
        if temperatures[0] > 0:  # every decode samples: all of it belongs to the retries
            return [FirstPass(PENDING, temperatures) for _ in audios]
        if len(audios) == 1:
            t = self._one(audios[0], options, temperatures[:1])
            again = len(temperatures) > 1 and needs_fallback(t) and not is_silence(t)
            return [FirstPass(t, temperatures if again else ())]
        return [
            FirstPass(t, temperatures[1:] if needs_fallback(t) else ())
            for t in self._batched(audios, options)
        ]

    def retry(self, audio: np.ndarray, first: FirstPass, options: DecodeOptions) -> Transcript:
        """Re-decode one clip with the temperatures its first pass asked for."""
        return self._one(audio, options, first.retry)

    def _one(
        self, audio: np.ndarray, options: DecodeOptions, temperatures: Sequence[float]
    ) -> Transcript:
        return self.transcribe(
            audio, options.language, options.task, options.beam_size, temperatures
        )

    def _batched(self, audios: Sequence[np.ndarray], options: DecodeOptions) -> list[Transcript]:
        """First-temperature decode of a batch through CTranslate2's batched generate."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        wm = self.model
        features = np.stack(
            [pad_or_trim(wm.feature_extractor(a)[:, : wm.feature_extractor.nb_max_frames])
             for a in audios]
        )
        encoded = wm.encode(features)
        forced = whisper_language(options.language)
        if forced or not wm.model.is_multilingual:
            langs = [(forced or "en", 1.0)] * len(audios)
        else:
            detected = wm.model.detect_language(encoded)
            langs = [(r[0][0][2:-2], float(r[0][1])) for r in detected]
        prompts = []
        for lang, _ in langs:
            tok = Tokenizer(wm.hf_tokenizer, wm.model.is_multilingual, options.task, lang)
            prompts.append([*tok.sot_sequence, tok.no_timestamps])
        results = wm.model.generate(
            encoded, prompts, beam_size=options.beam_size, max_length=wm.max_length,
            return_scores=True, return_no_speech_prob=True,
            sampling_temperature=options.temperatures[0] if options.temperatures else 0.0,
            suppress_blank=True, suppress_tokens=[-1],
        )
        out = []
        for (lang, prob), result in zip(langs, results, strict=True):
            ids = [t for t in result.sequences_ids[0] if t < tok.eot]
            text = tok.decode(ids).strip()
            seq_len = len(result.sequences_ids[0])
            out.append(Transcript(
                text=text, language=lang, language_probability=prob,
                avg_logprob=float(result.scores[0] * seq_len / (seq_len + 1)),
                no_speech_prob=float(result.no_speech_prob),
                compression_ratio=compression_ratio(text), num_tokens=len(ids),
            ))
        return out


class TransformersTranscriber:
    """Whisper in transformers: batched ``generate``, scores from one teacher-forced pass."""

    def __init__(
        self, model_dir: str | Path, device: str = "auto", device_index: int = 0,
        cpu_threads: int = 0,
    ) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            device = f"cuda:{device_index}"
        elif cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        self.device = device
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        log.info("loading %s with transformers on %s (%s)", model_dir, device, dtype)
        self.processor = WhisperProcessor.from_pretrained(str(model_dir))
        self.model = WhisperForConditionalGeneration.from_pretrained(
            str(model_dir), dtype=dtype
        ).to(device).eval()
        tok = self.processor.tokenizer
        ids = {code: tok.convert_tokens_to_ids(f"<|{code}|>") for code in LANGUAGES}
        self.language_ids = {code: i for code, i in ids.items() if i != tok.unk_token_id}
        self.no_speech_id = tok.convert_tokens_to_ids("<|nospeech|>")
        if self.no_speech_id == tok.unk_token_id:
            self.no_speech_id = tok.convert_tokens_to_ids("<|nocaptions|>")

    def first_pass(self, audios: Sequence[np.ndarray], options: DecodeOptions) -> list[FirstPass]:
        """The whole decode: its sampling is reseeded per batch, so nothing is left to retry."""
        return [FirstPass(t) for t in self.transcribe_batch(audios, options)]

    def retry(self, audio: np.ndarray, first: FirstPass, options: DecodeOptions) -> Transcript:
        """Never needed: :meth:`first_pass` asks for no retries."""
        return first.transcript

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], options: DecodeOptions
    ) -> list[Transcript]:
        """Decode the batch at each temperature in turn, re-decoding only failed clips.

        torch's generator is reseeded for the batch (and restored after), so the sampled
        fallback of a batch draws the same numbers whatever was decoded before it.
        """
        import torch

        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(SAMPLING_SEED)
            return self._decode(audios, options)

    def _decode(self, audios: Sequence[np.ndarray], options: DecodeOptions) -> list[Transcript]:
        import torch

        inputs = self.processor.feature_extractor(
            list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt"
        )
        features = inputs.input_features.to(self.device, self.model.dtype)
        with torch.inference_mode():
            encoder_outputs = self.model.get_encoder()(features)
            first = self._score(encoder_outputs, None)
            langs = [
                (whisper_language(options.language), 1.0) if options.language else lp
                for lp in first["languages"]
            ]
            results: list[Transcript | None] = [None] * len(audios)
            todo = list(range(len(audios)))
            for temperature in options.temperatures or (0.0,):
                hidden = encoder_outputs.last_hidden_state[todo]
                sub = type(encoder_outputs)(last_hidden_state=hidden)
                prompts = [self._prompt(langs[i][0], options.task) for i in todo]
                gen = self.model.generate(  # a copy: beam search expands it in place
                    encoder_outputs=type(sub)(last_hidden_state=hidden),
                    decoder_input_ids=torch.tensor(prompts, device=self.device),
                    num_beams=options.beam_size if temperature == 0 else 1,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    max_new_tokens=self.model.config.max_target_positions - len(prompts[0]),
                )
                prompt_ids = torch.tensor(prompts, device=self.device)
                starts = gen.shape[1] >= prompt_ids.shape[1] and bool(
                    (gen[:, : prompt_ids.shape[1]] == prompt_ids).all())
                if not starts:  # generate left the prompt out
                    gen = torch.cat([prompt_ids, gen], dim=1)
                # A runaway decode can come back longer than the decoder has positions
                # (it never reached end-of-text): score what fits; the filters reject it.
                scored = self._score(sub, gen[:, : self.model.config.max_target_positions])
                still = []
                for k, i in enumerate(todo):
                    t = Transcript(
                        text=scored["texts"][k], language=langs[i][0],
                        language_probability=langs[i][1], avg_logprob=scored["avg_logprob"][k],
                        no_speech_prob=first["no_speech"][i],
                        compression_ratio=compression_ratio(scored["texts"][k]),
                        num_tokens=scored["num_tokens"][k],
                    )
                    results[i] = t
                    if needs_fallback(t):
                        still.append(i)
                todo = still
                if not todo:
                    break
        return [r for r in results if r is not None]

    def _prompt(self, language: str, task: str) -> list[int]:
        tok = self.processor.tokenizer
        return [
            tok.convert_tokens_to_ids(t)
            for t in ("<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>",
                      "<|notimestamps|>")
        ]

    def _score(self, encoder_outputs, sequences) -> dict:
        """Language/no-speech probabilities at SOT, and the mean log-prob of ``sequences``.

        The mean is over text tokens plus end-of-text, like faster-whisper's.
        """
        import torch

        tok = self.processor.tokenizer
        batch = encoder_outputs.last_hidden_state.shape[0]
        sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
        if sequences is None:
            sequences = torch.full((batch, 1), sot, device=self.device)
        logits = self.model(
            encoder_outputs=encoder_outputs, decoder_input_ids=sequences
        ).logits.float()
        out: dict = {}
        first = logits[:, 0]
        probs = first.softmax(-1)
        out["no_speech"] = probs[:, self.no_speech_id].tolist()
        ids = torch.tensor(list(self.language_ids.values()), device=self.device)
        lang_probs = first[:, ids].softmax(-1)
        best = lang_probs.argmax(-1).tolist()
        names = list(self.language_ids)
        out["languages"] = [
            (names[b], float(lang_probs[r, b])) for r, b in enumerate(best)
        ]
        if sequences.shape[1] == 1:
            return out
        logp = logits.log_softmax(-1)
        prompt_len, eot = 4, tok.eos_token_id
        out["texts"], out["avg_logprob"], out["num_tokens"] = [], [], []
        for r in range(batch):
            seq = sequences[r, prompt_len:].tolist()
            n = seq.index(eot) + 1 if eot in seq else len(seq)
            text_ids = [t for t in seq[:n] if t < eot]
            lp = [float(logp[r, prompt_len - 1 + j, seq[j]]) for j in range(n)]
            out["texts"].append(tok.decode(text_ids, skip_special_tokens=True).strip())
            out["avg_logprob"].append(sum(lp) / max(len(lp), 1))
            out["num_tokens"].append(len(text_ids))
        return out


def load_teacher(
    engine: str, ct2_dir: Path, hf_dir: Path, device: str = "auto",
    compute_type: str = "auto", cpu_threads: int = 0, device_index: int = 0, replicas: int = 1,
) -> Teacher:
    """The teacher for ``engine``: faster-whisper reads ``ct2_dir``, transformers ``hf_dir``.

    ``device_index`` picks the GPU when ``device`` is (or resolves to) ``cuda``;
    ``replicas`` (faster-whisper only) lets that many threads decode at once.
    """
    if engine == "faster-whisper":
        return FasterWhisperTranscriber(ct2_dir, device, compute_type, cpu_threads, device_index,
                                        replicas)
    if engine == "transformers":
        return TransformersTranscriber(hf_dir, device, device_index, cpu_threads)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
