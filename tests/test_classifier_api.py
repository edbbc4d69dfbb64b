"""ICLClassifier keeps scikit-learn's and pipelines' contracts: checked options, full refits,
NotFittedError as an AttributeError, and what counts as one clip or a batch."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tone, write_wav
from icl_audio.classifier import ICLClassifier, NotFittedError
from icl_audio.errors import AudioError, ICLAudioError
from icl_audio.scoring import ScoringOptions


class NoLoading(ICLClassifier):
    """Fails the test if a model is loaded: option checks must not need one."""

    @property
    def lm(self):
        raise AssertionError("a model was loaded")

    @property
    def codec_model(self):
        raise AssertionError("a codec was loaded")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "nonsense"}, "unknown scoring mode 'nonsense'"),
        ({"normalize": "median"}, "unknown normalisation 'median'"),
        ({"template": "no-such-template"}, "unknown template 'no-such-template'"),
        ({"template": "/no/such/file.toml"}, "does not exist"),
        ({"k": -1}, "k must be an integer >= 0"),
        ({"k": 2.5}, "k must be an integer >= 0"),
        ({"k": True}, "k must be an integer >= 0"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"max_context": 3}, "max_context must be an integer >= 16"),
        ({"max_seconds": 0}, "max_seconds must be a positive number"),
        ({"calibrate": "yes"}, "calibrate must be True or False"),
        ({"balanced": 1}, "balanced must be True or False"),
        ({"model": ""}, "model must be a hub id"),
        ({"scoring": {"mode": "direct"}}, "scoring must be a ScoringOptions"),
    ],
)
def test_bad_options_fail_at_construction_in_one_line(options, message):
    with pytest.raises(ICLAudioError) as err:
        NoLoading(**{"model": "debug", "codec": "debug", **options})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_scoring_options_pass_through_and_fields_override_them():
    base = ScoringOptions(mode="channel", normalize="mean")
    clf = NoLoading(model="debug", codec="debug", scoring=base)
    assert clf.scoring_options == base
    clf = NoLoading(model="debug", codec="debug", scoring=base, normalize="sum")
    assert (clf.scoring_options.mode, clf.scoring_options.normalize) == ("channel", "sum")
    # No scoring options given: ScoringOptions' own defaults, whatever they are.
    assert NoLoading(model="debug", codec="debug").scoring_options == ScoringOptions()


def test_get_params_and_set_params():
    clf = NoLoading(model="debug", codec="debug", k=3, mode="channel")
    params = clf.get_params()
    assert params["k"] == 3 and params["mode"] == "channel" and "lm" not in params
    assert type(clf)(**params).get_params() == params  # what sklearn.clone does
    assert clf.set_params(k=5) is clf and clf.k == 5
    with pytest.raises(ICLAudioError, match="unknown scoring mode"):
        clf.set_params(mode="bad")
    assert clf.mode == "channel" and clf.scoring_options.mode == "channel"  # a refused change changes nothing
    with pytest.raises(ICLAudioError, match="unknown parameter"):
        clf.set_params(kk=1)


def test_unfitted_access_is_an_attribute_error():
    clf = NoLoading(model="debug", codec="debug")
    assert not hasattr(clf, "classes_") and not hasattr(clf, "support_") and not hasattr(clf, "multi_label_")
    with pytest.raises(NotFittedError) as err:
        clf.predict([np.zeros(100, np.float32)])
    assert isinstance(err.value, AttributeError) and isinstance(err.value, ICLAudioError)


@pytest.fixture
def clf(debug_lm, debug_codec):
    return ICLClassifier(model="debug", codec="debug", k=2, lm=debug_lm, codec_model=debug_codec, use_cache=False)


def _clips(freqs, seconds=0.4):
    return [tone(f, seconds, phase=i) for i, f in enumerate(freqs)]


def test_refit_recomputes_every_fitted_attribute(clf):
    audios = _clips([150, 160, 2000, 2100])
    clf.fit(audios, [["hum", "engine"], ["hum"], ["beep"], ["beep", "alarm"]])
    assert clf.multi_label_ and clf.classes_ == ("alarm", "beep", "engine", "hum")
    multi = clf.predict_proba(_clips([155]))
    assert multi.shape == (1, 4)
    # Multi-label: an independent probability per label, which need not sum to 1.
    assert not np.isclose(multi.sum(), 1.0)
    clf.fit(audios, ["low", "low", "high", "high"])
    assert not clf.multi_label_ and clf.classes_ == ("high", "low")
    assert not clf.scoring_options.multi_label and not clf.scorer.options.multi_label
    single = clf.predict_proba(_clips([155]))
    assert single.shape == (1, 2) and np.isclose(single.sum(), 1.0)
    assert isinstance(clf.predict(_clips([155]))[0], str)


def test_batches_and_single_clips(clf, tmp_path):
    clf.fit(_clips([150, 160, 2000, 2100]), ["low", "low", "high", "high"])
    a = str(write_wav(tmp_path / "a.wav", tone(155, 0.4)))
    b = str(write_wav(tmp_path / "b.wav", tone(2050, 0.4)))
    one = clf(a)
    assert isinstance(one, list) and {r["label"] for r in one} == {"high", "low"}
    # A tuple of paths is a batch, like a list.
    pair = clf((a, b))
    assert len(pair) == 2 and all(isinstance(r, list) for r in pair)
    assert pair == clf([a, b])
    assert pair[0] == one
    # (ndarray, int) is the one tuple that is a single clip: samples and their rate.
    at_8k = tone(155, 0.4, sr=8000)
    single = clf((at_8k, 8000))
    assert isinstance(single[0], dict) and {r["label"] for r in single} == {"high", "low"}
    assert len(clf([(at_8k, 8000), (at_8k, 8000)])) == 2
    with pytest.raises(ICLAudioError, match="list or tuple"):
        clf.predict(a)  # one path where a batch is expected: said, not iterated character by character


def test_fit_checks_its_inputs(clf, tmp_path):
    with pytest.raises(ICLAudioError, match="2 clips but 1 labels"):
        clf.fit(_clips([100, 200]), ["x"])
    with pytest.raises(ICLAudioError, match="list or tuple"):
        clf.fit("a.wav", "x")
    with pytest.raises(AudioError, match="no such file"):
        clf.fit([str(tmp_path / "missing.wav")], ["x"])
    assert not hasattr(clf, "classes_")  # a failed fit leaves it unfitted


def test_classify_skips_bad_inputs_in_place(clf, tmp_path):
    clf.fit(_clips([150, 2000]), ["low", "high"])
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    from icl_audio.classifier import Failure, Prediction

    out = clf.classify([tone(150, 0.4), str(bad), tone(2000, 0.4)], on_error="skip")
    assert [type(x) for x in out] == [Prediction, Failure, Prediction]
    assert "cannot read audio" in out[1].error
    with pytest.raises(AudioError):
        clf.classify([str(bad)])
