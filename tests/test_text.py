"""Target normalisers on real zh/ko strings; metric normaliser unchanged."""

from tubetune.params import NormalizeParams
from tubetune.text import clean_ksponspeech, normalize_for_metric, normalize_target


def test_zh_tw_traditional_and_fullwidth() -> None:
    out = normalize_target("我们今天去软件公司, 看看信息!好吗?", "zh-TW", NormalizeParams())
    assert out == "我們今天去軟體公司，看看資訊！好嗎？"


def test_zh_keeps_numbers_and_final_period() -> None:
    assert normalize_target("价格是3.5元.", "zh", NormalizeParams()) == "價格是3.5元。"


def test_zh_conversion_off() -> None:
    norm = NormalizeParams(zh_convert=None, fullwidth_punctuation=False)
    assert normalize_target("软件, 好", "zh", norm) == "软件, 好"


def test_ksponspeech_notation() -> None:
    text = "o/ 그래서 (3시)/(세 시)에 b/ 만나자+ 아/ 그* 뭐지 n/"
    assert clean_ksponspeech(text, "phonetic") == "그래서 세 시에 만나자 아 그 뭐지"
    assert clean_ksponspeech("(3시)/(세 시)에", "orthographic") == "3시에"


def test_english_left_whisper_style() -> None:
    text = "It costs 3.5 dollars, OK?"
    assert normalize_target(text, "en", NormalizeParams()) == text
    assert normalize_for_metric(text, "en") != text
