"""Verifier files: safetensors weights + a JSON header in the safetensors metadata. No pickle.

Header (metadata key ``sprinter_ext.verifier``): format, input_size, hidden, features,
threshold, label rule, vocab size, the draft's identity (id, architecture and a
fingerprint of its weights) and the training metrics. Loading against another draft
(hidden size, vocabulary or identity differ) raises :class:`VerifierMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import (  # noqa: F401 - the two Verifier errors are re-exported here (their old home)
    InvalidArgumentError,
    SprinterError,
    VerifierFileError,
    VerifierMismatchError,
    VerifierNotFoundError,
)

__all__ = ["FORMAT", "VerifierFileError", "VerifierMismatchError", "parse_header", "draft_identity", "save", "read", "check_draft"]

FORMAT = "sprinter_ext.verifier.v1"
_KEY = "sprinter_ext.verifier"


# Values per parameter kept in a verifier's header (draft_sample) and the relative
# tolerance they are compared with. NOTE: the same draft in bf16 is not the fp32 draft
# rounded once: smol_draft adds its deltas to a bf16 target (two roundings), so its
# exact fingerprint differs while every value stays within ~2 bf16 ulps (2^-7); weights
# of another model differ by O(1).
_SAMPLE_PER_PARAM = 8
_SAMPLE_RTOL = 2.0**-5


def _param_samples(draft):
    """(name, float32 sample of <= 64 values) per parameter, strided over the flat tensor."""
    for name, p in draft.named_parameters():
        flat = p.detach().reshape(-1)
        yield name, flat[:: max(1, flat.numel() // 64)][:64].float().cpu()


def _same_origin(stored: dict, draft) -> bool:
    """True iff every stored sample matches `draft`'s within the bf16-rounding tolerance."""
    current = dict(_param_samples(draft))
    if set(stored) != set(current):
        return False
    for name, values in stored.items():
        want = torch.tensor(values, dtype=torch.float32)
        got = current[name][: len(values)]
        if got.shape != want.shape:
            return False
        scale = want.abs().max().clamp_min(1e-12)
        if bool(((got - want).abs() > _SAMPLE_RTOL * scale).any()):
            return False
    return True


def draft_identity(draft) -> dict:
    """{draft_id, draft_arch, draft_fingerprint, draft_sample, draft_hidden_size}: what a verifier is tied to.

    draft_fingerprint hashes the weights rounded to bf16; draft_sample keeps a few values
    per parameter so that a draft of the same origin in another dtype (whose roundings
    differ) is still recognised (check_draft)."""
    c = draft.config
    hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd", None)
    verifier_input = getattr(draft, "verifier_input_size", None) or hidden  # a draft head adds its confidence
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None)
    arch = f"{getattr(c, 'model_type', type(draft).__name__)}-L{layers}-D{hidden}-V{c.vocab_size}"
    h = hashlib.sha256()
    samples = {}
    with torch.no_grad():
        for name, sample in _param_samples(draft):
            # bf16 rounding: the same weights loaded in fp32 or bf16 give one fingerprint
            h.update(name.encode())
            h.update(sample.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
            samples[name] = [float(v) for v in sample[:_SAMPLE_PER_PARAM]]
    return {
        "draft_id": getattr(c, "name_or_path", "") or type(draft).__name__,
        "draft_arch": arch,
        "draft_fingerprint": h.hexdigest()[:16],
        "draft_sample": samples,
        "draft_hidden_size": int(verifier_input) if verifier_input else None,
    }


def check_draft(verifier, draft, vocab_size: int | None = None) -> None:
    """Raise VerifierMismatchError unless `verifier` was trained for `draft`."""
    meta = verifier.meta
    ident = draft_identity(draft)
    if verifier.input_size != ident["draft_hidden_size"]:
        raise VerifierMismatchError(
            f"the verifier expects draft hidden size {verifier.input_size}, this draft has "
            f"{ident['draft_hidden_size']}: train a verifier for this draft (sprinter_ext.train_verifier)"
        )
    vocab = vocab_size if vocab_size is not None else int(draft.config.vocab_size)
    if meta.get("vocab_size") not in (None, vocab):
        raise VerifierMismatchError(f"the verifier was trained for vocabulary {meta['vocab_size']}, the draft has {vocab}")
    for key in ("draft_arch", "draft_fingerprint"):
        if key == "draft_fingerprint" and meta.get("draft_sample") and _same_origin(meta["draft_sample"], draft):
            continue  # the same weights in another dtype
        if meta.get(key) not in (None, ident[key]):
            raise VerifierMismatchError(
                f"the verifier was trained for draft {meta.get('draft_id')!r} ({key} {meta[key]}), "
                f"not for {ident['draft_id']!r} ({ident[key]}): train one for this draft "
                "with sprinter_ext.train_verifier or `python -m sprinter_ext train-verifier`"
            )


def save(verifier, path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    header = {
        "format": FORMAT,
        "input_size": verifier.input_size,
        "hidden": list(verifier.hidden),
        "features": list(verifier.features),
        "threshold": verifier.threshold,
        **verifier.meta,
    }
    tensors = {f"linears.{i}.{n}": t.detach().float().contiguous().cpu()
               for i, (w, b) in enumerate(verifier.layers) for n, t in (("weight", w), ("bias", b))}  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={_KEY: json.dumps(header)})


_MAX_DEPTH = 16  # NOTE: the header is JSON we did not write; deeper nesting is refused, not recursed


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# The header's schema: key -> (required, check, what it must be). Other keys are kept as meta.
_SCHEMA = {
    "format": (True, lambda v: v == FORMAT, f"the string {FORMAT!r}"),
    "input_size": (True, lambda v: _is_int(v) and v >= 1, "a positive int"),
    "hidden": (True, lambda v: isinstance(v, list) and all(_is_int(h) and h >= 1 for h in v),
               "a list of positive ints"),  # fmt: skip
    "features": (True, lambda v: isinstance(v, list) and all(isinstance(f, str) for f in v), "a list of names"),
    "threshold": (True, lambda v: _is_number(v) and v == v, "a number (not NaN)"),
    "vocab_size": (False, lambda v: v is None or (_is_int(v) and v >= 1), "a positive int or null"),
    "draft_hidden_size": (False, lambda v: v is None or (_is_int(v) and v >= 1), "a positive int or null"),
    "draft_id": (False, lambda v: isinstance(v, str), "a string"),
    "draft_arch": (False, lambda v: isinstance(v, str), "a string"),
    "draft_fingerprint": (False, lambda v: isinstance(v, str), "a string"),
    "label": (False, lambda v: isinstance(v, str), "a string"),
    "metrics": (False, lambda v: isinstance(v, dict), "an object"),
}


def _depth(value, limit: int) -> bool:
    """True if `value` nests at most `limit` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return False
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return True


def parse_header(text, where: str = "verifier file") -> dict:
    """The header's JSON text -> a dict that follows the schema, else VerifierFileError."""
    if not isinstance(text, str):
        raise VerifierFileError(f"{where}: the verifier header is not a JSON string")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise VerifierFileError(f"{where}: the verifier header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise VerifierFileError(f"{where}: the verifier header must be a JSON object, got {type(header).__name__}")
    if not _depth(header, _MAX_DEPTH):
        raise VerifierFileError(f"{where}: the verifier header nests deeper than {_MAX_DEPTH} levels")
    if header.get("format") != FORMAT:
        raise VerifierFileError(f"{where} has verifier format {header.get('format')!r}, this version reads {FORMAT!r}")
    for key, (required, ok, what) in _SCHEMA.items():
        if key not in header:
            if required:
                raise VerifierFileError(f"{where}: the verifier header has no {key!r}")
            continue
        if not ok(header[key]):
            raise VerifierFileError(f"{where}: header {key!r} must be {what}, got {header[key]!r:.80}")
    return header


def _check_tensors(shapes: dict, widths: tuple[int, ...], where: str) -> None:
    """Every layer's weight [out, in] and bias [out] as the header implies, before allocating."""
    expected = {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        expected[f"linears.{i}.weight"] = (b, a)
        expected[f"linears.{i}.bias"] = (b,)
    if set(shapes) != set(expected):
        raise VerifierFileError(f"{where}: tensors {sorted(shapes)[:8]} do not match the header's layers")
    for name, shape in expected.items():
        dtype, got = shapes[name]
        if tuple(got) != shape:
            raise VerifierFileError(f"{where}: {name} has shape {tuple(got)}, the header implies {shape}")
        if dtype not in ("F32", "F16", "BF16", "F64"):
            raise VerifierFileError(f"{where}: {name} has dtype {dtype}, expected a float dtype")


def read(path: str | os.PathLike, features: tuple[str, ...]) -> tuple[dict, dict]:
    """Read and check a verifier file: header schema first (its features must be distinct
    names from `features`), then every tensor's shape and dtype and finiteness. Returns
    (header, tensors); :meth:`sprinter_ext.Verifier.load` builds the MLP from them. Bad
    files raise :class:`VerifierFileError` (an InvalidArgumentError).

    NOTE: this module does not import the Verifier class (model.py imports this one), so
    the allowed feature names come in as an argument.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VerifierNotFoundError(
            f"verifier file {str(path)!r} does not exist; check the path, or train one with sprinter_ext.train_verifier"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if _KEY not in meta:
                raise VerifierFileError(f"{path} has no sprinter_ext verifier header: not a verifier file")
            header = parse_header(meta[_KEY], str(path))
            names = header["features"]
            if any(x not in features for x in names) or len(set(names)) != len(names):
                raise VerifierFileError(f"{path}: features must be distinct names from {features}, got {names!r}")
            widths = (header["input_size"] + len(names), *header["hidden"], 1)
            shapes = {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in f.keys()}
            _check_tensors(shapes, widths, str(path))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            bad = [k for k, t in tensors.items() if not torch.isfinite(t).all()]
            if bad:
                raise VerifierFileError(f"{path}: tensors {sorted(bad)} hold NaN or inf")
    except SprinterError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise VerifierFileError(f"{path} is not a safetensors verifier file ({e})") from e
    return header, tensors
