"""The progress bar class: ``tqdm.auto`` (widgets in notebooks) only where ipywidgets is
installed, plain text ``tqdm`` otherwise, so a notebook without ipywidgets never gets tqdm's
"IProgress not found" warning (which ``tqdm.auto`` issues on import there)."""

from importlib.util import find_spec

if find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
