"""No third-party progress bars unless asked: transformers' "Loading weights" bar is off
while sprinter_ext loads a model, and restored to what it was afterwards."""

from __future__ import annotations

import contextlib

__all__ = ["quiet_loading"]


@contextlib.contextmanager
def quiet_loading(verbose: bool = False):
    """Disable transformers' progress bars inside the block unless `verbose`; restore them after."""
    if verbose:
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
