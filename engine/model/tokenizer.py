"""SentencePiece detokenisation, read-only after load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece

from ..errors import ManifestError
from .manifest import TokenizerSpec


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """Pieces and per-token texts for every id, and a pieces-to-text function."""

    processor: sentencepiece.SentencePieceProcessor
    pieces: tuple[str, ...]
    """Vocabulary entry of each id."""
    texts: tuple[str, ...]
    """Each id decoded on its own (NeMo's ``decode_ids_to_str([id])``)."""

    @classmethod
    def load(cls, spec: TokenizerSpec, model_dir: Path, vocab_size: int) -> Tokenizer:
        """Load the SentencePiece model and check it against the vocabulary file.

        Raises:
            ManifestError: the model or the vocabulary cannot be read, or they disagree with each other or
                with ``vocab_size``.
        """
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(model_dir / spec.file))
        except (OSError, RuntimeError) as exc:
            raise ManifestError(f"{spec.file}: not a SentencePiece model ({exc})") from exc
        if processor.get_piece_size() != vocab_size:
            raise ManifestError(
                f"{spec.file}: tokenizer has {processor.get_piece_size()} pieces, manifest says {vocab_size}"
            )
        try:
            pieces = tuple(processor.id_to_piece(i) for i in range(vocab_size))
        except (UnicodeDecodeError, RuntimeError) as exc:
            raise ManifestError(f"{spec.file}: a piece of the SentencePiece model is not valid text ({exc})") from exc
        try:
            vocab = (model_dir / spec.vocab_file).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{spec.vocab_file}: not a readable UTF-8 vocabulary ({exc})") from exc
        if tuple(vocab[:vocab_size]) != pieces:
            raise ManifestError(f"{spec.vocab_file}: vocabulary does not match {spec.file}")
        try:
            texts = tuple(processor.decode_pieces([piece]) for piece in pieces)
        except (UnicodeDecodeError, RuntimeError) as exc:
            raise ManifestError(f"{spec.file}: the SentencePiece model cannot decode its own pieces ({exc})") from exc
        return cls(processor=processor, pieces=pieces, texts=texts)

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        """Pieces to text (NeMo's ``tokens_to_text``)."""
        return str(self.processor.decode_pieces(list(pieces)))
