"""China-specific identifiers: validation and vectorised synthetic generation.

Covers VINs (ISO 3779 / GB 16735 check digit), resident ID numbers (GB 11643, ISO 7064
MOD 11-2), mainland mobile numbers, licence plates (GA 36-2018, incl. new-energy
plates), Chinese personal names, e-mail addresses and Shanghai postal addresses.

Validators take one string. Generators take a ``numpy.random.Generator`` and a count and
return a numpy array of ``str``; they build fixed-width ASCII codes as ``uint8`` matrices
so that millions of values cost a few numpy operations, not a Python loop. Finding
identifiers inside free text is the PII detectors' job, not this module's.
"""

from __future__ import annotations

import functools
import re
from datetime import date

import numpy as np

# --- shared helpers ---------------------------------------------------------------

_ZERO = ord("0")


def _ascii(chars: str) -> np.ndarray:
    return np.frombuffer(chars.encode("ascii"), dtype=np.uint8)


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative ints as an ``(n, width)`` ASCII matrix."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((np.asarray(values, dtype=np.int64)[:, None] // powers) % 10 + _ZERO).astype(np.uint8)


def _to_str(codes: np.ndarray) -> np.ndarray:
    """``(n, width)`` ASCII matrix -> array of ``str`` (one per row)."""
    width = codes.shape[1]
    return np.ascontiguousarray(codes).view(f"S{width}").ravel().astype(f"U{width}")


def _pick(
    rng: np.random.Generator, options: np.ndarray, n: int, p: np.ndarray | None = None
) -> np.ndarray:
    return options[rng.choice(len(options), size=n, p=p)]


# --- VIN (ISO 3779; check digit as in GB 16735 / 49 CFR 565) ---------------------

VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"  # I, O and Q are never used
VIN_RE = re.compile(r"^[0-9A-HJ-NPR-Z]{17}$")
_VIN_VALUES = dict(zip("0123456789", range(10), strict=True)) | dict(
    zip(
        "ABCDEFGHJKLMNPRSTUVWXYZ",
        [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9],
        strict=True,
    )
)
_VIN_WEIGHTS = np.array([8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)
_VIN_VALUE_TABLE = np.zeros(256, dtype=np.int64)
for _char, _value in _VIN_VALUES.items():
    _VIN_VALUE_TABLE[ord(_char)] = _value
_VIN_CHECK_CHARS = _ascii("0123456789X")

# World manufacturer identifiers of makers building in China (SAIC-GM, FAW-VW,
# SAIC-VW, Geely, Tesla Shanghai, BYD, NIO, Li Auto...): plausible, not exhaustive.
CHINESE_WMIS = ("LSG", "LFV", "LSV", "LVS", "LGX", "LRW", "LNB", "LB3", "LJ1", "LW4", "LC0")
_WMI_CODES = np.array([list(w.encode()) for w in CHINESE_WMIS], dtype=np.uint8)
_VDS_CODES = _ascii(VIN_ALPHABET)
_MODEL_YEAR_CODES = _ascii("KLMNPRST")  # model years 2019-2026
_PLANT_CODES = _ascii("ABCDEFGHJKLMNPRSTUVWXYZ123456789")


def _vin_check_codes(codes: np.ndarray) -> np.ndarray:
    """Check characters (ASCII) for an ``(n, 17)`` VIN matrix; position 9 is ignored."""
    total = _VIN_VALUE_TABLE[codes] @ _VIN_WEIGHTS
    return _VIN_CHECK_CHARS[total % 11]


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 check character ('0'-'9' or 'X') that belongs at position 9."""
    text = vin.upper()
    if len(text) != 17 or any(c not in _VIN_VALUES for c in text):
        raise ValueError(f"not a 17-character VIN: {vin!r}")
    total = sum(_VIN_VALUES[c] * int(w) for c, w in zip(text, _VIN_WEIGHTS, strict=True))
    return "0123456789X"[total % 11]


def is_valid_vin(vin: str) -> bool:
    """True for a 17-character VIN (any case) without I/O/Q whose check digit matches."""
    text = vin.upper()
    return bool(VIN_RE.match(text)) and text[8] == vin_check_digit(text)


def random_vins(
    rng: np.random.Generator, n: int, *, serials: np.ndarray | None = None
) -> np.ndarray:
    """``n`` valid VINs with Chinese WMIs.

    ``serials`` (ints below 1,000,000) fill positions 12-17; distinct serials give
    distinct VINs, which callers use when they need uniqueness by construction.
    """
    codes = np.empty((n, 17), dtype=np.uint8)
    codes[:, 0:3] = _WMI_CODES[rng.integers(0, len(_WMI_CODES), n)]
    codes[:, 3:8] = _VDS_CODES[rng.integers(0, len(_VDS_CODES), (n, 5))]
    codes[:, 9] = _pick(rng, _MODEL_YEAR_CODES, n)
    codes[:, 10] = _pick(rng, _PLANT_CODES, n)
    if serials is None:
        serials = rng.integers(0, 1_000_000, n)
    codes[:, 11:17] = _digits(serials, 6)
    codes[:, 8] = _vin_check_codes(codes)
    return _to_str(codes)


# --- Resident ID (GB 11643-1999, ISO 7064 MOD 11-2) --------------------------------

RESIDENT_ID_RE = re.compile(r"^[1-8]\d{16}[\dXx]$")
_RID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_RID_CHECK_CHARS = "10X98765432"  # indexed by (weighted sum mod 11)
_RID_CHECK_CODES = _ascii(_RID_CHECK_CHARS)
_PROVINCE_CODES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46}
    | {50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82}
)
# Shanghai districts, then a few county-level codes elsewhere (people move to Shanghai).
SHANGHAI_REGION_CODES = (
    "310101", "310104", "310105", "310106", "310107", "310109", "310110", "310112",
    "310113", "310114", "310115", "310116", "310117", "310118", "310120", "310151",
)  # fmt: skip
OTHER_REGION_CODES = (
    "110105", "120101", "320102", "320505", "320583", "330106", "330203", "340104",
    "350203", "370202", "410105", "420106", "430104", "440305", "510107", "610113",
)  # fmt: skip
_SH_REGIONS = np.array([list(c.encode()) for c in SHANGHAI_REGION_CODES], dtype=np.uint8)
_OTHER_REGIONS = np.array([list(c.encode()) for c in OTHER_REGION_CODES], dtype=np.uint8)


def resident_id_check_char(id17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits (an 18-char ID is fine)."""
    body = id17[:17]
    if len(body) != 17 or not body.isascii() or not body.isdigit():
        raise ValueError(f"need 17 leading digits: {id17!r}")
    total = sum(int(d) * int(w) for d, w in zip(body, _RID_WEIGHTS, strict=True))
    return _RID_CHECK_CHARS[total % 11]


def is_valid_resident_id(value: str) -> bool:
    """True for an 18-char resident ID: known province, real birth date, matching check."""
    if not RESIDENT_ID_RE.match(value) or int(value[:2]) not in _PROVINCE_CODES:
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return born.year >= 1900 and value[17].upper() == resident_id_check_char(value)


def random_resident_ids(
    rng: np.random.Generator,
    n: int,
    *,
    shanghai_share: float = 0.7,
    born_between: tuple[date, date] = (date(1950, 1, 1), date(2006, 12, 31)),
) -> np.ndarray:
    """``n`` valid resident IDs, mostly with Shanghai region codes."""
    codes = np.empty((n, 18), dtype=np.uint8)
    local = rng.random(n) < shanghai_share
    codes[:, :6] = np.where(
        local[:, None],
        _SH_REGIONS[rng.integers(0, len(_SH_REGIONS), n)],
        _OTHER_REGIONS[rng.integers(0, len(_OTHER_REGIONS), n)],
    )
    first, last = (np.datetime64(d, "D") for d in born_between)
    born = first + rng.integers(0, (last - first).astype(int) + 1, n)
    year = born.astype("datetime64[Y]").astype(np.int64) + 1970
    month = born.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (born - born.astype("datetime64[M]")).astype(np.int64) + 1
    codes[:, 6:14] = _digits(year * 10_000 + month * 100 + day, 8)
    codes[:, 14:17] = _digits(rng.integers(0, 1000, n), 3)
    total = (codes[:, :17].astype(np.int64) - _ZERO) @ _RID_WEIGHTS
    codes[:, 17] = _RID_CHECK_CODES[total % 11]
    return _to_str(codes)


# --- Mainland mobile numbers --------------------------------------------------------

MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
_MOBILE_NOISE = re.compile(r"[\s\-]")
# Segments actually allocated to China Mobile / Unicom / Telecom / Broadnet.
_MOBILE_PREFIXES = np.array(
    [
        130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 145, 147, 150, 151, 152, 153, 155,
        156, 157, 158, 159, 166, 173, 176, 177, 180, 181, 182, 183, 185, 186, 187, 188, 189,
        191, 192, 195, 198, 199,
    ],
    dtype=np.int64,
)  # fmt: skip


def normalize_mobile(value: str) -> str | None:
    """The bare 11 digits of a mainland mobile number, or None.

    Accepts spaces and dashes anywhere and an optional ``+86``, ``0086`` or ``86`` prefix.
    """
    text = _MOBILE_NOISE.sub("", value)
    for prefix in ("+86", "0086", "86"):
        if text.startswith(prefix) and len(text) == len(prefix) + 11:
            text = text[len(prefix) :]
            break
    return text if MOBILE_RE.match(text) else None


def is_valid_mobile(value: str) -> bool:
    return normalize_mobile(value) is not None


def random_mobiles(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` mainland mobile numbers (11 digits) in allocated segments."""
    prefixes = _pick(rng, _MOBILE_PREFIXES, n)
    return _to_str(_digits(prefixes * 100_000_000 + rng.integers(0, 100_000_000, n), 11))


# --- Licence plates (GA 36-2018) ----------------------------------------------------

PROVINCE_ABBREVIATIONS = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_DOTS = "·•・"
_PLATE_LETTER = "A-HJ-NP-Z"  # plates never use I or O
PLATE_RE = re.compile(
    rf"^[{PROVINCE_ABBREVIATIONS}][{_PLATE_LETTER}][{PLATE_DOTS}]?"
    rf"(?:[{_PLATE_LETTER}0-9]{{5}}"  # ordinary: 5 letters/digits
    rf"|[DF][{_PLATE_LETTER}0-9]\d{{4}}"  # small new-energy: D/F, letter/digit, 4 digits
    rf"|\d{{5}}[DF])$"  # large new-energy: 5 digits, then D/F
)
_PLATE_PROVINCES = np.array(list("沪苏浙皖京粤鲁豫川鄂"))
_PLATE_PROVINCE_P = np.array([0.78, 0.06, 0.05, 0.03, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01])
_PLATE_LETTERS = _ascii("ABCDEFGHJKLMNPQRSTUVWXYZ")
_PLATE_DIGITS = _ascii("0123456789")
_PLATE_ALNUM = np.concatenate([_PLATE_LETTERS, _PLATE_DIGITS])
_NEV_KINDS = _ascii("DF")


def is_valid_plate(value: str) -> bool:
    """True for an ordinary (7-char) or new-energy (8-char) plate, optional middle dot."""
    return bool(PLATE_RE.match(value.upper()))


def _plate_tails(rng: np.random.Generator, n: int, new_energy: np.ndarray) -> np.ndarray:
    """Everything after the province character, as an ``(n, 7)`` matrix (col 6 unused
    for ordinary plates)."""
    tail = _PLATE_DIGITS[rng.integers(0, 10, (n, 7))]
    tail[:, 0] = _pick(rng, _PLATE_LETTERS[:14], n)  # issuing-office letter, A-P
    # Ordinary plates: up to two letters, in the first two serial positions.
    letters = rng.random((n, 2)) < 0.2
    tail[:, 1:3] = np.where(letters, _PLATE_LETTERS[rng.integers(0, 24, (n, 2))], tail[:, 1:3])
    # Small new-energy: D/F, then a letter or digit, then 4 digits.
    small = new_energy & (rng.random(n) < 0.9)
    tail[small, 1] = _pick(rng, _NEV_KINDS, int(small.sum()))
    tail[small, 2] = _pick(rng, _PLATE_ALNUM, int(small.sum()))
    # Large new-energy: 5 digits, then D/F.
    large = new_energy & ~small
    tail[large, 1:6] = _PLATE_DIGITS[rng.integers(0, 10, (int(large.sum()), 5))]
    tail[large, 6] = _pick(rng, _NEV_KINDS, int(large.sum()))
    return tail


def random_plates(
    rng: np.random.Generator,
    n: int,
    *,
    new_energy_share: float = 0.4,
    dot_share: float = 0.0,
) -> np.ndarray:
    """``n`` valid plates, mostly 沪; ``dot_share`` of them written as 沪A·D12345."""
    new_energy = rng.random(n) < new_energy_share
    tails = _to_str(_plate_tails(rng, n, new_energy))
    tails = np.where(new_energy, tails, np.strings.slice(tails, 0, 6))
    dotted = rng.random(n) < dot_share
    dotted_tails = _join(np.strings.slice(tails, 0, 1), "·", np.strings.slice(tails, 1, None))
    tails = np.where(dotted, dotted_tails, tails)
    return _join(_pick(rng, _PLATE_PROVINCES, n, p=_PLATE_PROVINCE_P), tails)


# --- Names, e-mail, addresses -------------------------------------------------------

_SURNAMES = np.array(
    list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭")
    + list("曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁沈姚陆顾钱")
)
_COMPOUND_SURNAMES = np.array(["欧阳", "司马", "上官", "诸葛"])
_GIVEN_CHARS = np.array(
    list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂英华建文玉兰红国海")
    + list("晨宇浩然子涵梓轩一诺欣怡佳琪俊思远雨婷嘉懿")
)
# Pinyin of common surnames and given-name characters: e-mail local parts look real.
_PINYIN = np.array(
    [
        "wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu",
        "sun", "ma", "zhu", "hu", "guo", "he", "gao", "lin", "luo", "zheng", "liang", "xie",
        "song", "tang", "han", "feng", "deng", "cao", "peng", "zeng", "xiao", "tian", "dong",
        "yuan", "pan", "jiang", "cai", "yu", "du", "ye", "cheng", "su", "wei", "lv", "ding",
        "shen", "yao", "lu", "gu", "qian", "fang", "na", "min", "jing", "qiang", "lei", "jun",
        "yong", "yan", "jie", "juan", "tao", "ming", "chao", "xia", "ping", "gang", "hui",
        "ying", "hua", "jian", "wen", "lan", "hong", "hai", "hao", "ran", "zi", "xuan", "yi",
        "nuo", "xin", "jia", "qi", "si", "ting",
    ]
)  # fmt: skip
_MAIL_DOMAINS = np.array(
    ["163.com", "126.com", "qq.com", "sina.com", "foxmail.com", "139.com", "outlook.com"]
)


def _join(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise string concatenation of arrays and scalars."""
    return functools.reduce(np.strings.add, parts)


def random_names(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` Chinese personal names: a common surname and a 1- or 2-character given name."""
    compound = rng.random(n) < 0.02
    surnames = np.where(compound, _pick(rng, _COMPOUND_SURNAMES, n), _pick(rng, _SURNAMES, n))
    given = _pick(rng, _GIVEN_CHARS, n)
    two_chars = rng.random(n) < 0.7
    given = np.where(two_chars, _join(given, _pick(rng, _GIVEN_CHARS, n)), given)
    return _join(surnames, given)


def random_emails(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` e-mail addresses at Chinese mail providers (pinyin or QQ-number style)."""
    family, given = _pick(rng, _PINYIN, n), _pick(rng, _PINYIN, n)
    number = rng.integers(1, 10_000, n).astype(str)
    qq_number = rng.integers(10_000_000, 3_000_000_000, n).astype(str)
    style = rng.integers(0, 4, n)
    local = np.select(
        [style == 0, style == 1, style == 2],
        [_join(family, ".", given), _join(family, given, number), _join(given, "_", family)],
        qq_number,
    )
    domain = np.where(style == 3, "qq.com", _pick(rng, _MAIL_DOMAINS, n))
    return _join(local, "@", domain)


_SHANGHAI_DISTRICTS = np.array(
    [
        "黄浦区", "徐汇区", "长宁区", "静安区", "普陀区", "虹口区", "杨浦区", "闵行区",
        "宝山区", "嘉定区", "浦东新区", "金山区", "松江区", "青浦区", "奉贤区", "崇明区",
    ]
)  # fmt: skip
_SHANGHAI_ROADS = np.array(
    [
        "张江路", "世纪大道", "南京西路", "淮海中路", "漕溪北路", "延安西路", "中山北路",
        "四平路", "莲花路", "沪闵路", "曹安公路", "古棕路", "环湖西二路", "申港大道",
        "金科路", "龙华中路", "江场路", "共和新路", "虹桥路", "七莘路",
    ]
)  # fmt: skip


def random_shanghai_addresses(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` Shanghai-style residential addresses: 上海市…区…路123弄45号602室."""
    return _join(
        "上海市",
        _pick(rng, _SHANGHAI_DISTRICTS, n),
        _pick(rng, _SHANGHAI_ROADS, n),
        rng.integers(1, 2000, n).astype(str),
        "弄",
        rng.integers(1, 80, n).astype(str),
        "号",
        (rng.integers(1, 33, n) * 100 + rng.integers(1, 7, n)).astype(str),
        "室",
    )
