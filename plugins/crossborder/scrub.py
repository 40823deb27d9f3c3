"""The ``scrub_text`` transform: replace personal information in free text by placeholders.

Technician notes may hide phone numbers, resident IDs, plates, VINs, e-mail addresses,
coordinates and names. Each one found becomes a typed placeholder (``[PHONE]``...).

Matching runs on a copy of the text in which full-width forms (common with Chinese input
methods) are mapped to ASCII one character for one character, so a match's positions
are also its positions in the original text, where the replacement happens.

This module must not import ``crossborder.pii``: that module re-scans our output with
its own detectors, and shared code would mean shared blind spots.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossborder.identifiers import (
    PLATE_DOTS,
    PROVINCE_ABBREVIATIONS,
    is_valid_resident_id,
    is_valid_vin,
)

PLACEHOLDERS: dict[str, str] = {
    "resident_id": "[ID]",
    "mobile": "[PHONE]",
    "plate": "[PLATE]",
    "vin": "[VIN]",
    "email": "[EMAIL]",
    "coordinates": "[COORD]",
    "name": "[NAME]",
}

# Full-width ASCII (U+FF01..U+FF5E) to ASCII, and tabs, ideographic, no-break and thin
# spaces to a plain space: one character for one, so positions do not move.
_TO_ASCII = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | dict.fromkeys(
    [0x09, 0x3000, 0x00A0, 0x202F, 0x205F, *range(0x2000, 0x200B)], ord(" ")
)

# --- detectors (on the ASCII-mapped text) ---------------------------------------------

_HAN = "\u4e00-\u9fff"
_START = "(?<![0-9A-Za-z])"  # identifiers are whole tokens: Han and punctuation delimit
_END = "(?![0-9A-Za-z])"

# China spans about 4-54°N (South China Sea islands included) and 73-135°E. A position
# is written in decimal degrees with at least 3 decimals (31.2304), or in degrees, minutes
# and seconds (31°13'49").
_LAT = "(?:[3-9]|[1-4][0-9]|5[0-3])"
_LON = "(?:7[3-9]|[89][0-9]|1[0-3][0-9])"
_SIXTIETHS = r"[0-5]?[0-9](?:\.[0-9]+)?"  # minutes or seconds
# Minute and second marks: ASCII, primes, and the curly quotes Chinese input methods type.
_DMS = rf"""° *{_SIXTIETHS} *['′’](?: *{_SIXTIETHS} *["″”])?"""


def _axis(degrees: str, hemispheres: str, words: str) -> str:
    """31.2304, N31.2304, 北纬31.2304, lat=31.2304, 31.2304°N, 31.2304 N, 31°13'49"N."""
    before = f"(?:(?:[{hemispheres}]|{words}) *[:=]? *)?"
    return rf"{before}{degrees}(?:\.[0-9]{{3,}}(?![0-9])(?: ?°)?|{_DMS})(?: ?[{hemispheres}])?"


_SEPARATOR = " *[,;&、]? *"  # full-width commas and spaces are ASCII by now
_LATITUDE = _axis(_LAT, "NSns", "北纬|纬度|(?i:latitude|lat)")
_LONGITUDE = _axis(_LON, "EWew", "东经|经度|(?i:longitude|long|lng|lon)")
_PAIR = rf"(?:{_LATITUDE}{_SEPARATOR}{_LONGITUDE}|{_LONGITUDE}{_SEPARATOR}{_LATITUDE})"
_VIN_CHARS = "0-9A-HJ-NPR-Za-hj-npr-z"  # no I, O, Q
_PLATE_LETTER = "A-HJ-NP-Za-hj-np-z"  # no I, O
_GAPS = " ./-"  # between the groups of a phone number or resident ID: 138.1234.5678
_GAP = f"[{_GAPS}]?"


def _token_start(first: str, *labels: str) -> str:
    """Where an identifier starting with a ``first`` character may start: at a token start,
    or right after a glued label (Tel138…). Checking ``first`` before looking back is faster.
    """
    after = "|".join([_START, *(f"(?<=(?i:{label}))" for label in labels)])
    return f"(?=[{first}])(?:{after})"


# Frequent single-character surnames (Ministry of Public Security ranking), then compounds.
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许邓韩冯曹彭曾肖田董潘袁蔡蒋余"
    "于杜叶程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付傅方邹熊白孟秦邱侯江尹薛闫段"
    "雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严欧莫孔向常汤康易乔赖文施洪辛柯庄聂章鲁岳翟殷詹"
    "申耿关兰焦俞左柳甘祝包宁符舒阮纪梅童凌毕单季裴霍涂苗谷盛曲翁冉骆蓝游靳管柴鲍"
    "温牛樊葛邢安齐伍庞颜倪尚成萧阎"
)
_COMPOUND_SURNAMES = "欧阳|司马|上官|诸葛|皇甫|尉迟|公孙|慕容|令狐"
_SURNAME = f"(?:{_COMPOUND_SURNAMES}|[{_SURNAMES}])"
_HONORIFIC = "先生|女士|小姐"
# After a cue the name runs into the sentence (客户王芳反映): a given name does not
# start with an honorific, with these function words and verbs, or with the second
# character of a workshop word that starts like a surname (温度, 安装, 成功).
_NOT_GIVEN = "的了在于已和与及对反来去送称说电手要投到将把被从也都就请等向是有今昨度装功"
_GIVEN = f"(?:(?!{_HONORIFIC}|[{_NOT_GIVEN}])[{_HAN}])"
_HAN_NAME = f"{_SURNAME}[{_HAN}]{{1,2}}"  # a whole Han run that is a name: 王芳, 欧阳子涵

# (kind, pattern, validator), in priority order: where two patterns match at the same
# place the earlier wins (e-mail before the numbers in its local part, coordinates before
# phones and IDs, IDs before phones). ``(?P<value>...)`` marks the part to replace when
# the match also holds context (a cue word before a name).
_DETECTORS: tuple[tuple[str, str, Callable[[str], bool] | None], ...] = (
    (
        "email",
        rf"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{{2,}}{_END}",
        None,
    ),
    (
        "coordinates",  # the look-ahead lists every possible first character: a quick no
        rf"(?=[0-9(NSEWnsewLl北纬东经])(?<![0-9A-Za-z.])(?:\( *{_PAIR} *\)|{_PAIR}){_END}",
        None,
    ),
    (
        "resident_id",  # 18 characters, or 6-8-4 groups; "ID" may be glued to it
        rf"{_token_start('1-8', 'ID')}[1-8][0-9]{{5}}{_GAP}[0-9]{{8}}{_GAP}"
        rf"[0-9]{{3}}[0-9Xx]{_END}",
        lambda value: is_valid_resident_id(re.sub(f"[{_GAPS}]", "", value)),
    ),
    (
        "vin",  # "VIN" glued to the number (VINLSV...) is common in Chinese notes
        rf"{_token_start(_VIN_CHARS, 'VIN')}[{_VIN_CHARS}]{{17}}{_END}",
        is_valid_vin,
    ),
    (
        "mobile",  # 3-4-4 groups, with or without +86; "Tel" may be glued to it
        rf"{_token_start('(+018', 'TEL', 'PHONE', 'MOBILE')}"
        rf"(?:(?:\(\+86\)|(?:\+|00)?86){_GAP})?1[3-9][0-9]{_GAP}[0-9]{{4}}{_GAP}[0-9]{{4}}{_END}",
        None,
    ),
    (
        "plate",  # new-energy (8 characters) first, then ordinary plates; 沪A12345, 沪 A12345
        rf"[{PROVINCE_ABBREVIATIONS}] ?[{_PLATE_LETTER}][{PLATE_DOTS} ]?"
        rf"(?:[DFdf][{_PLATE_LETTER}0-9][0-9]{{4}}|[0-9]{{5}}[DFdf]|[{_PLATE_LETTER}0-9]{{5}}){_END}",
        None,
    ),
    (
        "name",  # after a cue word: 联系人：王芳, 车主王芳先生
        rf"(?:联系人|车主|客户|姓名|由(?!于)) *:? *(?P<value>{_SURNAME}{_GIVEN}{{1,2}})",
        None,
    ),
    ("name", rf"(?P<value>{_SURNAME}{_GIVEN}{{1,2}})(?={_HONORIFIC})", None),  # keep 先生
    (
        "name",  # a short Han run after Latin text: "owner 王芳", "Mr. 王芳", "NAME: 王芳"
        rf"(?<=[A-Za-z])(?:(?<=[a-z])[.,]? +|\.? *: *)(?P<value>{_HAN_NAME})(?![{_HAN}])",
        None,
    ),
    ("name", rf"(?<![{_HAN}])(?P<value>{_HAN_NAME})(?= +[a-z])", None),  # "王芳 called"
)
# One scan per text: alternative i is group k{i}; the part it replaces is group v{i} if
# the pattern marks one, else the whole of k{i}.
_DETECT = re.compile(
    "|".join(
        f"(?P<k{i}>{pattern.replace('(?P<value>', f'(?P<v{i}>')})"
        for i, (_, pattern, _) in enumerate(_DETECTORS)
    )
)
_REPLACED_GROUP = [
    f"v{i}" if f"v{i}" in _DETECT.groupindex else f"k{i}" for i in range(len(_DETECTORS))
]

# A cheap superset of the detectors in RE2 syntax for pyarrow, on the raw text (full-width
# forms included): texts that fail it cannot hold a match and skip the Python pass.
_D = "[0-9０-９]"
_ALNUM = "[0-9A-Za-z０-９Ａ-Ｚａ-ｚ]"
_SPACE = r"[\pZ\t]"  # every character that maps to a space
_FIRST = _SURNAMES + "".join(name[0] for name in _COMPOUND_SURNAMES.split("|"))
_PREFILTER = "|".join(
    [
        "[@＠]",
        f"{_D}{{2}}[.．]{_D}{{3}}",  # coordinates in decimal degrees
        f"{_D}°",  # coordinates in degrees, minutes and seconds
        f"{_D}{{6}}.?{_D}{{8}}",  # resident ID
        f"[1１][3-9３-９]{_D}.?{_D}{{4}}",  # mobile
        f"{_ALNUM}{{17}}",  # VIN
        rf"[{PROVINCE_ABBREVIATIONS}]{_SPACE}?[A-Za-zＡ-Ｚａ-ｚ]",  # plate
        rf"(?:联系人|车主|客户|姓名|由)[\pZ\t:：]*[{_FIRST}]",  # cued name
        _HONORIFIC,
        rf"[A-Za-zＡ-Ｚａ-ｚ][.:,．：，\pZ\t]+[{_FIRST}]",  # name after Latin text
        rf"[{_FIRST}][{_HAN}]{{1,3}}{_SPACE}+[a-zａ-ｚ]",  # name before Latin text
    ]
)


def scrub(text: str) -> tuple[str, Counter[str]]:
    """The text with each identifier replaced by its placeholder, and counts per kind."""
    counts: Counter[str] = Counter()
    pieces: list[str] = []
    done = 0
    for match in _DETECT.finditer(text.translate(_TO_ASCII)):
        index = int(match.lastgroup[1:])  # type: ignore[index]  # the outer group closes last
        kind, _, valid = _DETECTORS[index]
        group = _REPLACED_GROUP[index]
        if valid is not None and not valid(match[group]):
            continue  # shaped like an identifier, but the check digit says it is not one
        start, end = match.span(group)
        pieces += (text[done:start], PLACEHOLDERS[kind])
        done = end
        counts[kind] += 1
    if not pieces:
        return text, counts
    pieces.append(text[done:])
    return "".join(pieces), counts


def scrub_array(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, Counter[str]]:
    """Scrub a string column; nulls stay null, rows keep their order.

    Each distinct value is scrubbed once, and only if the RE2 prefilter finds a candidate
    in it; counts are per row (a value held by three rows counts three times). Dictionary
    input gives dictionary output (same indices), anything else a plain string array.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.unify_dictionaries() if pa.types.is_dictionary(values.type) else values
        values = values.combine_chunks()
    encoded = values if pa.types.is_dictionary(values.type) else values.dictionary_encode()
    dictionary, indices = encoded.dictionary, encoded.indices
    candidates = pc.fill_null(pc.match_substring_regex(dictionary, _PREFILTER), False)
    results = [scrub(text) for text in dictionary.filter(candidates).to_pylist()]
    scrubbed = pc.replace_with_mask(
        dictionary, candidates, pa.array([text for text, _ in results], dictionary.type)
    )
    rows_per_value = np.bincount(indices.drop_null().to_numpy(), minlength=len(dictionary))
    counts: Counter[str] = Counter()
    for (_, found), rows in zip(
        results, rows_per_value[candidates.to_numpy(zero_copy_only=False)], strict=True
    ):
        for kind, n in found.items():
            counts[kind] += n * int(rows)
    if encoded is values:
        return pa.DictionaryArray.from_arrays(indices, scrubbed), counts
    return scrubbed.take(indices), counts
