"""SAM's mask losses: focal + dice on the best of the multimask outputs, MSE on predicted IoU.

Targets may be soft (the fraction of each low-res cell the object covers): the low-res logits
are upsampled bilinearly at inference, so a soft target teaches sub-cell boundary positions
that a thresholded one would round away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0  # SAM's 20:1 focal:dice ratio
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss averaged over the last two (pixel) dimensions."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** gamma).mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid()
    inter = (prob * targets).sum(dim=(-2, -1))
    total = prob.sum(dim=(-2, -1)) + targets.sum(dim=(-2, -1))
    return 1 - (2 * inter + 1) / (total + 1)


def binary_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with (targets > 0.5); 1 when both are empty."""
    pred, gt = logits > 0, targets > 0.5
    inter = (pred & gt).sum(dim=(-2, -1)).float()
    union = (pred | gt).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def multimask_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of [N, M, h, w] logits against [N, h, w] targets; a weighted mean over the N queries.

    Only the output with the lowest mask loss is trained per query (the others stay free to
    cover other readings of an ambiguous prompt); the IoU head learns the actual IoU of all M.
    """
    expanded = targets.unsqueeze(1).expand_as(logits)
    focal = focal_loss(logits, expanded)
    dice = dice_loss(logits, expanded)
    mask_loss = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice
    best = mask_loss.detach().argmin(dim=-1, keepdim=True)
    with torch.no_grad():
        actual_iou = binary_iou(logits, expanded)
    iou_mse = ((iou_pred - actual_iou) ** 2).mean(dim=-1)
    per_query = mask_loss.gather(-1, best).squeeze(-1) + IOU_WEIGHT * iou_mse
    count = weight.sum().clamp(min=1)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum() / count

    stats = {
        "focal": mean(focal.gather(-1, best).squeeze(-1)).detach(),
        "dice": mean(dice.gather(-1, best).squeeze(-1)).detach(),
        "iou_mse": mean(iou_mse).detach(),
        "train_iou": mean(actual_iou.gather(-1, best).squeeze(-1)),
    }
    return mean(per_query), stats


def binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel KL(teacher || student) of the mask probabilities, averaged over the last two dims
    (0 where they agree; weighted toward pixels the teacher is unsure of, the mask boundary):
    the distillation loss on masks."""
    target = torch.sigmoid(teacher_logits)
    cross = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="none")
    return (cross - entropy).mean(dim=(-2, -1))
