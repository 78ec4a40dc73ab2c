"""A plant export's file read into a table: its encoding, delimiter and decimal mark, its numbers.

Plant exports are CSVs from Excel and historians, written in the locale of the plant: UTF-8 (with
or without a byte-order mark), Windows-1252 (Excel's "CSV" in a Western European locale, where
``°C`` is one byte), UTF-16 (Excel's "Unicode text"); a comma, a semicolon or a tab between
fields; ``20,5`` and ``1.198,2`` in a decimal-comma locale; a units row under the header. Each is
read as the numbers it holds, and what was guessed is said in a note (``frame.attrs["notes"]``,
which ``load_frame`` adds to the data's notes). Errors are :class:`DataError`, one line.
"""

from __future__ import annotations

import codecs
import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from sensorguard.service.logs import first_line
from sensorguard.training.tables import DataError

SAMPLE_BYTES = 65536  # what the encoding, the delimiter and the decimal mark are guessed from
PLAIN_COMMA = r"[+-]?\d+,\d+"  # 50,025: a decimal comma (or thousands, where a point is the decimal mark)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read one CSV (comma, semicolon or tab, detected) or Parquet file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV or Parquet file")
    if path.exists() and not path.is_file():  # (a FIFO was "file not found": a walk)
        raise DataError(f"{path}: not a regular file (a pipe or a device): give a CSV or Parquet file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix.lower() in {".parquet", ".pq"} or _parquet_bytes(path):
            frame = pd.read_parquet(path)  # a time index (or a named one) written with the table is a
            frame.columns = [str(c) for c in frame.columns]  # a frame built from an array has integer names
            keep = isinstance(frame.index, pd.DatetimeIndex) or frame.index.name is not None  # column here;
            return frame.reset_index(drop=not keep)  # row numbers left by a filter or a sort are not
        return _read_csv(path)
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for broken files
        if isinstance(exc, MemoryError):
            raise DataError(f"{path}: too large to read into memory ({path.stat().st_size / 1e9:.1f} GB); "
                            "split it, or pass fewer rows") from None
        said = first_line(exc)[:160]
        hint = ("; lines above the header? a historian's export often has some: remove them"
                if "Error tokenizing data" in said else "")  # (a walk: the hint was nowhere)
        raise DataError(f"{path}: cannot read ({said}){hint}") from None


def _parquet_bytes(path: Path) -> bool:
    """Whether the file starts and ends as Parquet does (``PAR1``), whatever its name (``data.parq``
    was refused as "binary data ... an Excel workbook?", a walk); a CSV whose header begins with a
    tag ``PAR1001`` does not end so."""
    with path.open("rb") as fh:
        if fh.read(4) != b"PAR1" or path.stat().st_size < 8:
            return False
        fh.seek(-4, 2)
        return fh.read(4) == b"PAR1"


def _read_csv(path: Path) -> pd.DataFrame:
    notes: list[str] = []
    with _open_binary(path) as fh:  # pandas reads .gz/.bz2/.xz/.zip itself; the sample must be the text too
        raw = fh.read(SAMPLE_BYTES)
    if raw.startswith(b"PK\x03\x04"):
        raise DataError(f"{path}: a zip archive (an Excel workbook?), not CSV text: save it as CSV")
    encoding = _encoding(raw)
    if encoding != "utf-16" and b"\x00" in raw:
        raise DataError(f"{path}: binary data, not CSV text (an Excel workbook or another program's file?)")
    sample = codecs.getincrementaldecoder(encoding)(errors="replace").decode(raw)
    if not sample.strip():
        raise DataError(f"{path}: file is empty")
    sep = _sniff_delimiter(sample)
    decimal = _sniff_decimal(sample, sep)
    try:
        frame = pd.read_csv(path, sep=sep, decimal=decimal, low_memory=False, encoding=encoding)
    except UnicodeDecodeError:  # UTF-8 in the sample, bytes of another encoding further down (a file
        frame = pd.read_csv(path, sep=sep, decimal=decimal, low_memory=False, encoding=encoding,  # appended to)
                            encoding_errors="replace")
        notes.append("bytes that are not UTF-8 after the first 64 KiB, read as \ufffd (lines appended in another "
                     "encoding?)")  # (all of it re-read as Windows-1252 garbled the UTF-8 header: a review)
    header = next(csv.reader([sample.lstrip("\ufeff").splitlines()[0]], delimiter=sep), [])
    if repeated := sorted({name for name in header if header.count(name) > 1 and name.strip()}):
        notes.append(f"header names repeated: {', '.join(repeated)} (read as {repeated[0]}, {repeated[0]}.1, ...: "
                     "rename them to tell them apart)")  # (renamed by pandas unsaid: a walk)
    if encoding == "cp1252":  # read as UTF-8 it was refused ("'utf-8' codec can't decode byte 0xb0"): a walk
        notes.append("not UTF-8 text: read as Windows-1252 (Excel's CSV export in a Western locale)")
    if decimal == "." and sep == ";" and _decimal_commas_later(frame):
        decimal = ","
        notes.append(f"numbers written with a decimal comma (20,5) from line {_first_comma_row(frame) + 2} on, "
                     f"read as such (the first {SAMPLE_BYTES // 1024} KiB held no decimals to tell the mark by)")
    if decimal == ",":
        _decimal_comma_cells(frame)
        frame.attrs["decimal_comma"] = True  # a European locale: 01/03 is March 1st (parse_times)
    frame, units = _without_units_rows(frame)
    if units or decimal == ",":  # (a column now all numbers is a number column, as pandas makes one)
        _numbers_again(frame)
    if units:
        notes.append(f"{len(units)} row{'s' if len(units) > 1 else ''} under the header with no numbers left out "
                     f"(units? {', '.join(repr(u) for u in units[0][:4])}{', ...' if len(units[0]) > 4 else ''})")
    frame.attrs["notes"] = notes
    return frame


def _numbers_again(frame: pd.DataFrame) -> None:
    """Text columns whose every cell is a number, as numbers (in place): what pandas makes of a
    column without the units row above it, or of decimal commas it could not read. Left text, an
    epoch time column under ``ms`` was "unparseable timestamps", or read as nanoseconds (a review)."""
    for col in frame.columns:
        column = frame[col]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        if numbers.notna().any() and (numbers.notna() | column.isna()).all():
            frame[col] = numbers


def _without_units_rows(frame: pd.DataFrame, most: int = 3) -> tuple[pd.DataFrame, list[list[str]]]:
    """The table without the rows right under its header that hold text but no number, while
    the rows below hold numbers (a units row: ``;°C;bar;A``), and those rows' texts. Kept, such a
    row was a row with no time and a non-number in every channel, noted once per channel."""
    if len(frame) <= most:
        return frame, []
    numeric = frame.head(most + 1).apply(lambda c: pd.to_numeric(c, errors="coerce")).notna().sum(axis=1).to_numpy()
    texts = []
    for i in range(most):
        if numeric[i] or not numeric[i + 1:].any():
            break
        cells = [str(v).strip() for v in frame.iloc[i] if pd.notna(v) and str(v).strip()]
        if not cells or pd.to_datetime(pd.Series(cells), errors="coerce", format="mixed").notna().any():
            break  # (a row with its time and no value is a row: the cleaning drops or fills it)
        texts.append(cells)
    if not texts:
        return frame, []
    kept = frame.iloc[len(texts):].reset_index(drop=True)
    kept.attrs = dict(frame.attrs)
    return kept, texts


def _open_binary(path: Path):
    """The file's bytes, decompressed as pandas' ``read_csv`` does by its suffix."""
    import bz2
    import gzip
    import lzma

    if path.suffix.lower() == ".zip":  # one CSV in it, as pandas reads it
        import zipfile

        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise DataError(f"{path}: a zip archive must hold one CSV file, found {len(names)}")
        return archive.open(names[0])
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower())
    return path.open("rb") if opener is None else opener(path, "rb")


def _encoding(raw: bytes) -> str:
    """UTF-16 by its byte-order mark, UTF-8 when the sample decodes as UTF-8 (a character cut at
    the sample's end is not an error), else Windows-1252."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def _sniff_delimiter(sample: str) -> str:
    header = next(iter(sample.splitlines()), "")
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return max(",;\t", key=header.count)
    # a comma no header name holds, in a header of semicolons or tabs, is the numbers' decimal comma: a
    # semicolon file whose last cell some rows leave out (a status set only on events) was split at its
    # decimal commas: "no timestamp column found (columns: Zeit;Temp;Druck;Status)" (an audit)
    if sep == "," and "," not in header and (";" in header or "\t" in header):
        return max(";\t", key=header.count)
    return sep


def _sniff_decimal(sample: str, sep: str) -> str:
    """``,`` for a semicolon or tab CSV whose numbers are written ``20,5`` (a European Excel
    export; read with ``.`` every such cell was missing and forward-filled), else ``.``."""
    if sep == ",":
        return "."
    commas = re.findall(r"(?<![\d.,])[+-]?\d+,\d+(?![\d.,])", sample)
    point = len(re.findall(r"(?<![\d.,:])[+-]?\d+\.\d+(?![\d.,])", sample))
    grouped = [c for c in commas if re.fullmatch(r"[+-]?[1-9]\d{0,2},\d{3}", c)]  # 1,013: 1013 or 1.013?
    if len(commas) > len(grouped):  # 20,5 / 0,250 / 1013,25: only a decimal comma writes these
        return "," if len(commas) > point else "."
    # only the ambiguous kind: a semicolon file is a decimal-comma locale's; a tab file keeps the point
    return "," if sep == ";" and len(commas) > point else "."


def _decimal_commas_later(frame: pd.DataFrame) -> bool:
    """Whether a semicolon file read with a decimal point holds numbers with a comma (``50,025``)
    and none with a point: the sample it was sniffed from had no decimals (a machine stopped at
    the start of the export), and ``50,025`` further down was read as 50025 (a walk)."""
    commas = False
    for col in frame.columns:
        column = frame[col]
        if pd.api.types.is_float_dtype(column):
            values = column.to_numpy(dtype=np.float64)
            if np.any(np.isfinite(values) & (values != np.round(values))):
                return False  # a decimal point somewhere: the sniffed mark was right
        elif column.dtype == object or pd.api.types.is_string_dtype(column):
            text = column.dropna().astype(str).str.strip()
            if text.str.fullmatch(r"[+-]?\d*\.\d+").any():
                return False
            commas = commas or bool(text.str.fullmatch(PLAIN_COMMA).any())
    return commas


def _first_comma_row(frame: pd.DataFrame) -> int:
    """The first row (0-based, under the header) with a number written with a comma."""
    hits = [np.flatnonzero(frame[c].astype(str).str.strip().str.fullmatch(PLAIN_COMMA).to_numpy(dtype=bool))
            for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]
    return min((int(h[0]) for h in hits if len(h)), default=0)


# 20,5 / 1.198,2 / 1.198 / 4,181E-03 (Excel's small values; a walk found a channel of them left out as
# text); not a plain 101 (an asset id, an epoch time: left as pandas reads them)
COMMA_NUMBER = re.compile(r"[+-]?(?:[1-9]\d{0,2}(?:\.\d{3})+(?:,\d+)?|\d+,\d+)(?:[eE][+-]?\d+)?")


def _decimal_comma_cells(frame: pd.DataFrame) -> None:
    """In a decimal-comma file, the cells of text columns written as numbers (``20,5``, with
    points grouping thousands: ``1.198,2``) as those numbers, in place; other cells stay text.
    pandas reads ``decimal=","`` only in a column that is all numbers: one units row (``°C``)
    under the header left every cell of the column text, so no channel was found (a walk), and
    a flow of ``1.198,2`` was missing and forward-filled, hiding a surge."""
    for col in frame.columns:
        column = frame[col]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
            continue
        text = column.astype(str).str.strip()
        hit = text.str.fullmatch(COMMA_NUMBER).fillna(False).to_numpy(dtype=bool)
        if not hit.any():
            continue
        plain = text[hit].str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
        cells = column.astype(object).to_numpy(copy=True)
        cells[hit] = pd.to_numeric(plain, errors="coerce").to_numpy(dtype=np.float64)
        frame[col] = pd.Series(cells, index=frame.index, dtype=object)
