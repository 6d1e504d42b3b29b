"""EfficientSam: image encoder + prompt encoder + mask decoder.

The public methods keep the reference repository's names, signatures and meaning, so code
written against yformer/EfficientSAM runs unchanged against this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms import preprocess
from .config import EfficientSamConfig
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import ImageContext


class EfficientSam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, config: EfficientSamConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder_max_num_input_points = config.max_prompt_points
        self.image_encoder = ImageEncoderViT(config)
        self.prompt_encoder = PromptEncoder(config.neck_dim, config.embedding_grid, config.img_size)
        self.mask_decoder = MaskDecoder(config)

    def preprocess(self, batched_images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> bilinear resize to the square model size, ImageNet mean/std."""
        return preprocess(batched_images, self.image_encoder.img_size)

    def get_image_embeddings(self, batched_images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1], any size -> [B, neck_dim, S/16, S/16]."""
        return self.image_encoder(self.preprocess(batched_images))

    def decoder_context(self, image_embeddings: torch.Tensor) -> ImageContext:
        """The decoder's prompt-independent work on [B, C, h, w] embeddings (image tokens, their
        position encoding, the first layer's image-side projections), for :meth:`predict_masks`."""
        grid = image_embeddings.shape[-1]
        return self.mask_decoder.image_context(image_embeddings, self.prompt_encoder.get_dense_pe(grid))

    def get_rescaled_pts(self, batched_points: torch.Tensor, input_h: int, input_w: int) -> torch.Tensor:
        """Image pixels -> model pixels; negative coordinates (padding) become -1."""
        size = self.image_encoder.img_size
        x, y = batched_points[..., 0], batched_points[..., 1]
        return torch.stack(
            [torch.where(x >= 0, x * size / input_w, -1.0), torch.where(y >= 0, y * size / input_h, -1.0)], dim=-1
        )

    def pad_prompt_slots(self, points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad with (-1, -1)/label -1, or truncate, to the decoder's fixed number of slots."""
        slots = self.decoder_max_num_input_points
        n = points.shape[2]
        if n > slots:
            return points[:, :, :slots], labels[:, :, :slots]
        if n < slots:
            points = F.pad(points, (0, 0, 0, slots - n), value=-1.0)
            labels = F.pad(labels, (0, slots - n), value=-1.0)
        return points, labels

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        batched_points: torch.Tensor,
        batched_point_labels: torch.Tensor,
        multimask_output: bool,
        input_h: int,
        input_w: int,
        output_h: int = -1,
        output_w: int = -1,
        image_context: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode [B, Q, N, 2] prompts (image pixels) against [B, C, h, w] embeddings.

        Returns mask logits [B, Q, M, h', w'] (low-res unless output_h/w > 0, then bicubic to
        that size) and IoU predictions [B, Q, M]; M is 3 with multimask_output, else 1.
        ``image_context`` (from :meth:`decoder_context` on the same embeddings) skips the
        decoder's prompt-independent work: keep it per image when decoding many prompts.
        """
        b, q = batched_points.shape[:2]
        points = self.get_rescaled_pts(batched_points, input_h, input_w)
        points, labels = self.pad_prompt_slots(points, batched_point_labels)
        sparse = self.prompt_encoder(points.reshape(b * q, -1, 2), labels.reshape(b * q, -1))
        sparse = sparse.reshape(b, q, sparse.shape[1], sparse.shape[2])
        if image_context is None:
            image_context = self.decoder_context(image_embeddings) if b == 1 or q == 1 else None
        image_pe = self.prompt_encoder.get_dense_pe() if image_context is None else None
        low_res, iou = self.mask_decoder(
            image_embeddings, image_pe, sparse, multimask_output=multimask_output, context=image_context
        )
        m = low_res.shape[1]
        if output_h > 0 and output_w > 0:
            masks = F.interpolate(low_res, (output_h, output_w), mode="bicubic")
        else:
            masks = low_res
        return masks.reshape(b, q, m, masks.shape[-2], masks.shape[-1]), iou.reshape(b, q, m)

    def forward(
        self,
        batched_images: torch.Tensor,
        batched_points: torch.Tensor,
        batched_point_labels: torch.Tensor,
        scale_to_original_image_size: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, h, w = batched_images.shape
        embeddings = self.get_image_embeddings(batched_images)
        out_h, out_w = (h, w) if scale_to_original_image_size else (-1, -1)
        return self.predict_masks(embeddings, batched_points, batched_point_labels, True, h, w, out_h, out_w)


def build_efficient_sam(config: EfficientSamConfig) -> EfficientSam:
    """An EfficientSam with freshly initialized weights, in eval mode."""
    return EfficientSam(config).eval()
