"""PII detectors of the anonymization verification: planted values are found, clean text
stays quiet, check digits decide, and column scans count rows the way ``find`` does."""

from __future__ import annotations

import base64
import time
import uuid
from collections import Counter
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pytest
from pii_corpus import clean_corpus, full_width, planted_corpus

from crossborder import identifiers as ids
from crossborder import pii
from crossborder.synthetic import FIRMWARE_VERSIONS, notes_with_pii

NOTHING = dict.fromkeys(pii.DETECTORS, 0)


def found(text: str) -> list[tuple[str, str]]:
    """``(detector, matched text)`` of every finding, for readable assertions."""
    return [(f.detector, text[f.start : f.end]) for f in pii.find(text)]


def kinds(text: str) -> set[str]:
    return {f.detector for f in pii.find(text)}


def with_check_char(id17: str) -> str:
    return id17 + ids.resident_id_check_char(id17)


# --- the shared corpora ---------------------------------------------------------------


def test_every_planted_value_is_found_by_its_detector_with_a_covering_span():
    planted, misses = Counter(), []
    for text, values in planted_corpus():
        findings = pii.find(text)
        for kind, value in values:
            planted[kind] += 1
            start = text.index(value)
            end = start + len(value)
            if not any(f.detector == kind and f.start <= start and end <= f.end for f in findings):
                misses.append((kind, value, text))
    print(f"planted values per detector: {dict(planted)}; misses: {len(misses)}")
    assert set(planted) == set(pii.DETECTORS)
    assert misses == []


def test_clean_text_rarely_gets_a_finding():
    texts = clean_corpus()
    flagged = [(text, found(text)) for text in texts if pii.find(text)]
    rate = len(flagged) / len(texts)
    print(f"clean texts: {len(texts)}; with a finding: {len(flagged)} ({rate:.3%})")
    assert rate <= 0.005, flagged[:10]


def test_near_misses_with_a_wrong_check_digit_are_not_flagged():
    near_misses = [t for t in clean_corpus() if "校验位不符" in t or t.startswith("证件号 ")]
    assert len(near_misses) == 100
    assert [(t, found(t)) for t in near_misses if pii.find(t)] == []
    assert pii.scan_array(pa.array(near_misses)) == NOTHING  # candidates, all rejected


# --- check digits ---------------------------------------------------------------------

VALID_VINS = ["1M8GDM9AXKP042788", *ids.random_vins(np.random.default_rng(5), 3).tolist()]
VALID_IDS = ["11010519491231002X", *ids.random_resident_ids(np.random.default_rng(5), 3).tolist()]


def one_digit_changed(value: str) -> list[str]:
    """Every variant of ``value`` with exactly one digit replaced by another digit."""
    return [
        value[:i] + digit + value[i + 1 :]
        for i, char in enumerate(value)
        if char.isdigit()
        for digit in "0123456789"
        if digit != char
    ]


@pytest.mark.parametrize("vin", VALID_VINS)
def test_a_valid_vin_is_found_and_any_one_digit_change_is_not(vin):
    assert found(f"VIN {vin} 已登记") == [("vin", vin)]
    flagged = [v for v in one_digit_changed(vin) if "vin" in kinds(f"VIN {v} 已登记")]
    assert flagged == []


@pytest.mark.parametrize("resident_id", VALID_IDS)
def test_a_valid_resident_id_is_found_and_any_one_digit_change_is_not(resident_id):
    assert found(f"身份证{resident_id}办理") == [("resident_id", resident_id)]
    changed = one_digit_changed(resident_id)
    assert [v for v in changed if "resident_id" in kinds(f"身份证{v}办理")] == []


def test_resident_id_needs_a_known_province_and_a_real_birth_date_up_to_today():
    tomorrow = date.today() + timedelta(days=1)
    assert kinds(with_check_char("11010519491231002")) == {"resident_id"}
    assert kinds(with_check_char("99010519491231002")) == set()  # no province 99
    assert kinds(with_check_char("11010519490229002")) == set()  # 1949 was not a leap year
    assert kinds(with_check_char("11010520000229002")) == {"resident_id"}  # 2000 was
    assert kinds(with_check_char("11010518991231002")) == set()  # before 1900
    assert kinds(with_check_char(f"110105{tomorrow:%Y%m%d}002")) == set()


def test_a_seventeen_digit_number_is_not_a_vin_even_if_its_check_digit_fits():
    digits = next(
        d for d in (f"{n:017d}" for n in range(10**16, 10**16 + 100)) if ids.is_valid_vin(d)
    )
    assert kinds(f"OTA任务 {digits}") == set()


# --- written variants and boundaries -------------------------------------------------

POSITIVES = [
    ("resident_id", "owner ID no. 310112 19890426 531X.", "310112 19890426 531X"),
    ("resident_id", "证件号码：31015120030113653x", "31015120030113653x"),
    ("resident_id", "ID31010119530503121X", "31010119530503121X"),
    ("resident_id", "身份证110105-19491231-002X办理", "110105-19491231-002X"),
    ("resident_id", "ID11010519491231002X checked", "11010519491231002X"),
    ("mobile", "客户电话13812345678请回电", "13812345678"),
    ("mobile", "联系方式：(+86) 13812345678", "(+86) 13812345678"),
    ("mobile", "tel:+86-138-1234-5678", "+86-138-1234-5678"),
    ("mobile", "手机0086 138 1234 5678。", "0086 138 1234 5678"),
    ("mobile", "TEL13812345678", "13812345678"),
    ("mobile", "Tel+86 138 1234 5678", "+86 138 1234 5678"),
    ("mobile", "手机138.1234.5678。", "138.1234.5678"),
    ("mobile", "客户电话138/1234/5678请回电", "138/1234/5678"),
    ("plate", "车牌沪A·D12345进店", "沪A·D12345"),
    ("plate", "licence plate 粤B 12345D towed", "粤B 12345D"),
    ("plate", "车牌苏E•5B123", "苏E•5B123"),
    ("plate", "沪K・29624车辆", "沪K・29624"),
    ("plate", "车牌沪 A12345进店", "沪 A12345"),
    ("plate", "licence plate 沪 AD12345 towed", "沪 AD12345"),
    ("vin", "chassis no. lsv2jbzr5NU759615 checked", "lsv2jbzr5NU759615"),
    ("vin", "VINLB3L8HKY8M2597485已登记", "LB3L8HKY8M2597485"),
    ("email", "邮箱：NA.YAO@QQ.COM。", "NA.YAO@QQ.COM"),
    ("email", "report sent to a.b-c+cn@mail.example.co.uk.", "a.b-c+cn@mail.example.co.uk"),
    ("coordinates", "stopped at N31.2304 E121.4737 on the ramp", "N31.2304 E121.4737"),
    ("coordinates", "拖车地点：31.2304°N 121.4737°E", "31.2304°N 121.4737°E"),
    ("coordinates", "位置121.166489,30.785525附近", "121.166489,30.785525"),
    ("coordinates", "故障发生位置 (31.132685, 121.694108)", "(31.132685, 121.694108)"),
    ("coordinates", "GPS 39.9042 116.4074", "39.9042 116.4074"),
    ("coordinates", "位置北纬31.2304 东经121.4737附近", "北纬31.2304 东经121.4737"),
    ("coordinates", "url ?lat=31.23040&lon=121.47370", "lat=31.23040&lon=121.47370"),
    ("coordinates", "拖车地点：31°13'49\"N 121°28'25\"E", "31°13'49\"N 121°28'25\"E"),
    ("coordinates", "位置 31°13′49.5″N, 121°28′25″E 附近", "31°13′49.5″N, 121°28′25″E"),
    ("coordinates", "位置31°13’49”N 121°28’25”E", "31°13’49”N 121°28’25”E"),  # IME quotes
    ("name", "联系人：欧阳子涵", "欧阳子涵"),
    ("name", "姓名: 于娜", "于娜"),
    ("name", "车主马平先生来店", "马平"),
    ("name", "由高磊女士送修", "高磊"),
    ("name", "请张伟先生回电", "张伟"),
    ("name", "客户王芳反映异响", "王芳"),
    ("name", "owner 王芳 called", "王芳"),
    ("name", "王芳 called about the noise", "王芳"),
    ("name", "联系人：  王芳", "王芳"),
    ("name", "联系人：\u3000王芳", "王芳"),
    ("name", "contact person: 诸葛明", "诸葛明"),
    ("name", "Mr. 陈国华 will pick it up", "陈国华"),
]


@pytest.mark.parametrize(("kind", "text", "value"), POSITIVES)
def test_each_written_variant_is_found_with_its_exact_span(kind, text, value):
    assert (kind, value) in found(text)


NEGATIVES = [
    "abc13812345678",  # inside a longer token
    "13812345678901",  # 14 digits
    "12812345678",  # not a mobile segment
    "价格 138.12345678",  # a decimal, not 138.1234.5678
    "138.1234/5678",  # mixed marks
    "证件号 110105-19491231-0021",  # dashed, wrong check character (X)
    "客服热线 400-820-8820",
    "工单号 RO-202611240012 已关闭",
    "订单号 202611241530123456",  # 18 digits, no province 20
    "京AI2345",  # plates never use I
    "新BMS12345 模块",  # a province character before an ECU name
    "云 SERVER 宕机",  # an ordinary plate has a digit
    "VIN LSVAB1234567890123",  # 20 characters
    "S31.2304 E121.4737",  # southern hemisphere
    "lat 31.23 lon 121.47",  # two decimals are not precise
    "lat=31.23&lon=121.47",
    "31°13'N 121°28'E",  # minutes without seconds are not precise
    "31°73'49\"N 121°28'25\"E",  # 73 minutes
    "31°13'49\"S 121°28'25\"E",  # southern hemisphere
    "v4.31.2304,121.4737",  # a version string
    "IP 10.31.230.121",
    "Torque 121.456 Nm, angle 31.250 deg",
    "由于天气原因延误",
    "车主于昨日来店",
    "客户方面反馈良好",
    "客户要求更换轮胎",
    "由高压线束引起",
    "OTA 任务 1234567890123",
    "check 高压 harness",
    "owner 王芳华国 called",  # a four-character run is not surname + given name
    "王先生已取车",  # a surname alone is not a name
    "cnmedia://clips/2026/11/24/6f1c2a9e-8d3b-4c7a-9e21-0b5d4f3a1c77.mp4",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_are_not_findings(text):
    assert found(text) == []


def test_degrees_minutes_seconds_are_converted_before_the_bounding_box_check():
    # 53°29'59" is 53.4997°, inside China's latitudes; 53°59'59" is 53.9997°, north of them.
    assert kinds("53°29'59\"N 121°28'25\"E") == {"coordinates"}
    assert kinds("53°59'59\"N 121°28'25\"E") == set()
    assert kinds("3°13'49\"N 121°28'25\"E") == set()  # 3.23°N, south of the Spratlys


def test_full_width_forms_count_as_ascii_and_spans_index_the_original_text():
    values = {
        "mobile": full_width("+86 138 1234 5678"),
        "resident_id": full_width("11010519491231002X"),
        "vin": full_width("1M8GDM9AXKP042788"),
        "plate": full_width("沪AD12345"),
        "email": "ＮＡ．ＹＡＯ＠ＱＱ．ＣＯＭ",
        "coordinates": full_width("31.23046") + "，" + full_width("121.47370"),
        "name": "王芳",
    }
    text = (
        f"客户电话{values['mobile']}请回电；证件号码：{values['resident_id']}；"
        f"ＶＩＮ：{values['vin']}；车牌{values['plate']}；邮箱：{values['email']}；"
        f"位置{values['coordinates']}附近；联系人：{values['name']}\u3000ｏｋ"
    )
    assert sorted(found(text)) == sorted(values.items())


def test_ideographic_space_separates_like_a_space():
    assert found("手机１３８\u3000１２３４\u3000５６７８") == [
        ("mobile", "１３８\u3000１２３４\u3000５６７８")
    ]


# --- columns --------------------------------------------------------------------------

MOBILE_ROWS = [
    "客户电话13812345678请回电",
    "call back on +86 139 1234 5678 or 13912345678 today",  # two numbers: one row
    "手机１５０１２３４５６７８",
    None,
    "Customer reports noise at low speed. BMS DTC P0A80",
    "",
]


def test_scan_array_counts_rows_with_a_finding_and_ignores_nulls():
    assert pii.scan_array(pa.array(MOBILE_ROWS)) == NOTHING | {"mobile": 3}
    assert pii.scan_array(pa.array([None, None], type=pa.string())) == NOTHING
    assert pii.scan_array(pa.array([], type=pa.string())) == NOTHING


@pytest.mark.parametrize(
    ("column", "mobiles"),
    [
        (pa.array(MOBILE_ROWS * 2).dictionary_encode(), 6),
        (pa.chunked_array([pa.array(MOBILE_ROWS[:2]), pa.array(MOBILE_ROWS[2:] + MOBILE_ROWS)]), 6),
        (  # chunks with different dictionaries
            pa.chunked_array(
                [
                    pa.array(MOBILE_ROWS[:2]).dictionary_encode(),
                    pa.array(MOBILE_ROWS).dictionary_encode(),
                ]
            ),
            5,
        ),
        (pa.array(MOBILE_ROWS * 2, type=pa.large_string()), 6),
        (pa.array(MOBILE_ROWS * 2, type=pa.string_view()), 6),
        (pa.array(MOBILE_ROWS * 2, type=pa.large_string()).dictionary_encode(), 6),
        (pa.array(MOBILE_ROWS * 2, type=pa.string_view()).dictionary_encode(), 6),
        (pa.chunked_array([], type=pa.string()), 0),
    ],
    ids=[
        "dictionary",
        "chunked",
        "chunked-dictionaries",
        "large_string",
        "string_view",
        "dictionary-of-large_string",
        "dictionary-of-string_view",
        "empty",
    ],
)
def test_scan_array_handles_dictionary_chunked_and_large_columns(column, mobiles):
    assert pii.scan_array(column) == NOTHING | {"mobile": mobiles}


def test_scan_array_counts_exactly_what_find_finds_on_the_corpora():
    texts = [text for text, _ in planted_corpus()] + clean_corpus(notes=500)
    expected = Counter(kind for text in texts for kind in kinds(text))
    assert pii.scan_array(pa.array(texts)) == NOTHING | dict(expected)


def test_scan_array_agrees_with_find_on_random_fragments_of_identifiers():
    """The Arrow prefilter must never drop a row that ``find`` would flag."""
    rng = np.random.default_rng(17)
    values = [value for _, planted in planted_corpus() for _, value in planted]
    pieces = [*values, "VIN", "ID", "TEL", "owner ", "客户", "由", "先生", "欧阳", "芳", "北纬"]
    pieces += [" ", "\u3000", ",", "，", ".", "°", "N", "E", "-", "+86", "(", ")", "@", "1", "x"]
    pieces += ["/", "'", '"', "′", "″", "&", "lat=", "Tel", "沪 ", "云 SERVER"]
    texts = []
    for _ in range(20_000):
        text = "".join(pieces[i] for i in rng.integers(0, len(pieces), rng.integers(1, 6)))
        texts.append(full_width(text) if rng.random() < 0.3 else text)
    expected = Counter(kind for text in texts for kind in kinds(text))
    assert min(expected.values()) > 0
    assert pii.scan_array(pa.array(texts)) == NOTHING | dict(expected)


def test_scan_array_counts_every_row_with_planted_notes():
    texts, planted = notes_with_pii(np.random.default_rng(11), 5_000, 0.3)
    expected = Counter(kind for values in planted for kind in {k for k, _ in values})
    assert pii.scan_array(pa.array(texts)) == dict(expected)


def machine_columns(n: int) -> dict[str, pa.Array]:
    """Identifier-like strings that carry no personal information."""
    rng = np.random.default_rng(3)
    raw = rng.bytes(16 * n)
    pseudonyms = [
        base64.b32encode(raw[i : i + 16]).decode().rstrip("=").lower() for i in range(0, 16 * n, 16)
    ]
    systems, hex_digits = np.array(list("PCBU")), np.array(list("0123456789ABCDEF"))
    codes = np.strings.add(systems[rng.integers(0, 4, n)], rng.integers(0, 4, n).astype(str))
    for _ in range(3):
        codes = np.strings.add(codes, hex_digits[rng.integers(0, 16, n)])
    return {
        "record_id": pa.array(
            [str(uuid.UUID(bytes=raw[i : i + 16])) for i in range(0, 16 * n, 16)]
        ),
        "vin_pseudonym": pa.array(pseudonyms),
        "firmware": pa.array(np.array(FIRMWARE_VERSIONS)[rng.integers(0, 3, n)]),
        "fault_code": pa.array(codes),
        "dealer_code": pa.array([f"SH-{i % 300:04d}" for i in range(n)]),
    }


def test_nothing_is_found_in_uuids_pseudonyms_firmware_versions_or_fault_codes():
    columns = machine_columns(50_000)
    assert all(len(v) == 26 for v in columns["vin_pseudonym"].to_pylist()[:100])
    for name, column in columns.items():
        assert pii.scan_array(column) == NOTHING, name
        assert pii.scan_array(column.dictionary_encode()) == NOTHING, name


def test_scan_table_scans_every_string_column_and_only_those():
    columns = machine_columns(1_200)
    table = pa.table(
        {
            "record_id": columns["record_id"],
            "notes": pa.array(MOBILE_ROWS * 200, type=pa.large_string()),
            "ecu": pa.array(["BMS", "VCU"] * 600).dictionary_encode(),
            "odometer_km": pa.array(np.arange(1_200, dtype=np.float64)),
        }
    )
    assert pii.scan_table(table) == {
        "record_id": NOTHING,
        "notes": NOTHING | {"mobile": 600},
        "ecu": NOTHING,
    }


def test_a_million_short_non_matching_values_scan_in_under_a_second():
    n = 1_000_000
    hex_codes = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = np.random.default_rng(0).integers(0, 16, (n, 32), dtype=np.uint8)
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    chars[:, np.r_[0:8, 9:13, 14:18, 19:23, 24:36]] = hex_codes[nibbles]
    offsets = pa.py_buffer(np.arange(0, (n + 1) * 36, 36, dtype=np.int32))
    uuids = pa.StringArray.from_buffers(n, offsets, pa.py_buffer(chars.tobytes()))
    pii.scan_array(uuids[:10])  # Arrow initialises its regex kernels once (~0.7 s here)
    started = time.perf_counter()
    assert pii.scan_array(uuids) == NOTHING
    elapsed = time.perf_counter() - started
    print(f"scan_array on {n:,} UUID strings: {elapsed:.3f} s")
    assert elapsed < 1.0  # about 0.07 s here: the bound only catches a per-row Python loop
