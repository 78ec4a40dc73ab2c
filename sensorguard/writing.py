"""Tables the verbs write (``simulate``, ``score --out``): the format follows the file's suffix."""

from __future__ import annotations

import sys
from pathlib import Path

from sensorguard.cli_errors import CliError

COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".zip"}  # pandas compresses a CSV by these suffixes
NOT_WRITTEN = {".xlsx", ".xls", ".json", ".jsonl", ".feather", ".h5", ".hdf5", ".pkl", ".pickle"}


def write_table(frame, path: str | Path) -> None:
    """CSV (``.csv``, compressed ``.csv.gz`` ...), tab-separated (``.tsv``) or Parquet (``.parquet``,
    ``.pq``) by the suffix; a format it cannot write is one line, and any other suffix is CSV with
    a note (``scores.txt`` was CSV in silence, ``scores.xlsx`` a CSV Excel could not open)."""
    if str(path).endswith(("/", "\\")):  # (Path drops the slash: "noext/" wrote a file called noext, a walk)
        raise CliError(f"{path}: names a directory; give a file path (a .csv, .tsv or .parquet name)")
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise CliError(f"{path}: directory {path.parent} does not exist")
    if path.parent and not path.parent.is_dir():  # (pandas: "Cannot save file into a non-existent directory")
        raise CliError(f"{path}: {path.parent} is a file, not a directory")
    if path.is_dir():  # before the suffix's note: "written as CSV" and then "cannot write" (found in a walk)
        raise CliError(f"{path}: is a directory; give a file path (a .csv, .tsv or .parquet name)")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    suffix = suffixes[-1] if suffixes else ""
    table = suffixes[0] if suffix in COMPRESSED and len(suffixes) == 2 else suffix
    if table in NOT_WRITTEN:
        raise CliError(f"{path}: cannot write {table} files; give a .csv, .tsv or .parquet path")
    if table not in {".csv", ".tsv", ".parquet", ".pq"}:
        print(f"note: {path}: written as CSV (a .csv, .tsv or .parquet suffix chooses the format)", file=sys.stderr)
    try:
        if table in {".parquet", ".pq"}:
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False, float_format="%.6g", sep="\t" if table == ".tsv" else ",")
    except OSError as exc:
        raise CliError(f"{path}: cannot write ({exc.strerror or exc})") from None
