"""Check that a NeMo model is a supported TDT transducer and read the manifest facts off it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from parakeet_runtime.engine.model.manifest import DecodingSpec, FeatureSpec, TokenizerSpec

from .errors import ConversionError


def feature_normalization(normalize: object) -> str | None:
    """NeMo's ``normalize`` setting as the manifest names it: ``per_feature``, ``all_features`` or ``none`` (NeMo
    normalises nothing for a false value or any other string, ``"NA"`` included: ``normalize_batch`` returns the
    features as they are); ``None`` for what the engine does not reproduce (fixed means and deviations)."""
    if not normalize:
        return "none"
    if not isinstance(normalize, str) or ("fixed_mean" in normalize and "fixed_std" in normalize):
        return None
    return normalize if normalize in ("per_feature", "all_features") else "none"


def _normalization(normalize: object, name: str) -> str:
    found = feature_normalization(normalize)
    if found is None:
        raise ConversionError(f"{name}: unsupported feature normalisation {normalize!r}")
    return found


def check_supported(model: Any, name: str) -> None:
    """Raise a one-line :class:`ConversionError` for anything but a SentencePiece TDT transducer."""
    kind = type(model).__name__
    if not hasattr(model, "joint") or not hasattr(model, "decoder") or not hasattr(model, "decoding"):
        raise ConversionError(
            f"{name} is a {kind} (CTC or other non-transducer model); convert-model needs a TDT model"
        )
    durations = list(getattr(model.decoding, "durations", None) or [])
    if not durations or int(getattr(model.joint, "num_extra_outputs", 0)) != len(durations):
        raise ConversionError(
            f"{name} is a {kind} without TDT durations (a plain RNN-T); convert-model needs a TDT model"
        )
    if type(model.preprocessor).__name__ != "AudioToMelSpectrogramPreprocessor":
        raise ConversionError(f"{name}: unsupported preprocessor {type(model.preprocessor).__name__}")
    featurizer = model.preprocessor.featurizer
    if int(getattr(featurizer, "frame_splicing", 1)) != 1:
        raise ConversionError(f"{name}: frame splicing is not supported")
    if feature_normalization(featurizer.normalize) is None:
        raise ConversionError(f"{name}: unsupported feature normalisation {featurizer.normalize!r}")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConversionError(f"{name}: a character-level model (a label list, no tokenizer) is not supported; "
                              "convert-model needs a SentencePiece tokenizer (a BPE model such as Parakeet's)")
    if type(tokenizer).__name__ != "SentencePieceTokenizer":
        raise ConversionError(f"{name}: unsupported tokenizer {type(tokenizer).__name__} (needs SentencePiece)")
    if getattr(tokenizer, "legacy", False) and getattr(tokenizer, "special_token_to_id", None):
        raise ConversionError(f"{name}: SentencePiece tokenizers with added special tokens are not supported")
    decoder = model.decoder
    if type(decoder).__name__ != "RNNTDecoder" or not getattr(decoder, "blank_as_pad", False):
        raise ConversionError(f"{name}: unsupported prediction network {type(decoder).__name__}")
    rnn = decoder.prediction["dec_rnn"]
    if not hasattr(rnn, "lstm") and type(rnn).__name__ != "LSTM":
        raise ConversionError(f"{name}: the prediction network must be an LSTM, found {type(rnn).__name__}")
    if not hasattr(model.encoder, "forward_for_export"):
        raise ConversionError(f"{name}: unsupported encoder {type(model.encoder).__name__}")
    attention = getattr(model.encoder, "self_attention_model", "rel_pos")
    if attention == "rel_pos_local_attn":
        local_context(model, name)  # refuses what the export cannot reproduce
    elif attention not in ("rel_pos", "abs_pos"):
        raise ConversionError(f"{name} uses {attention} attention, which convert-model does not support yet")


def dropped_heads(model: Any) -> tuple[str, ...]:
    """Heads of a supported model that the conversion leaves out: ``("ctc",)`` for NeMo's hybrid TDT+CTC models
    (``EncDecHybridRNNTCTCModel`` and its BPE subclass: an auxiliary CTC decoder beside the transducer), else
    ``()``."""
    return ("ctc",) if getattr(model, "ctc_decoder", None) is not None else ()


def local_context(model: Any, name: str) -> tuple[int, int] | None:
    """``(left, right)`` of a local-attention (``rel_pos_local_attn``) encoder, ``None`` for full attention.

    Raises:
        ConversionError: local attention the export does not reproduce: global tokens, a context that is not
            two non-negative sizes with ``max(left, right) >= 2`` (NeMo's own banded attention fails below
            that), or layers whose context differs from the encoder's.
    """
    encoder = model.encoder
    if getattr(encoder, "self_attention_model", "rel_pos") != "rel_pos_local_attn":
        return None
    context = [int(size) for size in (getattr(encoder, "att_context_size", None) or [])]
    if len(context) != 2 or min(context) < 0 or max(context) < 2:
        raise ConversionError(
            f"{name} uses local attention with context {context}; convert-model needs [left, right], both 0 or "
            "more and the larger at least 2"
        )
    if int(getattr(encoder, "global_tokens", 0) or 0) > 0:
        raise ConversionError(
            f"{name} uses local attention with {encoder.global_tokens} global tokens, which convert-model does not "
            "support; convert it with global_tokens 0"
        )
    for module in encoder.modules():
        if type(module).__name__ == "RelPositionMultiHeadAttentionLongformer":
            layer_context = [int(size) for size in module.att_context_size]
            if layer_context != context or int(getattr(module, "global_tokens", 0) or 0) > 0:
                raise ConversionError(
                    f"{name}: an attention layer has local context {layer_context} (global tokens "
                    f"{module.global_tokens}), the encoder {context}; convert-model needs one context throughout"
                )
    return context[0], context[1]


def limited_context(model: Any) -> tuple[tuple[int, int], str] | None:
    """``((left, right), style)`` of a full-attention (``rel_pos`` / ``abs_pos``) encoder whose default
    ``att_context_size`` is finite on a side (``-1``: unlimited), as cache-aware streaming encoders have, with its
    ``att_context_style`` (``regular`` or ``chunked_limited``); ``None`` for unlimited context or local attention.
    NeMo masks the attention to it in offline inference too, and so does the export."""
    encoder = model.encoder
    if getattr(encoder, "self_attention_model", "rel_pos") == "rel_pos_local_attn":
        return None
    context = [int(size) for size in (getattr(encoder, "att_context_size", None) or [-1, -1])]
    if len(context) != 2 or all(size < 0 for size in context):
        return None
    left, right = (max(size, -1) for size in context)
    return (left, right), str(getattr(encoder, "att_context_style", "regular") or "regular")


def check_local_context(context: tuple[int, int]) -> None:
    """Refuse a local attention context NeMo cannot run: two sizes, each 0 or more, the larger at least 2.

    Raises:
        ConversionError: any other context.
    """
    sizes = list(context)
    if len(sizes) != 2 or not all(isinstance(size, int) and size >= 0 for size in sizes) or max(sizes) < 2:
        raise ConversionError(
            f"local attention context {sizes} is not supported: give [left, right] encoder frames, both 0 or more "
            "and the larger at least 2 (NeMo's banded attention needs it), e.g. 128,128"
        )


def parse_context(text: str) -> tuple[int, int]:
    """``"128,128"`` -> ``(128, 128)``: a local attention context, checked by :func:`check_local_context`.

    Raises:
        ConversionError: not two comma-separated integers, or a context NeMo cannot run.
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(re.fullmatch(r"[+-]?[0-9]+", part) for part in parts):
        raise ConversionError(f"{text!r} is not LEFT,RIGHT: two integers (encoder frames), e.g. 128,128")
    context = (int(parts[0]), int(parts[1]))
    check_local_context(context)
    return context


def use_local_attention(model: Any, context: tuple[int, int], name: str) -> None:
    """Switch a loaded model to local attention in place, as NVIDIA's long-form recipe does: NeMo's
    ``change_attention_model("rel_pos_local_attn", [left, right])`` and ``change_subsampling_conv_chunking_factor(1)``;
    the model is in eval mode afterwards (NeMo builds the new attention layers in training mode).

    Raises:
        ConversionError: a bad context, or a model NeMo cannot switch.
    """
    check_local_context(context)
    if not hasattr(model, "change_attention_model") or not hasattr(model.encoder, "change_attention_model"):
        raise ConversionError(f"{name}: its encoder ({type(model.encoder).__name__}) cannot switch to local attention")
    try:
        model.change_attention_model("rel_pos_local_attn", [int(context[0]), int(context[1])])
        model.change_subsampling_conv_chunking_factor(1)
    except Exception as exc:  # NeMo raises ValueError, AttributeError, ... for a model it cannot switch
        raise ConversionError(
            f"{name}: NeMo cannot switch it to local attention {list(context)}: {type(exc).__name__}: {exc}"
        ) from exc
    model.eval()


def feature_spec(model: Any) -> tuple[FeatureSpec, dict[str, np.ndarray]]:
    """Feature settings and NeMo's exact window and filterbank arrays."""
    f = model.preprocessor.featurizer
    guard = f.log_zero_guard_value
    if isinstance(guard, str):
        guard = float(np.finfo(np.float32).tiny if guard == "tiny" else np.finfo(np.float32).eps)
    cfg = model.cfg.preprocessor
    if f.window is None:  # NeMo's own STFT fails on it too ('NoneType' object has no attribute 'to')
        raise ConversionError(
            f"its preprocessor's window {str(cfg.get('window', None))!r} gives NeMo no window function (it has "
            "hann, hamming, blackman, bartlett): NeMo cannot compute this model's features either")
    window = f.window.detach().cpu().numpy().astype(np.float32)
    spec = FeatureSpec(
        sample_rate=int(f.sample_rate),
        n_fft=int(f.n_fft),
        win_length=int(f.win_length),
        hop_length=int(f.hop_length),
        window=str(cfg.get("window", "hann")),
        n_mels=int(f.nfilt),
        preemph=None if f.preemph is None else float(f.preemph),
        mag_power=float(f.mag_power),
        log=bool(f.log),
        log_zero_guard_type=str(f.log_zero_guard_type),
        log_zero_guard_value=float(guard),
        normalize=_normalization(f.normalize, "this checkpoint"),
        exact_pad=bool(f.exact_pad),
        pad_value=float(f.pad_value),
        window_stride=float(cfg["window_stride"]),
    )
    arrays = {"window": window, "filterbank": f.fb.detach().cpu().numpy()[0].astype(np.float32)}
    return spec, arrays


def decoding_spec(model: Any) -> DecodingSpec:
    """Blank id, durations and ``max_symbols`` as NeMo's greedy decoder uses them (a checkpoint saved with beam
    search is read as NeMo's ``greedy_batch`` decodes it: the engine's search, and the parity check's)."""
    from .probe import GREEDY_STRATEGIES, model_state_kept

    if model.cfg.decoding.get("strategy", None) not in (None, *GREEDY_STRATEGIES):
        with model_state_kept(model, greedy=True):
            return decoding_spec(model)
    decoding = model.decoding
    computer = decoding.decoding
    max_symbols = getattr(computer, "max_symbols", None)
    if max_symbols is None:
        max_symbols = model.cfg.decoding.get("greedy", {}).get("max_symbols", None)
    return DecodingSpec(
        vocab_size=int(model.tokenizer.vocab_size),
        blank_id=int(decoding.blank_id),
        durations=tuple(int(d) for d in decoding.durations),
        max_symbols=None if max_symbols is None else int(max_symbols),
    )


def tokenizer_spec(model: Any) -> TokenizerSpec:
    """Tokenizer file names and the text rules of NeMo's timestamp code."""
    decoding = model.decoding
    threshold = getattr(decoding, "segment_gap_threshold", None)
    return TokenizerSpec(
        file="tokenizer.model",
        vocab_file="vocab.txt",
        kind=str(decoding.tokenizer_type),
        supported_punctuation=tuple(sorted(decoding.supported_punctuation or ())),
        word_separator=str(decoding.word_seperator),
        segment_separators=tuple(str(s) for s in decoding.segment_seperators),
        segment_gap_threshold=None if threshold is None else int(threshold),
    )


def max_encoder_frames(model: Any) -> int | None:
    """Longest encoder output covered by the exported positional encoding; ``None``: any length (local
    attention, whose positional encoding has a fixed size; or NeMo's relative positional encoding, whose
    embeddings the export computes for the input's length)."""
    from .graph_forwards import computes_positions

    if getattr(model.encoder, "self_attention_model", "rel_pos") == "rel_pos_local_attn":
        return None
    pos_enc = getattr(model.encoder, "pos_enc", None)
    if computes_positions(pos_enc):
        return None
    pe = getattr(pos_enc, "pe", None)
    if pe is None:
        return int(getattr(model.encoder, "max_audio_length", 5000))
    length = int(pe.shape[1])
    return (length + 1) // 2 if type(pos_enc).__name__.startswith("RelPositional") else length


def attention_heads(model: Any) -> int | None:
    """Attention heads of the encoder's layers (``n_heads`` of its config), ``None`` when it does not say."""
    heads = getattr(getattr(model, "cfg", None), "encoder", {}).get("n_heads", None)
    return int(heads) if isinstance(heads, int) and heads > 0 else None


LANGUAGE_KEYS = ("language", "languages", "lang", "langs", "target_lang", "target_langs")
"""Config keys that may say which languages a checkpoint transcribes (NeMo has no standard one)."""

KNOWN_LANGUAGES: dict[str, tuple[str, ...]] = {
    "parakeet-tdt-0.6b-v2": ("en",),
    "parakeet-tdt-1.1b": ("en",),
    "parakeet-tdt-0.6b-v3": (
        "bg", "hr", "cs", "da", "nl", "en", "et", "fi", "fr", "de", "el", "hu", "it", "lv", "lt", "mt", "pl",
        "pt", "ro", "sk", "sl", "es", "sv", "ru", "uk",
    ),
}
"""Languages of NVIDIA's published Parakeet TDT checkpoints (their model cards), by model name."""

_ISO_639_1 = re.compile(r"[a-z]{2}")


def parse_languages(text: str) -> tuple[str, ...]:
    """``"en,de"`` -> ``("en", "de")``: ISO 639-1 codes, lower-cased, duplicates dropped.

    Raises:
        ConversionError: an entry that is not a two-letter code.
    """
    codes: list[str] = []
    for part in text.split(","):
        code = part.strip().lower()
        if not _ISO_639_1.fullmatch(code):
            raise ConversionError(f"language {part.strip()!r} is not an ISO 639-1 code (two letters, e.g. en,de)")
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def model_languages(model: Any, model_name: str) -> tuple[str, ...]:
    """The languages the checkpoint says it transcribes: a language key of its config (top level or
    tokenizer section) holding ISO 639-1 codes, else the known languages of a published checkpoint of that
    name, else ``()`` (not recorded)."""
    cfg = getattr(model, "cfg", None)
    sections = [cfg, cfg.get("tokenizer") if cfg is not None and hasattr(cfg, "get") else None]
    for section in sections:
        if section is None or not hasattr(section, "get"):
            continue
        for key in LANGUAGE_KEYS:
            value = section.get(key)
            found = _codes(value)
            if found:
                return found
    return KNOWN_LANGUAGES.get(model_name, ())


def _codes(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        items = list(value)
    else:
        return ()
    codes = tuple(dict.fromkeys(str(item).strip().lower() for item in items))
    return codes if codes and all(_ISO_639_1.fullmatch(code) for code in codes) else ()
