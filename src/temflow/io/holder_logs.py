"""Heating-, gas- and biasing-holder logs read into one tidy table (time in s, values in SI-like units).

Two vendors write the logs of most in-situ TEM holders, and neither publishes the CSV layout
in a public specification. What this reader expects comes from the open-source readers of
RosettaSciIO (``rsciio/protochips/_api.py``, ``rsciio/impulse/_api.py``, their tests
``rsciio/tests/test_protochips.py`` and ``test_impulse.py``, and the format pages
``docs/supported_formats/protochips.rst`` and ``dens.rst``), which were written against real
files from the vendors:

**Protochips** (Fusion / Atmosphere / Poseidon heater, gas-cell and biasing logs; the Clarity
software). Line 1 holds the column names separated by ``", "``: ``Time, Notes`` and then one
column per logged quantity, named ``<channel> <quantity>`` (``Channel A Temperature``,
``Holder Temperature``, ``Holder Pressure``, ``Tank1 Pressure``, ``Channel B Current``,
``Channel B Voltage``, ``Channel B Resistance``...). A header follows, one ``<x>, <name> = <value>``
line each: ``Date (yyyy.mm.dd) = 2014.12.15``, ``Time (hh:mm:ss.ms) = 19:07:04.165``, the
units of each quantity (``Time units = Milliseconds``, ``Temperature units = Degrees C``,
``Pressure units = Torr``, ``Current units = Amps``, ``Voltage units = Volts``, ``Resistance
units = Ohms``), ``Calibration file = ...`` and, last, ``User = ...`` (older files have no User
line). Data rows follow: time since the start (in the time units), a free-text note (often
empty), then the values. *Not confirmed*: the export of the newer AXON Studio software (which
writes its own synchronised metadata); its CSV layout was not found in any public source, so
read it with ``vendor="generic"`` and an explicit ``columns`` mapping.

**DENSsolutions Impulse** (Wildfire heating, Lightning heating-biasing, Climate gas and Stream
liquid holders driven by Impulse). ``<experiment>_<name>.csv`` (e.g. ``..._Synchronized
data.csv``, ``..._Heat raw.csv``) has one header line: ``TimeStamp``, ``Experiment time`` (s since
the start) and one column per quantity, the unit in brackets when the software gives one
(``Temperature Measured (degC)``); gas columns (``Pin Measured``, ``Pout Measured``, ``Pnr
Measured``, ``Fnr``, ``% Gas1 Measured``, ``MixValve``...) carry no unit in the header. The
experiment's start date and time are in the sibling ``<experiment>_Metadata.log`` (``Experiment
date,06-08-2021`` as day-month-year, ``Experiment time,13:40:19``, then ``Live notes``).
A temperature column without a unit (``Temperature Measured`` in the ``Heat raw`` export) is in
°C: Impulse logs temperature in °C, and in RosettaSciIO's real test export the unitless column
holds the same numbers as ``Temperature Measured (degC)``; ``attrs["assumed_units"]`` lists it.
*Not confirmed*: the units of the pressure columns, and any power column; other columns without a
unit are therefore never guessed: they are listed in ``attrs["unmapped"]`` and read only through
``columns``. The legacy DigiHeater text format is not read.

Checked on the real Protochips and Impulse files of RosettaSciIO's test data (same values,
at the recorded times rather than RosettaSciIO's uniform axis; ``docs/insitu.md``).

Every column the reader recognises is converted to temflow's names, with the unit in the name:
``temperature_C``, ``heater_power_W``, ``pressure_mbar``, ``current_A``, ``voltage_V``,
``resistance_ohm``. When a log has several columns of one kind (a gas cell's holder and tank
pressures), each gets ``<kind>_<unit>_<source>`` (``pressure_mbar_tank1``) and the holder's or
the measured one also gets the plain name; :func:`temflow.io.holder_sync.add_holder_coords` puts
the plain names on a movie's time axis.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from temflow.errors import MovieFileError
from temflow.movie import time_to_s

__all__ = ["CANONICAL_UNITS", "read_holder_log"]

Vendor = Literal["auto", "protochips", "impulse", "generic"]

#: temflow's quantity names (unit in the name) and the units a ``columns`` target may state
#: instead, with the factor (and offset) that converts them: ``canonical = value * factor + offset``.
CANONICAL_UNITS: dict[str, dict[str, tuple[float, float]]] = {
    "temperature_C": {"C": (1.0, 0.0), "K": (1.0, -273.15), "F": (5.0 / 9.0, -32.0 * 5.0 / 9.0)},
    "heater_power_W": {"W": (1.0, 0.0), "mW": (1e-3, 0.0), "uW": (1e-6, 0.0)},
    "pressure_mbar": {"mbar": (1.0, 0.0), "bar": (1e3, 0.0), "Pa": (1e-2, 0.0), "kPa": (10.0, 0.0),
                      "Torr": (1.333224, 0.0), "psi": (68.94757, 0.0), "atm": (1013.25, 0.0)},
    "current_A": {"A": (1.0, 0.0), "mA": (1e-3, 0.0), "uA": (1e-6, 0.0), "nA": (1e-9, 0.0)},
    "voltage_V": {"V": (1.0, 0.0), "mV": (1e-3, 0.0)},
    "resistance_ohm": {"ohm": (1.0, 0.0), "kohm": (1e3, 0.0)},
}

# unit spellings of the vendors' headers -> the unit keys above
_UNIT_SPELLINGS = {
    "degrees c": "C", "degc": "C", "°c": "C", "c": "C", "celsius": "C", "kelvin": "K", "k": "K",
    "degrees f": "F", "degf": "F", "°f": "F", "watts": "W", "watt": "W", "w": "W", "mw": "mW",
    "milliwatts": "mW", "µw": "uW", "uw": "uW", "torr": "Torr", "mbar": "mbar", "bar": "bar", "pa": "Pa",
    "kpa": "kPa", "psi": "psi", "atm": "atm", "amps": "A", "amp": "A", "a": "A", "ma": "mA", "µa": "uA",
    "ua": "uA", "na": "nA", "volts": "V", "volt": "V", "v": "V", "mv": "mV", "ohms": "ohm", "ohm": "ohm",
    "ω": "ohm", "kohm": "kohm", "kω": "kohm",
}  # fmt: skip
_KINDS = {"temperature": "temperature_C", "power": "heater_power_W", "pressure": "pressure_mbar",
          "current": "current_A", "voltage": "voltage_V", "resistance": "resistance_ohm"}
# which of several columns of one kind is "the" sample's: the holder/chip side, the measured value
_PRIMARY = re.compile(r"^(holder|channel a|sample|chip)\b|\bmeasured\b", re.IGNORECASE)


def read_holder_log(
    path: str | os.PathLike[str],
    *,
    vendor: Vendor = "auto",
    columns: Mapping[str, str] | None = None,
    time_column: str | None = None,
    time_unit: Literal["s", "ms", "min"] | None = None,
) -> pd.DataFrame:
    """Read an in-situ holder's log (temperature, power, pressure, current...) into a table.

    Reads the whole (small) file.

    Parameters
    ----------
    path : str or os.PathLike
        The log: a Protochips ``.csv`` log, a DENSsolutions Impulse ``.csv`` export, or any CSV
        with a header line (``vendor="generic"``).
    vendor : {"auto", "protochips", "impulse", "generic"}
        The layout (see the module's description). ``"auto"`` recognises Protochips (``Time`` and
        ``Notes`` columns) and Impulse (``TimeStamp`` and ``Experiment time``); ``"generic"`` needs
        ``time_column`` and ``columns``.
    columns : mapping of str to str, optional
        The file's column name -> temflow's quantity name, the unit stated in the target, e.g.
        ``{"Pin Measured": "pressure_mbar", "Heater power": "heater_power_mW"}``: the target is one
        of :data:`CANONICAL_UNITS` or its kind with another listed unit (``temperature_K``,
        ``pressure_Torr``...), converted on reading. Overrides what the reader recognised for
        those columns; a suffix after the unit names one of several (``pressure_bar_inlet``).
    time_column : str, optional
        The column of elapsed time (generic logs; default: the vendor's).
    time_unit : {"s", "ms", "min"}, optional
        Unit of ``time_column`` (generic logs; Protochips logs state theirs in the header).

    Returns
    -------
    pandas.DataFrame
        One row per log record, sorted by time: ``time_s`` (s since the log's start) and one
        float column per quantity (``temperature_C``, ``heater_power_W``, ``pressure_mbar``,
        ``current_A``, ``voltage_V``, ``resistance_ohm``, and suffixed names for further
        columns of a kind). ``attrs``: ``vendor``, ``path``, ``start`` (ISO date-time of the log's
        time zero, or None), ``columns`` (file column -> name), ``unmapped`` (columns not read),
        ``assumed_units`` (column -> unit taken without the file stating it), ``notes`` (list of
        ``[time_s, text]``).

    Raises
    ------
    temflow.errors.MovieFileError
        If the file is missing, empty or not of the layout asked for (the message names it).
    ValueError
        For a ``columns`` target that is not a known quantity/unit or a column not in the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "run.csv").write_text(
    ...     "Time, Notes, Channel A Temperature\\n"
    ...     "0, Date (yyyy.mm.dd) = 2024.05.01\\n0, Time (hh:mm:ss.ms) = 10:00:00.000\\n"
    ...     "0, Time units = Milliseconds\\n0, Temperature units = Degrees C\\n0, User = me\\n"
    ...     "0, , 25.0\\n500, , 300.0\\n1000, heating, 600.0\\n")
    >>> log = read_holder_log(folder / "run.csv")
    >>> log["time_s"].tolist(), log["temperature_C"].tolist(), log.attrs["start"]
    ([0.0, 0.5, 1.0], [25.0, 300.0, 600.0], '2024-05-01T10:00:00')
    """
    path = Path(path)
    if vendor not in ("auto", "protochips", "impulse", "generic"):
        raise ValueError(f"vendor must be 'auto', 'protochips', 'impulse' or 'generic'; got {vendor!r}")
    if time_unit is not None and time_unit not in ("s", "ms", "min"):
        raise ValueError(f"time_unit must be 's', 'ms' or 'min'; got {time_unit!r}")
    lines = _read_lines(path, vendor)
    header = [name.strip() for name in next(csv.reader([lines[0]]))]
    if vendor == "auto":
        if "Time" in header and "Notes" in header:
            vendor = "protochips"
        elif "TimeStamp" in header and "Experiment time" in header:
            vendor = "impulse"
        elif time_column is not None and columns:
            vendor = "generic"
        else:
            raise MovieFileError(
                path, "holder log", f"neither a Protochips log (columns Time, Notes, ...) nor a DENSsolutions "
                f"Impulse export (TimeStamp, Experiment time, ...); the header is {header[:6]}",
                "for another layout pass vendor='generic', time_column=... and columns={...}")
    if vendor == "protochips":
        table, units, time_factor, start, notes = _protochips(path, lines, header)
        time_name = "Time"
    elif vendor == "impulse":
        table, units, time_factor, start, notes = _impulse(path, lines, header)
        time_name = "Experiment time"
    else:
        table, units, start, notes = _generic(path, lines, header), {}, None, []
        time_factor = 1.0
        time_name = ""
    if time_column is not None:
        time_name = time_column
    if time_unit is not None:
        time_factor = float(time_to_s(1.0, time_unit) or 1.0)
    if vendor == "generic" and (not time_name or not columns):
        raise ValueError(
            f"{path}: a generic log needs time_column=... (one of {header}) and columns={{file column: quantity}} "
            f"with quantities from {sorted(CANONICAL_UNITS)}")
    if time_name not in table.columns:
        raise MovieFileError(path, f"{vendor} holder log", f"no time column {time_name!r}; the columns are {header}",
                             "pass time_column=... naming the elapsed-time column")
    times = pd.to_numeric(table[time_name], errors="coerce").to_numpy(float) * time_factor
    out: dict[str, np.ndarray] = {"time_s": times}
    mapping: dict[str, str] = {}
    explicit = dict(columns or {})
    for name in explicit:
        if name not in table.columns:
            raise ValueError(f"columns names {name!r}, which is not a column of {path}; the columns are {header}")
    by_kind: dict[str, list[str]] = {}
    unmapped: list[str] = []
    for name in table.columns:
        if name in (time_name, "Notes", "TimeStamp", "Experiment time") or name in explicit:
            continue
        kind, unit = _recognise(name, units)
        if kind is None or unit is None:
            unmapped.append(name)
            continue
        by_kind.setdefault(kind, []).append(name)
    for kind, names in by_kind.items():
        primary = names[0] if len(names) == 1 else next((n for n in names if _PRIMARY.search(n)), None)
        for name in names:
            _, unit = _recognise(name, units)
            values = _convert(pd.to_numeric(table[name], errors="coerce").to_numpy(float), kind, unit)  # type: ignore[arg-type]
            target = kind if len(names) == 1 else f"{kind}_{_slug(name, kind)}"
            out[target] = values
            mapping[name] = target
            if name == primary and target != kind:
                out[kind] = values
        if primary is None:
            warnings.warn(
                f"{path}: {len(names)} {kind.split('_')[0]} columns ({', '.join(names)}) and none is the "
                f"holder's; none is called {kind!r}. Pass columns={{'{names[0]}': '{kind}'}} to choose",
                UserWarning, stacklevel=2)
    for name, target in explicit.items():
        kind, suffix, factor, offset = _parse_target(target)
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(float) * factor + offset
        full = kind + (f"_{suffix}" if suffix else "")
        out[full] = values
        mapping[name] = full
    frame = pd.DataFrame(out)
    bad = ~np.isfinite(frame["time_s"].to_numpy())
    frame = frame[~bad].sort_values("time_s", kind="stable").reset_index(drop=True)
    if len(frame) == 0:
        raise MovieFileError(path, f"{vendor} holder log", "no data row with a numeric time",
                             "check that the file is a complete log")
    assumed = {name: "°C" for name, target in mapping.items()
               if vendor == "impulse" and target.startswith("temperature_C") and "(" not in name}
    frame.attrs.update(vendor=vendor, path=str(path), start=start, columns=mapping, unmapped=unmapped,
                       assumed_units=assumed,
                       notes=[[t * time_factor if np.isfinite(t) else t, text] for t, text in notes])
    return frame


def _read_lines(path: Path, vendor: str) -> list[str]:
    fmt = f"{vendor} holder log" if vendor != "auto" else "holder log"
    if not path.is_file():
        raise MovieFileError(path, fmt, "no such file", "check the path (and the current directory)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")  # the vendors' Windows software writes cp1252 "°"
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise MovieFileError(path, fmt, "the file is empty", "check that the log was saved completely")
    return lines


def _protochips(path: Path, lines: list[str], header: list[str]) -> tuple[
        pd.DataFrame, dict[str, str], float, str | None, list[tuple[float, str]]]:
    meta: dict[str, str] = {}
    first_data = len(lines)
    for i, line in enumerate(lines[1:], start=1):
        fields = [f.strip() for f in next(csv.reader([line]))]
        if len(fields) >= 2 and " = " in fields[1]:
            name, _, value = fields[1].partition(" = ")
            meta[name.strip().lower()] = value.strip()
            continue
        first_data = i
        break
    rows = list(csv.reader(lines[first_data:]))
    width = len(header)
    rows = [([f.strip() for f in r] + [""] * width)[:width] for r in rows]
    table = pd.DataFrame(rows, columns=header)
    units = {k[: -len(" units")]: v for k, v in meta.items() if k.endswith(" units")}
    time_units = units.pop("time", "")
    factor = time_to_s(1.0, time_units)
    if factor is None:
        raise MovieFileError(path, "protochips holder log",
                             f"the header does not say the time unit (Time units = {time_units!r})",
                             "pass time_unit='ms' (or 's') if you know it")
    start = None
    date, clock = meta.get("date (yyyy.mm.dd)"), meta.get("time (hh:mm:ss.ms)")
    if date and clock:
        try:
            start = _dt.datetime.strptime(f"{date} {clock}", "%Y.%m.%d %H:%M:%S.%f").isoformat()
        except ValueError:
            start = None
    notes = [(float(t), n) for t, n in zip(pd.to_numeric(table["Time"], errors="coerce"), table["Notes"]) if n]
    return table, units, factor, start, notes


def _impulse(path: Path, lines: list[str], header: list[str]) -> tuple[
        pd.DataFrame, dict[str, str], float, str | None, list[tuple[float, str]]]:
    rows = list(csv.reader(lines[1:]))
    width = len(header)
    table = pd.DataFrame([([f.strip() for f in r] + [""] * width)[:width] for r in rows], columns=header)
    start, notes = None, []
    stem = path.stem.rsplit("_", 1)[0] if "_" in path.stem else path.stem
    meta_file = path.with_name(f"{stem}_Metadata.log")
    if meta_file.is_file():
        meta: dict[str, str] = {}
        in_notes = False
        for row in csv.reader(meta_file.read_text(encoding="latin-1").splitlines()):
            if not row:
                continue
            if in_notes:
                notes.append((float("nan"), row[0].strip()))
            elif row[0].strip() == "Live notes":
                in_notes = True
                if len(row) > 1 and row[1].strip():
                    notes.append((float("nan"), row[1].strip()))
            elif len(row) > 1:
                meta[row[0].strip()] = row[1].strip()
        try:
            start = _dt.datetime.strptime(f"{meta['Experiment date']} {meta['Experiment time']}",
                                          "%d-%m-%Y %H:%M:%S").isoformat()
        except (KeyError, ValueError):
            start = None
    # Impulse logs temperature in °C; its "Heat raw" export leaves the unit out of the header
    # (real files: StubExperiment_Heat raw.csv's "Temperature Measured" holds the values its
    # "Synchronized data" export calls "Temperature Measured (degC)")
    return table, {"temperature": "degC"}, 1.0, start, notes


def _generic(path: Path, lines: list[str], header: list[str]) -> pd.DataFrame:
    rows = list(csv.reader(lines[1:]))
    width = len(header)
    return pd.DataFrame([([f.strip() for f in r] + [""] * width)[:width] for r in rows], columns=header)


def _recognise(name: str, units: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(temflow kind, unit key) of a vendor column, or Nones when either is not stated."""
    match = re.match(r"^(.*?)\s*\(([^()]*)\)\s*$", name)
    bare, unit_text = (match.group(1), match.group(2)) if match else (name, None)
    words = bare.lower().split()
    kind = next((_KINDS[w] for w in reversed(words) if w in _KINDS), None)
    if kind is None:
        return None, None
    if unit_text is None:  # Protochips: the unit of each quantity is in the header
        quantity = next(w for w in reversed(words) if w in _KINDS)
        unit_text = units.get(quantity)
    if unit_text is None:
        return kind, None
    unit = _UNIT_SPELLINGS.get(unit_text.strip().lower())
    if unit is None or unit not in CANONICAL_UNITS[kind]:
        return kind, None
    return kind, unit


def _convert(values: np.ndarray, kind: str, unit: str) -> np.ndarray:
    factor, offset = CANONICAL_UNITS[kind][unit]
    return values * factor + offset


def _slug(name: str, kind: str) -> str:
    bare = re.sub(r"\([^()]*\)", "", name).lower()
    bare = bare.replace(kind.split("_")[0], " ")
    for word in ("power", "measured"):
        bare = bare.replace(word, " ")
    slug = re.sub(r"[^a-z0-9]+", "_", bare).strip("_")
    return slug or "other"


def _parse_target(target: str) -> tuple[str, str, float, float]:
    """``"pressure_Torr_inlet"`` -> ("pressure_mbar", "inlet", factor, offset)."""
    for kind, units in CANONICAL_UNITS.items():
        base = kind.rsplit("_", 1)[0]
        for unit, (factor, offset) in units.items():
            stem = f"{base}_{unit}"
            if target == stem or target.startswith(stem + "_"):
                return kind, target[len(stem) + 1:], factor, offset
    known = ", ".join(f"{k.rsplit('_', 1)[0]}_{{{','.join(u)}}}" for k, u in CANONICAL_UNITS.items())
    raise ValueError(f"columns target {target!r} is not a quantity temflow knows; use one of {known} "
                     "(optionally with a suffix: pressure_mbar_inlet)")

