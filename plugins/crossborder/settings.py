"""Where things are and which keys to use, as one plain object the steps receive.

The Airflow side builds it from connections and variables (``airflow_glue``); tests,
the demo and the benchmark build it directly. Keys are optional here and checked where
they are needed, so a missing key fails the step that needs it with KeyUnavailable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossborder.errors import KeyUnavailable

if TYPE_CHECKING:
    from crossborder.alerts import Channels
    from crossborder.source import Source


@dataclass(frozen=True)
class Settings:
    source_root: Path
    staging_root: Path
    ledger_url: str
    us_bucket: str
    s3_client: Callable[[], Any]
    recipient_public_pem: bytes | None = None
    # Secrets stay out of repr(), so they never reach a log line or a traceback.
    signing_private_pem: bytes | None = field(default=None, repr=False)
    pseudonymization_key: bytes | None = field(default=None, repr=False)
    # Where alerts go besides the log and the ledger (Slack/SMTP in Airflow; tests capture).
    alert_channels: Channels | None = field(default=None, repr=False, compare=False)
    # The Shanghai store when it is not the folder source_root: an S3Source (connection
    # cn_source of type aws); source_root then names its China-side mirror.
    source: Source | None = None

    def require(self, name: str, *, dataset: str, day: str) -> bytes:
        value = getattr(self, name)
        if not value:
            raise KeyUnavailable(f"setting {name} is not configured", dataset=dataset, day=day)
        return value


@dataclass(frozen=True)
class ReceiverSettings:
    """The U.S. side: its own private key, the CN manifest-signing public key, its lake."""

    us_bucket: str
    s3_client: Callable[[], Any]
    lake_root: Path
    recipient_private_pem: bytes = field(repr=False)
    signing_public_pem: bytes = field(repr=False)
