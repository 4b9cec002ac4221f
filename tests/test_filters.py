"""Label filters on hand-made transcripts."""

from tubetune.engines import Transcript, compression_ratio
from tubetune.filters import is_hallucination, teacher_rejection
from tubetune.params import LabelParams

P = LabelParams()


def t(text: str, **kw: float | str | int) -> Transcript:
    base = dict(text=text, language="en", language_probability=0.99, avg_logprob=-0.2,
                no_speech_prob=0.01, compression_ratio=compression_ratio(text), num_tokens=20)
    return Transcript(**{**base, **kw})


def reason(tr: Transcript, duration: float = 5.0, lang: str | None = "en") -> str | None:
    r = teacher_rejection(tr, duration, lang, P)
    return r[0] if r else None


def test_good_label_kept() -> None:
    assert reason(t("Start by warming a generous splash of olive oil in a pot.")) is None


def test_each_filter() -> None:
    assert reason(t("")) == "empty"
    assert reason(t("Hello there.", no_speech_prob=0.9)) == "no_speech"
    assert reason(t("Hello there.", avg_logprob=-1.5)) == "low_logprob"
    assert reason(t("Hallo zusammen.", language="de")) == "wrong_language"
    assert reason(t("Hello there.", language_probability=0.2), lang=None) == "language_uncertain"
    assert reason(t("Thank you for watching! Thank you.")) == "hallucination"
    assert reason(t("la la la la la la la la la la la la")) in ("compression", "repetition")
    assert reason(t("the end of the day " * 5, compression_ratio=1.5)) == "repetition"
    assert reason(t("Hi.", ), duration=20.0) == "char_rate"
    assert reason(t("A fine sentence about soup.", num_tokens=500)) == "too_long"


def test_chinese_hallucinations_and_runs() -> None:
    zh = dict(language="zh")
    assert teacher_rejection(t("字幕製作人", **zh), 3.0, "zh-TW", P)[0] == "hallucination"
    assert teacher_rejection(t("好啊啊啊啊啊啊啊啊啊啊啊", **zh, compression_ratio=1.0), 3.0,
                             "zh", P)[0] == "repetition"
    assert is_hallucination("시청해 주셔서 감사합니다.", "ko")
    assert not is_hallucination("오늘은 날씨가 좋습니다.", "ko")


def test_hallucination_lists_per_language_fold_chinese_scripts() -> None:
    from tubetune.filters import is_hallucination

    assert is_hallucination("字幕制作人", "zh-TW")  # listed in Traditional, said in Simplified
    assert is_hallucination("謝謝觀看！謝謝觀看。", "zh")
    assert is_hallucination("喔喔喔喔喔", "zh")  # the zh-TW seed's runs of 喔 on music
    assert not is_hallucination("今天我們來做番茄湯", "zh")
    assert is_hallucination("시청해주셔서 감사합니다.", "ko")
    assert not is_hallucination("오늘은 토마토 수프를 만들어 보겠습니다", "ko")


def test_character_rate_bounds_follow_the_language() -> None:
    from tubetune.filters import char_rate_bounds, text_rejection
    from tubetune.params import LabelParams

    params = LabelParams()
    assert char_rate_bounds(params, "zh-TW") == (1.0, 12.0)
    assert char_rate_bounds(params, "en") == (2.0, 30.0)
    assert char_rate_bounds(LabelParams(max_chars_per_s=9.0), "ko") == (1.0, 9.0)
    # 30 Mandarin characters in 2 s is no real speech; the same rate of English letters is.
    assert text_rejection("我" * 5 + "們今天來做一道非常簡單的番茄湯大家好久不見了", 20, 2.0, "zh",
                          params)[0] == "char_rate"
    assert text_rejection("we are making a simple tomato soup", 9, 2.0, "en", params) is None
