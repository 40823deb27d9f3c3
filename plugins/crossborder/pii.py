"""Detectors for China-specific personal information in free text and string columns.

These detectors serve the *verification* step, which proves that anonymization held
before a partition leaves China. They deliberately share no code with the transform side
(``crossborder.scrub``) nor with ``crossborder.identifiers``: check digits, dates and
ranges are validated here, independently, so one bug cannot both leak and hide a value.

How a text is read:

- Full-width forms (U+FF01..U+FF5E) and the ideographic space (U+3000) count as their
  ASCII forms. They are folded one character for one, so spans stay in the coordinates
  of the original text.
- A value never starts or ends inside a longer run of ASCII letters and digits; Han
  characters and punctuation are boundaries (``客户电话13812345678请回电``). A glued
  label (``VIN``, ``ID``, ``TEL``: ``VINLSVAB...``) is the one exception.

Choices that trade a little recall for fewer false alarms (a false alarm blocks an
export): a VIN must contain a letter; plate letters are upper case; a name needs a cue
(联系人, 车主…, 先生/女士/小姐) or a Latin word next to it.

Each pattern is written once and spelled twice by a ``_Dialect``: for Python ``re`` over
folded text (the exact detector) and for RE2 over raw Arrow strings (the prefilter that
picks candidate rows). RE2 has no look-around, so its spelling consumes boundary
characters and leaves out exclusions: it matches wherever the exact pattern does, which
is what lets ``scan_array`` skip non-candidate rows without missing anything. Its classes
list the full-width forms, so columns need no NFKC pass before the prefilter.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DETECTORS: tuple[str, ...] = (
    "resident_id",
    "mobile",
    "plate",
    "vin",
    "email",
    "coordinates",
    "name",
)


@dataclass(frozen=True)
class Finding:
    detector: str
    start: int  # span in the original text
    end: int


# --- reading text -----------------------------------------------------------------------

# One character for one: offsets in the folded text are offsets in the original text.
_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_FOLDABLE = "[\uff01-\uff5e\u3000]"  # RE2: does a text need folding at all?

DIGITS = string.digits
LETTERS = string.ascii_letters
ALNUM = DIGITS + LETTERS
# Tab, space, no-break and typographic spaces (U+3000 folds to a space).
SPACES = " \t\u00a0\u202f\u205f" + "".join(map(chr, range(0x2000, 0x200B)))
HAN = "\u3400-\u4dbf\u4e00-\u9fff"  # class body: CJK unified ideographs and extension A
_CLASS_SPECIALS = set("\\]^-[")


def _class_body(codes: Iterable[int]) -> str:
    """Sorted code points as a character-class body with ranges (valid in re and RE2)."""

    def char(code: int) -> str:
        return ("\\" if chr(code) in _CLASS_SPECIALS else "") + chr(code)

    points, parts, i = sorted(set(codes)), [], 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        parts.append(char(points[i]) if i == j else f"{char(points[i])}-{char(points[j])}")
        i = j + 1
    return "".join(parts)


class _Dialect:
    """Spells a pattern for Python ``re`` over folded text, or for RE2 over raw text."""

    def __init__(self, *, re2: bool) -> None:
        self.re2 = re2

    def chars(self, ascii_chars: str) -> str:
        """Class body for ASCII characters; in RE2 also their full-width forms."""
        codes = {ord(c) for c in ascii_chars}
        if self.re2:
            codes |= {c + 0xFEE0 for c in codes if 0x21 <= c <= 0x7E}
            codes |= {0x3000} if 0x20 in codes else set()
        return _class_body(codes)

    def cls(self, ascii_chars: str) -> str:
        return f"[{self.chars(ascii_chars)}]"

    def lit(self, text: str) -> str:
        """A literal; its ASCII characters match their full-width forms in RE2."""
        return "".join(self.cls(c) if c.isascii() else re.escape(c) for c in text)

    def not_after(self, body: str) -> str:
        """Not preceded by a character of the class ``body``."""
        return f"(?:^|[^{body}])" if self.re2 else f"(?<![{body}])"

    def not_before(self, body: str) -> str:
        """Not followed by a character of the class ``body``."""
        return f"(?:$|[^{body}])" if self.re2 else f"(?![{body}])"

    def unless(self, pattern: str) -> str:
        """An exclusion only the exact pattern applies (RE2 stays a superset)."""
        return "" if self.re2 else f"(?!{pattern})"

    def same_as(self, group: str, ascii_chars: str) -> str:
        """What ``group`` matched, one of ``ascii_chars``; RE2 (no backreferences) takes any."""
        return self.cls(ascii_chars) if self.re2 else f"(?P={group})"

    def caseless(self, word: str) -> str:
        """``word`` in any case (Han characters as they are)."""
        return "".join(self.cls(c.upper() + c.lower()) if c.isascii() else c for c in word)

    def token_start(self, labels: Sequence[str] = ()) -> str:
        """Start of an alphanumeric token, or right after a glued label (``VIN…``)."""
        alnum = self.chars(ALNUM)
        spelled = [self.caseless(label) for label in labels]
        if self.re2:
            return "(?:" + "|".join(["^", f"[^{alnum}]", *spelled]) + ")"
        glued = [f"(?<=(?<![{alnum}]){label})" for label in spelled]
        return "(?:" + "|".join([f"(?<![{alnum}])", *glued]) + ")"

    def token_end(self) -> str:
        return self.not_before(self.chars(ALNUM))


# --- patterns -------------------------------------------------------------------------
# Each returns patterns whose group ``v`` is the value; ``d`` chooses the spelling.


def _resident_id_patterns(d: _Dialect) -> list[str]:
    digit, gap = d.cls(DIGITS), f"{d.cls(SPACES + '-')}?"  # gaps: the 6-8-4 grouping
    region, born, serial = f"{d.cls('12345678')}{digit}{{5}}", f"{digit}{{8}}", f"{digit}{{3}}"
    body = f"{region}{gap}{born}{gap}{serial}{d.cls(DIGITS + 'Xx')}"
    return [f"{d.token_start(['ID'])}(?P<v>{body}){d.token_end()}"]


def _mobile_patterns(d: _Dialect) -> list[str]:
    digit, gap = d.cls(DIGITS), f"{d.cls(SPACES + '-')}?"  # gaps: the 3-4-4 grouping
    country = f"(?:(?:{d.lit('+')}|{d.lit('00')})?{d.lit('86')}|{d.lit('(+86)')}){gap}"
    # 138.1234.5678 and 138/1234/5678 take the same mark twice: 138.12345678 is a decimal.
    dotted = f"(?P<mark>{d.cls('./')}){digit}{{4}}{d.same_as('mark', './')}"
    middle = f"(?:{gap}{digit}{{4}}{gap}|{dotted})"
    number = f"{d.lit('1')}{d.cls('3456789')}{digit}{middle}{digit}{{4}}"
    return [f"{d.token_start(['TEL'])}(?P<v>(?:{country})?{number}){d.token_end()}"]


PROVINCE_ABBREVIATIONS = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # plates never use I or O


def _plate_patterns(d: _Dialect) -> list[str]:
    digit, serial, kind = d.cls(DIGITS), d.cls(PLATE_LETTERS + DIGITS), d.cls("DF")
    gap, letter = f"{d.cls(SPACES)}?", d.cls(PLATE_LETTERS)
    separator = f"(?:[·•・]|{d.cls(SPACES)})?"
    tail = (
        f"(?:{kind}{serial}{digit}{{4}}"  # small new-energy: D/F, letter or digit, 4 digits
        f"|{digit}{{5}}{kind}"  # large new-energy: 5 digits, then D/F
        f"|{d.unless(f'{letter}{{5}}')}{serial}{{5}})"  # ordinary, with a digit (not 云 SERVER)
    )
    head = f"[{PROVINCE_ABBREVIATIONS}]{gap}{letter}"  # 沪A or 沪 A
    return [f"(?P<v>{head}{separator}{tail}){d.token_end()}"]


VIN_CHARS = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"  # never I, O or Q


def _vin_patterns(d: _Dialect) -> list[str]:
    char = d.cls(VIN_CHARS + VIN_CHARS.lower())
    return [f"{d.token_start(['VIN'])}(?P<v>{char}{{17}}){d.token_end()}"]


def _email_patterns(d: _Dialect) -> list[str]:
    local_chars = ALNUM + "._%+-"
    label = f"{d.cls(ALNUM + '-')}+"
    address = (
        f"{d.cls(local_chars)}+{d.lit('@')}{label}(?:{d.lit('.')}{label})*"
        f"{d.lit('.')}{d.cls(LETTERS)}{{2,}}"
    )
    end = d.not_before(d.chars(ALNUM + "-"))
    return [f"{d.not_after(d.chars(local_chars))}(?P<v>{address}){end}"]


# Words and letters that name an axis, before the number: N31.2, 北纬31.2, lat: 31.2.
AXIS_WORDS = {
    "n": "N", "s": "S", "e": "E", "w": "W",
    "北纬": "N", "南纬": "S", "东经": "E", "西经": "W", "纬度": "N", "经度": "E",
    "latitude": "N", "lat": "N", "longitude": "E", "long": "E", "lng": "E", "lon": "E",
}  # fmt: skip


def _coordinate_patterns(d: _Dialect) -> list[str]:
    """A pair of decimals (3+ places) or of degrees-minutes-seconds, bare, or with
    hemisphere letters or axis words."""
    digit, space = d.cls(DIGITS), d.cls(SPACES)
    start = d.not_after(d.chars(ALNUM + "."))
    end = d.not_before(d.chars(ALNUM)) + d.unless(r"\.[0-9]")
    # Minutes and seconds marks: ASCII, primes, and the curly quotes Chinese IMEs type.
    minute_mark, second_mark = "[" + d.chars("'") + "′’]", "[" + d.chars('"') + "″”]"

    def number(group: str) -> str:
        decimal = f"(?P<{group}>{digit}{{1,3}}{d.lit('.')}{digit}{{3,}})"
        # 31°13'49" (also 31°13′49.5″, 31°13’49”); _degrees checks minutes and seconds.
        minutes = f"(?P<{group}_m>{digit}{{1,2}}){minute_mark}"
        seconds = f"(?P<{group}_s>{digit}{{1,2}}(?:{d.lit('.')}{digit}+)?){second_mark}"
        dms = f"(?P<{group}_d>{digit}{{1,3}})°{space}?{minutes}{space}?{seconds}"
        return f"(?:{decimal}|{dms})"

    def axis_word(group: str) -> str:
        words = sorted(AXIS_WORDS, key=len, reverse=True)  # "latitude" before "lat"
        return f"(?P<{group}>{'|'.join(d.caseless(w) for w in words)}){space}*{d.cls(':=')}?"

    def hemisphere(group: str) -> str:
        return f"(?P<{group}>{d.cls('NSEWnsew')})"

    degree = f"(?:{space}?°)?"
    pair_gap = f"(?:{space}*[{d.chars(',;&')}、]{space}*|{space}+)"  # & of lat=…&lon=…
    bare = f"{number('a')}{degree}{pair_gap}{number('b')}{degree}"
    bracketed = f"{d.lit('(')}{space}*{bare}{space}*{d.lit(')')}"
    named = f"{axis_word('ha')}{space}*{number('a')}{degree}{pair_gap}?"
    named += f"{axis_word('hb')}{space}*{number('b')}{degree}"
    suffixed = f"{number('a')}{degree}{space}?{hemisphere('ha')}{pair_gap}"
    suffixed += f"{number('b')}{degree}{space}?{hemisphere('hb')}"
    return [
        f"{start}(?P<v>{bracketed}){end}",
        f"{start}(?P<v>{bare}){end}",
        f"{start}(?P<v>{named}){end}",
        f"{start}(?P<v>{suffixed}){end}",
    ]


# About the 160 most frequent single-character surnames (with the variants 肖/萧 and
# 阎/闫), then compound ones.
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马胡朱郭何罗高林郑梁谢唐宋许邓冯韩曹曾彭肖萧蔡潘田董袁于余"
    "叶蒋杜苏魏程吕丁沈任姚卢傅钟姜崔谭廖范汪陆金石戴贾韦夏邱方侯邹熊孟秦白江阎闫薛尹段"
    "雷黎史龙陶贺顾毛郝龚邵万钱严覃武赖莫孔汤向常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章"
    "鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆"
)
COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "皇甫", "尉迟", "公孙", "慕容", "令狐")
NAME_CUES = ("联系人", "姓名", "车主", "客户", "由")
NAME_SUFFIXES = ("先生", "女士", "小姐")
# Characters that follow a surname-like character in workshop text or place names but
# are (almost) never part of a given name: 高压, 方面, 温度, 关闭, 任务, 万公里, 温州...
_NOT_GIVEN = (
    "的了是在和与及或于称说要已未不没把被将对向从到等电话号码车店修检换反映表示同意自行"
    "时间压速温度线路件器机屏灯门窗胎油故障系统控制模块程序版本级测试里次个台闭边务面公"
    "州省市区县镇村街徽苏西"
)


def _name_patterns(d: _Dialect) -> list[str]:
    han, space, colon = f"[{HAN}]", d.cls(SPACES), d.cls(":")
    suffix = "|".join(NAME_SUFFIXES)
    surname = f"(?:{'|'.join(COMPOUND_SURNAMES)}|[{SURNAMES}])"
    given = f"{d.unless(f'{suffix}|[{_NOT_GIVEN}]')}{han}"
    name = f"{surname}{given}(?:{given})?"
    cue = f"(?P<cue>{'|'.join(NAME_CUES)})(?P<colon>{space}*{colon})?{space}*"
    # A whole Han run next to a Latin word ("owner 王芳 called", "NAME: 王芳"); the space
    # or colon on the Latin side already bounds the run there.
    lower = d.cls(string.ascii_lowercase)
    letter = d.cls(LETTERS)
    latin_before = f"(?:{lower}{d.lit('.')}?{space}|{letter}{d.lit('.')}?{space}*{colon}){space}*"
    return [
        f"{cue}(?P<v>{name})",
        f"(?P<v>{name})(?:{suffix})",
        f"{latin_before}(?P<v>{name}){d.not_before(HAN)}",
        f"{d.not_after(HAN)}(?P<v>{name}){space}+{lower}",
    ]


# --- validation (vectorised over all candidate values of one detector) -----------------


def _ascii_matrix(values: Sequence[str], width: int) -> np.ndarray:
    """Equal-length ASCII strings as an ``(n, width)`` uint8 matrix."""
    data = "".join(values).encode("ascii")
    return np.frombuffer(data, dtype=np.uint8).reshape(len(values), width)


_VIN_WEIGHTS = np.array([8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)
_VIN_VALUE = np.zeros(128, dtype=np.int64)
_VIN_VALUE[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)
_VIN_VALUE[np.frombuffer(b"ABCDEFGHJKLMNPRSTUVWXYZ", dtype=np.uint8)] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9,
]  # fmt: skip
_VIN_CHECK = np.frombuffer(b"0123456789X", dtype=np.uint8)


def _valid_vins(vins: Sequence[str]) -> np.ndarray:
    """ISO 3779: weighted transliterated sum mod 11 is the character at position 9.

    A VIN also holds a letter (its WMI, model year...): 17-digit order numbers and
    millisecond timestamps would otherwise pass the check one time in eleven.
    """
    codes = _ascii_matrix(vins, 17)
    check = _VIN_CHECK[(_VIN_VALUE[codes] @ _VIN_WEIGHTS) % 11] == codes[:, 8]
    return check & (codes >= ord("A")).any(axis=1)


_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
_PROVINCES = np.zeros(100, dtype=bool)
_PROVINCES[[11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44]] = True
_PROVINCES[[45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82]] = True
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _real_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Calendar dates from 1900-01-01 up to today."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    last_day = _MONTH_DAYS[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    today = date.today()
    ymd = year * 10_000 + month * 100 + day
    in_range = (year >= 1900) & (ymd <= today.year * 10_000 + today.month * 100 + today.day)
    return month_ok & (day >= 1) & (day <= last_day) & in_range


def _valid_resident_ids(ids: Sequence[str]) -> np.ndarray:
    """GB 11643: known province, real birth date, ISO 7064 MOD 11-2 check character."""
    codes = _ascii_matrix(ids, 18)
    digits = codes[:, :17].astype(np.int64) - ord("0")
    check = _ID_CHECK[(digits @ _ID_WEIGHTS) % 11] == codes[:, 17]
    year = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
    month, day = digits[:, 10] * 10 + digits[:, 11], digits[:, 12] * 10 + digits[:, 13]
    province = _PROVINCES[digits[:, 0] * 10 + digits[:, 1]]
    return check & province & _real_dates(year, month, day)


# Rough bounding box of China's territory, islands in the South China Sea included.
LATITUDES = (3.8, 53.6)
LONGITUDES = (73.4, 135.1)


def _valid_coordinates(pairs: Sequence[tuple[float, float, int]]) -> np.ndarray:
    """``(a, b, order)``: order 1 means a is the latitude, -1 the longitude, 0 unknown."""
    a, b, order = (np.array(column) for column in zip(*pairs, strict=True))

    def inside(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        lat_ok = (lat >= LATITUDES[0]) & (lat <= LATITUDES[1])
        return lat_ok & (lon >= LONGITUDES[0]) & (lon <= LONGITUDES[1])

    return (inside(a, b) & (order >= 0)) | (inside(b, a) & (order <= 0))


# --- keys: the canonical value of a match that validation checks ------------------------


def _value(match: re.Match[str]) -> str:
    return match["v"]


_GAPS = re.compile(f"[{SPACES}-]")


def _resident_id_key(match: re.Match[str]) -> str:
    return _GAPS.sub("", match["v"]).upper()


def _vin_key(match: re.Match[str]) -> str:
    return match["v"].upper()


def _coordinate_key(match: re.Match[str]) -> tuple[float, float, int] | None:
    groups = match.groupdict()
    hints = tuple(AXIS_WORDS.get((groups.get(g) or "").lower(), "") for g in ("ha", "hb"))
    if "S" in hints or "W" in hints:
        return None  # southern or western hemisphere: not China
    if hints[0] == "N" or hints[1] == "E":
        order = 1
    elif hints[0] == "E" or hints[1] == "N":
        order = -1
    else:
        order = 0
    a, b = _degrees(match, "a"), _degrees(match, "b")
    return None if a is None or b is None else (a, b, order)


def _degrees(match: re.Match[str], group: str) -> float | None:
    """A decimal as it is; degrees, minutes and seconds as decimal degrees (None if invalid)."""
    if match[group] is not None:
        return float(match[group])
    minutes, seconds = int(match[f"{group}_m"]), float(match[f"{group}_s"])
    if minutes >= 60 or seconds >= 60:
        return None
    return int(match[f"{group}_d"]) + minutes / 60 + seconds / 3600


def _name_key(match: re.Match[str]) -> str | None:
    groups = match.groupdict()
    # 车主于…, 客户于…, 由于…: 于 is a preposition there, not the surname Yu.
    weak_cue = groups.get("cue") in ("车主", "客户", "由") and not groups.get("colon")
    return None if weak_cue and match["v"].startswith("于") else match["v"]


# --- detectors --------------------------------------------------------------------------

_PYTHON, _RE2 = _Dialect(re2=False), _Dialect(re2=True)


@dataclass(frozen=True)
class _Detector:
    name: str
    patterns: tuple[re.Pattern[str], ...]  # exact, over folded text
    prefilter: str  # RE2 over raw text; matches wherever ``patterns`` do
    key: Callable[[re.Match[str]], Any]  # canonical value, or None to reject the match
    validate: Callable[[Sequence[Any]], np.ndarray] | None  # vectorised over keys


def _detector(
    name: str,
    spell: Callable[[_Dialect], list[str]],
    key: Callable[[re.Match[str]], Any] = _value,
    validate: Callable[[Sequence[Any]], np.ndarray] | None = None,
) -> _Detector:
    patterns = tuple(re.compile(p) for p in spell(_PYTHON))
    # RE2 needs no captures, and the same group names recur across alternatives.
    prefilter = "|".join(f"(?:{p})" for p in spell(_RE2))
    prefilter = re.sub(r"\(\?P<\w+>", "(?:", prefilter)
    return _Detector(name, patterns, prefilter, key, validate)


_DETECTORS = (
    _detector("resident_id", _resident_id_patterns, _resident_id_key, _valid_resident_ids),
    _detector("mobile", _mobile_patterns),
    _detector("plate", _plate_patterns),
    _detector("vin", _vin_patterns, _vin_key, _valid_vins),
    _detector("email", _email_patterns),
    _detector("coordinates", _coordinate_patterns, _coordinate_key, _valid_coordinates),
    _detector("name", _name_patterns, _name_key),
)
assert tuple(d.name for d in _DETECTORS) == DETECTORS
_ANY_PREFILTER = "|".join(f"(?:{d.prefilter})" for d in _DETECTORS)


def _fold(text: str) -> str:
    return text.translate(_FOLD)


def _matches(detector: _Detector, folded: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Rows and spans of the validated matches of one detector in folded texts."""
    rows: list[int] = []
    spans: list[tuple[int, int]] = []
    keys: list[Any] = []
    for row, text in enumerate(folded):
        for pattern in detector.patterns:
            for match in pattern.finditer(text):
                key = detector.key(match)
                if key is not None:
                    rows.append(row)
                    spans.append(match.span("v"))
                    keys.append(key)
    if detector.validate is None or not keys:
        return rows, spans
    valid = detector.validate(keys).tolist()
    return (
        [r for r, ok in zip(rows, valid, strict=True) if ok],
        [s for s, ok in zip(spans, valid, strict=True) if ok],
    )


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans of one detector (e.g. a cue and a suffix form) as one."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def find(text: str) -> list[Finding]:
    """Every validated finding in ``text``, ordered by position; spans index ``text``."""
    folded = [_fold(text)]
    findings = [
        Finding(detector.name, start, end)
        for detector in _DETECTORS
        for start, end in _merged(_matches(detector, folded)[1])
    ]
    return sorted(findings, key=lambda f: (f.start, f.end, DETECTORS.index(f.detector)))


# --- columns ----------------------------------------------------------------------------


def _regex_type(data_type: pa.DataType) -> pa.DataType:
    """Arrow's regex kernels read string and large_string, not string_view."""
    return pa.large_string() if pa.types.is_large_string(data_type) else pa.string()


def _distinct_candidates(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Distinct non-null values that pass the prefilter, and how many rows hold each."""
    if pa.types.is_dictionary(values.type):
        # Repeated values: count them from the indices, then prefilter each value once.
        counts = pc.value_counts(values)
        uniques = counts.field("values")  # dictionary-encoded itself
        distinct = uniques.dictionary.cast(_regex_type(uniques.type.value_type))
        distinct = distinct.take(uniques.indices)
        keep = pc.match_substring_regex(distinct, _ANY_PREFILTER).fill_null(False)
        return distinct.filter(keep), counts.field("counts").filter(keep).to_numpy()
    values = values.cast(_regex_type(values.type))
    # Mostly unique values: prefilter every row first, then count the few candidates.
    counts = pc.value_counts(pc.filter(values, pc.match_substring_regex(values, _ANY_PREFILTER)))
    return counts.field("values"), counts.field("counts").to_numpy()


def scan_array(values: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Per detector, how many rows hold at least one finding (nulls ignored)."""
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(values, type=pa.string())
    counts = dict.fromkeys(DETECTORS, 0)
    distinct, occurrences = _distinct_candidates(values)
    if len(distinct) == 0:
        return counts
    foldable = pc.match_substring_regex(distinct, _FOLDABLE).to_numpy(zero_copy_only=False)
    texts = [
        _fold(text) if fold else text
        for text, fold in zip(distinct.to_pylist(), foldable.tolist(), strict=True)
    ]
    for detector in _DETECTORS:
        # The detector's own prefilter narrows the candidates before Python sees them.
        match = pc.match_substring_regex(distinct, detector.prefilter)
        chosen = np.flatnonzero(match.to_numpy(zero_copy_only=False))
        if len(chosen) == 0:
            continue
        rows = np.unique(np.array(_matches(detector, [texts[i] for i in chosen])[0], dtype=int))
        counts[detector.name] = int(occurrences[chosen[rows]].sum())
    return counts


def _is_text(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        return _is_text(data_type.value_type)
    return (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
    )


def scan_table(table: pa.Table) -> dict[str, dict[str, int]]:
    """``scan_array`` of every string column (plain or dictionary-encoded) of ``table``."""
    return {
        field.name: scan_array(table.column(index))
        for index, field in enumerate(table.schema)
        if _is_text(field.type)
    }
