"""Draft heads: EAGLE-3-style drafts that read the target's own features.

* :class:`DraftHead` / :class:`HeadConfig` (:mod:`.head`): the model and its training-time-test forward;
* :class:`HeadRunner` (:mod:`.runner`): the head behind the runner protocol, fed by the target
  runner's feature tap (python ModelRunner or the C++ NativeModel);
* :func:`save_head` / :func:`load_head` / :func:`load_eagle3` (:mod:`.io`): this library's head
  files and the public EAGLE-3 checkpoint layout;
* :func:`train_head` (:mod:`.train_head`) and :mod:`.head_data`: offline, resumable training on
  the target's own continuations (CLI: ``python -m sprinter_ext train-head``).

``sprinter_ext.load_pair(head_or_path, target)`` makes a pair whose ``draft_kind`` is
``"head"``; every method and engine runs with it.
"""

from .head import DraftHead, HeadConfig
from .io import HeadTargetError, load_eagle3, load_head, save_head

__all__ = ["DraftHead", "HeadConfig", "HeadTargetError", "load_head", "load_eagle3", "save_head"]
