"""Synthetic Shanghai source partitions: the stand-in for the Shanghai store.

Writes ``{root}/{dataset}/dt=YYYY-MM-DD/part-NNNNN.parquet`` and then an empty
``_SUCCESS``. Output is a pure function of the arguments (same arguments, same bytes):
every row group draws from its own ``SeedSequence`` keyed by (dataset, day, file, row
group), and the vehicles behind the rows (the fleet) are keyed by (seed, vehicle block),
so the same VIN has the same odometer and home in every dataset, file and day.

Memory stays flat: rows are generated one row group at a time with numpy and written
straight to Parquet. Run ``python -m crossborder.synthetic --help`` for the CLI.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crossborder import identifiers as ids
from crossborder.extract import SUCCESS_MARKER, partition_path
from crossborder.geo import (
    DEFAULT_SENSITIVE_AREAS,
    SensitiveArea,
    load_sensitive_areas,
)

DATASETS = (
    "vehicle_telemetry",
    "diagnostics",
    "production_quality",
    "adas_events",
    "charging_sessions",
    "owner_profiles",
)
DEFAULT_ROWS = {
    "vehicle_telemetry": 200_000,
    "diagnostics": 5_000,
    "production_quality": 20_000,
    "adas_events": 2_000,
    "charging_sessions": 10_000,
    "owner_profiles": 5_000,
}
DEFAULT_ROWS_PER_FILE = 1_000_000
ROW_GROUP_ROWS = 250_000
SHANGHAI_TZ = "Asia/Shanghai"
TIMESTAMP = pa.timestamp("ms", tz=SHANGHAI_TZ)
DAY_MS = 86_400_000
# The box every generated position stays in (GCJ-02, degrees).
LAT_RANGE = (30.7, 31.6)
LON_RANGE = (120.9, 122.0)

# --- schemas (a contract: other modules and the expectation suites rely on them) ------

_STR, _F64 = pa.string(), pa.float64()


def _schema(*columns: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, nullable=False) for name, kind in columns])


_SCHEMAS = {
    "vehicle_telemetry": _schema(
        ("event_id", _STR), ("vin", _STR), ("trip_id", _STR), ("event_time", TIMESTAMP),
        ("speed_kmh", _F64), ("soc_pct", _F64), ("battery_temp_c", _F64), ("odometer_km", _F64),
        ("lat_gcj02", _F64), ("lon_gcj02", _F64), ("firmware_version", _STR),
    ),
    "diagnostics": _schema(
        ("record_id", _STR), ("vin", _STR), ("service_time", TIMESTAMP), ("dealer_code", _STR),
        ("ecu", _STR), ("fault_code", _STR), ("severity", _STR), ("odometer_km", _F64),
        ("technician_notes", _STR),
    ),
    "production_quality": _schema(
        ("inspection_id", _STR), ("plant", _STR), ("line", _STR), ("station", _STR),
        ("part_number", _STR), ("defect_code", _STR), ("defect_count", pa.int32()),
        ("measurement_mm", _F64), ("passed", pa.bool_()), ("shift", _STR),
        ("inspected_at", TIMESTAMP),
    ),
    "adas_events": _schema(
        ("event_id", _STR), ("vin", _STR), ("event_time", TIMESTAMP), ("event_type", _STR),
        ("adas_mode", _STR), ("speed_kmh", _F64), ("lat_gcj02", _F64), ("lon_gcj02", _F64),
        ("clip_uri", _STR),
    ),
    "charging_sessions": _schema(
        ("session_id", _STR), ("vin", _STR), ("station_id", _STR), ("operator", _STR),
        ("connector_type", _STR), ("start_time", TIMESTAMP), ("end_time", TIMESTAMP),
        ("energy_kwh", _F64), ("peak_power_kw", _F64), ("start_soc_pct", _F64),
        ("end_soc_pct", _F64), ("lat_gcj02", _F64), ("lon_gcj02", _F64),
    ),
    "owner_profiles": _schema(
        ("owner_id", _STR), ("vin", _STR), ("owner_name", _STR), ("mobile", _STR),
        ("resident_id", _STR), ("email", _STR), ("address", _STR), ("plate", _STR),
        ("registered_at", TIMESTAMP),
    ),
}  # fmt: skip


def schema(dataset: str) -> pa.Schema:
    """The Arrow schema of a dataset's Parquet files (all columns non-nullable)."""
    _check_dataset(dataset)
    return _SCHEMAS[dataset]


def _check_dataset(dataset: str) -> None:
    if dataset not in _SCHEMAS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")


# --- seeds and vectorised string helpers -------------------------------------------

# Spawn-key namespaces next to the dataset indexes 0..5, so streams never overlap.
_FLEET_KEY, _FLEET_DAY_KEY, _STATIONS_KEY, _PARTS_KEY = 100, 101, 102, 103


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_HEX_COLUMNS = np.r_[0:8, 9:13, 14:18, 19:23, 24:36]


def _strings(codes: np.ndarray) -> pa.StringArray:
    """``(n, width)`` ASCII matrix -> Arrow strings without a Python object per row."""
    n, width = codes.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(codes, dtype=np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _hex_codes(raw: np.ndarray) -> np.ndarray:
    out = np.empty((raw.shape[0], raw.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 0x0F]
    return out


def _random_bytes(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return np.frombuffer(rng.bytes(n * width), dtype=np.uint8).reshape(n, width).copy()


def _uuids(rng: np.random.Generator, n: int) -> pa.StringArray:
    """Random version-4 UUID strings (122 random bits: unique in practice)."""
    raw = _random_bytes(rng, n, 16)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, _UUID_HEX_COLUMNS] = _hex_codes(raw)
    return _strings(out)


def _take(options: Sequence[str], index: np.ndarray) -> pa.Array:
    return pa.array(options, type=pa.string()).take(pa.array(index))


def _timestamps(epoch_ms: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(epoch_ms, dtype=np.int64), type=TIMESTAMP)


def _day_start_ms(day: date) -> int:
    start = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(SHANGHAI_TZ))
    return int(start.timestamp()) * 1000


def _zero_padded(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    return np.strings.add(prefix, np.strings.zfill(numbers.astype(str), width))


# --- the fleet: vehicles and their trips for one day --------------------------------

FLEET_BLOCK = 1024
MAX_FLEET = 1_000_000  # VIN serials are 6 digits; one serial per vehicle keeps VINs unique
TRIPS_PER_DAY = 4
FIRMWARE_VERSIONS = ("4.2.1", "4.2.3", "4.3.0")
# Departure windows (minutes after midnight): morning, noon, evening, night. Trips last
# at most _MAX_TRIP_MINUTES, so they never overlap and always end before midnight.
_DEPARTURE_WINDOWS = np.array([[390, 540], [660, 810], [1020, 1140], [1230, 1350]], dtype=float)
_MAX_TRIP_MINUTES = 85.0
# Progress along a trip is u - EASE * sin(2πu) / 2π: speed is avg * (1 - EASE cos 2πu),
# slow at both ends (parking, lights) and at most (1 + EASE) times the average.
_EASE = 0.8
_ODOMETER_EPOCH = date(2024, 1, 1)
_WAYPOINTS = ("home", "work", "errand", "other", "home")  # trip k goes from point k to k+1
_SENSITIVE_VISIT_EVERY = 40  # vehicle 7, 47, 87... visit a sensitive area each day
# Where Shanghai people live, work and drive: (lat, lon, spread in degrees), weight.
_HUBS = np.array(
    [
        [31.23, 121.47, 0.07],  # Puxi centre
        [31.21, 121.60, 0.06],  # Pudong
        [30.92, 121.90, 0.04],  # Lingang
        [31.37, 121.26, 0.05],  # Jiading
        [31.03, 121.23, 0.05],  # Songjiang
        [31.31, 121.50, 0.05],  # Yangpu / Baoshan
    ]
)
_HUB_WEIGHTS = np.array([0.35, 0.2, 0.1, 0.12, 0.12, 0.11])
_KM_PER_DEG_LAT = 110.6
_KM_PER_DEG_LON = 111.3 * math.cos(math.radians(31.2))


def _shanghai_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    hub = _HUBS[rng.choice(len(_HUBS), size=n, p=_HUB_WEIGHTS)]
    return _near(rng, hub[:, 0], hub[:, 1], hub[:, 2])


def _near(
    rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, spread_deg: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points scattered around others (same spread in km north-south and east-west)."""
    lat = lat + rng.normal(0.0, 1.0, len(lat)) * spread_deg
    lon = lon + rng.normal(0.0, 1.0, len(lon)) * spread_deg * _KM_PER_DEG_LAT / _KM_PER_DEG_LON
    return np.clip(lat, 30.75, 31.55), np.clip(lon, 120.95, 121.95)


@lru_cache(maxsize=64)
def _static_block(seed: int, block: int) -> dict[str, np.ndarray]:
    """Vehicles ``block * FLEET_BLOCK ...``: what does not change from day to day."""
    rng = _rng(seed, _FLEET_KEY, block)
    index = block * FLEET_BLOCK + np.arange(FLEET_BLOCK)
    home_lat, home_lon = _shanghai_points(rng, FLEET_BLOCK)
    work_lat, work_lon = _near(rng, home_lat, home_lon, 0.08)  # commutes of ~10 km
    return {
        # A bijection of the index onto 0..999,999, so serials look unordered.
        "vin": ids.random_vins(rng, FLEET_BLOCK, serials=(index * 7919 + 104_729) % MAX_FLEET),
        "firmware": rng.choice(len(FIRMWARE_VERSIONS), FLEET_BLOCK, p=[0.2, 0.3, 0.5]),
        "odometer_base": rng.uniform(0.0, 30_000.0, FLEET_BLOCK),
        "daily_cap_km": rng.uniform(60.0, 100.0, FLEET_BLOCK),
        "range_km": rng.uniform(420.0, 650.0, FLEET_BLOCK),
        "battery_kwh": rng.choice([60.0, 75.0, 78.4, 100.0], FLEET_BLOCK),
        "home_lat": home_lat,
        "home_lon": home_lon,
        "work_lat": work_lat,
        "work_lon": work_lon,
    }


@lru_cache(maxsize=64)
def _day_block(seed: int, ordinal: int, block: int) -> dict[str, np.ndarray]:
    """The same vehicles' plans for one day: departures, errands, starting charge."""
    rng = _rng(seed, _FLEET_DAY_KEY, ordinal, block)
    shape = (FLEET_BLOCK, TRIPS_PER_DAY)
    # Waypoints come from the static block of the same vehicles: errands are local.
    static = _static_block(seed, block)
    errand_lat, errand_lon = _near(rng, static["work_lat"], static["work_lon"], 0.03)
    other_lat, other_lon = _near(rng, static["home_lat"], static["home_lon"], 0.03)
    return {
        "depart_min": rng.uniform(_DEPARTURE_WINDOWS[:, 0], _DEPARTURE_WINDOWS[:, 1], shape),
        "avg_speed_kmh": rng.uniform(20.0, 45.0, shape),
        "bulge": rng.uniform(-0.15, 0.15, shape),
        "soc_start": rng.uniform(55.0, 100.0, FLEET_BLOCK),
        "errand_lat": errand_lat,
        "errand_lon": errand_lon,
        "other_lat": other_lat,
        "other_lon": other_lon,
        "trip_id": _hex_codes(_random_bytes(rng, FLEET_BLOCK * TRIPS_PER_DAY, 8)).reshape(
            FLEET_BLOCK, TRIPS_PER_DAY, 16
        ),
    }


@dataclass(frozen=True, eq=False)
class Fleet:
    """The first ``size`` vehicles of a seed's fleet on one day (arrays by vehicle)."""

    vins: pa.StringArray
    firmware: np.ndarray
    odometer_start: np.ndarray  # km at 00:00 of the day
    daily_cap_km: np.ndarray
    range_km: np.ndarray
    battery_kwh: np.ndarray
    soc_start: np.ndarray
    lat: np.ndarray  # (size, TRIPS_PER_DAY + 1): the _WAYPOINTS of each vehicle
    lon: np.ndarray
    bulge: np.ndarray  # (size, TRIPS_PER_DAY) sideways curve of each trip
    depart_min: np.ndarray
    duration_min: np.ndarray
    trip_km: np.ndarray
    km_before: np.ndarray  # distance driven earlier in the day, before each trip
    trip_ids: pa.StringArray  # (size * TRIPS_PER_DAY), vehicle-major

    @property
    def size(self) -> int:
        return len(self.vins)


def _blocks(make: Callable[[int], dict[str, np.ndarray]], size: int) -> dict[str, np.ndarray]:
    parts = [make(b) for b in range(-(-size // FLEET_BLOCK))]
    return {k: np.concatenate([p[k] for p in parts])[:size] for k in parts[0]}


@lru_cache(maxsize=4)
def _fleet(seed: int, size: int, day: date, anchors: tuple[tuple[float, float], ...]) -> Fleet:
    static = _blocks(lambda b: _static_block(seed, b), size)
    daily = _blocks(lambda b: _day_block(seed, day.toordinal(), b), size)
    points = static | daily
    lat = np.stack([points[f"{w}_lat"] for w in _WAYPOINTS], axis=1)
    lon = np.stack([points[f"{w}_lon"] for w in _WAYPOINTS], axis=1)
    # Some vehicles' errand is inside the sensitive area nearest to their work: their
    # trips there and back (slow near both ends) put many positions inside it.
    visitors = np.arange(size) % _SENSITIVE_VISIT_EVERY == 7
    if anchors and visitors.any():
        anchor = np.asarray(anchors)
        km_away = np.hypot(
            (lat[visitors, 1, None] - anchor[:, 0]) * _KM_PER_DEG_LAT,
            (lon[visitors, 1, None] - anchor[:, 1]) * _KM_PER_DEG_LON,
        )
        nearest = anchor[km_away.argmin(axis=1)]
        lat[visitors, 2], lon[visitors, 2] = nearest[:, 0], nearest[:, 1]
    straight_km = np.hypot(
        np.diff(lat, axis=1) * _KM_PER_DEG_LAT, np.diff(lon, axis=1) * _KM_PER_DEG_LON
    )
    trip_km = 1.3 * straight_km + 0.5  # roads wind
    # A day never exceeds the vehicle's daily cap, and the next day's odometer starts
    # one cap further on: from _ODOMETER_EPOCH on, the odometer never runs backwards
    # across days either.
    trip_km *= np.minimum(1.0, static["daily_cap_km"] / trip_km.sum(axis=1))[:, None]
    km_before = np.concatenate([np.zeros((size, 1)), np.cumsum(trip_km[:, :-1], axis=1)], axis=1)
    duration_min = np.clip(trip_km / daily["avg_speed_kmh"] * 60, 6.0, _MAX_TRIP_MINUTES)
    days = max(0, (day - _ODOMETER_EPOCH).days)
    return Fleet(
        vins=pa.array(static["vin"], type=pa.string()),
        firmware=static["firmware"],
        odometer_start=static["odometer_base"] + static["daily_cap_km"] * days,
        daily_cap_km=static["daily_cap_km"],
        range_km=static["range_km"],
        battery_kwh=static["battery_kwh"],
        soc_start=daily["soc_start"],
        lat=lat,
        lon=lon,
        bulge=daily["bulge"],
        depart_min=daily["depart_min"],
        duration_min=duration_min,
        trip_km=trip_km,
        km_before=km_before,
        trip_ids=_strings(daily["trip_id"].reshape(size * TRIPS_PER_DAY, -1)),
    )


@dataclass(frozen=True)
class _Moment:
    """Where vehicles are at points of their trips (arrays by row)."""

    time_ms: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    speed_kmh: np.ndarray
    driven_km: np.ndarray  # since 00:00


def _moments(
    fleet: Fleet, vehicle: np.ndarray, trip: np.ndarray, u: np.ndarray, day_ms: int
) -> _Moment:
    """Kinematics at time fraction ``u`` in [0, 1) of each (vehicle, trip).

    Progress eases in and out (see _EASE) and is monotone in time, so the odometer never
    runs backwards; speed is its derivative, and position is smooth in time.
    """
    progress = u - _EASE * np.sin(2 * np.pi * u) / (2 * np.pi)
    lat0, lon0 = fleet.lat[vehicle, trip], fleet.lon[vehicle, trip]
    dlat, dlon = fleet.lat[vehicle, trip + 1] - lat0, fleet.lon[vehicle, trip + 1] - lon0
    sway = fleet.bulge[vehicle, trip] * np.sin(np.pi * progress)
    depart, minutes = fleet.depart_min[vehicle, trip], fleet.duration_min[vehicle, trip]
    km = fleet.trip_km[vehicle, trip]
    return _Moment(
        time_ms=day_ms + ((depart + u * minutes) * 60_000).astype(np.int64),
        lat=np.clip(lat0 + dlat * progress - sway * dlon, *LAT_RANGE),
        lon=np.clip(lon0 + dlon * progress + sway * dlat, *LON_RANGE),
        speed_kmh=km * (1 - _EASE * np.cos(2 * np.pi * u)) / (minutes / 60),
        driven_km=fleet.km_before[vehicle, trip] + km * progress,
    )


def _fleet_size(rows: int, rows_per_vehicle: int) -> int:
    return int(min(MAX_FLEET, max(10, rows // rows_per_vehicle)))


# --- context of one partition --------------------------------------------------------


@dataclass(frozen=True)
class _Partition:
    dataset: str
    day: date
    rows: int
    seed: int
    areas: tuple[SensitiveArea, ...] = ()
    notes_pii_share: float = 0.2

    @cached_property
    def day_ms(self) -> int:
        return _day_start_ms(self.day)

    def fleet(self, size: int) -> Fleet:
        return _fleet(self.seed, size, self.day, tuple(a.anchor for a in self.areas))

    def times(
        self, rng: np.random.Generator, n: int, hours: tuple[float, float] = (0, 24)
    ) -> np.ndarray:
        """Epoch ms of uniform instants between two hours of the Shanghai day."""
        start, end = (int(h * 3_600_000) for h in hours)
        return self.day_ms + rng.integers(start, end, n, endpoint=False)

    @property
    def ambient_c(self) -> float:
        """Seasonal Shanghai air temperature: about 6 °C late January, 28 °C late July."""
        day_of_year = self.day.timetuple().tm_yday
        return 17.0 - 11.0 * math.cos(2 * math.pi * (day_of_year - 20) / 365.25)


# --- datasets: each builds one row group ---------------------------------------------


def _vehicle_telemetry(part: _Partition, rng: np.random.Generator, first_row: int, n: int) -> dict:
    fleet = part.fleet(_fleet_size(part.rows, 100))
    vehicle = rng.integers(0, fleet.size, n)
    trip = rng.integers(0, TRIPS_PER_DAY, n)
    at = _moments(fleet, vehicle, trip, rng.random(n), part.day_ms)
    soc = fleet.soc_start[vehicle] - 100 * at.driven_km / fleet.range_km[vehicle]
    battery_temp = part.ambient_c + 5 + 0.15 * at.driven_km + rng.normal(0, 1.5, n)
    return {
        "event_id": _uuids(rng, n),
        "vin": fleet.vins.take(pa.array(vehicle)),
        "trip_id": fleet.trip_ids.take(pa.array(vehicle * TRIPS_PER_DAY + trip)),
        "event_time": _timestamps(at.time_ms),
        "speed_kmh": np.round(np.clip(at.speed_kmh + rng.normal(0, 1.0, n), 0, 180), 1),
        "soc_pct": np.round(np.clip(soc, 0, 100), 1),
        "battery_temp_c": np.round(np.clip(battery_temp, -20, 60), 1),
        # Rounding is monotone, so the odometer stays non-decreasing per VIN.
        "odometer_km": np.round(fleet.odometer_start[vehicle] + at.driven_km, 1),
        "lat_gcj02": np.round(at.lat, 6),
        "lon_gcj02": np.round(at.lon, 6),
        "firmware_version": _take(FIRMWARE_VERSIONS, fleet.firmware[vehicle]),
    }


ECUS = ("BMS", "VCU", "MCU", "ADAS", "IVI", "BCM", "TBOX", "EPS")
# OBD-II system letter of each ECU: Powertrain, Chassis, Body, network (U).
_ECU_SYSTEM = np.frombuffer(b"PPPCBBUC", dtype=np.uint8)
_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
SEVERITIES = ("low", "medium", "high", "critical")


def _fault_codes(rng: np.random.Generator, ecu: np.ndarray) -> pa.StringArray:
    """OBD-II style codes such as P0A1F: system letter, digit 0-3, three hex digits."""
    codes = np.empty((len(ecu), 5), dtype=np.uint8)
    codes[:, 0] = _ECU_SYSTEM[ecu]
    codes[:, 1] = _HEX_UPPER[rng.integers(0, 4, len(ecu))]
    codes[:, 2:] = _HEX_UPPER[rng.integers(0, 16, (len(ecu), 3))]
    return _strings(codes)


def _diagnostics(part: _Partition, rng: np.random.Generator, first_row: int, n: int) -> dict:
    fleet = part.fleet(_fleet_size(part.rows, 1))
    vehicle = rng.integers(0, fleet.size, n)
    ecu = rng.integers(0, len(ECUS), n)
    fault_codes = _fault_codes(rng, ecu)
    notes, _ = notes_with_pii(
        rng,
        n,
        part.notes_pii_share,
        ecus=np.asarray(ECUS)[ecu],
        fault_codes=fault_codes.to_pylist(),
    )
    return {
        "record_id": _uuids(rng, n),
        "vin": fleet.vins.take(pa.array(vehicle)),
        "service_time": _timestamps(part.times(rng, n, (8, 20))),
        "dealer_code": _zero_padded("SH-", rng.integers(1, 300, n), 4),
        "ecu": _take(ECUS, ecu),
        "fault_code": fault_codes,
        "severity": _take(SEVERITIES, rng.choice(4, n, p=[0.45, 0.35, 0.15, 0.05])),
        "odometer_km": np.round(
            fleet.odometer_start[vehicle] + rng.random(n) * fleet.daily_cap_km[vehicle], 1
        ),
        "technician_notes": pa.array(notes, type=pa.string()),
    }


PLANTS = ("SH-LINGANG-1", "SH-LINGANG-2")
LINES = ("BIW-1", "PAINT-1", "GA-1", "GA-2", "BATT-1")
SHIFTS = ("A", "B", "C")  # 06-14, 14-22, 22-06
_DEFECT_CODES = np.array(
    ["D000"]
    + [f"D1{k:02d}" for k in range(1, 21)]
    + [f"D2{k:02d}" for k in range(1, 11)]
    + ["D301", "D302"]
)


@lru_cache(maxsize=4)
def _part_catalogue(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(part numbers, nominal mm, tolerance mm) of the parts the plant inspects."""
    rng = _rng(seed, _PARTS_KEY)
    count = 60
    numbers = np.strings.add(
        _zero_padded("PN-", rng.integers(1_000_000, 2_000_000, count), 7),
        np.strings.add("-00-", np.asarray(list("ABCDE"))[rng.integers(0, 5, count)]),
    )
    return (
        numbers,
        np.round(rng.uniform(0.5, 250.0, count), 2),
        rng.choice([0.02, 0.05, 0.1, 0.2], count),
    )


def _production_quality(part: _Partition, rng: np.random.Generator, first_row: int, n: int) -> dict:
    numbers, nominal, tolerance = _part_catalogue(part.seed)
    item = rng.integers(0, len(numbers), n)
    defective = rng.random(n) < 0.06
    defect = np.where(defective, rng.integers(1, len(_DEFECT_CODES), n), 0)
    defect_count = np.where(defective, 1 + rng.poisson(0.5, n), 0).astype(np.int32)
    measurement = nominal[item] + rng.normal(0, tolerance[item] / 2.5, n)
    inspected = part.times(rng, n)
    hour = (inspected - part.day_ms) // 3_600_000
    return {
        "inspection_id": _uuids(rng, n),
        "plant": _take(PLANTS, rng.integers(0, len(PLANTS), n)),
        "line": _take(LINES, rng.integers(0, len(LINES), n)),
        "station": _zero_padded("ST-", rng.integers(1, 10, n) * 10, 3),
        "part_number": numbers[item],
        "defect_code": _DEFECT_CODES[defect],
        "defect_count": defect_count,
        "measurement_mm": np.round(measurement, 3),
        "passed": (defect_count == 0) & (np.abs(measurement - nominal[item]) <= tolerance[item]),
        "shift": _take(
            SHIFTS, np.select([(hour >= 6) & (hour < 14), (hour >= 14) & (hour < 22)], [0, 1], 2)
        ),
        "inspected_at": _timestamps(inspected),
    }


ADAS_EVENT_TYPES = ("disengagement", "takeover_request", "aeb_trigger", "lane_departure")
ADAS_MODES = ("NOA", "ACC", "LCC")


def _adas_events(part: _Partition, rng: np.random.Generator, first_row: int, n: int) -> dict:
    fleet = part.fleet(_fleet_size(part.rows, 5))
    vehicle = rng.integers(0, fleet.size, n)
    # Events happen on the same trips as the telemetry, so positions and times agree.
    at = _moments(
        fleet, vehicle, rng.integers(0, TRIPS_PER_DAY, n), rng.uniform(0.05, 0.95, n), part.day_ms
    )
    event_id = _uuids(rng, n)
    folder = f"cnmedia://clips/{part.day:%Y/%m/%d}/"
    return {
        "event_id": event_id,
        "vin": fleet.vins.take(pa.array(vehicle)),
        "event_time": _timestamps(at.time_ms),
        "event_type": _take(ADAS_EVENT_TYPES, rng.choice(4, n, p=[0.4, 0.3, 0.1, 0.2])),
        "adas_mode": _take(ADAS_MODES, rng.choice(3, n, p=[0.5, 0.3, 0.2])),
        "speed_kmh": np.round(np.clip(at.speed_kmh + rng.normal(0, 1.0, n), 0, 180), 1),
        "lat_gcj02": np.round(at.lat, 6),
        "lon_gcj02": np.round(at.lon, 6),
        "clip_uri": pc.binary_join_element_wise(folder, event_id, ".mp4", ""),
    }


CHARGING_OPERATORS = ("State Grid", "TELD", "Star Charge", "YKC", "NIO Power", "Tesla Supercharger")
_STATION_COUNT = 800


@lru_cache(maxsize=4)
def _stations(seed: int) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """(station ids, operators, lat, lon) of the charging network, fixed per seed."""
    rng = _rng(seed, _STATIONS_KEY)
    lat, lon = _shanghai_points(rng, _STATION_COUNT)
    operators = _take(CHARGING_OPERATORS, rng.integers(0, len(CHARGING_OPERATORS), _STATION_COUNT))
    station_ids = pa.array(_zero_padded("SH-CS-", np.arange(1, _STATION_COUNT + 1), 5))
    return station_ids, operators, np.round(lat, 6), np.round(lon, 6)


def _charging_sessions(part: _Partition, rng: np.random.Generator, first_row: int, n: int) -> dict:
    fleet = part.fleet(_fleet_size(part.rows, 2))
    station_ids, operators, station_lat, station_lon = _stations(part.seed)
    vehicle = rng.integers(0, fleet.size, n)
    station = rng.integers(0, _STATION_COUNT, n)
    dc = rng.random(n) < 0.45
    peak_kw = np.where(dc, rng.uniform(60, 250, n), rng.choice([7.0, 11.0], n))
    start_soc = np.round(rng.uniform(5, 60, n), 1)
    end_soc = np.round(start_soc + rng.uniform(0.2, 1.0, n) * (100 - start_soc), 1)
    energy_kwh = (end_soc - start_soc) / 100 * fleet.battery_kwh[vehicle] * 1.06  # charging losses
    mean_kw = peak_kw * np.where(dc, 0.55, 0.9)  # DC tapers off at high charge
    duration_ms = np.clip(energy_kwh / mean_kw * 3_600_000, 60_000, DAY_MS / 2).astype(np.int64)
    # Start early enough for the session to end inside the same Shanghai day.
    start_ms = part.day_ms + (rng.random(n) * (DAY_MS - 1 - duration_ms)).astype(np.int64)
    return {
        "session_id": _uuids(rng, n),
        "vin": fleet.vins.take(pa.array(vehicle)),
        "station_id": station_ids.take(pa.array(station)),
        "operator": operators.take(pa.array(station)),
        "connector_type": _take(("AC", "DC"), dc.astype(np.int64)),
        "start_time": _timestamps(start_ms),
        "end_time": _timestamps(start_ms + duration_ms),
        "energy_kwh": np.round(energy_kwh, 2),
        "peak_power_kw": np.round(peak_kw, 1),
        "start_soc_pct": start_soc,
        "end_soc_pct": end_soc,
        "lat_gcj02": station_lat[station],
        "lon_gcj02": station_lon[station],
    }


def _owner_profiles(part: _Partition, rng: np.random.Generator, first_row: int, n: int) -> dict:
    # Owner k drives vehicle k, so owners join to the VINs of the other datasets.
    fleet = part.fleet(_fleet_size(part.rows, 1))
    vehicle = (first_row + np.arange(n)) % fleet.size
    return {
        "owner_id": _uuids(rng, n),
        "vin": fleet.vins.take(pa.array(vehicle)),
        "owner_name": ids.random_names(rng, n),
        "mobile": ids.random_mobiles(rng, n),
        "resident_id": ids.random_resident_ids(rng, n),
        "email": ids.random_emails(rng, n),
        "address": ids.random_shanghai_addresses(rng, n),
        "plate": ids.random_plates(rng, n, new_energy_share=0.6),
        "registered_at": _timestamps(part.times(rng, n, (9, 18))),
    }


_BUILDERS: dict[str, Callable[[_Partition, np.random.Generator, int, int], dict]] = {
    "vehicle_telemetry": _vehicle_telemetry,
    "diagnostics": _diagnostics,
    "production_quality": _production_quality,
    "adas_events": _adas_events,
    "charging_sessions": _charging_sessions,
    "owner_profiles": _owner_profiles,
}


# --- technician notes with planted PII -----------------------------------------------

PII_KINDS = ("mobile", "resident_id", "plate", "vin", "email", "coordinates", "name")
_SYMPTOMS = (
    ("仪表提示动力系统故障", "powertrain warning on the cluster"),
    ("充电时偶发中断", "charging stops intermittently"),
    ("低速行驶时有异响", "noise at low speed"),
    ("空调制冷效果差", "weak air conditioning"),
    ("中控屏黑屏后自动重启", "centre screen goes black and reboots"),
    ("车道保持功能不可用", "lane keeping unavailable"),
    ("电池温度偏高报警", "battery over-temperature warning"),
    ("远程解锁失败", "remote unlock fails"),
    ("胎压报警灯常亮", "TPMS lamp stays on"),
    ("OTA升级失败", "OTA update failed"),
)
_ACTIONS = (
    ("已更换高压连接器", "replaced the HV connector"),
    ("已刷新软件至最新版本", "reflashed the ECU with the latest software"),
    ("已清除故障码，路试正常", "cleared the DTC, road test OK"),
    ("已更换传感器", "replaced the sensor"),
    ("建议客户继续观察后复检", "advised to monitor and come back"),
    ("已重新紧固线束", "re-seated and secured the harness"),
)
_PII_PHRASES = {  # (Chinese, English) phrasings around the planted value
    "mobile": (
        ("客户电话{}", "联系方式：{}", "请回电{}"),
        ("call back on {}", "customer phone {}"),
    ),
    "resident_id": (("车主身份证号{}", "证件号码：{}"), ("ID card {}", "owner ID no. {}")),
    "plate": (("车牌{}", "车牌号：{}"), ("plate {}", "licence plate {}")),
    "vin": (("车架号{}", "VIN：{}"), ("VIN {}", "chassis no. {}")),
    "email": (("报告已发至{}", "邮箱：{}"), ("report sent to {}", "e-mail {}")),
    "coordinates": (("故障发生位置 {}", "拖车地点：{}"), ("stopped at {}", "towed from {}")),
    "name": (("联系人：{}", "车主{}先生来店"), ("contact person: {}", "owner {} called")),
}
_MOBILE_FORMATS = (
    "{m}",
    "+86 {a} {b} {c}",
    "+86-{a}-{b}-{c}",
    "{a}-{b}-{c}",
    "{a} {b} {c}",
    "86{m}",
    "+86{m}",
)
_COORDINATE_FORMATS = (
    "{lat:.6f},{lon:.6f}",
    "{lat:.5f}, {lon:.5f}",
    "{lon:.6f},{lat:.6f}",
    "N{lat:.4f} E{lon:.4f}",
)


def _pii_pools(rng: np.random.Generator, size: int) -> dict[str, list[str]]:
    """``size`` ready-to-plant values per kind, in the many shapes people write them."""
    mobiles = ids.random_mobiles(rng, size)
    shapes = rng.integers(0, len(_MOBILE_FORMATS), size)
    # About 30 % of resident IDs end in X (naturally 1 in 11): the case scanners miss.
    candidates = ids.random_resident_ids(rng, 11 * size + 44)
    ending_x = candidates[np.strings.endswith(candidates, "X")]
    resident_ids = candidates[:size].copy()
    use_x = rng.random(size) < 0.3
    if len(ending_x):
        resident_ids[use_x] = ending_x[np.flatnonzero(use_x) % len(ending_x)]
    vins = ids.random_vins(rng, size)
    lat, lon = _shanghai_points(rng, size)
    coordinate_shapes = rng.integers(0, len(_COORDINATE_FORMATS), size)
    return {
        "mobile": [
            _MOBILE_FORMATS[s].format(m=m, a=m[:3], b=m[3:7], c=m[7:])
            for m, s in zip(mobiles.tolist(), shapes.tolist(), strict=True)
        ],
        "resident_id": resident_ids.tolist(),
        "plate": ids.random_plates(rng, size, new_energy_share=0.5, dot_share=0.3).tolist(),
        "vin": np.where(rng.random(size) < 0.3, np.strings.lower(vins), vins).tolist(),
        "email": ids.random_emails(rng, size).tolist(),
        "coordinates": [
            _COORDINATE_FORMATS[s].format(lat=a, lon=o)
            for a, o, s in zip(lat.tolist(), lon.tolist(), coordinate_shapes.tolist(), strict=True)
        ],
        "name": ids.random_names(rng, size).tolist(),
    }


def notes_with_pii(
    rng: np.random.Generator,
    n: int,
    share: float,
    *,
    ecus: Sequence[str] | None = None,
    fault_codes: Sequence[str] | None = None,
) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """After-sales notes in Chinese, English or both; ``round(share * n)`` of them hide PII.

    Returns the texts and, per text, the planted ``(kind, value)`` pairs where each
    value occurs verbatim in its text; texts without pairs contain no PII.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    ecus = ecus if ecus is not None else np.asarray(ECUS)[rng.integers(0, len(ECUS), n)]
    fault_codes = fault_codes if fault_codes is not None else ["P0A80"] * n
    with_pii = np.zeros(n, dtype=bool)
    with_pii[rng.choice(n, round(share * n), replace=False)] = True
    # A row plants each kind at most once, so one value per PII row and kind suffices.
    pools = {
        kind: iter(values) for kind, values in _pii_pools(rng, max(1, int(with_pii.sum()))).items()
    }
    texts, planted = [], []
    for row in range(n):
        language = int(rng.choice(3, p=[0.6, 0.25, 0.15]))  # Chinese, English, both
        text = _clean_note(rng, language, str(ecus[row]), str(fault_codes[row]))
        found: list[tuple[str, str]] = []
        phrases: list[str] = []
        if with_pii[row]:
            for kind in rng.choice(PII_KINDS, size=int(rng.integers(1, 4)), replace=False).tolist():
                value = next(pools[kind])
                english = language == 1 or (language == 2 and rng.random() < 0.5)
                shapes = _PII_PHRASES[kind][int(english)]
                phrases.append(shapes[int(rng.integers(len(shapes)))].format(value))
                found.append((kind, value))
        parts = [*phrases, text] if rng.random() < 0.3 else [text, *phrases]
        texts.append(("; " if language == 1 else "；").join(parts))
        planted.append(found)
    return texts, planted


def _clean_note(rng: np.random.Generator, language: int, ecu: str, code: str) -> str:
    symptom_zh, symptom_en = _SYMPTOMS[int(rng.integers(len(_SYMPTOMS)))]
    action_zh, action_en = _ACTIONS[int(rng.integers(len(_ACTIONS)))]
    mileage = int(rng.integers(1_000, 150_000))
    chinese = f"客户反映{symptom_zh}，行驶里程约{mileage}公里。读取{ecu}故障码{code}，{action_zh}"
    english = f"Customer reports {symptom_en}. {ecu} DTC {code}; {action_en}"
    return (chinese, english, f"{chinese} / {english}")[language]


# --- writing partitions --------------------------------------------------------------


@dataclass(frozen=True)
class PartitionSummary:
    dataset: str
    day: date
    path: Path
    files: int
    rows: int


def generate_partition(
    root: Path | str,
    dataset: str,
    day: date,
    rows: int | None = None,
    seed: int = 0,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    *,
    sensitive_areas: Path | str | None = DEFAULT_SENSITIVE_AREAS,
    notes_pii_share: float = 0.2,
) -> PartitionSummary:
    """Write one dataset's partition for a Shanghai day, replacing any previous one.

    ``_SUCCESS`` is written last, after every part has been renamed into place.
    """
    _check_dataset(dataset)
    rows = DEFAULT_ROWS[dataset] if rows is None else rows
    if rows < 0 or rows_per_file < 1 or seed < 0:
        raise ValueError("rows and seed must be >= 0 and rows_per_file >= 1")
    if not 0.0 <= notes_pii_share <= 1.0:
        raise ValueError(f"notes_pii_share must be between 0 and 1, got {notes_pii_share}")
    areas = tuple(load_sensitive_areas(sensitive_areas)) if sensitive_areas else ()
    part = _Partition(dataset, day, rows, seed, areas, notes_pii_share)
    folder = partition_path(root, dataset, day)
    _clear(folder)
    files = max(1, -(-rows // rows_per_file))  # an empty day still gets one (empty) file
    for index in range(files):
        first_row = index * rows_per_file
        _write_part(
            part,
            folder / f"part-{index:05d}.parquet",
            index,
            first_row,
            min(rows_per_file, rows - first_row),
        )
    (folder / SUCCESS_MARKER).touch()
    return PartitionSummary(dataset, day, folder, files, rows)


def generate_day(
    root: Path | str,
    day: date,
    datasets: Sequence[str] | None = None,
    *,
    rows: int | None = None,
    seed: int = 0,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    sensitive_areas: Path | str | None = DEFAULT_SENSITIVE_AREAS,
    notes_pii_share: float = 0.2,
) -> list[PartitionSummary]:
    """One partition per dataset (all six by default) for a Shanghai day."""
    return [
        generate_partition(
            root,
            dataset,
            day,
            rows,
            seed,
            rows_per_file,
            sensitive_areas=sensitive_areas,
            notes_pii_share=notes_pii_share,
        )
        for dataset in (datasets or DATASETS)
    ]


def _clear(folder: Path) -> None:
    """Drop the marker first, so no reader trusts a partition while it is replaced."""
    if folder.exists():
        (folder / SUCCESS_MARKER).unlink(missing_ok=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _write_part(part: _Partition, path: Path, index: int, first_row: int, rows: int) -> None:
    """Write row groups to a hidden temp file, then rename: a part is whole or absent."""
    table_schema = _SCHEMAS[part.dataset]
    temp = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(temp, table_schema, compression="zstd") as writer:
        for group, start in enumerate(range(0, rows, ROW_GROUP_ROWS)):
            n = min(ROW_GROUP_ROWS, rows - start)
            rng = _rng(part.seed, DATASETS.index(part.dataset), part.day.toordinal(), index, group)
            columns = _BUILDERS[part.dataset](part, rng, first_row + start, n)
            writer.write_table(pa.table(columns, schema=table_schema))
    os.replace(temp, path)


# --- command line --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossborder.synthetic",
        description="Write synthetic Shanghai source partitions (Hive-style Parquet + _SUCCESS).",
    )
    parser.add_argument("--root", type=Path, required=True, help="source root folder")
    parser.add_argument(
        "--date", type=date.fromisoformat, required=True, help="Shanghai day, YYYY-MM-DD"
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--rows", type=int, help="rows per dataset (default: per-dataset defaults)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows-per-file", type=int, default=DEFAULT_ROWS_PER_FILE)
    parser.add_argument("--sensitive-areas", type=Path, default=DEFAULT_SENSITIVE_AREAS)
    parser.add_argument("--notes-pii-share", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        summaries = generate_day(
            args.root,
            args.date,
            args.datasets,
            rows=args.rows,
            seed=args.seed,
            rows_per_file=args.rows_per_file,
            sensitive_areas=args.sensitive_areas,
            notes_pii_share=args.notes_pii_share,
        )
    except ValueError as exc:  # bad numbers or a bad areas file: a usage error, not a crash
        parser.error(str(exc))
    for summary in summaries:
        print(f"{summary.dataset}\trows={summary.rows}\tfiles={summary.files}\tpath={summary.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
