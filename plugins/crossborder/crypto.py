"""Envelope encryption for the U.S. recipient and Ed25519 signatures for manifests.

Files are encrypted into the AWS Encryption SDK message format (a documented format
any SDK can decrypt without this project's code) with the key-committing suite
AES_256_GCM_HKDF_SHA512_COMMIT_KEY and 1 MiB frames. Each message's data key is
wrapped with RSA-OAEP-SHA256 under the recipient's *public* key, so the China side can
encrypt but never decrypt what it sent. Everything streams in ~1 MiB chunks: memory
stays flat whatever the file size.

Key ids are derived from the public key, so both sides compute the same id without
exchanging anything but the public key: ``rsa-sha256:<32 hex>`` / ``ed25519-sha256:...``.
Key material never appears in messages or logs.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aws_encryption_sdk import CommitmentPolicy, EncryptionSDKClient
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError, DecryptKeyError
from aws_encryption_sdk.identifiers import Algorithm, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from crossborder.digest import CHUNK
from crossborder.errors import IntegrityMismatch, KeyUnavailable

MESSAGE_FORMAT = "aws-encryption-sdk-message"
ALGORITHM = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
WRAPPING = WrappingAlgorithm.RSA_OAEP_SHA256_MGF1
FRAME_LENGTH = 1 << 20  # default 4 KiB frames are ~10x slower
KEY_PROVIDER = "crossborder"
MIN_RSA_BITS = 2048

# One data key per message: refusing more bounds the work an attacker can make us do.
_CLIENT = EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
    max_encrypted_data_keys=1,
)


@dataclass(frozen=True)
class EncryptedFile:
    plaintext_sha256: str
    plaintext_size: int
    ciphertext_sha256: str
    ciphertext_size: int
    key_id: str
    algorithm: str
    frame_length: int


@dataclass(frozen=True)
class DecryptedFile:
    plaintext_sha256: str
    plaintext_size: int
    ciphertext_sha256: str
    ciphertext_size: int
    key_id: str


# --- keys -------------------------------------------------------------------------------


def generate_recipient_keypair(bits: int = 3072) -> tuple[bytes, bytes]:
    """A fresh RSA key pair for the U.S. recipient: (private PEM PKCS8, public PEM)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _private_pem(private), _public_pem(private.public_key())


def generate_signing_keypair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 manifest-signing key pair: (private PEM PKCS8, public PEM)."""
    private = ed25519.Ed25519PrivateKey.generate()
    return _private_pem(private), _public_pem(private.public_key())


def key_id(public_pem: bytes) -> str:
    """Stable id of a public key: SHA-256 of its DER SubjectPublicKeyInfo, 128 bits shown."""
    public = _load_public(public_pem, "public key")
    prefix = "ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "rsa"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"{prefix}-sha256:{hashlib.sha256(der).hexdigest()[:32]}"


def read_key_file(path: Path, what: str) -> bytes:
    """Read a PEM file, turning any OS error into KeyUnavailable (naming the file only)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyUnavailable(f"cannot read {what} file {path}: {exc.strerror}") from None


def encryption_info(recipient_public_pem: bytes) -> dict:
    """The manifest's ``encryption`` block for messages made by :func:`encrypt_file`."""
    return {
        "format": MESSAGE_FORMAT,
        "algorithm": ALGORITHM.name,
        "frame_length": FRAME_LENGTH,
        "key_provider": KEY_PROVIDER,
        "key_id": key_id(recipient_public_pem),
        "wrapping": WRAPPING.name,
    }


def _private_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_public(pem: bytes, what: str) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise KeyUnavailable(f"{what} is not a readable PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise KeyUnavailable(f"{what} is a {type(key).__name__}, expected RSA or Ed25519")
    return key


def _load_private(pem: bytes, what: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # TypeError: the PEM is password-protected; we only take unencrypted keys.
        raise KeyUnavailable(f"{what} is not a readable, unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyUnavailable(f"{what} is a {type(key).__name__}, expected RSA or Ed25519")
    return key


def _check_rsa(key: object, what: str) -> None:
    if not isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        raise KeyUnavailable(f"{what} must be an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise KeyUnavailable(f"{what} has {key.key_size} bits, need at least {MIN_RSA_BITS}")


def _master_key(pem: bytes, kind: EncryptionKeyType, kid: str) -> RawMasterKey:
    wrapping_key = WrappingKey(
        wrapping_algorithm=WRAPPING, wrapping_key=pem, wrapping_key_type=kind
    )
    return RawMasterKey(provider_id=KEY_PROVIDER, key_id=kid.encode(), wrapping_key=wrapping_key)


# --- streaming encryption ----------------------------------------------------------------


class _HashingReader:
    """A read-only stream that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _pump(source: BinaryIO, sink: BinaryIO) -> tuple[str, int]:
    """Copy source to sink in CHUNK pieces; return (sha256 hex, size) of what was written."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        sink.write(chunk)
    return digest.hexdigest(), size


@contextmanager
def atomic_output(dst: Path) -> Iterator[BinaryIO]:
    """Write to a temp file beside dst and rename it into place only on success.

    A killed run leaves at most a ``.*.tmp`` file, never a half file under dst's name.
    """
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def encrypt_stream(source: BinaryIO, sink: BinaryIO, recipient_public_pem: bytes) -> EncryptedFile:
    """Encrypt source into sink for the holder of the recipient's private key."""
    public = _load_public(recipient_public_pem, "recipient public key")
    _check_rsa(public, "recipient public key")
    kid = key_id(recipient_public_pem)
    reader = _HashingReader(source)
    master_key = _master_key(recipient_public_pem, EncryptionKeyType.PUBLIC, kid)
    with _CLIENT.stream(
        mode="e",
        source=reader,
        key_provider=master_key,
        algorithm=ALGORITHM,
        frame_length=FRAME_LENGTH,
    ) as encryptor:
        ciphertext_sha256, ciphertext_size = _pump(encryptor, sink)
    return EncryptedFile(
        plaintext_sha256=reader.sha256.hexdigest(),
        plaintext_size=reader.size,
        ciphertext_sha256=ciphertext_sha256,
        ciphertext_size=ciphertext_size,
        key_id=kid,
        algorithm=ALGORITHM.name,
        frame_length=FRAME_LENGTH,
    )


def encrypt_file(src: Path, dst: Path, recipient_public_pem: bytes) -> EncryptedFile:
    """Encrypt the file src to dst (atomically), hashing plaintext and ciphertext."""
    with Path(src).open("rb") as source, atomic_output(dst) as sink:
        return encrypt_stream(source, sink, recipient_public_pem)


@dataclass(frozen=True)
class RecipientKey:
    """The recipient's private key, loaded and checked once for many messages."""

    key_id: str
    public_pem: bytes
    master_key: RawMasterKey = field(repr=False)


def load_recipient_key(private_pem: bytes) -> RecipientKey:
    # Loading an RSA key validates it (~0.1 s for 3072 bits): do it once per batch.
    private = _load_private(private_pem, "recipient private key")
    _check_rsa(private, "recipient private key")
    public_pem = _public_pem(private.public_key())
    kid = key_id(public_pem)
    return RecipientKey(kid, public_pem, _master_key(private_pem, EncryptionKeyType.PRIVATE, kid))


def decrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    recipient: RecipientKey | bytes,
    *,
    expected_key_id: str | None = None,
) -> DecryptedFile:
    """Decrypt an SDK message from source into sink, authenticating every frame.

    recipient is a loaded key or the private PEM. Refuses (IntegrityMismatch) a message
    not wrapped for our key (or when expected_key_id is not ours), using another algorithm
    suite, failing authentication, or with trailing bytes. The sink may hold partial
    plaintext after a failure: callers write to temp files.
    """
    if isinstance(recipient, bytes):
        recipient = load_recipient_key(recipient)
    kid = recipient.key_id
    if expected_key_id is not None and expected_key_id != kid:
        raise IntegrityMismatch(f"ciphertext is for key id {expected_key_id}, ours is {kid}")
    reader = _HashingReader(source)
    decryptor = _CLIENT.stream(mode="d", source=reader, key_provider=recipient.master_key)
    try:
        if decryptor.header.algorithm is not ALGORITHM:
            raise IntegrityMismatch(
                f"message uses algorithm {decryptor.header.algorithm.name}, "
                f"expected {ALGORITHM.name}"
            )
        plaintext_sha256, plaintext_size = _pump(decryptor, sink)
        decryptor.close()  # the SDK checks here that the message ended properly
    except DecryptKeyError:
        raise IntegrityMismatch(
            f"message carries no data key for our key id {kid} (encrypted for someone else?)"
        ) from None
    except (AWSEncryptionSDKClientError, InvalidTag) as exc:
        detail = str(exc) or type(exc).__name__
        raise IntegrityMismatch(f"message does not decrypt/authenticate: {detail}") from None
    finally:
        # The SDK's close() refuses (and logs a traceback) before the footer was read;
        # after a failure we only need the stream marked closed.
        io.IOBase.close(decryptor)
    if reader.read(1):
        raise IntegrityMismatch("unexpected bytes after the end of the encrypted message")
    return DecryptedFile(
        plaintext_sha256=plaintext_sha256,
        plaintext_size=plaintext_size,
        ciphertext_sha256=reader.sha256.hexdigest(),
        ciphertext_size=reader.size,
        key_id=kid,
    )


def decrypt_file(
    src: Path, dst: Path, recipient: RecipientKey | bytes, *, expected_key_id: str | None = None
) -> DecryptedFile:
    """Decrypt the file src to dst; dst only appears if the whole message authenticated."""
    with Path(src).open("rb") as source, atomic_output(dst) as sink:
        return decrypt_stream(source, sink, recipient, expected_key_id=expected_key_id)


# --- manifest signatures ----------------------------------------------------------------


def sign(data: bytes, private_pem: bytes) -> bytes:
    """Ed25519 signature (64 raw bytes) of data."""
    key = _load_private(private_pem, "signing private key")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyUnavailable("signing private key must be an Ed25519 key")
    return key.sign(data)


def verify_signature(data: bytes, signature: bytes, public_pem: bytes) -> None:
    """Raise IntegrityMismatch unless signature is a valid Ed25519 signature of data."""
    key = _load_public(public_pem, "signing public key")
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyUnavailable("signing public key must be an Ed25519 key")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise IntegrityMismatch(
            f"signature does not match the signed bytes under signing key {key_id(public_pem)}"
        ) from None
