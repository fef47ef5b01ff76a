"""The run configuration: a typed, validated TOML file.

Every section is a frozen dataclass; unknown sections or keys and values of the
wrong type or range are refused with an error that names the key and the file.
Output names must stay inside the output folder.

Example ``run.toml``::

    [input]
    path = "experiment/Hour_00"      # a file, folder of frames, or .zarr store
    frame_interval_s = 0.5           # optional: overrides the file's time step (noted in provenance)
    pixel_size_nm = 0.384            # optional: overrides the file's pixel size; [dy, dx] if not square

    [output]
    folder = "results"

    [segmentation]
    method = "unet"                  # "unet", "autoencoder" or "threshold"
    model = ""                       # a trained model; empty: train one on this movie

    [analysis]
    max_step_nm = 4.0
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from temflow.pipeline._toml_fields import _build, _coerce

__all__ = [
    "AnalysisConfig",
    "ClusterConfig",
    "Config",
    "DriftConfig",
    "InferenceConfig",
    "InputConfig",
    "InsituConfig",
    "OutputConfig",
    "SegmentationConfig",
    "SyntheticConfig",
    "TrainingConfig",
    "load_config",
    "override_config",
]


# Bounds beyond which a value is a typo or a hostile file rather than a setting.
_MAX_SYNTHETIC_SIDE = 8192  # px
_MAX_SYNTHETIC_PIXELS = 2**32  # frames x size^2: 8 GiB of float16 frames
_MIN_MEMORY_LIMIT = 128 * 2**20  # bytes: a dask worker below this pauses at once
_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z]+)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]*):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class SyntheticConfig:
    """A built-in synthetic movie instead of a file (see ``temflow.synthetic.generator.make_movie``)."""

    frames: int = 120
    size: int = 192
    pixel_size_nm: float = 0.5
    frame_interval_s: float = 1.0
    mechanism: Literal["ostwald", "coalescence", "mixed", "none"] = "ostwald"
    radius_nm: list[float] = field(default_factory=lambda: [2.0, 6.0])
    dose_e_per_px: float = 50.0
    seed: int = 0


@dataclass(frozen=True)
class InputConfig:
    """Where the movie comes from: ``path``, or ``synthetic`` for a built-in movie.

    ``frame_interval_s`` (s) and ``pixel_size_nm`` (nm, or ``[dy, dx]``) override the
    file's calibrations (the override is noted in the movie's attrs and the run's
    provenance); they are needed where the file has none.
    """

    path: str = ""
    frame_interval_s: float | None = None
    pixel_size_nm: float | list[float] | None = None
    frames_per_chunk: int = 0
    synthetic: SyntheticConfig | None = None


@dataclass(frozen=True)
class OutputConfig:
    """Where results go; every stage writes below ``folder``."""

    folder: str = "temflow-output"
    report: str = "report.html"
    figure_formats: list[str] = field(default_factory=lambda: ["png", "pdf"])


@dataclass(frozen=True)
class ClusterConfig:
    """The Dask cluster: an existing scheduler, or a local one bound to loopback."""

    scheduler: str = ""
    n_workers: int = 0
    threads_per_worker: int = 0
    processes: bool = True
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"
    tls_ca_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    connect_timeout_s: float = 5.0  # each step of reaching an existing scheduler, s


@dataclass(frozen=True)
class DriftConfig:
    """Drift correction and cropping."""

    enabled: bool = True
    reference: str = "auto"
    upsample: int = 20
    method: Literal["fourier", "spline", "integer"] = "fourier"


@dataclass(frozen=True)
class SegmentationConfig:
    """How particles are found: a U-Net, the autoencoder + Otsu, or the classical threshold.

    ``particles`` and the lengths are the classical recipe's
    (:func:`temflow.analysis.threshold.threshold_particles`): used by
    ``method = "threshold"``, by the autoencoder's flat field, and by the
    weak labels a U-Net trains on (``[training] labels = "auto"``). ``"auto"``
    and lengths left out are decided from the movie; the decision is written
    to provenance.json (``decided``) and the report.
    """

    method: Literal["unet", "autoencoder", "threshold"] = "unet"
    model: str = ""
    threshold: float | None = None
    particles: Literal["auto", "dark", "bright"] = "auto"
    sigma_nm: float | None = None
    background_nm: float | None = None
    opening_nm: float | None = None
    min_area_nm2: float | None = None
    max_radius_nm: float | None = None
    # the classical recipe on frames binned bin_px x bin_px (threshold_particles' bin_px)
    bin_px: int = 1


@dataclass(frozen=True)
class TrainingConfig:
    """Training, when no model is given."""

    labels: str = "auto"
    # "time": frames of one movie, split by blocks of time; "image": independent images
    split: Literal["time", "image"] = "time"
    epochs: int = 6
    batch_size: int = 16
    learning_rate: float = 2e-3
    tile_size: int = 64
    frames: int = 12
    seed: int = 0
    data_parallel: bool = False
    # largest standard deviation of the Gaussian noise added to training inputs (normalised
    # units); None: 0.8 for the autoencoder, which then learns to remove noise rather than to
    # copy it through its bottleneck, and 0.05 for the U-Net
    added_noise: float | None = None
    # train for at least this many optimiser steps, whatever epochs says (a small movie gives
    # few tiles per epoch); None: 400 for the autoencoder (benchmarks/bench_train.py trains
    # it 340), 0 for the U-Net
    min_steps: int | None = None


@dataclass(frozen=True)
class InferenceConfig:
    """Model inference over the movie."""

    tile: int = 256
    batch_size: int = 8
    device: str = "auto"


@dataclass(frozen=True)
class AnalysisConfig:
    """Measurement, tracking and coarsening."""

    min_area_nm2: float = 3.0
    max_step_nm: float = 5.0
    memory: int = 2
    linker: Literal["trackpy", "laptrack"] = "trackpy"
    exclude_border: bool = True
    split_touching: bool = True  # cut particles that touch in the masks apart (label_particles)


@dataclass(frozen=True)
class InsituConfig:
    """In-situ context, both parts optional: the holder's log, and the electron dose per frame.

    ``holder_columns`` entries read ``"file column = quantity"`` (``"Pin Measured = pressure_bar"``,
    see :func:`temflow.io.holder_logs.read_holder_log`); ``clock_offset_s`` is the log's time at the
    movie's time zero (unset: found from a temperature step, see
    :func:`temflow.io.holder_sync.estimate_clock_offset`). The dose needs ``counts_per_electron``
    (with the file's exposure or ``exposure_s``) or a beam current (``beam_current_A`` or the file's)
    with ``illuminated_diameter_nm``; without them the report says what is missing.
    """

    holder_log: str = ""
    holder_vendor: Literal["auto", "protochips", "impulse", "generic"] = "auto"
    holder_time_column: str = ""
    holder_time_unit: Literal["", "s", "ms", "min"] = ""
    holder_columns: list[str] = field(default_factory=list)
    clock_offset_s: float | None = None
    step_tolerance_C: float = 5.0
    arrhenius_exponent: float = 3.0
    counts_per_electron: float | None = None
    exposure_s: float | None = None
    beam_current_A: float | None = None
    illuminated_diameter_nm: float | None = None
    beam_between_frames: bool = True


@dataclass(frozen=True)
class Config:
    """A whole run. Build it with :func:`load_config` or :meth:`Config.from_dict`.

    Examples
    --------
    >>> config = Config.from_dict({"input": {"synthetic": {"frames": 20}}, "output": {"folder": "out"}})
    >>> config.input.synthetic.frames, config.segmentation.method
    (20, 'unet')
    >>> Config.from_dict({"drift": {"upsampel": 10}})
    Traceback (most recent call last):
    ...
    ValueError: <dict>: unknown key 'upsampel' in [drift]; known keys: enabled, method, reference, upsample
    """

    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    insitu: InsituConfig = field(default_factory=InsituConfig)
    source: str = field(default="<dict>", compare=False)
    # keys replaced by the command line's flags (see override_config), for provenance.json and the report
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> "Config":
        """Validate a nested dict (as read from TOML) into a Config."""
        if not isinstance(data, dict):
            raise TypeError(f"{source}: a configuration must be a table of sections; got {type(data).__name__}")
        config = _build(cls, data, source, section="", skip={"source", "overrides"})
        config = dataclasses.replace(config, source=source)
        _check(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (for provenance and TOML-like dumps)."""
        out = dataclasses.asdict(self)
        out.pop("source", None)
        out.pop("overrides", None)
        return out

    @property
    def folder(self) -> Path:
        """The output folder."""
        return Path(self.output.folder)


def _positive(source: str, where: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{source}: {where} must be {'non-negative' if allow_zero else 'positive'}; got {value!r}")


def _inside(source: str, where: str, name: str) -> None:
    path = PurePath(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{source}: {where} must be a relative name inside the output folder; got {name!r}")
    if "/" in name or "\\" in name:
        raise ValueError(f"{source}: {where} must be a file name without folders; got {name!r}")


def _at_most(source: str, where: str, value: int, limit: int, why: str) -> None:
    if value > limit:
        raise ValueError(f"{source}: {where} must be at most {limit} ({why}); got {value!r}")


def parse_memory_limit(source: str, value: str) -> int | None:
    """``cluster.memory_limit`` in bytes (``None`` for ``"auto"``).

    Examples
    --------
    >>> parse_memory_limit("run.toml", "4 GiB"), parse_memory_limit("run.toml", "auto")
    (4294967296, None)
    >>> parse_memory_limit("run.toml", "lots")
    Traceback (most recent call last):
    ...
    ValueError: run.toml: cluster.memory_limit must be 'auto' or a size such as '4GiB' or '8 GB'; got 'lots'
    """
    from dask.utils import parse_bytes

    if value.strip().lower() == "auto":
        return None
    try:
        number = parse_bytes(value) if re.fullmatch(r"\s*\d+(\.\d+)?\s*[a-zA-Z]*\s*", value) else None
    except (ValueError, TypeError):
        number = None
    if number is None:
        raise ValueError(f"{source}: cluster.memory_limit must be 'auto' or a size such as '4GiB' or '8 GB'; got {value!r}")
    if not _MIN_MEMORY_LIMIT <= number <= 2**50:
        raise ValueError(f"{source}: cluster.memory_limit must be between 128 MiB and 1 PiB per worker; got {value!r}")
    return int(number)


def _check_address(source: str, where: str, value: str, schemes: tuple[str, ...]) -> None:
    match = _ADDRESS.match(value)
    if match is None or (match["scheme"] or schemes[0]) not in schemes or int(match["port"]) > 65535:
        example = f"{schemes[0]}://host:port" if schemes[0] else "host:port"
        raise ValueError(f"{source}: {where} must look like {example!r}; got {value!r}")


def _check(config: Config) -> None:
    src = config.source
    inp = config.input
    if bool(inp.path) == (inp.synthetic is not None):
        raise ValueError(f"{src}: [input] needs exactly one of 'path' or a [input.synthetic] table")
    _positive(src, "input.frame_interval_s", inp.frame_interval_s)
    if isinstance(inp.pixel_size_nm, list):
        if len(inp.pixel_size_nm) != 2:
            raise ValueError(f"{src}: input.pixel_size_nm must be one number or [dy, dx]; got {inp.pixel_size_nm!r}")
        for value in inp.pixel_size_nm:
            _positive(src, "input.pixel_size_nm", value)
    else:
        _positive(src, "input.pixel_size_nm", inp.pixel_size_nm)
    if inp.synthetic is not None and (inp.pixel_size_nm is not None or inp.frame_interval_s is not None):
        raise ValueError(f"{src}: input.pixel_size_nm and input.frame_interval_s are for files; a synthetic movie "
                         "sets them in [input.synthetic]")
    _positive(src, "input.frames_per_chunk", inp.frames_per_chunk, allow_zero=True)
    if inp.synthetic is not None:
        syn = inp.synthetic
        for name in ("frames", "size", "pixel_size_nm", "frame_interval_s", "dose_e_per_px"):
            _positive(src, f"input.synthetic.{name}", getattr(syn, name))
        _at_most(src, "input.synthetic.size", syn.size, _MAX_SYNTHETIC_SIDE, "px a side")
        _at_most(src, "input.synthetic.frames", syn.frames, _MAX_SYNTHETIC_PIXELS // syn.size**2,
                 f"{_MAX_SYNTHETIC_PIXELS} px in all for frames of {syn.size}^2 px")
        if len(syn.radius_nm) != 2 or not 0 < syn.radius_nm[0] <= syn.radius_nm[1]:
            raise ValueError(f"{src}: input.synthetic.radius_nm must be [smallest, largest]; got {syn.radius_nm!r}")
        # particles below one pixel are invisible and their number (area / radius^2) explodes;
        # one wider than the frame cannot be placed
        field_nm = syn.size * syn.pixel_size_nm
        if syn.radius_nm[0] < syn.pixel_size_nm or syn.radius_nm[1] > field_nm / 2:
            raise ValueError(f"{src}: input.synthetic.radius_nm must lie between one pixel ({syn.pixel_size_nm:g} nm) "
                             f"and half the field of view ({field_nm / 2:g} nm); got {syn.radius_nm!r}")
    if not config.output.folder:
        raise ValueError(f"{src}: output.folder must not be empty")
    _inside(src, "output.report", config.output.report)
    if not config.output.report.endswith(".html"):
        raise ValueError(f"{src}: output.report must end in .html; got {config.output.report!r}")
    bad = [f for f in config.output.figure_formats if f not in ("png", "pdf", "svg")]
    if bad or not config.output.figure_formats:
        raise ValueError(f"{src}: output.figure_formats must be among 'png', 'pdf', 'svg'; got {config.output.figure_formats!r}")
    cluster = config.cluster
    cores = os.cpu_count() or 1
    for name in ("n_workers", "threads_per_worker"):
        _positive(src, f"cluster.{name}", getattr(cluster, name), allow_zero=True)
        if not cluster.scheduler:  # sizes of the local cluster only
            _at_most(src, f"cluster.{name}", getattr(cluster, name), max(8, 4 * cores),
                     f"four per core of this machine's {cores}")
    parse_memory_limit(src, cluster.memory_limit)
    _positive(src, "cluster.connect_timeout_s", cluster.connect_timeout_s)
    if cluster.connect_timeout_s > 600:
        raise ValueError(f"{src}: cluster.connect_timeout_s must be at most 600 s (a scheduler answers in "
                         f"seconds); got {cluster.connect_timeout_s!r}")
    if cluster.scheduler:
        _check_address(src, "cluster.scheduler", cluster.scheduler, ("tcp", "tls"))
    _check_address(src, "cluster.dashboard_address", cluster.dashboard_address, ("",))
    _positive(src, "drift.upsample", config.drift.upsample)
    seg = config.segmentation
    if seg.threshold is not None and seg.method == "threshold":
        raise ValueError(
            f"{src}: segmentation.threshold is for the models' output; the classical method sets its own "
            "(Otsu) - remove it, or use method = 'unet' or 'autoencoder'"
        )
    if seg.threshold is not None and not 0 < seg.threshold < 1:
        what = "a probability" if seg.method == "unet" else "a darkness (fraction of the local background absorbed)"
        raise ValueError(f"{src}: segmentation.threshold is {what} and must be between 0 and 1; got {seg.threshold!r}")
    for name in ("sigma_nm", "background_nm", "opening_nm", "min_area_nm2"):
        _positive(src, f"segmentation.{name}", getattr(seg, name), allow_zero=True)
    _positive(src, "segmentation.max_radius_nm", seg.max_radius_nm)
    if seg.bin_px < 1:  # an integer already (the key's type)
        raise ValueError(f"{src}: segmentation.bin_px must be a whole number of pixels >= 1; got {seg.bin_px!r}")
    if seg.bin_px > 1 and seg.method != "threshold":
        raise ValueError(f"{src}: segmentation.bin_px bins the frames of the classical recipe (method = 'threshold'); "
                         f"the {seg.method} segments full frames - remove bin_px, or use method = 'threshold'")
    if config.segmentation.model and not os.path.exists(config.segmentation.model):
        raise ValueError(f"{src}: segmentation.model {config.segmentation.model!r} does not exist")
    tr = config.training
    for name in ("epochs", "batch_size", "learning_rate", "tile_size", "frames"):
        _positive(src, f"training.{name}", getattr(tr, name))
    _positive(src, "training.added_noise", tr.added_noise, allow_zero=True)
    _positive(src, "training.min_steps", tr.min_steps, allow_zero=True)
    if tr.labels not in ("auto", "truth") and not os.path.exists(tr.labels):
        raise ValueError(f"{src}: training.labels must be 'auto', 'truth' or an existing mask file; got {tr.labels!r}")
    if tr.labels == "truth" and inp.synthetic is None:
        raise ValueError(f"{src}: training.labels = 'truth' needs a synthetic input (only it has a ground truth)")
    for name in ("tile", "batch_size"):
        _positive(src, f"inference.{name}", getattr(config.inference, name))
    if config.inference.device not in ("auto", "cpu") and not config.inference.device.startswith("cuda"):
        raise ValueError(f"{src}: inference.device must be 'auto', 'cpu' or 'cuda[:N]'; got {config.inference.device!r}")
    _positive(src, "analysis.min_area_nm2", config.analysis.min_area_nm2, allow_zero=True)
    _positive(src, "analysis.max_step_nm", config.analysis.max_step_nm)
    _positive(src, "analysis.memory", config.analysis.memory, allow_zero=True)
    _check_insitu(config.insitu, src)


def _check_insitu(ins: InsituConfig, src: str) -> None:
    if ins.holder_log and not os.path.isfile(ins.holder_log):
        raise ValueError(f"{src}: insitu.holder_log {ins.holder_log!r} does not exist")
    for entry in ins.holder_columns:
        if entry.count("=") != 1 or not all(part.strip() for part in entry.split("=")):
            raise ValueError(f"{src}: insitu.holder_columns entries read 'file column = quantity'; got {entry!r}")
    if ins.holder_vendor == "generic" and not (ins.holder_time_column and ins.holder_columns):
        raise ValueError(f"{src}: insitu.holder_vendor 'generic' needs holder_time_column and holder_columns "
                         "under [insitu] in the run file (the time column and the 'file column = quantity' entries)")
    for name in ("step_tolerance_C", "arrhenius_exponent", "counts_per_electron", "exposure_s", "beam_current_A",
                 "illuminated_diameter_nm"):
        _positive(src, f"insitu.{name}", getattr(ins, name))


def override_config(config: Config, values: Mapping[str, Any], *, origin: Mapping[str, str]) -> Config:
    """``config`` with some keys replaced (by the command line's flags), checked by the run file's rules.

    Parameters
    ----------
    config : Config
        The run file's configuration.
    values : mapping
        New values by ``"section.key"`` (``{"insitu.clock_offset_s": 12.5}``); paths as they are
        to be used (a flag's path is the user's, relative to the working folder, not to the run file).
    origin : mapping
        Where each value came from, by the same keys (``{"insitu.clock_offset_s": "--clock-offset-s"}``):
        an error about that value names it instead of the run file's key.

    Returns
    -------
    Config
        The new configuration; ``overrides`` records each replaced key's value, origin and the
        value it replaced (``provenance.json`` and the report show them).

    Raises
    ------
    ValueError
        A value that the run file's key would not take (type, range, a missing file), naming ``origin``.

    Examples
    --------
    >>> config = Config.from_dict({"input": {"path": "movie.dm4"}}, source="run.toml")
    >>> new = override_config(config, {"insitu.clock_offset_s": -2.5}, origin={"insitu.clock_offset_s": "--offset"})
    >>> new.insitu.clock_offset_s, new.overrides["insitu.clock_offset_s"]["replaced"]
    (-2.5, None)
    >>> override_config(config, {"insitu.counts_per_electron": -1.0}, origin={"insitu.counts_per_electron": "--cpe"})
    Traceback (most recent call last):
    ...
    ValueError: --cpe must be positive; got -1.0
    """
    sections: dict[str, dict[str, Any]] = {}
    record = dict(config.overrides)
    for key, value in values.items():
        section, _, name = key.partition(".")
        table = getattr(config, section, None)
        if not dataclasses.is_dataclass(table) or name not in {f.name for f in dataclasses.fields(table)}:
            raise ValueError(f"override_config: {key!r} is not a key of the run file")
        # the same type rules as the run file's key (a number, finite, one of the choices...)
        value = _coerce(value, typing.get_type_hints(type(table))[name], origin[key])
        sections.setdefault(section, {})[name] = value
        record[key] = {"value": value, "origin": origin[key], "replaced": getattr(table, name)}
    new = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **changes)
                                         for section, changes in sections.items()}, overrides=record)
    try:
        _check(new)
    except ValueError as error:
        message = str(error)
        for key in values:  # the run file's name for the key becomes the flag's
            if message.startswith(f"{config.source}: {key}"):
                raise ValueError(origin[key] + message[len(f"{config.source}: {key}"):]) from None
        raise
    return new


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML run configuration.

    Relative paths in ``[input]``, ``[output]`` and ``segmentation.model`` are
    taken relative to the configuration file's folder.

    Raises
    ------
    ValueError
        Naming the file and the key, for unreadable TOML, unknown keys and bad values.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"configuration file {str(file)!r} does not exist")
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not valid TOML ({exc})") from None
    base = file.resolve().parent

    def rebase(section: str, key: str) -> None:
        value = data.get(section, {}).get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            data[section][key] = str(base / value)

    rebase("input", "path")
    rebase("output", "folder")
    rebase("segmentation", "model")
    rebase("insitu", "holder_log")
    labels = data.get("training", {}).get("labels")
    if isinstance(labels, str) and labels not in ("auto", "truth"):
        rebase("training", "labels")
    return Config.from_dict(data, source=str(file))
