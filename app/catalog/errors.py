from __future__ import annotations

from app.errors import AppError, NotFound, PayloadTooLarge, Unprocessable


class ModelNotFound(NotFound):
    type = "model_not_found"


class VersionExists(AppError):
    """Versions are immutable: the same name and version is never uploaded twice."""

    status_code = 409
    type = "version_exists"


class ArchiveTooLarge(PayloadTooLarge):
    type = "archive_too_large"


class ArchiveInvalid(Unprocessable):
    """The archive, manifest or eval data failed validation; ``details.code`` says which check."""

    type = "invalid_archive"
