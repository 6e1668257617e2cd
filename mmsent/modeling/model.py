"""The BERT + CNN fusion classifier: two encoders and a fusion head (mmsent.modeling.heads).

Both encoders produce token sequences (WordPiece tokens; CNN feature-map cells); the head turns
them into logits plus a per-modality contribution. Everything is tensor-in / tensor-out so the
whole model traces into one TorchScript file.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmsent.config import ModelConfig
from mmsent.modeling.encoders import build_image_encoder, build_text_encoder
from mmsent.modeling.heads import HEADS, FusionHead


class FusionSentimentModel(nn.Module):
    """Text encoder + image encoder + fusion head; returns (logits, contributions[text, image])."""

    def __init__(self, text_encoder: nn.Module, image_encoder: nn.Module, head: FusionHead) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.head = head

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)[0]

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        return self.image_encoder(pixel_values).flatten(2).transpose(1, 2)  # (B, cells, C)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor,
        has_text: Tensor,
        has_image: Tensor,
    ) -> tuple[Tensor, Tensor]:
        text_tokens = self.encode_text(input_ids, attention_mask)
        image_tokens = self.encode_image(pixel_values)
        return self.head(text_tokens, attention_mask, image_tokens, has_text, has_image)


def build_model(cfg: ModelConfig) -> FusionSentimentModel:
    """Build the model with pretrained encoders as named in ``cfg`` and a fresh head."""
    text_encoder, text_dim = build_text_encoder(cfg.text_encoder)
    image_encoder, image_dim = build_image_encoder(cfg.image_backbone, cfg.image_weights)
    head = HEADS[cfg.fusion](text_dim, image_dim, cfg)
    return FusionSentimentModel(text_encoder, image_encoder, head).eval()
