"""Typed artifacts: every JSON file cpcdrl writes is a pydantic model, read back by the same model.

Each artifact names its ``KIND`` (the document's ``kind`` field), its
``VERSION`` (``schema_version``) and ``REMAKE``, the command that writes it,
so a file from an older, unreadable version gets one line saying how to make
a new one. Where an older version is still readable, the artifact's
``upgrade`` (the loader, and the only place that knows old keys) brings the
document up to date before validation. ``docs/schemas/`` holds each one's
JSON Schema (``deploy/schemas.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cpcdrl_deploy.core.errors import CpcdrlError
from cpcdrl_deploy.core.fileio import atomic_write_json, existing, read_json


class Part(BaseModel):
    """A typed part of an artifact: unknown keys are errors (a typo in a hand-edited file is caught)."""

    model_config = ConfigDict(extra="forbid")


class StrictPart(Part):
    """A part people edit by hand: no coercion ("3" is not a cut, 1.5 not a seed)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Artifact(Part):
    """A versioned JSON document. Subclasses set KIND, VERSION and REMAKE and declare their fields."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    REMAKE: ClassVar[str] = ""  # the command that writes a current one
    OLDEST: ClassVar[int] = 1  # the oldest schema_version ``upgrade`` still reads

    kind: str = ""
    schema_version: int = 0

    def model_post_init(self, context: Any, /) -> None:
        # written files always say what they are and which version wrote them
        if self.KIND:
            self.kind = self.KIND
        self.schema_version = self.VERSION

    @classmethod
    def check_kind(cls, kind: object) -> bool:
        """Whether a document's ``kind`` is this artifact's (a file from before ``kind`` was written has none)."""
        return kind in (cls.KIND, None)

    @classmethod
    def upgrade(cls, d: dict[str, Any], version: int) -> dict[str, Any]:
        """Bring a document of an older readable ``version`` up to date (keys renamed, defaults that changed)."""
        return d

    @classmethod
    def from_data(cls, d: object, where: str = "") -> Any:
        """Type and validate a document, or raise CpcdrlError: one line naming the first bad field."""
        where = where or cls.KIND
        if not isinstance(d, dict):
            raise CpcdrlError(f"{where}: not a {cls.KIND} document (expected a JSON object)")
        # files from before kind and schema_version were written are version 0
        kind, version = d.get("kind"), d.get("schema_version", 0)
        if not cls.check_kind(kind):
            raise CpcdrlError(f"{where}: a {kind!r} document, not a {cls.KIND} one")
        if not isinstance(version, int) or not cls.OLDEST <= version <= cls.VERSION:
            hint = f"; remake it with: {cls.REMAKE}" if cls.REMAKE else ""
            raise CpcdrlError(
                f"{where}: {cls.KIND} schema_version {version!r} is not readable by this cpcdrl"
                f" (it reads {cls.OLDEST}..{cls.VERSION}){hint}"
            )
        try:
            return cls.model_validate(cls.upgrade(dict(d), version))
        except ValidationError as exc:
            raise CpcdrlError(f"{where}: {first_error(exc)}") from None

    @classmethod
    def load(cls, path: str | Path, what: str = "") -> Any:
        """The artifact at ``path`` (or its gzipped sibling), or one error line."""
        what = what or cls.KIND
        p = existing(path)
        if p is None:
            raise CpcdrlError(f"{what} not found: {path}")
        try:
            d = read_json(p)
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise CpcdrlError(f"cannot read {what} {p}: {exc}") from None
        return cls.from_data(d, str(p))

    def to_data(self) -> dict[str, Any]:
        """The document as JSON data (what ``save`` writes and ``load`` reads back)."""
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_data())


def first_error(exc: ValidationError) -> str:
    """The first validation error as ``field 'a.b' <why>``."""
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    msg = str(e["msg"]).removeprefix("Value error, ")  # our validators' own words
    if e["type"] == "missing":
        msg = "is missing"
    elif e["type"] == "extra_forbidden":
        msg = "is not a known field"
    if not loc:  # a check across fields names its field itself
        return msg
    return f"field {loc!r} {msg[0].lower() + msg[1:] if msg else msg}"
