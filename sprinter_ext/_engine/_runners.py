"""Which runner (model forward) each of a Decoder's models gets: ``runner=`` "auto", "python", "native"."""

from __future__ import annotations

from ..errors import InvalidArgumentError
from ..methods import Method
from ..models.runner import ModelRunner

__all__ = ["RUNNERS", "draft_lane", "lookup_lane", "runner_factory"]

RUNNERS = ("auto", "python", "native")


def runner_factory(pair, method: Method, runner: str, engine: str, k: int, *, built: bool):
    """ModelRunner (transformers' forward) or the C++ NativeModel (same protocol; on CPU its
    fast path, or op for op as transformers with fast=False); auto: native under
    engine='native' when every model supports it. Returns make(role, max_len) -> runner.

    A method that snapshots KV entries (its record's needs_snapshot: ssd) is refused on the
    native runner with a named error, before any model is built.
    """
    if runner == "native" and method.needs_snapshot:
        raise InvalidArgumentError(
            f"runner='native' cannot run method {method.name!r}: it snapshots and restores KV entries, "
            "which only the python runner implements; use runner='python' or 'auto'")
    draft_model = method.needs_draft and not pair.model_free  # a lookup draft has no model to run
    if draft_model and pair.draft_kind.split("+")[0] == "head":
        from ..drafts.runner import head_runner_factory

        # a native target gets the C++ head (HeadModel), a python one the eager HeadRunner;
        # "auto" puts the target on the native runner under engine='native' (as for a
        # standalone pair), python elsewhere
        pick = runner if runner != "auto" or engine == "native" else "python"
        if method.needs_snapshot:
            pick = "python"
        return head_runner_factory(pair, pick, built=built)
    python = lambda role, max_len: ModelRunner(pair._model(role), max_len)  # noqa: E731
    if runner == "python":
        return python
    from ..models import native

    views = [pair._view("target")] + ([pair._view("draft")] if draft_model else [])
    reasons = [native.unsupported_reason(m) for m in views]
    reasons = [r for r in reasons if r] if built else ["not built"]
    if runner == "native" and reasons:
        raise InvalidArgumentError(f"runner='native' cannot run this pair: {reasons[0]}; use runner='python'")
    if not (runner == "native" or (engine == "native" and not reasons)):
        return python
    if pair.device.type != "cuda":

        def make(role, max_len):
            return pair.native_runner(role, max_len)

        return make
    # CUDA: one captured graph per forward length the loop uses most (a draft step, the
    # draft catching up on 2 tokens, the target verifying k drafts); others run eagerly.
    # Captured here, once per Decoder.
    lengths = sorted({1, 2, k + 1})
    from ..models.runner import resolve_max_len

    def graphed(role, max_len):
        model = pair._model(role)
        max_len = resolve_max_len(model, max_len)
        return native.cuda_graph_runner(model, [n for n in lengths if n <= max_len], max_len)

    return graphed


def draft_lane(pair, method: Method, make, max_len: int, engine: str):
    """The draft's lane for a Decoder: None for a method without a draft; a LookupLane (no
    model: the C++ proposer under engine='native', the Python one elsewhere) for a model-free
    draft; else a Lane over ``make("draft", max_len)``."""
    from ..methods._session import Lane

    if not method.needs_draft:
        return None
    if pair.model_free:
        return lookup_lane(pair, engine)
    return Lane(make("draft", max_len))


def lookup_lane(pair, engine: str):
    """A LookupLane over a fresh proposer of the pair's lookup draft (None without one)."""
    spec = pair.lookup_draft
    if spec is None:
        return None
    from ..drafts.lookup import LookupLane

    return LookupLane(spec.proposer(native=engine == "native"), pair.vocab_size, pair.device)
