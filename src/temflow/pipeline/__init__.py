"""The whole pipeline from a run file: every stage in order, resumable, with a report.

``config`` reads and checks the TOML run file (``_toml_fields`` checks each value's type); ``stages`` holds one function per stage, each
reading the previous stage's output folder and writing its own (the report stage in
``_report_stage``; the run's shared state and output writers in ``_run``); ``runner`` runs them
(``run``, ``demo``) on a Dask client from :mod:`temflow.cluster`; ``report`` writes the HTML
report; ``live`` (``watch``) follows a folder while the microscope writes it and finishes with ``run``;
``_insitu`` adds the holder log and the electron dose to a run.
"""

from __future__ import annotations

from temflow.pipeline.config import Config, load_config
from temflow.pipeline.runner import STAGES, demo, demo_config, run
from temflow.pipeline.live import watch

__all__ = [
    "Config",
    "STAGES",
    "demo",
    "demo_config",
    "load_config",
    "run",
    "watch",
]
