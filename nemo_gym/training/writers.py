"""Streaming writers for export rows: JSON Lines, or Parquet in row groups of bounded size.

Both write to `<output>.partial` beside the output and move it into place only when the export finished, so an
interrupted or refused export never leaves a file that looks complete. Parquet rows are serialised to JSON once and
parsed by Arrow's own JSON reader against the format's fixed schema: several times faster than building Arrow
arrays from Python objects, and it checks every row against the schema.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, Any, Literal

import orjson

from nemo_gym.extras import import_extra
from nemo_gym.protocol.types import JSONObject
from nemo_gym.training.formats import ExportFormat

OutputFormat = Literal["jsonl", "parquet"]
PARQUET_BATCH_BYTES = 8 * 1024 * 1024
"""Rows buffered (as JSON) before they are written as one Parquet row group: what a Parquet export holds at once."""


def output_format_of(path: Path, given: OutputFormat | None) -> OutputFormat:
    """`given`, else from the suffix: `.parquet` is Parquet, anything else JSON Lines."""
    if given is not None:
        return given
    return "parquet" if path.suffix.lower() == ".parquet" else "jsonl"


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class RowWriter:
    """Rows to a file that appears at `path` only on `commit()`; use as a context manager (discards on error)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = partial_path(path)
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: JSONObject) -> None:
        raise NotImplementedError

    def _close(self, *, finish: bool) -> None:
        """Close the file; `finish`: write out what is buffered first."""
        raise NotImplementedError

    def commit(self) -> None:
        self._close(finish=True)
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        try:
            self._close(finish=False)
        finally:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self.discard()


class JsonlWriter(RowWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._handle: IO[bytes] | None = self.partial.open("wb", buffering=1024 * 1024)

    def write(self, row: JSONObject) -> None:
        assert self._handle is not None
        self._handle.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        self.rows += 1

    def _close(self, *, finish: bool) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ParquetWriter(RowWriter):
    def __init__(self, path: Path, export_format: ExportFormat, *, batch_bytes: int = PARQUET_BATCH_BYTES) -> None:
        super().__init__(path)
        self._pa: ModuleType = import_extra("pyarrow", "train", needed_for="Parquet output")
        self._json: ModuleType = import_extra("pyarrow.json", "train", needed_for="Parquet output")
        parquet = import_extra("pyarrow.parquet", "train", needed_for="Parquet output")
        self._format = export_format
        self._schema = export_format.parquet_schema(self._pa)
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._limit = batch_bytes
        self._writer: Any = parquet.ParquetWriter(str(self.partial), self._schema, compression="zstd")

    def write(self, row: JSONObject) -> None:
        line = orjson.dumps(self._format.for_parquet(row), option=orjson.OPT_APPEND_NEWLINE)
        self._batch.append(line)
        self._batch_bytes += len(line)
        self.rows += 1
        if self._batch_bytes >= self._limit:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        data = b"".join(self._batch)
        self._batch, self._batch_bytes = [], 0
        table = self._json.read_json(
            io.BytesIO(data),
            read_options=self._json.ReadOptions(block_size=len(data) + 1, use_threads=False),
            parse_options=self._json.ParseOptions(explicit_schema=self._schema, unexpected_field_behavior="ignore"),
        )
        self._writer.write_table(table.select(self._schema.names).cast(self._schema))

    def _close(self, *, finish: bool) -> None:
        if self._writer is None:
            return
        try:
            if finish:
                self._flush()
        finally:
            self._writer.close()
            self._writer = None


def open_writer(path: Path, output_format: OutputFormat, export_format: ExportFormat) -> RowWriter:
    if output_format == "parquet":
        return ParquetWriter(path, export_format)
    return JsonlWriter(path)
