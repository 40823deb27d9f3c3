"""Sensitive areas: the GeoJSON polygons inside which positions may not leave China.

Positions are GCJ-02 degrees. Points are tested with the even-odd ray-casting rule in
numpy, vectorised over all points and looping only over polygon edges, so holes work
and millions of points cost a few array passes per edge.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_SENSITIVE_AREAS = (
    Path(__file__).resolve().parents[2] / "policies" / "sensitive_areas.geojson"
)


@dataclass(frozen=True, eq=False)
class SensitiveArea:
    """One feature of the sensitive-areas GeoJSON; rings hold (lon, lat) vertices."""

    name: str
    category: str
    polygons: tuple[tuple[np.ndarray, ...], ...]

    @property
    def anchor(self) -> tuple[float, float]:
        """(lat, lon) vertex mean of the first outer ring: inside a convex polygon."""
        lon, lat = self.polygons[0][0][:-1].mean(axis=0)
        return float(lat), float(lon)


def load_sensitive_areas(path: Path | str) -> list[SensitiveArea]:
    return parse_sensitive_areas(Path(path).read_bytes(), str(path))


def parse_sensitive_areas(data: bytes, source: str) -> list[SensitiveArea]:
    """Polygon and MultiPolygon features of a GeoJSON FeatureCollection; ValueError if the
    document is not one or holds another kind of geometry."""
    document = json.loads(data.decode("utf-8"))
    features = document.get("features") if isinstance(document, dict) else None
    if not isinstance(features, list):
        raise ValueError(f"{source}: not a GeoJSON FeatureCollection")
    areas = []
    for number, feature in enumerate(features, start=1):
        geometry, props = feature["geometry"], feature.get("properties") or {}
        if geometry["type"] == "Polygon":
            polygons = [geometry["coordinates"]]
        elif geometry["type"] == "MultiPolygon":
            polygons = geometry["coordinates"]
        else:
            raise ValueError(f"{source}: feature {number} is a {geometry['type']}, not a polygon")
        rings = tuple(tuple(_closed_ring(ring) for ring in polygon) for polygon in polygons)
        areas.append(
            SensitiveArea(
                name=str(props.get("name", f"area {number}")),
                category=str(props.get("category", "unspecified")),
                polygons=rings,
            )
        )
    return areas


def _closed_ring(ring: list[list[float]]) -> np.ndarray:
    vertices = np.asarray(ring, dtype=np.float64)[:, :2]
    if not np.array_equal(vertices[0], vertices[-1]):
        vertices = np.vstack([vertices, vertices[:1]])
    return vertices


def in_sensitive_areas(
    lat: np.ndarray, lon: np.ndarray, areas: Iterable[SensitiveArea]
) -> np.ndarray:
    """Boolean mask: which points fall inside any area (even-odd rule, so holes work)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    hit = np.zeros(lat.shape, dtype=bool)
    for area in areas:
        for rings in area.polygons:
            inside = np.zeros(lat.shape, dtype=bool)
            for ring in rings:
                inside ^= _crossings_are_odd(lat, lon, ring)
            hit |= inside
    return hit


def _crossings_are_odd(lat: np.ndarray, lon: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Ray casting towards +lon: parity of the edges crossed, one edge at a time."""
    odd = np.zeros(lat.shape, dtype=bool)
    for (x0, y0), (x1, y1) in itertools.pairwise(ring):
        spans = (y0 > lat) != (y1 > lat)  # False for horizontal edges: no division by zero
        crossing_lon = x0 + (lat[spans] - y0) * (x1 - x0) / (y1 - y0)
        odd[spans] ^= lon[spans] < crossing_lon
    return odd


def cell_index(degrees: np.ndarray, grid_deg: float) -> np.ndarray:
    """Index of the grid cell [i * grid, (i + 1) * grid) holding each coordinate; a
    missing coordinate (NaN) gets an index no cell has."""
    cells = np.floor(np.asarray(degrees, dtype=np.float64) / grid_deg + 1e-9)
    return np.nan_to_num(cells, nan=np.iinfo(np.int32).min).astype(np.int64)


def cells_touching(areas: Iterable[SensitiveArea], grid_deg: float) -> set[tuple[int, int]]:
    """(lat, lon) indices of every grid cell that overlaps an area, even by a sliver."""
    cells = set()
    for area in areas:
        for rings in area.polygons:
            (lon0, lat0), (lon1, lat1) = rings[0].min(axis=0), rings[0].max(axis=0)
            for i in range(*_index_span(lat0, lat1, grid_deg)):
                for j in range(*_index_span(lon0, lon1, grid_deg)):
                    if _cell_overlaps(rings, i * grid_deg, j * grid_deg, grid_deg):
                        cells.add((i, j))
    return cells


def _index_span(low: float, high: float, grid_deg: float) -> tuple[int, int]:
    return int(cell_index(np.array([low]), grid_deg)[0]), int(
        cell_index(np.array([high]), grid_deg)[0] + 1
    )


def _cell_overlaps(rings: tuple[np.ndarray, ...], lat: float, lon: float, size: float) -> bool:
    """A cell overlaps a polygon if a corner (or its centre) is inside, or an edge crosses it."""
    probe_lat = np.array([lat, lat, lat + size, lat + size, lat + size / 2])
    probe_lon = np.array([lon, lon + size, lon, lon + size, lon + size / 2])
    inside = np.zeros(5, dtype=bool)
    for ring in rings:
        inside ^= _crossings_are_odd(probe_lat, probe_lon, ring)
    if inside.any():
        return True
    box = (lon, lat, lon + size, lat + size)
    return any(
        _segment_meets_box(start, end, box)
        for ring in rings
        for start, end in itertools.pairwise(ring)
    )


def _segment_meets_box(start: np.ndarray, end: np.ndarray, box: tuple[float, ...]) -> bool:
    """Liang-Barsky clipping: does the segment pass through the (closed) box?"""
    (x0, y0), (dx, dy) = start, end - start
    low, high = 0.0, 1.0
    for step, distance in (
        (-dx, x0 - box[0]),
        (dx, box[2] - x0),
        (-dy, y0 - box[1]),
        (dy, box[3] - y0),
    ):
        if step == 0:
            if distance < 0:
                return False
            continue
        ratio = distance / step
        if step < 0:
            low = max(low, ratio)
        else:
            high = min(high, ratio)
        if low > high:
            return False
    return True
