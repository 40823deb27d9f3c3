"""scrub_text: personal information in technician notes becomes typed placeholders."""

from __future__ import annotations

import ast
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pii_corpus import KINDS, clean_corpus, planted_corpus

from crossborder import pii
from crossborder import scrub as scrub_module
from crossborder.identifiers import is_valid_resident_id, is_valid_vin
from crossborder.scrub import PLACEHOLDERS, scrub, scrub_array
from crossborder.synthetic import notes_with_pii

CLEAN_NOTES = 3000  # generated notes at the head of clean_corpus; near misses follow
VIN = "LB30TFHL0PE001015"
BAD_VIN = "LB30TFHL1PE001015"  # same VIN, wrong check digit
RESIDENT_ID = "11010519491231002X"


@pytest.fixture(scope="module")
def planted() -> list[tuple[str, list[tuple[str, str]]]]:
    return planted_corpus()


@pytest.fixture(scope="module")
def clean() -> list[str]:
    return clean_corpus(notes=CLEAN_NOTES)


def _planted_counts(rows: list[list[tuple[str, str]]]) -> Counter[str]:
    return Counter(kind for values in rows for kind, _ in values)


def test_every_corpus_kind_has_a_placeholder():
    assert set(PLACEHOLDERS) == set(KINDS)


def test_no_planted_value_survives_and_each_kind_leaves_its_placeholder(planted):
    misses, found = [], Counter()
    for text, values in planted:
        out, counts = scrub(text)
        found += counts
        for kind, value in values:  # full-width values are the original substrings
            if value in out or PLACEHOLDERS[kind] not in out:
                misses.append((kind, text, out))
    print(f"\nplanted corpus: {len(planted)} texts, {len(misses)} misses, found {dict(found)}")
    assert misses == []
    # One replacement per planted value and of the planted kind: nothing else is touched.
    assert found == _planted_counts([values for _, values in planted])


def test_clean_text_is_left_unchanged(clean):
    changed = [(text, out) for text in clean if (out := scrub(text)[0]) != text]
    unchanged = len(clean) - len(changed)
    print(f"\nclean corpus: {unchanged}/{len(clean)} unchanged ({unchanged / len(clean):.2%})")
    assert unchanged / len(clean) >= 0.995, changed[:10]


def test_identifier_shapes_with_wrong_check_digits_are_left_unchanged(clean):
    near_misses = clean[CLEAN_NOTES:]
    assert len(near_misses) >= 100  # 50 VINs and 50 resident IDs with a wrong check digit
    assert [text for text in near_misses if scrub(text)[0] != text] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("客户电话13812345678请回电", "客户电话[PHONE]请回电"),
        ("手机１３８１２３４５６７８。", "手机[PHONE]。"),
        ("call back on (+86) 139-0690-2158 today", "call back on [PHONE] today"),
        ("手机138.1234.5678或138/1234/5678", "手机[PHONE]或[PHONE]"),
        ("Tel13812345678, TEL+86 138 1234 5678", "Tel[PHONE], TEL[PHONE]"),  # glued labels
        ("订单号 2013812345678", "订单号 2013812345678"),  # a phone inside a longer number
        (f"证件号码：{RESIDENT_ID}", "证件号码：[ID]"),
        ("owner ID no. 110105 19491231 002X.", "owner ID no. [ID]."),
        (f"身份证{RESIDENT_ID.lower()}办理", "身份证[ID]办理"),
        ("身份证110105-19491231-002X", "身份证[ID]"),
        (f"ID{RESIDENT_ID} checked", "ID[ID] checked"),
        (f"VIN{VIN}已登记", "VIN[VIN]已登记"),  # glued to "VIN", as often typed
        (f"chassis no. {VIN.lower()} checked", "chassis no. [VIN] checked"),
        (f"VIN {BAD_VIN} 校验位不符", f"VIN {BAD_VIN} 校验位不符"),
        ("车牌沪A·D12345进店", "车牌[PLATE]进店"),
        ("沪N BN461车辆", "[PLATE]车辆"),
        ("licence plate 沪 A12345 towed", "licence plate [PLATE] towed"),
        ("车牌号：沪Ａ・１２３４５", "车牌号：[PLATE]"),
        ("邮箱：NA.YAO@QQ.COM。", "邮箱：[EMAIL]。"),
        ("拖车地点：(30.827190, 121.804772)", "拖车地点：[COORD]"),
        ("位置121.166489,30.785525附近", "位置[COORD]附近"),
        ("stopped at N31.2304 E121.4737 on the ramp", "stopped at [COORD] on the ramp"),
        ("拖车地点：31.2304°N 121.4737°E", "拖车地点：[COORD]"),
        ("故障发生位置 ３１.５９０６４，１２１.８７８５１", "故障发生位置 [COORD]"),
        ("位置北纬31.2304 东经121.4737附近", "位置[COORD]附近"),
        ("纬度：31.2304，经度：121.4737", "[COORD]"),
        ("map?lat=31.23040&lon=121.47370", "map?[COORD]"),
        ("lat: 31.2304, lng: 121.4737", "[COORD]"),
        ("拖车地点：31°13'49\"N 121°28'25\"E", "拖车地点：[COORD]"),
        ("位置 31°13′49.5″N，121°28’25”E", "位置 [COORD]"),
        ("西沙 16.8340, 112.3450", "西沙 [COORD]"),  # islands south of 18°N
        ("Torque 121.456 Nm, angle 31.250 deg", "Torque 121.456 Nm, angle 31.250 deg"),
        ("联系人：欧阳子涵", "联系人：[NAME]"),
        ("车主马平军先生来店", "车主[NAME]先生来店"),  # the honorific stays
        ("请张伟先生回电", "请[NAME]先生回电"),
        ("由高磊女士送修", "由[NAME]女士送修"),
        ("客户王芳反映异响", "客户[NAME]反映异响"),
        ("owner 王芳 called", "owner [NAME] called"),
        ("王芳 called about the noise", "[NAME] called about the noise"),
        ("联系人：  王芳", "联系人：  [NAME]"),
        ("Mr. 王芳; NAME: 李娜", "Mr. [NAME]; NAME: [NAME]"),
        ("升级OTA，成功后复检；刷新VCU 程序", "升级OTA，成功后复检；刷新VCU 程序"),  # not names
        ("由温度过高引起", "由温度过高引起"),
        ("电话 138.1234.56789", "电话 138.1234.56789"),  # too many digits
        ("由于电池温度偏高", "由于电池温度偏高"),
        ("软件版本 4.3.1，OTA任务 1234567890123", "软件版本 4.3.1，OTA任务 1234567890123"),
    ],
)
def test_scrub_replaces_exactly_the_identifier(text, expected):
    assert is_valid_vin(VIN) and not is_valid_vin(BAD_VIN) and is_valid_resident_id(RESIDENT_ID)
    assert scrub(text)[0] == expected


def test_mixed_notes_keep_fault_codes_mileage_and_ecus():
    texts, planted = notes_with_pii(np.random.default_rng(3), 2_000, 0.5)
    for text, values in zip(texts, planted, strict=True):
        expected = text
        for kind, value in values:
            expected = expected.replace(value, PLACEHOLDERS[kind])
        assert scrub(text)[0] == expected
    mixed = f"读取BMS故障码P0A80，行驶里程约123456公里，VIN {VIN}；VCU DTC U0100 cleared, 13:05"
    assert scrub(mixed)[0] == mixed.replace(VIN, "[VIN]")


def _expected(values: list[str | None]) -> tuple[list[str | None], Counter[str]]:
    counts: Counter[str] = Counter()
    out = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        text, found = scrub(value)
        out.append(text)
        counts += found
    return out, counts


ROWS = [
    "客户电话13812345678请回电",
    None,
    "Customer reports noise at low speed. BMS DTC P0A80; replaced the sensor",
    "客户电话13812345678请回电",  # the same value twice: counted per row
    f"VIN {VIN}；联系人：朱明婷",
    None,
    "",
]


def test_scrub_array_keeps_length_order_and_nulls_and_counts_rows():
    out, counts = scrub_array(pa.array(ROWS))
    expected, expected_counts = _expected(ROWS)
    assert out.type == pa.string()
    assert out.to_pylist() == expected
    assert counts == expected_counts == Counter(mobile=2, vin=1, name=1)


def test_scrub_array_takes_chunked_and_dictionary_arrays():
    expected, expected_counts = _expected(ROWS)
    chunked = pa.chunked_array([ROWS[:3], [], ROWS[3:]], type=pa.string())
    dictionary = pa.array(ROWS).dictionary_encode()
    chunked_dictionaries = pa.chunked_array(
        [pa.array(ROWS[:4]).dictionary_encode(), pa.array(ROWS[4:]).dictionary_encode()]
    )
    for values in (chunked, dictionary, chunked_dictionaries):
        out, counts = scrub_array(values)
        assert len(out) == len(ROWS)
        assert out.to_pylist() == expected
        assert counts == expected_counts
    assert pa.types.is_dictionary(scrub_array(dictionary)[0].type)
    assert scrub_array(pa.array(ROWS, pa.large_string()))[0].type == pa.large_string()
    assert scrub_array(pa.chunked_array([], pa.string()))[0].to_pylist() == []


def test_scrub_array_agrees_with_scrub_on_the_corpora(planted, clean):
    # The Arrow prefilter may only skip texts that scrub() would leave unchanged.
    texts = [text for text, _ in planted] + clean
    out, counts = scrub_array(pa.array(texts))
    assert out.to_pylist() == _expected(texts)[0]
    assert counts == _planted_counts([values for _, values in planted])


def test_scrub_array_on_generated_notes_leaves_no_planted_value():
    texts, planted = notes_with_pii(np.random.default_rng(1), 20_000, 0.1)
    values = pa.array(texts)
    start = time.perf_counter()
    out, counts = scrub_array(values)
    seconds = time.perf_counter() - start
    print(f"\nscrub_array: {len(texts)} notes in {seconds:.3f} s ({len(texts) / seconds:,.0f}/s)")
    leaks = [
        (kind, value)
        for text, row in zip(out.to_pylist(), planted, strict=True)
        for kind, value in row
        if value in text
    ]
    assert leaks == []
    assert counts == _planted_counts(planted)


def test_scrub_does_not_share_code_with_the_verification_detectors():
    tree = ast.parse(Path(scrub_module.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert not [name for name in imported if name.startswith("crossborder.pii")]


# --- agreement with the verifier --------------------------------------------------------
# crossborder.pii re-scans scrub's output before a partition leaves; anything it still finds
# blocks the whole partition. The detectors are written independently, so these tests are
# the check that scrub removes at least what the verifier looks for.


def test_the_verifier_finds_nothing_in_scrubbed_planted_texts(planted):
    left = [
        (text, out, [out[f.start : f.end] for f in found])
        for text, _ in planted
        if (found := pii.find(out := scrub(text)[0]))
    ]
    assert left == []


def test_the_verifier_finds_nothing_in_a_scrubbed_column_of_generated_notes():
    texts, planted = notes_with_pii(np.random.default_rng(5), 20_000, 0.2)
    values = pa.array(texts)
    assert all(pii.scan_array(values).values())  # the verifier sees every kind before
    out, counts = scrub_array(values)
    assert pii.scan_array(out) == dict.fromkeys(pii.DETECTORS, 0)
    assert counts == _planted_counts(planted)
