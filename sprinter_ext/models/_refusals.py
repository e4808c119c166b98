"""What load_pair refuses and how it says so: pickled weights, non-causal models, models not found offline."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidArgumentError, ModelFileError

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

def refuse_pickle(path: Path, role: str) -> None:
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelFileError(
            f"{role} directory {path} holds only pickle checkpoints ({', '.join(pickles[:3])}); sprinter_ext "
            "never unpickles model files: convert them to safetensors first"
        )


def refuse_non_causal(spec, role: str) -> None:
    """A model whose config loads offline but is no causal LM: say so (not 'not found offline')."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(spec), local_files_only=True)
    except (OSError, ValueError):
        return  # no config here: the model load below reports it
    if getattr(config, "is_encoder_decoder", False) or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise InvalidArgumentError(
            f"{role} {str(spec)!r} is a {type(config).__name__} model, not a causal language model; "
            "sprinter_ext decodes with AutoModelForCausalLM families (GPT-2, Llama, Qwen2, ...)"
        )


def not_found_message(role: str, spec: str, error: Exception) -> str:
    """What was looked for offline and how to supply it.

    NOTE: transformers' own message for a missing model says it "couldn't connect to
    huggingface.co", which reads like a download attempt; it is quoted only when a local
    directory exists but does not load (then its reason is the useful part)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return (
            f"{role} model directory {str(path)!r} exists but does not hold a loadable causal LM "
            f"(config.json + weights): {type(error).__name__}: {error}"
        )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as hub_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        hub_cache = "the Hugging Face hub cache"
    hub_id = len(spec.split("/")) <= 2 and not spec.startswith((".", "/", "~")) and "\\" not in spec
    if hub_id:
        looked, fetch = (f"no directory {str(path)!r} and no cached hub copy under {hub_cache}",
                         f"fetch it once yourself (`hf download {spec}`) or pass")  # fmt: skip
    else:
        looked, fetch = f"no directory {str(path)!r}", "check the path, or pass"
    return (
        f"{role} model {spec!r} was not found offline ({looked}). sprinter_ext never downloads: "
        f"{fetch} a local directory, a .gguf file or a loaded PreTrainedModel"
    )


