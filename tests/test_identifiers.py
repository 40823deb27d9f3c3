"""China-specific identifiers: published check-digit examples and generated values."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pytest

from crossborder import identifiers as ids


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- VIN ---------------------------------------------------------------------------


def test_published_vin_example_is_valid_with_check_digit_x():
    assert ids.vin_check_digit("1M8GDM9AXKP042788") == "X"
    assert ids.is_valid_vin("1M8GDM9AXKP042788")
    assert ids.is_valid_vin("11111111111111111")  # the classic all-ones example


def test_vin_validation_ignores_case():
    assert ids.is_valid_vin("1m8gdm9axkp042788")


@pytest.mark.parametrize(
    "vin",
    [
        "1M8GDM9A1KP042788",  # wrong check digit
        "1M8GDM9AXKP04278",  # 16 characters
        "1M8GDM9AXKP0427880",  # 18 characters
        "IM8GDM9AXKP042788",  # I is never used
        "1M8GDM9AXKP0427O8",  # O is never used
    ],
)
def test_vin_with_wrong_check_digit_length_or_letters_is_invalid(vin):
    assert not ids.is_valid_vin(vin)


def test_vin_check_digit_refuses_non_vins():
    with pytest.raises(ValueError):
        ids.vin_check_digit("NOT-A-VIN")


def test_every_generated_vin_passes_the_check_digit_and_has_a_chinese_wmi():
    vins = ids.random_vins(rng(), 5_000)
    assert all(ids.is_valid_vin(v) for v in vins)
    assert {v[:3] for v in vins} <= set(ids.CHINESE_WMIS)
    assert len({v[8] for v in vins}) == 11  # every check character occurs, 'X' included


def test_distinct_serials_give_distinct_vins():
    vins = ids.random_vins(rng(), 20_000, serials=np.arange(20_000))
    assert len(set(vins)) == 20_000
    assert vins[42].endswith("000042")


# --- Resident ID ---------------------------------------------------------------------


def test_published_resident_id_example_is_valid():
    assert ids.resident_id_check_char("11010519491231002") == "X"
    assert ids.is_valid_resident_id("11010519491231002X")
    assert ids.is_valid_resident_id("11010519491231002x")


@pytest.mark.parametrize(
    "value",
    [
        "110105194912310021",  # wrong check character
        "11010519490231002X",  # 31 February
        "99010519491231002X",  # no such province
        "11010519491231002",  # 17 characters
        "1101051949123100XX",
    ],
)
def test_resident_id_with_bad_check_date_region_or_length_is_invalid(value):
    assert not ids.is_valid_resident_id(value)


def test_every_generated_resident_id_is_valid_and_most_are_from_shanghai():
    values = ids.random_resident_ids(rng(), 20_000)
    assert all(ids.is_valid_resident_id(v) for v in values)
    assert 0.65 < np.mean([v.startswith("310") for v in values]) < 0.75
    assert 0.06 < np.mean([v.endswith("X") for v in values]) < 0.12  # about 1 in 11
    births = {int(v[6:10]) for v in values}
    assert min(births) >= 1950 and max(births) <= 2006


# --- Mobile ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "13812345678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "86 13812345678",
        "138-1234-5678",
        "0086 13812345678",
    ],
)
def test_mobile_accepts_country_prefix_spaces_and_dashes(value):
    assert ids.is_valid_mobile(value)
    assert ids.normalize_mobile(value) == "13812345678"


@pytest.mark.parametrize(
    "value", ["12812345678", "1381234567", "138123456789", "+1 138 1234 5678", "1381234567a"]
)
def test_mobile_rejects_wrong_segment_length_or_prefix(value):
    assert not ids.is_valid_mobile(value)


def test_every_generated_mobile_is_a_bare_valid_number():
    values = ids.random_mobiles(rng(), 5_000)
    assert all(re.fullmatch(r"1[3-9]\d{9}", v) for v in values)


# --- Plates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plate",
    [
        "沪A12345",
        "沪B5C123",
        "沪AD12345",
        "沪AFA1234",
        "沪A·D12345",
        "沪A12345D",
        "苏E·5B123",
        "粤BD12345",
    ],
)
def test_ordinary_and_new_energy_plates_are_valid(plate):
    assert ids.is_valid_plate(plate)


@pytest.mark.parametrize(
    "plate",
    [
        "沪AI2345",
        "沪A1234",
        "沪A123456",
        "沪AD1234X",
        "XA12345",
        "沪1A2345",
        "沪A··12345",
        "沪AD1A23B",
    ],
)
def test_malformed_plates_are_invalid(plate):
    assert not ids.is_valid_plate(plate)


def test_generated_plates_are_valid_mostly_shanghai_with_new_energy_and_dots():
    plates = ids.random_plates(rng(), 5_000, new_energy_share=0.4, dot_share=0.3)
    assert all(ids.is_valid_plate(p) for p in plates)
    assert np.mean([p.startswith("沪") for p in plates]) > 0.7
    undotted = [p.replace("·", "") for p in plates]
    assert 0.35 < np.mean([len(p) == 8 for p in undotted]) < 0.45
    assert 0.25 < np.mean(["·" in p for p in plates]) < 0.35


# --- Names, e-mail, addresses -------------------------------------------------------------


def test_generated_names_are_a_chinese_surname_and_given_name():
    names = ids.random_names(rng(), 2_000)
    assert all(re.fullmatch(r"[\u4e00-\u9fff]{2,4}", n) for n in names)
    assert len(set(names)) > 1_000


def test_generated_emails_and_addresses_look_real():
    emails = ids.random_emails(rng(), 1_000)
    assert all(re.fullmatch(r"[a-z0-9._]+@[a-z0-9]+\.com", e) for e in emails)
    addresses = ids.random_shanghai_addresses(rng(), 1_000)
    assert all(re.fullmatch(r"上海市\w+区\w+路?\d+弄\d+号\d+室", a) for a in addresses)


def test_generators_are_deterministic_for_a_seed():
    for generate in (ids.random_vins, ids.random_resident_ids, ids.random_plates, ids.random_names):
        assert list(generate(rng(5), 50)) == list(generate(rng(5), 50))
        assert list(generate(rng(5), 50)) != list(generate(rng(6), 50))


def test_resident_id_birth_dates_respect_the_requested_range():
    window = (date(2000, 2, 28), date(2000, 3, 1))
    values = ids.random_resident_ids(rng(), 500, born_between=window)
    assert {v[6:14] for v in values} == {"20000228", "20000229", "20000301"}
