"""One reader module per file family; :mod:`temflow.io.reader` dispatches to them.

``gatan`` (DM3/DM4, In-Situ trees), ``tia`` (``.ser`` + ``.emi``), ``emd``
(Berkeley and Velox), ``mrc``, ``tiff`` (TIFF stacks, ``.tif``/``.png`` frame
folders), ``npy``. Each parses headers only and returns a
:class:`temflow.io.formats._common.RawMovie` whose dask tasks open the file by path.
"""
