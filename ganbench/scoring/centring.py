"""Centring by the bank mean: the one preparation every float32 distance path shares.

Imported by the torch backend and by the Triton kernels' launchers alike, so neither reaches
into the other.
"""
from __future__ import annotations

import torch


def centre_by_bank_mean(query: torch.Tensor, bank: torch.Tensor, dtype: torch.dtype,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract the bank mean (accumulated in float64) from both, in the working dtype.

    Distances are unchanged, but the norms in ||x||^2 + ||s||^2 - 2 x.s shrink, which cuts
    the cancellation of the expanded form (MNIST: mean squared norm ~100 -> ~52). The same
    rounded mean is subtracted from every point, so its rounding cancels in every distance;
    float32 inputs are centred in float32 (no float64 copy of a large bank), float64 inputs
    in float64 before one rounding.
    """
    bank = bank.to(device)
    query = query.to(device)
    mean = bank.mean(dim=0, dtype=torch.float64)
    if bank.dtype == torch.float64 or query.dtype == torch.float64:
        return (query.double() - mean).to(dtype), (bank.double() - mean).to(dtype)
    mean = mean.to(dtype)
    return query.to(dtype) - mean, bank.to(dtype) - mean
