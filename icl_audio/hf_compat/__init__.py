"""The one place where icl-audio reaches into transformers' internals.

Everything else in icl-audio uses transformers' public API only (``from_pretrained``, model
forwards, tokenizers). The fast paths below touch internals that move between releases, so each
one has a plain path beside it (public API only) and proves itself against it once per loaded
model before it is used, through ONE mechanism: :func:`proven_once` runs the proof and keeps its
verdict on the model, and a fast path that is missing or disagrees falls back to the plain path
with ONE warning line (:func:`warn_fallback`, a ``RuntimeWarning``). Never a wrong score or code,
never a crash.

Modules and their fast paths (contact points and tested versions are listed in each docstring):

* :mod:`icl_audio.hf_compat.llama`: the scorer's KV-cache keyword, cache objects built from
  tensors and the pruned last decoder layer; proven by :func:`icl_audio.engine.verified_path`.
* :mod:`icl_audio.hf_compat.xcodec2`: the codec's acoustic branch with block-matrix activations on
  CPU; proven by :func:`icl_audio.hf_compat.xcodec2.fast_acoustic_encoder`.
* :mod:`icl_audio.hf_compat.w2vbert`: the codec's semantic encoder with memory-bounded attention;
  proven by :func:`icl_audio.hf_compat.w2vbert.bounded_semantic_encoder`.
* :mod:`icl_audio.hf_compat.xcodec2` also holds the codec's encode order (which submodules
  ``Xcodec2Model.encode`` runs, in which order); proven against ``Xcodec2Model.encode`` by
  :func:`icl_audio.hf_compat.xcodec2.proven_encode_order`.
* :mod:`icl_audio.hf_compat.tokenizers`: ``TikTokenConverter``'s ranks hook (building Llasa's
  tokenizer) and a fast reader of plain fast tokenizers, proven once per tokenizer against
  ``AutoTokenizer``.
* :mod:`icl_audio.hf_compat.bitsandbytes`: bitsandbytes' import without its hub-kernel look-up.
* :mod:`icl_audio.hf_compat.cpu`: torch's private CPU-capability queries (native bf16).
"""

_PROVED_PLAIN = object()  # the verdict "the plain module": kept without a reference to the module itself


def proven_once(module, memo: str, prove):
    """``prove(module)`` on the first call for ``module``, the same verdict afterwards (no second proof,
    no second warning).

    ``prove`` returns the verdict: a fast path, a name, or ``module`` itself for "use the plain module"
    (after its one warning). The verdict is kept on the module under the attribute ``memo``, so it
    is dropped with the model (``module`` itself is kept as a marker, not as a reference to itself,
    so the model stays free of reference cycles and is freed as soon as it is dropped).
    """
    kept = module.__dict__.get(memo)
    if kept is not None:
        return module if kept is _PROVED_PLAIN else kept
    verdict = prove(module)
    module.__dict__[memo] = _PROVED_PLAIN if verdict is module else verdict
    return verdict


def warn_fallback(what: str, exc: BaseException, fallback: str) -> None:
    """The one warning line of a fast path that could not be used: ``what`` was not used with this
    transformers release (the exception's first line), and what runs instead (``fallback``)."""
    import warnings

    import transformers

    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    warnings.warn(
        f"icl-audio: {what} not used with transformers {transformers.__version__} "
        f"({type(exc).__name__}: {reason}); {fallback}",
        RuntimeWarning,
        stacklevel=4,
    )
