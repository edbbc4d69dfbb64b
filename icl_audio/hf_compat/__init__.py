"""The one place where icl-audio reaches into transformers' internals.

Everything else in icl-audio uses transformers' public API only (``from_pretrained``, model
forwards, tokenizers). The fast paths below touch internals that move between releases, so each
one proves itself once per loaded model against the plain path before it is used, and falls back
to the plain path with one warning line when it is missing or disagrees: never a wrong score,
never a crash.

Modules:
* :mod:`icl_audio.hf_compat.llama`: attention interface registration, cache objects, the decoder
  layer's parts (the scorer's packed pass and its pruned last layer).
* :mod:`icl_audio.hf_compat.xcodec2`: ``Xcodec2Model``'s submodules (the codec's branch-split encode
  and its block-matrix activations on CPU).
* :mod:`icl_audio.hf_compat.w2vbert`: ``Wav2Vec2BertSelfAttention``'s parts (the codec's semantic
  encoder run with memory-bounded attention).
* :mod:`icl_audio.hf_compat.tokenizers`: ``TikTokenConverter``'s ranks hook (building Llasa's
  tokenizer) and a fast reader of plain fast tokenizers (proven once per tokenizer against
  ``AutoTokenizer``).
* :mod:`icl_audio.hf_compat.bitsandbytes`: bitsandbytes' import without its hub-kernel look-up.
* :mod:`icl_audio.hf_compat.cpu`: torch's private CPU-capability queries (native bf16).

Contact points and the versions tested are listed in each module's docstring.
"""


def proven_once(module, memo: str, prove):
    """``prove(module)`` (a fast path, or ``module`` itself after one warning) on the first call for
    ``module``; the same answer afterwards, without warning again. The verdict is kept on the module
    under the attribute ``memo``, so it is dropped with the model."""
    kept = module.__dict__.get(memo)
    if kept is not None:
        return kept if kept is not False else module
    chosen = prove(module)
    module.__dict__[memo] = chosen if chosen is not module else False
    return chosen


def warn_fallback(what: str, exc: BaseException, consequence: str) -> None:
    """The one warning line of a fast path that could not be used: ``what`` was not used with this
    transformers release (the exception's first line), and the plain module runs (``consequence``)."""
    import warnings

    import transformers

    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    warnings.warn(
        f"icl-audio: {what} not used with transformers {transformers.__version__} "
        f"({type(exc).__name__}: {reason}); using the plain module ({consequence})",
        RuntimeWarning,
        stacklevel=4,
    )
