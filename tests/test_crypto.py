"""Envelope encryption in the AWS Encryption SDK format, and manifest signatures."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey

from crossborder import crypto
from crossborder.errors import IntegrityMismatch, KeyUnavailable

MiB = 1 << 20


@pytest.fixture
def plaintext(tmp_path: Path) -> Path:
    path = tmp_path / "part-00000.parquet"
    path.write_bytes(os.urandom(3 * MiB + 123))  # several frames plus a short last one
    return path


@pytest.fixture
def encrypted(tmp_path: Path, plaintext: Path, keys) -> tuple[Path, crypto.EncryptedFile]:
    dst = tmp_path / "part-00000.parquet.encrypted"
    return dst, crypto.encrypt_file(plaintext, dst, keys.recipient_public)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_reports_true_sizes_and_hashes(tmp_path, plaintext, encrypted, keys):
    ciphertext, info = encrypted
    assert info.plaintext_sha256 == _sha256(plaintext)
    assert info.plaintext_size == plaintext.stat().st_size
    assert info.ciphertext_sha256 == _sha256(ciphertext)
    assert info.ciphertext_size == ciphertext.stat().st_size
    assert info.key_id == crypto.key_id(keys.recipient_public)
    assert (info.algorithm, info.frame_length) == ("AES_256_GCM_HKDF_SHA512_COMMIT_KEY", MiB)
    assert plaintext.read_bytes()[:4096] not in ciphertext.read_bytes()

    out = tmp_path / "decrypted.parquet"
    result = crypto.decrypt_file(
        ciphertext, out, keys.recipient_private, expected_key_id=info.key_id
    )
    assert out.read_bytes() == plaintext.read_bytes()
    assert (result.plaintext_sha256, result.ciphertext_sha256) == (
        info.plaintext_sha256,
        info.ciphertext_sha256,
    )


def test_message_is_standard_sdk_format(encrypted, plaintext, keys):
    """A receiver needs only the SDK and the private key, not this project's code."""
    ciphertext, info = encrypted
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=aws_encryption_sdk.CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    master_key = RawMasterKey(
        provider_id="crossborder",
        key_id=info.key_id.encode(),
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.RSA_OAEP_SHA256_MGF1,
            wrapping_key=keys.recipient_private,
            wrapping_key_type=EncryptionKeyType.PRIVATE,
        ),
    )
    decrypted, header = client.decrypt(source=ciphertext.read_bytes(), key_provider=master_key)
    assert decrypted == plaintext.read_bytes()
    assert header.algorithm.name == "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
    assert header.frame_length == MiB
    [data_key] = header.encrypted_data_keys
    assert data_key.key_provider.provider_id == "crossborder"
    assert data_key.key_provider.key_info == info.key_id.encode()


def test_key_ids_are_stable_and_match_between_private_and_public(keys):
    rsa_id = crypto.key_id(keys.recipient_public)
    assert rsa_id.startswith("rsa-sha256:") and len(rsa_id) == len("rsa-sha256:") + 32
    assert crypto.load_recipient_key(keys.recipient_private).key_id == rsa_id
    assert crypto.key_id(keys.signing_public).startswith("ed25519-sha256:")
    _, other_public = crypto.generate_recipient_keypair(2048)
    assert crypto.key_id(other_public) != rsa_id


def test_wrong_recipient_key_is_refused(tmp_path, encrypted):
    ciphertext, info = encrypted
    other_private, _ = crypto.generate_recipient_keypair(2048)
    out = tmp_path / "out.parquet"
    with pytest.raises(IntegrityMismatch, match="no data key for our key id rsa-sha256:"):
        crypto.decrypt_file(ciphertext, out, other_private)
    with pytest.raises(IntegrityMismatch, match=f"ciphertext is for key id {info.key_id}"):
        crypto.decrypt_file(ciphertext, out, other_private, expected_key_id=info.key_id)
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: b[:2000] + bytes([b[2000] ^ 1]) + b[2001:], id="flipped-bit"),
        pytest.param(lambda b: b[:-100], id="truncated"),
        pytest.param(lambda b: b + b"\0", id="trailing-bytes"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_tampered_ciphertext_is_refused_and_leaves_no_output(tmp_path, encrypted, keys, tamper):
    ciphertext, _ = encrypted
    bad = tmp_path / "bad.encrypted"
    bad.write_bytes(tamper(ciphertext.read_bytes()))
    out = tmp_path / "out.parquet"
    with pytest.raises(IntegrityMismatch):
        crypto.decrypt_file(bad, out, keys.recipient_private)
    assert not out.exists()
    assert list(tmp_path.glob(".*.tmp")) == []


def test_atomic_output_never_leaves_a_half_file(tmp_path):
    dst = tmp_path / "x.encrypted"

    class Killed(Exception):
        pass

    with pytest.raises(Killed), crypto.atomic_output(dst) as out:
        out.write(b"half")
        raise Killed
    assert list(tmp_path.iterdir()) == []


def test_signatures(keys):
    data = b'{"manifest_version": 1}\n'
    signature = crypto.sign(data, keys.signing_private)
    assert signature == crypto.sign(data, keys.signing_private)  # Ed25519 is deterministic
    crypto.verify_signature(data, signature, keys.signing_public)

    _, other_public = crypto.generate_signing_keypair()
    for bad_data, bad_sig, public in [
        (data + b" ", signature, keys.signing_public),
        (data, signature[:-1] + bytes([signature[-1] ^ 1]), keys.signing_public),
        (data, b"", keys.signing_public),
        (data, signature, other_public),
    ]:
        with pytest.raises(IntegrityMismatch, match="signature does not match"):
            crypto.verify_signature(bad_data, bad_sig, public)


def test_unusable_keys_raise_key_unavailable_without_showing_key_material(tmp_path, keys):
    _, small_public = crypto.generate_recipient_keypair(1024)
    src = tmp_path / "p"
    src.write_bytes(b"x")
    cases = [
        lambda: crypto.key_id(b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"),
        lambda: crypto.encrypt_file(src, tmp_path / "c", keys.signing_public),
        lambda: crypto.encrypt_file(src, tmp_path / "c", small_public),
        lambda: crypto.decrypt_file(src, tmp_path / "d", keys.signing_private),
        lambda: crypto.sign(b"x", keys.recipient_private),
        lambda: crypto.sign(b"x", b"garbage"),
        lambda: crypto.verify_signature(b"x", b"", keys.recipient_public),
        lambda: crypto.read_key_file(tmp_path / "missing.pem", "recipient private key"),
    ]
    for case in cases:
        with pytest.raises(KeyUnavailable) as caught:
            case()
        assert "BEGIN" not in str(caught.value) and "not a key" not in str(caught.value)
    assert "1024 bits" in _message(lambda: crypto.encrypt_file(src, tmp_path / "c", small_public))
    assert not (tmp_path / "c").exists()


def _message(call) -> str:
    with pytest.raises(KeyUnavailable) as caught:
        call()
    return str(caught.value)


def _peak_bytes(call, *args) -> int:
    tracemalloc.start()
    try:
        call(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_files_grow(tmp_path, keys):
    """Peak Python allocations for 64 MiB are those for 8 MiB: the loop streams."""
    peaks = {}
    for size in (8 * MiB, 64 * MiB):
        src, enc, dec = (tmp_path / f"{name}-{size}" for name in ("plain", "enc", "dec"))
        with src.open("wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        peaks[size] = (
            _peak_bytes(crypto.encrypt_file, src, enc, keys.recipient_public),
            _peak_bytes(crypto.decrypt_file, enc, dec, keys.recipient_private),
        )
        for path in (src, enc, dec):
            path.unlink()
    small, large = peaks[8 * MiB], peaks[64 * MiB]
    for small_peak, large_peak in zip(small, large, strict=True):
        assert large_peak < 16 * MiB  # a quarter of the file: nothing holds it whole
        assert large_peak < small_peak + 4 * MiB


def test_stream_variant_works_on_file_objects(keys):
    source, sink = io.BytesIO(b"abc" * 1000), io.BytesIO()
    info = crypto.encrypt_stream(source, sink, keys.recipient_public)
    out = io.BytesIO()
    result = crypto.decrypt_stream(io.BytesIO(sink.getvalue()), out, keys.recipient_private)
    assert out.getvalue() == b"abc" * 1000
    assert result.ciphertext_sha256 == info.ciphertext_sha256
