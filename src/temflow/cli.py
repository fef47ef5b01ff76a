"""The ``temflow`` command: argument parsing only; the work is done by the library.

Every error that comes from the user's input ends the command with one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

__all__ = ["main"]


def _fail(exc: BaseException) -> None:
    click.echo(f"temflow: error: {exc}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turn temflow's input errors into one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        # warnings the user can act on become one line each, not Python's two-line format
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except (ValueError, TypeError, FileNotFoundError, PermissionError) as exc:
                _fail(exc)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    if issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
        return
    click.echo(f"temflow: warning: {message}", err=True)


def _format_info(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if isinstance(value, dict):
            if not value:
                continue
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {v}" for k, v in value.items())
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="temflow")
def main() -> None:
    """temflow: in-situ TEM movies to particle statistics, lazily, on any Dask cluster."""


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--frame-interval-s", type=float, default=None, help="Time between frames, s, if the file has none.")
@click.option("--pixel-size-nm", type=float, default=None, help="Pixel size, nm, if the file has none.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(path: Path, frame_interval_s: float | None, pixel_size_nm: float | None, as_json: bool) -> None:
    """Describe a movie: dims, dtype, chunks, pixel size, time axis, size, metadata."""
    from temflow.io.reader import describe, open_movie

    movie = open_movie(path, frame_interval_s=frame_interval_s, pixel_size_nm=pixel_size_nm)
    summary = describe(movie)
    click.echo(json.dumps(summary, indent=2) if as_json else _format_info(summary))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--frames-per-chunk", type=int, default=None, help="zarr chunk length along time.")
@click.option("--frame-interval-s", type=float, default=None, help="Time between frames, s, if the file has none.")
@click.option("--pixel-size-nm", type=float, default=None, help="Pixel size, nm, if the file has none.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def convert(
    path: Path,
    store: Path,
    frames_per_chunk: int | None,
    frame_interval_s: float | None,
    pixel_size_nm: float | None,
    overwrite: bool,
) -> None:
    """Convert a microscope movie to a compressed zarr v3 store."""
    from temflow.io.reader import open_movie
    from temflow.io.store import save_zarr

    movie = open_movie(path, frame_interval_s=frame_interval_s, pixel_size_nm=pixel_size_nm)
    written = save_zarr(movie, store, chunks=frames_per_chunk, overwrite=overwrite)
    click.echo(f"wrote {written}")


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
    written = save_truth(truth, store, overwrite=overwrite)
    click.echo(f"wrote {written} (ground truth beside it in {written.with_suffix('.truth')})")


@main.command()
@click.argument("movie", type=click.Path(path_type=Path))
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--masks", type=click.Path(path_type=Path), default=None, help="Also write boolean masks to this store.")
@click.option("--tile", type=int, default=1024, show_default=True, help="Tile side, px.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (default: a LocalCluster).")
@click.option("--overwrite", is_flag=True, help="Replace existing stores.")
def predict(
    movie: Path, model: Path, store: Path, masks: Path | None, tile: int, device: str, scheduler: str | None, overwrite: bool
) -> None:
    """Run a trained model over every frame of MOVIE into the zarr STORE."""
    from temflow.cluster import connect, dashboard_link
    from temflow.segmentation.inference import predict as run_model
    from temflow.segmentation.inference import segment
    from temflow.io.reader import open_movie
    from temflow.io.store import open_zarr, save_zarr

    frames = open_movie(movie)
    with connect(scheduler) as client:
        link = dashboard_link(client)
        if link:
            click.echo(f"Dask dashboard: {link}")
        written = save_zarr(run_model(frames, model, tile=tile, device=device), store, overwrite=overwrite, progress=True)  # type: ignore[arg-type]
        click.echo(f"wrote {written}")
        if masks is not None:
            save_zarr(segment(open_zarr(written)), masks, overwrite=overwrite, progress=True)
            click.echo(f"wrote {masks}")


@main.command(name="run")
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (overrides [cluster]).")
def run_command(config_file: Path, scheduler: str | None) -> None:
    """Run the whole pipeline from a TOML run file; finished stages are skipped."""
    import dataclasses

    from temflow.pipeline.config import load_config
    from temflow.pipeline.runner import format_summary, run

    config = load_config(config_file)
    if scheduler:
        config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, scheduler=scheduler))
    summary = run(config, echo=click.echo)
    for line in format_summary(summary):
        click.echo(line)


@main.command(name="watch")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Output folder (live/ and the final run).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="A TOML run file for drift, segmentation and analysis settings (its [input] is replaced).")
@click.option("--refresh-s", type=float, default=5.0, show_default=True, help="Seconds between live report updates.")
@click.option("--idle-timeout-s", type=float, default=None,
              help="Stop (and finish) after this many seconds without a new frame; default: until Ctrl-C.")
@click.option("--no-finish", is_flag=True, help="Do not run the batch pipeline when stopping.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes that segment and measure frames side by side.")
@click.option("--bin", "bin_px", type=int, default=1, show_default=True,
              help="Segment the live preview on frames binned this many pixels (faster; final run unbinned).")
def watch_command(folder: Path, output: Path, config_file: Path | None, refresh_s: float,
                  idle_timeout_s: float | None, no_finish: bool, workers: int, bin_px: int) -> None:
    """Follow a Gatan In-Situ folder (or a folder of frames) while it is written; finish with the batch run."""
    from temflow.pipeline.config import load_config
    from temflow.pipeline.runner import format_summary
    from temflow.pipeline.live import watch

    config = load_config(config_file) if config_file is not None else None
    click.echo(f"temflow watch: following {folder}; live report in {output / 'live' / 'report.html'} (Ctrl-C stops)")
    summary = watch(folder, output, config=config, refresh_s=refresh_s, idle_timeout_s=idle_timeout_s,
                    finish=not no_finish, workers=workers, bin_px=bin_px, echo=click.echo)
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

    run_demo(output, frames=frames, size=size, scheduler=scheduler, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
