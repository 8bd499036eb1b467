"""Export-only forwards for four FastConformer modules: the same arithmetic as NeMo's, fewer tensor copies,
no length limit.

NeMo's modules are written for training in PyTorch, where a few redundant copies are cheap next to the
backward pass. Traced into ONNX they become full passes over the largest tensors of the encoder:

* ``MaskedConvSequential`` (the ×8 subsampling) expands its time mask to ``(batch, channels, time,
  features)`` before every multiplication: up to 200 MB materialised nine times on a minute of audio.
  Here the mask broadcasts over the channels instead; the products are the same numbers. The mask
  NeMo applies right after a ReLU (whose input was masked) is skipped: it multiplies zeros by zero.
* ``RelPositionMultiHeadAttention.rel_shift`` pads the ``(batch, heads, T, 2T-1)`` position scores with
  a zero column, then slices. Here the position embeddings get one extra row instead (``2T x d_model``,
  a small copy) and the same elements are read from the flattened ``(T, 2T)`` scores at offset ``T-1``
  with a row stride of ``2T-1``, without the padded copy.
  NeMo also zeroes the attention weights of masked positions after the softmax. For every valid query
  row those weights are already exactly 0 (``exp(-10000 - max)`` underflows in float32); only rows of
  padded frames change (uniform instead of zero), and padded frames never reach a valid output: the
  convolution module zeroes them and attention masks them as keys. So that pass is dropped.
* With unlimited attention context (Parakeet's), NeMo's attention mask only hides padded key frames from
  valid queries. The attention then exports as ONNX Runtime's ``MultiHeadAttention`` (QKᵀ, the
  relative-position scores as an additive bias, the key padding mask and the softmax, head by head in
  cache) in NeMo's scaled-dot-product form ``ac/√d_k + bd/√d_k``, the position query pre-scaled. A limited
  context keeps the plain product, softmax and mask.
* ``RelPositionalEncoding`` slices a sinusoid buffer of ``pos_emb_max_len`` frames, which NeMo's encoder
  recomputes for longer inputs (``extend_pe``); traced as it is, the graph would hold the buffer and fail
  past it. Here the rows within the buffer are its slice (the same numbers), and the rows past it are
  computed in the graph with NeMo's formula (ONNX Runtime's float32 sin and cos): any length runs.
* NeMo's local attention (``RelPositionMultiHeadAttentionLongformer``, ``rel_pos_local_attn``) builds its
  banded scores with ``as_strided`` views and in-place copies whose sizes the trace bakes in at the export
  input's length. Here the queries are split into chunks of ``max(left, right)`` frames, each chunk's keys
  and values are its window of neighbours (fixed padding, reshapes, slices and a concatenation), and the
  relative-position term is placed in the window with NeMo's own skew trick: a graph for any length, in
  ``O(T·(left + right))`` memory, with NeMo's scores (its position columns for asymmetric contexts included)
  on every valid query. Global tokens are not exported (``inspect_model`` refuses them).
* ``ConformerConvolution``'s pointwise convolutions (kernel 1) become matrix products on
  ``(batch, time, channels)``: ONNX Runtime runs them as MatMul (faster than its 1×1 Conv on CPU, and
  quantisable by ``--quantize int8``), with the same weights.

Valid encoder frames match NeMo to float32 rounding; the conversion's parity probe checks it on every
export. The patches are instance attributes set for the duration of the export and removed after it, so
the model's own forwards (the NeMo reference of the probe) are untouched.
"""

from __future__ import annotations

import contextlib
import functools
import math
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional

MASK_VALUE = -10000.0
"""NeMo's ``INF_VAL``: the score given to masked positions before the softmax."""


def _masked_conv_forward(self: Any, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from nemo.collections.asr.parts.submodules.subsampling import calculate_conv_output_size

    x = x.unsqueeze(1)
    current_lengths = lengths.clone().float()
    mask = _time_mask(x, current_lengths.long())
    masked = False  # whether x is already zero at every padded time step of ``mask``
    for layer in self:
        if not masked:
            x = x * mask
        x = layer(x)
        # A ReLU maps the masked zeros to zeros, so NeMo's mask before the next layer changes nothing.
        masked = isinstance(layer, nn.ReLU)
        if hasattr(layer, "stride") and layer.stride != (1, 1):
            padding = (layer._left_padding, layer._right_padding) if hasattr(layer, "_left_padding") else layer.padding
            current_lengths = calculate_conv_output_size(
                current_lengths, layer.kernel_size[0], layer.stride[0], padding
            )
            mask = _time_mask(x, current_lengths.long())
    return (x if masked else x * mask), current_lengths.long()


def _time_mask(tensor: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, 1, time, 1)``: 1.0 on valid time steps, broadcast over channels and features."""
    time = tensor.shape[2]
    valid = torch.arange(time, device=tensor.device).unsqueeze(0) < lengths.unsqueeze(1)
    return valid.to(tensor.dtype)[:, None, :, None]


def rel_shift(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """NeMo's relative shift, first ``keep`` columns, from ``(batch, heads, T, 2T)`` position scores.

    NeMo scores ``2T - 1`` relative positions; element ``(i, j)`` of its shifted scores is
    ``scores[..., i, j + T - 1 - i]``. With one more (never selected) position column, that element
    sits at offset ``T - 1 + i * (2T - 1) + j`` of the flattened row-major scores: a contiguous slice
    reshaped with a row stride of ``2T - 1`` (at least 1, so ``T = 1`` works too).
    """
    batch, heads, time, positions = scores.shape
    flat = scores.reshape(batch, heads, time * positions)
    flat = flat[:, :, time - 1 : time - 1 + time * (positions - 1)]
    return flat.reshape(batch, heads, time, positions - 1)[:, :, :, :keep]


class _KeyPaddedAttention(torch.autograd.Function):
    """Scaled dot-product attention over heads with an additive score bias and a key padding mask.

    Exported as ONNX Runtime's ``com.microsoft.MultiHeadAttention``, which runs QKᵀ, the bias and mask,
    the softmax and the product with V head by head while each head's scores are in cache, instead of
    five passes over the ``(batch, heads, T, T)`` scores. ``forward`` is the same arithmetic in PyTorch
    (what the op computes, for eager runs and tracing).

    query, key, value ``(batch, T, heads·d_k)``; key_valid ``(batch, T)`` (1 valid, 0 padding);
    bias ``(batch, heads, T, T)``. Masked keys get ``MASK_VALUE`` added to their score, as NeMo's
    scaled-dot-product path does (their weights underflow to exactly 0 in every row with a valid key).
    """

    @staticmethod
    def forward(
        ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_valid: torch.Tensor,
        bias: torch.Tensor, heads: int, scale: float,
    ) -> torch.Tensor:
        batch, time, features = query.shape
        q, k, v = (x.view(batch, -1, heads, features // heads).transpose(1, 2) for x in (query, key, value))
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale + bias
        scores = scores + (1.0 - key_valid.to(scores.dtype))[:, None, None, :] * MASK_VALUE
        return torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(batch, time, features)

    @staticmethod
    def symbolic(g: Any, query: Any, key: Any, value: Any, key_valid: Any, bias: Any, heads: int,
                 scale: float) -> Any:
        from torch.onnx import symbolic_helper

        mask = g.op("Cast", key_valid, to_i=6)  # int32, as the op requires
        output = g.op(
            "com.microsoft::MultiHeadAttention", query, key, value,
            symbolic_helper._optional_input_placeholder_tensor(g),  # type: ignore[no-untyped-call]
            mask, bias,
            num_heads_i=heads, scale_f=scale, mask_filter_value_f=MASK_VALUE,
        )
        output.setType(query.type())  # the output has the query's shape and type
        return output


def _rel_attention_forward(
    self: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    pos_emb: torch.Tensor,
    cache: torch.Tensor | None = None,
    *,
    key_padding_only: bool = False,
    portable: bool = False,
) -> Any:
    if cache is not None or pos_emb.shape[1] != 2 * query.shape[1] - 1:
        return type(self).forward(self, query, key, value, mask, pos_emb, cache)
    # One extra position row (a copy of the first; its scores are never selected) lets rel_shift work
    # without NeMo's padded copy of the scores.
    pos_emb = torch.cat([pos_emb, pos_emb[:, :1]], dim=1)
    p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
    batch = value.size(0)
    if key_padding_only:
        # NeMo's scaled-dot-product form: ac/√d_k + bd/√d_k, the masked keys pushed down by MASK_VALUE.
        scale = 1.0 / self.s_d_k
        q = self.linear_q(query).view(batch, -1, self.h, self.d_k)
        q_with_bias_u = (q + self.pos_bias_u).reshape(batch, -1, self.h * self.d_k)
        q_with_bias_v = ((q + self.pos_bias_v) * scale).transpose(1, 2)
        matrix_bd = rel_shift(torch.matmul(q_with_bias_v, p.transpose(-2, -1)), query.shape[1])
        key_valid = torch.ones_like(matrix_bd[:, 0, 0, :]) if mask is None else ~mask[:, 0, :]
        qkv = (q_with_bias_u, self.linear_k(key), self.linear_v(value))
        if portable:  # the same arithmetic traced as standard ONNX operators (MatMul, Add, Softmax)
            out = _KeyPaddedAttention.forward(None, *qkv, key_valid, matrix_bd, self.h, scale)
        else:
            out = _KeyPaddedAttention.apply(*qkv, key_valid, matrix_bd, self.h, scale)  # type: ignore[no-untyped-call]
        return self.linear_out(out)
    q, k, v = self.forward_qkv(query, key, value)
    q = q.transpose(1, 2)
    q_with_bias_u = (q + self.pos_bias_u).transpose(1, 2)
    q_with_bias_v = (q + self.pos_bias_v).transpose(1, 2)
    matrix_ac = torch.matmul(q_with_bias_u, k.transpose(-2, -1))
    matrix_bd = rel_shift(torch.matmul(q_with_bias_v, p.transpose(-2, -1)), matrix_ac.size(-1))
    scores = (matrix_ac + matrix_bd) / self.s_d_k
    if mask is not None:
        scores = scores.masked_fill(mask.unsqueeze(1), MASK_VALUE)
    attn = torch.softmax(scores, dim=-1)
    out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, -1, self.h * self.d_k)
    return self.linear_out(out)


def computes_positions(pos_enc: Any) -> bool:
    """Whether the export computes ``pos_enc``'s relative position embeddings for any input length
    (:func:`_rel_positions_forward`): NeMo's ``RelPositionalEncoding`` with the buffer its ``extend_pe``
    makes, ``(1, 2K - 1, d_model)`` with an even ``d_model``."""
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionalEncoding

    pe = getattr(pos_enc, "pe", None)
    return (
        type(pos_enc) is RelPositionalEncoding
        and isinstance(pe, torch.Tensor)
        and pe.dim() == 3
        and pe.shape[0] == 1
        and pe.shape[1] % 2 == 1
        and pe.shape[2] == int(pos_enc.d_model)
        and pe.shape[2] % 2 == 0
    )


def _sinusoids(pos_enc: Any, positions: torch.Tensor) -> torch.Tensor:
    """NeMo's ``PositionalEncoding.create_pe`` rows for ``positions`` ``(n,)`` (float32): the sine of
    ``position * div_term`` in the even columns, its cosine in the odd ones, ``(1, n, d_model)``."""
    from nemo.collections.asr.parts.submodules.multi_head_attention import INF_VAL

    d_model = int(pos_enc.d_model)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(INF_VAL) / d_model))
    angles = positions.to(torch.float32).unsqueeze(1) * div_term
    rows = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(-1, d_model)
    return rows.unsqueeze(0).to(pos_enc.pe.dtype)


def _rel_positions_forward(self: Any, x: torch.Tensor, cache_len: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """NeMo's ``RelPositionalEncoding.forward`` for inputs of any length.

    NeMo's buffer ``pe`` holds positions ``K - 1`` down to ``-(K - 1)`` (row ``r``: position ``K - 1 - r``);
    an input of ``T`` frames needs ``T - 1`` down to ``-(T - 1)``, and NeMo's encoder recomputes the buffer
    (``extend_pe``) when it is too short. Here positions within the buffer are its rows (a slice, as
    before), and those beyond it, ``T - 1 .. K`` and ``-K .. -(T - 1)`` (both empty up to ``T = K``), are
    computed in the graph with NeMo's formula; no branch, so the graph takes any length.
    """
    if self.xscale:
        x = x * self.xscale
    length = torch.as_tensor(x.size(1) + cache_len, device=x.device)  # traced: the graph's input length
    half = (self.pe.size(1) + 1) // 2  # K
    # A 0-d tensor bound (torch's stubs want an int): traced, it becomes the graph's Range over the input length.
    beyond = torch.arange(typing.cast(int, torch.clamp(length - half, min=0)), device=x.device)
    computed = _sinusoids(self, torch.cat([length - 1 - beyond, -half - beyond]))  # T-1 .. K, -K .. -(T-1)
    count = beyond.size(0)
    within = self.pe.index_select(1, torch.arange(half - length + count, half + length - 1 - count, device=x.device))
    pos_emb = torch.cat([computed[:, :count], within, computed[:, count:]], dim=1)
    if self.dropout_emb:
        pos_emb = self.dropout_emb(pos_emb)
    return self.dropout(x), pos_emb
def _windows(x: torch.Tensor, chunk: int, left: int, right: int, chunks: Any) -> torch.Tensor:
    """``(batch, heads, T, d)`` -> ``(batch, heads, chunks, chunk + left + right, d)``: window ``n`` holds rows
    ``n·chunk - left`` to ``(n + 1)·chunk + right - 1`` of ``x`` (zeros outside ``0 .. T-1``).

    Built from fixed-size padding, a reshape into blocks of ``chunk`` rows and a concatenation of each block
    with the head of the next one or two (``left + right <= 2·chunk``): no strided views, any ``T``.
    """
    batch, heads, _, depth = x.shape
    padded = functional.pad(x, (0, 0, left, 3 * chunk))  # at least (chunks + 2)·chunk rows
    blocks = padded[:, :, : (chunks + 2) * chunk].reshape(batch, heads, chunks + 2, chunk, depth)
    parts = [blocks[:, :, :chunks]]
    extra = left + right
    if extra > 0:
        parts.append(blocks[:, :, 1 : chunks + 1, : min(chunk, extra)])
    if extra > chunk:
        parts.append(blocks[:, :, 2 : chunks + 2, : extra - chunk])
    return torch.cat(parts, dim=3)


def _chunked(x: torch.Tensor, chunk: int, chunks: Any) -> torch.Tensor:
    """``(batch, heads, T, d)`` -> ``(batch, heads, chunks, chunk, d)``, zero rows after ``T``."""
    batch, heads, _, depth = x.shape
    padded = functional.pad(x, (0, 0, 0, chunk))
    return padded[:, :, : chunks * chunk].reshape(batch, heads, chunks, chunk, depth)


def band_to_window(band: torch.Tensor, chunk: int) -> torch.Tensor:
    """``(..., chunk, K)`` band scores (column ``m`` of row ``r``: key ``r + m`` of the window) ->
    ``(..., chunk, chunk + K - 1)`` window scores, zero outside the band (NeMo's ``_skew2`` trick: pad each
    row by ``chunk`` zeros, flatten, drop the last ``chunk`` elements, read rows one element shorter)."""
    *lead, rows, positions = band.shape
    padded = functional.pad(band, (0, chunk))
    flat = padded.reshape(*lead, rows * (positions + chunk))[..., : rows * (positions + chunk - 1)]
    return flat.reshape(*lead, rows, positions + chunk - 1)


def local_position_rows(p: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """The projected position embedding NeMo adds at each relative offset ``-left .. right`` of the band.

    ``p``: ``(1, heads, left + right + 1, d_k)``, NeMo's projected embeddings of relative positions
    ``left .. -right``. NeMo adds them to its ``2w + 1`` diagonal columns (``w = max(left, right)``) as
    ``[p[:left], zeros(2w - left - right), p[left:]]``: only for symmetric contexts does every column get its
    own offset's row; otherwise some columns get another offset's row or none, and that is reproduced here.
    Returns ``(1, heads, left + right + 1, d_k)``: the rows of the band's columns (zeros where NeMo adds none).
    """
    w = max(left, right)
    zeros = p.new_zeros(p.shape[0], p.shape[1], 2 * w - left - right, p.shape[3])
    columns = torch.cat([p[:, :, :left], zeros, p[:, :, left:]], dim=2)
    return columns[:, :, w - left : w + right + 1]


def _position_rows(module: Any, pos_emb: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``(1, heads, 1, left + right + 1, d_k)``: :func:`local_position_rows` of ``module``'s projection of
    ``pos_emb``."""
    p = module.linear_pos(pos_emb).view(pos_emb.size(0), -1, module.h, module.d_k).transpose(1, 2)
    return local_position_rows(p, left, right).unsqueeze(2)


def _local_position_constant(encoder: nn.Module, module: Any) -> torch.Tensor | None:
    """The position rows of local attention layer ``module`` from the encoder's ``LocalAttRelPositionalEncoding``
    (its embeddings do not depend on the input: NeMo's ``pos_emb`` is always the first ``left + right + 1``
    rows of its buffer), computed once outside the trace; ``None`` when the encoder's encoding is not that."""
    from nemo.collections.asr.parts.submodules.multi_head_attention import LocalAttRelPositionalEncoding

    pos_enc = getattr(encoder, "pos_enc", None)
    pe = getattr(pos_enc, "pe", None)
    left, right = (int(size) for size in module.att_context_size)
    if type(pos_enc) is not LocalAttRelPositionalEncoding or pe is None or pe.shape[1] < left + right + 1:
        return None
    with torch.inference_mode():
        rows = _position_rows(module, pe[:, : left + right + 1], left, right)
    return rows.clone()  # a plain tensor: the trace holds it as a constant


def _local_attention_forward(
    self: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    pad_mask: torch.Tensor | None,
    pos_emb: torch.Tensor,
    cache: torch.Tensor | None = None,
    *,
    rows: torch.Tensor | None = None,
) -> Any:
    """NeMo's ``RelPositionMultiHeadAttentionLongformer`` without global tokens, for any ``T``.

    Queries are split into chunks of ``c = max(left, right)`` frames; each chunk attends to its window of
    ``c + left + right`` keys (its own frames and its neighbours'), so memory is ``O(T·(c + left + right))``.
    The scores are NeMo's: ``(q+u)·k`` plus ``(q+v)·p`` for the position row NeMo adds at that offset
    (:func:`local_position_rows`), divided by ``√d_k``; keys outside ``[i - left, i + right]``, before the
    start, after the end or padded get ``MASK_VALUE``: their weights are exactly 0 as in NeMo, for every valid
    query. Rows of padded queries are not zeroed (they never reach a valid frame; see the module docstring).

    ``rows``: the position rows precomputed from NeMo's (fixed) ``pos_emb`` (:func:`_local_position_constant`),
    so that the graph holds them as a constant; ``None``: computed here from ``pos_emb``.
    """
    left, right = (int(size) for size in self.att_context_size)
    positions = left + right + 1
    if cache is not None or self.global_tokens > 0 or pos_emb.shape[1] != positions:
        return type(self).forward(self, query, key, value, pad_mask, pos_emb, cache)
    chunk = max(left, right)
    q, k, v = self.forward_qkv(query, key, value)  # (batch, heads, T, d_k)
    time = q.shape[2]
    chunks = (time + chunk - 1) // chunk
    if rows is None:
        rows = _position_rows(self, pos_emb, left, right)  # (1, heads, 1, positions, d_k)
    q_with_bias_u = _chunked(q + self.pos_bias_u.unsqueeze(1), chunk, chunks)  # (batch, heads, chunks, c, d_k)
    q_with_bias_v = _chunked(q + self.pos_bias_v.unsqueeze(1), chunk, chunks)
    keys = _windows(k, chunk, left, right, chunks)  # (batch, heads, chunks, c + left + right, d_k)
    matrix_ac = torch.matmul(q_with_bias_u, keys.transpose(-2, -1))
    # The constant position rows as the first operand: int8 quantisation (MatMuls with a constant second
    # operand) leaves this product in float, as it leaves the full attention's position projections.
    matrix_bd = torch.matmul(rows, q_with_bias_v.transpose(-2, -1)).transpose(-2, -1)  # (..., c, positions)
    scores = (matrix_ac + band_to_window(matrix_bd, chunk)) / self.s_d_k
    valid = torch.ones_like(query[:, :, :1]) if pad_mask is None else (~pad_mask).to(query.dtype).unsqueeze(-1)
    key_valid = _windows(valid.unsqueeze(1), chunk, left, right, chunks)[..., 0]  # (batch, 1, chunks, window)
    in_band = band_to_window(torch.ones(chunk, positions, dtype=query.dtype, device=query.device), chunk)
    allowed = (key_valid.unsqueeze(3) * in_band) > 0.5  # (batch, 1, chunks, c, window)
    scores = scores.masked_fill(~allowed, MASK_VALUE)
    attn = torch.softmax(scores, dim=-1)
    out = torch.matmul(attn, _windows(v, chunk, left, right, chunks))  # (batch, heads, chunks, c, d_k)
    batch = out.shape[0]
    out = out.reshape(batch, self.h, chunks * chunk, self.d_k)[:, :, :time]
    return self.linear_out(out.transpose(1, 2).reshape(batch, time, self.h * self.d_k))


def _is_pointwise(conv: Any) -> bool:
    return (
        isinstance(conv, nn.Conv1d)
        and conv.kernel_size == (1,)
        and conv.stride == (1,)
        and conv.groups == 1
        and conv.padding in ((0,), "valid")
    )


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 convolution on channels-last ``(batch, time, channels)``."""
    return functional.linear(x, conv.weight[:, :, 0], conv.bias)


def _convolution_forward(self: Any, x: torch.Tensor, pad_mask: torch.Tensor | None = None, cache: Any = None) -> Any:
    if cache is not None or self.norm_type == "layer_norm":
        return type(self).forward(self, x, pad_mask=pad_mask, cache=cache)
    x = _pointwise(self.pointwise_conv1, x)
    x = functional.glu(x, dim=-1) if self.pointwise_activation == "glu_" else self.pointwise_activation(x)
    if pad_mask is not None:
        x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
    x = self.depthwise_conv(x.transpose(1, 2))
    x = self.activation(self.batch_norm(x))
    return _pointwise(self.pointwise_conv2, x.transpose(1, 2))


def _patches(encoder: nn.Module, portable: bool) -> Iterator[tuple[nn.Module, Callable[..., Any]]]:
    from nemo.collections.asr.parts.submodules import conformer_modules, multi_head_attention, subsampling

    masked_conv = getattr(subsampling, "MaskedConvSequential", None)
    # With unlimited attention context NeMo's attention mask only hides padded frames, so for every valid
    # query row it is the key padding mask (see ConformerEncoder._create_masks).
    full_context = all(int(size) < 0 for size in getattr(encoder, "att_context_size", [0]))
    for module in encoder.modules():
        kind = type(module)
        if masked_conv is not None and kind is masked_conv:
            yield module, _masked_conv_forward
        elif kind is multi_head_attention.RelPositionalEncoding and computes_positions(module):
            yield module, _rel_positions_forward
        elif kind is multi_head_attention.RelPositionMultiHeadAttention:
            yield module, functools.partial(_rel_attention_forward, key_padding_only=full_context, portable=portable)
        elif kind is multi_head_attention.RelPositionMultiHeadAttentionLongformer:
            yield module, functools.partial(_local_attention_forward, rows=_local_position_constant(encoder, module))
        elif (
            kind is conformer_modules.ConformerConvolution
            and _is_pointwise(module.pointwise_conv1)
            and _is_pointwise(module.pointwise_conv2)
        ):
            yield module, _convolution_forward


@contextlib.contextmanager
def export_forwards(encoder: nn.Module, *, portable: bool = False) -> Iterator[int]:
    """Give the encoder's modules their export forwards for the duration of the block; ``portable``: standard
    ONNX operators only (the full-context attention as plain products and a softmax instead of ONNX Runtime's
    contrib ``MultiHeadAttention``: :mod:`.portable`).

    Yields the number of modules patched; on exit every module is back to its class's ``forward`` (and its
    subsampling to its own chunking factor: :func:`_unchunked_subsampling`).
    """
    patched: list[nn.Module] = []
    with _unchunked_subsampling(encoder):
        try:
            for module, forward in _patches(encoder, portable):
                module.forward = types.MethodType(forward, module)
                patched.append(module)
            yield len(patched)
        finally:
            for module in patched:
                del module.forward


@contextlib.contextmanager
def _unchunked_subsampling(encoder: nn.Module) -> Iterator[None]:
    """Trace the subsampling unchunked: ``subsampling_conv_chunking_factor`` set to 1 for the block.

    A checkpoint saved with a chunking factor above 1 makes NeMo's ``ConvSubsampling`` split every input, by
    batch (``torch.split`` of the batch into ``batch // factor`` rows) or, for one row, by channel and time:
    a memory trick that computes the same numbers. Traced, the split sizes of the export's example input are
    baked into ``Split`` nodes, and the graph fails on any other batch or length. Factor 1 (NeMo's default,
    Parakeet's, and what NVIDIA's long-form recipe sets) splits only inputs past torch's 2**31-element
    indexing limit, which ONNX Runtime does not have; the parity probe checks the result against NeMo running
    with the checkpoint's own factor.
    """
    changed: list[tuple[nn.Module, int]] = []
    try:
        for module in encoder.modules():
            factor = getattr(module, "subsampling_conv_chunking_factor", None)
            if isinstance(factor, int) and factor > 1:
                changed.append((module, factor))
                setattr(module, "subsampling_conv_chunking_factor", 1)  # noqa: B010 (nn.Module types attributes)
        yield
    finally:
        for module, factor in changed:
            setattr(module, "subsampling_conv_chunking_factor", factor)  # noqa: B010
