"""Zero-shot class heads: class names through the text tower, averaged over prompt templates.

The head is a linear map on the stored (L2-normalised) image embeddings:
``logits = features @ weight.T + bias`` equals CLIP's own zero-shot logits
(logit scale times cosine similarity to the class's mean prompt embedding,
renormalised), so a linear probe can start from it and be interpolated with it.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatamodelsError

TEMPLATE_SETS = ("openai", "simple", "single")


def templates(kind: str) -> list:
    """Prompt templates (callables name -> prompt): OpenAI's 80 ImageNet ones, open_clip's 7, or one."""
    from .model import import_open_clip

    import_open_clip()
    from open_clip import zero_shot_metadata as zsm

    if kind == "openai":
        return list(zsm.OPENAI_IMAGENET_TEMPLATES)
    if kind == "simple":
        return list(zsm.SIMPLE_IMAGENET_TEMPLATES)
    if kind == "single":
        return [lambda c: f"a photo of a {c}."]
    raise DatamodelsError(f"--templates = {kind!r} must be one of {TEMPLATE_SETS}.")


def zeroshot_head(clip, classes, kind: str = "openai", batch_size: int = 256) -> dict:
    """{"weight": float32[C, d], "bias": float32[C], "classes": str[C], "templates": kind, "logit_scale"}."""
    import torch

    from .model import import_open_clip

    open_clip = import_open_clip()
    if not classes:
        raise DatamodelsError("a zero-shot head needs class names: this source has none; give --classes a,b,c "
                              "(in label order) or --no-zeroshot.")
    tokenizer = open_clip.get_tokenizer(clip.name)
    temps = templates(kind)
    model = clip.model
    rows = []
    with torch.inference_mode():
        for name in classes:
            prompts = [t(str(name).replace("_", " ")) for t in temps]
            embs = []
            for i in range(0, len(prompts), batch_size):
                tokens = tokenizer(prompts[i:i + batch_size]).to(clip.device)
                embs.append(torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1))
            mean = torch.cat(embs).mean(0)
            rows.append(torch.nn.functional.normalize(mean, dim=0))
        scale = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0
    weight = (torch.stack(rows) * scale).cpu().numpy().astype(np.float32)
    return {"weight": weight, "bias": np.zeros(len(classes), np.float32), "classes": np.array([str(c) for c in classes]),
            "templates": np.array(kind), "logit_scale": np.float32(scale)}
