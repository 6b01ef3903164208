"""The base of every record the core keeps: immutable, and refusing fields it does not
declare (a record read back is exactly a record written)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
