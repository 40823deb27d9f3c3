"""Typed errors: each names the dataset, the Shanghai day, the file and what is wrong.

Every error type maps to one runbook entry, so on-call can act on the type alone.
"""

from __future__ import annotations


class CrossborderError(Exception):
    """Base error of the export pipeline; the message is meant for people, not parsers."""

    kind = "error"
    # Retrying cannot fix bad data, a bad policy or a failed check; only I/O may be transient.
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None = None,
        day: str | None = None,
        file: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.day = day
        self.file = file
        self.detail = message
        where = ", ".join(
            part
            for part in (
                f"dataset {dataset}" if dataset else "",
                f"day {day}" if day else "",
                f"file {file}" if file else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self) -> tuple:
        # Keyword fields and attributes (e.g. ``result``) survive pickling, so an error
        # raised in a per-file worker process reaches the step as it was raised.
        fields = (self.dataset, self.day, self.file)
        return (_rebuild, (type(self), self.detail, fields, self.__dict__))


def _rebuild(
    cls: type[CrossborderError], detail: str, fields: tuple, attributes: dict
) -> CrossborderError:
    dataset, day, file = fields
    error = cls(detail, dataset=dataset, day=day, file=file)
    error.__dict__.update(attributes)
    return error


class PartitionLate(CrossborderError):
    kind = "partition_late"


class PartitionInvalid(CrossborderError):
    """The source partition is unreadable or not what the contract says."""

    kind = "partition_invalid"


class QualityFailed(CrossborderError):
    kind = "quality_failed"
    result: dict | None = None  # the suite's summary: failed expectations, counts, samples


class AnonymizationResidue(CrossborderError):
    """The verification found personal information left in what would be exported."""

    kind = "anonymization_residue"
    result: dict | None = None  # the verification summary: counts per column and detector


class PolicyInvalid(CrossborderError):
    kind = "policy_invalid"


class ExportRefused(CrossborderError):
    """An upload was asked for a partition whose route does not allow it."""

    kind = "export_refused"


class UploadFailed(CrossborderError):
    kind = "upload_failed"
    retryable = True


class IntegrityMismatch(CrossborderError):
    """A signature, size or checksum does not match what the manifest vouches for."""

    kind = "integrity_mismatch"


class KeyUnavailable(CrossborderError):
    kind = "key_unavailable"


class RulesInvalid(PolicyInvalid):
    """The export rules file (rules/export_rules.yaml) is missing or malformed."""

    kind = "rules_invalid"
