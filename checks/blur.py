"""texture_blur: fine detail was lost against the source, over the whole image or in a region.

Fine detail is measured as band-pass energy on the grey image: the mean absolute
Laplacian-of-Gaussian at ``fine_sigma`` (about 1 px, the finest band a JPEG q85 re-encode keeps:
it moves this by about 1 %, while a Gaussian blur of sigma 1.5 px removes half or more). The
analysis runs on a grid of tiles (``tiles_per_side`` along the long side, at least ``min_tile_px``)
at the context's analysis size, which is the smaller of source and candidate: an upscaled or
downscaled candidate is compared at the smaller size, so resampling alone does not read as blur.

Each tile's fine energy is compared with the source's after a per-tile contrast gain, the ratio of
the source's to the candidate's coarse band-pass energy (LoG at ``coarse_sigma``, clamped to
``max_gain``): an exposure, tone-curve or white-balance change scales both bands alike and cancels,
while blur removes the fine band much more than the coarse one. The result is a detail ratio
(candidate / source, 1 = as sharp, lower = softer) in the spirit of the relative sharpness
measures used for blur and upscaling assessment (energy of a high band over a lower one).

Only tiles where the source has real detail (fine energy >= ``min_detail``) count, and tiles whose
share of clipped or crushed pixels grew (exposure_drift's business) are left out. The global ratio
is the energy-weighted ratio over the counted tiles. Tiles whose ratio is below ``tile_limit`` are
joined into connected regions; a region covering at least ``min_region_fraction`` of the image
whose pooled ratio is below ``region_limit`` is a blurred region. One finding is reported: global
softening when the global ratio is below ``global_limit`` and most measured tiles are soft
(``spread_fraction``), otherwise the worst region, otherwise a global ratio below its limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field, model_validator

from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext

CLIPPED, CRUSHED = 0.98, 0.02  # grey levels at or beyond which a pixel carries no detail


class BlurParams(CheckParams):
    priority: Priority
    fine_sigma: float = Field(gt=0, description="px; scale of the fine detail band (LoG)")
    coarse_sigma: float = Field(gt=0, description="px; scale of the coarse band used for the contrast gain")
    max_gain: float = Field(ge=1, description="largest per-tile contrast gain (and 1/max_gain the smallest)")
    tiles_per_side: int = Field(ge=2, description="tiles along the long side")
    min_tile_px: int = Field(ge=4, description="px; smallest tile side")
    min_detail: float = Field(gt=0, description="mean |LoG| of grey (0-1) a source tile needs to count")
    saturated_growth: float = Field(gt=0, le=1, description="growth of a tile's clipped/crushed share that drops it")
    global_limit: float = Field(gt=0, description="detail ratio of the whole image below which it is soft")
    tile_limit: float = Field(gt=0, description="detail ratio below which a tile is soft")
    region_limit: float = Field(gt=0, description="pooled detail ratio below which a soft region is reported")
    min_region_fraction: float = Field(gt=0, le=1, description="share of the image a soft region must cover")
    spread_fraction: float = Field(gt=0, le=1, description="share of the measured tiles that, soft, make it global")
    min_measured_fraction: float = Field(gt=0, le=1, description="share of the image with detail needed to measure")

    @model_validator(mode="after")
    def _ordered(self) -> "BlurParams":
        if self.fine_sigma >= self.coarse_sigma:
            raise ValueError("need fine_sigma < coarse_sigma")
        return self


@dataclass(frozen=True)
class SoftRegion:
    box: tuple[float, float, float, float]  # analysis pixels, x0, y0, x1, y1
    tiles: np.ndarray  # bool tile grid of the region
    ratio: float  # pooled detail ratio of the region's tiles
    area_fraction: float  # share of the image


@dataclass(frozen=True)
class BlurMeasure:
    grid: tuple[int, int]  # tiles across, down
    tile_size: tuple[float, float]  # analysis pixels per tile (w, h)
    counted: np.ndarray  # bool tile grid: tiles with source detail that are measured
    ratios: np.ndarray  # per-tile detail ratio (inf where not counted)
    global_ratio: float
    soft_share: float  # share of the measured tiles that are soft
    regions: list[SoftRegion]  # soft regions of at least min_region_fraction, worst first

    @property
    def measured_fraction(self) -> float:
        return float(self.counted.mean())


def tile_grid(size: tuple[int, int], params: BlurParams) -> tuple[int, int]:
    """Tiles (across, down): ``tiles_per_side`` along the long side, none smaller than ``min_tile_px``."""
    w, h = size
    side = max(max(w, h) / params.tiles_per_side, float(params.min_tile_px))
    return max(1, round(w / side)), max(1, round(h / side))


def _tile_mean(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    return cv2.resize(values.astype(np.float32, copy=False), grid, interpolation=cv2.INTER_AREA)


def band_tiles(image: AnalysisImage, sigma: float, grid: tuple[int, int]) -> np.ndarray:
    """Per-tile mean |LoG| of the grey image at ``sigma`` px, scale-normalised (x sigma^2).

    Coarse bands hold nothing near the pixel frequency, so they are computed on a copy shrunk by
    ``sigma // 2`` (same band, a fraction of the cost). Cached on the image.
    """

    def compute() -> np.ndarray:
        grey = image.gray
        k = max(1, int(sigma // 2))
        s = sigma / k
        if k > 1:
            h, w = grey.shape
            grey = cv2.resize(grey, (max(1, -(-w // k)), max(1, -(-h // k))), interpolation=cv2.INTER_AREA)
        log = cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), s), cv2.CV_32F)
        np.abs(log, out=log)
        return _tile_mean(log, grid) * np.float32(s * s)

    return image.shared(f"texture_blur:log:{sigma}:{grid}", compute)


def measure_blur(source: AnalysisImage, candidate: AnalysisImage, params: BlurParams) -> BlurMeasure:
    """Detail ratio of ``candidate`` against ``source`` (same size), globally and per tile."""
    w, h = source.size
    grid = tile_grid(source.size, params)
    fine_s = band_tiles(source, params.fine_sigma, grid)
    fine_c = band_tiles(candidate, params.fine_sigma, grid)
    coarse_s = band_tiles(source, params.coarse_sigma, grid)
    coarse_c = band_tiles(candidate, params.coarse_sigma, grid)
    gain = np.clip(coarse_s / np.maximum(coarse_c, 1e-6), 1.0 / params.max_gain, params.max_gain)
    fine_c = fine_c * gain

    def saturated(image: AnalysisImage) -> np.ndarray:
        def compute() -> np.ndarray:
            g = image.gray
            return _tile_mean((g >= CLIPPED) | (g <= CRUSHED), grid)

        return image.shared(f"texture_blur:saturated:{grid}", compute)

    counted = (fine_s >= params.min_detail) & (saturated(candidate) - saturated(source) < params.saturated_growth)
    if counted.mean() < params.min_measured_fraction:
        raise CheckSkipped(
            f"the source has fine detail in only {counted.mean():.0%} of the image, too little to compare sharpness"
        )
    total = float(fine_s[counted].sum())
    global_ratio = float(fine_c[counted].sum()) / total
    ratios = np.where(counted, fine_c / np.maximum(fine_s, 1e-9), np.inf)
    soft = ratios < params.tile_limit
    soft_share = float(soft.sum()) / float(counted.sum())

    tw, th = w / grid[0], h / grid[1]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(soft.astype(np.uint8), connectivity=8)
    regions = []
    for i in range(1, count):
        tiles = labels == i
        fraction = float(tiles.mean())
        if fraction < params.min_region_fraction:
            continue
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        regions.append(SoftRegion(
            box=(x * tw, y * th, (x + bw) * tw, (y + bh) * th),
            tiles=tiles,
            ratio=float(fine_c[tiles].sum() / fine_s[tiles].sum()),
            area_fraction=fraction,
        ))
    regions.sort(key=lambda r: r.ratio)
    return BlurMeasure(grid, (tw, th), counted, ratios, global_ratio, soft_share, regions)


@register_check("texture_blur", BlurParams, requires=("source",))
def check_texture_blur(ctx: CheckContext, params: BlurParams):
    """Fine-detail energy against the source (contrast-normalised band-pass), globally and per region."""
    m = measure_blur(ctx.registered_source, ctx.candidate, params)
    evidence = {
        "global_ratio": round(m.global_ratio, 4),
        "soft_tile_share": round(m.soft_share, 4),
        "measured_fraction": round(m.measured_fraction, 4),
        "tile_grid": list(m.grid),
        "regions": [
            {"box": ctx.candidate_box(r.box), "ratio": round(r.ratio, 4), "area_fraction": round(r.area_fraction, 4)}
            for r in m.regions[:5]
        ],
    }
    is_global = m.global_ratio < params.global_limit
    worst = m.regions[0] if m.regions and m.regions[0].ratio < params.region_limit else None
    if is_global and (m.soft_share >= params.spread_fraction or worst is None):
        soft = m.ratios < params.tile_limit
        tiles = soft if soft.any() else m.counted
        score, threshold = m.global_ratio, params.global_limit
        if m.soft_share >= params.spread_fraction:
            message = (f"Fine detail dropped to {m.global_ratio:.0%} of the source's over the whole image: "
                       "the candidate is softer than its source.")
        else:
            message = (f"Fine detail dropped to {m.global_ratio:.0%} of the source's across the image "
                       f"({m.soft_share:.0%} of the measured tiles are clearly soft).")
    elif worst is not None:
        tiles = worst.tiles
        score, threshold = worst.ratio, params.region_limit
        message = (f"Fine detail dropped to {worst.ratio:.0%} of the source's in a region covering "
                   f"{worst.area_fraction:.0%} of the image (whole image: {m.global_ratio:.0%}).")
    else:
        return []

    region, full = ctx.mask_region(tiles, cell=m.tile_size)
    evidence["soft_fraction"] = round(float(tiles.mean()), 4)
    return [
        make_finding(
            "texture_blur",
            params,
            score=score,
            threshold=threshold,
            unit="detail ratio",
            message=message,
            region=region,
            evidence=evidence,
            mask=full,
        )
    ]
