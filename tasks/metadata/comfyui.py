"""ComfyUI: the prompts and settings its API graph (the ``prompt`` PNG chunk) used.

Each sampler's positive and negative inputs are traced back through conditioning nodes
(combine, concat, area, ControlNet, guidance…), reroutes and string nodes (primitives,
concatenations, stylers, wildcards) to the text encoders (CLIP, SDXL, SD3, Flux), whatever
their inputs are named. The main prompt is the one of the sampler nearest to the image output
that has most samplers behind it; every sampler's pair is kept. Every walk remembers what it
has seen, so cycles and deep graphs in hostile files end quickly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptlake.tasks.metadata.record import ImageMeta, as_float, as_int, as_text

MAX_NODES, MAX_DEPTH = 20_000, 150  # depth: nested walks, well inside Python's stack
_TEXT_KEYS = ("text", "text_g", "clip_g", "t5xxl", "text_l", "clip_l", "populated_text", "prompt")
_STRING_KEYS = ("value", "populated_text", "text", "string", "prompt", "Text", "String")
_CONCAT_KEYS = ("string_a", "string_b", "text_a", "text_b", "text_c", "text_d", "text1", "text2")
_STRING_PAIRS = (("positive", "negative"), ("text_positive", "text_negative"))
_NUMBER_KEYS = ("seed", "noise_seed", "value", "int", "float", "number", "steps", "cfg")
_MODEL_KEYS = ("ckpt_name", "unet_name", "model_name", "gguf_name")
_LATENT_KEYS = ("latent_image", "samples", "latent", "samples_to", "pixels", "image", "images")
_EMPTY = {"ConditioningZeroOut"}  # an empty conditioning: its input is not a prompt


@dataclass
class _Pass:
    """One sampler's prompts and settings."""

    positive: str
    negative: str
    settings: dict[str, str]


def parse_comfy_graph(graph: Any) -> ImageMeta | None:
    """The main prompt, its settings and every sampler's prompts of an API graph, or None
    when it has no sampler with a prompt."""
    if not isinstance(graph, dict) or not graph or len(graph) > MAX_NODES:
        return None
    return _Graph(graph).meta()


def _link(value: Any) -> tuple[str, int] | None:
    """An input wired to another node's output is ``[node_id, output_slot]``."""
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)):
        return None
    node = value[0]
    return (
        (str(node), value[1])
        if isinstance(node, (str, int)) and not isinstance(node, bool)
        else None
    )


class _Graph:
    def __init__(self, graph: dict) -> None:
        self.nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict)}
        self.memo: dict[tuple[str, tuple[str, int]], Any] = {}
        self.active: set[tuple[str, tuple[str, int]]] = set()

    def inputs(self, ref: tuple[str, int] | None) -> dict[str, Any]:
        node = self.nodes.get(ref[0]) if ref else None
        inputs = node.get("inputs") if node else None
        return inputs if isinstance(inputs, dict) else {}

    def kind(self, node_id: str) -> str:
        return str(self.nodes[node_id].get("class_type", ""))

    def _walk(self, what: str, ref: tuple[str, int] | None, empty: Any) -> Any:
        """``what``'s value at ``ref``, computed once; ``empty`` on a cycle or past MAX_DEPTH."""
        if ref is None or ref[0] not in self.nodes:
            return empty
        key = (what, ref)
        if key in self.memo:
            return self.memo[key]
        if key in self.active or len(self.active) > MAX_DEPTH:
            return empty
        self.active.add(key)
        try:
            result = getattr(self, f"_{what}")(ref)
        finally:
            self.active.discard(key)
        self.memo[key] = result
        return result

    def string(self, value: Any) -> str:
        """A string input, followed through primitive, string and reroute nodes."""
        return value if isinstance(value, str) else self._walk("string_of", _link(value), "")

    def _string_of(self, ref: tuple[str, int]) -> str:
        ins = self.inputs(ref)
        for pos, neg in _STRING_PAIRS:  # stylers: output 0 is the positive, 1 the negative
            if pos in ins and neg in ins:
                return self.string(ins[pos if ref[1] == 0 else neg])
        parts = [k for k in _CONCAT_KEYS if k in ins]
        if len(parts) >= 2:
            delimiter = ins.get("delimiter")
            texts = [self.string(ins[k]) for k in parts]
            sep = delimiter if isinstance(delimiter, str) else " "
            return sep.join(t for t in texts if t)
        for key in _STRING_KEYS:
            if key in ins and (text := self.string(ins[key])):
                return text
        links = [v for v in ins.values() if _link(v)]
        return self.string(links[0]) if len(links) == 1 else ""

    def texts(self, value: Any) -> tuple[str, ...]:
        """The prompt texts a conditioning input is made of, in wiring order."""
        return self._walk("texts_of", _link(value), ())

    def _texts_of(self, ref: tuple[str, int]) -> tuple[str, ...]:
        ins = self.inputs(ref)
        if self.kind(ref[0]) in _EMPTY:
            return ()
        if any(k in ins for k in _TEXT_KEYS):  # a text encoder
            return _unique(self.string(ins[k]) for k in _TEXT_KEYS if k in ins)
        if _link(ins.get("positive")) and _link(ins.get("negative")):  # ControlNet-like pairs
            return self.texts(ins["positive" if ref[1] == 0 else "negative"])
        conds = [v for k, v in ins.items() if _link(v) and "cond" in k.lower()]
        links = [v for v in ins.values() if _link(v)]
        conds = conds or (links if len(links) == 1 else [])
        return _unique(t for c in conds for t in self.texts(c))

    def number(self, value: Any) -> Any:
        """A number input, followed through primitive and seed nodes."""
        return self._walk("number_of", _link(value), None) if _link(value) else value

    def _number_of(self, ref: tuple[str, int]) -> Any:
        ins = self.inputs(ref)
        for key in _NUMBER_KEYS:
            if key in ins:
                return self.number(ins[key])
        links = [v for v in ins.values() if _link(v)]
        return self.number(links[0]) if len(links) == 1 else None

    def _model_of(self, ref: tuple[str, int]) -> str:
        ins = self.inputs(ref)
        for key in _MODEL_KEYS:
            if isinstance(ins.get(key), str):
                return ins[key]
        nxt = ins.get("model") if _link(ins.get("model")) else None
        links = [v for v in ins.values() if _link(v)]
        nxt = nxt or (links[0] if len(links) == 1 else None)
        return self._walk("model_of", _link(nxt), "")

    def _size_of(self, ref: tuple[str, int]) -> tuple[Any, Any]:
        ins = self.inputs(ref)
        width, height = self.number(ins.get("width")), self.number(ins.get("height"))
        if isinstance(width, (int, float)) and isinstance(height, (int, float)):
            return width, height
        nxt = next((ins[k] for k in _LATENT_KEYS if _link(ins.get(k))), None)
        return self._walk("size_of", _link(nxt), (None, None))

    def is_sampler(self, node_id: str) -> bool:
        ins = self.inputs((node_id, 0))
        if _link(ins.get("guider")):
            return "latent_image" in ins
        marks = ("latent_image", "seed", "noise_seed", "steps")
        return bool(_link(ins.get("positive"))) and any(k in ins for k in marks)

    def sampler_pass(self, node_id: str) -> _Pass:
        ins = self.inputs((node_id, 0))
        guider = self.inputs(_link(ins.get("guider")))
        conds = guider or ins
        positive = conds.get("positive", conds.get("conditioning", conds.get("cond1")))
        noise = self.inputs(_link(ins.get("noise")))
        pick = self.inputs(_link(ins.get("sampler")))
        sigmas = self.inputs(_link(ins.get("sigmas")))
        found = {
            "seed": ins.get("seed", ins.get("noise_seed", noise.get("noise_seed"))),
            "steps": ins.get("steps", sigmas.get("steps")),
            "cfg": conds.get("cfg", ins.get("cfg")),
            "sampler_name": ins.get("sampler_name", pick.get("sampler_name")),
            "scheduler": ins.get("scheduler", sigmas.get("scheduler")),
            "denoise": ins.get("denoise", sigmas.get("denoise")),
        }
        settings = {k: as_text(v) for k, v in ins.items() if not _link(v) and as_text(v)}
        settings |= {k: as_text(self.number(v)) for k, v in found.items() if v is not None}
        model = conds.get("model", ins.get("model", sigmas.get("model")))
        width, height = self._walk("size_of", _link(ins.get("latent_image")), (None, None))
        extra = {"model": self._walk("model_of", _link(model), ""), "width": width}
        settings |= {k: as_text(v) for k, v in (extra | {"height": height}).items() if v}
        texts = (self.texts(positive), self.texts(conds.get("negative")))
        return _Pass("\n".join(texts[0]), "\n".join(texts[1]), settings)

    def upstream_samplers(self, start: str) -> list[str]:
        """Samplers behind a node, nearest first (breadth-first over every input link)."""
        seen, queue, found = {start}, [start], []
        for node_id in queue:
            if node_id != start and self.is_sampler(node_id):
                found.append(node_id)
            for value in self.inputs((node_id, 0)).values():
                ref = _link(value)
                if ref and ref[0] in self.nodes and ref[0] not in seen:
                    seen.add(ref[0])
                    queue.append(ref[0])
        return found

    def main_order(self, samplers: list[str]) -> list[str]:
        """Samplers to try as the main one: behind the output with the most samplers behind
        it, nearest first; without outputs, those no other sampler feeds."""
        outputs = [n for n in self.nodes if _is_output(self.kind(n), self.inputs((n, 0)))]
        chains = [self.upstream_samplers(n) for n in outputs]
        best = max(chains, key=len, default=[])
        if best:
            return best
        fed = {s for n in samplers for s in self.upstream_samplers(n)}
        return [s for s in samplers if s not in fed] + [s for s in samplers if s in fed]

    def meta(self) -> ImageMeta | None:
        samplers = [n for n in self.nodes if self.is_sampler(n)]
        passes = {n: self.sampler_pass(n) for n in samplers}
        order = [n for n in self.main_order(samplers) + samplers if passes[n].positive]
        if not order:
            return None
        main = passes[order[0]]
        pairs = [(main.positive, main.negative)]
        for n in sorted(samplers, key=_node_order):
            pair = (passes[n].positive, passes[n].negative)
            if pair[0] and pair not in pairs:
                pairs.append(pair)
        s = main.settings
        return ImageMeta(
            main.positive,
            main.negative,
            s,
            "comfyui",
            model_name=s.get("model", ""),
            seed=as_int(s.get("seed")),
            steps=as_int(s.get("steps")),
            sampler=s.get("sampler_name", ""),
            cfg_scale=as_float(s.get("cfg")),
            width=as_int(s.get("width")),
            height=as_int(s.get("height")),
            prompts=pairs,
        )


def _is_output(kind: str, inputs: dict[str, Any]) -> bool:
    name = kind.lower()
    return bool(_link(inputs.get("images"))) and ("save" in name or "preview" in name)


def _node_order(node_id: str) -> tuple[int, str]:
    """Numeric ids in number order: the order nodes were added to the graph."""
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)


def _unique(texts: Any) -> tuple[str, ...]:
    out: list[str] = []
    for text in texts:
        text = text.strip()
        if text and text not in out:
            out.append(text)
    return tuple(out)
