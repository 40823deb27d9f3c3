"""Test corpora for the PII detectors and the scrub_text transform.

``planted_corpus`` hides every kind of China-specific identifier in technician-style
notes, in every written variant the detectors must know (spaces, dashes, full-width
digits, +86, lowercase VINs, IDs ending in X, plates with a middle dot, names next to
Chinese text), and says where each value is. ``clean_corpus`` holds realistic text
without personal information, including near misses (wrong check digits, 12-digit
numbers, decimals that are not coordinates) that a careless detector would flag.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from crossborder import identifiers as ids
from crossborder.synthetic import ECUS, notes_with_pii

KINDS = ("resident_id", "mobile", "plate", "vin", "email", "coordinates", "name")
_FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+-"}


def full_width(text: str) -> str:
    """Digits, capitals, + and - written as their full-width forms (common in Chinese IMEs)."""
    return "".join(_FULL_WIDTH.get(c, c) for c in text)


def _mobile_variants(m: str) -> list[str]:
    a, b, c = m[:3], m[3:7], m[7:]
    return [
        m,
        f"+86 {a} {b} {c}",
        f"+86-{a}-{b}-{c}",
        f"{a}-{b}-{c}",
        f"{a} {b} {c}",
        f"86{m}",
        f"+86{m}",
        f"0086{m}",
        f"(+86) {m}",
        f"{a}.{b}.{c}",
        f"{a}/{b}/{c}",
        full_width(m),
        full_width(f"+86 {a} {b} {c}"),
    ]


def _resident_id_variants(rid: str) -> list[str]:
    return [
        rid,
        rid.lower(),
        f"{rid[:6]} {rid[6:14]} {rid[14:]}",
        f"{rid[:6]}-{rid[6:14]}-{rid[14:]}",
        full_width(rid),
    ]


def _plate_variants(plate: str) -> list[str]:
    head, tail = plate[:2], plate[2:]
    province = plate[0]
    return [
        plate,
        f"{head}·{tail}",
        f"{head} {tail}",
        f"{head}•{tail}",
        f"{province} {plate[1:]}",
        full_width(plate),
    ]


def _vin_variants(vin: str) -> list[str]:
    return [vin, vin.lower(), vin[:8].lower() + vin[8:], full_width(vin)]


def _email_variants(email: str) -> list[str]:
    local, domain = email.split("@")
    return [email, email.upper(), f"{local}+service@{domain}", f"{local}.cn@{domain}"]


def _coordinate_variants(lat: float, lon: float) -> list[str]:
    return [
        f"{lat:.6f},{lon:.6f}",
        f"{lat:.5f}, {lon:.5f}",
        f"{lon:.6f},{lat:.6f}",
        f"N{lat:.4f} E{lon:.4f}",
        f"{lat:.4f}°N {lon:.4f}°E",
        f"({lat:.6f}, {lon:.6f})",
        full_width(f"{lat:.5f}") + "，" + full_width(f"{lon:.5f}"),
        f"北纬{lat:.4f} 东经{lon:.4f}",
        f"lat={lat:.5f}&lon={lon:.5f}",
        _dms(lat, "N") + " " + _dms(lon, "E"),
    ]


def _dms(degrees: float, hemisphere: str) -> str:
    """31°13'49"N: degrees, minutes and seconds."""
    whole, rest = int(degrees), (degrees - int(degrees)) * 60
    return f"{whole}°{int(rest):02d}'{int((rest - int(rest)) * 60):02d}\"{hemisphere}"


_CONTEXTS: dict[str, tuple[str, ...]] = {
    "resident_id": (
        "车主身份证号{}，已核实",
        "证件号码：{}",
        "owner ID no. {}.",
        "身份证{}办理",
        "ID{} checked",
    ),
    "mobile": ("客户电话{}请回电", "联系方式：{}", "call back on {} today", "手机{}。", "Tel{}"),
    "plate": ("车牌{}进店", "车牌号：{}", "licence plate {} towed", "{}车辆"),
    "vin": ("车架号{}，", "VIN：{}", "chassis no. {} checked", "VIN{}已登记"),
    "email": ("报告已发至{}", "邮箱：{}。", "report sent to {}", "mail {}, thanks"),
    "coordinates": ("故障发生位置 {}", "拖车地点：{}", "stopped at {} on the ramp", "位置{}附近"),
    "name": (
        "联系人：{}",
        "车主{}先生来店",
        "contact person: {}",
        "owner {} called",
        "由{}女士送修",
        "{} called about the noise",
        "联系人：  {}",
    ),
}


def planted_corpus(seed: int = 20261124, per_kind: int = 40) -> list[tuple[str, list[tuple]]]:
    """Texts with planted PII: ``(text, [(kind, value), ...])``; each value occurs verbatim."""
    rng = np.random.default_rng(seed)
    values: dict[str, list[str]] = {kind: [] for kind in KINDS}
    variants: dict[str, Callable[..., list[str]]] = {
        "mobile": _mobile_variants,
        "resident_id": _resident_id_variants,
        "plate": _plate_variants,
        "vin": _vin_variants,
        "email": _email_variants,
    }
    source = {
        "mobile": ids.random_mobiles(rng, per_kind),
        "resident_id": _ids_half_ending_in_x(rng, per_kind),
        "plate": ids.random_plates(rng, per_kind, new_energy_share=0.5),
        "vin": ids.random_vins(rng, per_kind),
        "email": ids.random_emails(rng, per_kind),
    }
    for kind, make in variants.items():
        for value in source[kind].tolist():
            values[kind] += make(value)
    lat = rng.uniform(30.7, 31.6, per_kind)
    lon = rng.uniform(120.9, 122.0, per_kind)
    for a, o in zip(lat.tolist(), lon.tolist(), strict=True):
        values["coordinates"] += _coordinate_variants(a, o)
    values["name"] = ids.random_names(rng, per_kind * 3).tolist()
    corpus = []
    for kind in KINDS:
        contexts = _CONTEXTS[kind]
        for number, value in enumerate(values[kind]):
            text = contexts[number % len(contexts)].format(value)
            corpus.append((text, [(kind, value)]))
    # Generated notes carry several kinds at once, in Chinese, English or both.
    texts, planted = notes_with_pii(rng, 400, 1.0)
    corpus += list(zip(texts, planted, strict=True))
    return corpus


def _ids_half_ending_in_x(rng: np.random.Generator, n: int) -> np.ndarray:
    candidates = ids.random_resident_ids(rng, 40 * n)
    ending_x = candidates[np.strings.endswith(candidates, "X")][: n // 2]
    others = candidates[~np.strings.endswith(candidates, "X")][: n - len(ending_x)]
    return np.concatenate([ending_x, others])


def _wrong_check(value: str, alphabet: str) -> str:
    """The same identifier with a check character that does not match."""
    position = 8 if len(value) == 17 else 17
    current = value[position]
    replacement = next(c for c in alphabet if c != current)
    return value[:position] + replacement + value[position + 1 :]


def clean_corpus(seed: int = 7, notes: int = 3000) -> list[str]:
    """Text without personal information: generated notes plus near misses."""
    rng = np.random.default_rng(seed)
    texts, _ = notes_with_pii(
        rng, notes, 0.0, ecus=np.asarray(ECUS)[rng.integers(0, len(ECUS), notes)]
    )
    # Identifier-shaped strings whose check digit is wrong are not identifiers.
    bad_vins = [_wrong_check(v, "0123456789") for v in ids.random_vins(rng, 50).tolist()]
    bad_ids = [_wrong_check(v, "0123456789") for v in ids.random_resident_ids(rng, 50).tolist()]
    near_misses = [
        *(f"VIN {v} 校验位不符，请核对" for v in bad_vins),
        *(f"证件号 {v} 无效" for v in bad_ids),
        "工单号 RO-202611240012 已关闭",
        "订单号 202611241530123456",  # 18 digits, impossible birth date
        "电池电压 12.6V，绝缘电阻 550.25kΩ",
        "胎压 2.45/2.50/2.48/2.47 bar",
        "软件版本 4.3.0 → 4.3.1，OTA任务 1234567890123",
        "客服热线 400-820-8820",
        "DTC P0A80, U0100 and C1234 cleared at 13:05 on 2026-11-24",
        "Torque 121.456 Nm, angle 31.250 deg",  # two decimals, but not a position
        "更换零件 PN-1234567-00-A 两件，工时 1.5h",
        "电芯温差 3.125℃，SOC 31.600%",
        "门店 SH-0123 反馈：客户反映空调异味",
        "检测站 ST-040 记录编号 MEAS-00012345678",
        "cnmedia://clips/2026/11/24/6f1c2a9e-8d3b-4c7a-9e21-0b5d4f3a1c77.mp4",
        "根据GB/T 32960.3-2016上报",
        "里程 123456 公里，保养周期 10000 公里",
        "Firmware 4.2.3 on TBOX, IMEI-like counter 86012345678901",
    ]
    return texts + near_misses
