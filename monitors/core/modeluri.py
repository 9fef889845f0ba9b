"""``models:/NAME@ALIAS`` and ``models:/NAME/VERSION``: the one parser of registry model URIs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitors.config import split_list

_URI = re.compile(r"^(?:models:/)?(?P<name>[^/@\s]+)(?:@(?P<alias>[^/\s]+)|/(?P<version>\d+))$")
FORM = "models:/NAME@ALIAS or models:/NAME/VERSION"


@dataclass(frozen=True)
class ModelUri:
    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> ModelUri | None:
    """The parts of a registry URI (the ``models:/`` prefix may be left out), or None if it is not one."""
    m = _URI.match(uri.strip())
    return ModelUri(m["name"], m["alias"], m["version"]) if m else None


def split_model_uris(text: str | None) -> list[str]:
    """Model URIs from a whitespace- or comma-separated string (a deployment's environment template)."""
    return split_list(text)
