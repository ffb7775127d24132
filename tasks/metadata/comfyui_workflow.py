"""ComfyUI's editor graph (the ``workflow`` PNG chunk) turned into the API graph's shape, so
the same tracing reads it when a file carries no API graph.

The editor keeps links in a table and widget values as a list without their names; the names
of core nodes' widgets are listed here (newer files also name them on each input)."""

from __future__ import annotations

from typing import Any

_CONTROL = {"fixed", "increment", "decrement", "randomize"}  # a seed widget's companion value
_SEED = ("seed", "noise_seed")
_CONTROL_SLOT = "control_after_generate"
_WIDGETS: dict[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": (
        "width",
        "height",
        "crop_w",
        "crop_h",
        "target_width",
        "target_height",
        "text_g",
        "text_l",
    ),
    "CLIPTextEncodeSDXLRefiner": ("ascore", "width", "height", "text"),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl", "empty_padding"),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl", "guidance"),
    "KSampler": ("seed", _CONTROL_SLOT, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise",
        "noise_seed",
        _CONTROL_SLOT,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
    "SamplerCustom": ("add_noise", "noise_seed", _CONTROL_SLOT, "cfg"),
    "RandomNoise": ("noise_seed", _CONTROL_SLOT),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "CFGGuider": ("cfg",),
    "FluxGuidance": ("guidance",),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "CheckpointLoader": ("config_name", "ckpt_name"),
    "unCLIPCheckpointLoader": ("ckpt_name",),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "UnetLoaderGGUF": ("unet_name",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "LatentUpscale": ("upscale_method", "width", "height", "crop"),
    "PrimitiveNode": ("value",),
    "PrimitiveString": ("value",),
    "PrimitiveStringMultiline": ("value",),
    "PrimitiveInt": ("value",),
    "PrimitiveFloat": ("value",),
    "StringConcatenate": ("string_a", "string_b", "delimiter"),
}


def workflow_to_graph(workflow: Any) -> dict[str, dict[str, Any]] | None:
    """The editor graph as ``{node_id: {"class_type", "inputs"}}`` with links as
    ``[node_id, slot]``; None when it is not an editor graph."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        return None
    links = _links(workflow.get("links"))
    graph: dict[str, dict[str, Any]] = {}
    for node in workflow["nodes"]:
        if not isinstance(node, dict) or "id" not in node:
            continue
        kind = str(node.get("type", ""))
        inputs = _widgets(kind, node)
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and slot.get("link") in links:
                inputs[str(slot.get("name", ""))] = list(links[slot["link"]])
        graph[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return graph


def _links(table: Any) -> dict[Any, tuple[str, int]]:
    """link id → (origin node id, origin slot), from the list or the object form."""
    out: dict[Any, tuple[str, int]] = {}
    for link in table if isinstance(table, list) else []:
        if isinstance(link, list) and len(link) >= 4:
            link_id, origin, slot = link[0], link[1], link[2]
        elif isinstance(link, dict):
            link_id, origin, slot = link.get("id"), link.get("origin_id"), link.get("origin_slot")
        else:
            continue
        if isinstance(slot, int) and origin is not None:
            out[link_id] = (str(origin), slot)
    return out


def _widgets(kind: str, node: dict[str, Any]) -> dict[str, Any]:
    """A node's widget values by name: from the table above, else from the names newer files
    put on widget inputs, else the first text value as ``text``."""
    values = node.get("widgets_values")
    if isinstance(values, dict):
        return dict(values)
    if not isinstance(values, list):
        return {}
    names = _WIDGETS.get(kind)
    if names is None:
        slots = node.get("inputs") or []
        named = [
            s["widget"].get("name")
            for s in slots
            if isinstance(s, dict) and isinstance(s.get("widget"), dict)
        ]
        names = tuple(_with_controls([n for n in named if isinstance(n, str)], values))
    if not names:
        first = values[0] if values else None
        return {"text": first} if isinstance(first, str) else {}
    return {n: v for n, v in zip(names, values, strict=False) if n != _CONTROL_SLOT}


def _with_controls(names: list[str], values: list[Any]) -> list[str]:
    """Widget names aligned with values: a seed widget may be followed by its control value."""
    out: list[str] = []
    for name in names:
        out.append(name)
        i = len(out)
        if name in _SEED and i < len(values) and values[i] in _CONTROL:
            out.append(_CONTROL_SLOT)
    return out
