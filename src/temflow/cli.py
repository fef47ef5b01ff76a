"""The ``temflow`` command: argument parsing only; the work is done by the library.

Every error that comes from the user's input ends the command with one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import click

from temflow._version import __version__

__all__ = ["main"]

# Python keyword hints in library errors ("pass overwrite=True") become the command's own
# flags ("pass --overwrite") when the command has that option
_THREE_WAYS = re.compile(
    r"open_movie\(\.\.\., (\w+)=\.\.\.\), the CLI's (--[\w-]+), or \w+ under \[input\] in the run file"
)
_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=(True|\.\.\.|'[^']*'|\"[^\"]*\"|[\w.]+)")


def _cli_hint(message: str, command: click.Command | None) -> str:
    """``message`` with the Python keywords the command has as options replaced by its flags.

    Examples
    --------
    >>> cmd = click.Command("convert", params=[click.Option(["--overwrite"], is_flag=True),
    ...                                        click.Option(["--pixel-size-nm"], type=float)])
    >>> _cli_hint("it exists; pass overwrite=True to replace it, or pixel_size_nm=... or bins=3", cmd)
    'it exists; pass --overwrite to replace it, or --pixel-size-nm N or bins=3'
    >>> _cli_hint("no pixel size; pass pixel_size_nm=... to open_movie to set it", cmd)
    'no pixel size; pass --pixel-size-nm N to set it'
    """
    options: dict[str, click.Option] = {}
    for param in command.params if command else []:
        if isinstance(param, click.Option):
            # by the Python name and by the flag's own (--format is format_name in the code)
            options[str(param.name)] = param
            options[max(param.opts, key=len).lstrip("-").replace("-", "_")] = param

    def swap(match: re.Match[str]) -> str:
        name, value = match.groups()
        option = options.get(name)
        if option is None:
            return match.group(0)
        flag = max(option.opts, key=len)
        if option.is_flag:
            return flag
        if value == "...":
            kind = getattr(option.type, "name", "")
            return f"{flag} {'N' if kind in ('float', 'integer') else 'VALUE'}"
        return f"{flag} {value.strip(chr(39) + chr(34))}"

    # the readers name all three ways to give a calibration; on the command line, the flag comes first
    message = _THREE_WAYS.sub(r"pass \2 N (or \1 under [input] in a run file)", message)
    translated = _KEYWORD.sub(swap, message)
    if translated != message:  # "pass --overwrite to save_zarr" names a function the user never called
        translated = re.sub(r" (?:to|in) (?:temflow\.)?(?:open_movie|save_zarr|save_truth)\b(?:\(\.\.\.\))?", "", translated)
    return translated


def _fail(exc: BaseException, command: click.Command | None = None, verbosity: int = 0) -> None:
    if verbosity > 0:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"temflow: error: {_cli_hint(str(exc), command)}", err=True)
    sys.exit(2)


def _verbosity() -> int:
    """-1 with --quiet, 0 by default, 1 and more with -v, -vv."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None and not isinstance(ctx.obj, dict):
        ctx = ctx.parent
    return int(ctx.obj.get("verbosity", 0)) if ctx is not None else 0


def _say(message: str) -> None:
    """An informational line on stdout, unless --quiet."""
    if _verbosity() >= 0:
        click.echo(message)


class _Group(click.Group):
    """Turn temflow's input errors into one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        # warnings the user can act on become one line each, not Python's two-line format
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except click.BadParameter as exc:  # a flag's value of the wrong type: one line too, not the usage
                help_command = " ".join(["temflow", *([ctx.invoked_subcommand] if ctx.invoked_subcommand else []), "--help"])
                click.echo(f"temflow: error: {exc.format_message()} (see {help_command})", err=True)
                sys.exit(2)
            except (ValueError, TypeError, FileNotFoundError, PermissionError) as exc:
                name = ctx.invoked_subcommand
                verbosity = int(ctx.obj.get("verbosity", 0)) if isinstance(ctx.obj, dict) else 0
                _fail(exc, self.get_command(ctx, name) if name else None, verbosity)
            except OSError as exc:
                from temflow.errors import DiskFullError, is_disk_full

                if not is_disk_full(exc):
                    raise
                if not isinstance(exc, DiskFullError):
                    exc = DiskFullError(exc.filename or "the output", "free space on that disk, then run the command again")
                _fail(exc)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    if issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)) and _verbosity() < 1:
        return
    ctx = click.get_current_context(silent=True)
    click.echo(f"temflow: warning: {_cli_hint(str(message), ctx.command if ctx else None)}", err=True)


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "-"
    return str(value)


def _format_info(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if isinstance(value, dict):
            if not value:
                continue
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {_format_value(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {_format_value(value)}")
    return "\n".join(lines)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="temflow")
@click.option("-v", "--verbose", count=True, help="More detail: -v shows tracebacks and library logs, -vv debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only results, warnings and errors: no progress, no status lines.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """temflow: in-situ TEM movies to particle statistics, lazily, on any Dask cluster.

    Progress goes to stderr, and only when stderr is a terminal; results and
    status lines go to stdout.
    """
    if verbose and quiet:
        raise click.UsageError("-v and -q contradict each other; pass one of them")
    ctx.obj = {"verbosity": -1 if quiet else verbose}
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")


_FORMAT_HELP = ("Reader to use when the suffix misleads: dm3, dm4, insitu, dm-series, ser, emd, mrc, tiff, "
                "frames, npy, zarr, ome-zarr.")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--frame-interval-s", type=float, default=None, help="Time between frames, s; overrides the file's.")
@click.option("--pixel-size-nm", type=float, default=None, help="Pixel size, nm; overrides the file's (needed if it has none).")
@click.option("--format", "format_name", default=None, help=_FORMAT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(path: Path, frame_interval_s: float | None, pixel_size_nm: float | None, format_name: str | None,
         as_json: bool) -> None:
    """Describe a movie: dims, dtype, chunks, pixel size, time axis, size, metadata."""
    from temflow._json import dumps
    from temflow.io.reader import describe, open_movie

    movie = open_movie(path, frame_interval_s=frame_interval_s, pixel_size_nm=pixel_size_nm, format=format_name)
    summary = describe(movie)
    ctx = click.get_current_context(silent=True)
    # the notes name the calibration hints in Python's words: on the command line, name the flags
    click.echo(dumps(summary) if as_json else _cli_hint(_format_info(summary), ctx.command if ctx else None))


def _save_store(movie: Any, store: Path, *, resumable: bool, **options: Any) -> Path:
    """``save_zarr`` with its advice given in this command's flags, not in Python keywords."""
    from temflow.errors import DiskFullError, MovieFileError
    from temflow.io.store import save_zarr

    again = "run the same command with --resume" if resumable else "run the command again"
    try:
        return save_zarr(movie, store, **options)
    except DiskFullError as exc:
        raise DiskFullError(
            exc.path, f"free space on that disk (or write the store elsewhere), then {again}: the chunks already written are kept"
        ) from None
    except MovieFileError as exc:
        if exc.fix is None or "=True" not in exc.fix:
            raise
        if "not a temflow store" in exc.problem:
            fix = "remove it, or pass --overwrite to replace it"
        elif "already exists" in exc.problem and resumable:
            fix = "pass --overwrite to replace it or --resume to finish an interrupted conversion"
        else:
            fix = "pass --overwrite to replace it"
        raise MovieFileError(exc.path, exc.format, exc.problem, fix) from None


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--frames-per-chunk", type=int, default=None, help="zarr chunk length along time.")
@click.option("--frame-interval-s", type=float, default=None, help="Time between frames, s; overrides the file's.")
@click.option("--pixel-size-nm", type=float, default=None, help="Pixel size, nm; overrides the file's (needed if it has none).")
@click.option("--format", "format_name", default=None, help=_FORMAT_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option(
    "--resume", is_flag=True, help="Finish an interrupted conversion: chunks already written are kept."
)
def convert(
    path: Path,
    store: Path,
    frames_per_chunk: int | None,
    frame_interval_s: float | None,
    pixel_size_nm: float | None,
    format_name: str | None,
    overwrite: bool,
    resume: bool,
) -> None:
    """Convert a microscope movie to a compressed zarr v3 store (progress on a terminal).

    Interrupted (killed, disk full)? Run the same command with --resume: the
    chunks already written are kept and the rest are written.
    """
    from temflow.io.reader import open_movie
    from temflow.io.store import is_complete

    if overwrite and resume:
        raise ValueError("--overwrite and --resume exclude each other: pass --overwrite to start again or --resume to finish")
    movie = open_movie(path, frame_interval_s=frame_interval_s, pixel_size_nm=pixel_size_nm, format=format_name)
    finished = resume and is_complete(store)
    written = _save_store(
        movie, store, resumable=True, chunks=frames_per_chunk, overwrite=overwrite, resume=resume,
        progress=_verbosity() >= 0,
    )
    _say(f"{written} was already complete; nothing to do" if finished else
         f"wrote {written} ({movie.sizes['time']} frames of {movie.sizes['y']} x {movie.sizes['x']})")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--frames", type=int, default=100, show_default=True)
@click.option("--size", type=int, default=512, show_default=True, help="Frame size, pixels.")
@click.option("--pixel-size-nm", type=float, default=0.5, show_default=True)
@click.option("--frame-interval-s", type=float, default=1.0, show_default=True)
@click.option(
    "--mechanism",
    type=click.Choice(["ostwald", "coalescence", "mixed", "none"]),
    default="ostwald",
    show_default=True,
)
@click.option("--dose", "dose_e_per_px", type=float, default=50.0, show_default=True, help="Electrons per pixel.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def synth(
    store: Path,
    frames: int,
    size: int,
    pixel_size_nm: float,
    frame_interval_s: float,
    mechanism: str,
    dose_e_per_px: float,
    seed: int,
    overwrite: bool,
) -> None:
    """Write a synthetic in-situ movie (and its ground truth) to a zarr store."""
    from temflow.synthetic.generator import make_movie, save_truth

    truth = make_movie(
        frames=frames,
        size=size,
        pixel_size_nm=pixel_size_nm,
        frame_interval_s=frame_interval_s,
        mechanism=mechanism,  # type: ignore[arg-type]
        dose_e_per_px=dose_e_per_px,
        seed=seed,
    )
    from temflow.errors import MovieFileError

    try:
        written = save_truth(truth, store, overwrite=overwrite, progress=_verbosity() >= 0)
    except MovieFileError as exc:
        if exc.fix is None or "=True" not in exc.fix:
            raise
        raise MovieFileError(exc.path, exc.format, exc.problem, "pass --overwrite to replace it") from None
    _say(f"wrote {written} (ground truth beside it in {written.with_suffix('.truth')})")


@main.command()
@click.argument("movie", type=click.Path(path_type=Path))
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--masks", type=click.Path(path_type=Path), default=None, help="Also write boolean masks to this store.")
@click.option("--tile", type=int, default=1024, show_default=True, help="Tile side, px.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (default: a LocalCluster).")
@click.option("--overwrite", is_flag=True, help="Replace existing stores.")
@click.option("--frame-interval-s", type=float, default=None, help="Time between frames, s; overrides the file's.")
@click.option("--pixel-size-nm", type=float, default=None, help="Pixel size, nm; overrides the file's (needed if it has none).")
def predict(
    movie: Path, model: Path, store: Path, masks: Path | None, tile: int, device: str, scheduler: str | None,
    overwrite: bool, frame_interval_s: float | None, pixel_size_nm: float | None,
) -> None:
    """Run a trained model over every frame of MOVIE into the zarr STORE."""
    from temflow.cluster import connect, dashboard_link
    from temflow.segmentation.inference import predict as run_model
    from temflow.segmentation.inference import segment
    from temflow.io.reader import open_movie
    from temflow.io.store import open_zarr

    frames = open_movie(movie, frame_interval_s=frame_interval_s, pixel_size_nm=pixel_size_nm)
    with connect(scheduler) as client:
        link = dashboard_link(client)
        if link:
            _say(f"Dask dashboard: {link}")
        progress = _verbosity() >= 0
        output = run_model(frames, model, tile=tile, device=device)  # type: ignore[arg-type]
        written = _save_store(output, store, resumable=False, overwrite=overwrite, progress=progress)
        _say(f"wrote {written}")
        if masks is not None:
            _save_store(segment(open_zarr(written)), masks, resumable=False, overwrite=overwrite, progress=progress)
            _say(f"wrote {masks}")


# the [insitu] keys a user gives per movie, as flags of `run` and `watch`: key -> (flag, option)
_INSITU_FLAGS: dict[str, tuple[str, Any]] = {
    "holder_log": ("--holder-log", click.option(
        "--holder-log", type=click.Path(path_type=Path), default=None,
        help="The heating holder's log (Protochips or DENSsolutions Impulse CSV); overrides [insitu] holder_log.")),
    "holder_vendor": ("--holder-vendor", click.option(
        "--holder-vendor", type=click.Choice(["auto", "protochips", "impulse", "generic"]), default=None,
        help="The log's layout (default auto: recognised from the file); overrides [insitu] holder_vendor.")),
    "clock_offset_s": ("--clock-offset-s", click.option(
        "--clock-offset-s", type=float, default=None,
        help="The log's time at the movie's time zero, s (movie start minus log start; negative if the log "
             "started later); overrides [insitu] clock_offset_s. Unset: found from a temperature step.")),
    "counts_per_electron": ("--counts-per-electron", click.option(
        "--counts-per-electron", type=float, default=None,
        help="Camera counts per incident electron, for the dose per frame; overrides [insitu] counts_per_electron.")),
    "exposure_s": ("--exposure-s", click.option(
        "--exposure-s", type=float, default=None,
        help="Exposure of one frame, s, when the file does not record it; overrides [insitu] exposure_s.")),
    "beam_current_A": ("--beam-current-A", click.option(
        "--beam-current-A", "beam_current_A", type=float, default=None,
        help="Beam current, A (dose without counts_per_electron; with --illuminated-diameter-nm); "
             "overrides [insitu] beam_current_A.")),
    "illuminated_diameter_nm": ("--illuminated-diameter-nm", click.option(
        "--illuminated-diameter-nm", type=float, default=None,
        help="Diameter of the illuminated disc, nm (for the dose from a beam current); "
             "overrides [insitu] illuminated_diameter_nm.")),
}


def _insitu_options(command: Any) -> Any:
    """Add the [insitu] flags to a command (they arrive as keyword arguments named as the keys)."""
    for _, option in reversed(_INSITU_FLAGS.values()):
        command = option(command)
    return command


def _override(config: Any, values: dict[str, Any], origin: dict[str, str]) -> Any:
    """``config`` with the flags' values (``None``: not given), checked as the run file's keys would be."""
    from temflow.pipeline.config import override_config

    given = {key: value for key, value in values.items() if value is not None}
    if not given:
        return config
    return override_config(config, given, origin={key: origin[key] for key in given})


def _insitu_overrides(config: Any, insitu: dict[str, Any]) -> Any:
    """``config`` with the [insitu] flags given (a log's path is taken relative to the working folder)."""
    values = {f"insitu.{name}": (str(Path(value).absolute()) if name == "holder_log" and value is not None else value)
              for name, value in insitu.items()}
    return _override(config, values, {f"insitu.{name}": flag for name, (flag, _) in _INSITU_FLAGS.items()})


@main.command(name="run")
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (overrides [cluster]).")
@_insitu_options
def run_command(config_file: Path, scheduler: str | None, **insitu: Any) -> None:
    """Run the whole pipeline from a TOML run file; finished stages are skipped.

    A flag replaces the run file's key (the holder log and dose flags, [insitu]); the
    replacement is checked as the key would be and recorded in provenance.json and the report.
    """
    from temflow.pipeline.config import load_config
    from temflow.pipeline.runner import format_summary, run

    config = load_config(config_file)
    config = _override(config, {"cluster.scheduler": scheduler or None}, {"cluster.scheduler": "--scheduler"})
    config = _insitu_overrides(config, insitu)
    summary = run(config, echo=_say, progress=_verbosity() >= 0)
    for line in format_summary(summary):
        _say(line)


@main.command(name="watch")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Output folder (live/ and the final run).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="A TOML run file for drift, segmentation and analysis settings (its [input] is replaced).")
@click.option("--refresh-s", type=float, default=5.0, show_default=True, help="Seconds between live report updates.")
@click.option("--idle-timeout-s", type=float, default=None,
              help="Stop (and finish) after this many seconds without a new frame; default: until Ctrl-C.")
@click.option("--no-finish", is_flag=True, help="Do not run the batch pipeline when stopping.")
@click.option("--workers", type=int, default=None,
              help="Processes that segment and measure frames side by side (default: the cores this process may "
                   "use, at most 8; 1: everything in one process).")
@click.option("--bin", "bin_px", type=int, default=None,
              help="Segment frames binned N x N pixels (N^2 times less work), live and in the final run alike "
                   "([segmentation] bin_px); default: the run file's, else 1.")
@_insitu_options
def watch_command(folder: Path, output: Path, config_file: Path | None, refresh_s: float,
                  idle_timeout_s: float | None, no_finish: bool, workers: int | None, bin_px: int | None,
                  **insitu: Any) -> None:
    """Follow a Gatan In-Situ folder (or a folder of frames) while it is written; finish with the batch run.

    The holder log and dose flags replace the run file's [insitu] keys, as for temflow run; the
    live report needs --clock-offset-s (or clock_offset_s) to put the log on the frames.
    """
    from temflow.pipeline.config import load_config
    from temflow.pipeline.runner import format_summary
    from temflow.pipeline.live import default_workers, watch, watch_config

    config = load_config(config_file) if config_file is not None else None
    if bin_px is not None or any(value is not None for value in insitu.values()):
        config = _override(watch_config(folder, output, config), {"segmentation.bin_px": bin_px},
                           {"segmentation.bin_px": "--bin"})
        config = _insitu_overrides(config, insitu)
    click.echo(f"temflow watch: following {folder}; live report in {output / 'live' / 'report.html'} (Ctrl-C stops)")
    summary = watch(folder, output, config=config, refresh_s=refresh_s, idle_timeout_s=idle_timeout_s,
                    finish=not no_finish, workers=default_workers() if workers is None else workers, echo=click.echo)
    if "batch" in summary:
        for line in format_summary(summary["batch"]):
            click.echo(line)


@main.command()
@click.option("--output", type=click.Path(path_type=Path), default=Path("temflow-demo"), show_default=True)
@click.option("--frames", type=int, default=None, help="Frames of the synthetic movie.")
@click.option("--size", type=int, default=None, help="Frame size of the synthetic movie, pixels.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (default: a LocalCluster).")
def demo(output: Path, frames: int | None, size: int | None, scheduler: str | None) -> None:
    """Make a synthetic movie and run the whole pipeline on it."""
    from temflow.pipeline.runner import demo as run_demo

    run_demo(output, frames=frames, size=size, scheduler=scheduler, echo=_say, progress=_verbosity() >= 0)


if __name__ == "__main__":  # pragma: no cover
    main()
